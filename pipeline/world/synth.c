/* synth.c: the synthetic COCO world of synth.h: scene sampling, rasterising (signed distances,
 * anti-aliased edges), annotations from the final label map, and the JPEG / PNG / JSON writers.
 *
 * An image is made in three passes over a scene drawn from one random stream seeded by
 * (seed, split, index): a label pass (stuff region, then each thing bottom to top where its
 * signed distance is <= 0), repeated until every thing left is visible enough; a paint pass
 * (stuff textures, clutter blobs on the stuff, then things blended by coverage
 * clamp(0.5 - d, 0, 1), so a pixel is labelled with the topmost thing painted there at
 * coverage >= 0.5, else with its stuff); and the annotations, read off the label map. */
#include "world/synth.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>

#include <jpeglib.h>

#include "base/check.h"
#include "base/fileio.h"
#include "base/rng.h"
#include "io/image.h"

#define NUM_THINGS 10
#define NUM_STUFF 7
#define PI_F 3.14159265f

const SynthCategory synth_categories[] = {
    {1, "disc", "shape", 1, {220, 40, 40}},
    {2, "square", "shape", 1, {245, 140, 30}},
    {3, "triangle", "shape", 1, {235, 215, 40}},
    {4, "ring", "shape", 1, {200, 50, 190}},
    {5, "cross", "shape", 1, {40, 200, 210}},
    {6, "star", "shape", 1, {130, 70, 190}},
    {7, "diamond", "shape", 1, {240, 140, 170}},
    {8, "ellipse", "shape", 1, {40, 80, 200}},
    {9, "hexagon", "shape", 1, {130, 80, 40}},
    {10, "crescent", "shape", 1, {40, 160, 100}},
    {100, "sky", "background", 0, {120, 170, 230}},
    {101, "grass", "background", 0, {70, 150, 50}},
    {103, "water", "background", 0, {30, 90, 150}},
    {106, "brick", "background", 0, {150, 60, 40}},
    {110, "sand", "background", 0, {220, 195, 140}},
    {115, "road", "background", 0, {90, 90, 95}},
    {121, "wall", "background", 0, {200, 190, 170}},
};
const int synth_num_categories = NUM_THINGS + NUM_STUFF;

const SynthCategory *synth_category(int id) {
    for (int i = 0; i < synth_num_categories; i++)
        if (synth_categories[i].id == id) return &synth_categories[i];
    return NULL;
}

enum { SHAPE_DISC, SHAPE_SQUARE, SHAPE_TRIANGLE, SHAPE_RING, SHAPE_CROSS, SHAPE_STAR,
       SHAPE_DIAMOND, SHAPE_ELLIPSE, SHAPE_HEXAGON, SHAPE_CRESCENT };
enum { TEX_SOLID, TEX_STRIPES, TEX_DOTS, TEX_CHECKER, TEX_GRADIENT, NUM_TEXTURES };
enum { STUFF_SKY, STUFF_GRASS, STUFF_WATER, STUFF_BRICK, STUFF_SAND, STUFF_ROAD, STUFF_WALL };

/* Appearance of thing category i (synth_categories[i]): its colour family (hue in degrees,
 * saturation, value, each jittered per instance) and its usual texture (70% of instances).
 * Neighbouring hues overlap after jitter and textures are shared, so only shape, colour and
 * texture together name a category. */
static const struct {
    int shape;
    float hue, sat, val;
    int texture;
} thing_looks[NUM_THINGS] = {
    {SHAPE_DISC, 0, 0.80f, 0.85f, TEX_SOLID},
    {SHAPE_SQUARE, 28, 0.85f, 0.95f, TEX_CHECKER},
    {SHAPE_TRIANGLE, 52, 0.85f, 0.92f, TEX_STRIPES},
    {SHAPE_RING, 305, 0.70f, 0.80f, TEX_SOLID},
    {SHAPE_CROSS, 185, 0.75f, 0.85f, TEX_STRIPES},
    {SHAPE_STAR, 270, 0.60f, 0.75f, TEX_SOLID},
    {SHAPE_DIAMOND, 340, 0.45f, 0.95f, TEX_DOTS},
    {SHAPE_ELLIPSE, 220, 0.80f, 0.80f, TEX_GRADIENT},
    {SHAPE_HEXAGON, 25, 0.65f, 0.50f, TEX_DOTS},
    {SHAPE_CRESCENT, 145, 0.70f, 0.70f, TEX_GRADIENT},
};

/* ---- random numbers and noise ------------------------------------------------------------ */

typedef struct {
    uint64_t s;
} Rng;

/* Draws of the scene sampler, on rng.h's splitmix64 stream. */
static float rng_range(Rng *g, float lo, float hi) {
    return lo + (hi - lo) * (float)((double)(rng_next(&g->s) >> 11) * 0x1.0p-53);
}

static int rng_int(Rng *g, int lo, int hi) {
    return lo + (int)(rng_next(&g->s) % (uint64_t)(hi - lo + 1));
}
static uint32_t rng_u32(Rng *g) { return (uint32_t)(rng_next(&g->s) >> 32); }

/* The stream of one image: a function of (seed, split, index) only. */
static Rng image_rng(int seed, int split, int index) {
    uint64_t h = rng_mix64(0x243F6A8885A308D3ULL ^ (uint64_t)(uint32_t)seed);
    h = rng_mix64(h ^ (0x13198A2E03707344ULL * (uint64_t)(split + 1)));
    h = rng_mix64(h ^ (uint64_t)(uint32_t)index);
    return (Rng){h};
}

static inline uint32_t mix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x7feb352dU;
    h ^= h >> 15;
    h *= 0x846ca68bU;
    h ^= h >> 16;
    return h;
}
/* A fixed random value in [0, 1) per lattice point. */
static inline float hash01(uint32_t seed, int x, int y) {
    uint32_t h = mix32((uint32_t)x * 0x9E3779B1U + mix32((uint32_t)y * 0x85EBCA77U ^ seed));
    return (float)(h >> 8) * 0x1.0p-24f;
}
/* x mod m for m > 0, in [0, m). */
static inline float wrapf(float x, float m) { return x - m * floorf(x / m); }

static float value_noise(uint32_t seed, float x, float y) {
    float fx = floorf(x), fy = floorf(y), tx = x - fx, ty = y - fy;
    int ix = (int)fx, iy = (int)fy;
    tx = tx * tx * (3 - 2 * tx);
    ty = ty * ty * (3 - 2 * ty);
    float a = hash01(seed, ix, iy), b = hash01(seed, ix + 1, iy);
    float c = hash01(seed, ix, iy + 1), d = hash01(seed, ix + 1, iy + 1);
    return (a + (b - a) * tx) + ((c + (d - c) * tx) - (a + (b - a) * tx)) * ty;
}

/* Octaves of value noise, in [0, 1]. */
static float fbm(uint32_t seed, float x, float y, int octaves) {
    float sum = 0, amp = 0.5f, norm = 0;
    for (int o = 0; o < octaves; o++) {
        sum += amp * value_noise(seed + 977U * (uint32_t)o, x, y);
        norm += amp;
        x *= 2.03f;
        y *= 2.03f;
        amp *= 0.5f;
    }
    return sum / norm;
}

