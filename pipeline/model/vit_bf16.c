/* vit_bf16.c: the bf16 inference forward of the ViT's blocks (see the header). The same
 * arithmetic as vit.c's attn_forward and mlp_forward, with the four linear layers through
 * pipeline/model/bf16.h and the residual add fused into the output projections. */
#include "model/vit_bf16.h"

#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "model/ops.h"

/* Pointer to block l of a per-layer parameter of row size n. */
#define AT(base, l, n) ((base) + (size_t)(l) * (size_t)(n))

int vit_bf16_enable(Vit *m) {
    const VitConfig *c = &m->cfg;
    const VitParams *w = &m->params;
    int L = c->layers, C = c->width, F = c->mlp, eva = c->arch == VIT_ARCH_EVA02;
    int F2 = eva ? 2 * F : F;
    vit_bf16_disable(m);
    struct VitBf16 *b = calloc(1, sizeof *b);
    CS_CHECK(b, "out of memory");
    m->bf16 = b;
    b->qkv = calloc((size_t)L, sizeof(Bf16Linear));
    b->out = calloc((size_t)L, sizeof(Bf16Linear));
    b->fc = calloc((size_t)L, sizeof(Bf16Linear));
    b->fcproj = calloc((size_t)L, sizeof(Bf16Linear));
    int rc = b->qkv && b->out && b->fc && b->fcproj ? 0 : cs_error_set(__FILE__, __LINE__,
                                                                       "out of memory");
    for (int l = 0; l < L && !rc; l++) {
        rc = bf16_linear_init(&b->qkv[l], AT(w->qkv_w, l, 3 * C * C), C, AT(w->qkv_b, l, 3 * C),
                              C, 3 * C);
        if (!rc)
            rc = bf16_linear_init(&b->out[l], AT(w->out_w, l, C * C), C, AT(w->out_b, l, C), C,
                                  C);
        if (!rc)
            rc = bf16_linear_init(&b->fc[l], AT(w->fc_w, l, F2 * C), C, AT(w->fc_b, l, F2), C,
                                  F2);
        if (!rc)
            rc = bf16_linear_init(&b->fcproj[l], AT(w->fcproj_w, l, C * F), F,
                                  AT(w->fcproj_b, l, C), F, C);
    }
    if (!rc)
        rc = bf16_linear_init(&b->value_last, AT(w->qkv_w, L - 1, 3 * C * C) + 2 * C * C, C,
                              AT(w->qkv_b, L - 1, 3 * C) + 2 * C, C, C);
    if (rc) vit_bf16_disable(m);
    return rc;
}

void vit_bf16_disable(Vit *m) {
    struct VitBf16 *b = m->bf16;
    if (!b) return;
    for (int l = 0; l < m->cfg.layers; l++) {
        if (b->qkv) bf16_linear_free(&b->qkv[l]);
        if (b->out) bf16_linear_free(&b->out[l]);
        if (b->fc) bf16_linear_free(&b->fc[l]);
        if (b->fcproj) bf16_linear_free(&b->fcproj[l]);
    }
    bf16_linear_free(&b->value_last);
    free(b->qkv), free(b->out), free(b->fc), free(b->fcproj);
    free(b->in), free(b->hidden);
    free(b);
    m->bf16 = NULL;
}

/* The post-op of c_fc: CLIP's activation fused (bf16 output), EVA02's w1|w2 in float for the
 * SwiGLU gate. */
static int fc_post(const VitConfig *c) {
    if (c->arch == VIT_ARCH_EVA02) return BF16_ACT_NONE;
    return c->act == ACT_GELU ? BF16_ACT_GELU : BF16_ACT_QUICKGELU;
}

