/* geometry.h: the arithmetic of image geometry shared by the rooms: rounding as the reference
 * (Python, PIL) rounds. */
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

#endif