static float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }
static float smoothstep(float a, float b, float x) {
    float t = clampf((x - a) / (b - a), 0, 1);
    return t * t * (3 - 2 * t);
}
static void mix3(float o[3], const float a[3], const float b[3], float t) {
    for (int k = 0; k < 3; k++) o[k] = a[k] + (b[k] - a[k]) * t;
}

/* h in degrees, s and v in [0, 1] -> RGB in [0, 255]. */
static void hsv_rgb(float h, float s, float v, float o[3]) {
    h = fmodf(h, 360.0f);
    if (h < 0) h += 360.0f;
    float c = v * s, x = c * (1 - fabsf(fmodf(h / 60.0f, 2.0f) - 1)), m = v - c;
    float r = 0, g = 0, b = 0;
    if (h < 60) r = c, g = x;
    else if (h < 120) r = x, g = c;
    else if (h < 180) g = c, b = x;
    else if (h < 240) g = x, b = c;
    else if (h < 300) r = x, b = c;
    else r = c, b = x;
    o[0] = 255 * (r + m);
    o[1] = 255 * (g + m);
    o[2] = 255 * (b + m);
}

/* ---- the scene ----------------------------------------------------------------------------- */

enum { LAYOUT_ONE, LAYOUT_H2, LAYOUT_V2, LAYOUT_H3, LAYOUT_HV3 };

/* A boundary at pos + amp * sin(freq * t + phase) px, t running along it. */
typedef struct {
    float pos, amp, freq, phase;
} Boundary;

typedef struct {
    int kind;         /* STUFF_* */
    uint32_t seed;    /* of its noise */
    float tint[3];    /* multiplicative colour jitter */
    float p[4];       /* kind-specific: cloudiness, wave period, brick size, lane position... */
} StuffLook;

typedef struct {
    int cat;                   /* index into synth_categories */
    int shape, texture, rim;
    float cx, cy, r;           /* centre and radius (px) */
    float ax, ay;              /* anisotropic scale of the unit shape */
    float cs, sn;              /* rotation */
    float c1[3], c2[3];        /* main and texture colours, RGB 0..255 */
    float period, phase;       /* texture cell size (px) and offset */
    int npoly;
    float poly[10][2];         /* polygon shapes, in unit coordinates */
    int x0, y0, x1, y1;        /* pixels it can touch: [x0, x1) x [y0, y1) */
} Thing;

typedef struct {
    float cx, cy, r, rgb[3];
} Blob;

typedef struct {
    int W, H;
    int layout, nstuff;
    int stuff_cat[SYNTH_MAX_STUFF]; /* category index of each region */
    StuffLook look[SYNTH_MAX_STUFF];
    Boundary bound[2];
    int nthings;
    Thing things[SYNTH_MAX_THINGS]; /* bottom to top */
    int nblobs;
    Blob blobs[8];
    float light[2], gain, noise_amp;
    uint32_t noise_seed;
} Scene;

static float boundary_at(const Boundary *b, float t) {
    return b->pos + b->amp * sinf(b->freq * t + b->phase);
}

static Boundary sample_boundary(Rng *g, float length, float across, float lo, float hi) {
    Boundary b;
    b.pos = across * rng_range(g, lo, hi);
    int wavy = rng_range(g, 0, 1) < 0.5f;
    b.amp = wavy ? rng_range(g, 2.0f, 0.06f * across) : 0.0f;
    b.freq = 2 * PI_F / (length * rng_range(g, 0.25f, 1.0f));
    b.phase = rng_range(g, 0, 2 * PI_F);
    return b;
}

/* The stuff region (0..nstuff-1) of the pixel centred at (x, y). */
static int region_at(const Scene *s, float x, float y) {
    switch (s->layout) {
    case LAYOUT_H2: return y < boundary_at(&s->bound[0], x) ? 0 : 1;
    case LAYOUT_V2: return x < boundary_at(&s->bound[0], y) ? 0 : 1;
    case LAYOUT_H3:
        return y < boundary_at(&s->bound[0], x) ? 0 : y < boundary_at(&s->bound[1], x) ? 1 : 2;
    case LAYOUT_HV3:
        return y < boundary_at(&s->bound[0], x) ? 0 : x < boundary_at(&s->bound[1], y) ? 1 : 2;
    default: return 0;
    }
}

static void sample_stuff(Rng *g, Scene *s) {
    float W = (float)s->W, H = (float)s->H, u = rng_range(g, 0, 1);
    if (u < 0.25f) {
        s->layout = LAYOUT_ONE, s->nstuff = 1;
    } else if (u < 0.70f) {
        s->nstuff = 2;
        s->layout = rng_range(g, 0, 1) < 0.7f ? LAYOUT_H2 : LAYOUT_V2;
    } else {
        s->nstuff = 3;
        s->layout = rng_range(g, 0, 1) < 0.6f ? LAYOUT_H3 : LAYOUT_HV3;
    }
    switch (s->layout) {
    case LAYOUT_H2: s->bound[0] = sample_boundary(g, W, H, 0.3f, 0.7f); break;
    case LAYOUT_V2: s->bound[0] = sample_boundary(g, H, W, 0.3f, 0.7f); break;
    case LAYOUT_H3:
        s->bound[0] = sample_boundary(g, W, H, 0.2f, 0.42f);
        s->bound[1] = sample_boundary(g, W, H, 0.58f, 0.8f);
        break;
    case LAYOUT_HV3:
        s->bound[0] = sample_boundary(g, W, H, 0.25f, 0.55f);
        s->bound[1] = sample_boundary(g, H, W, 0.3f, 0.7f);
        break;
    }
    /* Distinct categories; sky only as the top region (or the whole image), and often there. */
    int sky_top = s->layout != LAYOUT_V2 && rng_range(g, 0, 1) < 0.35f;
    for (int i = 0; i < s->nstuff; i++) {
        int k;
        for (;;) {
            k = (i == 0 && sky_top) ? STUFF_SKY : rng_int(g, 0, NUM_STUFF - 1);
            int used = 0;
            for (int j = 0; j < i; j++) used |= s->stuff_cat[j] == NUM_THINGS + k;
            int sky_ok = k != STUFF_SKY || (i == 0 && s->layout != LAYOUT_V2);
            if (!used && sky_ok) break;
        }
        s->stuff_cat[i] = NUM_THINGS + k;
        StuffLook *l = &s->look[i];
        l->kind = k;
        l->seed = rng_u32(g);
        float bright = rng_range(g, 0.9f, 1.1f);
        for (int c = 0; c < 3; c++) l->tint[c] = bright * rng_range(g, 0.93f, 1.07f);
        for (int c = 0; c < 4; c++) l->p[c] = rng_range(g, 0, 1);
    }
}

static void set_polygon(Thing *t, int n, const float (*v)[2]) {
    t->npoly = n;
    for (int i = 0; i < n; i++) t->poly[i][0] = v[i][0], t->poly[i][1] = v[i][1];
}

/* A thing of category index cat with a diameter drawn log-uniformly in [dmin, dmax] px, its
 * centre at least inset radii from the image borders. */
