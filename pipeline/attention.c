/* attention.c: multi-head softmax attention over a fused qkv tensor, forward and backward.
 *
 * Memory: a 1024x1024 image at patch 16 has T = 4097 tokens, and keeping every layer's T x T
 * probabilities would cost 12 layers x 12 heads x T^2 floats = 9.6 GB. The forward keeps only
 * the per-row log-sum-exp (B, H, T); the backward recomputes the probabilities of a block of
 * ATTN_BQ query rows at a time from q, k and that log-sum-exp, so the working set is
 * 2 x ATTN_BQ x T floats per thread whatever the depth. Q, K and V are read in place from the
 * (B, T, 3C) qkv rows through BLIS strides: no copies. */
#include <math.h>
#include <omp.h>

#include "ops.h"

#define ATTN_BQ 256 /* query rows per block */

size_t attention_scratch_floats(int T, int nthreads) {
    return (size_t)(nthreads > 0 ? nthreads : 1) * 2 * ATTN_BQ * (size_t)T;
}

void attention_forward(float *out, float *lse, const float *qkv, float *scratch, int B, int T,
                       int C, int H) {
    int D = C / H, nblk = (T + ATTN_BQ - 1) / ATTN_BQ;
    float scale = 1.0f / sqrtf((float)D);
    size_t C3 = 3 * (size_t)C;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < B * H * nblk; task++) {
        int b = task / (H * nblk), h = task / nblk % H, q0 = task % nblk * ATTN_BQ;
        int bq = T - q0 < ATTN_BQ ? T - q0 : ATTN_BQ;
        float *S = scratch + (size_t)omp_get_thread_num() * 2 * ATTN_BQ * T; /* (bq, T) */
        const float *q = qkv + ((size_t)b * T + q0) * C3 + (size_t)h * D;  /* (bq, D) ld 3C */
        const float *k = qkv + (size_t)b * T * C3 + C + (size_t)h * D;      /* (T, D) ld 3C */
        const float *v = k + C;                                             /* (T, D) ld 3C */
        gemm(0, 1, bq, T, D, scale, q, (int)C3, k, (int)C3, 0.0f, S, T, 1);
        for (int i = 0; i < bq; i++) {
            float *s = S + (size_t)i * T;
            float mx = -INFINITY;
            for (int j = 0; j < T; j++) mx = s[j] > mx ? s[j] : mx;
            float sum = 0.0f;
            for (int j = 0; j < T; j++) {
                s[j] = expf(s[j] - mx);
                sum += s[j];
            }
            float inv = 1.0f / sum;
            for (int j = 0; j < T; j++) s[j] *= inv;
            lse[((size_t)b * H + h) * T + q0 + i] = mx + logf(sum);
        }
        float *o = out + ((size_t)b * T + q0) * C + (size_t)h * D; /* (bq, D) ld C */
        gemm(0, 0, bq, D, T, 1.0f, S, T, v, (int)C3, 0.0f, o, C, 1);
    }
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                        const float *lse, float *scratch, int B, int T, int C, int H) {
    int D = C / H;
    float scale = 1.0f / sqrtf((float)D);
    size_t C3 = 3 * (size_t)C;
    /* One (image, head) per task: its dK and dV columns are written by no other task. */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < B * H; task++) {
        int b = task / H, h = task % H;
        float *P = scratch + (size_t)omp_get_thread_num() * 2 * ATTN_BQ * T; /* (bq, T) */
        float *dP = P + (size_t)ATTN_BQ * T;                                  /* (bq, T) */
        const float *k = qkv + (size_t)b * T * C3 + C + (size_t)h * D;        /* (T, D) */
        const float *v = k + C;                                               /* (T, D) */
        float *dk = dqkv + (size_t)b * T * C3 + C + (size_t)h * D;            /* (T, D) */
        float *dv = dk + C;                                                   /* (T, D) */
        for (int q0 = 0; q0 < T; q0 += ATTN_BQ) {
            int bq = T - q0 < ATTN_BQ ? T - q0 : ATTN_BQ;
            const float *q = qkv + ((size_t)b * T + q0) * C3 + (size_t)h * D; /* (bq, D) */
            float *dq = dqkv + ((size_t)b * T + q0) * C3 + (size_t)h * D;     /* (bq, D) */
            const float *o = out + ((size_t)b * T + q0) * C + (size_t)h * D;  /* (bq, D) */
            const float *dO = dout + ((size_t)b * T + q0) * C + (size_t)h * D; /* (bq, D) */
            const float *l = lse + ((size_t)b * H + h) * T + q0;              /* (bq) */
            gemm(0, 1, bq, T, D, scale, q, (int)C3, k, (int)C3, 0.0f, P, T, 1);
            gemm(0, 1, bq, T, D, 1.0f, dO, C, v, (int)C3, 0.0f, dP, T, 1);
            for (int i = 0; i < bq; i++) {
                float *p = P + (size_t)i * T, *dp = dP + (size_t)i * T;
                /* sum_j P_ij dP_ij = dO_i . O_i: the softmax backward's row term */
                float di = 0.0f;
                for (int d = 0; d < D; d++) di += dO[(size_t)i * C + d] * o[(size_t)i * C + d];
                for (int j = 0; j < T; j++) {
                    p[j] = expf(p[j] - l[i]);
                    dp[j] = p[j] * (dp[j] - di);
                }
            }
            gemm(1, 0, T, D, bq, 1.0f, P, T, dO, C, 1.0f, dv, (int)C3, 1);
            gemm(0, 0, bq, D, T, scale, dP, T, k, (int)C3, 1.0f, dq, (int)C3, 1);
            gemm(1, 0, T, D, bq, scale, dP, T, q, (int)C3, 1.0f, dk, (int)C3, 1);
        }
    }
}
