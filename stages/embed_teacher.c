/* embed_teacher: the frozen teacher's image embedding of every crop of crops.h5, computed once
 * into teacher.h5 (pipeline/io/teachercache.h) for every training run to reuse.
 *
 * Work is cut into chunks of --chunk consecutive images; chunk c is done by array task
 * c % shards == shard and, within the task, by rank (c / shards) % size. Each image is decoded
 * once for all its crops (every epoch's), crops are batched through the teacher, and a chunk
 * is written atomically to <out>.parts/ as soon as it is complete: a killed job resumes from
 * the chunks on disk. A chunk made from another teacher or crops file, or by a teacher pass of
 * the other precision (--bf16 or not), is refused. When every chunk exists the join writes
 * <out> with parallel HDF5 (temporary name, then rename). */
#include <errno.h>
#include <inttypes.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/check.h"
#include "base/digest.h"
#include "base/progress.h"
#include "base/stage.h"
#include "io/checkpoint.h"
#include "io/coco.h"
#include "io/cropfile.h"
#include "io/datasets.h"
#include "io/image.h"
#include "io/teachercache.h"
#include "model/vit.h"
#include "model/vit_bf16.h"

typedef struct {
    Vit *model;
    int S, batch, E;
    float *imgs;     /* (batch, 3, S, S) */
    float **dst;     /* (batch) where each crop's embedding goes */
    int n;           /* crops queued */
} Batcher;

static int flush(Batcher *b) {
    if (b->n == 0) return 0;
    int n = b->n;
    b->n = 0;
    CS_TRY(vit_prepare(b->model, VIT_IMAGE, n, b->S, b->S, 0));
    vit_forward(b->model, b->imgs);
    for (int k = 0; k < n; k++)
        memcpy(b->dst[k], b->model->acts.out + (size_t)k * b->E, (size_t)b->E * sizeof(float));
    return 0;
}

/* Why image i cannot be used, or NULL. */
static const char *load_image(Image *im, const CropFile *cf, int i, const Dataset *ds,
                              char *why, size_t len) {
    char path[4096];
    if (coco_image_path(path, sizeof path, ds->images, cf->file_name[i]) != 0 ||
        image_read_jpeg(im, path) != 0) {
        snprintf(why, len, "%s", cs_error());
        return why;
    }
    if (im->w != cf->width[i] || im->h != cf->height[i]) {
        snprintf(why, len, "%.900s: decoded size %dx%d disagrees with the annotation's %dx%d", path,
                 im->w, im->h, cf->width[i], cf->height[i]);
        return why;
    }
    if (im->w < 10 || im->h < 10) { /* the reference's read_image refuses these too */
        snprintf(why, len, "%.900s: image %dx%d is smaller than 10 pixels", path, im->w, im->h);
        return why;
    }
    return NULL;
}

