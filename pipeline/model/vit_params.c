/* vit_params.c: the flat parameter layout of the ViT (table of tensors), allocation,
 * freezing and deterministic random initialisation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "base/rng.h"
#include "model/ops.h"
#include "model/vit.h"
#include "model/vit_bf16.h"

const char *vit_arch_name(int arch) {
    static const char *names[VIT_NUM_ARCHS] = {[VIT_ARCH_CLIP] = "clip", [VIT_ARCH_EVA02] = "eva02"};
    return arch >= 0 && arch < VIT_NUM_ARCHS ? names[arch] : NULL;
}

int vit_config_check(const VitConfig *c) {
    CS_CHECK(c->width > 0 && c->layers > 0 && c->heads > 0 && c->mlp > 0 && c->embed > 0 &&
                 c->patch > 0 && c->grid > 0,
             "invalid ViT config: width %d layers %d heads %d mlp %d embed %d patch %d grid %d",
             c->width, c->layers, c->heads, c->mlp, c->embed, c->patch, c->grid);
    CS_CHECK(c->width % c->heads == 0, "width %d is not divisible by heads %d", c->width,
             c->heads);
    if (c->arch == VIT_ARCH_EVA02) {
        /* RoPE turns pairs of channels in each half of a head */
        CS_CHECK(c->width / c->heads % 4 == 0, "EVA02 needs a head dimension divisible by 4 for "
                 "its 2-D RoPE, got width %d / heads %d = %d", c->width, c->heads,
                 c->width / c->heads);
        CS_CHECK(c->rope_grid > 0, "EVA02 needs the RoPE pretraining grid side (rope_grid, 16 "
                 "for B/16 and L/14-336), got %d", c->rope_grid);
    } else {
        CS_CHECK(c->arch == VIT_ARCH_CLIP, "unknown ViT architecture %d", c->arch);
        CS_CHECK(c->act == ACT_QUICKGELU || c->act == ACT_GELU, "unknown activation %d", c->act);
    }
    CS_CHECK(c->ln_eps > 0.0f, "layernorm eps must be positive, got %g", (double)c->ln_eps);
    return 0;
}

int vit_preset(VitConfig *c, const char *name) {
    static const struct {
        const char *name;
        VitConfig cfg;
    } presets[] = {
        {"tiny", {.width = 64, .layers = 2, .heads = 4, .mlp = 256, .embed = 32, .patch = 8,
                  .grid = 8, .act = ACT_GELU, .ln_eps = 1e-5f}},
        {"b16", {.width = 768, .layers = 12, .heads = 12, .mlp = 3072, .embed = 512, .patch = 16,
                 .grid = 14, .act = ACT_QUICKGELU, .ln_eps = 1e-5f}},
        {"l14", {.width = 1024, .layers = 24, .heads = 16, .mlp = 4096, .embed = 768,
                 .patch = 14, .grid = 24, .act = ACT_QUICKGELU, .ln_eps = 1e-5f}},
        /* EVA02's MLP is 8/3 of the width (2048 for B/16, 2730 for L/14); its RoPE was
         * pretrained on a 16 x 16 grid whatever the positional embedding's */
        {"eva-tiny", {.arch = VIT_ARCH_EVA02, .width = 64, .layers = 2, .heads = 4, .mlp = 170,
                      .embed = 32, .patch = 8, .grid = 8, .ln_eps = 1e-6f, .rope_grid = 16}},
        {"eva-b16", {.arch = VIT_ARCH_EVA02, .width = 768, .layers = 12, .heads = 12,
                     .mlp = 2048, .embed = 512, .patch = 16, .grid = 14, .ln_eps = 1e-6f,
                     .rope_grid = 16}},
        {"eva-l14", {.arch = VIT_ARCH_EVA02, .width = 1024, .layers = 24, .heads = 16,
                     .mlp = 2730, .embed = 768, .patch = 14, .grid = 24, .ln_eps = 1e-6f,
                     .rope_grid = 16}},
    };
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(name, presets[i].name)) {
            *c = presets[i].cfg;
            return 0;
        }
    CS_FAIL("unknown model preset '%s' (tiny, b16, l14, eva-tiny, eva-b16 or eva-l14)", name);
}

