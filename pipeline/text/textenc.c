/* textenc.c: the text transformer's parameter layout and its forward pass (see textenc.h). */
#include "text/textenc.h"

#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "base/check.h"
#include "model/ops.h"

/* Pointer to block l of a per-layer parameter of row size n. */
#define AT(base, l, n) ((base) + (size_t)(l) * (size_t)(n))

int text_config_check(const TextConfig *c) {
    CS_CHECK(c->width > 0 && c->layers > 0 && c->heads > 0 && c->mlp > 0 && c->embed > 0 &&
                 c->vocab > 0 && c->context > 0,
             "invalid text tower config: width %d layers %d heads %d mlp %d embed %d vocab %d "
             "context %d", c->width, c->layers, c->heads, c->mlp, c->embed, c->vocab, c->context);
    CS_CHECK(c->width % c->heads == 0, "text width %d is not divisible by heads %d", c->width,
             c->heads);
    CS_CHECK(c->act == ACT_QUICKGELU || c->act == ACT_GELU, "unknown activation %d", c->act);
    CS_CHECK(c->ln_eps > 0.0f, "layernorm eps must be positive, got %g", (double)c->ln_eps);
    return 0;
}

static void set(TextTensor *t, const char *name, int per_layer, int ndim, int d0, int d1) {
    t->name = name;
    t->per_layer = per_layer;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim > 1 ? d1 : 0;
    t->numel = (size_t)d0 * (ndim > 1 ? (size_t)d1 : 1);
}

size_t text_tensors(TextTensor t[TXT_NUM_TENSORS], const TextConfig *cfg) {
    int C = cfg->width, F = cfg->mlp, E = cfg->embed, V = cfg->vocab, X = cfg->context;
    set(&t[TXT_TOKEN_EMB], "token_embedding.weight", 0, 2, V, C);
    set(&t[TXT_POS_EMB], "positional_embedding", 0, 2, X, C);
    set(&t[TXT_LN1_W], "transformer.resblocks.%d.ln_1.weight", 1, 1, C, 0);
    set(&t[TXT_LN1_B], "transformer.resblocks.%d.ln_1.bias", 1, 1, C, 0);
    set(&t[TXT_QKV_W], "transformer.resblocks.%d.attn.in_proj_weight", 1, 2, 3 * C, C);
    set(&t[TXT_QKV_B], "transformer.resblocks.%d.attn.in_proj_bias", 1, 1, 3 * C, 0);
    set(&t[TXT_OUT_W], "transformer.resblocks.%d.attn.out_proj.weight", 1, 2, C, C);
    set(&t[TXT_OUT_B], "transformer.resblocks.%d.attn.out_proj.bias", 1, 1, C, 0);
    set(&t[TXT_LN2_W], "transformer.resblocks.%d.ln_2.weight", 1, 1, C, 0);
    set(&t[TXT_LN2_B], "transformer.resblocks.%d.ln_2.bias", 1, 1, C, 0);
    set(&t[TXT_FC_W], "transformer.resblocks.%d.mlp.c_fc.weight", 1, 2, F, C);
    set(&t[TXT_FC_B], "transformer.resblocks.%d.mlp.c_fc.bias", 1, 1, F, 0);
    set(&t[TXT_FCPROJ_W], "transformer.resblocks.%d.mlp.c_proj.weight", 1, 2, C, F);
    set(&t[TXT_FCPROJ_B], "transformer.resblocks.%d.mlp.c_proj.bias", 1, 1, C, 0);
    set(&t[TXT_LN_FINAL_W], "ln_final.weight", 0, 1, C, 0);
    set(&t[TXT_LN_FINAL_B], "ln_final.bias", 0, 1, C, 0);
    set(&t[TXT_PROJ], "text_projection", 0, 2, C, E);
    size_t off = 0;
    for (int i = 0; i < TXT_NUM_TENSORS; i++) {
        if (t[i].per_layer) t[i].numel *= (size_t)cfg->layers;
        t[i].offset = off;
        off += t[i].numel;
    }
    return off;
}

_Static_assert(sizeof(TextParams) == TXT_NUM_TENSORS * sizeof(float *),
               "TextParams must hold one pointer per tensor, in enum order");

int textenc_init(TextEncoder *m, const TextConfig *cfg) {
    memset(m, 0, sizeof *m);
    CS_TRY(text_config_check(cfg));
    m->cfg = *cfg;
    m->num_params = text_tensors(m->tensors, cfg);
    CS_ALLOC(m->params_mem, m->num_params);
    float **ptrs = (float **)&m->params; /* TXT_NUM_TENSORS float pointers in enum order */
    for (int i = 0; i < TXT_NUM_TENSORS; i++) ptrs[i] = m->params_mem + m->tensors[i].offset;
    return 0;
}

void textenc_free(TextEncoder *m) {
    free(m->params_mem);
    free(m->acts_mem);
    free(m->pool);
    memset(m, 0, sizeof *m);
}

