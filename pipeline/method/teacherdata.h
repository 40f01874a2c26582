/* teacherdata.h: the data of the teacher's pretraining (stages/pretrain_teacher.c): samples
 * of a COCO panoptic dataset, their crop boxes, and caption-like targets read from the
 * panoptic PNGs.
 *
 * The samples of an epoch are every annotated segment of every image as a crop (things: the
 * bbox enlarged by a random factor in [1.2, 1.8] about a centre jittered by up to 10% of the
 * box side, clipped to the image; stuff: the bbox with the same centre jitter), each whole
 * image, and random_crops random boxes per image (each side a uniform fraction in [0.15, 1]
 * of the image's, independently, at a uniform position). The jitter and the random boxes are
 * functions of (seed, epoch, sample) alone. Crops go through evaluate's transform
 * (preprocess_crop).
 *
 * A sample's target over the K categories is proportional to (visible pixels of category k
 * inside its box) x w_k, w_k = thing_weight for thing categories and 1 for stuff, normalised
 * to sum 1; the pixels are counted in the box exactly as it is cropped (corners rounded half to
 * even). A box with no labelled pixel gets an all-zero target. */
#ifndef CLIPSELF_TEACHERDATA_H
#define CLIPSELF_TEACHERDATA_H

#include <stddef.h>
#include <stdio.h>

#include "io/coco.h"
#include "io/image.h"

enum { KIND_THING, KIND_STUFF, KIND_IMAGE, KIND_RANDOM, KINDS };
extern const char *const teacher_kind_names[KINDS]; /* "things", "stuff", "images", "random" */

typedef struct {
    int image;   /* index into CocoPanoptic.images */
    int segment; /* index into its segments, or -1: the whole image or a random box */
    int k;       /* the image's random box k, or -1 */
} TeacherSample;

typedef struct {
    int image, k;
} TeacherSlot;

typedef struct {
    const CocoPanoptic *pan;
    const char *root, *png_root;
    int S, K;
    double thing_weight;
    float *imgs;    /* (batch, 3, S, S) */
    float *target;  /* (batch, K) all zero for a box without a labelled pixel */
    int *kind;      /* (batch) KIND_* */
    long *labelled; /* (batch) labelled pixels in the box */
    double *counts; /* (K) scratch */
    TeacherSlot *slots;    /* (batch) the batch in image order: each image decoded once */
    Image im;
    ImageWork ws;
    int *cat;       /* (H, W) the current image's category map */
    size_t cat_cap;
    FILE *dump;     /* --dump-targets: one row per sample loaded, or NULL */
} TeacherLoader;

/* The samples of pan (every epoch has the same ones; path names the annotations in errors). */
int teacher_samples(TeacherSample **out, int *n, const CocoPanoptic *pan, const char *path,
                    int random_crops);
/* KIND_* of a sample. */
int teacher_sample_kind(const CocoPanoptic *pan, const TeacherSample *sm);
/* A loader for batches of up to batch samples at input side S: images from root, panoptic
 * PNGs from png_root. */
int teacher_loader_init(TeacherLoader *ld, const CocoPanoptic *pan, const char *root,
                        const char *png_root, int S, int batch, double thing_weight);
void teacher_loader_free(TeacherLoader *ld);
/* Fill the batch with samples ids[0..n) of epoch: images, targets, kinds, labelled pixels
 * (each image decoded once; a row of ld->dump per sample when it is set). */
int teacher_load_batch(TeacherLoader *ld, const TeacherSample *samples, const int *ids, int n,
                       unsigned long long seed, int epoch);

#endif
