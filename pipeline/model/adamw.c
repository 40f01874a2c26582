/* adamw.c: AdamW in torch.optim.AdamW's arithmetic order (single-tensor path of PyTorch 1.13),
 * so three steps agree with PyTorch to float rounding, and the warmup + cosine schedule. */
#include "model/adamw.h"

#include <math.h>
#include <stdlib.h>

#include "base/check.h"
#include "base/simd.h"

AdamWConfig adamw_clipself_defaults(void) {
    return (AdamWConfig){.lr = 1e-5f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                         .weight_decay = 0.1f};
}

int adamw_init(AdamW *opt, const AdamWConfig *cfg, size_t num_params) {
    opt->cfg = *cfg;
    opt->step = 0;
    CS_ALLOC(opt->m, num_params);
    CS_ALLOC(opt->v, num_params);
    return 0;
}

void adamw_free(AdamW *opt) {
    free(opt->m);
    free(opt->v);
    opt->m = opt->v = NULL;
}

double lr_at_step(double base_lr, long warmup, long total_steps, long step) {
    if (step < warmup) return base_lr * (double)(step + 1) / (double)warmup;
    long e = step - warmup, es = total_steps - warmup;
    if (es <= 0) return 0.0;
    return 0.5 * (1.0 + cos(M_PI * (double)e / (double)es)) * base_lr;
}

CS_SIMD_DISPATCH
void adamw_update(float *p, const float *g, float *mom1, float *mom2, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, long t) {
    /* PyTorch computes these scalars in double and rounds them when they meet a float tensor. */
    float decay = (float)(1.0 - (double)lr * (double)weight_decay);
    double bc1 = 1.0 - pow((double)beta1, (double)t), bc2 = 1.0 - pow((double)beta2, (double)t);
    float step_size = (float)((double)lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float one_m_b1 = (float)(1.0 - (double)beta1), one_m_b2 = (float)(1.0 - (double)beta2);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        p[i] *= decay;
        mom1[i] = mom1[i] * beta1 + g[i] * one_m_b1;
        mom2[i] = mom2[i] * beta2 + one_m_b2 * g[i] * g[i];
        float denom = sqrtf(mom2[i]) / bc2_sqrt + eps;
        p[i] += -step_size * (mom1[i] / denom);
    }
}

void adamw_begin_step(AdamW *opt) { opt->step++; }

/* The update of params [a, b) (inside tensor i, whose decay applies) from g (g[0]: a's). */
static void update_piece(AdamW *opt, Vit *m, size_t a, size_t b, const float *g, float lr,
                         float wd) {
    if (b > a)
        adamw_update(m->params_mem + a, g, opt->m + a, opt->v + a, b - a, lr, opt->cfg.beta1,
                     opt->cfg.beta2, opt->cfg.eps, wd, opt->step);
}

void adamw_update_span(AdamW *opt, Vit *m, size_t begin, size_t end, const float *g, float lr) {
    for (int i = 0; i < VIT_NUM_TENSORS; i++) {
        if (m->frozen[i]) continue;
        const VitTensor *t = &m->tensors[i];
        size_t o = t->offset > begin ? t->offset : begin;
        size_t e = t->offset + t->numel < end ? t->offset + t->numel : end;
        if (o >= e) continue;
        float wd = t->decay ? opt->cfg.weight_decay : 0.0f;
        /* parts the backward never reaches stay untouched, as in PyTorch (vit.h: unreached) */
        for (int r = 0; r < m->num_unreached; r++) {
            size_t u = m->unreached[r].offset, ue = u + m->unreached[r].count;
            if (ue <= o || u >= e) continue;
            if (u > o) update_piece(opt, m, o, u, g + (o - begin), lr, wd);
            o = ue;
        }
        if (o < e) update_piece(opt, m, o, e, g + (o - begin), lr, wd);
    }
}

void adamw_step(AdamW *opt, Vit *m, float lr) {
    adamw_begin_step(opt);
    adamw_update_span(opt, m, 0, m->num_params, m->grads_mem, lr);
}
