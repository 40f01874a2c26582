/* sample_crops: draw every epoch's crops for every training image, up front and from a seed,
 * and write crops.h5 (pipeline/io/cropfile.h): grid tiles, or with --proposals the boxes of a
 * COCO-format proposals file (the reference's proposals_distill mode). Ranks split the images; the output is the
 * same whatever the number of ranks. As a Slurm job array, task s of S writes shard s
 * (--shard s --shards S) to <out>.parts/ and a final --join step writes <out>, the same file
 * one task would have written. */
#include <mpi.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/check.h"
#include "base/digest.h"
#include "base/progress.h"
#include "base/stage.h"
#include "io/coco.h"
#include "io/cropfile.h"
#include "io/datasets.h"
#include "method/crops.h"

typedef struct {
    const char *cfg, *name, *out, *proposals;
    int epochs, max_split, max_boxes, seed, shard, shards, join, verify;
    float crop_scale, min_size, max_size;
} Args;

/* The options into a, checked; 1 after --help. */
static int parse_args(Stage *st, Args *a, int argc, char **argv) {
    *a = (Args){.cfg = "datasets.cfg", .epochs = 6, .max_split = 6, .max_boxes = 20,
                .shards = 1, .crop_scale = 1.0f, .min_size = 8.0f, .max_size = 1024.0f};
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &a->name, "dataset name in the registry (required)"},
        {"datasets", CLI_STRING, &a->cfg, "dataset registry"},
        {"out", CLI_STRING, &a->out, "crops file to write (required)"},
        {"epochs", CLI_INT, &a->epochs, "epochs to draw crops for"},
        {"max-split", CLI_INT, &a->max_split,
         "largest grid side M (layouts m=1..M, n=ceil(m/2)..min(2m,M))"},
        {"max-boxes", CLI_INT, &a->max_boxes, "crops kept per image and epoch"},
        {"seed", CLI_INT, &a->seed, "seed of the layout and shuffle draws"},
        {"crop-scale", CLI_FLOAT, &a->crop_scale, "grid mode: the teacher crops each tile enlarged "
                                                   "this much about its centre, clipped to the "
                                                   "image (the reference's --crop-scale; 1: the "
                                                   "tile itself)"},
        {"proposals", CLI_STRING, &a->proposals,
         "region-proposal mode: a COCO-format JSON of class-agnostic boxes (images; annotations "
         "with image_id and bbox) whose images are the training set; per image and epoch "
         "--max-boxes are drawn, the teacher crops each enlarged 1.5x, the student pools it"},
        {"min-size", CLI_FLOAT, &a->min_size, "proposals: keep boxes with area >= min-size^2"},
        {"max-size", CLI_FLOAT, &a->max_size, "proposals: keep boxes with area <= max-size^2"},
        {"shard", CLI_INT, &a->shard, "this task's shard (a Slurm array task), 0-based"},
        {"shards", CLI_INT, &a->shards,
         "number of shards; > 1 writes shard --shard to <out>.parts/"},
        {"join", CLI_FLAG, &a->join, "only join the --shards shards into --out"},
        {"verify", CLI_FLAG, &a->verify, "only check that --out is complete and was sampled from "
                                         "this dataset with these settings (exit 0) or not (1)"},
    };
    if (stage_options(st, argc, argv,
                      "CLIPSelf crop sampling: for every training image of the dataset and every "
                      "epoch, draw one grid layout (24 layouts for M = 6), tile the image, "
                      "shuffle the cells and keep at most --max-boxes; or, with --proposals, "
                      "shuffle the image's proposal boxes and keep at most --max-boxes of those "
                      "with an area in [min-size^2, max-size^2] (an image left with none gets the "
                      "reference's fallback, the top-left quarter box). Write them with the image "
                      "table to --out (HDF5). Same output for any number of MPI ranks, and for "
                      "any number of shards once joined (--shards S --shard s per array task, "
                      "then --join --shards S).",
                      opts, (int)(sizeof opts / sizeof opts[0])))
        return 1;
    if (!a->name || !a->out) {
        cs_error_set(__FILE__, __LINE__, "--dataset and --out are required");
        stage_die(st, "see --help");
    }
    if (a->epochs < 1 || a->max_split < 1 || a->max_split > CROPS_MAX_SPLIT || a->max_boxes < 1 ||
        a->shards < 1 || a->shard < 0 || a->shard >= a->shards ||
        !(a->crop_scale >= 1.0 && a->crop_scale <= 16.0) ||
        !(a->min_size >= 0 && a->max_size >= a->min_size && a->max_size < 1e6)) {
        cs_error_set(__FILE__, __LINE__, "need epochs >= 1, 1 <= max-split <= %d, max-boxes >= 1, "
                     "0 <= shard < shards, 1 <= crop-scale <= 16, 0 <= min-size <= max-size",
                     CROPS_MAX_SPLIT);
        stage_die(st, NULL);
    }
    if (a->proposals && a->crop_scale != 1.0) {
        cs_error_set(__FILE__, __LINE__, "--crop-scale is for grid mode: with --proposals the "
                     "teacher's crop is the box enlarged 1.5x, as in the reference");
        stage_die(st, NULL);
    }
    return 0;
}

