/* patch_embed.c: the ViT patch embedding, a convolution with kernel = stride = P and no bias,
 * computed as im2col followed by one gemm; its backward as two gemms. */
#include <string.h>

#include "model/ops.h"

void patch_embed_forward(float *out, float *cols, const float *img, const float *w, int B, int H,
                         int W, int P, int C) {
    int gh = H / P, gw = W / P, K = 3 * P * P;
    /* cols (B*gh*gw, K): row = patch in row-major grid order, column c*P*P + ky*P + kx, the
     * order of w (C, 3, P, P) flattened */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < gh; gy++)
            for (int gx = 0; gx < gw; gx++) {
                float *row = cols + ((size_t)(b * gh + gy) * gw + gx) * K; /* (K) */
                for (int c = 0; c < 3; c++)
                    for (int ky = 0; ky < P; ky++)
                        memcpy(row + (c * P + ky) * P,
                               img + (((size_t)b * 3 + c) * H + gy * P + ky) * W + gx * P,
                               (size_t)P * sizeof(float));
            }
    /* out (B*gh*gw, C) = cols . w^T */
    gemm(0, 1, B * gh * gw, C, K, 1.0f, cols, K, w, K, 0.0f, out, C, 0);
}

void patch_embed_backward(float *dw, float *dimg, const float *dout, const float *cols,
                          const float *w, int B, int H, int W, int P, int C) {
    int gh = H / P, gw = W / P, K = 3 * P * P, N = gh * gw;
    /* dw (C, K) += dout^T . cols */
    if (dw) gemm(1, 0, C, K, B * N, 1.0f, dout, C, cols, K, 1.0f, dw, K, 0);
    if (!dimg) return;
    /* dcols = dout . w scattered back (col2im). Patches do not overlap, so the gw patches of
     * one grid row, channel c and kernel row ky own one contiguous image row of W = gw*P pixels,
     * seen as a (gw, P) matrix: each of those rows is one gemm accumulating straight into dimg,
     * with no dcols buffer. Grid rows are disjoint in dimg, so they run in parallel (gemm is
     * single-threaded inside a parallel region). */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < gh; gy++)
            for (int c = 0; c < 3; c++)
                for (int ky = 0; ky < P; ky++)
                    gemm(0, 0, gw, P, C, 1.0f, dout + ((size_t)b * N + (size_t)gy * gw) * C, C,
                         w + (c * P + ky) * P, K, 1.0f,
                         dimg + (((size_t)b * 3 + c) * H + gy * P + ky) * W, P, 0);
}
