/* gemm.c: every matrix product of clipself goes through BLIS here, and the linear layer
 * Y = X.W^T + b with its backward (dW += dY^T.X, dX += dY.W) written once on top of it. */
#include <blis.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/check.h"
#include "model/ops.h"

void gemm(int transa, int transb, int m, int n, int k, float alpha, const float *a, int lda,
          const float *b, int ldb, float beta, float *c, int ldc, int nthreads) {
    /* Inside an OpenMP region the caller already splits the work: BLIS runs single-threaded. */
    if (cs_blas_init()) {
        fprintf(stderr, "%s\n", cs_error());
        abort(); /* a wrong CLIPSELF_KERNELS: stages check it at start-up, so only tests land here */
    }
    rntm_t rntm = BLIS_RNTM_INITIALIZER;
    int nt = omp_in_parallel() ? 1 : (nthreads > 0 ? nthreads : cs_num_threads());
    bli_rntm_set_num_threads(nt, &rntm);
    /* BLIS reads A and B through non-const pointers but does not write them. */
    bli_sgemm_ex(transa ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 transb ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, m, n, k, &alpha, (float *)a, lda, 1,
                 (float *)b, ldb, 1, &beta, c, ldc, 1, NULL, &rntm);
}

void linear_forward(float *out, const float *inp, const float *w, int ldw, const float *b, int N,
                    int IC, int OC) {
    if (b) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) out[(size_t)n * OC + o] = b[o];
    }
    gemm(0, 1, N, OC, IC, 1.0f, inp, IC, w, ldw, b ? 1.0f : 0.0f, out, OC, 0);
}

void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                     const float *w, int ldw, int N, int IC, int OC) {
    if (dinp) gemm(0, 0, N, IC, OC, 1.0f, dout, OC, w, ldw, 1.0f, dinp, IC, 0);
    if (dw) gemm(1, 0, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dw, ldw, 0);
    if (db) {
        /* Column sums walked row by row over chunks of columns, so reads stay contiguous. */
#pragma omp parallel for schedule(static)
        for (int o0 = 0; o0 < OC; o0 += 64) {
            int o1 = o0 + 64 < OC ? o0 + 64 : OC;
            float s[64] = {0};
            for (int n = 0; n < N; n++)
                for (int o = o0; o < o1; o++) s[o - o0] += dout[(size_t)n * OC + o];
            for (int o = o0; o < o1; o++) db[o] += s[o - o0];
        }
    }
}
