/* contrastive.c: the CLIP-style classification loss against learned class embeddings (see
 * contrastive.h), composed from l2norm and two matrix products. Sums run serially in double so
 * a loss is bit-identical from run to run. */
#include "method/contrastive.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "model/ops.h"

int contrastive_init(ContrastiveLoss *cl, int capacity, int K, int E) {
    memset(cl, 0, sizeof *cl);
    CS_CHECK(capacity > 0 && K > 0 && E > 0, "contrastive loss needs rows, classes and embed > 0 "
             "(got %d, %d, %d)", capacity, K, E);
    cl->capacity = capacity, cl->K = K, cl->E = E;
    CS_ALLOC(cl->img_n, (size_t)capacity * E);
    CS_ALLOC(cl->img_norm, capacity);
    CS_ALLOC(cl->cls_n, (size_t)K * E);
    CS_ALLOC(cl->cls_norm, K);
    CS_ALLOC(cl->logits, (size_t)capacity * K);
    CS_ALLOC(cl->prob, (size_t)capacity * K);
    CS_ALLOC(cl->dlogits, (size_t)capacity * K);
    CS_ALLOC(cl->dimg_n, (size_t)capacity * E);
    CS_ALLOC(cl->dcls_n, (size_t)K * E);
    return 0;
}

void contrastive_free(ContrastiveLoss *cl) {
    free(cl->img_n), free(cl->img_norm), free(cl->cls_n), free(cl->cls_norm);
    free(cl->logits), free(cl->prob), free(cl->dlogits), free(cl->dimg_n), free(cl->dcls_n);
    memset(cl, 0, sizeof *cl);
}

int contrastive_forward(ContrastiveLoss *cl, float *loss, const float *img, const float *cls,
                        float log_scale, const float *target, int N) {
    CS_CHECK(N > 0 && N <= cl->capacity, "%d rows for a contrastive loss sized for %d", N,
             cl->capacity);
    int K = cl->K, E = cl->E;
    cl->N = N, cl->target = target, cl->scale = expf(log_scale);
    l2norm_forward(cl->img_n, cl->img_norm, img, N, E);
    l2norm_forward(cl->cls_n, cl->cls_norm, cls, K, E);
    /* logits (N, K) = scale * img_n (N, E) . cls_n^T (E, K) */
    gemm(0, 1, N, K, E, cl->scale, cl->img_n, E, cl->cls_n, E, 0.0f, cl->logits, K, 0);
    double sum = 0.0;
    for (int i = 0; i < N; i++) {
        const float *z = cl->logits + (size_t)i * K, *t = target + (size_t)i * K; /* (K) */
        float *p = cl->prob + (size_t)i * K;                                     /* (K) */
        float mx = z[0];
        for (int k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
        double s = 0.0;
        for (int k = 0; k < K; k++) s += (double)(p[k] = expf(z[k] - mx));
        float inv = (float)(1.0 / s);
        for (int k = 0; k < K; k++) p[k] *= inv;
        /* -sum_k t_k (z_k - lse) with lse = mx + log s */
        double lse = (double)mx + log(s), row = 0.0;
        for (int k = 0; k < K; k++) row += (double)t[k] * (lse - (double)z[k]);
        sum += row;
    }
    *loss = (float)(sum / N);
    return 0;
}

void contrastive_backward(ContrastiveLoss *cl, float *dimg, float *dcls, float *dlog_scale,
                          float dloss) {
    int N = cl->N, K = cl->K, E = cl->E;
    float g = dloss / (float)N;
    double dls = 0.0;
    for (int i = 0; i < N; i++) {
        const float *t = cl->target + (size_t)i * K, *p = cl->prob + (size_t)i * K; /* (K) */
        const float *z = cl->logits + (size_t)i * K;                               /* (K) */
        float *dz = cl->dlogits + (size_t)i * K;                                    /* (K) */
        double ts = 0.0;
        for (int k = 0; k < K; k++) ts += t[k];
        /* d loss_i / d z_k = p_k * sum(t) - t_k */
        for (int k = 0; k < K; k++) {
            dz[k] = g * (p[k] * (float)ts - t[k]);
            dls += (double)dz[k] * z[k]; /* d z / d log_scale = z */
        }
    }
    if (dlog_scale) *dlog_scale += (float)dls;
    /* z = scale * img_n . cls_n^T: d img_n = scale * dz . cls_n, d cls_n = scale * dz^T . img_n */
    if (dimg) {
        gemm(0, 0, N, E, K, cl->scale, cl->dlogits, K, cl->cls_n, E, 0.0f, cl->dimg_n, E, 0);
        l2norm_backward(dimg, cl->dimg_n, cl->img_n, cl->img_norm, N, E);
    }
    if (dcls) {
        gemm(1, 0, K, E, N, cl->scale, cl->dlogits, K, cl->img_n, E, 0.0f, cl->dcls_n, E, 0);
        l2norm_backward(dcls, cl->dcls_n, cl->cls_n, cl->cls_norm, K, E);
    }
}