static void sample_thing(Rng *g, Thing *t, int cat, int W, int H, float dmin, float dmax,
                        float inset) {
    memset(t, 0, sizeof *t);
    t->cat = cat;
    t->shape = thing_looks[cat].shape;
    t->r = 0.5f * expf(rng_range(g, logf(dmin), logf(dmax)));
    t->ax = rng_range(g, 0.85f, 1.15f);
    t->ay = rng_range(g, 0.85f, 1.15f);
    float th = rng_range(g, -0.35f, 0.35f);
    t->cs = cosf(th);
    t->sn = sinf(th);
    t->cx = rng_range(g, inset * t->r, (float)W - inset * t->r);
    t->cy = rng_range(g, inset * t->r, (float)H - inset * t->r);
    float ext = t->r * fmaxf(t->ax, t->ay) + 1.5f;
    t->x0 = (int)fmaxf(0, floorf(t->cx - ext));
    t->y0 = (int)fmaxf(0, floorf(t->cy - ext));
    t->x1 = (int)fminf((float)W, ceilf(t->cx + ext));
    t->y1 = (int)fminf((float)H, ceilf(t->cy + ext));

    float hue = thing_looks[cat].hue + rng_range(g, -12, 12);
    float sat = clampf(thing_looks[cat].sat + rng_range(g, -0.12f, 0.12f), 0.1f, 1);
    float val = clampf(thing_looks[cat].val + rng_range(g, -0.12f, 0.1f), 0.2f, 1);
    hsv_rgb(hue, sat, val, t->c1);
    t->texture = rng_range(g, 0, 1) < 0.7f ? thing_looks[cat].texture
                                             : rng_int(g, 0, NUM_TEXTURES - 1);
    if (t->texture == TEX_GRADIENT || rng_range(g, 0, 1) < 0.4f)
        hsv_rgb(hue, sat * 0.4f, clampf(val + 0.3f, 0, 1), t->c2);
    else
        hsv_rgb(hue, sat, val * 0.55f, t->c2);
    t->period = fmaxf(4.0f, t->r * rng_range(g, 0.35f, 0.55f));
    t->phase = rng_range(g, 0, 1);
    t->rim = rng_range(g, 0, 1) < 0.4f;

    static const float tri[3][2] = {{0, -1}, {0.866f, 0.5f}, {-0.866f, 0.5f}};
    static const float dia[4][2] = {{0, -1}, {0.65f, 0}, {0, 1}, {-0.65f, 0}};
    float v[10][2];
    if (t->shape == SHAPE_TRIANGLE) set_polygon(t, 3, tri);
    if (t->shape == SHAPE_DIAMOND) set_polygon(t, 4, dia);
    if (t->shape == SHAPE_STAR) {
        for (int i = 0; i < 10; i++) {
            float a = -PI_F / 2 + (float)i * PI_F / 5, rad = (i & 1) ? 0.45f : 1.0f;
            v[i][0] = rad * cosf(a), v[i][1] = rad * sinf(a);
        }
        set_polygon(t, 10, (const float (*)[2])v);
    }
    if (t->shape == SHAPE_HEXAGON) {
        for (int i = 0; i < 6; i++) {
            float a = -PI_F / 2 + (float)i * PI_F / 3;
            v[i][0] = 0.95f * cosf(a), v[i][1] = 0.95f * sinf(a);
        }
        set_polygon(t, 6, (const float (*)[2])v);
    }
}

static void sample_scene(Rng *g, Scene *s, int W, int H) {
    memset(s, 0, sizeof *s);
    s->W = W, s->H = H;
    sample_stuff(g, s);
    /* diameters log-uniform in [0.15, 0.55] of the short side: objects of a few tokens up to
     * half the image at the demo's det size (tinier ones are clutter, not annotated things) */
    float side = (float)(W < H ? W : H), dmax = 0.55f * side, dmin = fmaxf(14.0f, 0.15f * side);
    s->nthings = rng_int(g, 1, SYNTH_MAX_THINGS);
    float key[SYNTH_MAX_THINGS];
    for (int i = 0; i < s->nthings; i++) {
        sample_thing(g, &s->things[i], rng_int(g, 0, NUM_THINGS - 1), W, H, dmin, dmax, 0.4f);
        key[i] = s->things[i].r * rng_range(g, 0.6f, 1.4f);
    }
    /* Mostly large things behind small ones, as in photographs; insertion sort keeps it exact. */
    for (int i = 1; i < s->nthings; i++)
        for (int j = i; j > 0 && key[j] > key[j - 1]; j--) {
            Thing t = s->things[j];
            s->things[j] = s->things[j - 1], s->things[j - 1] = t;
            float k = key[j];
            key[j] = key[j - 1], key[j - 1] = k;
        }
    s->nblobs = rng_int(g, 2, 7);
    for (int i = 0; i < s->nblobs; i++) {
        Blob *b = &s->blobs[i];
        b->cx = rng_range(g, 0, (float)W), b->cy = rng_range(g, 0, (float)H);
        b->r = rng_range(g, 1.0f, 2.6f);
        hsv_rgb(rng_range(g, 0, 360), rng_range(g, 0, 0.9f), rng_range(g, 0.1f, 1), b->rgb);
    }
    float la = rng_range(g, 0, 2 * PI_F);
    s->light[0] = 0.18f * cosf(la), s->light[1] = 0.18f * sinf(la);
    s->gain = rng_range(g, 0.92f, 1.08f);
    s->noise_amp = rng_range(g, 2.0f, 6.0f);
    s->noise_seed = rng_u32(g);
}

/* ---- signed distances ---------------------------------------------------------------------- */

static float sd_box(float x, float y, float bx, float by) {
    float dx = fabsf(x) - bx, dy = fabsf(y) - by;
    float ox = fmaxf(dx, 0), oy = fmaxf(dy, 0);
    return sqrtf(ox * ox + oy * oy) + fminf(fmaxf(dx, dy), 0);
}

/* Exact distance to a polygon, negative inside (winding by crossing count). */
static float sd_polygon(const float (*v)[2], int n, float px, float py) {
    float d = (px - v[0][0]) * (px - v[0][0]) + (py - v[0][1]) * (py - v[0][1]), s = 1;
    for (int i = 0, j = n - 1; i < n; j = i, i++) {
        float ex = v[j][0] - v[i][0], ey = v[j][1] - v[i][1];
        float wx = px - v[i][0], wy = py - v[i][1];
        float h = clampf((wx * ex + wy * ey) / (ex * ex + ey * ey), 0, 1);
        float bx = wx - ex * h, by = wy - ey * h;
        d = fminf(d, bx * bx + by * by);
        int c1 = py >= v[i][1], c2 = py < v[j][1], c3 = ex * wy > ey * wx;
        if ((c1 && c2 && c3) || (!c1 && !c2 && !c3)) s = -s;
    }
    return s * sqrtf(d);
}

/* Signed distance (px, negative inside) from the pixel centre (px, py) to thing t; (*lx, *ly)
 * get the point in the thing's rotated frame (px), for its texture. */
