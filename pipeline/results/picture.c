/* picture.c: palette, class maps, panel composition and PNG writing (see picture.h). */
#include "results/picture.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/check.h"
#include "base/fileio.h"
#include "base/geometry.h"
#include "io/h5util.h"

/* ---- palette ------------------------------------------------------------------------------ */

#define PALETTE_BASE 20
#define PALETTE_SIZE 160
#define PALETTE_LEVELS 6 /* the grid the colours after the first 20 are chosen from */

/* 20 well-separated colours (Sasha Trubetskoy's list of distinct colours). */
static const unsigned char palette_base[PALETTE_BASE][3] = {
    {230, 25, 75},   {60, 180, 75},   {255, 225, 25},  {67, 99, 216},   {245, 130, 49},
    {145, 30, 180},  {66, 212, 244},  {240, 50, 230},  {191, 239, 69},  {250, 190, 212},
    {70, 153, 144},  {220, 190, 255}, {154, 99, 36},   {255, 250, 200}, {128, 0, 0},
    {170, 255, 195}, {128, 128, 0},   {255, 216, 177}, {0, 0, 117},     {169, 169, 169},
};

static unsigned char palette[PALETTE_SIZE][3]; /* (PALETTE_SIZE, 3) filled once */
static pthread_once_t palette_once = PTHREAD_ONCE_INIT;

static int dist2(const unsigned char *a, const unsigned char *b) {
    int d = 0;
    for (int c = 0; c < 3; c++) d += (a[c] - b[c]) * (a[c] - b[c]);
    return d;
}

/* The base table, then greedily the colour of the 6 x 6 x 6 grid (levels 0, 51, .., 255)
 * farthest (Euclidean RGB) from every colour taken so far, black (unlabelled) and white (the
 * gaps) included; ties go to the first in grid order. */
static void palette_fill(void) {
    enum { NC = PALETTE_LEVELS * PALETTE_LEVELS * PALETTE_LEVELS };
    unsigned char cand[NC][3]; /* (NC, 3) the grid */
    int mind[NC];              /* (NC) squared distance to the nearest colour taken */
    static const unsigned char black[3] = {0, 0, 0}, white[3] = {255, 255, 255};
    for (int i = 0; i < NC; i++) {
        cand[i][0] = (unsigned char)(i / (PALETTE_LEVELS * PALETTE_LEVELS) * 51);
        cand[i][1] = (unsigned char)(i / PALETTE_LEVELS % PALETTE_LEVELS * 51);
        cand[i][2] = (unsigned char)(i % PALETTE_LEVELS * 51);
        int a = dist2(cand[i], black), b = dist2(cand[i], white);
        mind[i] = a < b ? a : b;
    }
    for (int k = 0; k < PALETTE_SIZE; k++) {
        if (k < PALETTE_BASE) {
            memcpy(palette[k], palette_base[k], 3);
        } else {
            int best = 0;
            for (int i = 1; i < NC; i++)
                if (mind[i] > mind[best]) best = i;
            memcpy(palette[k], cand[best], 3);
        }
        for (int i = 0; i < NC; i++) {
            int d = dist2(cand[i], palette[k]);
            mind[i] = d < mind[i] ? d : mind[i];
        }
    }
}

void picture_palette(int k, unsigned char rgb[3]) {
    if (k < 0) {
        rgb[0] = rgb[1] = rgb[2] = 0;
        return;
    }
    pthread_once(&palette_once, palette_fill);
    memcpy(rgb, palette[k % PALETTE_SIZE], 3);
}

/* ---- geometry ----------------------------------------------------------------------------- */

int picture_panel_size(int W, int H, int S, int *pw, int *ph) {
    CS_CHECK(W > 0 && H > 0, "picture: empty image (%d x %d)", W, H);
    CS_CHECK(S > 0 && S <= PICTURE_MAX_SIZE, "picture: panel size %d is not in 1..%d", S,
             PICTURE_MAX_SIZE);
    long long M = W > H ? W : H;
    long long w = (2LL * W * S + M) / (2 * M), h = (2LL * H * S + M) / (2 * M);
    *pw = w > 0 ? (int)w : 1;
    *ph = h > 0 ? (int)h : 1;
    return 0;
}

void picture_class_map(int *cls, const float *dense, int n, const ClassEmbeddings *ce) {
    int K = ce->num, E = ce->embed;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *f = dense + (size_t)i * E; /* (E) one token */
        int best = 0;
        float best_s = -INFINITY;
        for (int k = 0; k < K; k++) {
            const float *e = ce->emb + (size_t)k * E; /* (E) one class */
            float s = 0.0f;
            for (int j = 0; j < E; j++) s += f[j] * e[j];
            if (s > best_s) best_s = s, best = k;
        }
        cls[i] = best;
    }
}

/* ---- files -------------------------------------------------------------------------------- */

