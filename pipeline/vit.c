/* vit.c: forward and backward passes of the CLIP ViT, image-embedding and "v2" dense modes.
 *
 * Activation memory for the backward is what the backward cannot cheaply recompute: each
 * block's input, qkv, attention output, mid residual and MLP pre-activation (10 x B*T*C floats
 * per block at MLP ratio 4). LayerNorm outputs and the activated MLP hidden are recomputed in
 * the backward, and attention probabilities are recomputed by attention.c. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ops.h"
#include "vit.h"

/* Pointer to block l of a per-layer activation or parameter of row size n. */
#define AT(base, l, n) ((base) + (size_t)(l) * (size_t)(n))

int vit_prepare(Vit *m, int mode, int B, int H, int W, int train) {
    const VitConfig *c = &m->cfg;
    int P = c->patch, C = c->width, F = c->mlp, E = c->embed, L = c->layers, NH = c->heads;
    CS_CHECK(mode == VIT_IMAGE || mode == VIT_DENSE, "unknown ViT mode %d", mode);
    CS_CHECK(B > 0 && H > 0 && W > 0 && H % P == 0 && W % P == 0,
             "image size %dx%d (batch %d) must be positive multiples of the patch size %d", H, W,
             B, P);
    int gh = H / P, gw = W / P, N = gh * gw, T = N + 1, Tp = mode == VIT_IMAGE ? 1 : N;
    CS_CHECK(!train || m->frozen[VIT_POS_EMB] || (gh == c->grid && gw == c->grid),
             "training the positional embedding needs the native %dx%d token grid, got %dx%d: "
             "freeze it (as CLIPSelf does) or use %dx%d pixel inputs",
             c->grid, c->grid, gh, gw, c->grid * P, c->grid * P);
    int Ls = train ? L : 1;         /* per-layer slots kept */
    int Lx = train ? L + 1 : 2;     /* block inputs kept (ping-pong when not training) */
    size_t BT = (size_t)B * T, BN = (size_t)B * N, BTp = (size_t)B * Tp;
    struct { float **p; size_t n; } t[] = {
        {&m->acts.cols, BN * 3 * P * P},
        {&m->acts.pos, (size_t)T * C},
        {&m->acts.x0, BT * C},
        {&m->acts.lnpre_mean, BT},
        {&m->acts.lnpre_rstd, BT},
        {&m->acts.xin, (size_t)Lx * BT * C},
        {&m->acts.ln1_mean, (size_t)Ls * BT},
        {&m->acts.ln1_rstd, (size_t)Ls * BT},
        {&m->acts.qkv, (size_t)Ls * BT * 3 * C},
        {&m->acts.atty, (size_t)Ls * BT * C},
        {&m->acts.lse, (size_t)Ls * B * NH * T},
        {&m->acts.xmid, (size_t)Ls * BT * C},
        {&m->acts.ln2_mean, (size_t)Ls * BT},
        {&m->acts.ln2_rstd, (size_t)Ls * BT},
        {&m->acts.fch, (size_t)Ls * BT * F},
        {&m->acts.lnpost, BTp * C},
        {&m->acts.lnpost_mean, BTp},
        {&m->acts.lnpost_rstd, BTp},
        {&m->acts.projout, BTp * E},
        {&m->acts.norm, mode == VIT_DENSE ? BN : 0},
        {&m->acts.out, mode == VIT_DENSE ? BN * E : 0},
        {&m->acts.ln, BT * C},
        {&m->acts.fca, BT * F},
        {&m->acts.attn_scratch, attention_scratch_floats(T, cs_num_threads())},
        {&m->acts.dx, train ? BT * C : 0},
        {&m->acts.dx2, train ? BT * C : 0},
        {&m->acts.dqkv, train ? BT * 3 * C : 0},
        {&m->acts.datty, train ? BT * C : 0},
        {&m->acts.dfch, train ? BT * F : 0},
        {&m->acts.dlnpost, train ? BTp * C : 0},
        {&m->acts.dprojout, train && mode == VIT_DENSE ? BTp * E : 0},
    };
    size_t total = 0, nt = sizeof t / sizeof t[0];
    for (size_t i = 0; i < nt; i++) total += (t[i].n + 15) & ~(size_t)15; /* 64-byte aligned */
    if (total > m->acts_capacity) {
        free(m->acts_mem);
        m->acts_mem = NULL;
        m->acts_capacity = 0;
        CS_ALLOC(m->acts_mem, total);
        m->acts_capacity = total;
    }
    float *p = m->acts_mem;
    for (size_t i = 0; i < nt; i++) {
        *t[i].p = t[i].n ? p : NULL;
        p += (t[i].n + 15) & ~(size_t)15;
    }
    if (mode == VIT_IMAGE) m->acts.out = m->acts.projout;
    m->mode = mode, m->B = B, m->H = H, m->W = W, m->gh = gh, m->gw = gw, m->T = T;
    m->train = train;
    return 0;
}

