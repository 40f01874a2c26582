/* picture.h: pictures of what evaluation sees, for people who would rather look than read.
 *
 * One PNG per image: a single row of panels, all of the image's displayed size (pw, ph): the
 * image resized so that its longest side is S (picture_panel_size), separated by PICTURE_GAP
 * columns of white. The panels, always in this order:
 *   1. the image, resized with image_resize_bicubic (PIL's bicubic);
 *   2. the ground-truth panoptic segmentation: each panel pixel shows the segment under the
 *      centre of its panel pixel (nearest neighbour) in the palette colour of the segment's
 *      category; unlabelled pixels (id 0, or an id missing from segments_info) are black; a
 *      pixel whose segment differs from the one right of it or below it (in the panel) is a
 *      boundary, drawn at half brightness (each channel v / 2, rounded down);
 *   3. only with a comparison model: that model's zero-shot class map;
 *   4. the evaluated model's zero-shot class map.
 * A class map is the model's v2 dense map of the evaluation's full-image input (longest side
 * resized to det, padded right and bottom; regioneval computes it), each token classified by
 * cosine against the class embeddings (argmax; ties go to the lower class index), coloured with
 * the palette. Only the tokens under the image are shown, not the padding: the image fills
 * (rw, rh) = round(W * det / max(W, H)), round(H * det / max(W, H)) (Python's round) pixels of
 * the input, and panel pixel (x, y) shows token
 *   gx = floor((x + 1/2) * rw / pw / P),  gy = floor((y + 1/2) * rh / ph / P)   (P the patch).
 * The ground truth samples source pixel sx = floor((x + 1/2) * W / pw), likewise sy.
 *
 * Palette: class index k (position in ascending category-id order, as ClassEmbeddings) has a
 * fixed colour: 20 well-separated colours, then (for COCO's 133 classes) colours picked
 * greedily from a 6-level RGB grid, each the farthest from all before it and from black and
 * white; 160 distinct colours, then it repeats. The dataset's own category colours are not
 * used (coco.h does not keep them, and not every categories list has them). legend.txt lists
 * the colours with the class names.
 *
 * PNGs are 8-bit RGB without time or colour-space chunks, written to "<path>.tmp.<pid>" and
 * renamed into place (file_commit). */
#ifndef CLIPSELF_PICTURE_H
#define CLIPSELF_PICTURE_H

#include <stddef.h>
#include <stdint.h>

#include "io/classes.h"
#include "io/coco.h"
#include "io/image.h"
#include "model/vit.h"

#define PICTURE_GAP 4       /* white columns between panels */
#define PICTURE_MAX_SIZE 4096

/* The colour of class index k >= 0 (rgb 0..255); black for k < 0 (unlabelled). */
void picture_palette(int k, unsigned char rgb[3]);

/* The displayed size of a W x H image with longest side S: round half up of W * S / max(W, H)
 * and of H * S / max(W, H), at least 1: pw = (2 W S + M) / (2 M) in integers, M = max(W, H). */
int picture_panel_size(int W, int H, int S, int *pw, int *ph);

/* cls (n) = argmax_k <dense[i], emb[k]> of dense (n, E), E = ce->embed (ties: lowest k). */
void picture_class_map(int *cls, const float *dense, int n, const ClassEmbeddings *ce);

/* Write the legend: one line "r g b name" per class in class-index order, then
 * "0 0 0 unlabelled"; atomically. */
int picture_write_legend(const char *path, const CocoCategories *cats);

typedef struct {
    char dir[4096];
    int size;                      /* S: longest side of a panel */
    int det;                       /* full-image input side of the dense maps */
    const ClassEmbeddings *classes;
    Vit *vs;                       /* comparison model (panel 3) or NULL */
    int *vs_cls;                   /* (gv*gv) class of each token of vs, gv = det / vs patch */
    int *cls;                      /* (g*g) class of each token of the model; grown as needed */
    size_t cls_cap;                /* ints allocated at cls */
    Image shown;                   /* (ph, pw, 3) the image resized to the panel */
    ImageWork ws;
    uint32_t *panel_ids;           /* (ph, pw) ground-truth segment id under each panel pixel */
    unsigned char *canvas;         /* (ph, panels * pw + (panels - 1) * PICTURE_GAP, 3) */
    size_t panel_cap, canvas_cap;  /* pixels allocated at panel_ids, bytes at canvas */
} Pictures;

/* Create dir (and its parents; existing ones are fine). vs (may be NULL) is the comparison
 * model: its embedding must match the classes and det must be a multiple of its patch. Keeps
 * pointers to classes and vs. */
int pictures_init(Pictures *p, const char *dir, int size, int det, const ClassEmbeddings *classes,
                  Vit *vs);
void pictures_free(Pictures *p);

/* dir/legend.txt (picture_write_legend). */
int pictures_write_legend(const Pictures *p, const CocoCategories *cats);

/* Draw dir/<pi->id>.png. im is the decoded image, ids (H, W) its panoptic segment ids, full
 * (3, det, det) the normalised full-image input and dense (g*g, E) the evaluated model's dense
 * map of it, g = det / patch (RegionEval's full and dense after regioneval_image). Runs the
 * comparison model's dense forward on full. */
int pictures_draw(Pictures *p, const Image *im, const uint32_t *ids, const CocoPanopticImage *pi,
                  const float *full, const float *dense, int patch);

#endif