/* Close f (opened on tmp) and, if ok, publish tmp as path; on any failure tmp is removed. */
static int finish_tmp(FILE *f, const char *tmp, const char *path, int ok) {
    int closed = fclose(f) == 0;
    if (!ok) {
        unlink(tmp);
        return -1;
    }
    if (!closed) {
        int e = errno;
        unlink(tmp);
        CS_FAIL("cannot write %s: %s", tmp, strerror(e));
    }
    return file_commit(tmp, path);
}

int picture_write_legend(const char *path, const CocoCategories *cats) {
    char tmp[4200];
    CS_TRY(file_tmp_path(tmp, sizeof tmp, path));
    FILE *f = fopen(tmp, "w");
    CS_CHECK(f, "cannot create %s: %s", tmp, strerror(errno));
    int ok = 1;
    for (int k = 0; k < cats->num && ok; k++) {
        unsigned char c[3];
        char name[256];
        picture_palette(k, c);
        snprintf(name, sizeof name, "%s", cats->cats[k].name);
        for (char *q = name; *q; q++) /* one class per line, whatever the name holds */
            if ((unsigned char)*q < 0x20) *q = ' ';
        ok = fprintf(f, "%d %d %d %s\n", c[0], c[1], c[2], name) > 0;
    }
    ok = ok && fprintf(f, "0 0 0 unlabelled\n") > 0;
    if (!ok) cs_error_set(__FILE__, __LINE__, "cannot write %s: %s", tmp, strerror(errno));
    return finish_tmp(f, tmp, path, ok);
}

/* mkdir -p: parents first; existing directories are fine. */
static int make_dirs(const char *dir) {
    char p[4096];
    size_t n = strlen(dir);
    CS_CHECK(n > 0 && n < sizeof p, "picture: bad directory name '%s'", dir);
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char saved = p[i];
        p[i] = '\0';
        if (mkdir(p, 0777) != 0) {
            int e = errno;
            struct stat st;
            CS_CHECK(e == EEXIST, "cannot create directory %s: %s", p, strerror(e));
            CS_CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode), "%s exists and is not a "
                     "directory", p);
        }
        p[i] = saved;
    }
    return 0;
}

/* ---- pictures ----------------------------------------------------------------------------- */

int pictures_init(Pictures *p, const char *dir, int size, int det, const ClassEmbeddings *classes,
                  Vit *vs) {
    memset(p, 0, sizeof *p);
    CS_CHECK(strlen(dir) + 32 < sizeof p->dir, "picture: directory name too long: %s", dir);
    CS_CHECK(size > 0 && size <= PICTURE_MAX_SIZE, "picture: panel size %d is not in 1..%d",
             size, PICTURE_MAX_SIZE);
    CS_CHECK(det > 0, "picture: det size %d", det);
    if (vs) {
        CS_CHECK(vs->cfg.embed == classes->embed, "picture: the comparison model embeds in %d "
                 "dimensions, the class embeddings have %d", vs->cfg.embed, classes->embed);
        CS_CHECK(det % vs->cfg.patch == 0, "picture: det size %d is not a multiple of the "
                 "comparison model's patch %d", det, vs->cfg.patch);
        int gv = det / vs->cfg.patch;
        CS_ALLOC(p->vs_cls, (size_t)gv * gv);
    }
    CS_TRY(make_dirs(dir));
    snprintf(p->dir, sizeof p->dir, "%s", dir);
    p->size = size, p->det = det, p->classes = classes, p->vs = vs;
    return 0;
}

void pictures_free(Pictures *p) {
    free(p->vs_cls), free(p->cls), free(p->panel_ids), free(p->canvas);
    image_free(&p->shown);
    image_work_free(&p->ws);
    memset(p, 0, sizeof *p);
}

int pictures_write_legend(const Pictures *p, const CocoCategories *cats) {
    char path[4200];
    snprintf(path, sizeof path, "%s/legend.txt", p->dir);
    return picture_write_legend(path, cats);
}

/* The class index of segment id under pi; -1 for unlabelled. */
static int segment_class(const CocoPanopticImage *pi, uint32_t id) {
    if (id == 0) return -1;
    for (int s = 0; s < pi->num_segments; s++)
        if (pi->segments[s].id == id) return pi->segments[s].category;
    return -1;
}

/* Panel 2 into dst (ph rows of stride bytes, pw pixels used): ids (H, W) -> p->panel_ids
 * (ph, pw) by nearest neighbour, coloured by category, boundaries at half brightness. */
