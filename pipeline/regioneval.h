/* regioneval.h: CLIPSelf's region-recognition evaluation on COCO panoptic (the reference's
 * zero_shot.py): for each annotated segment of an image (the first 100), a region feature is
 * classified by cosine against the class embeddings, three ways:
 *   rois      RoIAlign (1x1) of the segment's box on the model's v2 dense map
 *   crops     the model's image embedding of the (enlarged, for things) box cropped out
 *   maskpool  the dense map averaged under the segment's mask resized to the token grid
 * Boxes: a thing's is its bbox, its crop the bbox enlarged 1.5x about the centre and clipped;
 * a stuff's is the tight box of its mask (max index inclusive, so w = x1 - x0), crop the same.
 * Segments with w*h < 8^2 or > 1024^2 are skipped. Metric: mean over classes with samples of
 * per-class Top-1 / Top-5 accuracy, things and stuff apart. */
#ifndef CLIPSELF_REGIONEVAL_H
#define CLIPSELF_REGIONEVAL_H

#include <stdint.h>

#include "classes.h"
#include "coco.h"
#include "image.h"
#include "vit.h"

enum { EVAL_ROIS, EVAL_CROPS, EVAL_MASKPOOL, EVAL_METHODS };
extern const char *const eval_method_names[EVAL_METHODS];

/* Per-class tallies, summable across ranks. */
typedef struct {
    int num_classes;
    long *count;  /* (K) samples per class */
    long *top1;   /* (EVAL_METHODS, K) */
    long *top5;   /* (EVAL_METHODS, K) */
    long vanished; /* segments whose mask has no token on the grid (maskpool feature all 0) */
} RegionCounts;

typedef struct {
    Vit *model;
    const ClassEmbeddings *classes;
    const CocoCategories *cats;
    int det, crop, batch, max_segments;
    /* work buffers kept for the whole run */
    float *full;      /* (3, det, det) the current image's normalised full-image input */
    float *crops;     /* (batch, 3, crop, crop) */
    float *dense;     /* (N, E) copy of the dense map, N = (det/P)^2 */
    float *feat;      /* (max_segments, E) region features of one method */
    float *norm;      /* (max_segments) */
    float *boxes;     /* (max_segments, 5) */
    float *masks;     /* (max_segments, N) */
    float *mask_full; /* (H*W) one segment's mask as float, grown as needed */
    float *mask_grid; /* (gh*gw) */
    size_t mask_cap;
    float *logits;    /* (K) one region's class scores */
    double (*crop_box)[4]; /* (max_segments, 4) */
    ImageWork ws;
} RegionEval;

int region_counts_init(RegionCounts *rc, int num_classes);

/* The rank of class y among logits (K): how many OTHER classes score at least as high. Ties
 * count against y, so a region whose feature is all zeros (every class ties) is never right;
 * top-k holds when the rank is < k. (The lowest index winning ties would count a vanished
 * mask of class 0 as correct.) */
int region_rank(const float *logits, int K, int y);
void region_counts_free(RegionCounts *rc);

int regioneval_init(RegionEval *re, Vit *model, const ClassEmbeddings *classes,
                    const CocoCategories *cats, int det, int crop, int batch);
void regioneval_free(RegionEval *re);

/* Evaluate one image: im is the decoded image, ids (h, w) its panoptic segment ids. Adds to
 * counts; *used gets the number of segments evaluated. On success re->full holds the image's
 * full-image input (3, det, det) and re->dense the model's dense map of it (N, E), until the
 * next call (pictures draw from them). */
int regioneval_image(RegionEval *re, RegionCounts *counts, const Image *im, const uint32_t *ids,
                     const CocoPanopticImage *pi, int *used);

/* macc[method][thing=0/stuff=1][top1=0/top5=1], as the reference computes it (per-class
 * accuracies rounded to float16 before averaging); NaN where there are no samples. */
void region_macc(const RegionCounts *rc, const CocoCategories *cats, double macc[EVAL_METHODS][2][2]);

#endif