static float thing_sdf(const Thing *t, float px, float py, float *lx, float *ly) {
    float dx = px - t->cx, dy = py - t->cy;
    float rx = t->cs * dx + t->sn * dy, ry = -t->sn * dx + t->cs * dy;
    *lx = rx, *ly = ry;
    float qx = rx / (t->r * t->ax), qy = ry / (t->r * t->ay), d;
    switch (t->shape) {
    case SHAPE_DISC: d = sqrtf(qx * qx + qy * qy) - 1; break;
    case SHAPE_SQUARE: d = sd_box(qx, qy, 0.85f, 0.85f); break;
    case SHAPE_RING: d = fabsf(sqrtf(qx * qx + qy * qy) - 0.75f) - 0.25f; break;
    case SHAPE_CROSS: d = fminf(sd_box(qx, qy, 0.95f, 0.3f), sd_box(qx, qy, 0.3f, 0.95f)); break;
    case SHAPE_ELLIPSE: {
        float ex = qx, ey = qy / 0.55f;
        d = (sqrtf(ex * ex + ey * ey) - 1) * 0.55f;
        break;
    }
    case SHAPE_CRESCENT: {
        float ox = qx - 0.45f, oy = qy + 0.1f;
        d = fmaxf(sqrtf(qx * qx + qy * qy) - 1, 0.8f - sqrtf(ox * ox + oy * oy));
        break;
    }
    default: d = sd_polygon((const float (*)[2])t->poly, t->npoly, qx, qy); break;
    }
    return d * t->r * fminf(t->ax, t->ay);
}

/* ---- labels and visibility ---------------------------------------------------------------- */

#define LABEL_THING 16 /* label of thing j is LABEL_THING + j; stuff regions are 0..2 */

/* lab = the stuff regions reg, then each thing on top; vis[j] its visible pixels, full[j] its
 * pixels inside the image before occlusion. */
static void label_pass(const Scene *s, const uint8_t *reg, uint8_t *lab, int *vis, int *full) {
    size_t n = (size_t)s->W * (size_t)s->H;
    memcpy(lab, reg, n);
    for (int j = 0; j < s->nthings; j++) {
        const Thing *t = &s->things[j];
        full[j] = 0;
        for (int y = t->y0; y < t->y1; y++)
            for (int x = t->x0; x < t->x1; x++) {
                float lx, ly;
                if (thing_sdf(t, (float)x + 0.5f, (float)y + 0.5f, &lx, &ly) <= 0) {
                    lab[(size_t)y * s->W + x] = (uint8_t)(LABEL_THING + j);
                    full[j]++;
                }
            }
    }
    for (int j = 0; j < s->nthings; j++) vis[j] = 0;
    for (size_t i = 0; i < n; i++)
        if (lab[i] >= LABEL_THING) vis[lab[i] - LABEL_THING]++;
}

/* Remove things that are too small or mostly hidden (so every painted thing is annotated),
 * until the scene is stable; an image left without things gets one thing of >= 30 px inside
 * the image (over 150 px of area whatever its shape, so it stays). */
static void settle_things(Rng *g, Scene *s, const uint8_t *reg, uint8_t *lab) {
    int vis[SYNTH_MAX_THINGS], full[SYNTH_MAX_THINGS];
    for (;;) {
        label_pass(s, reg, lab, vis, full);
        int kept = 0;
        for (int j = 0; j < s->nthings; j++)
            if (vis[j] >= SYNTH_MIN_THING_AREA && 4 * vis[j] >= full[j])
                s->things[kept++] = s->things[j];
        if (kept == s->nthings && kept > 0) return;
        s->nthings = kept;
        if (kept == 0) {
            float dmax = 0.55f * (float)(s->W < s->H ? s->W : s->H);
            sample_thing(g, &s->things[0], rng_int(g, 0, NUM_THINGS - 1), s->W, s->H, 30.0f,
                         fmaxf(dmax, 31.0f), 1.0f);
            s->nthings = 1;
        }
    }
}

/* ---- painting ------------------------------------------------------------------------------ */

static void stuff_color(const StuffLook *l, float x, float y, int H, float o[3]) {
    uint32_t sd = l->seed;
    switch (l->kind) {
    case STUFF_SKY: {
        static const float top[3] = {55, 110, 200}, bottom[3] = {165, 200, 240},
                           cloud[3] = {245, 245, 250};
        mix3(o, top, bottom, y / (float)H);
        float c = fbm(sd, x / 45.0f, y / 18.0f, 3);
        mix3(o, o, cloud, smoothstep(0.55f, 0.75f, c) * 0.9f * l->p[0]);
        break;
    }
    case STUFF_GRASS: {
        float n1 = fbm(sd, x / 7.0f, y / 3.5f, 2), blade = value_noise(sd + 1, x / 1.3f, y / 6.0f);
        float f = 0.6f + 0.35f * n1 + 0.3f * blade, dry = value_noise(sd + 2, x / 40, y / 40);
        o[0] = (55 + 30 * dry * l->p[0]) * f, o[1] = 135 * f, o[2] = 45 * f;
        break;
    }
    case STUFF_WATER: {
        static const float deep[3] = {25, 70, 135}, shallow[3] = {45, 115, 175},
                           foam[3] = {175, 215, 240};
        mix3(o, deep, shallow, 0.5f + 0.5f * sinf(y / (float)H * 2.5f + 6 * l->p[1]));
        float period = 6.0f + 5.0f * l->p[0];
        float w = sinf(y * 2 * PI_F / period + 2.5f * value_noise(sd, x / 18.0f, y / 6.0f) * PI_F);
        mix3(o, o, foam, 0.6f * smoothstep(0.6f, 1.0f, w));
        for (int k = 0; k < 3; k++) o[k] *= 1 - 0.15f * smoothstep(0.6f, 1.0f, -w);
        break;
    }
    case STUFF_BRICK: {
        float bw = 16 + 10 * l->p[0], bh = 7 + 4 * l->p[1];
        int row = (int)floorf(y / bh);
        float off = (float)(row & 1) * bw * 0.5f + bw * l->p[2];
        int col = (int)floorf((x + off) / bw);
        float fx = x + off - (float)col * bw, fy = y - (float)row * bh;
        float grain = 0.92f + 0.16f * hash01(sd, (int)x, (int)y);
        if (fx < 1.6f || fy < 1.6f) {
            o[0] = 185 * grain, o[1] = 180 * grain, o[2] = 170 * grain;
        } else {
            float b = (0.78f + 0.35f * hash01(sd + 1, row, col)) * grain;
            o[0] = 155 * b, o[1] = 62 * b, o[2] = 42 * b;
        }
        break;
    }
    case STUFF_SAND: {
        float dune = 0.9f + 0.15f * fbm(sd, x / 60.0f, y / 22.0f, 2), h = hash01(sd + 1, (int)x, (int)y);
        float f = dune * (h < 0.07f ? 0.7f : h > 0.96f ? 1.12f : 1.0f);
        o[0] = 222 * f, o[1] = 196 * f, o[2] = 140 * f;
        break;
    }
    case STUFF_ROAD: {
        float f = 0.9f + 0.2f * fbm(sd, x / 30.0f, y / 30.0f, 2);
        float v = 86 * f + 36 * (hash01(sd + 1, (int)x, (int)y) - 0.5f);
        o[0] = v, o[1] = v, o[2] = v + 5;
        float lane = (0.2f + 0.7f * l->p[0]) * (float)H;
        if (l->p[1] < 0.6f && fabsf(y - lane) < 2.0f && wrapf(x + 36 * l->p[2], 36.0f) < 18.0f)
            o[0] = 228, o[1] = 222, o[2] = 200;
        break;
    }
    default: { /* STUFF_WALL */
        float f = 0.88f + 0.16f * fbm(sd, x / 30.0f, y / 30.0f, 3);
        float panel = 40 + 30 * l->p[0];
        if (wrapf(x + panel * l->p[1], panel) < 1.0f) f *= 0.9f;
        o[0] = 205 * f, o[1] = 195 * f, o[2] = 172 * f;
        break;
    }
    }
    for (int k = 0; k < 3; k++) o[k] *= l->tint[k];
}