static void set(VitTensor *t, const char *name, int per_layer, int decay, int ndim, int d0, int d1,
                int d2, int d3) {
    t->name = name;
    t->per_layer = per_layer;
    t->decay = decay;
    t->ndim = ndim;
    int d[4] = {d0, d1, d2, d3};
    size_t n = 1;
    for (int i = 0; i < 4; i++) {
        t->shape[i] = i < ndim ? d[i] : 0;
        if (i < ndim) n *= (size_t)d[i];
    }
    t->numel = n;
}

size_t vit_tensors(VitTensor t[VIT_NUM_TENSORS], const VitConfig *cfg) {
    int C = cfg->width, L = cfg->layers, F = cfg->mlp, E = cfg->embed, P = cfg->patch;
    int G = cfg->grid;
    for (int i = 0; i < VIT_NUM_TENSORS; i++) set(&t[i], "", 0, 0, 1, 0, 0, 0, 0); /* unused */
    /* open_clip's weight-decay rule: none for 1-D tensors, biases and norms. */
    if (cfg->arch == VIT_ARCH_EVA02) {
        set(&t[VIT_CONV1_W], "visual.patch_embed.proj.weight", 0, 1, 4, C, 3, P, P);
        set(&t[VIT_PATCH_B], "visual.patch_embed.proj.bias", 0, 0, 1, C, 0, 0, 0);
        set(&t[VIT_CLASS_EMB], "visual.cls_token", 0, 0, 1, C, 0, 0, 0);
        set(&t[VIT_POS_EMB], "visual.pos_embed", 0, 1, 2, 1 + G * G, C, 0, 0);
        set(&t[VIT_LN1_W], "visual.blocks.%d.norm1.weight", 1, 0, 1, C, 0, 0, 0);
        set(&t[VIT_LN1_B], "visual.blocks.%d.norm1.bias", 1, 0, 1, C, 0, 0, 0);
        set(&t[VIT_QKV_W], "visual.blocks.%d.attn.qkv.weight", 1, 1, 2, 3 * C, C, 0, 0);
        set(&t[VIT_QKV_B], "visual.blocks.%d.attn.qkv.bias", 1, 0, 1, 3 * C, 0, 0, 0);
        set(&t[VIT_ATTN_LN_W], "visual.blocks.%d.attn.inner_attn_ln.weight", 1, 0, 1, C, 0, 0, 0);
        set(&t[VIT_ATTN_LN_B], "visual.blocks.%d.attn.inner_attn_ln.bias", 1, 0, 1, C, 0, 0, 0);
        set(&t[VIT_OUT_W], "visual.blocks.%d.attn.proj.weight", 1, 1, 2, C, C, 0, 0);
        set(&t[VIT_OUT_B], "visual.blocks.%d.attn.proj.bias", 1, 0, 1, C, 0, 0, 0);
        set(&t[VIT_LN2_W], "visual.blocks.%d.norm2.weight", 1, 0, 1, C, 0, 0, 0);
        set(&t[VIT_LN2_B], "visual.blocks.%d.norm2.bias", 1, 0, 1, C, 0, 0, 0);
        set(&t[VIT_FC_W], "visual.blocks.%d.mlp.w12.weight", 1, 1, 2, 2 * F, C, 0, 0);
        set(&t[VIT_FC_B], "visual.blocks.%d.mlp.w12.bias", 1, 0, 1, 2 * F, 0, 0, 0);
        set(&t[VIT_FFN_LN_W], "visual.blocks.%d.mlp.ffn_ln.weight", 1, 0, 1, F, 0, 0, 0);
        set(&t[VIT_FFN_LN_B], "visual.blocks.%d.mlp.ffn_ln.bias", 1, 0, 1, F, 0, 0, 0);
        set(&t[VIT_FCPROJ_W], "visual.blocks.%d.mlp.w3.weight", 1, 1, 2, C, F, 0, 0);
        set(&t[VIT_FCPROJ_B], "visual.blocks.%d.mlp.w3.bias", 1, 0, 1, C, 0, 0, 0);
        set(&t[VIT_LN_POST_W], "visual.norm.weight", 0, 0, 1, C, 0, 0, 0);
        set(&t[VIT_LN_POST_B], "visual.norm.bias", 0, 0, 1, C, 0, 0, 0);
        set(&t[VIT_PROJ], "visual.head.weight", 0, 1, 2, E, C, 0, 0);
        set(&t[VIT_HEAD_B], "visual.head.bias", 0, 0, 1, E, 0, 0, 0);
    } else {
        set(&t[VIT_CONV1_W], "visual.conv1.weight", 0, 1, 4, C, 3, P, P);
        set(&t[VIT_CLASS_EMB], "visual.class_embedding", 0, 0, 1, C, 0, 0, 0);
        set(&t[VIT_POS_EMB], "visual.positional_embedding", 0, 1, 2, 1 + G * G, C, 0, 0);
        set(&t[VIT_LN_PRE_W], "visual.ln_pre.weight", 0, 0, 1, C, 0, 0, 0);
        set(&t[VIT_LN_PRE_B], "visual.ln_pre.bias", 0, 0, 1, C, 0, 0, 0);
        set(&t[VIT_LN1_W], "visual.transformer.resblocks.%d.ln_1.weight", 1, 0, 1, C, 0, 0, 0);
        set(&t[VIT_LN1_B], "visual.transformer.resblocks.%d.ln_1.bias", 1, 0, 1, C, 0, 0, 0);
        set(&t[VIT_QKV_W], "visual.transformer.resblocks.%d.attn.in_proj_weight", 1, 1, 2, 3 * C,
            C, 0, 0);
        set(&t[VIT_QKV_B], "visual.transformer.resblocks.%d.attn.in_proj_bias", 1, 0, 1, 3 * C, 0,
            0, 0);
        set(&t[VIT_OUT_W], "visual.transformer.resblocks.%d.attn.out_proj.weight", 1, 1, 2, C, C,
            0, 0);
        set(&t[VIT_OUT_B], "visual.transformer.resblocks.%d.attn.out_proj.bias", 1, 0, 1, C, 0, 0,
            0);
        set(&t[VIT_LN2_W], "visual.transformer.resblocks.%d.ln_2.weight", 1, 0, 1, C, 0, 0, 0);
        set(&t[VIT_LN2_B], "visual.transformer.resblocks.%d.ln_2.bias", 1, 0, 1, C, 0, 0, 0);
        set(&t[VIT_FC_W], "visual.transformer.resblocks.%d.mlp.c_fc.weight", 1, 1, 2, F, C, 0, 0);
        set(&t[VIT_FC_B], "visual.transformer.resblocks.%d.mlp.c_fc.bias", 1, 0, 1, F, 0, 0, 0);
        set(&t[VIT_FCPROJ_W], "visual.transformer.resblocks.%d.mlp.c_proj.weight", 1, 1, 2, C, F,
            0, 0);
        set(&t[VIT_FCPROJ_B], "visual.transformer.resblocks.%d.mlp.c_proj.bias", 1, 0, 1, C, 0, 0,
            0);
        set(&t[VIT_LN_POST_W], "visual.ln_post.weight", 0, 0, 1, C, 0, 0, 0);
        set(&t[VIT_LN_POST_B], "visual.ln_post.bias", 0, 0, 1, C, 0, 0, 0);
        set(&t[VIT_PROJ], "visual.proj", 0, 1, 2, C, E, 0, 0);
    }
    size_t off = 0;
    for (int i = 0; i < VIT_NUM_TENSORS; i++) {
        if (t[i].per_layer) t[i].numel *= (size_t)L;
        t[i].offset = off;
        off += t[i].numel;
    }
    return off;
}

