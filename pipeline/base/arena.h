/* arena.h: one allocation carved into the named buffers of a model's activations, kept for the
 * life of a run (re-allocating large buffers every step costs page faults) and grown only when
 * a larger shape needs more. */
#ifndef CLIPSELF_ARENA_H
#define CLIPSELF_ARENA_H

#include <stddef.h>

typedef struct {
    float **p; /* set to the buffer's first float, or NULL when n is 0 */
    size_t n;  /* floats */
} ArenaSlot;

/* Point every slot into *mem, 64-byte aligned one after another, first growing *mem (whose
 * size in floats is *capacity) if the slots need more. The contents are not kept across a
 * growth. */
int arena_carve(float **mem, size_t *capacity, const ArenaSlot *slots, size_t nslots);

#endif
