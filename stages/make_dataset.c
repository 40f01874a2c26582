/* make_dataset: write the synthetic COCO world of pipeline/world/synth.h (train images with COCO
 * instances, val images with COCO panoptic annotations). Rank r renders the images i with
 * i % size == r; rank 0 gathers the fixed-size annotation records and writes the JSON files.
 * The output is the same bytes for any number of ranks. */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/check.h"
#include "base/progress.h"
#include "base/stage.h"
#include "world/synth.h"

/* Gather every rank's records and RLE strings on rank 0 into all: records grouped by rank, the
 * RLE strings in the same order. */
static int gather(const SynthRecords *mine, SynthRecords *all, int rank, int size) {
    CS_CHECK(mine->rle_len <= INT_MAX / 2, "rank %d holds %zu RLE chars, more than one message "
             "carries; run on more ranks", rank, mine->rle_len);
    int counts[2] = {mine->n, (int)mine->rle_len}, rc = 0;
    int *each = NULL, *bytes = NULL, *disp = NULL; /* (size, 2) counts; (2, size) bytes, displs */
    if (rank == 0) {
        each = calloc(2 * (size_t)size, sizeof *each);
        bytes = calloc(2 * (size_t)size, sizeof *bytes);
        disp = calloc(2 * (size_t)size, sizeof *disp);
        if (!each || !bytes || !disp) {
            fprintf(stderr, "make_dataset: out of memory for the gather counts of %d ranks\n", size);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    MPI_Gather(counts, 2, MPI_INT, each, 2, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        long long nrec = 0, nrle = 0;
        for (int r = 0; r < size; r++) nrec += each[2 * r], nrle += each[2 * r + 1];
        if (nrec * (long long)sizeof(SynthRecord) > INT_MAX || nrle > INT_MAX) {
            rc = cs_error_set(__FILE__, __LINE__, "%lld records and %lld RLE chars do not fit "
                              "one gather; make fewer images per run", nrec, nrle);
        } else {
            all->rec = cs_calloc_((size_t)nrec, sizeof *all->rec, __FILE__, __LINE__);
            all->rle = cs_calloc_((size_t)nrle, 1, __FILE__, __LINE__);
            if (!all->rec || !all->rle) rc = -1;
            all->n = all->cap = (int)nrec;
            all->rle_len = all->rle_cap = (size_t)nrle;
        }
        for (int r = 0, d = 0, e = 0; rc == 0 && r < size; r++) {
            bytes[r] = each[2 * r] * (int)sizeof(SynthRecord);
            disp[r] = d;
            d += bytes[r];
            bytes[size + r] = each[2 * r + 1];
            disp[size + r] = e;
            e += each[2 * r + 1];
        }
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rc == 0) {
        MPI_Gatherv(mine->rec, counts[0] * (int)sizeof(SynthRecord), MPI_BYTE, all->rec, bytes,
                    disp, MPI_BYTE, 0, MPI_COMM_WORLD);
        MPI_Gatherv(mine->rle, counts[1], MPI_BYTE, all->rle, rank == 0 ? bytes + size : NULL,
                    rank == 0 ? disp + size : NULL, MPI_BYTE, 0, MPI_COMM_WORLD);
    } else if (rank != 0) {
        rc = cs_error_set(__FILE__, __LINE__, "rank 0 could not receive the records");
    }
    free(each);
    free(bytes);
    free(disp);
    return rc;
}

/* Every rank learns whether any rank failed; a failing rank has printed its message. */
static int any_failed(int rc, int rank) {
    if (rc != 0) fprintf(stderr, "make_dataset (rank %d): %s\n", rank, cs_error());
    int bad = rc != 0, any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any;
}

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "make_dataset", &argc, &argv);
    int rank = st.rank, size = st.size;
    const char *out = NULL;
    SynthConfig c = {.train = 1000, .val = 200, .seed = 0, .min_size = 160, .max_size = 320};
    CliOpt opts[] = {
        {"out", CLI_STRING, &out, "dataset folder to write, required"},
        {"train", CLI_INT, &c.train, "training images (COCO instances)"},
        {"val", CLI_INT, &c.val, "evaluation images (COCO panoptic), disjoint from train"},
        {"seed", CLI_INT, &c.seed, "random seed: an image depends on (seed, split, index) only"},
        {"min-size", CLI_INT, &c.min_size, "smallest image side in pixels"},
        {"max-size", CLI_INT, &c.max_size, "largest image side in pixels"},
    };
    if (stage_options(&st, argc, argv,
                       "Write a synthetic COCO-format world to --out: images/*.jpg, "
                       "instances_train.json, panoptic_val.json with panoptic_val/*.png, and "
                       "categories.json. Things are 10 shapes (ids 1-10), stuff 7 backgrounds "
                       "(ids 100-121). Any number of ranks writes the same bytes.",
                       opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!out) {
        cs_error_set(__FILE__, __LINE__, "--out is required");
        stage_die(&st, "see --help");
    }
    int rc;
    if (synth_config_check(&c) != 0) {
        if (rank == 0) fprintf(stderr, "make_dataset: %s\n", cs_error());
        stage_end(&st);
        return 2;
    }
    rc = rank == 0 ? synth_prepare_dirs(out) : 0;
    if (any_failed(rc, rank)) {
        stage_end(&st);
        return 1;
    }
    double start = now_seconds();
    Progress p;
    progress_init(&p, "make_dataset", "img", (long)c.train + c.val, rank == 0);
    SynthRecords mine = {0}, all = {0};
    rc = synth_generate(&c, out, rank, size, &mine, &p);
    if (any_failed(rc, rank)) {
        stage_end(&st);
        return 1;
    }
    rc = gather(&mine, &all, rank, size);
    if (rc == 0 && rank == 0) {
        progress_done(&p, (long)c.train + c.val);
        rc = synth_write_annotations(&c, out, &all);
    }
    if (any_failed(rc, rank)) {
        stage_end(&st);
        return 1;
    }
    if (rank == 0) {
        long things = 0, stuff = 0;
        for (int i = 0; i < all.n; i++)
            for (int q = 0; q < all.rec[i].nseg; q++)
                synth_category(all.rec[i].seg[q].category_id)->isthing ? things++ : stuff++;
        printf("make_dataset: wrote %d train + %d val images (%ld things, %ld stuff segments) "
               "to %s in %.1f s on %d ranks\n",
               c.train, c.val, things, stuff, out, now_seconds() - start, size);
    }
    synth_records_free(&mine);
    synth_records_free(&all);
    stage_end(&st);
    return 0;
}
