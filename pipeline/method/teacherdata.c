/* teacherdata.c: the samples, targets and batches of the teacher's pretraining (see the
 * header). */
#include "method/teacherdata.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "base/geometry.h"
#include "base/rng.h"

#define MIN_SIDE 2 /* px: a thinner box could round to an empty crop */

/* ---- samples --------------------------------------------------------------------------------- */

const char *const teacher_kind_names[KINDS] = {"things", "stuff", "images", "random"};

/* Uniform in [0, 1): draw j of a sample's jitter in an epoch, a function of its key alone. */
static double jitter(unsigned long long seed, int epoch, int sample, int j) {
    uint64_t k = rng_mix64(rng_mix64(seed + 0x9E3779B97F4A7C15ULL) + (uint64_t)epoch);
    k = rng_mix64(k + (uint64_t)sample);
    return (double)(rng_mix64(k + 0x9E3779B97F4A7C15ULL * (uint64_t)(j + 1)) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, 1): draw j of random box k of image in an epoch. */
static double box_draw(unsigned long long seed, int epoch, int image, int k, int j) {
    uint64_t z = rng_mix64(rng_mix64(seed ^ 0xB0C5B0C5B0C5ULL) + (uint64_t)epoch);
    z = rng_mix64(rng_mix64(z + (uint64_t)image) + (uint64_t)k);
    return (double)(rng_mix64(z + 0x9E3779B97F4A7C15ULL * (uint64_t)(j + 1)) >> 11) * 0x1.0p-53;
}

/* Every segment with a box of at least 8x8 px of area (evaluate's rule) and MIN_SIDE px a side,
 * then the whole image and its random boxes (if it has a segment; random boxes only if their
 * smallest side, 15% of the image's, is MIN_SIDE px). A box outside its image (by more than a
 * pixel of rounding) is an error: its crop would be empty or another region. */
int teacher_samples(TeacherSample **out, int *n, const CocoPanoptic *pan, const char *path,
                    int random_crops) {
    *n = 0;
    CS_ALLOC(*out, (size_t)pan->num_segments + (size_t)pan->num_images * (1 + random_crops) + 1);
    for (int i = 0; i < pan->num_images; i++) {
        const CocoPanopticImage *pi = &pan->images[i];
        for (int s = 0; s < pi->num_segments; s++) {
            const double *b = pi->segments[s].bbox;
            CS_CHECK(b[0] >= -1.0 && b[1] >= -1.0 && b[0] + b[2] <= pi->width + 1.0 &&
                         b[1] + b[3] <= pi->height + 1.0,
                     "%s: image %s, segment %u: bbox [%g, %g, %g, %g] is outside the %dx%d image",
                     path, pi->file_name, pi->segments[s].id, b[0], b[1], b[2], b[3], pi->width,
                     pi->height);
            if (b[2] * b[3] >= 64.0 && b[2] >= MIN_SIDE && b[3] >= MIN_SIDE)
                (*out)[(*n)++] = (TeacherSample){i, s, -1};
        }
        if (pi->num_segments > 0) {
            (*out)[(*n)++] = (TeacherSample){i, -1, -1};
            if (0.15 * pi->width >= MIN_SIDE && 0.15 * pi->height >= MIN_SIDE)
                for (int k = 0; k < random_crops; k++) (*out)[(*n)++] = (TeacherSample){i, -1, k};
        }
    }
    return 0;
}

/* The crop box (x0, y0, x1, y1) of sample id in an epoch, in the pixels of an image W x H. */
static void sample_box(double box[4], const TeacherSample *sm, const CocoSegment *sg, int thing, int W,
                       int H, unsigned long long seed, int epoch, int id) {
    if (sm->k >= 0) { /* random box: sides uniform in [0.15, 1] of the image's, uniform place */
        double fw = 0.15 + 0.85 * box_draw(seed, epoch, sm->image, sm->k, 0);
        double fh = 0.15 + 0.85 * box_draw(seed, epoch, sm->image, sm->k, 1);
        double w = fw * W, h = fh * H;
        box[0] = (W - w) * box_draw(seed, epoch, sm->image, sm->k, 2);
        box[1] = (H - h) * box_draw(seed, epoch, sm->image, sm->k, 3);
        box[2] = box[0] + w, box[3] = box[1] + h;
        return;
    }
    if (!sg) {
        box[0] = 0, box[1] = 0, box[2] = W, box[3] = H;
        return;
    }
    double x = sg->bbox[0], y = sg->bbox[1], w = sg->bbox[2], h = sg->bbox[3];
    double f = thing ? 1.2 + 0.6 * jitter(seed, epoch, id, 0) : 1.0;
    double cx = x + 0.5 * w + 0.1 * w * (2.0 * jitter(seed, epoch, id, 1) - 1.0);
    double cy = y + 0.5 * h + 0.1 * h * (2.0 * jitter(seed, epoch, id, 2) - 1.0);
    box[0] = fmax(cx - 0.5 * f * w, 0.0), box[1] = fmax(cy - 0.5 * f * h, 0.0);
    box[2] = fmin(cx + 0.5 * f * w, (double)W), box[3] = fmin(cy + 0.5 * f * h, (double)H);
}

int teacher_sample_kind(const CocoPanoptic *pan, const TeacherSample *sm) {
    if (sm->k >= 0) return KIND_RANDOM;
    if (sm->segment < 0) return KIND_IMAGE;
    const CocoSegment *sg = &pan->images[sm->image].segments[sm->segment];
    return pan->categories.cats[sg->category].isthing ? KIND_THING : KIND_STUFF;
}

static int cmp_slot(const void *a, const void *b) {
    const TeacherSlot *x = a, *y = b;
    return x->image != y->image ? (x->image > y->image) - (x->image < y->image)
                                : (x->k > y->k) - (x->k < y->k);
}

/* ---- targets --------------------------------------------------------------------------------- */

/* Python's round() (half to even) of a box corner, clipped to [0, hi]: image_crop's rounding. */
static int round_corner(double x, int hi) {
    double f = geom_round_half_even(x);
    return f < 0.0 ? 0 : f > hi ? hi : (int)f;
}

/* The caption-like target (K) of a box over a category map cat (H, W) (a category index per
 * pixel, -1 unlabelled): t_k proportional to the pixels of category k in the box's pixels
 * [x0, x1) x [y0, y1) (corners rounded half to even, as the crop) times thing_weight for a
 * thing category and 1 for stuff, summing to 1. counts (K) is scratch. Returns the labelled
 * pixels in the box; with none, t is all zero. */
static long box_target(float *t, double *counts, const int *cat, int W, int H,
                       const double box[4], const CocoCategories *cats, double thing_weight) {
    int K = cats->num, x0 = round_corner(box[0], W), y0 = round_corner(box[1], H);
    int x1 = round_corner(box[2], W), y1 = round_corner(box[3], H);
    long n = 0;
    memset(counts, 0, (size_t)K * sizeof(double));
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) {
            int c = cat[(size_t)y * W + x];
            if (c >= 0) counts[c] += 1.0, n++;
        }
    double sum = 0.0;
    for (int k = 0; k < K; k++) sum += counts[k] *= cats->cats[k].isthing ? thing_weight : 1.0;
    for (int k = 0; k < K; k++) t[k] = n > 0 ? (float)(counts[k] / sum) : 0.0f;
    return n;
}

