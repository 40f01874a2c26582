/* pretrain_teacher: CLIP-style pretraining of a small ViT on a COCO panoptic dataset, so that a
 * demo has a teacher that, like real CLIP, recognises whole crops but whose dense (v2) features
 * recognise regions poorly: CLIPSelf (train_student) then has something to fix.
 *
 * The samples of an epoch are every annotated segment of every image as a crop (things: the
 * bbox enlarged by a random factor in [1.2, 1.8] about a centre jittered by up to 10% of the
 * box side, clipped to the image; stuff: the bbox with the same centre jitter), each whole
 * image, and --random-crops random boxes per image (each side a uniform fraction in [0.15, 1]
 * of the image's, independently, at a uniform position; a function of (seed, epoch, image,
 * k)). Crops go through the same transform as evaluate's crops (preprocess_crop: resize the
 * longest side, centred padding). The order and the jitter are functions of (seed, epoch,
 * sample) alone.
 *
 * Targets are "what a caption would name": real CLIP learns from captions, and captions name
 * the salient objects in a picture, so CLIP's embedding of any region with an object in it
 * reflects the object (CLIPSelf's gain on things comes from distilling exactly that into the
 * dense features of image tiles). Every sample's target over the categories is proportional
 * to (visible pixels of category k inside its box) x w_k, w_k = --thing-weight for thing
 * categories and 1 for stuff, normalised to sum 1: a thing crop's target is mostly its thing,
 * a stuff crop's mostly its stuff with the things on it mixed in, a whole image's or a random
 * box's is dominated by the things in it. The pixels are read from the panoptic PNGs
 * (--annotations-png, segment id -> category through the annotations), counted in the box
 * exactly as it is cropped (corners rounded half to even, in original image pixels). A box
 * with no labelled pixel gets an all-zero target: it adds nothing to the loss (whose mean is
 * over the labelled samples of the global batch) and is not counted in the accuracy. Train
 * top-1 (per kind: things, stuff, whole images, random boxes) is argmax logits == argmax
 * target.
 *
 * Model: the ViT's image embedding against a learned matrix of class embeddings, both
 * L2-normalised, logits scaled by a learned exp(log_scale) (method/contrastive.h); the loss
 * is the mean over the global batch, so a step is the same on any split of it over ranks.
 * Gradients are summed over ranks (the ViT's flat buffer in buckets started while its backward
 * runs, allreduce.h; the class embeddings, the scale and the step's tallies with the last of
 * them) and every rank takes the same AdamW step.
 * Checkpoints (ViT, class embeddings, scale, all AdamW moments, step, the epoch's tallies) are
 * written atomically every --save-every steps and on SIGTERM/SIGUSR1; --resume continues from
 * the newest, bit-identically, and refuses a run folder whose settings (run.txt) differ. At the
 * end the teacher (--out) and its normalised class embeddings (--classes-out, what evaluate
 * reads) are written, and <run-dir>/outputs.txt records the settings and digests of both for
 * --verify. */
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/check.h"
#include "base/digest.h"
#include "base/fileio.h"
#include "base/progress.h"
#include "base/rng.h"
#include "base/stage.h"
#include "io/checkpoint.h"
#include "io/classes.h"
#include "io/coco.h"
#include "io/datasets.h"
#include "io/image.h"
#include "io/runfolder.h"
#include "method/contrastive.h"
#include "method/teacherdata.h"
#include "model/adamw.h"
#include "model/allreduce.h"
#include "model/ops.h"
#include "model/vit.h"

/* The step's tallies, summed over ranks with the gradients, and over an epoch on every rank. */
enum {
    TALLY_LOSS,
    TALLY_OK,
    TALLY_N = TALLY_OK + KINDS,
    TALLY_SKIP = TALLY_N + KINDS, /* samples without a labelled pixel in their box */
    TALLY_STOP,
    TALLIES
};

/* 0..n-1 in the order of an epoch: a function of (seed, epoch). */
static void epoch_order(int *order, int n, unsigned long long seed, int epoch) {
    for (int i = 0; i < n; i++) order[i] = i;
    rng_shuffle_epoch(order, n, seed, epoch);
}

/* ---- run folder ------------------------------------------------------------------------------ */

/* outputs.txt: the settings signature, then the digests of the two outputs. Written through a
 * temporary and a rename, after both outputs. */
static int write_outputs_record(const char *run, const char *signature, const char *out,
                                const char *classes_out) {
    uint64_t d1, d2;
    CS_TRY(file_digest(&d1, out));
    CS_TRY(file_digest(&d2, classes_out));
    char path[4200], text[8192];
    snprintf(path, sizeof path, "%s/outputs.txt", run);
    int n = snprintf(text, sizeof text, "%smodel=%016llx classes=%016llx\n", signature,
                     (unsigned long long)d1, (unsigned long long)d2);
    CS_CHECK(n > 0 && (size_t)n < sizeof text, "%s: the settings signature is too long", path);
    return file_write_text(path, text);
}