/* --verify: out is a whole crops file sampled from this image list with these settings. */
static int verify_crops(const Args *a, const char *mode, uint64_t props_digest, int N) {
    CropFile old;
    CS_TRY(cropfile_read(&old, a->out));
    int same = !strcmp(old.dataset, a->name) && !strcmp(old.mode, mode) &&
               old.seed == (uint64_t)a->seed && old.epochs == a->epochs &&
               old.max_split == a->max_split && old.max_boxes == a->max_boxes &&
               old.crop_scale == (double)a->crop_scale && old.min_size == (double)a->min_size &&
               old.max_size == (double)a->max_size && old.proposals == props_digest &&
               old.shards == 0 && old.num_images == N;
    cropfile_free(&old);
    CS_CHECK(same, "%s was sampled with other settings or from another image list", a->out);
    return 0;
}

/* The rows of images [lo, hi) for every epoch into rows (their image indices relative to the
 * shard's first image, s_lo); *n rows, the proposal sampler's counts added to stats. */
static int sample_rows(CropRow *rows, long *n, const Args *a, const CocoImages *imgs,
                       const CocoProposals *props, int lo, int hi, int s_lo, CropStats *stats,
                       int show) {
    Progress prog;
    progress_init(&prog, "sample_crops", "img", hi - lo, show);
    *n = 0;
    for (int i = lo; i < hi; i++) {
        const CocoImage *im = &imgs->images[i];
        for (int e = 0; e < a->epochs; e++) {
            long n0 = *n;
            if (a->proposals) {
                int k = crops_for_proposals(rows + *n, i, im->id, im->width, im->height, e,
                                            (uint64_t)a->seed,
                                            (const double(*)[4])props->box[props->first[i]],
                                            props->count[i], a->max_boxes, a->min_size,
                                            a->max_size, stats);
                CS_CHECK(k >= 0, "out of memory drawing proposals");
                *n += k;
            } else {
                int k = crops_for_image(rows + *n, i, im->id, im->width, im->height, e,
                                        (uint64_t)a->seed, a->max_split, a->max_boxes);
                crops_scale_teacher(rows + *n, k, a->crop_scale, im->width, im->height);
                *n += k;
            }
            for (long r = n0; r < *n; r++) rows[r].image -= s_lo;
        }
        progress_update(&prog, i - lo + 1);
    }
    return 0;
}

/* Every rank's rows (in rank order: the ranks hold contiguous blocks of images) into cf on
 * rank 0. Collective. */