/* The category map (H, W) of an image from its panoptic PNG: each pixel's segment id looked up
 * in the annotation's segments (an id it does not list, such as 0, is unlabelled: -1). */
static int read_category_map(int **cat, size_t *cap, const char *png_root,
                             const CocoPanopticImage *pi) {
    char path[4096];
    CS_TRY(coco_image_path(path, sizeof path, png_root, pi->png_name));
    uint32_t *ids = NULL;
    int w, h;
    CS_TRY(image_read_panoptic_png(&ids, &w, &h, path));
    if (w != pi->width || h != pi->height) {
        free(ids);
        CS_FAIL("%s is %dx%d, its annotation says %dx%d", path, w, h, pi->width, pi->height);
    }
    size_t n = (size_t)w * h;
    if (n > *cap) {
        int *grown = realloc(*cat, n * sizeof(int));
        if (!grown) {
            free(ids);
            CS_FAIL("out of memory for the %dx%d category map of %s", w, h, path);
        }
        *cat = grown, *cap = n;
    }
    uint32_t last_id = 0;
    int last = -1, found = 0; /* runs of a segment are long: remember the last lookup */
    for (size_t i = 0; i < n; i++) {
        if (!found || ids[i] != last_id) {
            last_id = ids[i], last = -1, found = 1;
            for (int s = 0; s < pi->num_segments; s++)
                if (pi->segments[s].id == last_id) {
                    last = pi->segments[s].category;
                    break;
                }
        }
        (*cat)[i] = last;
    }
    free(ids);
    return 0;
}


