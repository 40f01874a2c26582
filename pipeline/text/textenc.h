/* textenc.h: the CLIP text transformer (open_clip's TextTransformer), forward only: CLIPSelf
 * never trains the text tower; it turns class prompts into class embeddings.
 *
 *   x = token_embedding[tokens] + positional_embedding            (B, T, C)
 *   L pre-LN residual blocks, causal attention (token t sees tokens 0..t):
 *     x += out_proj(attention(in_proj(ln_1 x)));  x += c_proj(act(c_fc(ln_2 x)))
 *   out = ln_final(x at the first position of the row's highest token id) @ text_projection
 *
 * The highest id is the end token of a tokenized text (49407), as open_clip pools with
 * tokens.argmax(dim=-1). The blocks have the layout of the vision tower's (fused q|k|v rows,
 * LayerNorm eps 1e-5, QuickGELU for OpenAI weights, exact GELU otherwise). Sizes: B texts,
 * ctx the context (positional rows, 77), T <= ctx the tokens run, C width, H heads, F mlp
 * width, E embed dim, V vocabulary, L layers.
 *
 * Causality means a row's pooled feature depends only on its tokens up to the pooled position,
 * so a forward runs T = 1 + the largest pooled position of the batch, not the whole context:
 * the result is the one of the full context (padding included) that open_clip computes. */
#ifndef CLIPSELF_TEXTENC_H
#define CLIPSELF_TEXTENC_H

#include <stddef.h>

typedef struct {
    int width;    /* C */
    int layers;   /* L */
    int heads;    /* H */
    int mlp;      /* F */
    int embed;    /* E */
    int vocab;    /* V */
    int context;  /* ctx */
    int act;      /* ACT_QUICKGELU (OpenAI weights) or ACT_GELU */
    float ln_eps; /* 1e-5 */
} TextConfig;

/* The parameter tensors, in buffer order. */
enum {
    TXT_TOKEN_EMB, /* (V, C) */
    TXT_POS_EMB,   /* (ctx, C) */
    TXT_LN1_W,     /* (L, C) */
    TXT_LN1_B,     /* (L, C) */
    TXT_QKV_W,     /* (L, 3C, C) rows q|k|v */
    TXT_QKV_B,     /* (L, 3C) */
    TXT_OUT_W,     /* (L, C, C) */
    TXT_OUT_B,     /* (L, C) */
    TXT_LN2_W,     /* (L, C) */
    TXT_LN2_B,     /* (L, C) */
    TXT_FC_W,      /* (L, F, C) */
    TXT_FC_B,      /* (L, F) */
    TXT_FCPROJ_W,  /* (L, C, F) */
    TXT_FCPROJ_B,  /* (L, C) */
    TXT_LN_FINAL_W, /* (C) */
    TXT_LN_FINAL_B, /* (C) */
    TXT_PROJ,      /* (C, E), used as x @ text_projection */
    TXT_NUM_TENSORS
};

typedef struct {
    const char *name;  /* open_clip name; per-layer tensors hold "%d" for the block index */
    int per_layer;     /* 1: stored as (L, shape...) and named once per block */
    int ndim;          /* dimensions of one (per-block) tensor */
    int shape[2];      /* shape of one (per-block) tensor */
    size_t offset;     /* first float in the flat buffer */
    size_t numel;      /* floats in the whole (L, ...) tensor */
} TextTensor;

/* Fill the table for cfg; returns the total number of floats. */
size_t text_tensors(TextTensor t[TXT_NUM_TENSORS], const TextConfig *cfg);

typedef struct {
    float *token_emb, *pos_emb, *ln1_w, *ln1_b, *qkv_w, *qkv_b, *out_w, *out_b, *ln2_w, *ln2_b,
        *fc_w, *fc_b, *fcproj_w, *fcproj_b, *ln_final_w, *ln_final_b, *proj;
} TextParams; /* pointers into a flat buffer, in enum order; shapes as in the enum */

/* Forward activations for B texts of T tokens; reused while the shape fits. */
typedef struct {
    float *x;          /* (B, T, C) residual stream: each block's input, then its output */
    float *x2;         /* (B, T, C) residual stream after a block's attention branch */
    float *ln;         /* (B, T, C) LayerNorm output */
    float *mean, *rstd; /* (B, T) LayerNorm statistics (not kept: forward only) */
    float *qkv;        /* (B, T, 3C) */
    float *atty;       /* (B, T, C) attention output before out_proj */
    float *lse;        /* (B, H, T) */
    float *fch, *fca;  /* (B, T, F) MLP pre-activation and activation */
    float *pooled;     /* (B, C) ln_final of the pooled tokens */
    float *attn_scratch; /* attention_scratch_floats(T) */
} TextActs;

typedef struct {
    TextConfig cfg;
    TextTensor tensors[TXT_NUM_TENSORS];
    size_t num_params;
    float *params_mem; /* (num_params) */
    TextParams params;
    int *pool;         /* (B) pooled position of each row of the last forward */
    TextActs acts;
    float *acts_mem;
    size_t acts_capacity; /* floats in acts_mem */
    int pool_capacity;
    const char *naming; /* "open_clip", "EVA-CLIP" or "Hugging Face" when loaded, else NULL */
} TextEncoder;

int text_config_check(const TextConfig *cfg);
/* Allocate the parameters (zeroed) for cfg. */
int textenc_init(TextEncoder *m, const TextConfig *cfg);
void textenc_free(TextEncoder *m);

/* out (B, E) = the text embeddings (not normalised) of tokens (B, ctx): rows of ids as
 * tokenizer_encode gives them (start token, ids, end token, zeros), ctx = cfg.context. An id
 * outside [0, V) is an error naming the row and position. */
int textenc_forward(TextEncoder *m, float *out, const int *tokens, int B);

/* Load the text tower from a safetensors checkpoint, under any of three namings:
 *   open_clip:    token_embedding.weight, positional_embedding, transformer.resblocks.N.{ln_1,
 *                 attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, ln_2, mlp.c_fc,
 *                 mlp.c_proj}, ln_final, text_projection (C, E)
 *   EVA-CLIP:     the same under "text."
 *   Hugging Face: text_model.embeddings.{token_embedding.weight, position_embedding.weight},
 *                 text_model.encoder.layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj,
 *                 layer_norm2, mlp.fc1, mlp.fc2}, text_model.final_layer_norm,
 *                 text_projection.weight (E, C) = text_projection transposed
 * The vision tower (visual.*, vision_model.*) and logit_scale in the same file are ignored.
 * width, layers, mlp, embed, vocab and context come from the shapes. heads: metadata
 * "clipself.text_heads", else width / 64 (every OpenAI and open_clip text tower). act:
 * metadata "clipself.text_act", else "clipself.act" ("quickgelu" | "gelu"), else QuickGELU
 * (OpenAI's weights) for open_clip and Hugging Face names and GELU for EVA-CLIP names (every
 * EVA-CLIP text tower is built with nn.GELU).
 * ln_eps: metadata "clipself.text_ln_eps", else 1e-5 (the vision tower's clipself.ln_eps is
 * not used: EVA's vision tower has 1e-6, its text tower 1e-5).
 * A file without a text tower, a missing, mis-shaped or unexpected tensor (under the naming's
 * prefixes) and a truncated file are errors naming the tensor and the file. */
int textenc_load_safetensors(TextEncoder *m, const char *path);

#endif
