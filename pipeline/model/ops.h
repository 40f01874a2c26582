/* ops.h: the numerical operations of the ViT and of CLIPSelf, each a forward/backward pair.
 *
 * Conventions (llm.c style): outputs first, then inputs, then sizes. Tensors are row-major and
 * channel-last: a (N, C) tensor is N rows of C contiguous floats. Backward functions ACCUMULATE
 * into their gradient outputs (+=); gradients are zeroed once per step by the caller. A gradient
 * output that is NULL is not computed (frozen parameter, or input that needs no gradient). */
#ifndef CLIPSELF_OPS_H
#define CLIPSELF_OPS_H

#include <stddef.h>

#include "base/blas.h"


/* ---- matrix products (gemm.c): every matrix product of the project goes through BLIS ---- */
/* Row-major C (m, n) = alpha * op(A) (m, k) * op(B) (k, n) + beta * C, op = transpose if t*.
 * lda/ldb/ldc are row strides. nthreads <= 0 means cs_num_threads(). */
void gemm(int transa, int transb, int m, int n, int k, float alpha, const float *a, int lda,
          const float *b, int ldb, float beta, float *c, int ldc, int nthreads);

/* out (N, OC) = inp (N, IC) . w^T + b, w (OC, IC) with row stride ldw (>= IC), b (OC) or NULL. */
void linear_forward(float *out, const float *inp, const float *w, int ldw, const float *b, int N,
                    int IC, int OC);
/* dinp (N, IC) += dout . w;  dw (OC, IC) += dout^T . inp;  db (OC) += sum_n dout. */
void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                     const float *w, int ldw, int N, int IC, int OC);

/* ---- layernorm.c ------------------------------------------------------------------------ */
/* out (N, C) = (inp - mean) * rstd * w + b; mean, rstd (N) are saved for the backward. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, int N, int C, float eps);
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, int N, int C);

/* ---- activation.c ----------------------------------------------------------------------- */
enum { ACT_QUICKGELU = 0, ACT_GELU = 1 }; /* x*sigmoid(1.702x); exact erf GELU */
void act_forward(float *out, const float *inp, size_t n, int kind);
void act_backward(float *dinp, const float *dout, const float *inp, size_t n, int kind);
/* EVA02's SwiGLU gate on the fused w1|w2 pre-activation inp (N, 2F), each row x1 (F) | x2 (F):
 * out (N, F) = silu(x1) * x2, silu(x) = x * sigmoid(x). */
void swiglu_forward(float *out, const float *inp, int N, int F);
/* dinp (N, 2F) += */
void swiglu_backward(float *dinp, const float *dout, const float *inp, int N, int F);

/* ---- attention.c ------------------------------------------------------------------------ */
/* Multi-head softmax attention on a fused qkv tensor, rows q|k|v:
 *   qkv (B, T, 3C) -> out (B, T, C), lse (B, H, T) = per-row log-sum-exp of the scaled scores.
 * Fused (flash-style): no T x T nor block x T matrix; the backward recomputes the
 * probabilities per block from qkv and lse. dqkv is accumulated (+=). Head size D = C / H
 * <= 128 (the scratch is sized for that; more aborts). scratch holds
 * attention_scratch_floats(T, threads) floats (a share per OpenMP thread), kept by the caller
 * for the life of a run. */
size_t attention_scratch_floats(int T, int nthreads);
void attention_forward(float *out, float *lse, const float *qkv, float *scratch, int B, int T,
                       int C, int H);
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                        const float *lse, float *scratch, int B, int T, int C, int H);
/* Causal (text tower) forward: query t attends to keys 0..t only; lse (B, H, T) over those
 * keys. Same qkv layout, output and scratch as attention_forward. Forward only: the text tower
 * is never trained here. */
void attention_forward_causal(float *out, float *lse, const float *qkv, float *scratch, int B,
                              int T, int C, int H);

/* ---- rope.c ----------------------------------------------------------------------------- */
/* EVA02's 2-D rotary position embedding (EVA-CLIP VisionRotaryEmbeddingFast, theta 1e4), for
 * heads of D channels (D divisible by 4) on a gh x gw token grid whose positional side at
 * pretraining was G: grid row i sits at position i * G / gh, column j at j * G / gw.
 * Tables cos, sin (gh + gw, D/2): row i < gh holds the angles of grid row i, row gh + j those
 * of grid column j; channels 2k and 2k+1 both turn by position * theta^(-2k / (D/2)). */
