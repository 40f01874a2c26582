/* arena.c: see arena.h. */
#include "base/arena.h"

#include <stdlib.h>

#include "base/check.h"

static size_t aligned(size_t n) { return (n + 15) & ~(size_t)15; } /* 16 floats = 64 bytes */

int arena_carve(float **mem, size_t *capacity, const ArenaSlot *slots, size_t nslots) {
    size_t total = 0;
    for (size_t i = 0; i < nslots; i++) total += aligned(slots[i].n);
    if (total > *capacity) {
        free(*mem);
        *mem = NULL;
        *capacity = 0;
        CS_ALLOC(*mem, total);
        *capacity = total;
    }
    float *p = *mem;
    for (size_t i = 0; i < nslots; i++) {
        *slots[i].p = slots[i].n ? p : NULL;
        p += aligned(slots[i].n);
    }
    return 0;
}
