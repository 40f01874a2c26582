/* sample_crops: draw every epoch's grid crops for every training image, up front and from a
 * seed, and write crops.h5 (pipeline/cropfile.h). Ranks split the images; the output is the
 * same whatever the number of ranks. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "coco.h"
#include "cropfile.h"
#include "crops.h"
#include "datasets.h"
#include "progress.h"
#include "stage.h"

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "sample_crops", &argc, &argv);
    const char *cfg = "datasets.cfg", *name = NULL, *out = NULL;
    int epochs = 6, max_split = 6, max_boxes = 20, seed = 0;
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &name, "dataset name in the registry (required)"},
        {"datasets", CLI_STRING, &cfg, "dataset registry"},
        {"out", CLI_STRING, &out, "crops file to write (required)"},
        {"epochs", CLI_INT, &epochs, "epochs to draw crops for"},
        {"max-split", CLI_INT, &max_split, "largest grid side M (layouts m=1..M, n=ceil(m/2)..min(2m,M))"},
        {"max-boxes", CLI_INT, &max_boxes, "crops kept per image and epoch"},
        {"seed", CLI_INT, &seed, "seed of the layout and shuffle draws"},
    };
    if (stage_options(&st, argc, argv,
                      "CLIPSelf crop sampling: for every training image of the dataset and every "
                      "epoch, draw one grid layout (24 layouts for M = 6), tile the image, "
                      "shuffle the cells and keep at most --max-boxes; write them with the image "
                      "table to --out (HDF5). Same output for any number of MPI ranks.",
                      opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!name || !out) {
        cs_error_set(__FILE__, __LINE__, "--dataset and --out are required");
        stage_die(&st, "see --help");
    }
    if (epochs < 1 || max_split < 1 || max_split > CROPS_MAX_SPLIT || max_boxes < 1) {
        cs_error_set(__FILE__, __LINE__, "need epochs >= 1, 1 <= max-split <= %d, max-boxes >= 1",
                     CROPS_MAX_SPLIT);
        stage_die(&st, NULL);
    }
    Dataset ds;
    stage_check(&st, dataset_lookup(&ds, cfg, name), "check the dataset name and datasets.cfg");
    CocoImages imgs;
    stage_check(&st, coco_read_images(&imgs, ds.train), NULL);
    int N = imgs.num;
    /* contiguous blocks of images per rank, so gathered rows come out in image order */
    int lo = (int)((long)N * st.rank / st.size), hi = (int)((long)N * (st.rank + 1) / st.size);
    size_t cap = (size_t)(hi - lo) * (size_t)epochs * (size_t)max_boxes;
    CropRow *mine = malloc((cap ? cap : 1) * sizeof(CropRow));
    if (!mine) {
        cs_error_set(__FILE__, __LINE__, "out of memory for %zu crop rows", cap);
        stage_die(&st, NULL);
    }
    Progress prog;
    progress_init(&prog, "sample_crops", "img", hi - lo, st.rank == 0);
    long n = 0;
    for (int i = lo; i < hi; i++) {
        const CocoImage *im = &imgs.images[i];
        for (int e = 0; e < epochs; e++)
            n += crops_for_image(mine + n, i, im->id, im->width, im->height, e, (uint64_t)seed,
                                 max_split, max_boxes);
        progress_update(&prog, i - lo + 1);
    }
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
        cf.seed = (uint64_t)seed, cf.epochs = epochs, cf.max_split = max_split;
        cf.max_boxes = max_boxes, cf.num_images = N;
        cf.image_id = malloc((size_t)(N ? N : 1) * sizeof(int64_t));
        cf.file_name = malloc((size_t)(N ? N : 1) * sizeof(char *));
        cf.width = malloc((size_t)(N ? N : 1) * sizeof(int32_t));
        cf.height = malloc((size_t)(N ? N : 1) * sizeof(int32_t));
        for (int i = 0; i < N; i++) {
            cf.image_id[i] = imgs.images[i].id;
            cf.file_name[i] = (char *)imgs.images[i].file_name;
            cf.width[i] = imgs.images[i].width;
            cf.height[i] = imgs.images[i].height;
        }
        stage_check(&st, cropfile_index(&cf), NULL);
        stage_check(&st, cropfile_write(&cf, out), NULL);
        printf("sample_crops: %d images x %d epochs -> %ld crops (%.1f per image and epoch), "
               "digest %016llx, written to %s\n",
               N, epochs, cf.num_rows, N ? (double)cf.num_rows / N / epochs : 0.0,
               (unsigned long long)cf.digest, out);
        cropfile_free(&cf);
    }
    free(counts);
    free(displs);
    coco_images_free(&imgs);
    stage_end(&st);
    return 0;
}
