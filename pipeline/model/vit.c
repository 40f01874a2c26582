/* vit.c: forward and backward passes of the CLIP ViT and of EVA02-CLIP's vision tower,
 * image-embedding and "v2" dense modes.
 *
 * One pass, four stages, each a forward/backward pair: the token embedding, a block's attention
 * branch, its MLP branch, and the head; the two architectures differ inside them:
 *   CLIP:  tokens -> ln_pre; attention out_proj(attn(ln_1 x)); MLP c_proj(act(c_fc(ln_2 x)));
 *          ln_post, @ proj.
 *   EVA02: tokens with patch bias, no ln_pre; attention proj(inner_attn_ln(attn(norm1 x))) with
 *          2-D RoPE on q and k of the patch tokens; MLP w3(ffn_ln(silu(w1 h) * w2 h)),
 *          h = norm2 x; norm, head with bias.
 *
 * Activation memory for the backward is what the backward cannot cheaply recompute: each
 * block's input, qkv (EVA02: after RoPE, as the attention saw it), attention output, mid
 * residual and MLP pre-activation: 6C + F' floats a token per block (CLIP B/16: 6*768 + 3072;
 * EVA02 B/16: 6*768 + 2*2048), plus each LayerNorm's mean and rstd. LayerNorm outputs and the
 * activated MLP hidden are recomputed in the backward, and attention probabilities are
 * recomputed by attention.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "base/check.h"
#include "base/timing.h"
#include "model/ops.h"
#include "model/vit.h"
#include "model/vit_bf16.h"

/* Pointer to block l of a per-layer activation or parameter of row size n. */
#define AT(base, l, n) ((base) + (size_t)(l) * (size_t)(n))

