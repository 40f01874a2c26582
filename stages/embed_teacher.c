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

typedef struct {
    const char *cfg, *name, *crops, *teacher, *out;
    int batch, chunk, fp16, S, shard, shards, join_only, no_join, verify, bf16;
} Args;

/* The options into a, checked; 1 after --help. */
static int parse_args(Stage *st, Args *a, int argc, char **argv) {
    *a = (Args){.cfg = "datasets.cfg", .batch = 32, .chunk = 64, .shards = 1};
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &a->name, "dataset name in the registry (required)"},
        {"datasets", CLI_STRING, &a->cfg, "dataset registry"},
        {"crops", CLI_STRING, &a->crops, "crops file from sample_crops (required)"},
        {"teacher", CLI_STRING, &a->teacher, "teacher checkpoint, .h5 or .safetensors (required)"},
        {"out", CLI_STRING, &a->out, "teacher cache to write (required)"},
        {"batch", CLI_INT, &a->batch, "crops per forward pass"},
        {"chunk", CLI_INT, &a->chunk, "images per chunk file (the unit of resume)"},
        {"size", CLI_INT, &a->S, "teacher input size (0: the checkpoint's native size)"},
        {"fp16", CLI_FLAG, &a->fp16, "store the embeddings as float16"},
        {"bf16", CLI_FLAG, &a->bf16, "run the teacher's transformer blocks in bfloat16 (oneDNN "
                                     "matmul: bf16 weights and inputs of the linear layers, float "
                                     "accumulation; LayerNorm, attention, activations, the head "
                                     "and the stored embeddings stay float32); about 3x faster, "
                                     "cosine >= 0.999 to float32. The cache records it "
                                     "(teacher_precision): a cache or chunk of the other "
                                     "precision is refused, never mixed"},
        {"shard", CLI_INT, &a->shard, "this job's shard (a Slurm array task), 0-based"},
        {"shards", CLI_INT, &a->shards, "number of shards"},
        {"no-join", CLI_FLAG, &a->no_join, "compute chunks only (array tasks); join later"},
        {"join", CLI_FLAG, &a->join_only, "only join existing chunks into --out"},
        {"verify", CLI_FLAG, &a->verify, "only check that --out is complete and made from "
                                         "this teacher and these crops (exit 0), missing (1) or "
                                         "not (2)"},
    };
    if (stage_options(st, argc, argv,
                      "CLIPSelf teacher cache: embed every crop of --crops with the frozen "
                      "teacher (crop, resize longest side to the input size, centred zero "
                      "padding, normalise, image embedding) and write --out. Resumable: "
                      "finished chunks in <out>.parts/ are kept and reused.",
                      opts, (int)(sizeof opts / sizeof opts[0])))
        return 1;
    if (!a->name || !a->crops || !a->teacher || !a->out) {
        cs_error_set(__FILE__, __LINE__, "--dataset, --crops, --teacher and --out are required");
        stage_die(st, "see --help");
    }
    if (a->batch < 1 || a->chunk < 1 || a->shards < 1 || a->shard < 0 || a->shard >= a->shards) {
        cs_error_set(__FILE__, __LINE__, "need batch >= 1, chunk >= 1, 0 <= shard < shards");
        stage_die(st, NULL);
    }
    return 0;
}

/* 0 if the cache at out is complete and this one (identity and storage type), else why not. */
static int check_existing(const char *out, const CacheIdentity *id, int fp16) {
    TeacherCache tc;
    CS_TRY(teacher_cache_open(&tc, out, id));
    int stored = tc.fp16;
    teacher_cache_close(&tc);
    CS_CHECK(stored == fp16, "%s stores %s embeddings, %s were asked for", out,
             stored ? "float16" : "float32", fp16 ? "float16" : "float32");
    return 0;
}

/* The chunk files of the crops: paths[c] in parts, and first[c] each chunk's first row
 * (first[nchunks]: the row count). */
typedef struct {
    int n, size;   /* chunks; images per chunk */
    char **paths;  /* (n) */
    long *first;   /* (n + 1) */
} Chunks;