int teacher_load_batch(TeacherLoader *ld, const TeacherSample *samples, const int *ids, int n,
                       unsigned long long seed, int epoch) {
    const CocoPanoptic *pan = ld->pan;
    int S = ld->S, K = ld->K, current = -1;
    for (int k = 0; k < n; k++) ld->slots[k] = (TeacherSlot){samples[ids[k]].image, k};
    qsort(ld->slots, (size_t)n, sizeof *ld->slots, cmp_slot);
    for (int j = 0; j < n; j++) {
        int k = ld->slots[j].k;
        const TeacherSample *sm = &samples[ids[k]];
        const CocoPanopticImage *pi = &pan->images[sm->image];
        if (sm->image != current) {
            char path[4096];
            CS_TRY(coco_image_path(path, sizeof path, ld->root, pi->file_name));
            CS_TRY(image_read_jpeg(&ld->im, path));
            CS_CHECK(ld->im.w == pi->width && ld->im.h == pi->height, "%s is %dx%d, its "
                     "annotation says %dx%d", path, ld->im.w, ld->im.h, pi->width, pi->height);
            CS_TRY(read_category_map(&ld->cat, &ld->cat_cap, ld->png_root, pi));
            current = sm->image;
        }
        const CocoSegment *sg = sm->segment >= 0 ? &pi->segments[sm->segment] : NULL;
        int kind = teacher_sample_kind(pan, sm);
        double box[4];
        sample_box(box, sm, sg, kind == KIND_THING, pi->width, pi->height, seed, epoch, ids[k]);
        if (preprocess_crop(ld->imgs + (size_t)k * 3 * S * S, &ld->im, box, S, &ld->ws) != 0)
            return cs_error_context("image %s, %s box [%g, %g, %g, %g]", pi->file_name,
                                    teacher_kind_names[kind], box[0], box[1], box[2], box[3]);
        float *t = ld->target + (size_t)k * K; /* (K) */
        ld->kind[k] = kind;
        ld->labelled[k] = box_target(t, ld->counts, ld->cat, pi->width, pi->height, box,
                                     &pan->categories, ld->thing_weight);
        if (ld->dump) {
            fprintf(ld->dump, "%d,%d,%s,%s,%s,%.17g,%.17g,%.17g,%.17g,%ld", epoch, ids[k],
                    teacher_kind_names[kind], pi->file_name, pi->png_name, box[0], box[1], box[2],
                    box[3], ld->labelled[k]);
            for (int c = 0; c < K; c++) fprintf(ld->dump, ",%.9g", (double)t[c]);
            fputc('\n', ld->dump);
        }
    }
    return 0;
}

int teacher_loader_init(TeacherLoader *ld, const CocoPanoptic *pan, const char *root,
                        const char *png_root, int S, int batch, double thing_weight) {
    int K = pan->categories.num;
    *ld = (TeacherLoader){.pan = pan, .root = root, .png_root = png_root, .S = S, .K = K,
                          .thing_weight = thing_weight};
    ld->imgs = malloc((size_t)batch * 3 * S * S * sizeof(float));
    ld->target = malloc((size_t)batch * K * sizeof(float));
    ld->kind = malloc((size_t)batch * sizeof(int));
    ld->labelled = malloc((size_t)batch * sizeof(long));
    ld->counts = malloc((size_t)K * sizeof(double));
    ld->slots = malloc((size_t)batch * sizeof(TeacherSlot));
    if (!ld->imgs || !ld->target || !ld->kind || !ld->labelled || !ld->counts || !ld->slots) {
        teacher_loader_free(ld);
        CS_FAIL("out of memory for a batch of %d at %dx%d", batch, S, S);
    }
    return 0;
}

void teacher_loader_free(TeacherLoader *ld) {
    free(ld->imgs), free(ld->target), free(ld->kind), free(ld->labelled), free(ld->counts);
    free(ld->slots), free(ld->cat);
    image_free(&ld->im);
    image_work_free(&ld->ws);
    memset(ld, 0, sizeof *ld);
}