int vit_prepare(Vit *m, int mode, int B, int H, int W, int train) {
    const VitConfig *c = &m->cfg;
    int P = c->patch, C = c->width, F = c->mlp, E = c->embed, L = c->layers, NH = c->heads;
    int eva = c->arch == VIT_ARCH_EVA02, F2 = eva ? 2 * F : F, D = C / NH;
    CS_CHECK(mode == VIT_IMAGE || mode == VIT_DENSE, "unknown ViT mode %d", mode);
    CS_CHECK(B > 0 && H > 0 && W > 0 && H % P == 0 && W % P == 0,
             "image size %dx%d (batch %d) must be positive multiples of the patch size %d", H, W,
             B, P);
    int gh = H / P, gw = W / P, N = gh * gw, T = N + 1, Tp = mode == VIT_IMAGE ? 1 : N;
    CS_CHECK(!train || !m->bf16, "a model switched to the bf16 forward has no backward");
    CS_CHECK(!train || m->frozen[VIT_POS_EMB] || (gh == c->grid && gw == c->grid),
             "training the positional embedding needs the native %dx%d token grid, got %dx%d: "
             "freeze it (as CLIPSelf does) or use %dx%d pixel inputs",
             c->grid, c->grid, gh, gw, c->grid * P, c->grid * P);
    int Ls = train ? L : 1;         /* per-layer slots kept */
    int Lx = train ? L + 1 : 2;     /* block inputs kept (ping-pong when not training) */
    size_t BT = (size_t)B * T, BN = (size_t)B * N, BTp = (size_t)B * Tp;
    size_t rope = eva ? (size_t)(gh + gw) * (D / 2) : 0;
    ArenaSlot t[] = {
        {&m->acts.cols, BN * 3 * P * P},
        {&m->acts.pos, (size_t)T * C},
        {&m->acts.rope_cos, rope},
        {&m->acts.rope_sin, rope},
        {&m->acts.x0, eva ? 0 : BT * C},
        {&m->acts.lnpre_mean, eva ? 0 : BT},
        {&m->acts.lnpre_rstd, eva ? 0 : BT},
        {&m->acts.xin, (size_t)Lx * BT * C},
        {&m->acts.ln1_mean, (size_t)Ls * BT},
        {&m->acts.ln1_rstd, (size_t)Ls * BT},
        {&m->acts.qkv, (size_t)Ls * BT * 3 * C},
        {&m->acts.atty, (size_t)Ls * BT * C},
        {&m->acts.lse, (size_t)Ls * B * NH * T},
        {&m->acts.attnln_mean, eva ? (size_t)Ls * BT : 0},
        {&m->acts.attnln_rstd, eva ? (size_t)Ls * BT : 0},
        {&m->acts.xmid, (size_t)Ls * BT * C},
        {&m->acts.ln2_mean, (size_t)Ls * BT},
        {&m->acts.ln2_rstd, (size_t)Ls * BT},
        {&m->acts.fch, (size_t)Ls * BT * F2},
        {&m->acts.ffnln_mean, eva ? (size_t)Ls * BT : 0},
        {&m->acts.ffnln_rstd, eva ? (size_t)Ls * BT : 0},
        {&m->acts.lnpost, BTp * C},
        {&m->acts.lnpost_mean, BTp},
        {&m->acts.lnpost_rstd, BTp},
        {&m->acts.projout, BTp * E},
        {&m->acts.norm, mode == VIT_DENSE ? BN : 0},
        {&m->acts.out, mode == VIT_DENSE ? BN * E : 0},
        {&m->acts.ln, BT * C},
        {&m->acts.fca, BT * F},
        {&m->acts.ffn, eva ? BT * F : 0},
        {&m->acts.attn_scratch, attention_scratch_floats(T, cs_num_threads())},
        {&m->acts.dx, train ? BT * C : 0},
        {&m->acts.dx2, train ? BT * C : 0},
        {&m->acts.dqkv, train ? BT * 3 * C : 0},
        {&m->acts.datty, train ? BT * C : 0},
        {&m->acts.dfch, train ? BT * F2 : 0},
        {&m->acts.dffn, train && eva ? BT * F : 0},
        {&m->acts.dlnpost, train ? BTp * C : 0},
        {&m->acts.dprojout, train && mode == VIT_DENSE ? BTp * E : 0},
    };
    CS_TRY(arena_carve(&m->acts_mem, &m->acts_capacity, t, sizeof t / sizeof t[0]));
    if (mode == VIT_IMAGE) m->acts.out = m->acts.projout;
    if (eva) rope_tables(m->acts.rope_cos, m->acts.rope_sin, gh, gw, D, c->rope_grid);
    m->num_unreached = 0;
    if (eva && mode == VIT_DENSE) { /* the last block's q and k rows of qkv_w and qkv_b */
        m->unreached[0].offset = m->tensors[VIT_QKV_W].offset + (size_t)(L - 1) * 3 * C * C;
        m->unreached[0].count = (size_t)2 * C * C;
        m->unreached[1].offset = m->tensors[VIT_QKV_B].offset + (size_t)(L - 1) * 3 * C;
        m->unreached[1].count = (size_t)2 * C;
        m->num_unreached = 2;
    }
    m->mode = mode, m->B = B, m->H = H, m->W = W, m->gh = gh, m->gw = gw, m->T = T;
    m->train = train;
    if (m->bf16) CS_TRY(vit_bf16_prepare(m));
    return 0;
}

/* Slot of block l's activations: every block has its own when training, else they share. */
static size_t slot(const Vit *m, int l) { return m->train ? (size_t)l : 0; }
static float *block_input(const Vit *m, int l) {
    size_t BTC = (size_t)m->B * m->T * m->cfg.width;
    return m->acts.xin + (m->train ? (size_t)l : (size_t)(l % 2)) * BTC;
}
float *vit_block_input(const Vit *m, int l) { return block_input(m, l); }

