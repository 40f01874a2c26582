/* normalize.c: per-row L2 normalisation (torch F.normalize) and CLIPSelf's cosine distillation
 * loss 1 - mean_i <s_i, t_i>, forward and backward. */
#include <math.h>

#include "model/ops.h"

#define L2_EPS 1e-12f

void l2norm_forward(float *out, float *norm, const float *inp, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C; /* (C) */
        float *y = out + (size_t)n * C;       /* (C) */
        double ss = 0.0;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        /* the unclamped norm is kept: the backward needs to know whether the clamp was active */
        float nrm = (float)sqrt(ss);
        float d = nrm > L2_EPS ? nrm : L2_EPS;
        for (int i = 0; i < C; i++) y[i] = x[i] / d;
        norm[n] = nrm;
    }
}

void l2norm_backward(float *dinp, const float *dout, const float *out, const float *norm, int N,
                     int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *y = out + (size_t)n * C;   /* (C) */
        const float *dy = dout + (size_t)n * C; /* (C) */
        float *dx = dinp + (size_t)n * C;       /* (C) */
        if (norm[n] < L2_EPS) {
            /* clamped: the denominator is the constant eps (torch's clamp_min passes no
             * gradient to the norm below the bound) */
            for (int i = 0; i < C; i++) dx[i] += dy[i] / L2_EPS;
            continue;
        }
        /* dx = (dy - y <dy, y>) / ||x|| */
        double dot = 0.0;
#pragma omp simd reduction(+ : dot)
        for (int i = 0; i < C; i++) dot += (double)dy[i] * y[i];
        float p = (float)dot, inv = 1.0f / norm[n];
        for (int i = 0; i < C; i++) dx[i] += (dy[i] - y[i] * p) * inv;
    }
}

float cosine_loss_forward(const float *s, const float *t, int N, int C) {
    /* serial: a few dozen rows, and a fixed summation order keeps runs bit-identical */
    double sum = 0.0;
    for (int n = 0; n < N; n++) {
        const float *a = s + (size_t)n * C, *b = t + (size_t)n * C; /* (C) each */
        double dot = 0.0;
#pragma omp simd reduction(+ : dot)
        for (int i = 0; i < C; i++) dot += (double)a[i] * b[i];
        sum += dot;
    }
    return (float)(1.0 - sum / N);
}

void cosine_loss_backward(float *ds, const float *t, float dloss, int N, int C) {
    float scale = -dloss / (float)N;
    size_t n = (size_t)N * C;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) ds[i] += scale * t[i];
}
