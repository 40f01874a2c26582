/* crops.c: grid layouts and shuffled grid cells per image and epoch (see crops.h). */
#include "crops.h"

#include <stddef.h>

int crop_layouts(int layouts[][2], int max_split) {
    int k = 0;
    for (int m = 1; m <= max_split; m++)
        for (int n = (m + 1) / 2; n < (2 * m + 1 < max_split + 1 ? 2 * m + 1 : max_split + 1); n++) {
            if (k == CROPS_MAX_LAYOUTS) return k;
            layouts[k][0] = m;
            layouts[k][1] = n;
            k++;
        }
    return k;
}

/* splitmix64 step: a counter-based generator, so a key fully determines the stream. */
static uint64_t mix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform integer in [0, n) without modulo bias. */
static uint32_t below(uint64_t *s, uint32_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do r = mix(s);
    while (r >= limit);
    return (uint32_t)(r % n);
}

float linspace01(int i, int steps) {
    /* PyTorch fills the first half forwards from start and the second half backwards from
     * end, with step = (end - start) / (steps - 1) in float. */
    if (steps == 1) return 0.0f;
    float step = 1.0f / (float)(steps - 1);
    int half = steps / 2;
    return i < half ? step * (float)i : 1.0f - step * (float)(steps - i - 1);
}

int crops_for_image(CropRow *out, int32_t image, int64_t image_id, int w, int h, int epoch,
                    uint64_t seed, int max_split, int max_boxes) {
    if (max_split < 1 || max_split > CROPS_MAX_SPLIT || max_boxes < 1) return 0;
    int layouts[CROPS_MAX_LAYOUTS][2];
    int nl = crop_layouts(layouts, max_split);
    uint64_t s = seed;
    s ^= mix(&s) ^ (uint64_t)image_id * 0xD1B54A32D192ED03ULL;
    s ^= mix(&s) ^ (uint64_t)(uint32_t)epoch * 0x8CB92BA72F3D8DD7ULL;
    int k = (int)below(&s, (uint32_t)nl), m = layouts[k][0], n = layouts[k][1];
    int idx[CROPS_MAX_SPLIT * CROPS_MAX_SPLIT];
    int cells = m * n;
    for (int i = 0; i < cells; i++) idx[i] = i;
    for (int i = cells - 1; i > 0; i--) { /* Fisher-Yates */
        int j = (int)below(&s, (uint32_t)(i + 1)), t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
    int count = cells < max_boxes ? cells : max_boxes;
    for (int r = 0; r < count; r++) {
        int cell = idx[r], row = cell / n, col = cell % n; /* cells in row-major order */
        CropRow *c = &out[r];
        c->image = image;
        c->epoch = epoch;
        c->m = m;
        c->n = n;
        c->box[0] = linspace01(col, n + 1) * (float)w;
        c->box[1] = linspace01(row, m + 1) * (float)h;
        c->box[2] = linspace01(col + 1, n + 1) * (float)w;
        c->box[3] = linspace01(row + 1, m + 1) * (float)h;
    }
    return count;
}