/* Slot of block l's activations: every block has its own when training, else they share. */
static size_t slot(const Vit *m, int l) { return m->train ? (size_t)l : 0; }
static float *block_input(const Vit *m, int l) {
    size_t BTC = (size_t)m->B * m->T * m->cfg.width;
    return m->acts.xin + (m->train ? (size_t)l : (size_t)(l % 2)) * BTC;
}

static void add_inplace(float *y, const float *x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void vit_forward(Vit *m, const float *img) {
    const VitConfig *c = &m->cfg;
    const VitParams *w = &m->params;
    VitActs *a = &m->acts;
    int B = m->B, T = m->T, N = T - 1, C = c->width, F = c->mlp, E = c->embed, L = c->layers;
    int NH = c->heads, G = c->grid, dense = m->mode == VIT_DENSE, Tp = dense ? N : 1;
    int BT = B * T;
    float eps = c->ln_eps;

    /* positional embedding at this grid: class row kept, the 2-D part resized bicubic */
    memcpy(a->pos, w->pos_emb, (size_t)C * sizeof(float));
    if (m->gh == G && m->gw == G)
        memcpy(a->pos + C, w->pos_emb + C, (size_t)N * C * sizeof(float));
    else
        bicubic_resize(a->pos + C, w->pos_emb + C, G, G, m->gh, m->gw, C);

    /* tokens: patch embedding (into the ln scratch), class token, plus positions */
    patch_embed_forward(a->ln, a->cols, img, w->conv1_w, B, m->H, m->W, c->patch, C);
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < BT; bt++) {
        int b = bt / T, t = bt % T;
        const float *src = t == 0 ? w->class_emb : a->ln + ((size_t)b * N + t - 1) * C;
        float *dst = a->x0 + (size_t)bt * C;
        const float *pe = a->pos + (size_t)t * C;
        for (int i = 0; i < C; i++) dst[i] = src[i] + pe[i];
    }
    layernorm_forward(block_input(m, 0), a->lnpre_mean, a->lnpre_rstd, a->x0, w->ln_pre_w,
                      w->ln_pre_b, BT, C, eps);

    for (int l = 0; l < L; l++) {
        size_t s = slot(m, l);
        float *x = block_input(m, l), *xout = block_input(m, l + 1);
        float *qkv = AT(a->qkv, s, (size_t)BT * 3 * C), *atty = AT(a->atty, s, (size_t)BT * C);
        float *xmid = AT(a->xmid, s, (size_t)BT * C), *fch = AT(a->fch, s, (size_t)BT * F);
        const float *qkv_w = AT(w->qkv_w, l, 3 * C * C), *qkv_b = AT(w->qkv_b, l, 3 * C);
        layernorm_forward(a->ln, AT(a->ln1_mean, s, BT), AT(a->ln1_rstd, s, BT), x,
                          AT(w->ln1_w, l, C), AT(w->ln1_b, l, C), BT, C, eps);
        if (dense && l == L - 1) {
            /* v2 dense path: the last block's attention is its value path only */
            linear_forward(atty, a->ln, qkv_w + 2 * C * C, C, qkv_b + 2 * C, BT, C, C);
        } else {
            linear_forward(qkv, a->ln, qkv_w, C, qkv_b, BT, C, 3 * C);
            attention_forward(atty, AT(a->lse, s, (size_t)B * NH * T), qkv, a->attn_scratch, B,
                              T, C, NH);
        }
        linear_forward(xmid, atty, AT(w->out_w, l, C * C), C, AT(w->out_b, l, C), BT, C, C);
        add_inplace(xmid, x, (size_t)BT * C);
        layernorm_forward(a->ln, AT(a->ln2_mean, s, BT), AT(a->ln2_rstd, s, BT), xmid,
                          AT(w->ln2_w, l, C), AT(w->ln2_b, l, C), BT, C, eps);
        linear_forward(fch, a->ln, AT(w->fc_w, l, F * C), C, AT(w->fc_b, l, F), BT, C, F);
        act_forward(a->fca, fch, (size_t)BT * F, c->act);
        linear_forward(xout, a->fca, AT(w->fcproj_w, l, C * F), F, AT(w->fcproj_b, l, C), BT, F,
                       C);
        add_inplace(xout, xmid, (size_t)BT * C);
    }

    /* head: ln_post on the class token (image) or on every patch token (dense), then @ proj */
    const float *xL = block_input(m, L);
    for (int b = 0; b < B; b++)
        layernorm_forward(a->lnpost + (size_t)b * Tp * C, a->lnpost_mean + (size_t)b * Tp,
                          a->lnpost_rstd + (size_t)b * Tp, xL + ((size_t)b * T + dense) * C,
                          w->ln_post_w, w->ln_post_b, Tp, C, eps);
    gemm(0, 0, B * Tp, E, C, 1.0f, a->lnpost, C, w->proj, E, 0.0f, a->projout, E, 0);
    if (dense) l2norm_forward(a->out, a->norm, a->projout, B * N, E);
}

