/* layernorm.c: LayerNorm over the last dimension with PyTorch semantics (biased variance, eps
 * inside the square root), forward and backward. */
#include <math.h>

#include "model/ops.h"

/* Channels per task of the weight-gradient pass: short enough that several tasks exist for
 * narrow layers, long enough for the inner loop to vectorise. */
#define LN_CBLOCK 64

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C; /* (C) */
        float *y = out + (size_t)n * C;       /* (C) */
        /* double sums, then rounded once: within an ulp of PyTorch's float Welford moments */
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int i = 0; i < C; i++) s += x[i];
        float m = (float)(s / C);
        double v = 0.0;
#pragma omp simd reduction(+ : v)
        for (int i = 0; i < C; i++) {
            double d = (double)x[i] - (double)m;
            v += d * d;
        }
        float r = 1.0f / sqrtf((float)(v / C) + eps);
        /* PyTorch's arithmetic: (x * rstd + (-rstd * mean)) * w + b */
        float shift = -r * m;
        for (int i = 0; i < C; i++) y[i] = (x[i] * r + shift) * w[i] + b[i];
        mean[n] = m;
        rstd[n] = r;
    }
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, int N, int C) {
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C;   /* (C) */
            const float *dy = dout + (size_t)n * C; /* (C) */
            float *dx = dinp + (size_t)n * C;       /* (C) */
            float m = mean[n], r = rstd[n];
            /* dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * w */
            double sg = 0.0, sgx = 0.0;
#pragma omp simd reduction(+ : sg, sgx)
            for (int i = 0; i < C; i++) {
                float g = dy[i] * w[i];
                float xh = (x[i] - m) * r;
                sg += g;
                sgx += g * xh;
            }
            float mg = (float)(sg / C), mgx = (float)(sgx / C);
            for (int i = 0; i < C; i++) {
                float g = dy[i] * w[i];
                float xh = (x[i] - m) * r;
                dx[i] += (g - mg - xh * mgx) * r;
            }
        }
    }
    if (!dw && !db) return;
    /* dw and db sum over rows: each task owns a block of channels and walks all rows in order,
     * so the result is race-free and the same for every thread count. */
    int nblocks = (C + LN_CBLOCK - 1) / LN_CBLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * LN_CBLOCK;
        int nc = C - c0 < LN_CBLOCK ? C - c0 : LN_CBLOCK;
        double accw[LN_CBLOCK] = {0}, accb[LN_CBLOCK] = {0};
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C + c0;   /* (nc) */
            const float *dy = dout + (size_t)n * C + c0; /* (nc) */
            float m = mean[n], r = rstd[n];
#pragma omp simd
            for (int i = 0; i < nc; i++) {
                accw[i] += dy[i] * ((x[i] - m) * r);
                accb[i] += dy[i];
            }
        }
        for (int i = 0; i < nc; i++) {
            if (dw) dw[c0 + i] += (float)accw[i];
            if (db) db[c0 + i] += (float)accb[i];
        }
    }
}