static int chunks_init(Chunks *ch, const CropFile *cf, const char *parts, int chunk) {
    ch->size = chunk;
    ch->n = (cf->num_images + chunk - 1) / chunk;
    ch->paths = calloc((size_t)ch->n + 1, sizeof(char *));
    ch->first = calloc((size_t)ch->n + 1, sizeof(long));
    CS_CHECK(ch->paths && ch->first, "out of memory for %d chunks", ch->n);
    for (int c = 0; c < ch->n; c++) {
        ch->paths[c] = malloc(strlen(parts) + 32);
        CS_CHECK(ch->paths[c], "out of memory for %d chunks", ch->n);
        sprintf(ch->paths[c], "%s/chunk-%06d.h5", parts, c);
        ch->first[c] = cf->first[(size_t)c * chunk * cf->epochs];
    }
    ch->first[ch->n] = cf->num_rows;
    return 0;
}

static void chunks_free(Chunks *ch) {
    for (int c = 0; ch->paths && c < ch->n; c++) free(ch->paths[c]);
    free(ch->paths), free(ch->first);
}

/* This rank's chunks of the shard, computed unless a matching one is on disk (resume); -2 for a
 * chunk on disk of another teacher, crops file or precision. Collective (the totals). */
static int compute_shard(const Args *a, const Chunks *ch, const CropFile *cf, const Dataset *ds,
                         Vit *model, int S, const CacheIdentity *id, int rank, int size) {
    Batcher b = {model, S, a->batch, model->cfg.embed, NULL, NULL, 0};
    b.imgs = malloc((size_t)a->batch * 3 * S * S * sizeof(float));
    b.dst = malloc((size_t)a->batch * sizeof(float *));
    CS_CHECK(b.imgs && b.dst, "out of memory for a batch of %d at %dx%d", a->batch, S, S);
    Image im = {0};
    ImageWork ws = {0};
    long in_shard = 0, done = 0, resumed = 0;
    for (int c = a->shard; c < ch->n; c += a->shards) in_shard++;
    Progress prog;
    progress_init(&prog, "embed_teacher", "chunks", in_shard, rank == 0);
    int rc = 0;
    for (int c = a->shard; !rc && c < ch->n; c += a->shards) {
        if ((c / a->shards) % size != rank) continue;
        int lo = c * ch->size, hi = lo + ch->size < cf->num_images ? lo + ch->size
                                                                   : cf->num_images;
        if (access(ch->paths[c], F_OK) == 0) {
            if (cache_chunk_check(ch->paths[c], id, ch->first[c],
                                  ch->first[c + 1] - ch->first[c]) != 0) {
                rc = -2;
                break;
            }
            resumed++;
            done++;
            continue;
        }
        CacheChunk ck = {0};
        rc = compute_chunk(&ck, cf, lo, hi, ds, &b, &im, &ws);
        if (!rc) rc = cache_chunk_write(ch->paths[c], &ck, id);
        cache_chunk_free(&ck);
        if (!rc) progress_update(&prog, ++done * size); /* rank 0's pace stands for all */
    }
    free(b.imgs), free(b.dst);
    image_free(&im);
    image_work_free(&ws);
    if (rc) return rc; /* the stage dies: the other ranks go with it */
    long tot[2] = {done, resumed};
    MPI_Allreduce(MPI_IN_PLACE, tot, 2, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    progress_done(&prog, tot[0]);
    if (rank == 0)
        printf("embed_teacher: shard %d/%d: %ld chunks (%ld already on disk)\n", a->shard,
               a->shards, tot[0], tot[1]);
    return 0;
}

/* How many chunks (over all ranks) are missing, incomplete or of another teacher pass; the
 * first this rank finds is reported on stderr. Collective. */
static int missing_chunks(const Chunks *ch, const CacheIdentity *id, int rank, int size) {
    int missing = 0;
    for (int c = rank; c < ch->n; c += size)
        if (cache_chunk_check(ch->paths[c], id, ch->first[c], ch->first[c + 1] - ch->first[c]) !=
            0) {
            if (!missing) fprintf(stderr, "embed_teacher: %s\n", cs_error());
            missing++;
        }
    MPI_Allreduce(MPI_IN_PLACE, &missing, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    return missing;
}

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "embed_teacher", &argc, &argv);
    Args a;
    if (parse_args(&st, &a, argc, argv)) {
        stage_end(&st);
        return 0;
    }
    Dataset ds;
    stage_check(&st, dataset_lookup(&ds, a.cfg, a.name), "check the dataset name and datasets.cfg");
    CropFile cf;
    stage_check(&st, cropfile_read(&cf, a.crops), "run sample_crops first");
    uint64_t tdig = 0;
    if (st.rank == 0) stage_check(&st, file_digest(&tdig, a.teacher), NULL);
    MPI_Bcast(&tdig, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    Vit model;
    stage_check(&st, vit_load(&model, a.teacher, NULL), NULL);
    int S = a.S > 0 ? a.S : model.cfg.grid * model.cfg.patch;
    if (S % model.cfg.patch != 0) {
        cs_error_set(__FILE__, __LINE__, "--size %d is not a multiple of the patch %d", S,
                     model.cfg.patch);
        stage_die(&st, NULL);
    }
    CacheIdentity id = {tdig, cf.digest, S, model.cfg.embed,
                        a.bf16 ? TEACHER_BF16 : TEACHER_FP32};

    /* an existing cache: done if it is this one, refused if it is another */
    if (a.verify || access(a.out, F_OK) == 0) {
        int rc = check_existing(a.out, &id, a.fp16);
        if (a.verify) stage_verified(&st, rc, a.out);
        if (rc == 0) {
            if (st.rank == 0)
                printf("embed_teacher: %s is complete and matches: nothing to do\n", a.out);
            stage_end(&st);
            return 0;
        }
        stage_die(&st, "the existing cache is not this teacher's, these crops' or of this "
                       "precision (--bf16): remove it or choose another --out");
    }
    char parts[4096];
    snprintf(parts, sizeof parts, "%s.parts", a.out);
    if (st.rank == 0 && mkdir(parts, 0777) != 0 && errno != EEXIST) {
        cs_error_set(__FILE__, __LINE__, "cannot create %s: %s", parts, strerror(errno));
        stage_die(&st, NULL);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    Chunks ch = {0};
    stage_check(&st, chunks_init(&ch, &cf, parts, a.chunk), NULL);
    if (!a.join_only && a.bf16) {
        stage_check(&st, vit_bf16_enable(&model), "--bf16 needs oneDNN's bf16 matmul");
        if (st.rank == 0) printf("embed_teacher: teacher blocks in bf16 (oneDNN, %s)\n",
                                 bf16_isa_name());
    }
    if (!a.join_only) {
        int rc = compute_shard(&a, &ch, &cf, &ds, &model, S, &id, st.rank, st.size);
        stage_check(&st, rc, rc == -2 ? "a chunk on disk was made from another teacher or crops "
                                        "file, or in the other precision (--bf16): remove the "
                                        ".parts folder to start over" : NULL);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (!a.no_join) {
        /* the join needs every chunk of every shard */
        int missing = missing_chunks(&ch, &id, st.rank, st.size);
        if (missing) {
            cs_error_set(__FILE__, __LINE__, "%d of %d chunks are missing, incomplete or of "
                         "another teacher pass: not joining %s", missing, ch.n, a.out);
            if (st.rank == 0) stage_die(&st, "run the missing shards (or all of them) again");
            MPI_Barrier(MPI_COMM_WORLD);
        }
        stage_check(&st, cache_join(a.out, ch.paths, ch.first, ch.n, &id, a.fp16, MPI_COMM_WORLD),
                    NULL);
        if (st.rank == 0) {
            for (int c = 0; c < ch.n; c++) unlink(ch.paths[c]);
            rmdir(parts);
            printf("embed_teacher: wrote %s: %ld crops x %d (%s), teacher digest %016" PRIx64
                   ", teacher pass %s\n", a.out, cf.num_rows, model.cfg.embed,
                   a.fp16 ? "float16" : "float32", tdig, teacher_precision_name(id.precision));
        }
    }
    chunks_free(&ch);
    vit_free(&model);
    cropfile_free(&cf);
    stage_end(&st);
    return 0;
}
