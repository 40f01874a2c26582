/* vit.h: the CLIP vision transformer (open_clip layout) and EVA02-CLIP's vision tower, with
 * their forward and backward passes.
 *
 * All parameters live in one flat buffer described by vit_tensors(); gradients and the AdamW
 * moments use the same layout, so the optimiser, the gradient all-reduce and checkpoint I/O are
 * each one loop over one buffer. Sizes: B images, T = 1 + gh*gw tokens, C width, H heads,
 * F mlp width, E embed dim, L layers, P patch, G0 the checkpoint's positional grid side. */
#ifndef CLIPSELF_VIT_H
#define CLIPSELF_VIT_H

#include <stddef.h>

/* Architectures: the open_clip / OpenAI CLIP ViT, and EVA02-CLIP's vision tower (patch bias,
 * no ln_pre, q/k/v with q and v biases, 2-D RoPE on patch tokens, sub-LN in attention,
 * SwiGLU MLP with its LayerNorm, head with bias). */
enum { VIT_ARCH_CLIP = 0, VIT_ARCH_EVA02 = 1, VIT_NUM_ARCHS };
/* "clip" or "eva02" (as in checkpoints); NULL for an unknown value */
const char *vit_arch_name(int arch);

typedef struct {
    int arch;     /* VIT_ARCH_CLIP or VIT_ARCH_EVA02 */
    int width;    /* C */
    int layers;   /* L */
    int heads;    /* H */
    int mlp;      /* F */
    int embed;    /* E */
    int patch;    /* P */
    int grid;     /* G0: positional embedding grid side (image_size / patch) */
    int act;      /* ACT_QUICKGELU (OpenAI weights) or ACT_GELU; EVA02: unused (SwiGLU), 0 */
    float ln_eps; /* 1e-5 (CLIP), 1e-6 (EVA02) */
    int rope_grid; /* EVA02: RoPE pretraining grid side (16 for B/16 and L/14-336); CLIP: 0 */
} VitConfig;

/* The parameter tensors, in buffer order. Each architecture uses a subset: the others have
 * numel 0 (and no storage) in its table. F' = F for CLIP, 2F for EVA02 (rows w1|w2). */
enum {
    VIT_CONV1_W,   /* (C, 3, P, P)            both: conv1 / patch_embed.proj.weight */
    VIT_PATCH_B,   /* (C)                     EVA02: patch_embed.proj.bias */
    VIT_CLASS_EMB, /* (C)                     both: class_embedding / cls_token */
    VIT_POS_EMB,   /* (1 + G0*G0, C)          both: positional_embedding / pos_embed */
    VIT_LN_PRE_W,  /* (C)                     CLIP */
    VIT_LN_PRE_B,  /* (C)                     CLIP */
    VIT_LN1_W,     /* (L, C)                  both: ln_1 / norm1 */
    VIT_LN1_B,     /* (L, C) */
    VIT_QKV_W,     /* (L, 3C, C) rows q|k|v   both (EVA02: q_proj|k_proj|v_proj) */
    VIT_QKV_B,     /* (L, 3C)                 both (EVA02: q_bias|0|v_bias; k part stays 0) */
    VIT_ATTN_LN_W, /* (L, C)                  EVA02: attn.inner_attn_ln (sub-LN) */
    VIT_ATTN_LN_B, /* (L, C)                  EVA02 */
    VIT_OUT_W,     /* (L, C, C)               both: attn.out_proj / attn.proj */
    VIT_OUT_B,     /* (L, C) */
    VIT_LN2_W,     /* (L, C)                  both: ln_2 / norm2 */
    VIT_LN2_B,     /* (L, C) */
    VIT_FC_W,      /* (L, F', C)              CLIP: c_fc; EVA02: rows w1|w2 */
    VIT_FC_B,      /* (L, F')                 CLIP: c_fc; EVA02: w1.bias|w2.bias */
    VIT_FFN_LN_W,  /* (L, F)                  EVA02: mlp.ffn_ln */
    VIT_FFN_LN_B,  /* (L, F)                  EVA02 */
    VIT_FCPROJ_W,  /* (L, C, F)               both: c_proj / w3 */
    VIT_FCPROJ_B,  /* (L, C) */
    VIT_LN_POST_W, /* (C)                     both: ln_post / norm */
    VIT_LN_POST_B, /* (C) */
    VIT_PROJ,      /* CLIP: (C, E) used as x @ proj; EVA02: (E, C) head.weight, x @ head^T */
    VIT_HEAD_B,    /* (E)                     EVA02: head.bias */
    VIT_NUM_TENSORS
};