/* --verify: both outputs load, and outputs.txt says a finished run with this signature made
 * exactly these files. */
static int verify_outputs(const char *run, const char *signature, const char *out,
                          const char *classes_out, const CocoCategories *cats, const Vit *shape) {
    Vit done;
    CS_TRY(vit_load_h5(&done, out, NULL));
    int same = done.num_params == shape->num_params && done.cfg.embed == shape->cfg.embed;
    vit_free(&done);
    CS_CHECK(same, "%s is not a model of this shape", out);
    ClassEmbeddings ce;
    CS_TRY(classes_read(&ce, classes_out, cats));
    classes_free(&ce);
    char path[4200], line[1024] = "", digests[128] = "", want[128];
    snprintf(path, sizeof path, "%s/outputs.txt", run);
    FILE *f = fopen(path, "r");
    CS_CHECK(f, "%s: no record of a finished run (%s)", path, strerror(errno));
    if (!fgets(line, sizeof line, f) || !fgets(digests, sizeof digests, f)) line[0] = 0;
    fclose(f);
    CS_CHECK(!strcmp(line, signature), "%s was trained with other settings:\n  was: %s  now: %s",
             out, line[0] ? line : "(unknown)\n", signature);
    uint64_t d1, d2;
    CS_TRY(file_digest(&d1, out));
    CS_TRY(file_digest(&d2, classes_out));
    snprintf(want, sizeof want, "model=%016llx classes=%016llx\n", (unsigned long long)d1,
             (unsigned long long)d2);
    CS_CHECK(!strcmp(digests, want), "%s or %s is not the file the run in %s wrote", out,
             classes_out, run);
    return 0;
}

/* The training state beside the ViT in a step checkpoint. head = [class embeddings (K, E) |
 * log_scale], moments in the same layout. */
static void head_extras(CheckpointExtra x[7], float *head, float *m, float *v, float *tally,
                        int K, int E) {
    size_t ke = (size_t)K * E;
    x[0] = (CheckpointExtra){"contrastive/class_embeddings", 2, {K, E}, head};
    x[1] = (CheckpointExtra){"contrastive/log_scale", 1, {1, 0}, head + ke};
    x[2] = (CheckpointExtra){"contrastive/adamw_m/class_embeddings", 2, {K, E}, m};
    x[3] = (CheckpointExtra){"contrastive/adamw_m/log_scale", 1, {1, 0}, m + ke};
    x[4] = (CheckpointExtra){"contrastive/adamw_v/class_embeddings", 2, {K, E}, v};
    x[5] = (CheckpointExtra){"contrastive/adamw_v/log_scale", 1, {1, 0}, v + ke};
    x[6] = (CheckpointExtra){"train/epoch_tallies", 1, {TALLIES, 0}, tally};
}

/* Normal N(0, 1/E) class embeddings (Box-Muller on splitmix64), a function of the seed. */
static void init_class_embeddings(float *cls, int K, int E, unsigned long long seed) {
    uint64_t s = rng_mix64(seed ^ 0x5EED0C1A55E5ULL);
    float sd = 1.0f / sqrtf((float)E);
    for (long i = 0; i < (long)K * E; i += 2) {
        double u1 = rng_uniform(&s); /* (0, 1): the log's argument */
        double u2 = (double)(rng_next(&s) >> 11) * 0x1.0p-53; /* [0, 1) */
        double r = sqrt(-2.0 * log(u1));
        cls[i] = sd * (float)(r * cos(2.0 * M_PI * u2));
        if (i + 1 < (long)K * E) cls[i + 1] = sd * (float)(r * sin(2.0 * M_PI * u2));
    }
}

typedef struct {
    const char *cfg, *name, *ann, *out, *classes_out, *run, *act, *png_opt, *dump_path, *arch;
    VitConfig c; /* the model's shape, from the options */
    int size, seed, epochs, batch, warmup, save_every, keep;
    int resume, max_steps, verify, ranks, fixed_scale, random_crops;
    float lr, wd, logit_scale, thing_weight;
} Args;

