/* maskpool.c: mask pooling of dense tokens (the "maskpool" evaluation of CLIPSelf): the
 * mask-weighted mean of an image's token features, forward and backward. */
#include <string.h>

#include "model/ops.h"

/* sum_t mask[t] of one mask (N) */
static float mask_sum(const float *m, int N) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int t = 0; t < N; t++) s += m[t];
    return (float)s;
}

void maskpool_forward(float *out, const float *feat, const float *mask, const int *batch, int R,
                      int B, int N, int C) {
    (void)B;
#pragma omp parallel for schedule(dynamic, 1)
    for (int r = 0; r < R; r++) {
        const float *m = mask + (size_t)r * N;            /* (N) */
        const float *f = feat + (size_t)batch[r] * N * C; /* (N, C) */
        float *o = out + (size_t)r * C;                   /* (C) */
        float s = mask_sum(m, N);
        memset(o, 0, (size_t)C * sizeof(float));
        if (s <= 0.0f) continue;
        for (int t = 0; t < N; t++) {
            /* masks are mostly zeros: skipping them is the speed of this op */
            if (m[t] == 0.0f) continue;
            const float *ft = f + (size_t)t * C; /* (C) */
            for (int c = 0; c < C; c++) o[c] += m[t] * ft[c];
        }
        for (int c = 0; c < C; c++) o[c] /= s;
    }
}

void maskpool_backward(float *dfeat, const float *dout, const float *mask, const int *batch, int R,
                       int B, int N, int C) {
    (void)B;
    if (R <= 0) return;
    float sum[R]; /* (R) mask sums; R is the number of masks of a batch, a few hundred at most */
    for (int r = 0; r < R; r++) sum[r] = mask_sum(mask + (size_t)r * N, N);
    /* masks of one image share its token rows: each task owns a token and visits every mask,
     * so the scatter is race-free and in a fixed order */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++)
        for (int r = 0; r < R; r++) {
            float m = mask[(size_t)r * N + t];
            if (m == 0.0f || sum[r] <= 0.0f) continue;
            float a = m / sum[r];
            const float *dy = dout + (size_t)r * C;                        /* (C) */
            float *df = dfeat + ((size_t)batch[r] * N + t) * C;            /* (C) */
            for (int c = 0; c < C; c++) df[c] += a * dy[c];
        }
}