typedef struct {
    const char *name;  /* name in the project's HDF5 checkpoints: open_clip's (CLIP) or EVA's
                          (EVA02; the fused q|k|v and w1|w2 get names of their own); per-layer
                          tensors hold "%d" for the block index; "" when numel is 0 */
    int per_layer;     /* 1: stored as (L, shape...) and named once per block */
    int ndim;          /* dimensions of one (per-block) tensor */
    int shape[4];      /* shape of one (per-block) tensor */
    size_t offset;     /* first float in the flat buffer */
    size_t numel;      /* floats in the whole (L, ...) tensor */
    int decay;         /* AdamW weight decay applies (open_clip: not 1-D, bias or norm) */
} VitTensor;

/* Fill the table for cfg; returns the total number of floats. */
size_t vit_tensors(VitTensor t[VIT_NUM_TENSORS], const VitConfig *cfg);

typedef struct {
    float *conv1_w, *patch_b, *class_emb, *pos_emb, *ln_pre_w, *ln_pre_b, *ln1_w, *ln1_b, *qkv_w,
        *qkv_b, *attn_ln_w, *attn_ln_b, *out_w, *out_b, *ln2_w, *ln2_b, *fc_w, *fc_b, *ffn_ln_w,
        *ffn_ln_b, *fcproj_w, *fcproj_b, *ln_post_w, *ln_post_b, *proj, *head_b;
} VitParams; /* pointers into a flat buffer, in enum order; shapes as in the enum */

/* Forward modes. */
enum {
    VIT_IMAGE = 0, /* image embedding: all blocks, ln_post on the class token, @ proj (EVA02:
                      norm, head) -> (B, E) */
    VIT_DENSE = 1  /* "v2" dense map: last block value-only, ln_post + proj (EVA02: norm, head)
                      on every patch token, L2-normalised -> (B, gh*gw, E); the class token is
                      dropped */
};

/* Activations kept for the backward; sizes for the shape given to vit_prepare. F' = F (CLIP)
 * or 2F (EVA02, w1|w2); D = C / H. Buffers an architecture does not use are NULL. */
typedef struct {
    float *cols;       /* (B*N, 3*P*P) im2col of the image, N = gh*gw */
    float *pos;        /* (T, C) positional embedding at this grid (resized if gh,gw != G0) */
    float *rope_cos, *rope_sin; /* EVA02: (gh + gw, D/2) RoPE angles of each grid row, then
                                   of each grid column (rope_tables in ops.h) */
    float *x0;         /* CLIP: (B, T, C) patch + class + position, input of ln_pre */
    float *lnpre_mean, *lnpre_rstd; /* CLIP: (B, T) */
    float *xin;        /* (L+1, B, T, C) input of each block; xin[L] = output of the last */
    float *ln1_mean, *ln1_rstd; /* (L, B, T) */
    float *qkv;        /* (L, B, T, 3C), EVA02 with q and k rotated; unused by dense mode's
                          last block */
    float *atty;       /* (L, B, T, C) attention output (EVA02: before inner_attn_ln) */
    float *lse;        /* (L, B, H, T) attention log-sum-exp */
    float *attnln_mean, *attnln_rstd; /* EVA02: (L, B, T) inner_attn_ln */
    float *xmid;       /* (L, B, T, C) block input + attention branch */
    float *ln2_mean, *ln2_rstd; /* (L, B, T) */
    float *fch;        /* (L, B, T, F') MLP pre-activation (EVA02: w1 x | w2 x) */
    float *ffnln_mean, *ffnln_rstd; /* EVA02: (L, B, T) ffn_ln */
    float *lnpost;     /* (B, Tp, C) ln_post output, Tp = 1 (image) or N (dense) */
    float *lnpost_mean, *lnpost_rstd; /* (B, Tp) */
    float *projout;    /* (B, Tp, E) before normalisation */
    float *norm;       /* (B, N) dense token norms */
    float *out;        /* (B, E) image embedding or (B, N, E) normalised dense map */
    /* scratch, recomputed or reused per layer */
    float *ln;         /* (B, T, C) */
    float *fca;        /* (B, T, F) activated MLP hidden (EVA02: silu(w1 x) * w2 x) */
    float *ffn;        /* EVA02: (B, T, F) ffn_ln output */
    float *attn_scratch; /* attention_scratch_floats(T) */
    /* gradients of activations (backward only) */
    float *dx, *dx2;   /* (B, T, C) */
    float *dqkv;       /* (B, T, 3C) */
    float *datty;      /* (B, T, C) */
    float *dfch;       /* (B, T, F') */
    float *dffn;       /* EVA02: (B, T, F) gradient of the ffn_ln output */
    float *dlnpost;    /* (B, Tp, C) */
    float *dprojout;   /* (B, Tp, E) */
} VitActs;