/* Size the activations for B rows of T tokens. */
static int prepare(TextEncoder *m, int B, int T) {
    const TextConfig *c = &m->cfg;
    size_t BT = (size_t)B * T, C = (size_t)c->width, F = (size_t)c->mlp;
    ArenaSlot t[] = {
        {&m->acts.x, BT * C},       {&m->acts.x2, BT * C},
        {&m->acts.ln, BT * C},      {&m->acts.mean, BT},
        {&m->acts.rstd, BT},        {&m->acts.qkv, BT * 3 * C},
        {&m->acts.atty, BT * C},    {&m->acts.lse, (size_t)B * c->heads * T},
        {&m->acts.fch, BT * F},     {&m->acts.fca, BT * F},
        {&m->acts.pooled, (size_t)B * C},
        {&m->acts.attn_scratch, attention_scratch_floats(T, cs_num_threads())},
    };
    CS_TRY(arena_carve(&m->acts_mem, &m->acts_capacity, t, sizeof t / sizeof t[0]));
    if (B > m->pool_capacity) {
        free(m->pool);
        m->pool = NULL;
        m->pool_capacity = 0;
        CS_ALLOC(m->pool, B);
        m->pool_capacity = B;
    }
    return 0;
}

static void add_inplace(float *y, const float *x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

int textenc_forward(TextEncoder *m, float *out, const int *tokens, int B) {
    const TextConfig *c = &m->cfg;
    int C = c->width, F = c->mlp, X = c->context, V = c->vocab;
    CS_CHECK(B > 0, "no texts to encode (batch %d)", B);
    /* pooled position: the first of each row's highest id; run up to the last of them */
    int T = 1;
    for (int b = 0; b < B; b++) {
        const int *row = tokens + (size_t)b * X;
        int p = 0;
        for (int t = 0; t < X; t++) {
            CS_CHECK(row[t] >= 0 && row[t] < V, "text %d, position %d: token id %d is outside "
                     "the vocabulary (0..%d)", b, t, row[t], V - 1);
            if (row[t] > row[p]) p = t;
        }
        T = p + 1 > T ? p + 1 : T;
    }
    CS_TRY(prepare(m, B, T));
    for (int b = 0; b < B; b++) {
        const int *row = tokens + (size_t)b * X;
        int p = 0;
        for (int t = 0; t < X; t++) p = row[t] > row[p] ? t : p;
        m->pool[b] = p;
    }
    const TextParams *w = &m->params;
    TextActs *a = &m->acts;
    int BT = B * T;
    float eps = c->ln_eps;

#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < BT; bt++) {
        int b = bt / T, t = bt % T;
        const float *e = w->token_emb + (size_t)tokens[(size_t)b * X + t] * C;
        const float *pe = w->pos_emb + (size_t)t * C;
        float *dst = a->x + (size_t)bt * C;
        for (int i = 0; i < C; i++) dst[i] = e[i] + pe[i];
    }
    float *x = a->x, *xout = a->x2;
    for (int l = 0; l < c->layers; l++) {
        layernorm_forward(a->ln, a->mean, a->rstd, x, AT(w->ln1_w, l, C), AT(w->ln1_b, l, C), BT,
                          C, eps);
        linear_forward(a->qkv, a->ln, AT(w->qkv_w, l, 3 * C * C), C, AT(w->qkv_b, l, 3 * C), BT,
                       C, 3 * C);
        attention_forward_causal(a->atty, a->lse, a->qkv, a->attn_scratch, B, T, C, c->heads);
        linear_forward(xout, a->atty, AT(w->out_w, l, C * C), C, AT(w->out_b, l, C), BT, C, C);
        add_inplace(xout, x, (size_t)BT * C);
        layernorm_forward(a->ln, a->mean, a->rstd, xout, AT(w->ln2_w, l, C), AT(w->ln2_b, l, C),
                          BT, C, eps);
        linear_forward(a->fch, a->ln, AT(w->fc_w, l, F * C), C, AT(w->fc_b, l, F), BT, C, F);
        act_forward(a->fca, a->fch, (size_t)BT * F, c->act);
        linear_forward(x, a->fca, AT(w->fcproj_w, l, C * F), F, AT(w->fcproj_b, l, C), BT, F, C);
        add_inplace(x, xout, (size_t)BT * C);
    }
    /* ln_final is per token: only the pooled ones are needed */
    for (int b = 0; b < B; b++)
        layernorm_forward(a->pooled + (size_t)b * C, a->mean, a->rstd,
                          x + ((size_t)b * T + m->pool[b]) * C, w->ln_final_w, w->ln_final_b, 1,
                          C, eps);
    gemm(0, 0, B, c->embed, C, 1.0f, a->pooled, C, w->proj, c->embed, 0.0f, out, c->embed, 0);
    return 0;
}