_Static_assert(sizeof(VitParams) == VIT_NUM_TENSORS * sizeof(float *),
               "VitParams must hold one pointer per tensor, in enum order");

static void point(VitParams *p, float *mem, const VitTensor *t) {
    float **ptrs = (float **)p; /* VitParams is VIT_NUM_TENSORS float pointers in enum order */
    for (int i = 0; i < VIT_NUM_TENSORS; i++) ptrs[i] = mem + t[i].offset;
}

int vit_init(Vit *m, const VitConfig *cfg) {
    memset(m, 0, sizeof *m);
    CS_TRY(vit_config_check(cfg));
    m->cfg = *cfg;
    m->num_params = vit_tensors(m->tensors, cfg);
    CS_ALLOC(m->params_mem, m->num_params);
    point(&m->params, m->params_mem, m->tensors);
    return 0;
}

int vit_alloc_grads(Vit *m) {
    if (!m->grads_mem) {
        CS_ALLOC(m->grads_mem, m->num_params);
        point(&m->grads, m->grads_mem, m->tensors);
    }
    return 0;
}

void vit_zero_grad(Vit *m) {
    if (m->grads_mem) memset(m->grads_mem, 0, m->num_params * sizeof(float));
}

void vit_free(Vit *m) {
    vit_bf16_disable(m);
    free(m->params_mem);
    free(m->grads_mem);
    free(m->acts_mem);
    memset(m, 0, sizeof *m);
}