typedef struct {
    VitConfig cfg;
    VitTensor tensors[VIT_NUM_TENSORS];
    size_t num_params;
    float *params_mem; /* (num_params) */
    VitParams params;
    float *grads_mem;  /* (num_params), NULL until vit_alloc_grads */
    VitParams grads;
    int frozen[VIT_NUM_TENSORS]; /* 1: no gradient is computed and the optimiser skips it */
    /* shape of the current activations */
    int mode, B, H, W, gh, gw, T;
    int train;         /* activations for the backward were kept */
    /* Parts of the parameters that a backward in this mode never reaches and that PyTorch holds
     * as parameters of their own, so they get no gradient at all there and torch's AdamW leaves
     * them untouched, weight decay included: EVA02's dense path does not use the last block's
     * q_proj, k_proj and q_bias (rows q|k of its qkv). CLIP's fused in_proj does get a (zero)
     * gradient for those rows, and is decayed. In offset order; the optimiser skips them. */
    struct { size_t offset, count; } unreached[2];
    int num_unreached;
    /* Called by vit_backward, on its thread and outside parallel regions, each time a part of
     * the gradients is final: done = L after the head, l after block l (its slice of every
     * per-layer tensor), -1 after the embedding. NULL: not called. (allreduce.h starts the sum
     * over ranks of each finished bucket from it.) */
    void (*grad_ready)(void *arg, int done);
    void *grad_ready_arg;
    VitActs acts;
    float *acts_mem;
    size_t acts_capacity; /* floats in acts_mem */
    struct VitBf16 *bf16; /* non-NULL: the blocks run in bf16, inference only (vit_bf16.h) */
} Vit;

int vit_config_check(const VitConfig *cfg);
/* The shapes of the named models: "tiny" (64 wide, 2 blocks, patch 8, GELU), "b16", "l14"
 * (OpenAI CLIP ViT-B/16 and L/14-336), "eva-tiny" (64 wide, 2 blocks, 4 heads, mlp 170, patch
 * 8, RoPE grid 16), "eva-b16", "eva-l14" (EVA02-CLIP-B/16 and L/14-336). */
int vit_preset(VitConfig *cfg, const char *name);
/* Allocate the parameters (zeroed) for cfg. */
int vit_init(Vit *m, const VitConfig *cfg);
void vit_free(Vit *m);
/* Allocate the gradient buffer (zeroed). */
int vit_alloc_grads(Vit *m);
void vit_zero_grad(Vit *m);
/* CLIPSelf trains the transformer blocks only: the patch embedding (EVA02: with its bias),
 * class token, positional embedding, ln_pre, ln_post and proj (EVA02: norm, head weight and
 * bias) are frozen (the reference's open_clip lock() with as many unlocked groups as blocks). */
void vit_freeze_clipself(Vit *m);
/* Deterministic random initialisation (for tests and the synthetic world). */
void vit_init_random(Vit *m, unsigned long long seed);

/* Size the activations for B images of H x W pixels (multiples of the patch) in mode; train
 * keeps what the backward needs. Buffers are reused while the shape fits. */
int vit_prepare(Vit *m, int mode, int B, int H, int W, int train);
/* img (B, 3, H, W) normalised. Result in m->acts.out: (B, E) or (B, gh*gw, E). */
void vit_forward(Vit *m, const float *img);
/* dout has the shape of m->acts.out. Accumulates into m->grads (not frozen tensors). dimg
 * (B, 3, H, W) may be NULL. Needs a forward prepared with train = 1 and allocated gradients. */
int vit_backward(Vit *m, const float *dout, float *dimg);

/* Block l's input (B, T, C) in the prepared activations; l = L is the last block's output. */
float *vit_block_input(const Vit *m, int l);

/* Floating-point operations of one forward (multiply-add = 2) for the prepared shape. */
double vit_forward_flops(const Vit *m);
/* Its parts in the blocks: the linear layers (qkv, out-proj, fc1, fc2) and the attention
 * products (Q.K^T and P.V); the rest is the patch embedding and the head. */
void vit_forward_flops_parts(const Vit *m, double *linear, double *attention);

#endif
