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
#include <stdint.h>

#include "ops.h"

#define ATTN_BQ 256 /* query rows per block */

/* exp(x) for the softmax's x <= 0, written so the compiler vectorises it (libm's expf is a
 * scalar call, a fifth of the 1024x1024 step): x = n ln2 + r with |r| <= ln2 / 2, a degree-6
 * polynomial for exp(r) (Cephes' coefficients, within 2 ulp), and 2^n from the exponent bits.
 * Below -87.3 the result would be subnormal and is flushed to 0, which a softmax cannot see. */
static inline float exp_nonpos(float x) {
    x = x < -87.3f ? -87.3f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } two_n = {.i = ((int32_t)n + 127) << 23};
    return x <= -87.3f ? 0.0f : p * two_n.f;
}

size_t attention_scratch_floats(int T, int nthreads) {
    return (size_t)(nthreads > 0 ? nthreads : 1) * 2 * ATTN_BQ * (size_t)T;
}

/* Both variants: with causal, query row i sees keys 0..i only. A block of query rows
 * q0..q0+bq-1 then needs the first nk = q0+bq keys, so the scores of later keys are never
 * computed; within the block the keys past each row's own position get probability 0. */
static void forward_rows(float *out, float *lse, const float *qkv, float *scratch, int B, int T,
                         int C, int H, int causal) {
    int D = C / H, nblk = (T + ATTN_BQ - 1) / ATTN_BQ;
    float scale = 1.0f / sqrtf((float)D);
    size_t C3 = 3 * (size_t)C;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < B * H * nblk; task++) {
        int b = task / (H * nblk), h = task / nblk % H, q0 = task % nblk * ATTN_BQ;
        int bq = T - q0 < ATTN_BQ ? T - q0 : ATTN_BQ, nk = causal ? q0 + bq : T;
        float *S = scratch + (size_t)omp_get_thread_num() * 2 * ATTN_BQ * T; /* (bq, nk) */
        const float *q = qkv + ((size_t)b * T + q0) * C3 + (size_t)h * D;  /* (bq, D) ld 3C */
        const float *k = qkv + (size_t)b * T * C3 + C + (size_t)h * D;      /* (nk, D) ld 3C */
        const float *v = k + C;                                             /* (nk, D) ld 3C */
        gemm(0, 1, bq, nk, D, scale, q, (int)C3, k, (int)C3, 0.0f, S, nk, 1);
        for (int i = 0; i < bq; i++) {
            float *s = S + (size_t)i * nk;
            int n = causal ? q0 + i + 1 : nk; /* keys this row sees */
            float mx = -INFINITY;
            for (int j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int j = 0; j < n; j++) {
                s[j] = exp_nonpos(s[j] - mx);
                sum += s[j];
            }
            float inv = 1.0f / sum;
            for (int j = 0; j < n; j++) s[j] *= inv;
            for (int j = n; j < nk; j++) s[j] = 0.0f;
            lse[((size_t)b * H + h) * T + q0 + i] = mx + logf(sum);
        }
        float *o = out + ((size_t)b * T + q0) * C + (size_t)h * D; /* (bq, D) ld C */
        gemm(0, 0, bq, D, nk, 1.0f, S, nk, v, (int)C3, 0.0f, o, C, 1);
    }
}

void attention_forward(float *out, float *lse, const float *qkv, float *scratch, int B, int T,
                       int C, int H) {
    forward_rows(out, lse, qkv, scratch, B, T, C, H, 0);
}

void attention_forward_causal(float *out, float *lse, const float *qkv, float *scratch, int B,
                              int T, int C, int H) {
    forward_rows(out, lse, qkv, scratch, B, T, C, H, 1);
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
                float li = l[i];
#pragma omp simd
                for (int j = 0; j < T; j++) {
                    p[j] = exp_nonpos(p[j] - li);
                    dp[j] = p[j] * (dp[j] - di);
                }
            }
            gemm(1, 0, T, D, bq, 1.0f, P, T, dO, C, 1.0f, dv, (int)C3, 1);
            gemm(0, 0, bq, D, T, scale, dP, T, k, (int)C3, 1.0f, dq, (int)C3, 1);
            gemm(1, 0, T, D, bq, scale, dP, T, q, (int)C3, 1.0f, dk, (int)C3, 1);
        }
    }
}