/* The options into a, checked, and the model's config from them; 1 after --help. */
static int parse_args(Stage *st, Args *a, int argc, char **argv) {
    *a = (Args){.cfg = "datasets.cfg", .act = "gelu", .arch = "clip",
                .c = {.width = 128, .layers = 4, .heads = 4, .mlp = 512, .embed = 64, .patch = 8,
                      .ln_eps = 1e-5f},
                .size = 64, .epochs = 20, .batch = 32, .warmup = 50, .save_every = 500,
                .keep = 2, .random_crops = 2, .lr = 1e-3f, .wd = 0.1f,
                .logit_scale = 1.0f / 0.07f, .thing_weight = 4.0f};
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &a->name, "dataset name in the registry (required): images are "
                                          "read from its images root"},
        {"datasets", CLI_STRING, &a->cfg, "dataset registry"},
        {"annotations", CLI_STRING, &a->ann, "COCO panoptic JSON of images in that root "
                                             "(required): segments give boxes and categories"},
        {"annotations-png", CLI_STRING, &a->png_opt, "folder of its panoptic PNGs (default: the "
                                                     "JSON's path without .json, COCO's layout): "
                                                     "the visible pixels the targets count"},
        {"thing-weight", CLI_FLOAT, &a->thing_weight, "weight of a thing category's pixels "
                                                      "against stuff's (1) in the targets: "
                                                      "captions name the salient objects"},
        {"random-crops", CLI_INT, &a->random_crops, "random boxes per image per epoch (sides "
                                                    "uniform in [0.15, 1] of the image's)"},
        {"out", CLI_STRING, &a->out, "teacher checkpoint to write (.h5, required)"},
        {"classes-out", CLI_STRING, &a->classes_out, "class embeddings to write, one per "
                                                     "category of the annotations, normalised "
                                                     "(required)"},
        {"run-dir", CLI_STRING, &a->run, "folder for checkpoints, run.txt and the logs (required)"},
        {"width", CLI_INT, &a->c.width, "ViT width"},
        {"layers", CLI_INT, &a->c.layers, "ViT blocks"},
        {"heads", CLI_INT, &a->c.heads, "attention heads"},
        {"mlp", CLI_INT, &a->c.mlp, "MLP width"},
        {"embed", CLI_INT, &a->c.embed, "embedding dimension"},
        {"patch", CLI_INT, &a->c.patch, "patch size"},
        {"size", CLI_INT, &a->size, "input side (the positional grid is size / patch; evaluate "
                                    "crops at it by default)"},
        {"arch", CLI_STRING, &a->arch, "clip (open_clip ViT) | eva02 (EVA02-CLIP's vision tower: "
                                       "RoPE, sub-LN, SwiGLU MLP, LayerNorm eps 1e-6)"},
        {"act", CLI_STRING, &a->act, "MLP activation of clip: gelu | quickgelu"},
        {"rope-grid", CLI_INT, &a->c.rope_grid, "eva02: the RoPE grid side (0: the positional "
                                                "grid, size / patch)"},
        {"seed", CLI_INT, &a->seed, "seed of the initialisation, the sample order and the jitter"},
        {"epochs", CLI_INT, &a->epochs, "epochs to train"},
        {"batch", CLI_INT, &a->batch, "samples per rank per step"},
        {"lr", CLI_FLOAT, &a->lr, "peak learning rate"},
        {"wd", CLI_FLOAT, &a->wd, "AdamW weight decay on the ViT's matrices (none on biases, "
                                  "norms, 1-D tensors, the class embeddings and the logit "
                                  "scale)"},
        {"warmup", CLI_INT, &a->warmup, "linear warmup steps, then cosine decay to 0"},
        {"logit-scale", CLI_FLOAT, &a->logit_scale, "initial logit scale (CLIP: 1/0.07); "
                                                    "learned, kept in [1, 100]"},
        {"fixed-scale", CLI_FLAG, &a->fixed_scale, "keep the logit scale at --logit-scale"},
        {"save-every", CLI_INT, &a->save_every, "checkpoint every N steps (and at the end)"},
        {"keep", CLI_INT, &a->keep, "step checkpoints kept (the newest ones; older are removed)"},
        {"resume", CLI_FLAG, &a->resume, "continue from the newest checkpoint in the run folder"},
        {"max-steps", CLI_INT, &a->max_steps, "stop (with a checkpoint) after this global step"},
        {"verify", CLI_FLAG, &a->verify, "only check that --out and --classes-out are complete "
                                         "and were made by a finished run with these settings "
                                         "(exit 0), missing (1) or not (2)"},
        {"ranks", CLI_INT, &a->ranks, "with --verify: the ranks the run uses (0: this job's)"},
        {"dump-targets", CLI_STRING, &a->dump_path, "debug: write the first step's samples on "
                                                    "rank 0 (epoch, sample, kind, image, png, box "
                                                    "x0 y0 x1 y1, labelled pixels, target per "
                                                    "category) to this CSV"},
    };
    if (stage_options(st, argc, argv,
                      "CLIP-style teacher pretraining (data-parallel over MPI ranks): a ViT's "
                      "image embedding of every annotated segment's crop, every whole image and "
                      "random boxes is classified against learned class embeddings. Targets are "
                      "what a caption would name (CLIP learns from captions, which name the "
                      "salient objects): over categories, proportional to the visible pixels of "
                      "each in the box (from the panoptic PNGs) times --thing-weight for things "
                      "and 1 for stuff. Writes the teacher (--out), its class embeddings "
                      "(--classes-out), and <run-dir>/step_N.h5 checkpoints, train_log.csv (per "
                      "step) and epoch_log.csv (loss and train top-1 per epoch, top-1 meaning "
                      "the target's argmax: things, stuff, whole images, random boxes).",
                      opts, (int)(sizeof opts / sizeof opts[0])))
        return 1;
    if (!a->name || !a->ann || !a->out || !a->classes_out || !a->run) {
        cs_error_set(__FILE__, __LINE__, "--dataset, --annotations, --out, --classes-out and "
                     "--run-dir are required");
        stage_die(st, "see --help");
    }
    VitConfig *c = &a->c;
    c->arch = !strcmp(a->arch, "clip") ? VIT_ARCH_CLIP : !strcmp(a->arch, "eva02") ? VIT_ARCH_EVA02
                                                                                  : -1;
    c->act = !strcmp(a->act, "gelu") ? ACT_GELU : !strcmp(a->act, "quickgelu") ? ACT_QUICKGELU : -1;
    if (c->arch == VIT_ARCH_EVA02) c->act = 0, c->ln_eps = 1e-6f; /* SwiGLU; EVA's eps */
    if (c->arch < 0 || c->act < 0 || c->rope_grid < 0 || a->size < 1 || c->patch < 1 ||
        a->size % c->patch || a->epochs < 1 || a->batch < 1 || a->warmup < 0 ||
        a->save_every < 1 || a->keep < 1 || a->random_crops < 0 ||
        !(a->thing_weight > 0.0f && a->thing_weight < 1e6f) ||
        !(a->logit_scale >= 1.0f && a->logit_scale <= 100.0f)) {
        cs_error_set(__FILE__, __LINE__, "need --arch clip|eva02, --act gelu|quickgelu, "
                     "--rope-grid >= 0, --size a multiple of "
                     "--patch, epochs, batch, save-every and keep >= 1, warmup and random-crops "
                     ">= 0, a thing weight > 0 and a logit scale in [1, 100]");
        stage_die(st, "see --help");
    }
    c->grid = a->size / c->patch;
    if (c->arch == VIT_ARCH_EVA02 && c->rope_grid == 0) c->rope_grid = c->grid;
    return 0;
}

