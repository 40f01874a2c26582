/* cropfile.h: crops.h5, the crop-sampling stage's output: the training image table and every
 * epoch's grid crops, rows sorted by (image, epoch), with an index to find an image's rows.
 *
 *   /images/id (N) int64, /images/file_name (N) string, /images/width, /images/height (N) int32
 *   /crops/image (R) int32, /crops/epoch (R) int32, /crops/layout (R, 2) int32 [m, n],
 *   /crops/box (R, 4) float32 [x0, y0, x1, y1] in original pixels: what the student pools
 *   /crops/teacher_box (R, 4) float64 [x0, y0, x1, y1]: what the teacher crops (crops.h)
 *   /index/first (N, epochs) int64 first row, /index/count (N, epochs) int32
 *   attributes: format, dataset, mode ("grid" or "proposals"), seed, epochs, max_split,
 *   max_boxes, crop_scale, min_size, max_size (float64), proposals (hex digest of the
 *   proposals file, "" in grid mode), filtered, outside, fallback (int64: crops.h's
 *   CropStats), digest (hex of a 64-bit FNV-1a over the tables: the identity the teacher
 *   cache records)
 *
 * Shards (one per Slurm array task): shard s of S holds the images [lo, hi) of the training
 * JSON's N, lo = N s / S, hi = N (s + 1) / S, as a crops file of its own (image indices
 * relative to lo) with the attributes shard, shards, image_lo, images_total added. The join
 * concatenates them in order into the file one task would have written, digest included. */
#ifndef CLIPSELF_CROPFILE_H
#define CLIPSELF_CROPFILE_H

#include <stddef.h>
#include <stdint.h>

/* A row: one region of one image for one epoch (method/crops.h samples them). */
typedef struct {
    int32_t image;  /* index into the image table */
    int32_t epoch;
    int32_t m, n;   /* layout: rows, columns (0, 0 for a proposal) */
    float box[4];   /* the student's box: x0, y0, x1, y1 in original pixels (float32, as the
                     * reference's box tensors) */
    double tbox[4]; /* the teacher's crop of it, in original pixels (double, as the reference
                     * hands it to PIL): the box itself, or enlarged about its centre and
                     * clipped to the image (grid --crop-scale, proposals 1.5x) */
} CropRow;

/* What the proposal sampler left out, for the stage's summary and the crops file. */
typedef struct {
    long filtered; /* drawn, but the area is outside [min_size^2, max_size^2] (reference) */
    long outside;  /* drawn, but the box lies wholly outside its image (recorded skip) */
    long fallback; /* image-epochs with no valid box: the reference's fallback box */
} CropStats;

#define CROPFILE_FORMAT "clipself-crops-2"

typedef struct {
    char dataset[64];
    char mode[16];        /* "grid" or "proposals" */
    uint64_t seed;
    int epochs, max_split, max_boxes;
    double crop_scale;    /* grid: the teacher crop's enlargement (1: the cell itself) */
    double min_size, max_size; /* proposals: the kept areas, [min^2, max^2] */
    uint64_t proposals;   /* proposals: file_digest() of the proposals file; grid: 0 */
    CropStats stats;      /* proposals: what the sampler left out */
    int num_images;
    int64_t *image_id;    /* (N) */
    char **file_name;     /* (N) pointers into names_mem (reader) or the caller's strings */
    char *names_mem;      /* the reader's copy of every file name, or NULL */
    int32_t *width, *height; /* (N) annotation sizes in pixels */
    long num_rows;
    CropRow *rows;        /* (R) sorted by image, then epoch */
    int64_t *first;       /* (N, epochs) */
    int32_t *count;       /* (N, epochs) */
    uint64_t digest;
    int shard, shards;    /* a shard file: shard of shards (shards 0: a whole crops file) */
    int image_lo, images_total; /* a shard's first image and the training JSON's image count */
} CropFile;

/* Fill first/count from rows and compute the digest. */
int cropfile_index(CropFile *cf);
/* Write atomically (temporary name, then rename). */
int cropfile_write(const CropFile *cf, const char *path);
int cropfile_read(CropFile *cf, const char *path);
void cropfile_free(CropFile *cf);

/* Shard s of S of N images: [*lo, *hi). */
void cropfile_shard_range(int N, int shard, int shards, int *lo, int *hi);
/* <out>.parts/shard-SSSS-of-NNNN.h5 */
int cropfile_shard_path(char *buf, size_t len, const char *out, int shard, int shards);
/* Read every shard of out (shards of them) and write out atomically. Refuses, naming them,
 * missing or damaged shards and shards made with other settings or of another image count;
 * the shard files are removed once out is written. */
int cropfile_join(const char *out, int shards);

#endif
