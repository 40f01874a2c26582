/* rng.h: splitmix64, the project's counter-based generator: a key fully determines the stream,
 * so draws keyed by (seed, image id, epoch) are the same on any rank and after any resume. */
#ifndef CLIPSELF_RNG_H
#define CLIPSELF_RNG_H

#include <math.h>
#include <stdint.h>

/* The finaliser of splitmix64 (Steele, Lea and Flood 2014). */
static inline uint64_t rng_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* One step: advance the state by the golden gamma, return its mix. */
static inline uint64_t rng_next(uint64_t *s) { return rng_mix64(*s += 0x9E3779B97F4A7C15ULL); }

/* A uniform integer in [0, n) without modulo bias (rejection sampling). */
static inline uint32_t rng_below(uint64_t *s, uint32_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, r;
    do r = rng_next(s);
    while (r >= limit);
    return (uint32_t)(r % n);
}

/* The shuffle of an epoch, a function of (seed, epoch) alone: Fisher-Yates over order[0, n)
 * from the last place down, place i swapped with z mod (i + 1), z the draws of the stream
 * keyed seed * gamma + epoch + 1. */
static inline void rng_shuffle_epoch(int *order, int n, uint64_t seed, int epoch) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)epoch + 1;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_next(&s) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* A uniform double in (0, 1): 53 random bits, offset by half a step. */
static inline double rng_uniform(uint64_t *s) {
    return ((double)(rng_next(s) >> 11) + 0.5) * 0x1.0p-53;
}

/* A standard normal draw (Box-Muller, one of the pair). */
static inline double rng_normal(uint64_t *s) {
    double u1 = rng_uniform(s), u2 = rng_uniform(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
