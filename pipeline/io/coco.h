/* coco.h: reading COCO annotation files: the image list of an instances JSON (training), the
 * panoptic JSON (evaluation), category lists, and joining an annotation's file_name to an image
 * root without letting it escape.
 *
 * The files are streamed through yajl's callback parser and only the fields below are kept, so
 * the 448 MB train2017 instances file (860k polygons) is read in a few MB. Everything else
 * (annotations of an instances file, info, licenses, colors, polygons, RLE, ...) is skipped
 * whatever its nesting, and the top-level keys may come in any order.
 *
 * Errors name the file and say what was expected, where: a JSON path such as
 * "images[3].width" and the byte offset, line and column at which the parse stopped (truncated
 * file, bad token, wrong type, missing required field). On failure the output is left zeroed:
 * nothing needs freeing. The free functions accept a zeroed struct. */
#ifndef CLIPSELF_COCO_H
#define CLIPSELF_COCO_H

#include <stddef.h>
#include <stdint.h>

/* One entry of "images". Required: id (integer), file_name (non-empty string), width and
 * height (positive integers). */
typedef struct {
    int64_t id;
    const char *file_name; /* relative to the image root; points into the owner's strings */
    int width, height;     /* pixels, as the JSON says (the decoder checks them) */
} CocoImage;

typedef struct {
    int num;
    CocoImage *images; /* (num) sorted by id */
    char *strings;     /* every file_name, NUL-terminated, one allocation */
} CocoImages;

/* One category. Required: id (integer), name (non-empty string); isthing (0 or 1, or a JSON
 * boolean) is required in a panoptic file and defaults to 1 in a category list, since
 * instances-style lists (coco_detection_categories.json) have only things; supercategory is
 * optional (""). */
typedef struct {
    int id;                    /* COCO category id: not contiguous (1..90, 92..200) */
    const char *name;
    const char *supercategory;
    int isthing;
} CocoCategory;

/* Categories in ascending id order, so a category's position is its contiguous class index:
 * the reference evaluation labels classes by enumerate(sorted(category ids)), and the class
 * embeddings are stored in that order. Duplicate ids are an error. */
typedef struct {
    int num;
    int num_things;
    CocoCategory *cats; /* (num) sorted by id */
    char *strings;
} CocoCategories;

/* One entry of an annotation's "segments_info". All fields are required. */
typedef struct {
    uint32_t id;     /* the segment's colour in the PNG: R + 256 G + 256^2 B */
    int category_id; /* COCO id */
    int category;    /* contiguous index into CocoPanoptic.categories.cats */
    double bbox[4];  /* x, y, w, h in original pixels (w, h >= 0), double as the reference
                      * keeps them until the crop is rounded */
    double area;     /* pixels */
    int iscrowd;     /* 0 or 1 */
} CocoSegment;

/* An image of the panoptic file with its annotation. */
typedef struct {
    int64_t id;
    const char *file_name; /* the image, relative to the evaluation image root */
    int width, height;
    const char *png_name;  /* the annotation's file_name: the PNG, relative to the PNG folder */
    int num_segments;
    CocoSegment *segments; /* (num_segments) in file order; points into segments_mem */
} CocoPanopticImage;

/* A panoptic file. Annotations are matched to images by image_id:
 * - an annotation whose image_id is not in "images", or a second annotation for one image,
 *   is an error (the file is inconsistent: most likely a mix of two files);
 * - an image without annotation is skipped and counted in num_unannotated (it has nothing to
 *   evaluate; COCO's val2017 has none);
 * - a segment whose category_id is not in "categories" is an error naming it. */
typedef struct {
    int num_images;
    CocoPanopticImage *images; /* (num_images) annotated images, sorted by id */
    int num_unannotated;       /* images of the file without annotation, not in images */
    CocoCategories categories; /* the file's "categories" */
    int num_segments;
    CocoSegment *segments_mem; /* (num_segments) every segment, grouped by annotation */
    char *strings;             /* the file and PNG names */
} CocoPanoptic;

/* The "images" array of a COCO instances (or any COCO-style) JSON. Duplicate ids are an
 * error; an empty array is not. */
int coco_read_images(CocoImages *out, const char *path);
void coco_images_free(CocoImages *im);

/* A COCO panoptic JSON: "images", "annotations" and "categories" are all required. */
int coco_read_panoptic(CocoPanoptic *out, const char *path);
void coco_panoptic_free(CocoPanoptic *p);

/* A proposals file: class-agnostic boxes in COCO format, as the reference's
 * ProposalDistillDataset reads them. "images" as in an instances file (the training images:
 * id, file_name, width, height), "annotations" with image_id and bbox [x, y, w, h] each
 * (category_id, score and the rest are ignored). Errors name the file and the place: no
 * "annotations" or an empty one, an annotation for an image_id not in "images", a negative
 * width or height, a bbox that is not 4 finite numbers. Boxes outside their image are the
 * sampler's to skip (it counts them). */
typedef struct {
    int num_images;
    CocoImage *images;    /* (num_images) sorted by id */
    long *first;          /* (num_images) an image's first box */
    int *count;           /* (num_images) its boxes, in file order */
    long num_boxes;
    double (*box)[4];     /* (num_boxes) x, y, w, h in original pixels */
    char *strings;
} CocoProposals;

int coco_read_proposals(CocoProposals *out, const char *path);
void coco_proposals_free(CocoProposals *p);

/* A category list: either a top-level JSON array of categories (panopticapi's
 * panoptic_coco_categories.json) or any JSON object with a "categories" array. */
int coco_read_categories(CocoCategories *out, const char *path);
void coco_categories_free(CocoCategories *c);
/* The contiguous index of category id, or -1 if there is none. */
int coco_category_index(const CocoCategories *c, int64_t id);

/* out = root "/" file_name. A file_name that is empty, absolute, or has a ".." component
 * escapes the image root and is an error, as is a result longer than len - 1. */
int coco_image_path(char *out, size_t len, const char *root, const char *file_name);

#endif