static void add_inplace(float *y, const float *x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

/* Gradient pointer of tensor i, or NULL when it is frozen or not part of this architecture. */
static float *grad_of(const Vit *m, int i, float *g) {
    return m->frozen[i] || !m->tensors[i].numel ? NULL : g;
}

/* ---- token embedding ---------------------------------------------------------------------- */

/* img (B, 3, H, W) -> block_input(0) (B, T, C): class token and patch embedding (EVA02: with
 * bias) plus the positional embedding at this grid, then ln_pre (CLIP only). */
static void embed_forward(Vit *m, const float *img) {
    const VitConfig *c = &m->cfg;
    const VitParams *w = &m->params;
    VitActs *a = &m->acts;
    int B = m->B, T = m->T, N = T - 1, C = c->width, G = c->grid, BT = B * T;
    const float *patch_b = c->arch == VIT_ARCH_EVA02 ? w->patch_b : NULL;

    /* positional embedding at this grid: class row kept, the 2-D part resized bicubic */
    memcpy(a->pos, w->pos_emb, (size_t)C * sizeof(float));
    if (m->gh == G && m->gw == G)
        memcpy(a->pos + C, w->pos_emb + C, (size_t)N * C * sizeof(float));
    else
        bicubic_resize(a->pos + C, w->pos_emb + C, G, G, m->gh, m->gw, C);

    /* tokens: patch embedding (into the ln scratch), class token, plus positions */
    float *x0 = patch_b ? block_input(m, 0) : a->x0;
    patch_embed_forward(a->ln, a->cols, img, w->conv1_w, B, m->H, m->W, c->patch, C);
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < BT; bt++) {
        int b = bt / T, t = bt % T;
        const float *src = t == 0 ? w->class_emb : a->ln + ((size_t)b * N + t - 1) * C;
        float *dst = x0 + (size_t)bt * C;
        const float *pe = a->pos + (size_t)t * C;
        if (patch_b && t > 0) /* the convolution's bias, then the position, as torch adds them */
            for (int i = 0; i < C; i++) dst[i] = (src[i] + patch_b[i]) + pe[i];
        else
            for (int i = 0; i < C; i++) dst[i] = src[i] + pe[i];
    }
    if (!patch_b)
        layernorm_forward(block_input(m, 0), a->lnpre_mean, a->lnpre_rstd, a->x0, w->ln_pre_w,
                          w->ln_pre_b, BT, C, c->ln_eps);
}

/* From a->dx = d block_input(0): gradients of ln_pre (CLIP), the class token, the positional
 * embedding (native grid only), the patch embedding and its bias, and dimg (may be NULL). */
static void embed_backward(Vit *m, float *dimg) {
    const VitConfig *c = &m->cfg;
    const VitParams *w = &m->params;
    VitParams *g = &m->grads;
    VitActs *a = &m->acts;
    int B = m->B, T = m->T, N = T - 1, C = c->width, BT = B * T;
    float *dclass = grad_of(m, VIT_CLASS_EMB, g->class_emb);
    float *dpos = grad_of(m, VIT_POS_EMB, g->pos_emb);
    float *dconv = grad_of(m, VIT_CONV1_W, g->conv1_w);
    float *dpatch_b = grad_of(m, VIT_PATCH_B, g->patch_b);
    float *dln_pre_w = grad_of(m, VIT_LN_PRE_W, g->ln_pre_w);
    float *dln_pre_b = grad_of(m, VIT_LN_PRE_B, g->ln_pre_b);
    int need_tokens = dclass || dpos || dconv || dpatch_b || dimg;
    const float *dx0_all = a->dx; /* (B, T, C) gradient of the tokens */
    if (c->arch == VIT_ARCH_CLIP) {
        if (!dln_pre_w && !dln_pre_b && !need_tokens) return;
        memset(a->dx2, 0, (size_t)BT * C * sizeof(float));
        layernorm_backward(a->dx2, dln_pre_w, dln_pre_b, a->dx, a->x0, w->ln_pre_w,
                           a->lnpre_mean, a->lnpre_rstd, BT, C);
        dx0_all = a->dx2;
    }
    if (!need_tokens) return;
    for (int b = 0; b < B; b++) {
        const float *dx0 = dx0_all + (size_t)b * T * C; /* (T, C) */
        if (dclass)
            for (int i = 0; i < C; i++) dclass[i] += dx0[i];
        if (dpos) /* native grid only: vit_prepare checked it */
            add_inplace(dpos, dx0, (size_t)T * C);
        memcpy(a->ln + (size_t)b * N * C, dx0 + C, (size_t)N * C * sizeof(float));
    }
    if (dpatch_b) /* sum over the patch tokens, now in a->ln (B*N, C) */
        for (int n = 0; n < B * N; n++)
            for (int i = 0; i < C; i++) dpatch_b[i] += a->ln[(size_t)n * C + i];
    if (dconv || dimg)
        patch_embed_backward(dconv, dimg, a->ln, a->cols, w->conv1_w, B, m->H, m->W, c->patch,
                             C);
}