static void draw_segments(Pictures *p, unsigned char *dst, size_t stride, int pw, int ph,
                          const uint32_t *ids, int W, int H, const CocoPanopticImage *pi) {
    uint32_t *pid = p->panel_ids; /* (ph, pw) */
    for (int y = 0; y < ph; y++) {
        int sy = (int)((2LL * y + 1) * H / (2LL * ph));
        for (int x = 0; x < pw; x++) {
            int sx = (int)((2LL * x + 1) * W / (2LL * pw));
            pid[(size_t)y * pw + x] = ids[(size_t)sy * W + sx];
        }
    }
    uint32_t last_id = 0;
    int last_cls = -1;
    for (int y = 0; y < ph; y++)
        for (int x = 0; x < pw; x++) {
            uint32_t id = pid[(size_t)y * pw + x];
            if (id != last_id) last_id = id, last_cls = segment_class(pi, id);
            int edge = (x + 1 < pw && pid[(size_t)y * pw + x + 1] != id) ||
                       (y + 1 < ph && pid[(size_t)(y + 1) * pw + x] != id);
            unsigned char *o = dst + (size_t)y * stride + (size_t)x * 3;
            picture_palette(last_cls, o);
            if (edge)
                for (int c = 0; c < 3; c++) o[c] = (unsigned char)(o[c] / 2);
        }
}

/* A class-map panel into dst: cls (g, g) of a det x det input whose image part is rw x rh
 * pixels, patch P; panel pixel (x, y) shows the token under its centre (picture.h). */
static void draw_class_map(unsigned char *dst, size_t stride, int pw, int ph, const int *cls,
                           int g, int P, int rw, int rh) {
    for (int y = 0; y < ph; y++) {
        int gy = (int)((2LL * y + 1) * rh / (2LL * ph * P));
        gy = gy < g ? gy : g - 1;
        for (int x = 0; x < pw; x++) {
            int gx = (int)((2LL * x + 1) * rw / (2LL * pw * P));
            gx = gx < g ? gx : g - 1;
            picture_palette(cls[gy * g + gx], dst + (size_t)y * stride + (size_t)x * 3);
        }
    }
}

int pictures_draw(Pictures *p, const Image *im, const uint32_t *ids, const CocoPanopticImage *pi,
                  const float *full, const float *dense, int patch) {
    int W = im->w, H = im->h, pw, ph;
    CS_CHECK(patch > 0 && p->det % patch == 0, "picture: det size %d is not a multiple of the "
             "patch %d", p->det, patch);
    CS_TRY(picture_panel_size(W, H, p->size, &pw, &ph));
    int panels = p->vs ? 4 : 3;
    int cw = panels * pw + (panels - 1) * PICTURE_GAP;
    size_t stride = (size_t)cw * 3;
    /* buffers: panel ids (ph, pw), canvas (ph, cw, 3), token classes (g, g) */
    if ((size_t)pw * ph > p->panel_cap) {
        free(p->panel_ids);
        p->panel_cap = 0;
        CS_ALLOC(p->panel_ids, (size_t)pw * ph);
        p->panel_cap = (size_t)pw * ph;
    }
    if (stride * ph > p->canvas_cap) {
        free(p->canvas);
        p->canvas_cap = 0;
        CS_ALLOC(p->canvas, stride * ph);
        p->canvas_cap = stride * ph;
    }
    int g = p->det / patch;
    if ((size_t)g * g > p->cls_cap) {
        free(p->cls);
        p->cls_cap = 0;
        CS_ALLOC(p->cls, (size_t)g * g);
        p->cls_cap = (size_t)g * g;
    }
    unsigned char *canvas = p->canvas; /* (ph, cw, 3) */
    memset(canvas, 255, stride * ph);
    size_t panel_step = (size_t)(pw + PICTURE_GAP) * 3; /* bytes from one panel to the next */
    /* 1. the image */
    CS_TRY(image_resize_bicubic(&p->shown, im, pw, ph, &p->ws));
    for (int y = 0; y < ph; y++)
        memcpy(canvas + (size_t)y * stride, p->shown.px + (size_t)y * pw * 3, (size_t)pw * 3);
    /* 2. the ground truth */
    draw_segments(p, canvas + panel_step, stride, pw, ph, ids, W, H, pi);
    /* 3. and 4. class maps over the image part of the det x det input */
    double scale = geom_fit_scale(p->det, W, H);
    int rw = (int)geom_round_half_even(W * scale), rh = (int)geom_round_half_even(H * scale);
    rw = rw < 1 ? 1 : rw, rh = rh < 1 ? 1 : rh;
    if (p->vs) {
        Vit *v = p->vs;
        int gv = p->det / v->cfg.patch;
        CS_TRY(vit_prepare(v, VIT_DENSE, 1, p->det, p->det, 0));
        vit_forward(v, full);
        picture_class_map(p->vs_cls, v->acts.out, gv * gv, p->classes);
        draw_class_map(canvas + 2 * panel_step, stride, pw, ph, p->vs_cls, gv, v->cfg.patch, rw,
                       rh);
    }
    picture_class_map(p->cls, dense, g * g, p->classes);
    draw_class_map(canvas + (size_t)(panels - 1) * panel_step, stride, pw, ph, p->cls, g, patch,
                   rw, rh);
    char path[4200];
    snprintf(path, sizeof path, "%s/%lld.png", p->dir, (long long)pi->id);
    return image_write_png_rgb(path, canvas, cw, ph);
}