/* Gradient pointer of tensor i, or NULL when it is frozen. */
static float *grad_of(Vit *m, int i, float *g) { return m->frozen[i] ? NULL : g; }

int vit_backward(Vit *m, const float *dout, float *dimg) {
    CS_CHECK(m->train && m->grads_mem, "vit_backward needs vit_prepare(..., train = 1) before "
             "the forward, and vit_alloc_grads");
    const VitConfig *c = &m->cfg;
    const VitParams *w = &m->params;
    VitParams *g = &m->grads;
    VitActs *a = &m->acts;
    int B = m->B, T = m->T, N = T - 1, C = c->width, F = c->mlp, E = c->embed, L = c->layers;
    int NH = c->heads, dense = m->mode == VIT_DENSE, Tp = dense ? N : 1, BT = B * T;
    float eps = c->ln_eps;
    size_t BTC = (size_t)BT * C;

    /* head */
    const float *dproj_out = dout;
    if (dense) {
        memset(a->dprojout, 0, (size_t)B * N * E * sizeof(float));
        l2norm_backward(a->dprojout, dout, a->out, a->norm, B * N, E);
        dproj_out = a->dprojout;
    }
    if (!m->frozen[VIT_PROJ])
        gemm(1, 0, C, E, B * Tp, 1.0f, a->lnpost, C, dproj_out, E, 1.0f, g->proj, E, 0);
    gemm(0, 1, B * Tp, C, E, 1.0f, dproj_out, E, w->proj, E, 0.0f, a->dlnpost, C, 0);
    memset(a->dx, 0, BTC * sizeof(float));
    const float *xL = block_input(m, L);
    for (int b = 0; b < B; b++)
        layernorm_backward(a->dx + ((size_t)b * T + dense) * C,
                           grad_of(m, VIT_LN_POST_W, g->ln_post_w),
                           grad_of(m, VIT_LN_POST_B, g->ln_post_b), a->dlnpost + (size_t)b * Tp * C,
                           xL + ((size_t)b * T + dense) * C, w->ln_post_w,
                           a->lnpost_mean + (size_t)b * Tp, a->lnpost_rstd + (size_t)b * Tp, Tp, C);

    /* blocks, last to first; a->dx holds the gradient of the current block's output */
    for (int l = L - 1; l >= 0; l--) {
        size_t s = slot(m, l);
        const float *x = block_input(m, l);
        const float *qkv = AT(a->qkv, s, (size_t)BT * 3 * C), *atty = AT(a->atty, s, BTC);
        const float *xmid = AT(a->xmid, s, BTC), *fch = AT(a->fch, s, (size_t)BT * F);
        const float *qkv_w = AT(w->qkv_w, l, 3 * C * C);
        float *dqkv_w = grad_of(m, VIT_QKV_W, AT(g->qkv_w, l, 3 * C * C));
        float *dqkv_b = grad_of(m, VIT_QKV_B, AT(g->qkv_b, l, 3 * C));

        /* MLP branch: xout = xmid + c_proj(act(c_fc(ln_2(xmid)))) */
        act_forward(a->fca, fch, (size_t)BT * F, c->act);
        memset(a->dfch, 0, (size_t)BT * F * sizeof(float));
        linear_backward(a->dfch, grad_of(m, VIT_FCPROJ_W, AT(g->fcproj_w, l, C * F)),
                        grad_of(m, VIT_FCPROJ_B, AT(g->fcproj_b, l, C)), a->dx, a->fca,
                        AT(w->fcproj_w, l, C * F), F, BT, F, C);
        memset(a->fca, 0, (size_t)BT * F * sizeof(float)); /* now the pre-activation gradient */
        act_backward(a->fca, a->dfch, fch, (size_t)BT * F, c->act);
        layernorm_forward(a->ln, AT(a->ln2_mean, s, BT), AT(a->ln2_rstd, s, BT), xmid,
                          AT(w->ln2_w, l, C), AT(w->ln2_b, l, C), BT, C, eps);
        memset(a->dx2, 0, BTC * sizeof(float));
        linear_backward(a->dx2, grad_of(m, VIT_FC_W, AT(g->fc_w, l, F * C)),
                        grad_of(m, VIT_FC_B, AT(g->fc_b, l, F)), a->fca, a->ln,
                        AT(w->fc_w, l, F * C), C, BT, C, F);
        layernorm_backward(a->dx, grad_of(m, VIT_LN2_W, AT(g->ln2_w, l, C)),
                           grad_of(m, VIT_LN2_B, AT(g->ln2_b, l, C)), a->dx2, xmid,
                           AT(w->ln2_w, l, C), AT(a->ln2_mean, s, BT), AT(a->ln2_rstd, s, BT),
                           BT, C);

        /* attention branch: xmid = x + out_proj(attention(ln_1(x))) */
        memset(a->datty, 0, BTC * sizeof(float));
        linear_backward(a->datty, grad_of(m, VIT_OUT_W, AT(g->out_w, l, C * C)),
                        grad_of(m, VIT_OUT_B, AT(g->out_b, l, C)), a->dx, atty,
                        AT(w->out_w, l, C * C), C, BT, C, C);
        layernorm_forward(a->ln, AT(a->ln1_mean, s, BT), AT(a->ln1_rstd, s, BT), x,
                          AT(w->ln1_w, l, C), AT(w->ln1_b, l, C), BT, C, eps);
        memset(a->dx2, 0, BTC * sizeof(float));
        if (dense && l == L - 1) {
            linear_backward(a->dx2, dqkv_w ? dqkv_w + 2 * C * C : NULL,
                            dqkv_b ? dqkv_b + 2 * C : NULL, a->datty, a->ln, qkv_w + 2 * C * C, C,
                            BT, C, C);
        } else {
            memset(a->dqkv, 0, (size_t)BT * 3 * C * sizeof(float));
            attention_backward(a->dqkv, a->datty, qkv, atty, AT(a->lse, s, (size_t)B * NH * T),
                               a->attn_scratch, B, T, C, NH);
            linear_backward(a->dx2, dqkv_w, dqkv_b, a->dqkv, a->ln, qkv_w, C, BT, C, 3 * C);
        }
        layernorm_backward(a->dx, grad_of(m, VIT_LN1_W, AT(g->ln1_w, l, C)),
                           grad_of(m, VIT_LN1_B, AT(g->ln1_b, l, C)), a->dx2, x,
                           AT(w->ln1_w, l, C), AT(a->ln1_mean, s, BT), AT(a->ln1_rstd, s, BT), BT,
                           C);
    }

    /* ln_pre and the token embedding */
    int need_tokens = !m->frozen[VIT_CLASS_EMB] || !m->frozen[VIT_POS_EMB] ||
                      !m->frozen[VIT_CONV1_W] || dimg;
    if (m->frozen[VIT_LN_PRE_W] && m->frozen[VIT_LN_PRE_B] && !need_tokens) return 0;
    memset(a->dx2, 0, BTC * sizeof(float));
    layernorm_backward(a->dx2, grad_of(m, VIT_LN_PRE_W, g->ln_pre_w),
                       grad_of(m, VIT_LN_PRE_B, g->ln_pre_b), a->dx, a->x0, w->ln_pre_w,
                       a->lnpre_mean, a->lnpre_rstd, BT, C);
    if (!need_tokens) return 0;
    for (int b = 0; b < B; b++) {
        const float *dx0 = a->dx2 + (size_t)b * T * C; /* (T, C) */
        if (!m->frozen[VIT_CLASS_EMB])
            for (int i = 0; i < C; i++) g->class_emb[i] += dx0[i];
        if (!m->frozen[VIT_POS_EMB]) /* native grid only: vit_prepare checked it */
            add_inplace(g->pos_emb, dx0, (size_t)T * C);
        memcpy(a->ln + (size_t)b * N * C, dx0 + C, (size_t)N * C * sizeof(float));
    }
    if (!m->frozen[VIT_CONV1_W] || dimg)
        patch_embed_backward(grad_of(m, VIT_CONV1_W, g->conv1_w), dimg, a->ln, a->cols,
                             w->conv1_w, B, m->H, m->W, c->patch, C);
    return 0;
}

double vit_forward_flops(const Vit *m) {
    const VitConfig *c = &m->cfg;
    double B = m->B, T = m->T, N = T - 1, C = c->width, F = c->mlp, E = c->embed;
    double P = c->patch, L = c->layers;
    double Tp = m->mode == VIT_DENSE ? N : 1;
    double block = 2 * B * T * (3 * C * C + C * C + 2 * C * F) + 4 * B * T * T * C;
    double last = m->mode == VIT_DENSE ? 2 * B * T * (2 * C * C + 2 * C * F) : block;
    return 2 * B * N * 3 * P * P * C + (L - 1) * block + last + 2 * B * Tp * C * E;
}
