/* train_student: CLIPSelf training, data-parallel over MPI ranks.
 *
 * Every step takes a global batch of --batch images per rank: each rank runs the student's v2
 * dense path on its own images at --det-size, pools each crop box of the current epoch with
 * RoIAlign, and scores it against the cached teacher embedding of that crop
 * (1 - mean cosine over all the global batch's boxes, so a step is the same on any split of the
 * batch over ranks; the reference's DDP averages each GPU's own mean instead). Gradients are
 * summed over ranks in buckets started while the backward runs, each rank takes the AdamW step
 * of its share of the parameters, and the shares are gathered (allreduce.h: grad_reduce_step),
 * so the replicas stay identical; the moments are gathered for each checkpoint.
 * After each epoch the model
 * saved is alpha * student + (1 - alpha) * teacher; training goes on from the student.
 * Checkpoints (parameters, AdamW moments, step) are written atomically every --save-every
 * steps and on SIGTERM/SIGUSR1; --resume continues from the newest one, bit-identically, and
 * refuses a run folder whose settings (run.txt) differ. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/check.h"
#include "base/digest.h"
#include "base/geometry.h"
#include "base/progress.h"
#include "base/rng.h"
#include "base/stage.h"
#include "io/checkpoint.h"
#include "io/coco.h"
#include "io/cropfile.h"
#include "io/datasets.h"
#include "io/image.h"
#include "io/runfolder.h"
#include "io/teachercache.h"
#include "method/clipself.h"
#include "method/crops.h"
#include "model/adamw.h"
#include "model/allreduce.h"
#include "model/vit.h"

/* The usable images in the order of an epoch: a function of (seed, epoch). */
static void epoch_order(int *order, const int *usable, int n, unsigned long long seed, int epoch) {
    for (int i = 0; i < n; i++) order[i] = usable[i];
    rng_shuffle_epoch(order, n, seed, epoch);
}

/* out = alpha * a + (1 - alpha) * b over the flat buffers */
static void ensemble(float *out, const float *a, const float *b, size_t n, float alpha) {
    for (size_t i = 0; i < n; i++) out[i] = alpha * a[i] + (1.0f - alpha) * b[i];
}

/* epoch_<epoch+1>.h5 = alpha * student + (1 - alpha) * teacher, and student.h5 when final. */
static int save_epoch(const Vit *student, const Vit *teacher, float alpha, const char *run,
                      int epoch, int final) {
    Vit out;
    char path[4200];
    CS_TRY(vit_init(&out, &student->cfg));
    ensemble(out.params_mem, student->params_mem, teacher->params_mem, student->num_params, alpha);
    snprintf(path, sizeof path, "%s/epoch_%d.h5", run, epoch + 1);
    int rc = vit_save_h5(&out, path, NULL);
    if (!rc && final) {
        snprintf(path, sizeof path, "%s/student.h5", run);
        rc = vit_save_h5(&out, path, NULL);
    }
    vit_free(&out);
    if (!rc) printf("train_student: epoch %d done, ensembled model %s/epoch_%d.h5%s\n", epoch + 1,
                    run, epoch + 1, final ? " and student.h5" : "");
    return rc;
}

typedef struct {
    const char *cfg, *name, *crops, *cache, *init, *run;
    int epochs, batch, warmup, det, save_every, resume, seed, max_steps, verify, ranks, keep;
    float lr, wd, alpha;
} Args;

