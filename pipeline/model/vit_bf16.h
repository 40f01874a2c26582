/* vit_bf16.h: an inference-only bfloat16 forward of the ViT's transformer blocks, for the
 * frozen teacher (embed_teacher --bf16, evaluate --bf16).
 *
 * vit_bf16_enable converts the blocks' four linear layers (CLIP: in_proj q|k|v, out_proj,
 * c_fc, c_proj; EVA02: q|k|v, proj, w1|w2, w3) to bf16 once (pipeline/model/bf16.h, oneDNN's
 * matmul), and from then on vit_forward runs every block through vit_bf16_block: those
 * products take bf16 weights and bf16 activations (the LayerNorm, attention or activation
 * output rounded to nearest even) and accumulate in float, with the bias, CLIP's activation
 * (QuickGELU or GELU) and the residual add fused into the product in float. Everything else
 * stays float32: the patch embedding, positional embedding and ln_pre, every LayerNorm,
 * attention (q.k^T, softmax, p.v), RoPE, EVA02's SwiGLU gate, the residual stream itself, and
 * the head (ln_post, proj / head, the dense map's normalisation).
 *
 * The bf16 weights are a snapshot: a model whose parameters change afterwards must be enabled
 * again. A bf16 model has no backward (vit_prepare with train refuses it). */
#ifndef CLIPSELF_VIT_BF16_H
#define CLIPSELF_VIT_BF16_H

#include <stddef.h>
#include <stdint.h>

#include "model/bf16.h"
#include "model/vit.h"

struct VitBf16 {
    Bf16Linear *qkv, *out, *fc, *fcproj; /* (L) each */
    Bf16Linear value_last;               /* the last block's value rows (the dense map's path) */
    uint16_t *in, *hidden;               /* (B*T, max(C, F)) and (B*T, F): bf16 matmul inputs */
    size_t capacity;                     /* rows the two buffers hold */
};

/* Convert m's block weights and switch m's forward to bf16 (m->bf16). */
int vit_bf16_enable(Vit *m);
/* Back to float32; frees the bf16 weights (vit_free calls it). */
void vit_bf16_disable(Vit *m);
/* For vit_prepare (inference only): size the bf16 buffers for the prepared shape and make
 * every matmul primitive it needs, so that the forward itself allocates and fails at nothing. */
int vit_bf16_prepare(Vit *m);
/* Block l of the prepared inference forward: block input l -> block input l + 1 (vit.c).
 * Fails only where oneDNN fails to run a primitive it made. */
int vit_bf16_block(Vit *m, int l);

#endif
