/* contrastive.h: the loss that pretrains a teacher CLIP-style (stages/pretrain_teacher.c): each
 * image embedding is classified against a learned matrix of class embeddings, as CLIP
 * classifies an image against the text embeddings of its candidate captions.
 *
 *   img_n  = img / ||img||,  cls_n = cls / ||cls||            (torch F.normalize, eps 1e-12)
 *   logits = exp(log_scale) * img_n . cls_n^T                  (N, K)
 *   loss   = mean_i sum_k -target[i, k] * log_softmax(logits)[i, k]
 * which is torch F.cross_entropy(logits, target) with probability targets: any distribution
 * per row (pretrain_teacher's: a box's visible pixels per category, things weighted up); an
 * all-zero row adds nothing to the loss or the gradients (but counts in the mean's N).
 * CLIP clamps the logit scale after each optimiser step (exp(log_scale) <= 100); that clamp is
 * the caller's, the loss takes log_scale as given so its gradient is exact.
 * Sizes: N rows (images), K classes, E embedding dimension. */
#ifndef CLIPSELF_CONTRASTIVE_H
#define CLIPSELF_CONTRASTIVE_H

typedef struct {
    int capacity, K, E;  /* rows the buffers hold; classes; embedding dimension */
    int N;               /* rows of the last forward */
    float scale;         /* exp(log_scale) of the last forward */
    const float *target; /* (N, K) of the last forward, caller-owned */
    float *img_n;        /* (capacity, E) normalised image embeddings */
    float *img_norm;     /* (capacity) their norms before normalisation */
    float *cls_n;        /* (K, E) normalised class embeddings */
    float *cls_norm;     /* (K) */
    float *logits;       /* (capacity, K) scale * cosine: argmax of a row is its prediction */
    float *prob;         /* (capacity, K) softmax of the logits */
    float *dlogits;      /* (capacity, K) backward scratch */
    float *dimg_n;       /* (capacity, E) */
    float *dcls_n;       /* (K, E) */
} ContrastiveLoss;

int contrastive_init(ContrastiveLoss *cl, int capacity, int K, int E);
void contrastive_free(ContrastiveLoss *cl);

/* img (N, E) image embeddings (not normalised), cls (K, E) class embeddings (not normalised),
 * target (N, K) non-negative rows, kept by pointer until the backward. *loss = the mean over
 * the N rows. Fails if N exceeds the capacity. */
int contrastive_forward(ContrastiveLoss *cl, float *loss, const float *img, const float *cls,
                        float log_scale, const float *target, int N);

/* dimg (N, E) +=, dcls (K, E) +=, *dlog_scale += dloss * the gradient of the last forward's
 * loss. Any of the three may be NULL (not computed). */
void contrastive_backward(ContrastiveLoss *cl, float *dimg, float *dcls, float *dlog_scale,
                          float dloss);

#endif