/* The options into a (the required ones checked); 1 after --help. */
static int parse_args(Stage *st, Args *a, int argc, char **argv) {
    *a = (Args){.cfg = "datasets.cfg", .batch = 2, .warmup = 1000, .det = 1024,
                .save_every = 1000, .keep = 2, .lr = 1e-5f, .wd = 0.1f, .alpha = 0.7f};
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &a->name, "dataset name in the registry (required)"},
        {"datasets", CLI_STRING, &a->cfg, "dataset registry"},
        {"crops", CLI_STRING, &a->crops, "crops file from sample_crops (required)"},
        {"cache", CLI_STRING, &a->cache, "teacher cache from embed_teacher (required)"},
        {"init", CLI_STRING, &a->init, "teacher checkpoint: the student's start and the "
                                       "ensemble's other half (required; must be the cache's "
                                       "teacher)"},
        {"model", CLI_STRING, &a->init, "the same as --init: the model to fine-tune (any "
                                        "checkpoint the stages read: CLIP or EVA02, .h5 or "
                                        ".safetensors)"},
        {"run-dir", CLI_STRING, &a->run, "folder for checkpoints, epoch models and the log "
                                         "(required)"},
        {"epochs", CLI_INT, &a->epochs, "epochs to train (0: every epoch of the crops file)"},
        {"batch", CLI_INT, &a->batch, "images per rank per step"},
        {"lr", CLI_FLOAT, &a->lr, "peak learning rate"},
        {"wd", CLI_FLOAT, &a->wd, "AdamW weight decay (not on biases, norms, 1-D tensors)"},
        {"warmup", CLI_INT, &a->warmup, "linear warmup steps, then cosine decay to 0"},
        {"det-size", CLI_INT, &a->det, "student input side: longest image side resized to it, "
                                       "padded right/bottom (multiple of the patch)"},
        {"alpha", CLI_FLOAT, &a->alpha, "epoch model = alpha * student + (1 - alpha) * teacher"},
        {"save-every", CLI_INT, &a->save_every, "checkpoint every N steps (and at the end)"},
        {"resume", CLI_FLAG, &a->resume, "continue from the newest checkpoint in the run folder"},
        {"keep", CLI_INT, &a->keep, "step checkpoints kept (the newest ones; older are removed)"},
        {"seed", CLI_INT, &a->seed, "seed of the image order"},
        {"max-steps", CLI_INT, &a->max_steps, "stop (with a checkpoint) after this global step"},
        {"verify", CLI_FLAG, &a->verify, "only check that <run-dir>/student.h5 is complete and "
                                         "was trained with these settings (exit 0), missing (1) "
                                         "or not (2)"},
        {"ranks", CLI_INT, &a->ranks, "with --verify: the ranks the run uses (0: this job's)"},
    };
    if (stage_options(st, argc, argv,
                      "CLIPSelf student training (data-parallel over MPI ranks): the student's "
                      "RoIAlign-pooled dense features of each crop are pulled towards the cached "
                      "teacher embedding of the crop. Writes <run-dir>/step_N.h5 checkpoints, "
                      "epoch_E.h5 ensembled models, student.h5 (the last epoch's) and train_log.csv.",
                      opts, (int)(sizeof opts / sizeof opts[0])))
        return 1;
    if (!a->name || !a->crops || !a->cache || !a->init || !a->run) {
        cs_error_set(__FILE__, __LINE__, "--dataset, --crops, --cache, --init and --run-dir are "
                     "required");
        stage_die(st, "see --help");
    }
    return 0;
}


/* The student (gradients allocated, CLIPSelf's tensors frozen) and the frozen teacher, both
 * from init; det must be a multiple of the patch, and embed (the cache's) the model's. */
static int load_models(Vit *student, Vit *teacher, const char *init, int det, int embed) {
    CS_TRY(vit_load(student, init, NULL));
    CS_TRY(vit_load(teacher, init, NULL));
    const VitConfig *c = &student->cfg;
    CS_CHECK(det % c->patch == 0 && embed == c->embed, "det-size %d must be a multiple of the "
             "patch %d, and the cache's embeddings (%d) must match the model's (%d)", det,
             c->patch, embed, c->embed);
    CS_TRY(vit_alloc_grads(student));
    vit_freeze_clipself(student);
    return 0;
}

/* The images the teacher cache has rows for: their indices into cf's image table. */
static int usable_images(int **usable, int *n, const CropFile *cf, TeacherCache *tc,
                         const char *cache) {
    CS_CHECK(tc->rows == cf->num_rows, "%s has %ld rows for %ld crops", cache, tc->rows,
             cf->num_rows);
    uint8_t *valid = malloc((size_t)(tc->rows ? tc->rows : 1));
    *usable = malloc((size_t)(cf->num_images ? cf->num_images : 1) * sizeof(int));
    *n = 0;
    if (!valid || !*usable) {
        free(valid);
        CS_FAIL("out of memory for the table of %d images", cf->num_images);
    }
    int rc = teacher_cache_valid(tc, valid);
    for (int i = 0; !rc && i < cf->num_images; i++) {
        long r = cf->first[(size_t)i * cf->epochs];
        if (r >= 0 && valid[r]) (*usable)[(*n)++] = i;
    }
    free(valid);
    return rc;
}

/* What a resumed run must share with the run it continues: anything else would change the
 * schedule, the data order or the arithmetic. */
