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

#include <mpi.h>
#include <stdint.h>

#include "io/classes.h"
#include "io/coco.h"
#include "io/image.h"
#include "model/vit.h"

enum { EVAL_ROIS, EVAL_CROPS, EVAL_MASKPOOL, EVAL_METHODS };
extern const char *const eval_method_names[EVAL_METHODS];

/* One evaluated region: its image, class and which methods got it right (bit m of hit1 /
 * hit5 for method m), kept so that intervals can be drawn by resampling images. */
typedef struct {
    int64_t image_id;
    int32_t category; /* contiguous class index */
    uint8_t hit1, hit5;
    uint8_t seq;      /* the region's place among its image's evaluated segments */
    uint8_t pad;
} RegionRec;

/* Sort records by image id, then place: the order every rank count gives. */
void region_recs_sort(RegionRec *recs, long n);

/* Per-class tallies, summable across ranks. */
typedef struct {
    int num_classes;
    long *count;  /* (K) samples per class */
    long *top1;   /* (EVAL_METHODS, K) */
    long *top5;   /* (EVAL_METHODS, K) */
    long vanished; /* segments whose mask has no token on the grid (maskpool feature all 0) */
    /* zero-shot semantic segmentation, per class over the scored pixels (regioneval_segment) */
    long *seg_inter; /* (K) pixels predicted c whose truth is c */
    long *seg_gt;    /* (K) pixels whose truth is c */
    long *seg_pred;  /* (K) pixels predicted c */
    RegionRec *regions; /* (num_regions) every evaluated region, in evaluation order */
    long num_regions, cap_regions;
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
    float *tok_logits; /* (N, K) every token's class scores (segmentation) */
    double (*crop_box)[4]; /* (max_segments, 4) */
    ImageWork ws;
} RegionEval;

int region_counts_init(RegionCounts *rc, int num_classes);
/* Sum every rank's tallies over comm (all ranks get the sums), and gather every region record
 * on rank 0 in image order (region_recs_sort; the other ranks' lists are left as they are).
 * Collective over comm. */
int region_counts_reduce(RegionCounts *rc, MPI_Comm comm);

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

/* Zero-shot semantic segmentation of the image regioneval_image just evaluated, from its dense
 * map (re->dense): per-token class logits (cosine with the class embeddings) are upsampled
 * bilinearly to the image's pixels and the argmax is each pixel's class (ties: the lowest
 * index). The upsampling maps pixel (x, y) to the token-grid point
 *     tx = (x + 0.5) * s / P - 0.5,  ty = (y + 0.5) * s / P - 0.5,   s = det / max(W, H),
 * and interpolates the four tokens around it, clamped at the grid's edges (PyTorch's
 * align_corners=False rule, at the scale that takes the image onto the padded input). The
 * truth is the panoptic annotation read as semantic labels: a pixel of a segment is its
 * category; void pixels (no segment) and crowd segments are not scored. Adds to counts'
 * seg_* tallies. */
int regioneval_segment(RegionEval *re, RegionCounts *counts, const uint32_t *ids,
                       const CocoPanopticImage *pi);

/* mIoU over the classes with a non-empty union (truth or prediction; mmseg's rule), all, things
 * and stuff; NaN where no class qualifies. */
void region_miou(const RegionCounts *rc, const CocoCategories *cats, double *all, double *thing,
                 double *stuff);

/* macc[method][thing=0/stuff=1][top1=0/top5=1], as the reference computes it (per-class
 * accuracies rounded to float16 before averaging); NaN where there are no samples. */
void region_macc(const RegionCounts *rc, const CocoCategories *cats, double macc[EVAL_METHODS][2][2]);

#endif
