/* regioneval.c: per-image region classification and the mAcc metric (see regioneval.h). */
#include "method/regioneval.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "base/geometry.h"
#include "method/crops.h"
#include "model/ops.h"

const char *const eval_method_names[EVAL_METHODS] = {"rois", "crops", "maskpool"};

#define MAX_SEGMENTS 100 /* the reference evaluates at most the first 100 segments */

int region_counts_init(RegionCounts *rc, int num_classes) {
    memset(rc, 0, sizeof *rc);
    rc->num_classes = num_classes;
    CS_ALLOC(rc->count, num_classes);
    CS_ALLOC(rc->top1, (size_t)EVAL_METHODS * num_classes);
    CS_ALLOC(rc->top5, (size_t)EVAL_METHODS * num_classes);
    CS_ALLOC(rc->seg_inter, num_classes);
    CS_ALLOC(rc->seg_gt, num_classes);
    CS_ALLOC(rc->seg_pred, num_classes);
    return 0;
}

int region_counts_reduce(RegionCounts *rc, MPI_Comm comm) {
    int rank, size, K = rc->num_classes;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    MPI_Allreduce(MPI_IN_PLACE, rc->count, K, MPI_LONG, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, rc->top1, EVAL_METHODS * K, MPI_LONG, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, rc->top5, EVAL_METHODS * K, MPI_LONG, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, &rc->vanished, 1, MPI_LONG, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, rc->seg_inter, K, MPI_LONG, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, rc->seg_gt, K, MPI_LONG, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, rc->seg_pred, K, MPI_LONG, MPI_SUM, comm);
    /* every region's record on rank 0, in image order (for intervals by resampling images) */
    int bytes = (int)(rc->num_regions * (long)sizeof(RegionRec)), *cnt = NULL, *dsp = NULL;
    int ok = 1;
    if (rank == 0) {
        cnt = calloc((size_t)size, sizeof(int)), dsp = calloc((size_t)size, sizeof(int));
        ok = cnt && dsp;
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
    if (!ok) {
        free(cnt), free(dsp);
        CS_FAIL("out of memory");
    }
    MPI_Gather(&bytes, 1, MPI_INT, cnt, 1, MPI_INT, 0, comm);
    RegionRec *all = NULL;
    long total = 0;
    if (rank == 0) {
        for (int r = 0; r < size; r++) dsp[r] = (int)total, total += cnt[r];
        all = malloc(total ? (size_t)total : 1);
        ok = all != NULL;
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
    if (!ok) {
        free(cnt), free(dsp);
        CS_FAIL("out of memory for %ld region records", total / (long)sizeof(RegionRec));
    }
    MPI_Gatherv(rc->regions, bytes, MPI_BYTE, all, cnt, dsp, MPI_BYTE, 0, comm);
    if (rank == 0) {
        free(rc->regions);
        rc->regions = all;
        rc->num_regions = rc->cap_regions = total / (long)sizeof(RegionRec);
        region_recs_sort(rc->regions, rc->num_regions);
    }
    free(cnt), free(dsp);
    return 0;
}

void region_counts_free(RegionCounts *rc) {
    free(rc->count), free(rc->top1), free(rc->top5);
    free(rc->seg_inter), free(rc->seg_gt), free(rc->seg_pred), free(rc->regions);
    memset(rc, 0, sizeof *rc);
}

int regioneval_init(RegionEval *re, Vit *model, const ClassEmbeddings *classes,
                    const CocoCategories *cats, int det, int crop, int batch) {
    memset(re, 0, sizeof *re);
    const VitConfig *c = &model->cfg;
    CS_CHECK(det % c->patch == 0 && crop % c->patch == 0, "det size %d and crop size %d must be "
             "multiples of the patch %d", det, crop, c->patch);
    CS_CHECK(classes->embed == c->embed, "class embeddings have %d dimensions, the model %d",
             classes->embed, c->embed);
    CS_CHECK(classes->num >= 5, "top-5 accuracy needs at least 5 classes, there are %d",
             classes->num);
    re->model = model, re->classes = classes, re->cats = cats;
    re->det = det, re->crop = crop, re->batch = batch > 0 ? batch : 1;
    re->max_segments = MAX_SEGMENTS;
    int g = det / c->patch, N = g * g, E = c->embed;
    CS_ALLOC(re->full, (size_t)3 * det * det);
    CS_ALLOC(re->crops, (size_t)re->batch * 3 * crop * crop);
    CS_ALLOC(re->dense, (size_t)N * E);
    CS_ALLOC(re->feat, (size_t)MAX_SEGMENTS * E);
    CS_ALLOC(re->norm, MAX_SEGMENTS);
    CS_ALLOC(re->boxes, (size_t)MAX_SEGMENTS * 5);
    CS_ALLOC(re->masks, (size_t)MAX_SEGMENTS * N);
    CS_ALLOC(re->mask_grid, N);
    CS_ALLOC(re->logits, classes->num);
    CS_ALLOC(re->tok_logits, (size_t)N * classes->num);
    CS_ALLOC(re->crop_box, MAX_SEGMENTS);
    return 0;
}

void regioneval_free(RegionEval *re) {
    free(re->full), free(re->crops), free(re->dense), free(re->feat), free(re->norm);
    free(re->boxes), free(re->masks), free(re->mask_full), free(re->mask_grid), free(re->logits), free(re->crop_box);
    free(re->tok_logits);
    image_work_free(&re->ws);
    memset(re, 0, sizeof *re);
}

static int cmp_rec(const void *a, const void *b) {
    const RegionRec *x = a, *y = b;
    if (x->image_id != y->image_id) return x->image_id < y->image_id ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

void region_recs_sort(RegionRec *recs, long n) {
    if (n > 1) qsort(recs, (size_t)n, sizeof *recs, cmp_rec);
}

int region_rank(const float *logits, int K, int y) {
    int rank = 0;
    for (int k = 0; k < K; k++) rank += k != y && !(logits[k] < logits[y]);
    return rank;
}

/* Classify feat (R, E) (normalised) and add to the tallies of method. */
static void classify(RegionEval *re, RegionCounts *rc, int method, int R, const int *labels,
                     RegionRec *recs) {
    const ClassEmbeddings *ce = re->classes;
    int K = ce->num;
    float *logits = re->logits;
    for (int r = 0; r < R; r++) {
        const float *f = re->feat + (size_t)r * ce->embed;
        for (int k = 0; k < K; k++) {
            const float *e = ce->emb + (size_t)k * ce->embed;
            float s = 0.0f;
            for (int j = 0; j < ce->embed; j++) s += f[j] * e[j];
            logits[k] = s;
        }
        int y = labels[r], above = region_rank(logits, K, y);
        rc->top1[(size_t)method * K + y] += above == 0;
        rc->top5[(size_t)method * K + y] += above < 5;
        recs[r].hit1 |= (uint8_t)((above == 0) << method);
        recs[r].hit5 |= (uint8_t)((above < 5) << method);
    }
}

int regioneval_image(RegionEval *re, RegionCounts *rc, const Image *im, const uint32_t *ids,
                     const CocoPanopticImage *pi, int *used) {
    Vit *m = re->model;
    const VitConfig *c = &m->cfg;
    int W = im->w, H = im->h, g = re->det / c->patch, N = g * g, E = c->embed;
    CS_CHECK(W == pi->width && H == pi->height, "image %s is %dx%d, its annotation says %dx%d",
             pi->file_name, W, H, pi->width, pi->height);
    /* the student's dense map of the full image */
    CS_TRY(preprocess_full(re->full, im, re->det, &re->ws));
    CS_TRY(vit_prepare(m, VIT_DENSE, 1, re->det, re->det, 0));
    vit_forward(m, re->full);
    memcpy(re->dense, m->acts.out, (size_t)N * E * sizeof(float));
    double scale = geom_fit_scale(re->det, W, H);
    /* the mask grid: ResizeLongest(det / patch) of the full-size mask, padded right/bottom */
    double ms = geom_fit_scale(g, W, H);
    int mh = (int)geom_round_half_even(H * ms), mw = (int)geom_round_half_even(W * ms);
    if ((size_t)W * H > re->mask_cap) {
        free(re->mask_full);
        re->mask_cap = 0;
        CS_ALLOC(re->mask_full, (size_t)W * H);
        re->mask_cap = (size_t)W * H;
    }
    int R = 0, labels[MAX_SEGMENTS];
    for (int s = 0; s < pi->num_segments && s < re->max_segments; s++) {
        const CocoSegment *sg = &pi->segments[s];
        int thing = re->cats->cats[sg->category].isthing;
        double x, y, w, h, cb[4];
        int x0 = W, y0 = H, x1 = -1, y1 = -1;
        for (int py = 0; py < H; py++)
            for (int px = 0; px < W; px++) {
                int in = ids[(size_t)py * W + px] == sg->id;
                re->mask_full[(size_t)py * W + px] = (float)in;
                if (in) {
                    x0 = px < x0 ? px : x0, x1 = px > x1 ? px : x1;
                    y0 = py < y0 ? py : y0, y1 = py > y1 ? py : y1;
                }
            }
        if (thing) {
            x = sg->bbox[0], y = sg->bbox[1], w = sg->bbox[2], h = sg->bbox[3];
            crop_thing_box(cb, x, y, w, h, W, H);
        } else {
            if (x1 < 0) continue; /* the segment has no pixel in the PNG: nothing to box */
            x = x0, y = y0, w = x1 - x0, h = y1 - y0;
            cb[0] = x0, cb[1] = y0, cb[2] = x1, cb[3] = y1;
        }
        if (w * h < 8.0 * 8.0 || w * h > 1024.0 * 1024.0) continue;
        /* region box in token-grid coordinates, in the reference's float32 order */
        float bx[4] = {(float)x, (float)y, (float)(x + w), (float)(y + h)};
        float *b = re->boxes + (size_t)R * 5;
        b[0] = 0.0f;
        geom_token_box(b + 1, bx, scale, re->det, g);
        for (int q = 0; q < 4; q++) re->crop_box[R][q] = cb[q];
        /* mask on the token grid: bicubic to (mh, mw), zero padding, > 0 */
        bicubic_resize(re->mask_grid, re->mask_full, H, W, mh, mw, 1);
        float *mk = re->masks + (size_t)R * N;
        int on = 0;
        for (int gy = 0; gy < g; gy++)
            for (int gx = 0; gx < g; gx++)
                on += (mk[gy * g + gx] = gy < mh && gx < mw && re->mask_grid[gy * mw + gx] > 0.0f);
        rc->vanished += on == 0;
        labels[R] = sg->category;
        R++;
    }
    *used = R;
    if (R == 0) return 0;
    for (int r = 0; r < R; r++) rc->count[labels[r]]++;
    if (rc->num_regions + R > rc->cap_regions) {
        long cap = rc->cap_regions ? 2 * rc->cap_regions : 1024;
        while (cap < rc->num_regions + R) cap *= 2;
        RegionRec *grown = realloc(rc->regions, (size_t)cap * sizeof *grown);
        CS_CHECK(grown, "out of memory for %ld region records", cap);
        rc->regions = grown, rc->cap_regions = cap;
    }
    RegionRec *recs = rc->regions + rc->num_regions;
    for (int r = 0; r < R; r++)
        recs[r] = (RegionRec){.image_id = pi->id, .category = labels[r], .seq = (uint8_t)r};
    rc->num_regions += R;
    /* rois */
    roi_align_forward(re->feat, re->dense, re->boxes, R, 1, g, g, E, 1, 1, 1.0f, -1);
    l2norm_forward(re->feat, re->norm, re->feat, R, E);
    classify(re, rc, EVAL_ROIS, R, labels, recs);
    /* maskpool */
    int zeros[MAX_SEGMENTS] = {0};
    maskpool_forward(re->feat, re->dense, re->masks, zeros, R, 1, N, E);
    l2norm_forward(re->feat, re->norm, re->feat, R, E);
    classify(re, rc, EVAL_MASKPOOL, R, labels, recs);
    /* crops, batched through the same model's image embedding */
    int cs = re->crop;
    for (int r0 = 0; r0 < R; r0 += re->batch) {
        int nb = R - r0 < re->batch ? R - r0 : re->batch;
        for (int k = 0; k < nb; k++)
            CS_TRY(preprocess_crop(re->crops + (size_t)k * 3 * cs * cs, im, re->crop_box[r0 + k],
                                   cs, &re->ws));
        CS_TRY(vit_prepare(m, VIT_IMAGE, nb, cs, cs, 0));
        vit_forward(m, re->crops);
        memcpy(re->feat + (size_t)r0 * E, m->acts.out, (size_t)nb * E * sizeof(float));
    }
    l2norm_forward(re->feat, re->norm, re->feat, R, E);
    classify(re, rc, EVAL_CROPS, R, labels, recs);
    return 0;
}

/* The two source indices and the weight of the second along one axis: PyTorch's bilinear rule
 * (align_corners=False) for output pixel i at source position (i + 0.5) * step - 0.5. */
static void lerp_axis(int i, double step, int n, int *a, int *b, float *w) {
    double src = (i + 0.5) * step - 0.5;
    if (src < 0) src = 0;
    int i0 = (int)src;
    if (i0 > n - 1) i0 = n - 1;
    *a = i0;
    *b = i0 + 1 < n ? i0 + 1 : n - 1;
    *w = (float)(src - i0);
    if (*b == *a) *w = 0.0f;
}

int regioneval_segment(RegionEval *re, RegionCounts *rc, const uint32_t *ids,
                       const CocoPanopticImage *pi) {
    const ClassEmbeddings *ce = re->classes;
    const VitConfig *c = &re->model->cfg;
    int K = ce->num, E = c->embed, g = re->det / c->patch, N = g * g;
    int W = pi->width, H = pi->height;
    /* tok_logits (N, K) = dense (N, E) . emb^T (K, E) */
    gemm(0, 1, N, K, E, 1.0f, re->dense, E, ce->emb, E, 0.0f, re->tok_logits, K, 0);
    double step = geom_fit_scale(re->det, W, H) / (double)c->patch;
    int *xa = malloc((size_t)W * sizeof(int)), *xb = malloc((size_t)W * sizeof(int));
    float *xw = malloc((size_t)W * sizeof(float));
    CS_CHECK(xa && xb && xw, "out of memory for %d columns", W);
    for (int x = 0; x < W; x++) lerp_axis(x, step, g, &xa[x], &xb[x], &xw[x]);
    int T = cs_num_threads();
    long *tally = calloc((size_t)T * 3 * K, sizeof(long)); /* per thread: inter, gt, pred */
    if (!tally) {
        free(xa), free(xb), free(xw);
        CS_FAIL("out of memory for the segmentation tallies (%d threads x %d classes)", T, K);
    }
#pragma omp parallel for schedule(static) num_threads(T)
    for (int y = 0; y < H; y++) {
        int th = omp_get_thread_num();
        long *inter = tally + (size_t)th * 3 * K, *gt = inter + K, *pred = gt + K;
        int ya, yb;
        float wy;
        lerp_axis(y, step, g, &ya, &yb, &wy);
        uint32_t last_id = 0;
        int last_truth = -1;
        for (int x = 0; x < W; x++) {
            uint32_t id = ids[(size_t)y * W + x];
            if (id != last_id) { /* neighbours mostly share a segment: look up on a change */
                last_id = id, last_truth = -1;
                for (int s = 0; s < pi->num_segments && id; s++)
                    if (pi->segments[s].id == id) {
                        last_truth = pi->segments[s].iscrowd ? -1 : pi->segments[s].category;
                        break;
                    }
            }
            int truth = id ? last_truth : -1;
            if (truth < 0) continue; /* void or crowd: not scored */
            const float *t00 = re->tok_logits + ((size_t)ya * g + xa[x]) * K;
            const float *t01 = re->tok_logits + ((size_t)ya * g + xb[x]) * K;
            const float *t10 = re->tok_logits + ((size_t)yb * g + xa[x]) * K;
            const float *t11 = re->tok_logits + ((size_t)yb * g + xb[x]) * K;
            float wx = xw[x];
            int best = 0;
            float best_v = 0.0f;
            for (int k = 0; k < K; k++) {
                float top = t00[k] + wx * (t01[k] - t00[k]);
                float bot = t10[k] + wx * (t11[k] - t10[k]);
                float v = top + wy * (bot - top);
                if (k == 0 || v > best_v) best = k, best_v = v; /* ties: the lowest index */
            }
            gt[truth]++, pred[best]++;
            inter[best] += best == truth;
        }
    }
    for (int th = 0; th < T; th++)
        for (int k = 0; k < K; k++) {
            const long *t = tally + (size_t)th * 3 * K;
            rc->seg_inter[k] += t[k], rc->seg_gt[k] += t[K + k], rc->seg_pred[k] += t[2 * K + k];
        }
    free(tally);
    free(xa), free(xb), free(xw);
    return 0;
}

void region_miou(const RegionCounts *rc, const CocoCategories *cats, double *all, double *thing,
                 double *stuff) {
    double sum[3] = {0}, n[3] = {0};
    for (int k = 0; k < rc->num_classes; k++) {
        long uni = rc->seg_gt[k] + rc->seg_pred[k] - rc->seg_inter[k];
        if (uni <= 0) continue;
        double iou = (double)rc->seg_inter[k] / (double)uni;
        int kind = cats->cats[k].isthing ? 1 : 2;
        sum[0] += iou, n[0]++;
        sum[kind] += iou, n[kind]++;
    }
    *all = n[0] ? sum[0] / n[0] : NAN;
    *thing = n[1] ? sum[1] / n[1] : NAN;
    *stuff = n[2] ? sum[2] / n[2] : NAN;
}

void region_macc(const RegionCounts *rc, const CocoCategories *cats,
                 double macc[EVAL_METHODS][2][2]) {
    int K = rc->num_classes;
    for (int mth = 0; mth < EVAL_METHODS; mth++)
        for (int st = 0; st < 2; st++)
            for (int t = 0; t < 2; t++) {
                const long *hits = (t ? rc->top5 : rc->top1) + (size_t)mth * K;
                double sum = 0.0;
                int n = 0;
                for (int k = 0; k < K; k++) {
                    if (rc->count[k] == 0 || (cats->cats[k].isthing ? 0 : 1) != st) continue;
                    /* float32 mean, then .half().item() as the reference does */
                    float acc = (float)hits[k] / (float)rc->count[k];
                    sum += (double)(float)(_Float16)acc;
                    n++;
                }
                macc[mth][st][t] = n ? sum / n : NAN;
            }
}
