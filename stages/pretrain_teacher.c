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

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "pretrain_teacher", &argc, &argv);
    const char *cfg = "datasets.cfg", *name = NULL, *ann = NULL, *out = NULL, *classes_out = NULL;
    const char *run = NULL, *act = "gelu", *png_opt = NULL, *dump_path = NULL, *arch = "clip";
    VitConfig c = {.width = 128, .layers = 4, .heads = 4, .mlp = 512, .embed = 64, .patch = 8,
                   .ln_eps = 1e-5f};
    int size = 64, seed = 0, epochs = 20, batch = 32, warmup = 50, save_every = 500, keep = 2;
    int resume = 0, max_steps = 0, verify = 0, ranks = 0, fixed_scale = 0, random_crops = 2;
    float lr = 1e-3f, wd = 0.1f, logit_scale = 1.0f / 0.07f, thing_weight = 4.0f;
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &name, "dataset name in the registry (required): images are read "
                                       "from its images root"},
        {"datasets", CLI_STRING, &cfg, "dataset registry"},
        {"annotations", CLI_STRING, &ann, "COCO panoptic JSON of images in that root (required): "
                                          "segments give boxes and categories"},
        {"annotations-png", CLI_STRING, &png_opt, "folder of its panoptic PNGs (default: the "
                                                  "JSON's path without .json, COCO's layout): "
                                                  "the visible pixels the targets count"},
        {"thing-weight", CLI_FLOAT, &thing_weight, "weight of a thing category's pixels against "
                                                   "stuff's (1) in the targets: captions name "
                                                   "the salient objects"},
        {"random-crops", CLI_INT, &random_crops, "random boxes per image per epoch (sides "
                                                 "uniform in [0.15, 1] of the image's)"},
        {"out", CLI_STRING, &out, "teacher checkpoint to write (.h5, required)"},
        {"classes-out", CLI_STRING, &classes_out, "class embeddings to write, one per category of "
                                                  "the annotations, normalised (required)"},
        {"run-dir", CLI_STRING, &run, "folder for checkpoints, run.txt and the logs (required)"},
        {"width", CLI_INT, &c.width, "ViT width"},
        {"layers", CLI_INT, &c.layers, "ViT blocks"},
        {"heads", CLI_INT, &c.heads, "attention heads"},
        {"mlp", CLI_INT, &c.mlp, "MLP width"},
        {"embed", CLI_INT, &c.embed, "embedding dimension"},
        {"patch", CLI_INT, &c.patch, "patch size"},
        {"size", CLI_INT, &size, "input side (the positional grid is size / patch; evaluate "
                                 "crops at it by default)"},
        {"arch", CLI_STRING, &arch, "clip (open_clip ViT) | eva02 (EVA02-CLIP's vision tower: "
                                    "RoPE, sub-LN, SwiGLU MLP, LayerNorm eps 1e-6)"},
        {"act", CLI_STRING, &act, "MLP activation of clip: gelu | quickgelu"},
        {"rope-grid", CLI_INT, &c.rope_grid, "eva02: the RoPE grid side (0: the positional "
                                             "grid, size / patch)"},
        {"seed", CLI_INT, &seed, "seed of the initialisation, the sample order and the jitter"},
        {"epochs", CLI_INT, &epochs, "epochs to train"},
        {"batch", CLI_INT, &batch, "samples per rank per step"},
        {"lr", CLI_FLOAT, &lr, "peak learning rate"},
        {"wd", CLI_FLOAT, &wd, "AdamW weight decay on the ViT's matrices (none on biases, norms, "
                               "1-D tensors, the class embeddings and the logit scale)"},
        {"warmup", CLI_INT, &warmup, "linear warmup steps, then cosine decay to 0"},
        {"logit-scale", CLI_FLOAT, &logit_scale, "initial logit scale (CLIP: 1/0.07); learned, "
                                                 "kept in [1, 100]"},
        {"fixed-scale", CLI_FLAG, &fixed_scale, "keep the logit scale at --logit-scale"},
        {"save-every", CLI_INT, &save_every, "checkpoint every N steps (and at the end)"},
        {"keep", CLI_INT, &keep, "step checkpoints kept (the newest ones; older are removed)"},
        {"resume", CLI_FLAG, &resume, "continue from the newest checkpoint in the run folder"},
        {"max-steps", CLI_INT, &max_steps, "stop (with a checkpoint) after this global step"},
        {"verify", CLI_FLAG, &verify, "only check that --out and --classes-out are complete and "
                                      "were made by a finished run with these settings (exit 0), "
                                      "missing (1) or not (2)"},
        {"ranks", CLI_INT, &ranks, "with --verify: the ranks the run uses (0: this job's)"},
        {"dump-targets", CLI_STRING, &dump_path, "debug: write the first step's samples on rank "
                                                 "0 (epoch, sample, kind, image, png, box x0 y0 "
                                                 "x1 y1, labelled pixels, target per category) "
                                                 "to this CSV"},
    };
    if (stage_options(&st, argc, argv,
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
                      opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!name || !ann || !out || !classes_out || !run) {
        cs_error_set(__FILE__, __LINE__, "--dataset, --annotations, --out, --classes-out and "
                     "--run-dir are required");
        stage_die(&st, "see --help");
    }
    c.arch = !strcmp(arch, "clip") ? VIT_ARCH_CLIP : !strcmp(arch, "eva02") ? VIT_ARCH_EVA02 : -1;
    c.act = !strcmp(act, "gelu") ? ACT_GELU : !strcmp(act, "quickgelu") ? ACT_QUICKGELU : -1;
    if (c.arch == VIT_ARCH_EVA02) c.act = 0, c.ln_eps = 1e-6f; /* SwiGLU; EVA's eps */
    if (c.arch < 0 || c.act < 0 || c.rope_grid < 0 || size < 1 || c.patch < 1 || size % c.patch ||
        epochs < 1 || batch < 1 || warmup < 0 || save_every < 1 || keep < 1 || random_crops < 0 ||
        !(thing_weight > 0.0f && thing_weight < 1e6f) ||
        !(logit_scale >= 1.0f && logit_scale <= 100.0f)) {
        cs_error_set(__FILE__, __LINE__, "need --arch clip|eva02, --act gelu|quickgelu, "
                     "--rope-grid >= 0, --size a multiple of "
                     "--patch, epochs, batch, save-every and keep >= 1, warmup and random-crops "
                     ">= 0, a thing weight > 0 and a logit scale in [1, 100]");
        stage_die(&st, "see --help");
    }
    c.grid = size / c.patch;
    if (c.arch == VIT_ARCH_EVA02 && c.rope_grid == 0) c.rope_grid = c.grid;
    runfolder_catch_signals();
    Dataset ds;
    stage_check(&st, dataset_lookup(&ds, cfg, name), "check the dataset name and datasets.cfg");
    CocoPanoptic pan;
    stage_check(&st, coco_read_panoptic(&pan, ann), "--annotations must be a COCO panoptic JSON");
    char png_root[4096];
    if (png_opt) {
        snprintf(png_root, sizeof png_root, "%s", png_opt);
    } else {
        size_t n = strlen(ann);
        if (n <= 5 || n - 5 >= sizeof png_root || strcmp(ann + n - 5, ".json") != 0) {
            cs_error_set(__FILE__, __LINE__, "%s does not end in .json: no default PNG folder",
                         ann);
            stage_die(&st, "give --annotations-png");
        }
        memcpy(png_root, ann, n - 5);
        png_root[n - 5] = 0;
    }
    /* the annotations and every PNG the targets read: a resumed run must see the same pixels */
    uint64_t adig = 0, pdig = FNV1A64_INIT;
    if (st.rank == 0) {
        stage_check(&st, file_digest(&adig, ann), NULL);
        for (int i = 0; i < pan.num_images; i++) {
            uint64_t d;
            char pp[4096];
            stage_check(&st, coco_image_path(pp, sizeof pp, png_root, pan.images[i].png_name),
                        NULL);
            stage_check(&st, file_digest(&d, pp), "--annotations-png must hold the annotations' "
                                                  "panoptic PNGs");
            pdig = fnv1a64(pdig, &d, sizeof d);
        }
    }
    MPI_Bcast(&adig, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    MPI_Bcast(&pdig, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    Vit m;
    stage_check(&st, vit_init(&m, &c), "see --help for the model shape options");
    int K = pan.categories.num, E = c.embed;
    TeacherSample *samples;
    int nsamples;
    stage_check(&st, teacher_samples(&samples, &nsamples, &pan, ann, random_crops), NULL);
    int G = batch * st.size;
    long per_epoch = nsamples / G, total = per_epoch * epochs;
    if (per_epoch < 1) {
        cs_error_set(__FILE__, __LINE__, "%s gives %d samples, fewer than one global batch of %d",
                     ann, nsamples, G);
        stage_die(&st, "use fewer ranks or a smaller --batch");
    }
    /* What a resumed run must share with the run it continues: anything else would change the
     * model, the schedule, the data or the arithmetic. */
    char signature[1024], path[4200], model_sig[96];
    if (c.arch == VIT_ARCH_EVA02) /* a CLIP run's signature is what it was before EVA02 */
        snprintf(model_sig, sizeof model_sig, "swiglu arch=eva02 rope_grid=%d", c.rope_grid);
    else
        snprintf(model_sig, sizeof model_sig, "%s", act);
    snprintf(signature, sizeof signature,
             "ranks=%d batch=%d epochs=%d seed=%d lr=%.9g wd=%.9g warmup=%d size=%d width=%d "
             "layers=%d heads=%d mlp=%d embed=%d patch=%d act=%s logit_scale=%.9g fixed=%d "
             "dataset=%s annotations=%016llx pngs=%016llx thing_weight=%.9g random_crops=%d\n",
             verify && ranks > 0 ? ranks : st.size, batch, epochs, seed, (double)lr, (double)wd,
             warmup, size, c.width, c.layers, c.heads, c.mlp, c.embed, c.patch, model_sig,
             (double)logit_scale, fixed_scale, name, (unsigned long long)adig,
             (unsigned long long)pdig, (double)thing_weight, random_crops);
    if (verify) {
        int rc = 0;
        const char *file = out;
        if (st.rank == 0) {
            if (access(out, F_OK) == 0 && access(classes_out, F_OK) != 0) file = classes_out;
            rc = verify_outputs(run, signature, out, classes_out, &pan.categories, &m);
        }
        stage_verified(&st, rc, file);
    }
    if (st.rank == 0 && warmup >= total)
        fprintf(stderr, "pretrain_teacher: warning: --warmup %d is not below the %ld steps of "
                "the run: the learning rate never leaves the warmup\n", warmup, total);
    RunFolder rf;
    if (runfolder_open(&rf, "pretrain_teacher", run, signature, resume, "ranks, batch, epochs, "
                       "seed, schedule, model and annotations", MPI_COMM_WORLD) != 0)
        stage_die(&st, rf.hint[0] ? rf.hint : NULL);
    if (st.rank == 0) { /* the outputs are about to be rewritten: no record may vouch for them */
        snprintf(path, sizeof path, "%s/outputs.txt", run);
        unlink(path);
    }

    /* the model, the contrastive head and their optimiser state */
    size_t ke = (size_t)K * E, nh = ke + 1; /* head = [class embeddings (K, E) | log_scale] */
    stage_check(&st, vit_alloc_grads(&m), NULL);
    AdamWConfig ac = {lr, 0.9f, 0.999f, 1e-8f, wd};
    AdamW opt;
    stage_check(&st, adamw_init(&opt, &ac, m.num_params), NULL);
    GradReduce gr; /* hooks the backward: the sums start block by block */
    stage_check(&st, grad_reduce_init(&gr, &m, GRAD_BUCKET_FLOATS, MPI_COMM_WORLD), NULL);
    float *head = calloc(nh, sizeof(float)), *head_m = calloc(nh, sizeof(float));
    float *head_v = calloc(nh, sizeof(float));
    float *tail = calloc(nh + TALLIES, sizeof(float)); /* [d head | step tallies], one sum */
    float tally[TALLIES] = {0};                        /* this epoch's, summed over its steps */
    CheckpointExtra extras[7];
    head_extras(extras, head, head_m, head_v, tally, K, E);
    long step;
    stage_check(&st, runfolder_resume(&rf, &m, &opt, extras, 7, &step), NULL);
    if (rf.newest < 0) {
        vit_init_random(&m, rng_mix64((unsigned long long)seed + 1));
        init_class_embeddings(head, K, E, (unsigned long long)seed);
        head[ke] = logf(logit_scale);
    }
    /* open_clip clamps the learned scale to [1, 100] after every step */
    const float ls_max = logf(100.0f);

    int S = size;
    TeacherLoader ld;
    stage_check(&st, teacher_loader_init(&ld, &pan, ds.images, png_root, S, batch, thing_weight),
                "use a smaller --batch");
    float *demb = malloc((size_t)batch * E * sizeof(float));
    int *order = malloc((size_t)nsamples * sizeof(int));
    if (!head || !head_m || !head_v || !tail || !demb || !order) {
        cs_error_set(__FILE__, __LINE__, "out of memory for a batch of %d at %dx%d", batch, S, S);
        stage_die(&st, "use a smaller --batch");
    }
    ContrastiveLoss cl;
    stage_check(&st, contrastive_init(&cl, batch, K, E), NULL);
    stage_check(&st, vit_prepare(&m, VIT_IMAGE, batch, S, S, 1), NULL);

    FILE *log, *elog;
    stage_check(&st, runfolder_log(&rf, &log, "train_log.csv",
                                   "step,epoch,loss,top1,lr,logit_scale,samples_per_s\n", step,
                                   step), NULL);
    stage_check(&st, runfolder_log(&rf, &elog, "epoch_log.csv",
                                   "epoch,loss,top1_things,top1_stuff,top1_images,logit_scale,"
                                   "top1_random,skipped\n", step, step / per_epoch), NULL);
    if (st.rank == 0) {
        int counts[KINDS] = {0};
        for (int i = 0; i < nsamples; i++) counts[teacher_sample_kind(&pan, &samples[i])]++;
        printf("pretrain_teacher: %d images, %d categories; %d samples per epoch (%d things, %d "
               "stuff, %d whole images, %d random boxes); targets: visible pixels x (%g for a "
               "thing, 1 for stuff); %d ranks x %d, %ld steps per epoch, %d epochs, %ld steps; "
               "ViT (%s) %d wide, %d blocks, %zu parameters, input %d\n",
               pan.num_images, K, nsamples, counts[KIND_THING], counts[KIND_STUFF],
               counts[KIND_IMAGE], counts[KIND_RANDOM], (double)thing_weight, st.size, batch,
               per_epoch, epochs, total, vit_arch_name(c.arch), c.width, c.layers,
               m.num_params + nh, S);
        if (dump_path) {
            ld.dump = fopen(dump_path, "w");
            if (!ld.dump) {
                cs_error_set(__FILE__, __LINE__, "cannot write %s: %s", dump_path,
                             strerror(errno));
                stage_die(&st, NULL);
            }
        }
    }
    Progress prog;
    progress_init(&prog, "pretrain_teacher", "steps", total, st.rank == 0);
    double t0 = now_seconds();
    long steps_here = 0;
    int last_epoch = -1;
    while (step < total) {
        int epoch = (int)(step / per_epoch);
        if (epoch != last_epoch) epoch_order(order, nsamples, (unsigned long long)seed, epoch);
        last_epoch = epoch;
        const int *ids = order + (step % per_epoch) * G + (size_t)st.rank * batch;
        stage_check(&st, teacher_load_batch(&ld, samples, ids, batch, (unsigned long long)seed, epoch),
                    "the images must be the annotations' own, in the dataset's images root, and "
                    "the PNGs theirs, in --annotations-png");
        if (ld.dump) {
            int bad = fclose(ld.dump) != 0;
            ld.dump = NULL;
            if (bad) {
                cs_error_set(__FILE__, __LINE__, "cannot write %s", dump_path);
                stage_die(&st, NULL);
            }
        }
        vit_forward(&m, ld.imgs);
        float loss;
        stage_check(&st, contrastive_forward(&cl, &loss, m.acts.out, head, head[ke], ld.target,
                                             batch), NULL);
        /* the loss is the global batch's mean: each rank's mean weighs 1 / ranks */
        memset(tail, 0, (nh + TALLIES) * sizeof(float));
        memset(demb, 0, (size_t)batch * E * sizeof(float));
        contrastive_backward(&cl, demb, tail, tail + ke, 1.0f / (float)st.size);
        vit_zero_grad(&m);
        stage_check(&st, vit_backward(&m, demb, NULL), NULL);
        float *tl = tail + nh;
        tl[TALLY_LOSS] = loss * (float)batch; /* unlabelled rows add 0 */
        for (int k = 0; k < batch; k++) {
            if (ld.labelled[k] == 0) {
                tl[TALLY_SKIP] += 1.0f;
                continue;
            }
            const float *z = cl.logits + (size_t)k * K, *t = ld.target + (size_t)k * K; /* (K) */
            int best = 0;
            float tmax = t[0];
            for (int j = 1; j < K; j++) {
                best = z[j] > z[best] ? j : best;
                tmax = t[j] > tmax ? t[j] : tmax;
            }
            tl[TALLY_OK + ld.kind[k]] += (float)(t[best] == tmax); /* a tie: either is right */
            tl[TALLY_N + ld.kind[k]] += 1.0f;
        }
        tl[TALLY_STOP] = runfolder_stop_signal() || (max_steps > 0 && step + 1 >= max_steps);
        stage_check(&st, grad_reduce_finish(&gr, tail, nh + TALLIES), NULL);
        /* the loss is the mean over the global batch's labelled samples: rescale the gradient
         * of the mean over all G (the same on every rank, after the sums) */
        double valid = 0;
        for (int t = 0; t < KINDS; t++) valid += tl[TALLY_N + t];
        if (valid > 0 && valid < G) {
            float r = (float)(G / valid);
            for (size_t i = 0; i < m.num_params; i++) m.grads_mem[i] *= r;
            for (size_t i = 0; i < nh; i++) tail[i] *= r;
        }
        double lr_now = lr_at_step(lr, warmup, total, step);
        adamw_step(&opt, &m, (float)lr_now);
        /* no weight decay on the head: the loss normalises the class embeddings, so decay
         * would only shrink them (raising their effective step size), and CLIP exempts its
         * logit scale */
        adamw_update(head, tail, head_m, head_v, fixed_scale ? ke : nh, (float)lr_now, ac.beta1,
                     ac.beta2, ac.eps, 0.0f, opt.step);
        head[ke] = fminf(fmaxf(head[ke], 0.0f), ls_max);
        step++, steps_here++;
        for (int t = 0; t < TALLY_STOP; t++) tally[t] += tl[t];
        double ok = 0, n = 0, rate = steps_here * G / (now_seconds() - t0);
        for (int t = 0; t < KINDS; t++) ok += tl[TALLY_OK + t], n += tl[TALLY_N + t];
        if (log) {
            fprintf(log, "%ld,%d,%.7f,%.4f,%.6e,%.4f,%.1f\n", step, epoch,
                    n > 0 ? tl[TALLY_LOSS] / n : 0.0, n > 0 ? ok / n : NAN, lr_now,
                    exp(head[ke]), rate);
            fflush(log);
        }
        progress_update(&prog, step);
        int stop = tl[TALLY_STOP] > 0.0f, epoch_end = step % per_epoch == 0;
        if (epoch_end) {
            double acc[KINDS], counted = 0;
            for (int t = 0; t < KINDS; t++) {
                acc[t] = tally[TALLY_N + t] > 0 ? tally[TALLY_OK + t] / tally[TALLY_N + t] : NAN;
                counted += tally[TALLY_N + t];
            }
            double eloss = counted > 0 ? tally[TALLY_LOSS] / counted : 0.0;
            if (st.rank == 0) {
                printf("pretrain_teacher: epoch %d/%d: loss %.4f, train top-1 %s %.1f%%, %s "
                       "%.1f%%, %s %.1f%%, %s %.1f%% (%.0f without a labelled pixel), logit "
                       "scale %.2f, %.1f samples/s\n",
                       epoch + 1, epochs, eloss, teacher_kind_names[0], 100 * acc[0], teacher_kind_names[1],
                       100 * acc[1], teacher_kind_names[2], 100 * acc[2], teacher_kind_names[3], 100 * acc[3],
                       (double)tally[TALLY_SKIP], exp(head[ke]), rate);
                fprintf(elog, "%d,%.6f,%.4f,%.4f,%.4f,%.4f,%.4f,%.0f\n", epoch + 1, eloss,
                        acc[0], acc[1], acc[2], exp(head[ke]), acc[3], (double)tally[TALLY_SKIP]);
                fflush(elog);
            }
            memset(tally, 0, sizeof tally);
        }
        if (step % save_every == 0 || step == total || stop)
            stage_check(&st, runfolder_save(&rf, &m, &opt, step, extras, 7, keep), NULL);
        if (stop && step < total) {
            if (st.rank == 0)
                printf("pretrain_teacher: stopping at step %ld (%s); continue with --resume\n",
                       step, runfolder_stop_signal() ? "signal" : "--max-steps");
            break;
        }
    }
    progress_done(&prog, step);
    if (st.rank == 0 && step == total) {
        float *cls_n = malloc(ke * sizeof(float)), *norm = malloc((size_t)K * sizeof(float));
        if (!cls_n || !norm) {
            cs_error_set(__FILE__, __LINE__, "out of memory");
            stage_die(&st, NULL);
        }
        l2norm_forward(cls_n, norm, head, K, E);
        char source[4300]; /* no output path in it: the same run elsewhere is the same file */
        snprintf(source, sizeof source, "pretrain_teacher: learned with the teacher on %s, seed "
                 "%d (logit scale %.3f)", ann, seed, exp(head[ke]));
        stage_check(&st, vit_save_h5(&m, out, NULL), NULL);
        stage_check(&st, classes_write(classes_out, &pan.categories, cls_n, E, source), NULL);
        stage_check(&st, write_outputs_record(run, signature, out, classes_out), NULL);
        printf("pretrain_teacher: wrote the teacher %s and its %d class embeddings %s\n", out, K,
               classes_out);
        free(cls_n), free(norm);
    }
    if (log) fclose(log);
    if (elog) fclose(elog);
    free(head), free(head_m), free(head_v), free(tail), free(demb), free(order), free(samples);
    teacher_loader_free(&ld);
    contrastive_free(&cl);
    adamw_free(&opt);
    grad_reduce_free(&gr, &m);
    vit_free(&m);
    coco_panoptic_free(&pan);
    stage_end(&st);
    return 0;
}
