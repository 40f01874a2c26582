/* synth.h: a small deterministic COCO-format "world" to train and evaluate CLIPSelf on when no
 * real images can be downloaded.
 *
 * Each image is 1-3 stuff regions (sky, grass, water, brick, sand, road, wall) split by straight
 * or wavy boundaries, with 1-6 thing objects on top (ten shapes, each with its own colour family
 * and usual texture), later objects occluding earlier ones, plus unannotated clutter (tiny blobs
 * and pixel noise). Every pixel belongs to exactly one annotated segment. An image is a function
 * of (seed, split, index within the split) alone, so any split of the work over ranks writes the
 * same bytes, and the val images do not change with the number of train images.
 *
 * A dataset folder DIR holds
 *   images/NNNNNNNNNNNN.jpg     every train and val image (JPEG quality 90, 4:2:0)
 *   instances_train.json       COCO instances of the train images (things only; segmentation
 *                              is the visible mask as compressed RLE, iscrowd 0)
 *   panoptic_val.json          COCO panoptic annotations of the val images
 *   panoptic_val/NNNNNNNNNNNN.png  segment id = R + 256 G + 65536 B per pixel
 *   panoptic_train.json, panoptic_train/  the same for the train images (things and stuff:
 *                              what pretrain_teacher learns the categories from)
 *   categories.json            the panoptic categories list alone (things and stuff)
 * NNNNNNNNNNNN is the image id on 12 digits: train index k has id k + 1, val index k has id
 * SYNTH_VAL_ID_BASE + k + 1. Boxes are [x, y, w, h] of the visible mask with w = x1 - x0 + 1
 * (whole pixels, as pycocotools' toBbox); areas are visible pixel counts. Every file is written
 * to "<name>.tmp.<pid>" and renamed into place. */
#ifndef CLIPSELF_SYNTH_H
#define CLIPSELF_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "base/progress.h"

enum { SYNTH_TRAIN = 0, SYNTH_VAL = 1 };

#define SYNTH_VAL_ID_BASE 10000000 /* val image ids start above it; at most this many per split */
#define SYNTH_MAX_THINGS 6
#define SYNTH_MAX_STUFF 3
#define SYNTH_MAX_SEGMENTS (SYNTH_MAX_THINGS + SYNTH_MAX_STUFF)
#define SYNTH_MIN_THING_AREA 64 /* visible pixels; smaller or mostly hidden objects are removed */

typedef struct {
    int train, val;         /* images per split */
    int seed;
    int min_size, max_size; /* each side of an image is drawn in [min_size, max_size] px */
} SynthConfig;

typedef struct {
    int id;
    const char *name;          /* a plain word, for text prompts */
    const char *supercategory; /* "shape" for things, "background" for stuff */
    int isthing;
    unsigned char color[3];    /* panoptic display colour; also the stuff segment id */
} SynthCategory;

/* Things first (ids 1..10), then stuff (ids from 100, not contiguous). */
extern const SynthCategory synth_categories[];
extern const int synth_num_categories;
/* The category with this id, or NULL. */
const SynthCategory *synth_category(int id);

/* One annotated segment of an image. */
typedef struct {
    int32_t id;          /* panoptic segment id, unique and non-zero within its image */
    int32_t category_id;
    int32_t bbox[4];     /* x, y, w, h of the visible mask */
    int32_t area;        /* visible pixels */
    int32_t rle_len;     /* chars of its COCO RLE string (train things; 0 otherwise) */
} SynthSegment;

/* The fixed-size annotation record of one image: what the ranks send to rank 0. */
typedef struct {
    int32_t split, index;        /* SYNTH_TRAIN | SYNTH_VAL, index within the split */
    int32_t image_id, width, height;
    int32_t nseg;                /* stuff segments first, then things bottom to top */
    SynthSegment seg[SYNTH_MAX_SEGMENTS];
} SynthRecord;

/* Records in the order they were made, and the RLE strings of their segments concatenated in
 * the same order (record by record, segment by segment, no terminators). */
typedef struct {
    SynthRecord *rec;
    int n, cap;
    char *rle;
    size_t rle_len, rle_cap;
} SynthRecords;

/* One rendered image. */
typedef struct {
    int width, height;
    unsigned char *rgb; /* (height, width, 3) */
    int32_t *ids;       /* (height, width) panoptic segment id of each pixel */
    SynthRecord rec;
    char *rle;          /* the RLE strings of rec's segments, concatenated */
    size_t rle_len;
} SynthImage;

/* Check a config's ranges; the message names the bad field. */
int synth_config_check(const SynthConfig *c);
int synth_image_id(int split, int index);

/* Render image `index` of `split`: pixels, segment ids and its record (RLE strings for train
 * images). Allocates the buffers of im; free them with synth_image_free. */
int synth_render(SynthImage *im, const SynthConfig *c, int split, int index);
void synth_image_free(SynthImage *im);

/* Create DIR, DIR/images and DIR/panoptic_val (existing ones are fine). */
int synth_prepare_dirs(const char *out);

/* Render and write the image files of every dataset image i (train 0..train-1, then val) with
 * i % nranks == rank, appending their records to r. p (may be NULL) is updated with the
 * estimated images done over all ranks. */
int synth_generate(const SynthConfig *c, const char *out, int rank, int nranks, SynthRecords *r,
                   Progress *p);

/* Append a record and its RLE strings (rle_len chars in all). */
int synth_records_push(SynthRecords *r, const SynthRecord *rec, const char *rle, size_t rle_len);
void synth_records_free(SynthRecords *r);

/* Write DIR/instances_train.json, DIR/panoptic_val.json and DIR/categories.json from the
 * records of every image (any order; they are sorted by split and index here). */
int synth_write_annotations(const SynthConfig *c, const char *out, const SynthRecords *all);

#endif
