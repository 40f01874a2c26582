/* crops.h: CLIPSelf's training regions: each image gets one grid layout m rows x n columns per
 * epoch, drawn uniformly from the layouts m = 1..M, n = ceil(m/2)..min(2m, M) (24 for M = 6);
 * the m*n cells tile the image, are shuffled, and at most max_boxes are kept. Draws depend on
 * (seed, image id, epoch) only, so any split of the images over ranks gives the same rows. */
#ifndef CLIPSELF_CROPS_H
#define CLIPSELF_CROPS_H

#include <stdint.h>

#include "io/cropfile.h" /* CropRow, CropStats: the crops file's rows */

#define CROPS_MAX_SPLIT 32                 /* a layout's m*n cells fit in 32 * 32 */
#define CROPS_MAX_LAYOUTS 1024             /* 544 layouts at M = 32 */


/* The layouts for max_split M, in the reference's order; returns their count. */
int crop_layouts(int layouts[][2], int max_split);

/* The rows of one image for one epoch: writes at most max_boxes rows to out, returns the
 * count. w, h: image size in pixels. */
int crops_for_image(CropRow *out, int32_t image, int64_t image_id, int w, int h, int epoch,
                    uint64_t seed, int max_split, int max_boxes);

/* The reference's thing box for a teacher crop: the box (x, y, w, h) enlarged 1.5x about its
 * centre (cx = x + w*0.5, x0 = max(cx - w*0.75, 0), ...) and clipped to the W x H image, in
 * double; used by proposal sampling and by evaluation's crops of things alike. */
void crop_thing_box(double out[4], double x, double y, double w, double h, int W, int H);

/* Grid mode with the reference's --crop-scale s > 1: each row's teacher crop is its cell
 * enlarged s times about its centre and clipped to the w x h image (s <= 1: the cell). */
void crops_scale_teacher(CropRow *rows, int n, double crop_scale, int w, int h);

/* Proposal mode, the reference's ProposalDistillDataset: the image's boxes (x, y, w, h,
 * nboxes of them) are shuffled with the grid mode's seeded draw for (seed, image id, epoch),
 * the first max_boxes drawn are kept if their area w*h lies in [min_size^2, max_size^2] and
 * they touch the image; the teacher sees each box enlarged 1.5x about its centre and clipped to
 * the image, the student pools the box itself. An image-epoch left with no box gets the
 * reference's fallback: the student box (0, 0, W/4, H/4), the teacher crop (0, 0, W//4, H//4).
 * Writes at most max_boxes rows (at least 1), returns the count and adds to *st. */
int crops_for_proposals(CropRow *out, int32_t image, int64_t image_id, int w, int h, int epoch,
                        uint64_t seed, const double (*boxes)[4], int nboxes, int max_boxes,
                        double min_size, double max_size, CropStats *st);

/* torch.linspace(0, 1, steps)[i] in float32, as the reference builds its cell edges. */
float linspace01(int i, int steps);

#endif