static void thing_color(const Thing *t, float lx, float ly, float d, const float light[2],
                        float o[3]) {
    float qx = lx / (t->r * t->ax), qy = ly / (t->r * t->ay);
    float u = lx / t->period + t->phase, v = ly / t->period + t->phase;
    int second = 0;
    switch (t->texture) {
    case TEX_STRIPES: second = u - floorf(u) >= 0.5f; break;
    case TEX_CHECKER: second = ((int)floorf(u) + (int)floorf(v)) & 1; break;
    case TEX_DOTS: {
        float fx = u - floorf(u) - 0.5f, fy = v - floorf(v) - 0.5f;
        second = fx * fx + fy * fy < 0.09f;
        break;
    }
    default: break;
    }
    if (t->texture == TEX_GRADIENT)
        mix3(o, t->c2, t->c1, clampf(0.5f * (qy + 1), 0, 1));
    else
        memcpy(o, second ? t->c2 : t->c1, 3 * sizeof(float));
    float shade = 1 + qx * light[0] + qy * light[1];
    if (t->rim && d > -1.5f) shade *= 0.7f;
    for (int k = 0; k < 3; k++) o[k] *= shade;
}

/* img (H, W, 3) floats 0..255. */
static void paint(const Scene *s, const uint8_t *reg, float *img) {
    int W = s->W, H = s->H;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            stuff_color(&s->look[reg[i]], (float)x + 0.5f, (float)y + 0.5f, H, img + 3 * i);
        }
    for (int b = 0; b < s->nblobs; b++) {
        const Blob *bl = &s->blobs[b];
        int x0 = (int)fmaxf(0, bl->cx - bl->r - 1), x1 = (int)fminf((float)W, bl->cx + bl->r + 2);
        int y0 = (int)fmaxf(0, bl->cy - bl->r - 1), y1 = (int)fminf((float)H, bl->cy + bl->r + 2);
        for (int y = y0; y < y1; y++)
            for (int x = x0; x < x1; x++) {
                float dx = (float)x + 0.5f - bl->cx, dy = (float)y + 0.5f - bl->cy;
                float a = clampf(0.5f - (sqrtf(dx * dx + dy * dy) - bl->r), 0, 1);
                float *p = img + 3 * ((size_t)y * W + x);
                mix3(p, p, bl->rgb, a);
            }
    }
    for (int j = 0; j < s->nthings; j++) {
        const Thing *t = &s->things[j];
        for (int y = t->y0; y < t->y1; y++)
            for (int x = t->x0; x < t->x1; x++) {
                float lx, ly, c[3];
                float d = thing_sdf(t, (float)x + 0.5f, (float)y + 0.5f, &lx, &ly);
                float a = clampf(0.5f - d, 0, 1);
                if (a <= 0) continue;
                thing_color(t, lx, ly, d, s->light, c);
                float *p = img + 3 * ((size_t)y * W + x);
                mix3(p, p, c, a);
            }
    }
}

/* ---- annotations ------------------------------------------------------------------------- */

static int32_t rgb_id(const float c[3]) {
    return (int32_t)c[0] + 256 * (int32_t)c[1] + 65536 * (int32_t)c[2];
}

/* COCO compressed RLE (pycocotools rleToString) of the column-major mask lab == v: run
 * lengths starting with zeros, each after the third stored as the difference to the one two
 * before, in 5-bit groups with a continuation bit, offset by '0'. out holds >= 7 chars per
 * run. Returns the chars written. */
static size_t rle_encode(const uint8_t *lab, int W, int H, uint8_t v, char *out) {
    size_t p = 0, nrun = 0;
    int64_t prev2 = 0, prev1 = 0, run = 0;
    int cur = 0;
    for (int x = 0; x <= W; x++)
        for (int y = 0; y < H; y++) {
            int last = x == W;
            int m = last ? !cur : lab[(size_t)y * W + x] == v;
            if (m == cur) {
                run++;
                continue;
            }
            int64_t val = nrun > 2 ? run - prev2 : run;
            for (int more = 1; more;) {
                int64_t low = val & 0x1f;
                val = (val - low) / 32; /* floor division, also for negative differences */
                more = (low & 0x10) ? val != -1 : val != 0;
                out[p++] = (char)(48 + (low | (more ? 0x20 : 0)));
            }
            prev2 = prev1, prev1 = run, nrun++;
            run = 1, cur = m;
            if (last) return p;
        }
    return p;
}

/* Fill im->rec, im->ids and (train) im->rle from the final labels. */
static int annotate(SynthImage *im, Rng *g, const Scene *s, const uint8_t *lab, int split) {
    int W = s->W, H = s->H, nseg = 0;
    int seg_of_label[LABEL_THING + SYNTH_MAX_THINGS];
    for (int i = 0; i < LABEL_THING + SYNTH_MAX_THINGS; i++) seg_of_label[i] = -1;
    SynthRecord *r = &im->rec;
    int label_of_seg[SYNTH_MAX_SEGMENTS];
    int area[LABEL_THING + SYNTH_MAX_THINGS] = {0};
    size_t n = (size_t)W * H;
    for (size_t i = 0; i < n; i++) area[lab[i]]++;
    for (int k = 0; k < s->nstuff; k++)
        if (area[k] > 0) label_of_seg[nseg++] = k;
    for (int j = 0; j < s->nthings; j++) label_of_seg[nseg++] = LABEL_THING + j;
    r->nseg = nseg;
    for (int q = 0; q < nseg; q++) {
        int l = label_of_seg[q];
        SynthSegment *sg = &r->seg[q];
        seg_of_label[l] = q;
        int cat = l < LABEL_THING ? s->stuff_cat[l] : s->things[l - LABEL_THING].cat;
        const unsigned char *cc = synth_categories[cat].color;
        float base[3] = {cc[0], cc[1], cc[2]};
        sg->category_id = synth_categories[cat].id;
        sg->id = rgb_id(base);
        /* Thing instances: the category colour jittered, as panopticapi's IdGenerator does. */
        for (int again = l >= LABEL_THING; again;) {
            float c[3];
            for (int k = 0; k < 3; k++) c[k] = clampf(base[k] + (float)rng_int(g, -30, 30), 0, 255);
            sg->id = rgb_id(c);
            again = sg->id == 0;
            for (int o = 0; o < q; o++) again |= r->seg[o].id == sg->id;
        }
        sg->bbox[0] = W, sg->bbox[1] = H, sg->bbox[2] = -1, sg->bbox[3] = -1;
    }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int q = seg_of_label[lab[(size_t)y * W + x]];
            SynthSegment *sg = &r->seg[q];
            im->ids[(size_t)y * W + x] = sg->id;
            sg->area++;
            if (x < sg->bbox[0]) sg->bbox[0] = x;
            if (y < sg->bbox[1]) sg->bbox[1] = y;
            if (x > sg->bbox[2]) sg->bbox[2] = x;
            if (y > sg->bbox[3]) sg->bbox[3] = y;
        }
    for (int q = 0; q < nseg; q++) {
        int32_t *b = r->seg[q].bbox;
        b[2] = b[2] - b[0] + 1, b[3] = b[3] - b[1] + 1;
    }
    if (split != SYNTH_TRAIN) return 0;
    size_t cap = 0;
    for (int q = 0; q < nseg; q++) {
        if (label_of_seg[q] < LABEL_THING) continue;
        const int32_t *b = r->seg[q].bbox;
        cap += 7 * (2 * (size_t)b[2] * (size_t)b[3] + 3); /* runs <= 2 per mask pixel + 3 */
    }
    im->rle = cs_calloc_(cap ? cap : 1, 1, __FILE__, __LINE__);
    if (!im->rle) return -1;
    for (int q = 0; q < nseg; q++) {
        if (label_of_seg[q] < LABEL_THING) continue;
        size_t len = rle_encode(lab, W, H, (uint8_t)label_of_seg[q], im->rle + im->rle_len);
        r->seg[q].rle_len = (int32_t)len;
        im->rle_len += len;
    }
    return 0;
}

