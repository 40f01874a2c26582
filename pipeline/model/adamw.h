/* adamw.h: AdamW (decoupled weight decay, PyTorch's update order) over the ViT's flat buffer,
 * and open_clip's per-step learning-rate schedule (linear warmup, then cosine to 0). */
#ifndef CLIPSELF_ADAMW_H
#define CLIPSELF_ADAMW_H

#include <stddef.h>

#include "model/vit.h"

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} AdamWConfig;

typedef struct {
    AdamWConfig cfg;
    long step;  /* updates done so far */
    float *m;   /* (num_params) first moment, same layout as the parameters */
    float *v;   /* (num_params) second moment */
} AdamW;

/* CLIPSelf's reference values: lr 1e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0.1. */
AdamWConfig adamw_clipself_defaults(void);
int adamw_init(AdamW *opt, const AdamWConfig *cfg, size_t num_params);
void adamw_free(AdamW *opt);

/* open_clip cosine_lr: step < warmup: base * (step + 1) / warmup; then
 * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup))) * base. step counts from 0. */
double lr_at_step(double base_lr, long warmup, long total_steps, long step);

/* One AdamW update of every tensor of m that is not frozen, with learning rate lr; weight decay
 * only on tensors whose table entry says so. Frozen tensors and their moments stay untouched,
 * and so do the parts the last prepared mode's backward never reaches (Vit.unreached). */
void adamw_step(AdamW *opt, Vit *m, float lr);

/* adamw_step in parts, for an update spread over ranks (allreduce.h: grad_reduce_step):
 * adamw_begin_step counts the step; adamw_update_span then updates the parameters
 * [begin, end) of the flat buffer (and their moments) from the gradients g, g[0] being begin's,
 * by adamw_step's rules (frozen tensors and unreached parts untouched, decay per tensor). Spans
 * covering the buffer once give adamw_step's result bit for bit: the update is elementwise. */
void adamw_begin_step(AdamW *opt);
void adamw_update_span(AdamW *opt, Vit *m, size_t begin, size_t end, const float *g, float lr);

/* The update of one contiguous range (exposed for tests). t is the 1-based step number. */
void adamw_update(float *p, const float *g, float *mom1, float *mom2, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, long t);

#endif