/* The blocks' products run under make bench's phase timers (timing.h): in the two branches
 * below, each call of these four adds its wall time to its phase. */
#define linear_forward(...) CS_TIMED(CS_PHASE_LINEAR, linear_forward(__VA_ARGS__))
#define linear_backward(...) CS_TIMED(CS_PHASE_LINEAR, linear_backward(__VA_ARGS__))
#define attention_forward(...) CS_TIMED(CS_PHASE_ATTN_FWD, attention_forward(__VA_ARGS__))
#define attention_backward(...) CS_TIMED(CS_PHASE_ATTN_BWD, attention_backward(__VA_ARGS__))

/* ---- attention branch: xmid = x + attention branch (x) ------------------------------------ */

static void attn_forward(Vit *m, int l) {
    const VitConfig *c = &m->cfg;
    const VitParams *w = &m->params;
    VitActs *a = &m->acts;
    int B = m->B, T = m->T, C = c->width, NH = c->heads, BT = B * T;
    int eva = c->arch == VIT_ARCH_EVA02;
    size_t s = slot(m, l);
    const float *x = block_input(m, l);
    float *qkv = AT(a->qkv, s, (size_t)BT * 3 * C), *atty = AT(a->atty, s, (size_t)BT * C);
    float *xmid = AT(a->xmid, s, (size_t)BT * C);
    const float *qkv_w = AT(w->qkv_w, l, 3 * C * C), *qkv_b = AT(w->qkv_b, l, 3 * C);
    layernorm_forward(a->ln, AT(a->ln1_mean, s, BT), AT(a->ln1_rstd, s, BT), x,
                      AT(w->ln1_w, l, C), AT(w->ln1_b, l, C), BT, C, c->ln_eps);
    if (m->mode == VIT_DENSE && l == c->layers - 1) {
        /* v2 dense path: the last block's attention is its value path only */
        linear_forward(atty, a->ln, qkv_w + 2 * C * C, C, qkv_b + 2 * C, BT, C, C);
    } else {
        /* EVA02's k bias is the zero middle third of qkv_b: adding it changes nothing */
        linear_forward(qkv, a->ln, qkv_w, C, qkv_b, BT, C, 3 * C);
        if (eva) /* q and k are 2H heads of D channels, contiguous in each qkv row */
            rope_forward(qkv, a->rope_cos, a->rope_sin, B, m->gh, m->gw, 2 * NH, C / NH, 3 * C);
        attention_forward(atty, AT(a->lse, s, (size_t)B * NH * T), qkv, a->attn_scratch, B, T,
                          C, NH);
    }
    const float *proj_in = atty;
    if (eva) { /* sub-LN before the output projection */
        layernorm_forward(a->ln, AT(a->attnln_mean, s, BT), AT(a->attnln_rstd, s, BT), atty,
                          AT(w->attn_ln_w, l, C), AT(w->attn_ln_b, l, C), BT, C, c->ln_eps);
        proj_in = a->ln;
    }
    linear_forward(xmid, proj_in, AT(w->out_w, l, C * C), C, AT(w->out_b, l, C), BT, C, C);
    add_inplace(xmid, x, (size_t)BT * C);
}