/* ---- public: rendering ------------------------------------------------------------------- */

int synth_config_check(const SynthConfig *c) {
    CS_CHECK(c->train >= 0 && c->train <= SYNTH_VAL_ID_BASE - 1,
             "synth: train images must be in 0..%d, got %d", SYNTH_VAL_ID_BASE - 1, c->train);
    CS_CHECK(c->val >= 0 && c->val <= SYNTH_VAL_ID_BASE - 1,
             "synth: val images must be in 0..%d, got %d", SYNTH_VAL_ID_BASE - 1, c->val);
    CS_CHECK(c->min_size >= 32 && c->max_size <= 4096 && c->min_size <= c->max_size,
             "synth: image sides must satisfy 32 <= min-size (%d) <= max-size (%d) <= 4096",
             c->min_size, c->max_size);
    return 0;
}

int synth_image_id(int split, int index) {
    return (split == SYNTH_VAL ? SYNTH_VAL_ID_BASE : 0) + index + 1;
}

void synth_image_free(SynthImage *im) {
    free(im->rgb);
    free(im->ids);
    free(im->rle);
    memset(im, 0, sizeof *im);
}

int synth_render(SynthImage *im, const SynthConfig *c, int split, int index) {
    memset(im, 0, sizeof *im);
    CS_TRY(synth_config_check(c));
    CS_CHECK(split == SYNTH_TRAIN || split == SYNTH_VAL, "synth: unknown split %d", split);
    CS_CHECK(index >= 0 && index < SYNTH_VAL_ID_BASE, "synth: image index %d out of range", index);
    Rng g = image_rng(c->seed, split, index);
    int W = rng_int(&g, c->min_size, c->max_size), H = rng_int(&g, c->min_size, c->max_size);
    Scene *s = NULL;
    uint8_t *reg = NULL, *lab = NULL;
    float *img = NULL;
    size_t n = (size_t)W * H;
    int rc = -1;
    if (!(s = cs_calloc_(1, sizeof *s, __FILE__, __LINE__)) ||
        !(reg = cs_calloc_(n, 1, __FILE__, __LINE__)) ||
        !(lab = cs_calloc_(n, 1, __FILE__, __LINE__)) ||
        !(img = cs_calloc_(3 * n, sizeof *img, __FILE__, __LINE__)) ||
        !(im->rgb = cs_calloc_(3 * n, 1, __FILE__, __LINE__)) ||
        !(im->ids = cs_calloc_(n, sizeof *im->ids, __FILE__, __LINE__)))
        goto done;
    sample_scene(&g, s, W, H);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            reg[(size_t)y * W + x] = (uint8_t)region_at(s, (float)x + 0.5f, (float)y + 0.5f);
    settle_things(&g, s, reg, lab);
    paint(s, reg, img);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < 3 * W; x++) { /* x runs over the channels of a row */
            size_t i = (size_t)y * 3 * W + x;
            float noise = s->noise_amp * (2 * hash01(s->noise_seed, x, y) - 1);
            im->rgb[i] = (unsigned char)(clampf(img[i] * s->gain + noise, 0, 255) + 0.5f);
        }
    im->width = W, im->height = H;
    im->rec.split = split, im->rec.index = index;
    im->rec.image_id = synth_image_id(split, index);
    im->rec.width = W, im->rec.height = H;
    rc = annotate(im, &g, s, lab, split);
done:
    free(s);
    free(reg);
    free(lab);
    free(img);
    if (rc != 0) {
        synth_image_free(im);
        cs_error_context("synth: image %d of %s", index, split == SYNTH_VAL ? "val" : "train");
    }
    return rc;
}

/* ---- files ---------------------------------------------------------------------------------- */

typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} JpegError;

static void jpeg_fail(j_common_ptr ci) {
    JpegError *e = (JpegError *)ci->err;
    (*ci->err->format_message)(ci, e->msg);
    longjmp(e->jump, 1);
}

static int write_jpeg(const char *path, const unsigned char *rgb, int W, int H) {
    char tmp[4096];
    CS_TRY(file_tmp_path(tmp, sizeof tmp, path));
    FILE *f = fopen(tmp, "wb");
    CS_CHECK(f, "cannot create %s: %s", tmp, strerror(errno));
    struct jpeg_compress_struct ci;
    JpegError err;
    ci.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_fail;
    if (setjmp(err.jump)) {
        jpeg_destroy_compress(&ci);
        file_commit_stream(f, tmp, path, 1);
        CS_FAIL("cannot write JPEG %s: %s", tmp, err.msg);
    }
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, f);
    ci.image_width = (JDIMENSION)W;
    ci.image_height = (JDIMENSION)H;
    ci.input_components = 3;
    ci.in_color_space = JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, 90, TRUE);
    /* 4:2:0 chroma subsampling, stated rather than left to the library's defaults */
    ci.comp_info[0].h_samp_factor = ci.comp_info[0].v_samp_factor = 2;
    for (int k = 1; k < 3; k++) ci.comp_info[k].h_samp_factor = ci.comp_info[k].v_samp_factor = 1;
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)ci.next_scanline * 3 * (size_t)W);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    return file_commit_stream(f, tmp, path, 0);
}

/* RGB PNG of segment ids (R + 256 G + 65536 B), with no colour-space or time chunks: the
 * bytes depend on the ids alone. */
static int write_png_ids(const char *path, const int32_t *ids, int W, int H) {
    unsigned char *rgb = cs_calloc_((size_t)W * H * 3, 1, __FILE__, __LINE__); /* (H, W, 3) */
    if (!rgb) return -1;
    for (size_t i = 0; i < (size_t)W * H; i++) {
        rgb[3 * i] = (unsigned char)(ids[i] & 255);
        rgb[3 * i + 1] = (unsigned char)((ids[i] >> 8) & 255);
        rgb[3 * i + 2] = (unsigned char)((ids[i] >> 16) & 255);
    }
    int rc = image_write_png_rgb(path, rgb, W, H);
    free(rgb);
    return rc;
}

static int make_dir(const char *path) {
    struct stat st;
    if (mkdir(path, 0777) == 0) return 0;
    int err = errno;
    CS_CHECK(err == EEXIST, "cannot create directory %s: %s", path, strerror(err));
    CS_CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode), "%s exists and is not a directory",
             path);
    return 0;
}

