/* evaluate: region recognition on a COCO panoptic dataset (pipeline/method/regioneval.h): rois,
 * crops and maskpool, thing and stuff, Top-1/Top-5 mAcc. Images are split over ranks and the
 * per-class tallies summed; rank 0 writes the results JSON and a markdown table. With
 * --pictures, the first images also get a PNG each (results/picture.h), drawn by the rank that
 * evaluates them; pictures cost nothing without it and never change the results. With --bf16
 * the model's transformer blocks run in bfloat16 (model/vit_bf16.h) for the full images and
 * the crops alike. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "base/digest.h"
#include "base/fileio.h"
#include "base/progress.h"
#include "base/stage.h"
#include "io/checkpoint.h"
#include "io/classes.h"
#include "io/coco.h"
#include "io/datasets.h"
#include "io/image.h"
#include "method/regioneval.h"
#include "model/vit.h"
#include "model/vit_bf16.h"
#include "results/picture.h"
#include "results/report.h"

/* The default label: the model file's name without directory and extension. */
static void default_label(char *dst, size_t len, const char *model_path) {
    const char *base = strrchr(model_path, '/');
    base = base ? base + 1 : model_path;
    snprintf(dst, len, "%s", base);
    char *dot = strrchr(dst, '.');
    if (dot && dot != dst) *dot = '\0';
}

typedef struct {
    const char *cfg, *name, *model_path, *out, *classes_path, *label, *pic_dir, *pic_vs;
    int det, crop, batch, max_images, verify, pic_max, pic_size, bf16;
    char label_buf[256];
} Args;

/* The options into a, checked (the label defaults to the model file's name); 1 after --help. */
static int parse_args(Stage *st, Args *a, int argc, char **argv) {
    *a = (Args){.cfg = "datasets.cfg", .det = 1024, .batch = 16, .pic_max = 6, .pic_size = 256};
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &a->name, "dataset name in the registry (required)"},
        {"datasets", CLI_STRING, &a->cfg, "dataset registry"},
        {"model", CLI_STRING, &a->model_path,
         "checkpoint to evaluate, .h5 or .safetensors (required)"},
        {"classes", CLI_STRING, &a->classes_path, "class-embedding file (default: the dataset's)"},
        {"out", CLI_STRING, &a->out,
         "results JSON to write; the table goes to <out>.md (required)"},
        {"label", CLI_STRING, &a->label,
         "the model's name in the results (default: the model file's name without extension)"},
        {"det-size", CLI_INT, &a->det, "full-image input side (longest side resized, padded)"},
        {"crop-size", CLI_INT, &a->crop, "crop input side (0: the model's native size)"},
        {"batch", CLI_INT, &a->batch, "crops per forward pass"},
        {"max-images", CLI_INT, &a->max_images, "evaluate only the first N images (0: all)"},
        {"bf16", CLI_FLAG, &a->bf16, "run the model's transformer blocks in bfloat16 for the "
                                     "dense map and the crops (oneDNN matmul: bf16 weights and "
                                     "inputs of the linear layers, float accumulation; LayerNorm, "
                                     "attention, activations and the head stay float32): "
                                     "inference of a frozen model, within 0.5 points of float32"},
        {"pictures", CLI_STRING, &a->pic_dir,
         "write DIR/<image_id>.png for the first --pictures-max images, one row of panels: "
         "image | ground truth | [--pictures-vs class map |] this model's class map; and "
         "DIR/legend.txt (\"r g b name\" per class)"},
        {"pictures-max", CLI_INT, &a->pic_max,
         "images drawn with --pictures (the first of the list)"},
        {"pictures-size", CLI_INT, &a->pic_size, "longest side of a picture's panels, pixels"},
        {"pictures-vs", CLI_STRING, &a->pic_vs,
         "a second checkpoint (e.g. the teacher) whose class map is drawn before this model's"},
        {"verify", CLI_FLAG, &a->verify, "only check that --out holds this model's complete "
                                         "results with these settings (exit 0), is missing (1) "
                                         "or not (2)"},
    };
    if (stage_options(st, argc, argv,
                      "CLIPSelf evaluation: classify every annotated segment (at most 100 per "
                      "image) of the dataset's panoptic annotations by its RoIAlign feature, its "
                      "crop's image embedding and its mask-pooled feature; report mean per-class "
                      "Top-1/Top-5 accuracy for things and stuff (JSON and markdown).",
                      opts, (int)(sizeof opts / sizeof opts[0])))
        return 1;
    if (!a->name || !a->model_path || !a->out) {
        cs_error_set(__FILE__, __LINE__, "--dataset, --model and --out are required");
        stage_die(st, "see --help");
    }
    if (a->pic_vs && !a->pic_dir) {
        cs_error_set(__FILE__, __LINE__, "--pictures-vs needs --pictures DIR");
        stage_die(st, "see --help");
    }
    if (a->pic_dir && (a->pic_max < 1 || a->pic_size < 1 || a->pic_size > PICTURE_MAX_SIZE)) {
        cs_error_set(__FILE__, __LINE__, "--pictures-max must be positive and --pictures-size "
                     "in 1..%d", PICTURE_MAX_SIZE);
        stage_die(st, "see --help");
    }
    if (!a->label) {
        default_label(a->label_buf, sizeof a->label_buf, a->model_path);
        a->label = a->label_buf;
    }
    for (const char *p = a->label; *p; p++)
        if ((unsigned char)*p < 0x20) {
            cs_error_set(__FILE__, __LINE__, "--label must not contain tabs, newlines or other "
                         "control characters");
            stage_die(st, "see --help");
        }
    if (!*a->label) {
        cs_error_set(__FILE__, __LINE__, "the label is empty");
        stage_die(st, "name the model with --label");
    }
    return 0;
}

