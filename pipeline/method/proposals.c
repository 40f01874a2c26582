/* proposals.c: ground-truth-derived proposals and their JSON (see proposals.h). */
#include "method/proposals.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>

#include "base/check.h"
#include "base/fileio.h"
#include "base/rng.h"

/* One box (x, y, w, h) clipped to [0, W] x [0, H]; 0 if less than a pixel is left. */
static int clip_box(double b[4], int W, int H) {
    double x0 = fmax(b[0], 0.0), y0 = fmax(b[1], 0.0);
    double x1 = fmin(b[0] + b[2], (double)W), y1 = fmin(b[1] + b[3], (double)H);
    b[0] = x0, b[1] = y0, b[2] = x1 - x0, b[3] = y1 - y0;
    return b[2] >= 1.0 && b[3] >= 1.0;
}

int proposals_jitter(CocoProposals *out, const CocoProposals *gt, int per_object, double jitter,
                     int random, uint64_t seed) {
    *out = (CocoProposals){0};
    CS_CHECK(per_object >= 0 && random >= 0 && jitter >= 0 && per_object + random > 0,
             "need per-object >= 0, random >= 0 (not both 0) and jitter >= 0");
    long cap = gt->num_boxes * per_object + (long)gt->num_images * random;
    CocoProposals p = {.num_images = gt->num_images};
    p.images = calloc((size_t)(gt->num_images ? gt->num_images : 1), sizeof *p.images);
    p.first = calloc((size_t)(gt->num_images ? gt->num_images : 1), sizeof *p.first);
    p.count = calloc((size_t)(gt->num_images ? gt->num_images : 1), sizeof *p.count);
    p.box = calloc((size_t)(cap ? cap : 1), sizeof *p.box);
    if (!p.images || !p.first || !p.count || !p.box) {
        coco_proposals_free(&p);
        CS_FAIL("out of memory for %ld proposals", cap);
    }
    memcpy(p.images, gt->images, (size_t)gt->num_images * sizeof *p.images);
    long n = 0;
    for (int i = 0; i < gt->num_images; i++) {
        const CocoImage *im = &gt->images[i];
        uint64_t s = seed ^ rng_mix64((uint64_t)im->id * 0xD1B54A32D192ED03ULL + 1);
        p.first[i] = n;
        for (int k = 0; k < gt->count[i]; k++) {
            const double *g = gt->box[gt->first[i] + k];
            for (int c = 0; c < per_object; c++) {
                double w = g[2] * exp(jitter * rng_normal(&s));
                double h = g[3] * exp(jitter * rng_normal(&s));
                double cx = g[0] + g[2] / 2 + jitter * g[2] * rng_normal(&s);
                double cy = g[1] + g[3] / 2 + jitter * g[3] * rng_normal(&s);
                double b[4] = {cx - w / 2, cy - h / 2, w, h};
                if (clip_box(b, im->width, im->height)) memcpy(p.box[n++], b, sizeof b);
            }
        }
        for (int r = 0; r < random; r++) {
            double w = im->width * (0.1 + 0.5 * rng_uniform(&s));
            double h = im->height * (0.1 + 0.5 * rng_uniform(&s));
            double b[4] = {(im->width - w) * rng_uniform(&s), (im->height - h) * rng_uniform(&s),
                           w, h};
            if (clip_box(b, im->width, im->height)) memcpy(p.box[n++], b, sizeof b);
        }
        p.count[i] = (int)(n - p.first[i]);
    }
    p.num_boxes = n;
    /* the file names point into gt's strings: the caller keeps gt until p is freed */
    *out = p;
    return 0;
}

#define GS(g, s) yajl_gen_string(g, (const unsigned char *)(s), strlen(s))

int proposals_write_json(const CocoProposals *p, const char *path, const char *description) {
    yajl_gen g = yajl_gen_alloc(NULL);
    CS_CHECK(g, "out of memory");
    yajl_gen_map_open(g);
    GS(g, "info");
    yajl_gen_map_open(g);
    GS(g, "description"), GS(g, description ? description : "");
    yajl_gen_map_close(g);
    GS(g, "images");
    yajl_gen_array_open(g);
    for (int i = 0; i < p->num_images; i++) {
        const CocoImage *im = &p->images[i];
        yajl_gen_map_open(g);
        GS(g, "id"), yajl_gen_integer(g, im->id);
        GS(g, "file_name"), GS(g, im->file_name);
        GS(g, "width"), yajl_gen_integer(g, im->width);
        GS(g, "height"), yajl_gen_integer(g, im->height);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    GS(g, "annotations");
    yajl_gen_array_open(g);
    long id = 0;
    for (int i = 0; i < p->num_images; i++)
        for (int k = 0; k < p->count[i]; k++) {
            const double *b = p->box[p->first[i] + k];
            yajl_gen_map_open(g);
            GS(g, "id"), yajl_gen_integer(g, ++id);
            GS(g, "image_id"), yajl_gen_integer(g, p->images[i].id);
            GS(g, "bbox");
            yajl_gen_array_open(g);
            for (int q = 0; q < 4; q++) {
                char num[32]; /* 0.01 px is finer than any crop needs; the file stays small */
                int len = snprintf(num, sizeof num, "%.2f", b[q]);
                yajl_gen_number(g, num, (size_t)len);
            }
            yajl_gen_array_close(g);
            yajl_gen_map_close(g);
        }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    return file_write_json(g, path);
}