/* a->dx: d xmid on entry, d x on return (the residual adds the branch's input gradient). */
static void attn_backward(Vit *m, int l) {
    const VitConfig *c = &m->cfg;
    const VitParams *w = &m->params;
    VitParams *g = &m->grads;
    VitActs *a = &m->acts;
    int B = m->B, T = m->T, C = c->width, NH = c->heads, BT = B * T;
    int eva = c->arch == VIT_ARCH_EVA02;
    size_t s = slot(m, l), BTC = (size_t)BT * C;
    const float *x = block_input(m, l);
    const float *qkv = AT(a->qkv, s, (size_t)BT * 3 * C), *atty = AT(a->atty, s, BTC);
    const float *qkv_w = AT(w->qkv_w, l, 3 * C * C);
    float *dqkv_w = grad_of(m, VIT_QKV_W, AT(g->qkv_w, l, 3 * C * C));
    float *dqkv_b = grad_of(m, VIT_QKV_B, AT(g->qkv_b, l, 3 * C));

    /* output projection (EVA02: and the sub-LN before it) -> a->datty */
    memset(a->datty, 0, BTC * sizeof(float));
    if (eva) {
        float *attn_mean = AT(a->attnln_mean, s, BT), *attn_rstd = AT(a->attnln_rstd, s, BT);
        const float *attn_ln_w = AT(w->attn_ln_w, l, C);
        layernorm_forward(a->ln, attn_mean, attn_rstd, atty, attn_ln_w, AT(w->attn_ln_b, l, C),
                          BT, C, c->ln_eps);
        memset(a->dx2, 0, BTC * sizeof(float));
        linear_backward(a->dx2, grad_of(m, VIT_OUT_W, AT(g->out_w, l, C * C)),
                        grad_of(m, VIT_OUT_B, AT(g->out_b, l, C)), a->dx, a->ln,
                        AT(w->out_w, l, C * C), C, BT, C, C);
        layernorm_backward(a->datty, grad_of(m, VIT_ATTN_LN_W, AT(g->attn_ln_w, l, C)),
                           grad_of(m, VIT_ATTN_LN_B, AT(g->attn_ln_b, l, C)), a->dx2, atty,
                           attn_ln_w, attn_mean, attn_rstd, BT, C);
    } else {
        linear_backward(a->datty, grad_of(m, VIT_OUT_W, AT(g->out_w, l, C * C)),
                        grad_of(m, VIT_OUT_B, AT(g->out_b, l, C)), a->dx, atty,
                        AT(w->out_w, l, C * C), C, BT, C, C);
    }

    /* attention (or the dense path's value projection) -> a->dx2 = d ln_1(x) */
    layernorm_forward(a->ln, AT(a->ln1_mean, s, BT), AT(a->ln1_rstd, s, BT), x,
                      AT(w->ln1_w, l, C), AT(w->ln1_b, l, C), BT, C, c->ln_eps);
    memset(a->dx2, 0, BTC * sizeof(float));
    if (m->mode == VIT_DENSE && l == c->layers - 1) {
        linear_backward(a->dx2, dqkv_w ? dqkv_w + 2 * C * C : NULL,
                        dqkv_b ? dqkv_b + 2 * C : NULL, a->datty, a->ln, qkv_w + 2 * C * C, C,
                        BT, C, C);
    } else {
        memset(a->dqkv, 0, (size_t)BT * 3 * C * sizeof(float));
        attention_backward(a->dqkv, a->datty, qkv, atty, AT(a->lse, s, (size_t)B * NH * T),
                           a->attn_scratch, B, T, C, NH);
        if (!eva) {
            linear_backward(a->dx2, dqkv_w, dqkv_b, a->dqkv, a->ln, qkv_w, C, BT, C, 3 * C);
        } else {
            rope_backward(a->dqkv, a->rope_cos, a->rope_sin, B, m->gh, m->gw, 2 * NH, C / NH,
                          3 * C);
            linear_backward(a->dx2, dqkv_w, NULL, a->dqkv, a->ln, qkv_w, C, BT, C, 3 * C);
            if (dqkv_b) {
                /* EVA02 has no k bias: its zero third of qkv_b must never get a gradient (that
                 * would move it under AdamW), so the k columns are cleared before the sums */
#pragma omp parallel for schedule(static)
                for (int bt = 0; bt < BT; bt++)
                    memset(a->dqkv + (size_t)bt * 3 * C + C, 0, (size_t)C * sizeof(float));
                linear_backward(NULL, NULL, dqkv_b, a->dqkv, a->ln, qkv_w, C, BT, C, 3 * C);
            }
        }
    }
    layernorm_backward(a->dx, grad_of(m, VIT_LN1_W, AT(g->ln1_w, l, C)),
                       grad_of(m, VIT_LN1_B, AT(g->ln1_b, l, C)), a->dx2, x, AT(w->ln1_w, l, C),
                       AT(a->ln1_mean, s, BT), AT(a->ln1_rstd, s, BT), BT, C);
}