int vit_bf16_prepare(Vit *m) {
    struct VitBf16 *b = m->bf16;
    const VitConfig *c = &m->cfg;
    CS_CHECK(b && !m->train, "the bf16 forward is for inference only (no backward)");
    int BT = m->B * m->T, C = c->width, F = c->mlp, eva = c->arch == VIT_ARCH_EVA02;
    size_t wide = (size_t)(C > F ? C : F);
    if ((size_t)BT > b->capacity) { /* grown only for a larger shape, kept for the run */
        free(b->in), free(b->hidden);
        b->in = malloc((size_t)BT * wide * sizeof(uint16_t));
        b->hidden = malloc((size_t)BT * F * sizeof(uint16_t));
        b->capacity = b->in && b->hidden ? (size_t)BT : 0;
        CS_CHECK(b->capacity, "out of memory for the bf16 activations of %d tokens", BT);
    }
    /* every layer has its own weights, of the same shapes: layer 0's make the primitives */
    CS_TRY(bf16_linear_plan(&b->qkv[0], BT, 0, BF16_ACT_NONE));
    CS_TRY(bf16_linear_plan(&b->out[0], BT, 0, BF16_ADD));
    CS_TRY(bf16_linear_plan(&b->fc[0], BT, !eva, fc_post(c)));
    CS_TRY(bf16_linear_plan(&b->fcproj[0], BT, 0, BF16_ADD));
    if (m->mode == VIT_DENSE) CS_TRY(bf16_linear_plan(&b->value_last, BT, 0, BF16_ACT_NONE));
    return 0;
}

int vit_bf16_block(Vit *m, int l) {
    const VitConfig *c = &m->cfg;
    const VitParams *w = &m->params;
    VitActs *a = &m->acts;
    struct VitBf16 *b = m->bf16;
    int B = m->B, T = m->T, C = c->width, NH = c->heads, F = c->mlp, BT = B * T;
    int eva = c->arch == VIT_ARCH_EVA02;
    size_t BTC = (size_t)BT * C;
    CS_CHECK(b->capacity >= (size_t)BT, "the bf16 forward needs vit_prepare after vit_bf16_enable");
    const float *x = vit_block_input(m, l);
    float *xmid = a->xmid, *xout = vit_block_input(m, l + 1);

    /* attention branch: xmid = x + out_proj(attention(ln_1 x)) */
    layernorm_forward(a->ln, a->ln1_mean, a->ln1_rstd, x, AT(w->ln1_w, l, C), AT(w->ln1_b, l, C),
                      BT, C, c->ln_eps);
    bf16_from_float(b->in, a->ln, BTC);
    if (m->mode == VIT_DENSE && l == c->layers - 1) { /* v2 dense path: values only */
        CS_TRY(bf16_linear_forward(a->atty, 0, b->in, &b->value_last, BT, BF16_ACT_NONE));
    } else {
        CS_TRY(bf16_linear_forward(a->qkv, 0, b->in, &b->qkv[l], BT, BF16_ACT_NONE));
        if (eva)
            rope_forward(a->qkv, a->rope_cos, a->rope_sin, B, m->gh, m->gw, 2 * NH, C / NH, 3 * C);
        attention_forward(a->atty, a->lse, a->qkv, a->attn_scratch, B, T, C, NH);
    }
    const float *proj_in = a->atty;
    if (eva) {
        layernorm_forward(a->ln, a->attnln_mean, a->attnln_rstd, a->atty, AT(w->attn_ln_w, l, C),
                          AT(w->attn_ln_b, l, C), BT, C, c->ln_eps);
        proj_in = a->ln;
    }
    bf16_from_float(b->in, proj_in, BTC);
    memcpy(xmid, x, BTC * sizeof(float));
    CS_TRY(bf16_linear_forward(xmid, 0, b->in, &b->out[l], BT, BF16_ADD));

    /* MLP branch: xout = xmid + c_proj(act(c_fc(ln_2 xmid))) (EVA02: w3(ffn_ln(SwiGLU))) */
    layernorm_forward(a->ln, a->ln2_mean, a->ln2_rstd, xmid, AT(w->ln2_w, l, C),
                      AT(w->ln2_b, l, C), BT, C, c->ln_eps);
    bf16_from_float(b->in, a->ln, BTC);
    if (eva) {
        CS_TRY(bf16_linear_forward(a->fch, 0, b->in, &b->fc[l], BT, BF16_ACT_NONE));
        swiglu_forward(a->fca, a->fch, BT, F);
        layernorm_forward(a->ffn, a->ffnln_mean, a->ffnln_rstd, a->fca, AT(w->ffn_ln_w, l, F),
                          AT(w->ffn_ln_b, l, F), BT, F, c->ln_eps);
        bf16_from_float(b->hidden, a->ffn, (size_t)BT * F);
    } else {
        CS_TRY(bf16_linear_forward(b->hidden, 1, b->in, &b->fc[l], BT, fc_post(c)));
    }
    memcpy(xout, xmid, BTC * sizeof(float));
    CS_TRY(bf16_linear_forward(xout, 0, b->hidden, &b->fcproj[l], BT, BF16_ADD));
    return 0;
}