/* One image's region recognition and segmentation into rc (*used: its segments); *ids gets
 * its panoptic ids. A failure is the image's (it is skipped), not the run's. */
static int eval_image(RegionEval *re, RegionCounts *rc, Image *im, uint32_t **ids,
                      const CocoPanopticImage *pi, const Dataset *ds, int *used) {
    char ipath[4096], ppath[4096];
    int w = 0, h = 0;
    *used = 0;
    free(*ids);
    *ids = NULL;
    CS_TRY(coco_image_path(ipath, sizeof ipath, ds->eval_images, pi->file_name));
    CS_TRY(coco_image_path(ppath, sizeof ppath, ds->panoptic_png, pi->png_name));
    CS_TRY(image_read_jpeg(im, ipath));
    CS_TRY(image_read_panoptic_png(ids, &w, &h, ppath));
    CS_CHECK(w == im->w && h == im->h, "%s is %dx%d but its image is %dx%d", ppath, w, h, im->w,
             im->h);
    CS_TRY(regioneval_image(re, rc, im, *ids, pi, used));
    return regioneval_segment(re, rc, *ids, pi);
}

/* Add "id<TAB>reason" (the current error, on one line) to the skipped list. */
static void note_skip(char **skipped, size_t *len, long long id) {
    char reason[2048], line[2100];
    snprintf(reason, sizeof reason, "%s", cs_error());
    for (char *p = reason; *p; p++) /* one record per line */
        if (*p == '\n' || *p == '\t') *p = ' ';
    snprintf(line, sizeof line, "%lld\t%s\n", id, reason);
    char *grown = realloc(*skipped, *len + strlen(line) + 1);
    if (grown) {
        *skipped = grown;
        memcpy(*skipped + *len, line, strlen(line) + 1);
        *len += strlen(line);
    }
}