static int gather_rows(CropFile *cf, const CropRow *mine, long n, int rank, int size) {
    int bytes = (int)(n * (long)sizeof(CropRow)), *counts = NULL, *displs = NULL;
    if (rank == 0) {
        counts = malloc((size_t)size * sizeof(int));
        displs = malloc((size_t)size * sizeof(int));
    }
    MPI_Gather(&bytes, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        long total = 0;
        for (int r = 0; r < size; r++) displs[r] = (int)total, total += counts[r];
        cf->rows = malloc(total ? (size_t)total : 1);
        cf->num_rows = total / (long)sizeof(CropRow);
    }
    MPI_Gatherv(mine, bytes, MPI_BYTE, cf->rows, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
    free(counts);
    free(displs);
    return 0;
}

/* Rank 0: the crops file's settings and its image table (the shard's images [s_lo, s_hi) of
 * the N), then its index. */
static int fill_table(CropFile *cf, const Args *a, const char *mode, uint64_t props_digest,
                      const CropStats *stats, const CocoImages *imgs, int s_lo, int s_hi, int N) {
    snprintf(cf->dataset, sizeof cf->dataset, "%s", a->name);
    snprintf(cf->mode, sizeof cf->mode, "%s", mode);
    cf->crop_scale = a->crop_scale, cf->min_size = a->min_size, cf->max_size = a->max_size;
    cf->proposals = props_digest, cf->stats = *stats;
    cf->seed = (uint64_t)a->seed, cf->epochs = a->epochs, cf->max_split = a->max_split;
    int n_img = s_hi - s_lo;
    cf->max_boxes = a->max_boxes, cf->num_images = n_img;
    if (a->shards > 1)
        cf->shard = a->shard, cf->shards = a->shards, cf->image_lo = s_lo, cf->images_total = N;
    cf->image_id = malloc((size_t)(n_img ? n_img : 1) * sizeof(int64_t));
    cf->file_name = malloc((size_t)(n_img ? n_img : 1) * sizeof(char *));
    cf->width = malloc((size_t)(n_img ? n_img : 1) * sizeof(int32_t));
    cf->height = malloc((size_t)(n_img ? n_img : 1) * sizeof(int32_t));
    CS_CHECK(cf->image_id && cf->file_name && cf->width && cf->height,
             "out of memory for %d images", n_img);
    for (int i = 0; i < n_img; i++) {
        const CocoImage *im = &imgs->images[s_lo + i];
        cf->image_id[i] = im->id;
        cf->file_name[i] = (char *)im->file_name;
        cf->width[i] = im->width;
        cf->height[i] = im->height;
    }
    return cropfile_index(cf);
}

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "sample_crops", &argc, &argv);
    Args a;
    if (parse_args(&st, &a, argc, argv)) {
        stage_end(&st);
        return 0;
    }
    if (a.join) {
        if (st.rank == 0) {
            stage_check(&st, cropfile_join(a.out, a.shards), "run the missing array tasks again");
            printf("sample_crops: joined %d shards into %s\n", a.shards, a.out);
        }
        stage_end(&st);
        return 0;
    }
    char dest[4200];
    snprintf(dest, sizeof dest, "%s", a.out);
    if (a.shards > 1) {
        stage_check(&st, cropfile_shard_path(dest, sizeof dest, a.out, a.shard, a.shards), NULL);
        char parts[4200];
        snprintf(parts, sizeof parts, "%s.parts", a.out);
        if (st.rank == 0 && mkdir(parts, 0777) != 0 && errno != EEXIST) {
            cs_error_set(__FILE__, __LINE__, "cannot create %s: %s", parts, strerror(errno));
            stage_die(&st, NULL);
        }
    }
    Dataset ds;
    stage_check(&st, dataset_lookup(&ds, a.cfg, a.name), "check the dataset name and datasets.cfg");
    CocoImages imgs = {0};
    CocoProposals props = {0};
    uint64_t props_digest = 0;
    if (a.proposals) {
        stage_check(&st, coco_read_proposals(&props, a.proposals), "the proposals file: COCO "
                    "format, \"images\" and \"annotations\" with image_id and bbox [x, y, w, h]");
        stage_check(&st, file_digest(&props_digest, a.proposals), NULL);
        imgs.num = props.num_images, imgs.images = props.images;
    } else {
        stage_check(&st, coco_read_images(&imgs, ds.train), NULL);
    }
    const char *mode = a.proposals ? "proposals" : "grid";
    int N = imgs.num, s_lo, s_hi;
    if (a.verify)
        stage_verified(&st, st.rank == 0 ? verify_crops(&a, mode, props_digest, N) : 0, a.out);
    cropfile_shard_range(N, a.shard, a.shards, &s_lo, &s_hi);
    /* contiguous blocks of the shard's images per rank, so gathered rows come out in order;
     * row image indices are relative to the shard's first image */
    int lo = s_lo + (int)((long)(s_hi - s_lo) * st.rank / st.size);
    int hi = s_lo + (int)((long)(s_hi - s_lo) * (st.rank + 1) / st.size);
    size_t cap = (size_t)(hi - lo) * (size_t)a.epochs * (size_t)a.max_boxes;
    CropRow *mine = malloc((cap ? cap : 1) * sizeof(CropRow));
    if (!mine) {
        cs_error_set(__FILE__, __LINE__, "out of memory for %zu crop rows", cap);
        stage_die(&st, NULL);
    }
    long n = 0;
    CropStats stats = {0};
    stage_check(&st, sample_rows(mine, &n, &a, &imgs, &props, lo, hi, s_lo, &stats,
                                 st.rank == 0), NULL);
    long st_local[3] = {stats.filtered, stats.outside, stats.fallback};
    MPI_Allreduce(MPI_IN_PLACE, st_local, 3, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    stats = (CropStats){.filtered = st_local[0], .outside = st_local[1], .fallback = st_local[2]};
    CropFile cf = {0};
    stage_check(&st, gather_rows(&cf, mine, n, st.rank, st.size), NULL);
    free(mine);
    if (st.rank == 0) {
        stage_check(&st, fill_table(&cf, &a, mode, props_digest, &stats, &imgs, s_lo, s_hi, N),
                    NULL);
        stage_check(&st, cropfile_write(&cf, dest), NULL);
        int n_img = s_hi - s_lo;
        printf("sample_crops: %s mode, %d images x %d epochs -> %ld crops (%.1f per image and "
               "epoch), digest %016llx, written to %s\n", mode,
               n_img, a.epochs, cf.num_rows, n_img ? (double)cf.num_rows / n_img / a.epochs : 0.0,
               (unsigned long long)cf.digest, dest);
        if (a.proposals)
            printf("sample_crops: of the drawn proposals, %ld outside [%g^2, %g^2] in area "
                   "(left out, as the reference does), %ld wholly outside their image "
                   "(skipped); %ld image-epochs with no valid box got the fallback box (0, 0, "
                   "W/4, H/4)\n", stats.filtered, a.min_size, a.max_size, stats.outside,
                   stats.fallback);
        cropfile_free(&cf);
    }
    if (a.proposals) coco_proposals_free(&props);
    else coco_images_free(&imgs);
    stage_end(&st);
    return 0;
}