int synth_prepare_dirs(const char *out) {
    char p[4096];
    CS_CHECK(strlen(out) + 32 < sizeof p, "synth: output path too long: %s", out);
    strcpy(p, out);
    for (char *q = p + 1; *q; q++) /* parents first, as mkdir -p */
        if (*q == '/') {
            *q = 0;
            CS_TRY(make_dir(p));
            *q = '/';
        }
    CS_TRY(make_dir(out));
    snprintf(p, sizeof p, "%s/images", out);
    CS_TRY(make_dir(p));
    snprintf(p, sizeof p, "%s/panoptic_val", out);
    CS_TRY(make_dir(p));
    snprintf(p, sizeof p, "%s/panoptic_train", out);
    CS_TRY(make_dir(p));
    return 0;
}

int synth_records_push(SynthRecords *r, const SynthRecord *rec, const char *rle, size_t rle_len) {
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        SynthRecord *p = realloc(r->rec, (size_t)cap * sizeof *p);
        CS_CHECK(p, "out of memory for %d image records", cap);
        r->rec = p, r->cap = cap;
    }
    if (r->rle_len + rle_len > r->rle_cap) {
        size_t cap = r->rle_cap ? 2 * r->rle_cap : 1 << 16;
        while (cap < r->rle_len + rle_len) cap *= 2;
        char *p = realloc(r->rle, cap);
        CS_CHECK(p, "out of memory for %zu bytes of RLE", cap);
        r->rle = p, r->rle_cap = cap;
    }
    r->rec[r->n++] = *rec;
    if (rle_len) memcpy(r->rle + r->rle_len, rle, rle_len);
    r->rle_len += rle_len;
    return 0;
}

void synth_records_free(SynthRecords *r) {
    free(r->rec);
    free(r->rle);
    memset(r, 0, sizeof *r);
}

int synth_generate(const SynthConfig *c, const char *out, int rank, int nranks, SynthRecords *r,
                   Progress *p) {
    CS_TRY(synth_config_check(c));
    CS_CHECK(nranks > 0 && rank >= 0 && rank < nranks, "synth: rank %d of %d", rank, nranks);
    long total = (long)c->train + c->val, mine = 0;
    char path[4096];
    for (long i = rank; i < total; i += nranks) {
        int split = i < c->train ? SYNTH_TRAIN : SYNTH_VAL;
        int index = (int)(split == SYNTH_TRAIN ? i : i - c->train);
        SynthImage im;
        CS_TRY(synth_render(&im, c, split, index));
        int rc = 0, n = snprintf(path, sizeof path, "%s/images/%012d.jpg", out, im.rec.image_id);
        if (n <= 0 || (size_t)n >= sizeof path)
            rc = cs_error_set(__FILE__, __LINE__, "synth: output path too long: %s", out);
        if (rc == 0) rc = write_jpeg(path, im.rgb, im.width, im.height);
        if (rc == 0) {
            snprintf(path, sizeof path, "%s/panoptic_%s/%012d.png", out,
                     split == SYNTH_VAL ? "val" : "train", im.rec.image_id);
            rc = write_png_ids(path, im.ids, im.width, im.height);
        }
        if (rc == 0) rc = synth_records_push(r, &im.rec, im.rle, im.rle_len);
        synth_image_free(&im);
        CS_TRY(rc);
        mine++;
        if (p) progress_update(p, mine * nranks < total ? mine * nranks : total);
    }
    return 0;
}

/* ---- JSON ----------------------------------------------------------------------------------- */

typedef struct {
    FILE *f;
    int failed;
} JsonSink;

static void json_print(void *ctx, const char *s, size_t len) {
    JsonSink *o = ctx;
    if (fwrite(s, 1, len, o->f) != len) o->failed = 1;
}