/* ---- MLP branch: xout = xmid + MLP(xmid) -------------------------------------------------- */

static void mlp_forward(Vit *m, int l) {
    const VitConfig *c = &m->cfg;
    const VitParams *w = &m->params;
    VitActs *a = &m->acts;
    int BT = m->B * m->T, C = c->width, F = c->mlp, eva = c->arch == VIT_ARCH_EVA02;
    int F2 = eva ? 2 * F : F;
    size_t s = slot(m, l);
    float *xmid = AT(a->xmid, s, (size_t)BT * C), *fch = AT(a->fch, s, (size_t)BT * F2);
    float *xout = block_input(m, l + 1);
    layernorm_forward(a->ln, AT(a->ln2_mean, s, BT), AT(a->ln2_rstd, s, BT), xmid,
                      AT(w->ln2_w, l, C), AT(w->ln2_b, l, C), BT, C, c->ln_eps);
    linear_forward(fch, a->ln, AT(w->fc_w, l, F2 * C), C, AT(w->fc_b, l, F2), BT, C, F2);
    const float *hidden = a->fca;
    if (eva) {
        swiglu_forward(a->fca, fch, BT, F);
        layernorm_forward(a->ffn, AT(a->ffnln_mean, s, BT), AT(a->ffnln_rstd, s, BT), a->fca,
                          AT(w->ffn_ln_w, l, F), AT(w->ffn_ln_b, l, F), BT, F, c->ln_eps);
        hidden = a->ffn;
    } else {
        act_forward(a->fca, fch, (size_t)BT * F, c->act);
    }
    linear_forward(xout, hidden, AT(w->fcproj_w, l, C * F), F, AT(w->fcproj_b, l, C), BT, F, C);
    add_inplace(xout, xmid, (size_t)BT * C);
}