void vit_freeze_clipself(Vit *m) {
    memset(m->frozen, 0, sizeof m->frozen);
    /* tensors of the other architecture are in the list too: they are empty */
    static const int frozen[] = {VIT_CONV1_W,  VIT_PATCH_B,   VIT_CLASS_EMB, VIT_POS_EMB,
                                 VIT_LN_PRE_W, VIT_LN_PRE_B,  VIT_LN_POST_W, VIT_LN_POST_B,
                                 VIT_PROJ,     VIT_HEAD_B};
    for (size_t i = 0; i < sizeof frozen / sizeof frozen[0]; i++) m->frozen[frozen[i]] = 1;
}

/* splitmix64 (rng.h): a small deterministic generator, enough for test weights. */
static float uniform(uint64_t *s) { return (float)((rng_next(s) >> 40) * 0x1.0p-24); }

void vit_init_random(Vit *m, unsigned long long seed) {
    uint64_t s = seed;
    /* tensors of size 0 draw no numbers: a CLIP model's stream is the same as before EVA02 */
    for (int i = 0; i < VIT_NUM_TENSORS; i++) {
        const VitTensor *t = &m->tensors[i];
        float *p = m->params_mem + t->offset;
        int is_norm_w = i == VIT_LN_PRE_W || i == VIT_LN1_W || i == VIT_LN2_W ||
                        i == VIT_LN_POST_W || i == VIT_ATTN_LN_W || i == VIT_FFN_LN_W;
        int fan_in = t->ndim >= 2 ? (int)(t->numel / (t->per_layer ? m->cfg.layers : 1) /
                                          (size_t)t->shape[0])
                                  : m->cfg.width;
        float scale = 1.0f / sqrtf((float)fan_in);
        if (i == VIT_PROJ) scale = 1.0f / sqrtf((float)m->cfg.width);
        for (size_t j = 0; j < t->numel; j++) {
            float u = 2.0f * uniform(&s) - 1.0f;
            p[j] = is_norm_w ? 1.0f + 0.1f * u : (t->ndim == 1 ? 0.02f * u : scale * u);
        }
    }
    if (m->cfg.arch == VIT_ARCH_EVA02) { /* EVA02 has no k bias: the k third of qkv_b is 0 */
        int C = m->cfg.width;
        for (int l = 0; l < m->cfg.layers; l++)
            memset(m->params.qkv_b + (size_t)l * 3 * C + C, 0, (size_t)C * sizeof(float));
    }
}
