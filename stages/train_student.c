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

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "train_student", &argc, &argv);
    const char *cfg = "datasets.cfg", *name = NULL, *crops = NULL, *cache = NULL, *init = NULL;
    const char *run = NULL;
    int epochs = 0, batch = 2, warmup = 1000, det = 1024, save_every = 1000, resume = 0;
    int seed = 0, max_steps = 0, verify = 0, ranks = 0, keep = 2;
    float lr = 1e-5f, wd = 0.1f, alpha = 0.7f;
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &name, "dataset name in the registry (required)"},
        {"datasets", CLI_STRING, &cfg, "dataset registry"},
        {"crops", CLI_STRING, &crops, "crops file from sample_crops (required)"},
        {"cache", CLI_STRING, &cache, "teacher cache from embed_teacher (required)"},
        {"init", CLI_STRING, &init, "teacher checkpoint: the student's start and the ensemble's "
                                    "other half (required; must be the cache's teacher)"},
        {"model", CLI_STRING, &init, "the same as --init: the model to fine-tune (any checkpoint "
                                     "the stages read: CLIP or EVA02, .h5 or .safetensors)"},
        {"run-dir", CLI_STRING, &run, "folder for checkpoints, epoch models and the log (required)"},
        {"epochs", CLI_INT, &epochs, "epochs to train (0: every epoch of the crops file)"},
        {"batch", CLI_INT, &batch, "images per rank per step"},
        {"lr", CLI_FLOAT, &lr, "peak learning rate"},
        {"wd", CLI_FLOAT, &wd, "AdamW weight decay (not on biases, norms, 1-D tensors)"},
        {"warmup", CLI_INT, &warmup, "linear warmup steps, then cosine decay to 0"},
        {"det-size", CLI_INT, &det, "student input side: longest image side resized to it, "
                                    "padded right/bottom (multiple of the patch)"},
        {"alpha", CLI_FLOAT, &alpha, "epoch model = alpha * student + (1 - alpha) * teacher"},
        {"save-every", CLI_INT, &save_every, "checkpoint every N steps (and at the end)"},
        {"resume", CLI_FLAG, &resume, "continue from the newest checkpoint in the run folder"},
        {"keep", CLI_INT, &keep, "step checkpoints kept (the newest ones; older are removed)"},
        {"seed", CLI_INT, &seed, "seed of the image order"},
        {"max-steps", CLI_INT, &max_steps, "stop (with a checkpoint) after this global step"},
        {"verify", CLI_FLAG, &verify, "only check that <run-dir>/student.h5 is complete and was "
                                      "trained with these settings (exit 0), missing (1) or not (2)"},
        {"ranks", CLI_INT, &ranks, "with --verify: the ranks the run uses (0: this job's)"},
    };
    if (stage_options(&st, argc, argv,
                      "CLIPSelf student training (data-parallel over MPI ranks): the student's "
                      "RoIAlign-pooled dense features of each crop are pulled towards the cached "
                      "teacher embedding of the crop. Writes <run-dir>/step_N.h5 checkpoints, "
                      "epoch_E.h5 ensembled models, student.h5 (the last epoch's) and train_log.csv.",
                      opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!name || !crops || !cache || !init || !run) {
        cs_error_set(__FILE__, __LINE__, "--dataset, --crops, --cache, --init and --run-dir are "
                     "required");
        stage_die(&st, "see --help");
    }
    runfolder_catch_signals();
    Dataset ds;
    stage_check(&st, dataset_lookup(&ds, cfg, name), "check the dataset name and datasets.cfg");
    CropFile cf;
    stage_check(&st, cropfile_read(&cf, crops), "run sample_crops first");
    if (epochs <= 0) epochs = cf.epochs;
    if (epochs > cf.epochs || batch < 1 || det < 1 || save_every < 1 || keep < 1) {
        cs_error_set(__FILE__, __LINE__, "need 1 <= epochs <= %d (the crops file's), batch >= 1, "
                     "det-size >= 1, save-every >= 1, keep >= 1", cf.epochs);
        stage_die(&st, NULL);
    }
    uint64_t tdig = 0;
    if (st.rank == 0) stage_check(&st, file_digest(&tdig, init), NULL);
    MPI_Bcast(&tdig, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    TeacherCache tc;
    CacheIdentity id = {tdig, cf.digest, 0, 0, TEACHER_ANY};
    stage_check(&st, teacher_cache_open(&tc, cache, &id),
                "the cache must be embed_teacher's output for these crops and this --init");
    Vit student, teacher;
    stage_check(&st, vit_load(&student, init, NULL), NULL);
    stage_check(&st, vit_load(&teacher, init, NULL), NULL);
    const VitConfig *c = &student.cfg;
    if (det % c->patch || tc.embed != c->embed) {
        cs_error_set(__FILE__, __LINE__, "det-size %d must be a multiple of the patch %d, and the "
                     "cache's embeddings (%d) must match the model's (%d)", det, c->patch,
                     tc.embed, c->embed);
        stage_die(&st, NULL);
    }
    stage_check(&st, vit_alloc_grads(&student), NULL);
    vit_freeze_clipself(&student);
    AdamWConfig ac = {lr, 0.9f, 0.999f, 1e-8f, wd};
    AdamW opt;
    stage_check(&st, adamw_init(&opt, &ac, student.num_params), NULL);
    GradReduce gr; /* hooks the student's backward: the sums start block by block, and each
                    * rank runs AdamW on its share of the parameters (allreduce.h) */
    stage_check(&st, grad_reduce_init(&gr, &student, GRAD_BUCKET_FLOATS, MPI_COMM_WORLD), NULL);
    stage_check(&st, grad_reduce_shard(&gr, &opt), NULL);

    /* images usable for training: the teacher cache has their rows */
    uint8_t *valid = malloc((size_t)(tc.rows ? tc.rows : 1));
    int *usable = malloc((size_t)(cf.num_images ? cf.num_images : 1) * sizeof(int)), nusable = 0;
    if (tc.rows != cf.num_rows) {
        cs_error_set(__FILE__, __LINE__, "%s has %ld rows for %ld crops", cache, tc.rows,
                     cf.num_rows);
        stage_die(&st, NULL);
    }
    stage_check(&st, teacher_cache_valid(&tc, valid), NULL);
    for (int i = 0; i < cf.num_images; i++) {
        long r = cf.first[(size_t)i * cf.epochs];
        if (r >= 0 && valid[r]) usable[nusable++] = i;
    }
    int G = batch * st.size;
    long per_epoch = nusable / G, total = per_epoch * epochs;
    if (per_epoch < 1) {
        cs_error_set(__FILE__, __LINE__, "%d usable images cannot fill one global batch of %d",
                     nusable, G);
        stage_die(&st, "use fewer ranks or a smaller --batch");
    }
    if (st.rank == 0 && warmup >= total)
        fprintf(stderr, "train_student: warning: --warmup %d is not below the %ld steps of the "
                "run: the learning rate never leaves the warmup\n", warmup, total);
    char path[4096];
    /* What a resumed run must share with the run it continues: anything else would change the
     * schedule, the data order or the arithmetic. */
    char signature[1024];
    snprintf(signature, sizeof signature,
             "ranks=%d batch=%d epochs=%d seed=%d lr=%.9g wd=%.9g warmup=%d det=%d alpha=%.9g "
             "crops=%016llx teacher=%016llx%s\n",
             verify && ranks > 0 ? ranks : st.size, batch, epochs, seed, (double)lr, (double)wd,
             warmup, det, (double)alpha,
             (unsigned long long)cf.digest, (unsigned long long)tdig,
             /* the targets' precision: a run never mixes float32 and bf16 teacher caches (only
              * bf16 is named, so the runs made before the attribute resume as before) */
             tc.precision == TEACHER_BF16 ? " teacher_pass=bfloat16" : "");
    if (verify) {
        snprintf(path, sizeof path, "%s/student.h5", run);
        int rc = 0;
        if (st.rank == 0) {
            char old[1024];
            runfolder_signature(old, sizeof old, run);
            Vit done;
            rc = vit_load_h5(&done, path, NULL);
            if (!rc) {
                if (done.num_params != student.num_params)
                    rc = cs_error_set(__FILE__, __LINE__, "%s is not a model of --init's shape",
                                      path);
                vit_free(&done);
            }
            if (!rc && strcmp(old, signature) != 0)
                rc = cs_error_set(__FILE__, __LINE__, "%s was trained with other settings:\n  "
                                  "was: %s  now: %s", path, old[0] ? old : "(unknown)\n",
                                  signature);
        }
        stage_verified(&st, rc, path);
    }
    RunFolder rf;
    if (runfolder_open(&rf, "train_student", run, signature, resume, "ranks, batch, epochs, "
                       "seed, schedule, crops and teacher (and a cache of the same teacher "
                       "pass, float32 or bf16)", MPI_COMM_WORLD) != 0)
        stage_die(&st, rf.hint[0] ? rf.hint : NULL);
    long step;
    stage_check(&st, runfolder_resume(&rf, &student, &opt, NULL, 0, &step), NULL);
    int N = (det / c->patch) * (det / c->patch), E = c->embed, S = det;
    size_t maxbox = (size_t)batch * cf.max_boxes;
    float *imgs = malloc((size_t)batch * 3 * S * S * sizeof(float));
    float *boxes = malloc(maxbox * 5 * sizeof(float)), *target = malloc(maxbox * E * sizeof(float));
    float *ddense = malloc((size_t)batch * N * E * sizeof(float));
    int *order = malloc((size_t)nusable * sizeof(int));
    uint8_t *vrow = malloc(maxbox);
    ClipselfLoss cl;
    stage_check(&st, clipself_loss_init(&cl, (int)maxbox, E), NULL);
    Image im = {0};
    ImageWork ws = {0};
    FILE *log;
    stage_check(&st, runfolder_log(&rf, &log, "train_log.csv",
                                   "step,epoch,loss,lr,images_per_s\n", step, step), NULL);
    if (st.rank == 0) {
        printf("train_student: %d usable images, %d ranks x %d images, %ld steps per epoch, %d "
               "epochs, %ld steps; det %d, %d boxes max per image\n",
               nusable, st.size, batch, per_epoch, epochs, total, det, cf.max_boxes);
    }
    Progress prog;
    progress_init(&prog, "train_student", "steps", total, st.rank == 0);
    double t0 = now_seconds();
    long steps_here = 0;
    int last_epoch = -1;
    while (step < total) {
        int epoch = (int)(step / per_epoch);
        if (epoch != last_epoch) epoch_order(order, usable, nusable, (unsigned long long)seed, epoch);
        last_epoch = epoch;
        long s_in = step % per_epoch;
        /* this rank's images and their crop boxes (token-grid coordinates) and targets */
        int R = 0;
        for (int k = 0; k < batch; k++) {
            int i = order[s_in * G + st.rank * batch + k];
            char ipath[4096];
            stage_check(&st, coco_image_path(ipath, sizeof ipath, ds.images, cf.file_name[i]), NULL);
            stage_check(&st, image_read_jpeg(&im, ipath), "the image decoded when the cache was made");
            stage_check(&st, preprocess_full(imgs + (size_t)k * 3 * S * S, &im, S, &ws), NULL);
            double scale = (double)S / (double)(im.w > im.h ? im.w : im.h);
            long r0 = cf.first[(size_t)i * cf.epochs + epoch];
            int n = cf.count[(size_t)i * cf.epochs + epoch];
            stage_check(&st, teacher_cache_read(&tc, r0, n, target + (size_t)R * E, vrow), NULL);
            for (int j = 0; j < n; j++) {
                const float *b = cf.rows[r0 + j].box;
                float *o = boxes + (size_t)(R + j) * 5;
                o[0] = (float)k;
                crop_token_box(o + 1, b, scale, S, S / c->patch);
            }
            R += n;
        }
        /* the loss is a mean over the global batch's boxes: scale this rank's share */
        int Rg = R;
        MPI_Allreduce(MPI_IN_PLACE, &Rg, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        stage_check(&st, vit_prepare(&student, VIT_DENSE, batch, S, S, 1), NULL);
        vit_forward(&student, imgs);
        float loss_local;
        stage_check(&st, clipself_loss_forward(&cl, &loss_local, student.acts.out, boxes, target,
                                               R, batch, det / c->patch, det / c->patch, E), NULL);
        double cos_sum = (1.0 - (double)loss_local) * R;
        MPI_Allreduce(MPI_IN_PLACE, &cos_sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        memset(ddense, 0, (size_t)batch * N * E * sizeof(float));
        clipself_loss_backward(&cl, ddense, (float)R / (float)Rg);
        vit_zero_grad(&student);
        stage_check(&st, vit_backward(&student, ddense, NULL), NULL);
        double lr_now = lr_at_step(lr, warmup, total, step);
        stage_check(&st, grad_reduce_step(&gr, (float)lr_now), NULL);
        step++, steps_here++;
        double loss = 1.0 - cos_sum / Rg, rate = steps_here * G / (now_seconds() - t0);
        if (log) {
            fprintf(log, "%ld,%d,%.7f,%.6e,%.3f\n", step, epoch, loss, lr_now, rate);
            fflush(log);
        }
        if (st.rank == 0 && (step % 10 == 0 || step == total))
            printf("step %ld/%ld epoch %d loss %.5f lr %.3e %.2f img/s\n", step, total, epoch,
                   loss, lr_now, rate);
        progress_update(&prog, step);
        int stop = runfolder_stop_signal() || (max_steps > 0 && step >= max_steps);
        MPI_Allreduce(MPI_IN_PLACE, &stop, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        int epoch_end = step % per_epoch == 0;
        int save = step % save_every == 0 || step == total || stop;
        if (save) stage_check(&st, grad_reduce_gather_moments(&gr), NULL);
        if (save) stage_check(&st, runfolder_save(&rf, &student, &opt, step, NULL, 0, keep), NULL);
        if (st.rank == 0 && epoch_end)
            stage_check(&st, save_epoch(&student, &teacher, alpha, run, epoch, step == total),
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
    snprintf(path, sizeof path, "%s/student.h5", run);
    if (st.rank == 0 && step == total && access(path, F_OK) != 0)
        stage_check(&st, save_epoch(&student, &teacher, alpha, run, epochs - 1, 1), NULL);
    if (log) fclose(log);
    free(valid), free(usable), free(imgs), free(boxes), free(target), free(ddense);
    free(order), free(vrow);
    clipself_loss_free(&cl);
    image_free(&im);
    image_work_free(&ws);
    adamw_free(&opt);
    grad_reduce_free(&gr, &student);
    vit_free(&student);
    vit_free(&teacher);
    teacher_cache_close(&tc);
    cropfile_free(&cf);
    stage_end(&st);
    return 0;
}