/* Each generator call is checked; the first failure jumps to fail with the yajl status. */
#define J(call)                                                                                 \
    do {                                                                                       \
        yajl_gen_status st_ = (call);                                                          \
        if (st_ != yajl_gen_status_ok) {                                                       \
            cs_error_set(__FILE__, __LINE__, "JSON generator error %d in %s", (int)st_, #call); \
            goto fail;                                                                         \
        }                                                                                      \
    } while (0)

static yajl_gen_status jstr(yajl_gen g, const char *s) {
    return yajl_gen_string(g, (const unsigned char *)s, strlen(s));
}
static yajl_gen_status jkey_int(yajl_gen g, const char *k, long long v) {
    yajl_gen_status st = jstr(g, k);
    return st != yajl_gen_status_ok ? st : yajl_gen_integer(g, v);
}
static yajl_gen_status jkey_str(yajl_gen g, const char *k, const char *v) {
    yajl_gen_status st = jstr(g, k);
    return st != yajl_gen_status_ok ? st : jstr(g, v);
}
static yajl_gen_status jints(yajl_gen g, const int32_t *v, int n) {
    yajl_gen_status st = yajl_gen_array_open(g);
    for (int i = 0; i < n && st == yajl_gen_status_ok; i++) st = yajl_gen_integer(g, v[i]);
    return st != yajl_gen_status_ok ? st : yajl_gen_array_close(g);
}

/* The categories list: panoptic style (all, with isthing and color) or instances style
 * (things only). */
static int json_categories(yajl_gen g, int panoptic) {
    J(yajl_gen_array_open(g));
    for (int i = 0; i < synth_num_categories; i++) {
        const SynthCategory *c = &synth_categories[i];
        if (!panoptic && !c->isthing) continue;
        J(yajl_gen_map_open(g));
        J(jkey_str(g, "supercategory", c->supercategory));
        J(jkey_int(g, "id", c->id));
        J(jkey_str(g, "name", c->name));
        if (panoptic) {
            int32_t col[3] = {c->color[0], c->color[1], c->color[2]};
            J(jkey_int(g, "isthing", c->isthing));
            J(jstr(g, "color"));
            J(jints(g, col, 3));
        }
        J(yajl_gen_map_close(g));
    }
    J(yajl_gen_array_close(g));
    return 0;
fail:
    return -1;
}

static int json_info(yajl_gen g, const SynthConfig *c) {
    J(jstr(g, "info"));
    J(yajl_gen_map_open(g));
    J(jkey_str(g, "description", "clipself synthetic world (pipeline/synth.c)"));
    J(jkey_str(g, "version", "1"));
    J(jkey_int(g, "seed", c->seed));
    J(jkey_int(g, "train_images", c->train));
    J(jkey_int(g, "val_images", c->val));
    J(jkey_int(g, "min_size", c->min_size));
    J(jkey_int(g, "max_size", c->max_size));
    J(yajl_gen_map_close(g));
    J(jstr(g, "licenses"));
    J(yajl_gen_array_open(g));
    J(yajl_gen_array_close(g));
    return 0;
fail:
    return -1;
}

static int json_image(yajl_gen g, const SynthRecord *r) {
    char name[32];
    snprintf(name, sizeof name, "%012d.jpg", r->image_id);
    J(yajl_gen_map_open(g));
    J(jkey_int(g, "id", r->image_id));
    J(jkey_str(g, "file_name", name));
    J(jkey_int(g, "width", r->width));
    J(jkey_int(g, "height", r->height));
    J(yajl_gen_map_close(g));
    return 0;
fail:
    return -1;
}

/* DOC_PANOPTIC: the val split's panoptic JSON; DOC_PANOPTIC_TRAIN the train split's (things
 * and stuff, for training a teacher: pretrain_teacher). */
typedef enum { DOC_INSTANCES, DOC_PANOPTIC, DOC_PANOPTIC_TRAIN, DOC_CATEGORIES } DocKind;

/* The body of one JSON document. order: the records sorted; off[i]: start of record i's RLE. */
static int json_document(yajl_gen g, DocKind kind, const SynthConfig *c, const SynthRecords *all,
                         const int *order, const size_t *off) {
    if (kind == DOC_CATEGORIES) return json_categories(g, 1);
    int split = kind == DOC_PANOPTIC ? SYNTH_VAL : SYNTH_TRAIN;
    if (kind == DOC_PANOPTIC_TRAIN) kind = DOC_PANOPTIC; /* the same document, the other split */
    J(yajl_gen_map_open(g));
    if (json_info(g, c) != 0) goto fail;
    J(jstr(g, "images"));
    J(yajl_gen_array_open(g));
    for (int i = 0; i < all->n; i++)
        if (all->rec[order[i]].split == split && json_image(g, &all->rec[order[i]]) != 0) goto fail;
    J(yajl_gen_array_close(g));
    J(jstr(g, "annotations"));
    J(yajl_gen_array_open(g));
    long ann_id = 0;
    for (int i = 0; i < all->n; i++) {
        const SynthRecord *r = &all->rec[order[i]];
        if (r->split != split) continue;
        char png[32];
        snprintf(png, sizeof png, "%012d.png", r->image_id);
        if (kind == DOC_PANOPTIC) {
            J(yajl_gen_map_open(g));
            J(jkey_int(g, "image_id", r->image_id));
            J(jkey_str(g, "file_name", png));
            J(jstr(g, "segments_info"));
            J(yajl_gen_array_open(g));
        }
        size_t o = off[order[i]];
        for (int q = 0; q < r->nseg; q++) {
            const SynthSegment *sg = &r->seg[q];
            const char *rle = all->rle + o;
            o += (size_t)sg->rle_len;
            if (kind == DOC_INSTANCES && !synth_category(sg->category_id)->isthing) continue;
            J(yajl_gen_map_open(g));
            if (kind == DOC_PANOPTIC) {
                J(jkey_int(g, "id", sg->id));
            } else {
                int32_t size[2] = {r->height, r->width};
                J(jkey_int(g, "id", ++ann_id));
                J(jkey_int(g, "image_id", r->image_id));
                J(jstr(g, "segmentation"));
                J(yajl_gen_map_open(g));
                J(jstr(g, "size"));
                J(jints(g, size, 2));
                J(jstr(g, "counts"));
                J(yajl_gen_string(g, (const unsigned char *)rle, (size_t)sg->rle_len));
                J(yajl_gen_map_close(g));
            }
            J(jkey_int(g, "category_id", sg->category_id));
            J(jstr(g, "bbox"));
            J(jints(g, sg->bbox, 4));
            J(jkey_int(g, "area", sg->area));
            J(jkey_int(g, "iscrowd", 0));
            J(yajl_gen_map_close(g));
        }
        if (kind == DOC_PANOPTIC) {
            J(yajl_gen_array_close(g));
            J(yajl_gen_map_close(g));
        }
    }
    J(yajl_gen_array_close(g));
    J(jstr(g, "categories"));
    if (json_categories(g, kind == DOC_PANOPTIC) != 0) goto fail;
    J(yajl_gen_map_close(g));
    return 0;
fail:
    return -1;
}

static int write_json(const char *out, const char *name, DocKind kind, const SynthConfig *c,
                      const SynthRecords *all, const int *order, const size_t *off) {
    char path[4096], tmp[4096];
    int n = snprintf(path, sizeof path, "%s/%s", out, name);
    CS_CHECK(n > 0 && (size_t)n < sizeof path, "synth: output path too long: %s", out);
    CS_TRY(file_tmp_path(tmp, sizeof tmp, path));
    JsonSink sink = {fopen(tmp, "wb"), 0};
    CS_CHECK(sink.f, "cannot create %s: %s", tmp, strerror(errno));
    yajl_gen g = yajl_gen_alloc(NULL);
    int rc = -1;
    if (!g) {
        cs_error_set(__FILE__, __LINE__, "cannot allocate a JSON generator for %s", path);
    } else {
        yajl_gen_config(g, yajl_gen_print_callback, json_print, &sink);
        rc = json_document(g, kind, c, all, order, off);
        yajl_gen_free(g);
        if (rc != 0) cs_error_context("writing %s", path);
    }
    if (rc == 0 && sink.failed) rc = cs_error_set(__FILE__, __LINE__, "cannot write %s", tmp);
    if (rc == 0 && fputc('\n', sink.f) == EOF)
        rc = cs_error_set(__FILE__, __LINE__, "cannot write %s", tmp);
    return file_commit_stream(sink.f, tmp, path, rc != 0);
}

typedef struct {
    int64_t key; /* split, then index */
    int pos;
} SortKey;

static int by_key(const void *a, const void *b) {
    int64_t x = ((const SortKey *)a)->key, y = ((const SortKey *)b)->key;
    return (x > y) - (x < y);
}

int synth_write_annotations(const SynthConfig *c, const char *out, const SynthRecords *all) {
    CS_TRY(synth_config_check(c));
    CS_CHECK(all->n == c->train + c->val,
             "synth: %d image records for %d train + %d val images", all->n, c->train, c->val);
    int *order = cs_calloc_((size_t)all->n, sizeof *order, __FILE__, __LINE__);
    size_t *off = cs_calloc_((size_t)all->n, sizeof *off, __FILE__, __LINE__);
    SortKey *keys = cs_calloc_((size_t)all->n, sizeof *keys, __FILE__, __LINE__);
    int rc = -1;
    if (!order || !off || !keys) goto done;
    size_t o = 0;
    for (int i = 0; i < all->n; i++) {
        keys[i].key = (int64_t)all->rec[i].split * SYNTH_VAL_ID_BASE + all->rec[i].index;
        keys[i].pos = i;
        off[i] = o;
        for (int q = 0; q < all->rec[i].nseg; q++) o += (size_t)all->rec[i].seg[q].rle_len;
    }
    if (o != all->rle_len) {
        cs_error_set(__FILE__, __LINE__, "synth: records name %zu RLE chars, %zu were given", o,
                     all->rle_len);
        goto done;
    }
    qsort(keys, (size_t)all->n, sizeof *keys, by_key);
    for (int i = 0; i < all->n; i++) order[i] = keys[i].pos;
    for (int i = 0; i < all->n; i++) {
        const SynthRecord *r = &all->rec[order[i]];
        int want_split = i < c->train ? SYNTH_TRAIN : SYNTH_VAL;
        int want_index = i < c->train ? i : i - c->train;
        if (r->split != want_split || r->index != want_index) {
            cs_error_set(__FILE__, __LINE__, "synth: %s image %d is missing or duplicated",
                         want_split == SYNTH_VAL ? "val" : "train", want_index);
            goto done;
        }
    }
    if (write_json(out, "instances_train.json", DOC_INSTANCES, c, all, order, off) != 0 ||
        write_json(out, "panoptic_train.json", DOC_PANOPTIC_TRAIN, c, all, order, off) != 0 ||
        write_json(out, "panoptic_val.json", DOC_PANOPTIC, c, all, order, off) != 0 ||
        write_json(out, "categories.json", DOC_CATEGORIES, c, all, order, off) != 0)
        goto done;
    rc = 0;
done:
    free(order);
    free(off);
    free(keys);
    return rc;
}
