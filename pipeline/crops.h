/* crops.h: CLIPSelf's training regions: each image gets one grid layout m rows x n columns per
 * epoch, drawn uniformly from the layouts m = 1..M, n = ceil(m/2)..min(2m, M) (24 for M = 6);
 * the m*n cells tile the image, are shuffled, and at most max_boxes are kept. Draws depend on
 * (seed, image id, epoch) only, so any split of the images over ranks gives the same rows. */
#ifndef CLIPSELF_CROPS_H
#define CLIPSELF_CROPS_H

#include <stdint.h>

#define CROPS_MAX_SPLIT 32                 /* a layout's m*n cells fit in 32 * 32 */
#define CROPS_MAX_LAYOUTS 1024             /* 544 layouts at M = 32 */

typedef struct {
    int32_t image;  /* index into the image table */
    int32_t epoch;
    int32_t m, n;   /* layout: rows, columns */
    float box[4];   /* x0, y0, x1, y1 in original pixels (float, as the reference computes) */
} CropRow;

/* The layouts for max_split M, in the reference's order; returns their count. */
int crop_layouts(int layouts[][2], int max_split);

/* The rows of one image for one epoch: writes at most max_boxes rows to out, returns the
 * count. w, h: image size in pixels. */
int crops_for_image(CropRow *out, int32_t image, int64_t image_id, int w, int h, int epoch,
                    uint64_t seed, int max_split, int max_boxes);

/* torch.linspace(0, 1, steps)[i] in float32, as the reference builds its cell edges. */
float linspace01(int i, int steps);

#endif
