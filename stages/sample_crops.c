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

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "sample_crops", &argc, &argv);
    const char *cfg = "datasets.cfg", *name = NULL, *out = NULL;
    int epochs = 6, max_split = 6, max_boxes = 20, seed = 0, shard = 0, shards = 1, join = 0;
    int verify = 0;
    const char *proposals = NULL;
    float crop_scale = 1.0f, min_size = 8.0f, max_size = 1024.0f;
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &name, "dataset name in the registry (required)"},
        {"datasets", CLI_STRING, &cfg, "dataset registry"},
        {"out", CLI_STRING, &out, "crops file to write (required)"},
        {"epochs", CLI_INT, &epochs, "epochs to draw crops for"},
        {"max-split", CLI_INT, &max_split, "largest grid side M (layouts m=1..M, n=ceil(m/2)..min(2m,M))"},
        {"max-boxes", CLI_INT, &max_boxes, "crops kept per image and epoch"},
        {"seed", CLI_INT, &seed, "seed of the layout and shuffle draws"},
        {"crop-scale", CLI_FLOAT, &crop_scale, "grid mode: the teacher crops each tile enlarged "
                                                "this much about its centre, clipped to the "
                                                "image (the reference's --crop-scale; 1: the "
                                                "tile itself)"},
        {"proposals", CLI_STRING, &proposals, "region-proposal mode: a COCO-format JSON of "
                                              "class-agnostic boxes (images; annotations with "
                                              "image_id and bbox) whose images are the training "
                                              "set; per image and epoch --max-boxes are drawn, "
                                              "the teacher crops each enlarged 1.5x, the student "
                                              "pools it"},
        {"min-size", CLI_FLOAT, &min_size, "proposals: keep boxes with area >= min-size^2"},
        {"max-size", CLI_FLOAT, &max_size, "proposals: keep boxes with area <= max-size^2"},
        {"shard", CLI_INT, &shard, "this task's shard (a Slurm array task), 0-based"},
        {"shards", CLI_INT, &shards, "number of shards; > 1 writes shard --shard to <out>.parts/"},
        {"join", CLI_FLAG, &join, "only join the --shards shards into --out"},
        {"verify", CLI_FLAG, &verify, "only check that --out is complete and was sampled from "
                                      "this dataset with these settings (exit 0) or not (1)"},
    };
    if (stage_options(&st, argc, argv,
                      "CLIPSelf crop sampling: for every training image of the dataset and every "
                      "epoch, draw one grid layout (24 layouts for M = 6), tile the image, "
                      "shuffle the cells and keep at most --max-boxes; or, with --proposals, "
                      "shuffle the image's proposal boxes and keep at most --max-boxes of those "
                      "with an area in [min-size^2, max-size^2] (an image left with none gets the "
                      "reference's fallback, the top-left quarter box). Write them with the image "
                      "table to --out (HDF5). Same output for any number of MPI ranks, and for "
                      "any number of shards once joined (--shards S --shard s per array task, "
                      "then --join --shards S).",
                      opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!name || !out) {
        cs_error_set(__FILE__, __LINE__, "--dataset and --out are required");
        stage_die(&st, "see --help");
    }
    if (epochs < 1 || max_split < 1 || max_split > CROPS_MAX_SPLIT || max_boxes < 1 ||
        shards < 1 || shard < 0 || shard >= shards || !(crop_scale >= 1.0 && crop_scale <= 16.0) ||
        !(min_size >= 0 && max_size >= min_size && max_size < 1e6)) {
        cs_error_set(__FILE__, __LINE__, "need epochs >= 1, 1 <= max-split <= %d, max-boxes >= 1, "
                     "0 <= shard < shards, 1 <= crop-scale <= 16, 0 <= min-size <= max-size",
                     CROPS_MAX_SPLIT);
        stage_die(&st, NULL);
    }
    if (proposals && crop_scale != 1.0) {
        cs_error_set(__FILE__, __LINE__, "--crop-scale is for grid mode: with --proposals the "
                     "teacher's crop is the box enlarged 1.5x, as in the reference");
        stage_die(&st, NULL);
    }
    if (join) {
        if (st.rank == 0) {
            stage_check(&st, cropfile_join(out, shards), "run the missing array tasks again");
            printf("sample_crops: joined %d shards into %s\n", shards, out);
        }
        stage_end(&st);
        return 0;
    }
    char dest[4200];
    snprintf(dest, sizeof dest, "%s", out);
    if (shards > 1) {
        stage_check(&st, cropfile_shard_path(dest, sizeof dest, out, shard, shards), NULL);
        char parts[4200];
        snprintf(parts, sizeof parts, "%s.parts", out);
        if (st.rank == 0 && mkdir(parts, 0777) != 0 && errno != EEXIST) {
            cs_error_set(__FILE__, __LINE__, "cannot create %s: %s", parts, strerror(errno));
            stage_die(&st, NULL);
        }
    }
    Dataset ds;
    stage_check(&st, dataset_lookup(&ds, cfg, name), "check the dataset name and datasets.cfg");
    CocoImages imgs = {0};
    CocoProposals props = {0};
    uint64_t props_digest = 0;
    if (proposals) {
        stage_check(&st, coco_read_proposals(&props, proposals), "the proposals file: COCO "
                    "format, \"images\" and \"annotations\" with image_id and bbox [x, y, w, h]");
        stage_check(&st, file_digest(&props_digest, proposals), NULL);
        imgs.num = props.num_images, imgs.images = props.images;
    } else {
        stage_check(&st, coco_read_images(&imgs, ds.train), NULL);
    }
    const char *mode = proposals ? "proposals" : "grid";
    int N = imgs.num, s_lo, s_hi;
    if (verify) {
        int rc = 0;
        if (st.rank == 0) {
            CropFile old;
            rc = cropfile_read(&old, out);
            if (!rc && (strcmp(old.dataset, name) || strcmp(old.mode, mode) ||
                        old.seed != (uint64_t)seed || old.epochs != epochs ||
                        old.max_split != max_split || old.max_boxes != max_boxes ||
                        old.crop_scale != (double)crop_scale || old.min_size != (double)min_size ||
                        old.max_size != (double)max_size || old.proposals != props_digest ||
                        old.shards != 0 || old.num_images != N))
                rc = cs_error_set(__FILE__, __LINE__, "%s was sampled with other settings or "
                                  "from another image list", out);
            if (!rc) cropfile_free(&old);
        }
        stage_verified(&st, rc, out);
    }
    cropfile_shard_range(N, shard, shards, &s_lo, &s_hi);
    /* contiguous blocks of the shard's images per rank, so gathered rows come out in order;
     * row image indices are relative to the shard's first image */
    int lo = s_lo + (int)((long)(s_hi - s_lo) * st.rank / st.size);
    int hi = s_lo + (int)((long)(s_hi - s_lo) * (st.rank + 1) / st.size);
    size_t cap = (size_t)(hi - lo) * (size_t)epochs * (size_t)max_boxes;
    CropRow *mine = malloc((cap ? cap : 1) * sizeof(CropRow));
    if (!mine) {
        cs_error_set(__FILE__, __LINE__, "out of memory for %zu crop rows", cap);
        stage_die(&st, NULL);
    }
    Progress prog;
    progress_init(&prog, "sample_crops", "img", hi - lo, st.rank == 0);
    long n = 0;
    CropStats stats = {0};
    for (int i = lo; i < hi; i++) {
        const CocoImage *im = &imgs.images[i];
        for (int e = 0; e < epochs; e++) {
            long n0 = n;
            if (proposals) {
                int k = crops_for_proposals(mine + n, i, im->id, im->width, im->height, e,
                                            (uint64_t)seed,
                                            (const double(*)[4])props.box[props.first[i]],
                                            props.count[i], max_boxes, min_size, max_size,
                                            &stats);
                if (k < 0) {
                    cs_error_set(__FILE__, __LINE__, "out of memory drawing proposals");
                    stage_die(&st, NULL);
                }
                n += k;
            } else {
                int k = crops_for_image(mine + n, i, im->id, im->width, im->height, e,
                                        (uint64_t)seed, max_split, max_boxes);
                crops_scale_teacher(mine + n, k, crop_scale, im->width, im->height);
                n += k;
            }
            for (long r = n0; r < n; r++) mine[r].image -= s_lo;
        }
        progress_update(&prog, i - lo + 1);
    }
    long st_local[3] = {stats.filtered, stats.outside, stats.fallback};
    MPI_Allreduce(MPI_IN_PLACE, st_local, 3, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    stats = (CropStats){.filtered = st_local[0], .outside = st_local[1], .fallback = st_local[2]};
    /* gather the rows (as bytes) on rank 0 */
    int bytes = (int)(n * (long)sizeof(CropRow)), *counts = NULL, *displs = NULL;
    if (st.rank == 0) {
        counts = malloc((size_t)st.size * sizeof(int));
        displs = malloc((size_t)st.size * sizeof(int));
    }
    MPI_Gather(&bytes, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
    CropFile cf = {0};
    if (st.rank == 0) {
        long total = 0;
        for (int r = 0; r < st.size; r++) displs[r] = (int)total, total += counts[r];
        cf.rows = malloc(total ? (size_t)total : 1);
        cf.num_rows = total / (long)sizeof(CropRow);
    }
    MPI_Gatherv(mine, bytes, MPI_BYTE, cf.rows, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
    free(mine);
    if (st.rank == 0) {
        snprintf(cf.dataset, sizeof cf.dataset, "%s", name);
        snprintf(cf.mode, sizeof cf.mode, "%s", mode);
        cf.crop_scale = crop_scale, cf.min_size = min_size, cf.max_size = max_size;
        cf.proposals = props_digest, cf.stats = stats;
        cf.seed = (uint64_t)seed, cf.epochs = epochs, cf.max_split = max_split;
        int n_img = s_hi - s_lo;
        cf.max_boxes = max_boxes, cf.num_images = n_img;
        if (shards > 1)
            cf.shard = shard, cf.shards = shards, cf.image_lo = s_lo, cf.images_total = N;
        cf.image_id = malloc((size_t)(n_img ? n_img : 1) * sizeof(int64_t));
        cf.file_name = malloc((size_t)(n_img ? n_img : 1) * sizeof(char *));
        cf.width = malloc((size_t)(n_img ? n_img : 1) * sizeof(int32_t));
        cf.height = malloc((size_t)(n_img ? n_img : 1) * sizeof(int32_t));
        if (!cf.image_id || !cf.file_name || !cf.width || !cf.height) {
            cs_error_set(__FILE__, __LINE__, "out of memory for %d images", n_img);
            stage_die(&st, NULL);
        }
        for (int i = 0; i < n_img; i++) {
            const CocoImage *im = &imgs.images[s_lo + i];
            cf.image_id[i] = im->id;
            cf.file_name[i] = (char *)im->file_name;
            cf.width[i] = im->width;
            cf.height[i] = im->height;
        }
        stage_check(&st, cropfile_index(&cf), NULL);
        stage_check(&st, cropfile_write(&cf, dest), NULL);
        printf("sample_crops: %s mode, %d images x %d epochs -> %ld crops (%.1f per image and "
               "epoch), digest %016llx, written to %s\n", mode,
               n_img, epochs, cf.num_rows, n_img ? (double)cf.num_rows / n_img / epochs : 0.0,
               (unsigned long long)cf.digest, dest);
        if (proposals)
            printf("sample_crops: of the drawn proposals, %ld outside [%g^2, %g^2] in area "
                   "(left out, as the reference does), %ld wholly outside their image "
                   "(skipped); %ld image-epochs with no valid box got the fallback box (0, 0, "
                   "W/4, H/4)\n", stats.filtered, min_size, max_size, stats.outside,
                   stats.fallback);
        cropfile_free(&cf);
    }
    free(counts);
    free(displs);
    if (proposals) coco_proposals_free(&props);
    else coco_images_free(&imgs);
    stage_end(&st);
    return 0;
}
