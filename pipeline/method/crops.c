/* crops.c: grid layouts and shuffled grid cells per image and epoch (see crops.h). */
#include "method/crops.h"

#include "base/rng.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

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

/* The draw's state for (seed, image id, epoch): the same key, the same stream, on any rank. */
static uint64_t draw_key(uint64_t seed, int64_t image_id, int epoch) {
    /* each step mixes the state, then xors the mixed value and the key in (the state read
     * after rng_next() advanced it: spelled out, since "s ^= f(&s) ^ k" leaves the order open) */
    uint64_t s = seed, m = rng_next(&s);
    s ^= m ^ (uint64_t)image_id * 0xD1B54A32D192ED03ULL;
    m = rng_next(&s);
    s ^= m ^ (uint64_t)(uint32_t)epoch * 0x8CB92BA72F3D8DD7ULL;
    return s;
}

/* idx[0..n) = a Fisher-Yates permutation of 0..n-1 drawn from s. */
static void shuffle(int *idx, int n, uint64_t *s) {
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(s, (uint32_t)(i + 1)), t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* The box (x0, y0, x1, y1) enlarged f times about its centre, clipped to [0, w] x [0, h], in
 * double as the reference computes it before PIL's crop. */
static void enlarge(double out[4], double x0, double y0, double x1, double y1, double f, int w,
                    int h) {
    double bw = x1 - x0, bh = y1 - y0, cx = (x0 + x1) / 2, cy = (y0 + y1) / 2, d = 0.5 * f;
    out[0] = fmax(cx - bw * d, 0.0), out[1] = fmax(cy - bh * d, 0.0);
    out[2] = fmin(cx + bw * d, (double)w), out[3] = fmin(cy + bh * d, (double)h);
}

void crop_thing_box(double out[4], double x, double y, double w, double h, int W, int H) {
    double cx = x + w * 0.5, cy = y + h * 0.5;
    out[0] = fmax(cx - w * 0.75, 0.0), out[1] = fmax(cy - h * 0.75, 0.0);
    out[2] = fmin(cx + w * 0.75, (double)W), out[3] = fmin(cy + h * 0.75, (double)H);
}

void crops_scale_teacher(CropRow *rows, int n, double crop_scale, int w, int h) {
    for (int r = 0; r < n; r++) {
        const float *b = rows[r].box;
        if (crop_scale > 1.0) enlarge(rows[r].tbox, b[0], b[1], b[2], b[3], crop_scale, w, h);
        else for (int q = 0; q < 4; q++) rows[r].tbox[q] = b[q];
    }
}

int crops_for_proposals(CropRow *out, int32_t image, int64_t image_id, int w, int h, int epoch,
                        uint64_t seed, const double (*boxes)[4], int nboxes, int max_boxes,
                        double min_size, double max_size, CropStats *st) {
    uint64_t s = draw_key(seed, image_id, epoch);
    int *idx = malloc((size_t)(nboxes > 0 ? nboxes : 1) * sizeof(int)), count = 0;
    if (!idx) return -1;
    shuffle(idx, nboxes, &s);
    for (int k = 0; k < nboxes && k < max_boxes; k++) {
        const double *b = boxes[idx[k]];
        double x = b[0], y = b[1], bw = b[2], bh = b[3], area = bw * bh;
        if (area < min_size * min_size || area > max_size * max_size) {
            st->filtered++;
            continue;
        }
        if (x >= w || y >= h || x + bw <= 0 || y + bh <= 0) {
            st->outside++;
            continue;
        }
        CropRow *c = &out[count++];
        *c = (CropRow){.image = image, .epoch = epoch};
        c->box[0] = (float)x, c->box[1] = (float)y;
        c->box[2] = (float)(x + bw), c->box[3] = (float)(y + bh);
        crop_thing_box(c->tbox, x, y, bw, bh, w, h);
    }
    free(idx);
    if (count == 0) { /* the reference's "avoid empty" box: a quarter of each side, top left */
        CropRow *c = &out[count++];
        *c = (CropRow){.image = image, .epoch = epoch};
        c->box[2] = (float)((double)w / 4), c->box[3] = (float)((double)h / 4);
        c->tbox[2] = (double)(w / 4), c->tbox[3] = (double)(h / 4);
        st->fallback++;
    }
    return count;
}

int crops_for_image(CropRow *out, int32_t image, int64_t image_id, int w, int h, int epoch,
                    uint64_t seed, int max_split, int max_boxes) {
    if (max_split < 1 || max_split > CROPS_MAX_SPLIT || max_boxes < 1) return 0;
    int layouts[CROPS_MAX_LAYOUTS][2];
    int nl = crop_layouts(layouts, max_split);
    uint64_t s = draw_key(seed, image_id, epoch);
    int k = (int)rng_below(&s, (uint32_t)nl), m = layouts[k][0], n = layouts[k][1];
    int idx[CROPS_MAX_SPLIT * CROPS_MAX_SPLIT];
    int cells = m * n;
    shuffle(idx, cells, &s);
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
        for (int q = 0; q < 4; q++) c->tbox[q] = c->box[q];
    }
    return count;
}
float linspace01(int i, int steps) {
    /* PyTorch fills the first half forwards from start and the second half backwards from
     * end, with step = (end - start) / (steps - 1) in float. */
    if (steps == 1) return 0.0f;
    float step = 1.0f / (float)(steps - 1);
    int half = steps / 2;
    return i < half ? step * (float)i : 1.0f - step * (float)(steps - i - 1);
}