static void run_signature(char *sig, size_t len, const Args *a, int ranks, uint64_t crops,
                          uint64_t teacher, int precision) {
    snprintf(sig, len,
             "ranks=%d batch=%d epochs=%d seed=%d lr=%.9g wd=%.9g warmup=%d det=%d alpha=%.9g "
             "crops=%016llx teacher=%016llx%s\n",
             ranks, a->batch, a->epochs, a->seed, (double)a->lr, (double)a->wd, a->warmup,
             a->det, (double)a->alpha, (unsigned long long)crops, (unsigned long long)teacher,
             /* the targets' precision: a run never mixes float32 and bf16 teacher caches (only
              * bf16 is named, so the runs made before the attribute resume as before) */
             precision == TEACHER_BF16 ? " teacher_pass=bfloat16" : "");
}

/* --verify: path (the run's student.h5) loads, has the student's shape, and the run's
 * run.txt has this signature. */
static int verify_student(const char *path, const char *run, const char *signature,
                          const Vit *student) {
    char old[1024];
    runfolder_signature(old, sizeof old, run);
    Vit done;
    CS_TRY(vit_load_h5(&done, path, NULL));
    int same = done.num_params == student->num_params;
    vit_free(&done);
    CS_CHECK(same, "%s is not a model of --init's shape", path);
    CS_CHECK(!strcmp(old, signature), "%s was trained with other settings:\n  was: %s  now: %s",
             path, old[0] ? old : "(unknown)\n", signature);
    return 0;
}

/* One rank's share of a step: its images, their crop boxes and the teacher's embeddings. */
typedef struct {
    int batch, S, E, grid; /* images, input side, embedding width, token grid side */
    float *imgs;           /* (batch, 3, S, S) */
    float *boxes;          /* (maxbox, 5) image in the batch, then the token-grid box */
    float *target;         /* (maxbox, E) the teacher's embeddings of the crops */
    uint8_t *vrow;         /* (maxbox) */
    Image im;
    ImageWork ws;
    int R;                 /* boxes this step */
} Batch;

static int batch_init(Batch *b, int batch, int S, int E, int grid, size_t maxbox) {
    *b = (Batch){.batch = batch, .S = S, .E = E, .grid = grid};
    b->imgs = malloc((size_t)batch * 3 * S * S * sizeof(float));
    b->boxes = malloc(maxbox * 5 * sizeof(float));
    b->target = malloc(maxbox * E * sizeof(float));
    b->vrow = malloc(maxbox);
    CS_CHECK(b->imgs && b->boxes && b->target && b->vrow, "out of memory for a batch of %d at "
             "%dx%d", batch, S, S);
    return 0;
}

static void batch_free(Batch *b) {
    free(b->imgs), free(b->boxes), free(b->target), free(b->vrow);
    image_free(&b->im);
    image_work_free(&b->ws);
}

/* The batch of images ids (indices into cf's table) for an epoch. */
static int batch_load(Batch *b, const int *ids, int epoch, const char *images,
                      const CropFile *cf, TeacherCache *tc) {
    int S = b->S;
    b->R = 0;
    for (int k = 0; k < b->batch; k++) {
        int i = ids[k];
        char ipath[4096];
        CS_TRY(coco_image_path(ipath, sizeof ipath, images, cf->file_name[i]));
        CS_TRY(image_read_jpeg(&b->im, ipath));
        CS_TRY(preprocess_full(b->imgs + (size_t)k * 3 * S * S, &b->im, S, &b->ws));
        double scale = geom_fit_scale(S, b->im.w, b->im.h);
        long r0 = cf->first[(size_t)i * cf->epochs + epoch];
        int n = cf->count[(size_t)i * cf->epochs + epoch];
        CS_TRY(teacher_cache_read(tc, r0, n, b->target + (size_t)b->R * b->E, b->vrow));
        for (int j = 0; j < n; j++) {
            float *o = b->boxes + (size_t)(b->R + j) * 5;
            o[0] = (float)k;
            geom_token_box(o + 1, cf->rows[r0 + j].box, scale, S, b->grid);
        }
        b->R += n;
    }
    return 0;
}

/* The student's gradients of the step (not yet summed over ranks) and the global batch's loss:
 * the mean over all its boxes, so each rank's share is scaled by its boxes. */
