/* proposals.h: class-agnostic region proposals in COCO format (coco.h's CocoProposals), the
 * input of sample_crops --proposals: made here for a dataset with ground-truth boxes, and
 * written as JSON.
 *
 * proposals_jitter: per ground-truth box, `per_object` copies with the centre moved by
 * N(0, jitter) of the box's side and each side scaled by exp(N(0, jitter)), clipped to the
 * image; plus `random` boxes per image, each side U(0.1, 0.6) of the image's, placed
 * uniformly. They come from the ground truth, so they are a flattering upper bound of what a
 * trained region-proposal network gives: every object has a box around it, and no class is
 * named. Draws are keyed by (seed, image id): the same file for any order of work. */
#ifndef CLIPSELF_PROPOSALS_H
#define CLIPSELF_PROPOSALS_H

#include <stdint.h>

#include "io/coco.h"

int proposals_jitter(CocoProposals *out, const CocoProposals *gt, int per_object, double jitter,
                     int random, uint64_t seed);

/* Write p as COCO JSON (images: id, file_name, width, height; annotations: id, image_id,
 * bbox; info.description = description), atomically. */
int proposals_write_json(const CocoProposals *p, const char *path, const char *description);

#endif
