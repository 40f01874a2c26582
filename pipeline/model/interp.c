/* interp.c: bicubic resize of a channel-last grid, bit-for-bit the float arithmetic of PyTorch's
 * CPU F.interpolate(mode="bicubic", align_corners=False) (used for the positional embedding).
 *
 * Bit-exactness was established against Debian's PyTorch 1.13 (AVX2 kernels) by pushing one-hot
 * inputs through it: its compiler contracts some multiply-adds into FMAs, and its source
 * coordinate is formed in double from a float scale. The explicit fmaf() calls below reproduce
 * exactly those contractions; this file is compiled without automatic contraction (-std=c11). */
#include <math.h>

#include "model/ops.h"

#define CUBIC_A -0.75f

/* PyTorch's cubic_convolution1 ((A+2)|d|^3 - (A+3)|d|^2 + 1, |d| <= 1) and cubic_convolution2
 * (A|d|^3 - 5A|d|^2 + 8A|d| - 4A, 1 < |d| < 2), with PyTorch's FMA contractions. */
static float cubic1(float x) { return fmaf(CUBIC_A + 2, x, -(CUBIC_A + 3)) * x * x + 1; }
static float cubic2(float x) {
    return fmaf(fmaf(CUBIC_A, x, -5 * CUBIC_A), x, 8 * CUBIC_A) * x - 4 * CUBIC_A;
}

/* The 4 taps (clamped to the input) and weights of output index i along one axis. */
static void cubic_taps(int idx[4], float wt[4], int i, int in, int out) {
    float scale = (float)in / (float)out;
    /* not clamped at 0: the cubic path keeps negative source coordinates */
    double src = (double)scale * ((double)i + 0.5) - 0.5;
    int i0 = (int)floorf((float)src);
    float t = (float)(src - i0);
    wt[0] = cubic2(t + 1.0f);
    wt[1] = cubic1(t);
    wt[2] = cubic1(1.0f - t);
    wt[3] = cubic2(1.0f - t + 1.0f);
    for (int j = 0; j < 4; j++) {
        int k = i0 - 1 + j;
        idx[j] = k < 0 ? 0 : k > in - 1 ? in - 1 : k;
    }
}

/* PyTorch's 4-tap sum: the first product fused into the second addition, then a chain of FMAs. */
static inline float tap4(float v0, float v1, float v2, float v3, const float w[4]) {
    return fmaf(v3, w[3], fmaf(v2, w[2], fmaf(v0, w[0], v1 * w[1])));
}

void bicubic_resize(float *out, const float *inp, int ih, int iw, int oh, int ow, int C) {
#pragma omp parallel for schedule(static)
    for (int oy = 0; oy < oh; oy++) {
        int yi[4], xi[4];
        float wy[4], wx[4];
        cubic_taps(yi, wy, oy, ih, oh);
        for (int ox = 0; ox < ow; ox++) {
            cubic_taps(xi, wx, ox, iw, ow);
            const float *p[4][4]; /* p[j][i]: (C) input pixel at row yi[j], column xi[i] */
            for (int j = 0; j < 4; j++)
                for (int i = 0; i < 4; i++) p[j][i] = inp + ((size_t)yi[j] * iw + xi[i]) * C;
            float *o = out + ((size_t)oy * ow + ox) * C; /* (C) */
            /* each of the 4 rows interpolated along x, then the rows along y */
            for (int c = 0; c < C; c++) {
                float r0 = tap4(p[0][0][c], p[0][1][c], p[0][2][c], p[0][3][c], wx);
                float r1 = tap4(p[1][0][c], p[1][1][c], p[1][2][c], p[1][3][c], wx);
                float r2 = tap4(p[2][0][c], p[2][1][c], p[2][2][c], p[2][3][c], wx);
                float r3 = tap4(p[3][0][c], p[3][1][c], p[3][2][c], p[3][3][c], wx);
                o[c] = tap4(r0, r1, r2, r3, wy);
            }
        }
    }
}