static int step_gradients(Vit *student, ClipselfLoss *cl, const Batch *b, float *ddense,
                          double *loss) {
    int Rg = b->R, g = b->grid;
    MPI_Allreduce(MPI_IN_PLACE, &Rg, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    CS_TRY(vit_prepare(student, VIT_DENSE, b->batch, b->S, b->S, 1));
    vit_forward(student, b->imgs);
    float loss_local;
    CS_TRY(clipself_loss_forward(cl, &loss_local, student->acts.out, b->boxes, b->target, b->R,
                                 b->batch, g, g, b->E));
    double cos_sum = (1.0 - (double)loss_local) * b->R;
    MPI_Allreduce(MPI_IN_PLACE, &cos_sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    memset(ddense, 0, (size_t)b->batch * g * g * b->E * sizeof(float));
    clipself_loss_backward(cl, ddense, (float)b->R / (float)Rg);
    vit_zero_grad(student);
    CS_TRY(vit_backward(student, ddense, NULL));
    *loss = 1.0 - cos_sum / Rg;
    return 0;
}

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "train_student", &argc, &argv);
    Args a;
    if (parse_args(&st, &a, argc, argv)) {
        stage_end(&st);
        return 0;
    }
    runfolder_catch_signals();
    Dataset ds;
    stage_check(&st, dataset_lookup(&ds, a.cfg, a.name), "check the dataset name and datasets.cfg");
    CropFile cf;
    stage_check(&st, cropfile_read(&cf, a.crops), "run sample_crops first");
    if (a.epochs <= 0) a.epochs = cf.epochs;
    if (a.epochs > cf.epochs || a.batch < 1 || a.det < 1 || a.save_every < 1 || a.keep < 1) {
        cs_error_set(__FILE__, __LINE__, "need 1 <= epochs <= %d (the crops file's), batch >= 1, "
                     "det-size >= 1, save-every >= 1, keep >= 1", cf.epochs);
        stage_die(&st, NULL);
    }
    uint64_t tdig = 0;
    if (st.rank == 0) stage_check(&st, file_digest(&tdig, a.init), NULL);
    MPI_Bcast(&tdig, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    TeacherCache tc;
    CacheIdentity id = {tdig, cf.digest, 0, 0, TEACHER_ANY};
    stage_check(&st, teacher_cache_open(&tc, a.cache, &id),
                "the cache must be embed_teacher's output for these crops and this --init");
    Vit student, teacher;
    stage_check(&st, load_models(&student, &teacher, a.init, a.det, tc.embed), NULL);
    const VitConfig *c = &student.cfg;
    AdamWConfig ac = {a.lr, 0.9f, 0.999f, 1e-8f, a.wd};
    AdamW opt;
    stage_check(&st, adamw_init(&opt, &ac, student.num_params), NULL);
    GradReduce gr; /* hooks the student's backward: the sums start block by block, and each
                    * rank runs AdamW on its share of the parameters (allreduce.h) */
    stage_check(&st, grad_reduce_init(&gr, &student, GRAD_BUCKET_FLOATS, MPI_COMM_WORLD), NULL);
    stage_check(&st, grad_reduce_shard(&gr, &opt), NULL);

    int *usable = NULL, nusable = 0;
    stage_check(&st, usable_images(&usable, &nusable, &cf, &tc, a.cache), NULL);
    int G = a.batch * st.size;
    long per_epoch = nusable / G, total = per_epoch * a.epochs;
    if (per_epoch < 1) {
        cs_error_set(__FILE__, __LINE__, "%d usable images cannot fill one global batch of %d",
                     nusable, G);
        stage_die(&st, "use fewer ranks or a smaller --batch");
    }
    if (st.rank == 0 && a.warmup >= total)
        fprintf(stderr, "train_student: warning: --warmup %d is not below the %ld steps of the "
                "run: the learning rate never leaves the warmup\n", a.warmup, total);
    char path[4096], signature[1024];
    run_signature(signature, sizeof signature, &a, a.verify && a.ranks > 0 ? a.ranks : st.size,
                  cf.digest, tdig, tc.precision);
    if (a.verify) {
        snprintf(path, sizeof path, "%s/student.h5", a.run);
        stage_verified(&st, st.rank == 0 ? verify_student(path, a.run, signature, &student) : 0,
                       path);
    }
    RunFolder rf;
    if (runfolder_open(&rf, "train_student", a.run, signature, a.resume, "ranks, batch, epochs, "
                       "seed, schedule, crops and teacher (and a cache of the same teacher "
                       "pass, float32 or bf16)", MPI_COMM_WORLD) != 0)
        stage_die(&st, rf.hint[0] ? rf.hint : NULL);
    long step;
    stage_check(&st, runfolder_resume(&rf, &student, &opt, NULL, 0, &step), NULL);

    int grid = a.det / c->patch, E = c->embed;
    size_t maxbox = (size_t)a.batch * cf.max_boxes;
    Batch b;
    stage_check(&st, batch_init(&b, a.batch, a.det, E, grid, maxbox), "use a smaller --batch");
    float *ddense = malloc((size_t)a.batch * grid * grid * E * sizeof(float));
    int *order = malloc((size_t)nusable * sizeof(int));
    if (!ddense || !order) {
        cs_error_set(__FILE__, __LINE__, "out of memory for a batch of %d", a.batch);
        stage_die(&st, "use a smaller --batch");
    }
    ClipselfLoss cl;
    stage_check(&st, clipself_loss_init(&cl, (int)maxbox, E), NULL);
    FILE *log;
    stage_check(&st, runfolder_log(&rf, &log, "train_log.csv",
                                   "step,epoch,loss,lr,images_per_s\n", step, step), NULL);
    if (st.rank == 0)
        printf("train_student: %d usable images, %d ranks x %d images, %ld steps per epoch, %d "
               "epochs, %ld steps; det %d, %d boxes max per image\n",
               nusable, st.size, a.batch, per_epoch, a.epochs, total, a.det, cf.max_boxes);
    Progress prog;
    progress_init(&prog, "train_student", "steps", total, st.rank == 0);
    double t0 = now_seconds();
    long steps_here = 0;
    int last_epoch = -1;
    while (step < total) {
        int epoch = (int)(step / per_epoch);
        if (epoch != last_epoch)
            epoch_order(order, usable, nusable, (unsigned long long)a.seed, epoch);
        last_epoch = epoch;
        const int *ids = order + (step % per_epoch) * G + st.rank * a.batch;
        stage_check(&st, batch_load(&b, ids, epoch, ds.images, &cf, &tc),
                    "the images must decode as they did when the cache was made");
        double loss = 0, lr_now = lr_at_step(a.lr, a.warmup, total, step);
        stage_check(&st, step_gradients(&student, &cl, &b, ddense, &loss), NULL);
        stage_check(&st, grad_reduce_step(&gr, (float)lr_now), NULL);
        step++, steps_here++;
        double rate = steps_here * G / (now_seconds() - t0);
        if (log) {
            fprintf(log, "%ld,%d,%.7f,%.6e,%.3f\n", step, epoch, loss, lr_now, rate);
            fflush(log);
        }
        if (st.rank == 0 && (step % 10 == 0 || step == total))
            printf("step %ld/%ld epoch %d loss %.5f lr %.3e %.2f img/s\n", step, total, epoch,
                   loss, lr_now, rate);
        progress_update(&prog, step);
        int stop = runfolder_stop_signal() || (a.max_steps > 0 && step >= a.max_steps);
        MPI_Allreduce(MPI_IN_PLACE, &stop, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        if (step % a.save_every == 0 || step == total || stop) {
            stage_check(&st, grad_reduce_gather_moments(&gr), NULL);
            stage_check(&st, runfolder_save(&rf, &student, &opt, step, NULL, 0, a.keep), NULL);
        }
        if (st.rank == 0 && step % per_epoch == 0)
            stage_check(&st, save_epoch(&student, &teacher, a.alpha, a.run, epoch, step == total),
                        NULL);
        if (stop && step < total) {
            if (st.rank == 0)
                printf("train_student: stopping at step %ld (%s); continue with --resume\n", step,
                       runfolder_stop_signal() ? "signal" : "--max-steps");
            break;
        }
    }
    progress_done(&prog, step);
    /* a run killed between its last checkpoint and its final model finishes here on resume */
    snprintf(path, sizeof path, "%s/student.h5", a.run);
    if (st.rank == 0 && step == total && access(path, F_OK) != 0)
        stage_check(&st, save_epoch(&student, &teacher, a.alpha, a.run, a.epochs - 1, 1), NULL);
    if (log) fclose(log);
    free(usable), free(ddense), free(order);
    batch_free(&b);
    clipself_loss_free(&cl);
    adamw_free(&opt);
    grad_reduce_free(&gr, &student);
    vit_free(&student);
    vit_free(&teacher);
    teacher_cache_close(&tc);
    cropfile_free(&cf);
    stage_end(&st);
    return 0;
}