/* a->dx: d xout on entry, d xmid on return. */
static void mlp_backward(Vit *m, int l) {
    const VitConfig *c = &m->cfg;
    const VitParams *w = &m->params;
    VitParams *g = &m->grads;
    VitActs *a = &m->acts;
    int BT = m->B * m->T, C = c->width, F = c->mlp, eva = c->arch == VIT_ARCH_EVA02;
    int F2 = eva ? 2 * F : F;
    size_t s = slot(m, l), BTC = (size_t)BT * C, BTF = (size_t)BT * F;
    const float *xmid = AT(a->xmid, s, BTC), *fch = AT(a->fch, s, (size_t)BT * F2);
    float *dfcproj_w = grad_of(m, VIT_FCPROJ_W, AT(g->fcproj_w, l, C * F));
    float *dfcproj_b = grad_of(m, VIT_FCPROJ_B, AT(g->fcproj_b, l, C));

    /* down to dfch = d fch */
    float *dfch;
    if (eva) {
        float *ffn_mean = AT(a->ffnln_mean, s, BT), *ffn_rstd = AT(a->ffnln_rstd, s, BT);
        const float *ffn_ln_w = AT(w->ffn_ln_w, l, F);
        swiglu_forward(a->fca, fch, BT, F);
        layernorm_forward(a->ffn, ffn_mean, ffn_rstd, a->fca, ffn_ln_w, AT(w->ffn_ln_b, l, F),
                          BT, F, c->ln_eps);
        memset(a->dffn, 0, BTF * sizeof(float));
        linear_backward(a->dffn, dfcproj_w, dfcproj_b, a->dx, a->ffn, AT(w->fcproj_w, l, C * F),
                        F, BT, F, C);
        memset(a->ffn, 0, BTF * sizeof(float)); /* now the gradient of the SwiGLU output */
        layernorm_backward(a->ffn, grad_of(m, VIT_FFN_LN_W, AT(g->ffn_ln_w, l, F)),
                           grad_of(m, VIT_FFN_LN_B, AT(g->ffn_ln_b, l, F)), a->dffn, a->fca,
                           ffn_ln_w, ffn_mean, ffn_rstd, BT, F);
        memset(a->dfch, 0, (size_t)BT * F2 * sizeof(float));
        swiglu_backward(a->dfch, a->ffn, fch, BT, F);
        dfch = a->dfch;
    } else {
        act_forward(a->fca, fch, BTF, c->act);
        memset(a->dfch, 0, BTF * sizeof(float)); /* first the gradient of the activation */
        linear_backward(a->dfch, dfcproj_w, dfcproj_b, a->dx, a->fca, AT(w->fcproj_w, l, C * F),
                        F, BT, F, C);
        memset(a->fca, 0, BTF * sizeof(float)); /* now the pre-activation gradient */
        act_backward(a->fca, a->dfch, fch, BTF, c->act);
        dfch = a->fca;
    }

    /* c_fc (w1|w2) and ln_2 (norm2) */
    layernorm_forward(a->ln, AT(a->ln2_mean, s, BT), AT(a->ln2_rstd, s, BT), xmid,
                      AT(w->ln2_w, l, C), AT(w->ln2_b, l, C), BT, C, c->ln_eps);
    memset(a->dx2, 0, BTC * sizeof(float));
    linear_backward(a->dx2, grad_of(m, VIT_FC_W, AT(g->fc_w, l, F2 * C)),
                    grad_of(m, VIT_FC_B, AT(g->fc_b, l, F2)), dfch, a->ln,
                    AT(w->fc_w, l, F2 * C), C, BT, C, F2);
    layernorm_backward(a->dx, grad_of(m, VIT_LN2_W, AT(g->ln2_w, l, C)),
                       grad_of(m, VIT_LN2_B, AT(g->ln2_b, l, C)), a->dx2, xmid,
                       AT(w->ln2_w, l, C), AT(a->ln2_mean, s, BT), AT(a->ln2_rstd, s, BT), BT, C);
}

#undef linear_forward
#undef linear_backward
#undef attention_forward
#undef attention_backward

/* ---- head --------------------------------------------------------------------------------- */

/* ln_post (EVA02: norm) on the class token (image) or every patch token (dense), then @ proj
 * (EVA02: the head, x @ head^T + head_b); dense mode normalises each token. */
static void head_forward(Vit *m) {
    const VitConfig *c = &m->cfg;
    const VitParams *w = &m->params;
    VitActs *a = &m->acts;
    int B = m->B, T = m->T, N = T - 1, C = c->width, E = c->embed;
    int dense = m->mode == VIT_DENSE, Tp = dense ? N : 1;
    const float *xL = block_input(m, c->layers);
    for (int b = 0; b < B; b++)
        layernorm_forward(a->lnpost + (size_t)b * Tp * C, a->lnpost_mean + (size_t)b * Tp,
                          a->lnpost_rstd + (size_t)b * Tp, xL + ((size_t)b * T + dense) * C,
                          w->ln_post_w, w->ln_post_b, Tp, C, c->ln_eps);
    if (c->arch == VIT_ARCH_EVA02)
        linear_forward(a->projout, a->lnpost, w->proj, C, w->head_b, B * Tp, C, E);
    else
        gemm(0, 0, B * Tp, E, C, 1.0f, a->lnpost, C, w->proj, E, 0.0f, a->projout, E, 0);
    if (dense) l2norm_forward(a->out, a->norm, a->projout, B * N, E);
}