void rope_tables(float *cos, float *sin, int gh, int gw, int D, int G);
/* In place on the patch tokens of x (B, 1 + gh*gw, ld), tokens row-major over the grid after
 * the class token (row 0, untouched): each of H heads, channels [h*D, (h+1)*D) of a row, turns
 * its first D/2 channels by the token's grid row and its last D/2 by its column; a pair
 * (x0, x1) becomes x * cos + (-x1, x0) * sin. */
void rope_forward(float *x, const float *cos, const float *sin, int B, int gh, int gw, int H,
                  int D, int ld);
/* The rotation's backward is its inverse: unlike the other backward functions it transforms the
 * gradient dx (B, 1 + gh*gw, ld) in place instead of accumulating into another buffer. */
void rope_backward(float *dx, const float *cos, const float *sin, int B, int gh, int gw, int H,
                   int D, int ld);

/* ---- patch_embed.c ---------------------------------------------------------------------- */
/* Convolution with kernel = stride = P and no bias, as im2col + gemm.
 * img (B, 3, H, W) -> out (B, gh*gw, C), gh = H/P, gw = W/P; w (C, 3, P, P).
 * cols (B*gh*gw, 3*P*P) is the caller's buffer and is kept for the backward. */
void patch_embed_forward(float *out, float *cols, const float *img, const float *w, int B, int H,
                         int W, int P, int C);
/* dw (C, 3, P, P) += ; dimg (B, 3, H, W) += (either may be NULL). */
void patch_embed_backward(float *dw, float *dimg, const float *dout, const float *cols,
                          const float *w, int B, int H, int W, int P, int C);

/* ---- interp.c --------------------------------------------------------------------------- */
/* Bicubic resize of a channel-last grid with PyTorch F.interpolate(mode="bicubic",
 * align_corners=False) semantics (A = -0.75, borders clamped, no antialias):
 * inp (ih, iw, C) -> out (oh, ow, C). Forward only: the positional embedding it serves is frozen. */
void bicubic_resize(float *out, const float *inp, int ih, int iw, int oh, int ow, int C);

/* ---- normalize.c: L2 normalisation and the cosine distillation loss --------------------- */
/* out (N, C) = inp / max(||inp||, 1e-12) (torch F.normalize); norm (N) saved for backward. */
void l2norm_forward(float *out, float *norm, const float *inp, int N, int C);
void l2norm_backward(float *dinp, const float *dout, const float *out, const float *norm, int N,
                     int C);
/* loss = 1 - mean_i <s_i, t_i> over N rows of already normalised s, t (N, C). */
float cosine_loss_forward(const float *s, const float *t, int N, int C);
/* ds (N, C) += dloss * d loss / d s = -dloss * t / N. */
void cosine_loss_backward(float *ds, const float *t, float dloss, int N, int C);

/* ---- roi_align.c ------------------------------------------------------------------------ */
/* torchvision.ops.roi_align on a channel-last map, aligned=True:
 *   feat (B, FH, FW, C), boxes (R, 5) rows [batch_index, x1, y1, x2, y2] in input coordinates
 *   scaled by spatial_scale -> out (R, PH, PW, C). sampling_ratio <= 0 means adaptive
 *   (ceil(roi size / output size) samples per bin side). */
void roi_align_forward(float *out, const float *feat, const float *boxes, int R, int B, int FH,
                       int FW, int C, int PH, int PW, float spatial_scale, int sampling_ratio);
/* dfeat (B, FH, FW, C) += */
void roi_align_backward(float *dfeat, const float *dout, const float *boxes, int R, int B, int FH,
                        int FW, int C, int PH, int PW, float spatial_scale, int sampling_ratio);

/* ---- maskpool.c ------------------------------------------------------------------------- */
/* Mask pooling: out (R, C) = sum_t mask[r, t] * feat[b_r, t] / sum_t mask[r, t], with
 * feat (B, N, C), mask (R, N) >= 0, batch (R) image index of each mask. A mask with zero sum
 * gives a zero row. The caller renormalises with l2norm_forward. */
void maskpool_forward(float *out, const float *feat, const float *mask, const int *batch, int R,
                      int B, int N, int C);
void maskpool_backward(float *dfeat, const float *dout, const float *mask, const int *batch, int R,
                       int B, int N, int C);

#endif
