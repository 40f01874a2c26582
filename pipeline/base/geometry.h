/* geometry.h: the arithmetic of image geometry shared by the rooms, in one place: rounding as
 * the reference (Python, PIL) rounds, the longest-side fit, and a pixel box on the token grid.
 *
 * Boxes are x0, y0, x1, y1 in original image pixels. A model input of side S holds the image
 * scaled by geom_fit_scale (ResizeLongest(S)) and padded right and bottom; its g x g token
 * grid has g = S / patch. */
#ifndef CLIPSELF_GEOMETRY_H
#define CLIPSELF_GEOMETRY_H

#include <math.h>

/* Python's round() of a double: half to even, returned as the (exact) integral double. */
static inline double geom_round_half_even(double x) {
    double f = floor(x), d = x - f; /* both exact */
    if (d > 0.5 || (d == 0.5 && fmod(f, 2.0) != 0.0)) f += 1.0;
    return f;
}

/* The same to an int; -1 outside +-2^30 (and for NaN), 0 otherwise. */
static inline int geom_round_int(double x, int *out) {
    if (!(x > -1073741824.0 && x < 1073741824.0)) return -1;
    *out = (int)geom_round_half_even(x);
    return 0;
}

/* The scale that takes a w x h image's longest side to S: S / max(w, h), in double (the
 * reference's Python float). */
static inline double geom_fit_scale(int S, int w, int h) {
    return (double)S / (double)(w > h ? w : h);
}

/* A pixel box on the g x g token grid of the S x S input, in the reference's float32 order:
 * box * scale (scale = geom_fit_scale, a Python float applied in float32), / S (the normalised
 * box), * g (_denormalize_boxes on the feature map). Training's pooled boxes and evaluation's
 * rois both. */
static inline void geom_token_box(float out[4], const float box[4], double scale, int S, int g) {
    for (int q = 0; q < 4; q++) out[q] = box[q] * (float)scale / (float)S * (float)g;
}

#endif
