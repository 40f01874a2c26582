/* vitcheck.h: comparing a ViT's flat buffers (parameters or gradients) with a reference
 * fixture tensor by tensor, and the fixtures' AdamW settings; shared by test_vit (CLIP) and
 * test_eva (EVA02). */
#ifndef CLIPSELF_VITCHECK_H
#define CLIPSELF_VITCHECK_H

#include "model/adamw.h"
#include "model/vit.h"
#include "testutil.h"

/* Compare every tensor of buf (laid out as m's parameters) with group/<name> datasets, block by
 * block; only tensors that are not frozen when only_trainable, and then, with zero_frozen, the
 * frozen ones must hold exactly 0 (gradients). Tolerance: rel * (|want| + max|want|) + atol.
 * kbias_atol > 0 compares the key rows of a CLIP in_proj_bias with that absolute tolerance
 * instead: their true gradient is zero (softmax ignores a shift shared by all keys), so what
 * backprop gives there is rounding noise, and Adam scales noise up to steps of about lr. */
static inline void tu_compare_vit_ex(const char *tag, const Vit *m, const float *buf, hid_t f,
                                     const char *group, int only_trainable, int zero_frozen,
                                     float rel, float atol, float kbias_atol, float hard_atol,
                                     double out_frac) {
    int C = m->cfg.width;
    for (int i = 0; i < VIT_NUM_TENSORS; i++) {
        const VitTensor *t = &m->tensors[i];
        if (!t->numel) continue; /* not part of this architecture */
        if (only_trainable && m->frozen[i]) {
            if (zero_frozen) {
                char label[300];
                snprintf(label, sizeof label, "%s frozen %s gets no gradient", tag, t->name);
                const float *g = buf + t->offset;
                size_t nz = 0;
                for (size_t j = 0; j < t->numel; j++) nz += g[j] != 0.0f;
                tu_check(nz == 0, label, "non-zero elements");
            }
            continue;
        }
        int L = t->per_layer ? m->cfg.layers : 1;
        size_t per = t->numel / (size_t)L;
        for (int l = 0; l < L; l++) {
            char name[256], path[512], label[1100];
            snprintf(name, sizeof name, t->name, l);
            snprintf(path, sizeof path, "%s/%s", group, name);
            snprintf(label, sizeof label, "%s %s", tag, path);
            size_t n;
            float *want = tu_read(f, path, &n);
            const float *got = buf + t->offset + (size_t)l * per;
            if (n != per) {
                tu_check(0, label, "element count differs from the fixture");
            } else if (i == VIT_QKV_B && kbias_atol > 0) {
                char kl[1200];
                snprintf(kl, sizeof kl, "%s (key rows, zero true gradient)", label);
                tu_close(kl, got + C, want + C, (size_t)C, 0.0f, kbias_atol);
                tu_close(label, got, want, (size_t)C, rel, rel * tu_absmax(want, n) + atol);
                tu_close(label, got + 2 * C, want + 2 * C, (size_t)C, rel,
                         rel * tu_absmax(want, n) + atol);
            } else if (hard_atol > 0) {
                size_t max_out = (size_t)ceil(out_frac * (double)n);
                tu_close_most(label, got, want, n, rel, rel * tu_absmax(want, n) + atol,
                              hard_atol, max_out);
            } else {
                tu_close(label, got, want, n, rel, rel * tu_absmax(want, n) + atol);
            }
            free(want);
        }
    }
}

static inline void tu_compare_vit(const char *tag, const Vit *m, const float *buf, hid_t f,
                                  const char *group, int only_trainable, int zero_frozen,
                                  float rel, float atol, float kbias_atol) {
    tu_compare_vit_ex(tag, m, buf, f, group, only_trainable, zero_frozen, rel, atol, kbias_atol,
                      0.0f, 0.0);
}

/* Parameters after AdamW steps against the reference's. Adam divides each gradient element
 * by its own running scale, so an element whose gradient is at rounding level (true value near
 * 0) takes the sign of the rounding, which differs between implementations and BLIS kernel
 * sets: such elements move by up to a full step in either direction. With bias correction
 * |m_hat| / sqrt(v_hat) <= sqrt(sum_i w_i^2 / u_i) (Cauchy-Schwarz over the steps' weights),
 * 1.0013 for beta1 0.9, beta2 0.999 and up to 3 steps: each step moves an element by at most
 * 1.01 lr_t, so two runs differ by at most 2.02 * sum_t lr_t, the hard bound. Every other
 * element must be within rel * (|want| + max|want|) + 0.05 lr. How many may be outliers: the
 * share of elements whose gradient lies within the gradient noise eps (relative to the
 * tensor's largest) of zero, about 4 eps for a normal-like tensor whose largest element is 5
 * standard deviations out. eps is taken as rel, the parameters' own relative tolerance (the
 * gradients' measured error is below it), so the share is 4 * rel, at least one element. */
static inline void tu_compare_adamw(const char *tag, const Vit *m, const float *buf, hid_t f,
                                    const char *group, float rel, float lr, float lr_sum,
                                    float kbias_atol) {
    tu_compare_vit_ex(tag, m, buf, f, group, 0, 0, rel, 0.05f * lr, kbias_atol, 2.02f * lr_sum,
                      4.0 * rel);
}

/* The reference's optimiser settings and schedule, from /adamw's attributes. */
static inline AdamWConfig tu_read_adamw(hid_t f, long *warmup, long *total, long *steps) {
    hid_t ga = H5Gopen2(f, "/adamw", H5P_DEFAULT);
    AdamWConfig ac = {.lr = (float)tu_attr_double(ga, "lr"),
                      .beta1 = (float)tu_attr_double(ga, "beta1"),
                      .beta2 = (float)tu_attr_double(ga, "beta2"),
                      .eps = (float)tu_attr_double(ga, "eps"),
                      .weight_decay = (float)tu_attr_double(ga, "weight_decay")};
    *warmup = (long)tu_attr_double(ga, "warmup");
    *total = (long)tu_attr_double(ga, "total_steps");
    *steps = (long)tu_attr_double(ga, "steps");
    H5Gclose(ga);
    return ac;
}

#endif