/* dout has the shape of a->out; leaves d block_input(L) in a->dx. */
static void head_backward(Vit *m, const float *dout) {
    const VitConfig *c = &m->cfg;
    const VitParams *w = &m->params;
    VitParams *g = &m->grads;
    VitActs *a = &m->acts;
    int B = m->B, T = m->T, N = T - 1, C = c->width, E = c->embed;
    int dense = m->mode == VIT_DENSE, Tp = dense ? N : 1;
    const float *dproj_out = dout;
    if (dense) {
        memset(a->dprojout, 0, (size_t)B * N * E * sizeof(float));
        l2norm_backward(a->dprojout, dout, a->out, a->norm, B * N, E);
        dproj_out = a->dprojout;
    }
    float *dproj = grad_of(m, VIT_PROJ, g->proj);
    if (c->arch == VIT_ARCH_EVA02) {
        memset(a->dlnpost, 0, (size_t)B * Tp * C * sizeof(float));
        linear_backward(a->dlnpost, dproj, grad_of(m, VIT_HEAD_B, g->head_b), dproj_out,
                        a->lnpost, w->proj, C, B * Tp, C, E);
    } else {
        if (dproj) gemm(1, 0, C, E, B * Tp, 1.0f, a->lnpost, C, dproj_out, E, 1.0f, dproj, E, 0);
        gemm(0, 1, B * Tp, C, E, 1.0f, dproj_out, E, w->proj, E, 0.0f, a->dlnpost, C, 0);
    }
    memset(a->dx, 0, (size_t)B * T * C * sizeof(float));
    const float *xL = block_input(m, c->layers);
    for (int b = 0; b < B; b++)
        layernorm_backward(a->dx + ((size_t)b * T + dense) * C,
                           grad_of(m, VIT_LN_POST_W, g->ln_post_w),
                           grad_of(m, VIT_LN_POST_B, g->ln_post_b), a->dlnpost + (size_t)b * Tp * C,
                           xL + ((size_t)b * T + dense) * C, w->ln_post_w,
                           a->lnpost_mean + (size_t)b * Tp, a->lnpost_rstd + (size_t)b * Tp, Tp, C);
}

/* ---- the whole pass ----------------------------------------------------------------------- */

void vit_forward(Vit *m, const float *img) {
    embed_forward(m, img);
    for (int l = 0; l < m->cfg.layers; l++) {
        if (m->bf16) {
            /* vit_prepare made the primitives and buffers: only oneDNN itself can fail here */
            if (vit_bf16_block(m, l)) {
                fprintf(stderr, "vit_forward: %s\n", cs_error());
                abort();
            }
            continue;
        }
        attn_forward(m, l);
        mlp_forward(m, l);
    }
    head_forward(m);
}

static void grad_ready(const Vit *m, int done) {
    if (m->grad_ready) m->grad_ready(m->grad_ready_arg, done);
}

int vit_backward(Vit *m, const float *dout, float *dimg) {
    CS_CHECK(m->train && m->grads_mem, "vit_backward needs vit_prepare(..., train = 1) before "
             "the forward, and vit_alloc_grads");
    head_backward(m, dout);
    grad_ready(m, m->cfg.layers);
    /* blocks, last to first; a->dx holds the gradient of the current block's output */
    for (int l = m->cfg.layers - 1; l >= 0; l--) {
        mlp_backward(m, l);
        attn_backward(m, l);
        grad_ready(m, l);
    }
    embed_backward(m, dimg);
    grad_ready(m, -1);
    return 0;
}

void vit_forward_flops_parts(const Vit *m, double *linear, double *attention) {
    const VitConfig *c = &m->cfg;
    double B = m->B, T = m->T, C = c->width, F = c->mlp, L = c->layers;
    double mlp = c->arch == VIT_ARCH_EVA02 ? 3 * C * F : 2 * C * F; /* SwiGLU: w1, w2, w3 */
    /* the dense path's last block: value and output projections, no attention products */
    int dense = m->mode == VIT_DENSE;
    *linear = L * 2 * B * T * (4 * C * C + mlp) - (dense ? 2 * B * T * 2 * C * C : 0);
    *attention = (L - dense) * 4 * B * T * T * C;
}

double vit_forward_flops(const Vit *m) {
    const VitConfig *c = &m->cfg;
    double B = m->B, N = m->T - 1, C = c->width, E = c->embed, P = c->patch;
    double Tp = m->mode == VIT_DENSE ? N : 1, linear, attention;
    vit_forward_flops_parts(m, &linear, &attention);
    return 2 * B * N * 3 * P * P * C + linear + attention + 2 * B * Tp * C * E;
}