/* Rank 0: the results JSON and the markdown table beside it (<out>.md), printed too. */
static int write_results(const Args *a, ReportInfo *info, const RegionCounts *rc,
                         const CocoCategories *cats) {
    double macc[EVAL_METHODS][2][2];
    region_macc(rc, cats, macc);
    region_miou(rc, cats, &info->miou[0], &info->miou[1], &info->miou[2]);
    CS_TRY(report_write_json(a->out, info, rc, cats, macc));
    static char table[16384];
    char md[4200];
    CS_TRY(report_markdown(table, sizeof table, info, macc));
    snprintf(md, sizeof md, "%s.md", a->out);
    CS_TRY(file_write_text(md, table));
    printf("%s\nevaluate: %ld images (%ld skipped), %ld segments in %.1f s; wrote %s and %s\n",
           table, (long)info->images, (long)info->images_skipped, (long)info->segments,
           info->seconds, a->out, md);
    return 0;
}

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "evaluate", &argc, &argv);
    Args a;
    if (parse_args(&st, &a, argc, argv)) {
        stage_end(&st);
        return 0;
    }
    Dataset ds;
    stage_check(&st, dataset_lookup(&ds, a.cfg, a.name), "check the dataset name and datasets.cfg");
    CocoPanoptic pan;
    stage_check(&st, coco_read_panoptic(&pan, ds.panoptic), NULL);
    ClassEmbeddings ce;
    const char *classes_file = a.classes_path ? a.classes_path : ds.classes;
    stage_check(&st, classes_read(&ce, classes_file, &pan.categories),
                "class embeddings come from embed_text or pretrain_teacher");
    Vit model;
    stage_check(&st, vit_load(&model, a.model_path, NULL), NULL);
    uint64_t model_digest = 0, classes_digest = 0; /* name the exact inputs in the results */
    if (st.rank == 0) {
        stage_check(&st, file_digest(&model_digest, a.model_path), NULL);
        stage_check(&st, file_digest(&classes_digest, classes_file), NULL);
    }
    if (a.crop <= 0) a.crop = model.cfg.grid * model.cfg.patch;
    ReportInfo info = {.model = a.model_path, .label = a.label, .model_digest = model_digest,
                       .dataset = a.name, .classes_digest = classes_digest, .det_size = a.det,
                       .crop_size = a.crop, .max_images = a.max_images,
                       .precision = a.bf16 ? "bfloat16" : "float32"};
    if (a.verify) stage_verified(&st, st.rank == 0 ? report_check_json(a.out, &info) : 0, a.out);
    if (a.bf16) {
        stage_check(&st, vit_bf16_enable(&model), "--bf16 needs oneDNN's bf16 matmul");
        if (st.rank == 0) printf("evaluate: model blocks in bf16 (oneDNN, %s)\n", bf16_isa_name());
    }
    RegionEval re;
    stage_check(&st, regioneval_init(&re, &model, &ce, &pan.categories, a.det, a.crop, a.batch),
                NULL);
    RegionCounts rc;
    stage_check(&st, region_counts_init(&rc, ce.num), NULL);
    Vit vs = {0};
    Pictures pics = {0};
    if (a.pic_dir) {
        if (a.pic_vs)
            stage_check(&st, vit_load(&vs, a.pic_vs, NULL), "--pictures-vs takes a checkpoint");
        stage_check(&st, pictures_init(&pics, a.pic_dir, a.pic_size, a.det, &ce,
                                       a.pic_vs ? &vs : NULL),
                    "--pictures DIR must be a writable directory");
        if (st.rank == 0) stage_check(&st, pictures_write_legend(&pics, &pan.categories), NULL);
    }
    int n = a.max_images > 0 && a.max_images < pan.num_images ? a.max_images : pan.num_images;
    Image im = {0};
    uint32_t *ids = NULL;
    int stats[3] = {0, 0, 0}; /* images, skipped, segments */
    char *skipped = calloc(1, 1);
    size_t skipped_len = 0;
    Progress prog;
    progress_init(&prog, "evaluate", "img", n, st.rank == 0);
    double t0 = now_seconds();
    for (int i = st.rank; i < n; i += st.size) {
        const CocoPanopticImage *pi = &pan.images[i];
        int used;
        if (eval_image(&re, &rc, &im, &ids, pi, &ds, &used) != 0) {
            fprintf(stderr, "evaluate: skipping image %lld: %s\n", (long long)pi->id, cs_error());
            note_skip(&skipped, &skipped_len, (long long)pi->id);
            stats[1]++;
        } else {
            stats[0]++;
            stats[2] += used;
            if (a.pic_dir && i < a.pic_max)
                stage_check(&st, pictures_draw(&pics, &im, ids, pi, re.full, re.dense,
                                               model.cfg.patch), "--pictures DIR must be writable");
        }
        progress_update(&prog, (long)(i / st.size + 1) * st.size);
    }
    MPI_Allreduce(MPI_IN_PLACE, stats, 3, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    stage_check(&st, region_counts_reduce(&rc, MPI_COMM_WORLD), NULL);
    char *all_skipped = gather_text(skipped ? skipped : "", MPI_COMM_WORLD);
    if (st.rank == 0) {
        info.images = stats[0], info.images_skipped = stats[1], info.segments = stats[2];
        info.seconds = now_seconds() - t0;
        info.skipped = all_skipped;
        stage_check(&st, write_results(&a, &info, &rc, &pan.categories), NULL);
    }
    if (stats[0] == 0) { /* every image skipped: a result of nothing is a failure */
        cs_error_set(__FILE__, __LINE__, "no image of %s could be evaluated (%d skipped)", a.name,
                     stats[1]);
        stage_die(&st, "the reasons are above and in the results' skipped list");
    }
    free(ids);
    free(skipped);
    free(all_skipped);
    image_free(&im);
    region_counts_free(&rc);
    regioneval_free(&re);
    pictures_free(&pics);
    if (a.pic_vs) vit_free(&vs);
    vit_free(&model);
    classes_free(&ce);
    coco_panoptic_free(&pan);
    stage_end(&st);
    return 0;
}