static int compute_chunk(CacheChunk *c, const CropFile *cf, int lo, int hi, const Dataset *ds,
                         Batcher *b, Image *im, ImageWork *ws) {
    long first = cf->first[(size_t)lo * cf->epochs];
    c->first_row = first;
    c->num_rows = (hi < cf->num_images ? cf->first[(size_t)hi * cf->epochs] : cf->num_rows) - first;
    c->embed = b->E;
    CS_ALLOC(c->emb, (size_t)(c->num_rows ? c->num_rows : 1) * b->E);
    CS_ALLOC(c->valid, c->num_rows ? c->num_rows : 1);
    CS_ALLOC(c->skip_image, hi - lo);
    CS_ALLOC(c->skip_reason, hi - lo);
    for (int i = lo; i < hi; i++) {
        long r0 = cf->first[(size_t)i * cf->epochs];
        long r1 = i + 1 < cf->num_images ? cf->first[(size_t)(i + 1) * cf->epochs] : cf->num_rows;
        char why[1024];
        const char *bad = load_image(im, cf, i, ds, why, sizeof why);
        for (long r = r0; r < r1 && !bad; r++) {
            float *slot = b->imgs + (size_t)b->n * 3 * b->S * b->S;
            /* the teacher's crop: the box, or its enlargement (crops.h) */
            if (preprocess_crop(slot, im, cf->rows[r].tbox, b->S, ws) != 0) {
                snprintf(why, sizeof why, "crop row %ld: %s", r, cs_error());
                bad = why;
                break;
            }
            b->dst[b->n++] = c->emb + (size_t)(r - first) * b->E;
            if (b->n == b->batch) CS_TRY(flush(b));
        }
        for (long r = r0; r < r1; r++) c->valid[r - first] = !bad;
        if (bad) {
            /* rows of a bad image stay zero: its queued crops go through and are then cleared */
            CS_TRY(flush(b));
            memset(c->emb + (size_t)(r0 - first) * b->E, 0, (size_t)(r1 - r0) * b->E * sizeof(float));
            c->skip_image[c->num_skipped] = i;
            c->skip_reason[c->num_skipped] = strdup(bad);
            c->num_skipped++;
            fprintf(stderr, "embed_teacher: skipping image %d: %s\n", i, bad);
        }
    }
    return flush(b);
}

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "embed_teacher", &argc, &argv);
    const char *cfg = "datasets.cfg", *name = NULL, *crops = NULL, *teacher = NULL, *out = NULL;
    int batch = 32, chunk = 64, fp16 = 0, S = 0, shard = 0, shards = 1, join_only = 0;
    int no_join = 0, verify = 0, bf16 = 0;
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &name, "dataset name in the registry (required)"},
        {"datasets", CLI_STRING, &cfg, "dataset registry"},
        {"crops", CLI_STRING, &crops, "crops file from sample_crops (required)"},
        {"teacher", CLI_STRING, &teacher, "teacher checkpoint, .h5 or .safetensors (required)"},
        {"out", CLI_STRING, &out, "teacher cache to write (required)"},
        {"batch", CLI_INT, &batch, "crops per forward pass"},
        {"chunk", CLI_INT, &chunk, "images per chunk file (the unit of resume)"},
        {"size", CLI_INT, &S, "teacher input size (0: the checkpoint's native size)"},
        {"fp16", CLI_FLAG, &fp16, "store the embeddings as float16"},
        {"bf16", CLI_FLAG, &bf16, "run the teacher's transformer blocks in bfloat16 (oneDNN "
                                  "matmul: bf16 weights and inputs of the linear layers, float "
                                  "accumulation; LayerNorm, attention, activations, the head "
                                  "and the stored embeddings stay float32); about 3x faster, "
                                  "cosine >= 0.999 to float32. The cache records it "
                                  "(teacher_precision): a cache or chunk of the other "
                                  "precision is refused, never mixed"},
        {"shard", CLI_INT, &shard, "this job's shard (a Slurm array task), 0-based"},
        {"shards", CLI_INT, &shards, "number of shards"},
        {"no-join", CLI_FLAG, &no_join, "compute chunks only (array tasks); join later"},
        {"join", CLI_FLAG, &join_only, "only join existing chunks into --out"},
        {"verify", CLI_FLAG, &verify, "only check that --out is complete and made from this "
                                      "teacher and these crops (exit 0), missing (1) or not (2)"},
    };
    if (stage_options(&st, argc, argv,
                      "CLIPSelf teacher cache: embed every crop of --crops with the frozen "
                      "teacher (crop, resize longest side to the input size, centred zero "
                      "padding, normalise, image embedding) and write --out. Resumable: "
                      "finished chunks in <out>.parts/ are kept and reused.",
                      opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!name || !crops || !teacher || !out) {
        cs_error_set(__FILE__, __LINE__, "--dataset, --crops, --teacher and --out are required");
        stage_die(&st, "see --help");
    }
    if (batch < 1 || chunk < 1 || shards < 1 || shard < 0 || shard >= shards) {
        cs_error_set(__FILE__, __LINE__, "need batch >= 1, chunk >= 1, 0 <= shard < shards");
        stage_die(&st, NULL);
    }
    Dataset ds;
    stage_check(&st, dataset_lookup(&ds, cfg, name), "check the dataset name and datasets.cfg");
    CropFile cf;
    stage_check(&st, cropfile_read(&cf, crops), "run sample_crops first");
    uint64_t tdig = 0;
    if (st.rank == 0) stage_check(&st, file_digest(&tdig, teacher), NULL);
    MPI_Bcast(&tdig, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    Vit model;
    stage_check(&st, vit_load(&model, teacher, NULL), NULL);
    if (S <= 0) S = model.cfg.grid * model.cfg.patch;
    if (S % model.cfg.patch != 0) {
        cs_error_set(__FILE__, __LINE__, "--size %d is not a multiple of the patch %d", S,
                     model.cfg.patch);
        stage_die(&st, NULL);
    }
    CacheIdentity id = {tdig, cf.digest, S, model.cfg.embed, bf16 ? TEACHER_BF16 : TEACHER_FP32};

    /* an existing cache: done if it is this one, refused if it is another */
    if (verify || access(out, F_OK) == 0) {
        TeacherCache tc;
        int rc = teacher_cache_open(&tc, out, &id);
        if (rc == 0 && tc.fp16 != fp16) {
            rc = cs_error_set(__FILE__, __LINE__, "%s stores %s embeddings, %s were asked for", out,
                              tc.fp16 ? "float16" : "float32", fp16 ? "float16" : "float32");
            teacher_cache_close(&tc);
        }
        if (verify) {
            if (rc == 0) teacher_cache_close(&tc);
            stage_verified(&st, rc, out);
        }
        if (rc == 0) {
            teacher_cache_close(&tc);
            if (st.rank == 0) printf("embed_teacher: %s is complete and matches: nothing to do\n", out);
            stage_end(&st);
            return 0;
        }
        stage_die(&st, "the existing cache is not this teacher's, these crops' or of this "
                       "precision (--bf16): remove it or choose another --out");
    }
    char parts[4096];
    snprintf(parts, sizeof parts, "%s.parts", out);
    if (st.rank == 0 && mkdir(parts, 0777) != 0 && errno != EEXIST) {
        cs_error_set(__FILE__, __LINE__, "cannot create %s: %s", parts, strerror(errno));
        stage_die(&st, NULL);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    int nchunks = (cf.num_images + chunk - 1) / chunk;
    char **paths = calloc((size_t)nchunks + 1, sizeof(char *));
    long *first = calloc((size_t)nchunks + 1, sizeof(long));
    for (int c = 0; c < nchunks; c++) {
        paths[c] = malloc(strlen(parts) + 32);
        sprintf(paths[c], "%s/chunk-%06d.h5", parts, c);
        first[c] = cf.first[(size_t)c * chunk * cf.epochs];
    }
    first[nchunks] = cf.num_rows;

    if (!join_only && bf16) {
        stage_check(&st, vit_bf16_enable(&model), "--bf16 needs oneDNN's bf16 matmul");
        if (st.rank == 0) printf("embed_teacher: teacher blocks in bf16 (oneDNN, %s)\n",
                                 bf16_isa_name());
    }
    if (!join_only) {
        Batcher b = {&model, S, batch, model.cfg.embed, NULL, NULL, 0};
        b.imgs = malloc((size_t)batch * 3 * S * S * sizeof(float));
        b.dst = malloc((size_t)batch * sizeof(float *));
        Image im = {0};
        ImageWork ws = {0};
        long in_shard = 0, done = 0, resumed = 0;
        for (int c = shard; c < nchunks; c += shards) in_shard++;
        Progress prog;
        progress_init(&prog, "embed_teacher", "chunks", in_shard, st.rank == 0);
        for (int c = shard; c < nchunks; c += shards) {
            if ((c / shards) % st.size != st.rank) continue;
            int lo = c * chunk, hi = lo + chunk < cf.num_images ? lo + chunk : cf.num_images;
            if (access(paths[c], F_OK) == 0) {
                if (cache_chunk_check(paths[c], &id, first[c], first[c + 1] - first[c]) == 0) {
                    resumed++;
                    done++;
                    continue;
                }
                stage_die(&st, "a chunk on disk was made from another teacher or crops file, or "
                               "in the other precision (--bf16): remove the .parts folder to "
                               "start over");
            }
            CacheChunk ck = {0};
            stage_check(&st, compute_chunk(&ck, &cf, lo, hi, &ds, &b, &im, &ws), NULL);
            stage_check(&st, cache_chunk_write(paths[c], &ck, &id), NULL);
            cache_chunk_free(&ck);
            progress_update(&prog, ++done * st.size); /* rank 0's pace stands for all */
        }
        long tot[2] = {done, resumed};
        MPI_Allreduce(MPI_IN_PLACE, tot, 2, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        progress_done(&prog, tot[0]);
        if (st.rank == 0)
            printf("embed_teacher: shard %d/%d: %ld chunks (%ld already on disk)\n", shard, shards,
                   tot[0], tot[1]);
        free(b.imgs), free(b.dst);
        image_free(&im);
        image_work_free(&ws);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (!no_join) {
        /* the join needs every chunk of every shard */
        int missing = 0;
        for (int c = st.rank; c < nchunks; c += st.size)
            if (cache_chunk_check(paths[c], &id, first[c], first[c + 1] - first[c]) != 0) {
                if (!missing) fprintf(stderr, "embed_teacher: %s\n", cs_error());
                missing++;
            }
        MPI_Allreduce(MPI_IN_PLACE, &missing, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        if (missing) {
            cs_error_set(__FILE__, __LINE__, "%d of %d chunks are missing, incomplete or of another "
                         "teacher pass: not "
                         "joining %s", missing, nchunks, out);
            if (st.rank == 0) stage_die(&st, "run the missing shards (or all of them) again");
            MPI_Barrier(MPI_COMM_WORLD);
        }
        stage_check(&st, cache_join(out, paths, first, nchunks, &id, fp16, MPI_COMM_WORLD), NULL);
        if (st.rank == 0) {
            for (int c = 0; c < nchunks; c++) unlink(paths[c]);
            rmdir(parts);
            printf("embed_teacher: wrote %s: %ld crops x %d (%s), teacher digest %016" PRIx64
                   ", teacher pass %s\n", out, cf.num_rows, model.cfg.embed,
                   fp16 ? "float16" : "float32", tdig, teacher_precision_name(id.precision));
        }
    }
    for (int c = 0; c < nchunks; c++) free(paths[c]);
    free(paths), free(first);
    vit_free(&model);
    cropfile_free(&cf);
    stage_end(&st);
    return 0;
}