/* The folder of the panoptic PNGs: --annotations-png, or the JSON's path without .json. */
static int png_folder(char *root, size_t len, const char *ann, const char *png_opt) {
    if (png_opt) {
        snprintf(root, len, "%s", png_opt);
        return 0;
    }
    size_t n = strlen(ann);
    CS_CHECK(n > 5 && n - 5 < len && !strcmp(ann + n - 5, ".json"),
             "%s does not end in .json: no default PNG folder", ann);
    memcpy(root, ann, n - 5);
    root[n - 5] = 0;
    return 0;
}

/* Digests of the annotations and of every PNG the targets read (a resumed run must see the
 * same pixels), taken on rank 0 and broadcast. */
static int data_digests(uint64_t *adig, uint64_t *pdig, const char *ann, const char *png_root,
                        const CocoPanoptic *pan, int rank) {
    int rc = 0;
    *adig = 0, *pdig = FNV1A64_INIT;
    if (rank == 0) rc = file_digest(adig, ann);
    for (int i = 0; rank == 0 && !rc && i < pan->num_images; i++) {
        uint64_t d;
        char pp[4096];
        rc = coco_image_path(pp, sizeof pp, png_root, pan->images[i].png_name);
        if (!rc) rc = file_digest(&d, pp);
        if (!rc) *pdig = fnv1a64(*pdig, &d, sizeof d);
    }
    MPI_Bcast(adig, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    MPI_Bcast(pdig, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    return rc;
}

/* What a resumed run must share with the run it continues: anything else would change the
 * model, the schedule, the data or the arithmetic. */
static void run_signature(char *sig, size_t len, const Args *a, int ranks, uint64_t adig,
                          uint64_t pdig) {
    const VitConfig *c = &a->c;
    char model_sig[96];
    if (c->arch == VIT_ARCH_EVA02) /* a CLIP run's signature is what it was before EVA02 */
        snprintf(model_sig, sizeof model_sig, "swiglu arch=eva02 rope_grid=%d", c->rope_grid);
    else
        snprintf(model_sig, sizeof model_sig, "%s", a->act);
    snprintf(sig, len,
             "ranks=%d batch=%d epochs=%d seed=%d lr=%.9g wd=%.9g warmup=%d size=%d width=%d "
             "layers=%d heads=%d mlp=%d embed=%d patch=%d act=%s logit_scale=%.9g fixed=%d "
             "dataset=%s annotations=%016llx pngs=%016llx thing_weight=%.9g random_crops=%d\n",
             ranks, a->batch, a->epochs, a->seed, (double)a->lr, (double)a->wd, a->warmup,
             a->size, c->width, c->layers, c->heads, c->mlp, c->embed, c->patch, model_sig,
             (double)a->logit_scale, a->fixed_scale, a->name, (unsigned long long)adig,
             (unsigned long long)pdig, (double)a->thing_weight, a->random_crops);
}

/* The contrastive head and what is summed with the ViT's gradients. */
typedef struct {
    int K, E;
    size_t ke, nh;         /* K * E; the head's floats, ke + 1 */
    float *head, *hm, *hv; /* (nh) [class embeddings (K, E) | log_scale], its AdamW moments */
    float *tail;           /* (nh + TALLIES) [d head | the step's tallies], one sum */
    float tally[TALLIES];  /* this epoch's, summed over its steps */
    CheckpointExtra extras[7];
} Head;

static int head_init(Head *h, int K, int E) {
    memset(h, 0, sizeof *h);
    h->K = K, h->E = E, h->ke = (size_t)K * E, h->nh = h->ke + 1;
    CS_ALLOC(h->head, h->nh);
    CS_ALLOC(h->hm, h->nh);
    CS_ALLOC(h->hv, h->nh);
    CS_ALLOC(h->tail, h->nh + TALLIES);
    head_extras(h->extras, h->head, h->hm, h->hv, h->tally, K, E);
    return 0;
}

static void head_free(Head *h) { free(h->head), free(h->hm), free(h->hv), free(h->tail); }

/* This rank's tallies of a step into tl: the loss summed over its samples, and per kind the
 * right (argmax logits is a target's argmax; a tie: either is right) and counted samples, and
 * the samples without a labelled pixel. */
static void batch_tallies(float *tl, float loss, const ContrastiveLoss *cl,
                          const TeacherLoader *ld, int batch, int K) {
    tl[TALLY_LOSS] = loss * (float)batch; /* unlabelled rows add 0 */
    for (int k = 0; k < batch; k++) {
        if (ld->labelled[k] == 0) {
            tl[TALLY_SKIP] += 1.0f;
            continue;
        }
        const float *z = cl->logits + (size_t)k * K, *t = ld->target + (size_t)k * K; /* (K) */
        int best = 0;
        float tmax = t[0];
        for (int j = 1; j < K; j++) {
            best = z[j] > z[best] ? j : best;
            tmax = t[j] > tmax ? t[j] : tmax;
        }
        tl[TALLY_OK + ld->kind[k]] += (float)(t[best] == tmax);
        tl[TALLY_N + ld->kind[k]] += 1.0f;
    }
}

/* One step: forward, the loss and its backward, the sums over ranks (gradients, the head's
 * and the tallies, with this rank's wish to stop after global step `step`), AdamW on the ViT
 * and on the head. */
static int train_step(Vit *m, Head *h, ContrastiveLoss *cl, const TeacherLoader *ld, float *demb,
                      AdamW *opt, GradReduce *gr, const Args *a, int ranks, double lr, long step) {
    int G = a->batch * ranks;
    size_t ke = h->ke, nh = h->nh;
    vit_forward(m, ld->imgs);
    float loss;
    CS_TRY(contrastive_forward(cl, &loss, m->acts.out, h->head, h->head[ke], ld->target,
                               a->batch));
    /* the loss is the global batch's mean: each rank's mean weighs 1 / ranks */
    memset(h->tail, 0, (nh + TALLIES) * sizeof(float));
    memset(demb, 0, (size_t)a->batch * h->E * sizeof(float));
    contrastive_backward(cl, demb, h->tail, h->tail + ke, 1.0f / (float)ranks);
    vit_zero_grad(m);
    CS_TRY(vit_backward(m, demb, NULL));
    float *tl = h->tail + nh;
    batch_tallies(tl, loss, cl, ld, a->batch, h->K);
    tl[TALLY_STOP] = runfolder_stop_signal() || (a->max_steps > 0 && step + 1 >= a->max_steps);
    CS_TRY(grad_reduce_finish(gr, h->tail, nh + TALLIES));
    /* the loss is the mean over the global batch's labelled samples: rescale the gradient of
     * the mean over all G (the same on every rank, after the sums) */
    double valid = 0;
    for (int t = 0; t < KINDS; t++) valid += tl[TALLY_N + t];
    if (valid > 0 && valid < G) {
        float r = (float)(G / valid);
        for (size_t i = 0; i < m->num_params; i++) m->grads_mem[i] *= r;
        for (size_t i = 0; i < nh; i++) h->tail[i] *= r;
    }
    adamw_step(opt, m, (float)lr);
    /* no weight decay on the head: the loss normalises the class embeddings, so decay would
     * only shrink them (raising their effective step size), and CLIP exempts its logit scale */
    adamw_update(h->head, h->tail, h->hm, h->hv, a->fixed_scale ? ke : nh, (float)lr,
                 opt->cfg.beta1, opt->cfg.beta2, opt->cfg.eps, 0.0f, opt->step);
    /* open_clip clamps the learned scale to [1, 100] after every step */
    h->head[ke] = fminf(fmaxf(h->head[ke], 0.0f), logf(100.0f));
    for (int t = 0; t < TALLY_STOP; t++) h->tally[t] += tl[t];
    return 0;
}

/* The step's row of train_log.csv (rank 0). */
static void log_step(FILE *log, long step, int epoch, const float *tl, double lr, double scale,
                     double rate) {
    double ok = 0, n = 0;
    for (int t = 0; t < KINDS; t++) ok += tl[TALLY_OK + t], n += tl[TALLY_N + t];
    fprintf(log, "%ld,%d,%.7f,%.4f,%.6e,%.4f,%.1f\n", step, epoch,
            n > 0 ? tl[TALLY_LOSS] / n : 0.0, n > 0 ? ok / n : NAN, lr, scale, rate);
    fflush(log);
}

/* An epoch's summary line and its epoch_log.csv row (rank 0), from its tallies. */
static void log_epoch(FILE *elog, const float *tally, int epoch, int epochs, double scale,
                      double rate) {
    double acc[KINDS], counted = 0;
    for (int t = 0; t < KINDS; t++) {
        acc[t] = tally[TALLY_N + t] > 0 ? tally[TALLY_OK + t] / tally[TALLY_N + t] : NAN;
        counted += tally[TALLY_N + t];
    }
    double eloss = counted > 0 ? tally[TALLY_LOSS] / counted : 0.0;
    const char *const *kn = teacher_kind_names;
    printf("pretrain_teacher: epoch %d/%d: loss %.4f, train top-1 %s %.1f%%, %s %.1f%%, %s "
           "%.1f%%, %s %.1f%% (%.0f without a labelled pixel), logit scale %.2f, %.1f "
           "samples/s\n",
           epoch + 1, epochs, eloss, kn[0], 100 * acc[0], kn[1], 100 * acc[1], kn[2],
           100 * acc[2], kn[3], 100 * acc[3], (double)tally[TALLY_SKIP], scale, rate);
    fprintf(elog, "%d,%.6f,%.4f,%.4f,%.4f,%.4f,%.4f,%.0f\n", epoch + 1, eloss, acc[0], acc[1],
            acc[2], scale, acc[3], (double)tally[TALLY_SKIP]);
    fflush(elog);
}

/* --dump-targets holds the first step's samples: close it after them. */
static int close_dump(TeacherLoader *ld, const char *path) {
    int bad = fclose(ld->dump) != 0;
    ld->dump = NULL;
    CS_CHECK(!bad, "cannot write %s", path);
    return 0;
}

/* The run's first lines (rank 0): the samples by kind, the targets, the schedule, the model. */
static void print_summary(const CocoPanoptic *pan, const TeacherSample *samples, int nsamples,
                          const Args *a, int ranks, long per_epoch, long total, size_t params) {
    int counts[KINDS] = {0};
    for (int i = 0; i < nsamples; i++) counts[teacher_sample_kind(pan, &samples[i])]++;
    printf("pretrain_teacher: %d images, %d categories; %d samples per epoch (%d things, %d "
           "stuff, %d whole images, %d random boxes); targets: visible pixels x (%g for a "
           "thing, 1 for stuff); %d ranks x %d, %ld steps per epoch, %d epochs, %ld steps; "
           "ViT (%s) %d wide, %d blocks, %zu parameters, input %d\n",
           pan->num_images, pan->categories.num, nsamples, counts[KIND_THING],
           counts[KIND_STUFF], counts[KIND_IMAGE], counts[KIND_RANDOM], (double)a->thing_weight,
           ranks, a->batch, per_epoch, a->epochs, total, vit_arch_name(a->c.arch), a->c.width,
           a->c.layers, params, a->size);
}

/* A finished run's outputs (rank 0): the teacher, its normalised class embeddings, and
 * outputs.txt vouching for both. */
static int write_outputs(const Args *a, const Head *h, const Vit *m, const CocoPanoptic *pan,
                         const char *signature) {
    int K = h->K, E = h->E;
    float *cls_n = malloc(h->ke * sizeof(float)), *norm = malloc((size_t)K * sizeof(float));
    if (!cls_n || !norm) {
        free(cls_n), free(norm);
        CS_FAIL("out of memory");
    }
    l2norm_forward(cls_n, norm, h->head, K, E);
    char source[4300]; /* no output path in it: the same run elsewhere is the same file */
    snprintf(source, sizeof source, "pretrain_teacher: learned with the teacher on %s, seed %d "
             "(logit scale %.3f)", a->ann, a->seed, exp(h->head[h->ke]));
    int rc = vit_save_h5(m, a->out, NULL);
    if (!rc) rc = classes_write(a->classes_out, &pan->categories, cls_n, E, source);
    if (!rc) rc = write_outputs_record(a->run, signature, a->out, a->classes_out);
    if (!rc)
        printf("pretrain_teacher: wrote the teacher %s and its %d class embeddings %s\n", a->out,
               K, a->classes_out);
    free(cls_n), free(norm);
    return rc;
}

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "pretrain_teacher", &argc, &argv);
    Args a;
    if (parse_args(&st, &a, argc, argv)) {
        stage_end(&st);
        return 0;
    }
    runfolder_catch_signals();
    Dataset ds;
    stage_check(&st, dataset_lookup(&ds, a.cfg, a.name), "check the dataset name and datasets.cfg");
    CocoPanoptic pan;
    stage_check(&st, coco_read_panoptic(&pan, a.ann), "--annotations must be a COCO panoptic JSON");
    char png_root[4096], signature[1024], path[4200];
    stage_check(&st, png_folder(png_root, sizeof png_root, a.ann, a.png_opt),
                "give --annotations-png");
    uint64_t adig, pdig;
    stage_check(&st, data_digests(&adig, &pdig, a.ann, png_root, &pan, st.rank),
                "--annotations-png must hold the annotations' panoptic PNGs");
    Vit m;
    stage_check(&st, vit_init(&m, &a.c), "see --help for the model shape options");
    int K = pan.categories.num, E = a.c.embed, S = a.size;
    TeacherSample *samples;
    int nsamples;
    stage_check(&st, teacher_samples(&samples, &nsamples, &pan, a.ann, a.random_crops), NULL);
    int G = a.batch * st.size;
    long per_epoch = nsamples / G, total = per_epoch * a.epochs;
    if (per_epoch < 1) {
        cs_error_set(__FILE__, __LINE__, "%s gives %d samples, fewer than one global batch of %d",
                     a.ann, nsamples, G);
        stage_die(&st, "use fewer ranks or a smaller --batch");
    }
    run_signature(signature, sizeof signature, &a, a.verify && a.ranks > 0 ? a.ranks : st.size,
                  adig, pdig);
    if (a.verify) { /* the file named: the one missing, or --out */
        const char *file = access(a.out, F_OK) == 0 && access(a.classes_out, F_OK) != 0
                               ? a.classes_out : a.out;
        stage_verified(&st, st.rank == 0 ? verify_outputs(a.run, signature, a.out, a.classes_out,
                                                          &pan.categories, &m) : 0, file);
    }
    if (st.rank == 0 && a.warmup >= total)
        fprintf(stderr, "pretrain_teacher: warning: --warmup %d is not below the %ld steps of "
                "the run: the learning rate never leaves the warmup\n", a.warmup, total);
    RunFolder rf;
    if (runfolder_open(&rf, "pretrain_teacher", a.run, signature, a.resume, "ranks, batch, "
                       "epochs, seed, schedule, model and annotations", MPI_COMM_WORLD) != 0)
        stage_die(&st, rf.hint[0] ? rf.hint : NULL);
    if (st.rank == 0) { /* the outputs are about to be rewritten: no record may vouch for them */
        snprintf(path, sizeof path, "%s/outputs.txt", a.run);
        unlink(path);
    }

    /* the model, the contrastive head and their optimiser state */
    stage_check(&st, vit_alloc_grads(&m), NULL);
    AdamWConfig ac = {a.lr, 0.9f, 0.999f, 1e-8f, a.wd};
    AdamW opt;
    stage_check(&st, adamw_init(&opt, &ac, m.num_params), NULL);
    GradReduce gr; /* hooks the backward: the sums start block by block */
    stage_check(&st, grad_reduce_init(&gr, &m, GRAD_BUCKET_FLOATS, MPI_COMM_WORLD), NULL);
    Head h;
    stage_check(&st, head_init(&h, K, E), NULL);
    long step;
    stage_check(&st, runfolder_resume(&rf, &m, &opt, h.extras, 7, &step), NULL);
    if (rf.newest < 0) {
        vit_init_random(&m, rng_mix64((unsigned long long)a.seed + 1));
        init_class_embeddings(h.head, K, E, (unsigned long long)a.seed);
        h.head[h.ke] = logf(a.logit_scale);
    }
    TeacherLoader ld;
    stage_check(&st, teacher_loader_init(&ld, &pan, ds.images, png_root, S, a.batch,
                                         a.thing_weight), "use a smaller --batch");
    float *demb = malloc((size_t)a.batch * E * sizeof(float));
    int *order = malloc((size_t)nsamples * sizeof(int));
    if (!demb || !order) {
        cs_error_set(__FILE__, __LINE__, "out of memory for a batch of %d at %dx%d", a.batch, S,
                     S);
        stage_die(&st, "use a smaller --batch");
    }
    ContrastiveLoss cl;
    stage_check(&st, contrastive_init(&cl, a.batch, K, E), NULL);
    stage_check(&st, vit_prepare(&m, VIT_IMAGE, a.batch, S, S, 1), NULL);
    FILE *log, *elog;
    stage_check(&st, runfolder_log(&rf, &log, "train_log.csv",
                                   "step,epoch,loss,top1,lr,logit_scale,samples_per_s\n", step,
                                   step), NULL);
    stage_check(&st, runfolder_log(&rf, &elog, "epoch_log.csv",
                                   "epoch,loss,top1_things,top1_stuff,top1_images,logit_scale,"
                                   "top1_random,skipped\n", step, step / per_epoch), NULL);
    if (st.rank == 0) {
        print_summary(&pan, samples, nsamples, &a, st.size, per_epoch, total,
                      m.num_params + h.nh);
        if (a.dump_path && !(ld.dump = fopen(a.dump_path, "w"))) {
            cs_error_set(__FILE__, __LINE__, "cannot write %s: %s", a.dump_path, strerror(errno));
            stage_die(&st, NULL);
        }
    }
    Progress prog;
    progress_init(&prog, "pretrain_teacher", "steps", total, st.rank == 0);
    double t0 = now_seconds();
    long steps_here = 0;
    int last_epoch = -1;
    while (step < total) {
        int epoch = (int)(step / per_epoch);
        if (epoch != last_epoch) epoch_order(order, nsamples, (unsigned long long)a.seed, epoch);
        last_epoch = epoch;
        const int *ids = order + (step % per_epoch) * G + (size_t)st.rank * a.batch;
        stage_check(&st, teacher_load_batch(&ld, samples, ids, a.batch,
                                            (unsigned long long)a.seed, epoch),
                    "the images must be the annotations' own, in the dataset's images root, and "
                    "the PNGs theirs, in --annotations-png");
        if (ld.dump) stage_check(&st, close_dump(&ld, a.dump_path), NULL); /* the first step's */
        double lr_now = lr_at_step(a.lr, a.warmup, total, step);
        stage_check(&st, train_step(&m, &h, &cl, &ld, demb, &opt, &gr, &a, st.size, lr_now,
                                    step), NULL);
        step++, steps_here++;
        const float *tl = h.tail + h.nh;
        double rate = steps_here * G / (now_seconds() - t0), scale = exp(h.head[h.ke]);
        if (log) log_step(log, step, epoch, tl, lr_now, scale, rate);
        progress_update(&prog, step);
        int stop = tl[TALLY_STOP] > 0.0f;
        if (step % per_epoch == 0) {
            if (st.rank == 0) log_epoch(elog, h.tally, epoch, a.epochs, scale, rate);
            memset(h.tally, 0, sizeof h.tally);
        }
        if (step % a.save_every == 0 || step == total || stop)
            stage_check(&st, runfolder_save(&rf, &m, &opt, step, h.extras, 7, a.keep), NULL);
        if (stop && step < total) {
            if (st.rank == 0)
                printf("pretrain_teacher: stopping at step %ld (%s); continue with --resume\n",
                       step, runfolder_stop_signal() ? "signal" : "--max-steps");
            break;
        }
    }
    progress_done(&prog, step);
    if (st.rank == 0 && step == total)
        stage_check(&st, write_outputs(&a, &h, &m, &pan, signature), NULL);
    if (log) fclose(log);
    if (elog) fclose(elog);
    free(demb), free(order), free(samples);
    head_free(&h);
    teacher_loader_free(&ld);
    contrastive_free(&cl);
    adamw_free(&opt);
    grad_reduce_free(&gr, &m);
    vit_free(&m);
    coco_panoptic_free(&pan);
    stage_end(&st);
    return 0;
}
