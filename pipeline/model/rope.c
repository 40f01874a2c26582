/* rope.c: EVA02's 2-D rotary position embedding (EVA-CLIP's VisionRotaryEmbeddingFast) on the
 * patch tokens of q and k, its tables for any token grid, and its backward.
 *
 * The tables are per axis, (gh + gw, D/2) each for cos and sin, not EVA's (gh*gw, D): a token's
 * first D/2 channels only ever see its row's angles and the last D/2 its column's, so the full
 * table would repeat each axis gw (or gh) times. The angles are computed in float in the order
 * EVA's torch code uses (position = index / n * G, frequency = 1 / theta^(2k / (D/2)),
 * angle = position * frequency), so cos and sin agree with its tables to an ulp or so. */
#include <math.h>

#include "model/ops.h"

#define ROPE_THETA 10000.0f

void rope_tables(float *cos_t, float *sin_t, int gh, int gw, int D, int G) {
    int half = D / 2;
    for (int r = 0; r < gh + gw; r++) {
        int i = r < gh ? r : r - gh, n = r < gh ? gh : gw;
        float pos = (float)i / (float)n * (float)G;
        for (int k = 0; k < half / 2; k++) {
            float freq = 1.0f / powf(ROPE_THETA, (float)(2 * k) / (float)half);
            float angle = pos * freq;
            float c = cosf(angle), s = sinf(angle);
            /* channels 2k and 2k+1 of a half share frequency k */
            cos_t[(size_t)r * half + 2 * k] = cos_t[(size_t)r * half + 2 * k + 1] = c;
            sin_t[(size_t)r * half + 2 * k] = sin_t[(size_t)r * half + 2 * k + 1] = s;
        }
    }
}

/* Rotate the D/2 channels of x by the angles of one table row: pairs (x0, x1) become
 * (x0 c - x1 s, x1 c + x0 s) forward (EVA: x * cos + rotate_half(x) * sin), and
 * (x0 c + x1 s, x1 c - x0 s), the transpose, backward. */
static inline void rotate(float *x, const float *c, const float *s, int half, float sign) {
    for (int i = 0; i < half; i += 2) {
        float x0 = x[i], x1 = x[i + 1];
        x[i] = x0 * c[i] + (-x1 * sign) * s[i];
        x[i + 1] = x1 * c[i + 1] + (x0 * sign) * s[i + 1];
    }
}

static void rope_apply(float *x, const float *cos_t, const float *sin_t, int B, int gh, int gw,
                       int H, int D, int ld, float sign) {
    int N = gh * gw, half = D / 2;
#pragma omp parallel for schedule(static)
    for (int bn = 0; bn < B * N; bn++) {
        int b = bn / N, n = bn % N, row = n / gw, col = n % gw;
        float *tok = x + ((size_t)b * (N + 1) + 1 + n) * ld; /* patch token n, after the class */
        const float *cr = cos_t + (size_t)row * half, *sr = sin_t + (size_t)row * half;
        const float *cc = cos_t + (size_t)(gh + col) * half;
        const float *sc = sin_t + (size_t)(gh + col) * half;
        for (int h = 0; h < H; h++) {
            rotate(tok + (size_t)h * D, cr, sr, half, sign);
            rotate(tok + (size_t)h * D + half, cc, sc, half, sign);
        }
    }
}

void rope_forward(float *x, const float *cos_t, const float *sin_t, int B, int gh, int gw, int H,
                  int D, int ld) {
    rope_apply(x, cos_t, sin_t, B, gh, gw, H, D, ld, 1.0f);
}

void rope_backward(float *dx, const float *cos_t, const float *sin_t, int B, int gh, int gw,
                   int H, int D, int ld) {
    rope_apply(dx, cos_t, sin_t, B, gh, gw, H, D, ld, -1.0f);
}
