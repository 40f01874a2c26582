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

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "evaluate", &argc, &argv);
    const char *cfg = "datasets.cfg", *name = NULL, *model_path = NULL, *out = NULL;
    const char *classes_path = NULL, *label = NULL;
    const char *pic_dir = NULL, *pic_vs = NULL;
    int det = 1024, crop = 0, batch = 16, max_images = 0, verify = 0, pic_max = 6, pic_size = 256;
    int bf16 = 0;
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &name, "dataset name in the registry (required)"},
        {"datasets", CLI_STRING, &cfg, "dataset registry"},
        {"model", CLI_STRING, &model_path, "checkpoint to evaluate, .h5 or .safetensors (required)"},
        {"classes", CLI_STRING, &classes_path, "class-embedding file (default: the dataset's)"},
        {"out", CLI_STRING, &out, "results JSON to write; the table goes to <out>.md (required)"},
        {"label", CLI_STRING, &label,
         "the model's name in the results (default: the model file's name without extension)"},
        {"det-size", CLI_INT, &det, "full-image input side (longest side resized, padded)"},
        {"crop-size", CLI_INT, &crop, "crop input side (0: the model's native size)"},
        {"batch", CLI_INT, &batch, "crops per forward pass"},
        {"max-images", CLI_INT, &max_images, "evaluate only the first N images (0: all)"},
        {"bf16", CLI_FLAG, &bf16, "run the model's transformer blocks in bfloat16 for the dense "
                                  "map and the crops (oneDNN matmul: bf16 weights and inputs "
                                  "of the linear layers, float accumulation; LayerNorm, "
                                  "attention, activations and the head stay float32): inference "
                                  "of a frozen model, within 0.5 points of float32"},
        {"pictures", CLI_STRING, &pic_dir,
         "write DIR/<image_id>.png for the first --pictures-max images, one row of panels: "
         "image | ground truth | [--pictures-vs class map |] this model's class map; and "
         "DIR/legend.txt (\"r g b name\" per class)"},
        {"pictures-max", CLI_INT, &pic_max, "images drawn with --pictures (the first of the list)"},
        {"pictures-size", CLI_INT, &pic_size, "longest side of a picture's panels, pixels"},
        {"pictures-vs", CLI_STRING, &pic_vs,
         "a second checkpoint (e.g. the teacher) whose class map is drawn before this model's"},
        {"verify", CLI_FLAG, &verify, "only check that --out holds this model's complete results "
                                      "with these settings (exit 0), is missing (1) or not (2)"},
    };
    if (stage_options(&st, argc, argv,
                      "CLIPSelf evaluation: classify every annotated segment (at most 100 per "
                      "image) of the dataset's panoptic annotations by its RoIAlign feature, its "
                      "crop's image embedding and its mask-pooled feature; report mean per-class "
                      "Top-1/Top-5 accuracy for things and stuff (JSON and markdown).",
                      opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!name || !model_path || !out) {
        cs_error_set(__FILE__, __LINE__, "--dataset, --model and --out are required");
        stage_die(&st, "see --help");
    }
    if (pic_vs && !pic_dir) {
        cs_error_set(__FILE__, __LINE__, "--pictures-vs needs --pictures DIR");
        stage_die(&st, "see --help");
    }
    if (pic_dir && (pic_max < 1 || pic_size < 1 || pic_size > PICTURE_MAX_SIZE)) {
        cs_error_set(__FILE__, __LINE__, "--pictures-max must be positive and --pictures-size "
                     "in 1..%d", PICTURE_MAX_SIZE);
        stage_die(&st, "see --help");
    }
    char label_buf[256];
    if (!label) default_label(label_buf, sizeof label_buf, model_path), label = label_buf;
    for (const char *p = label; *p; p++)
        if ((unsigned char)*p < 0x20) {
            cs_error_set(__FILE__, __LINE__, "--label must not contain tabs, newlines or other "
                         "control characters");
            stage_die(&st, "see --help");
        }
    if (!*label) {
        cs_error_set(__FILE__, __LINE__, "the label is empty");
        stage_die(&st, "name the model with --label");
    }
    Dataset ds;
    stage_check(&st, dataset_lookup(&ds, cfg, name), "check the dataset name and datasets.cfg");
    CocoPanoptic pan;
    stage_check(&st, coco_read_panoptic(&pan, ds.panoptic), NULL);
    ClassEmbeddings ce;
    stage_check(&st, classes_read(&ce, classes_path ? classes_path : ds.classes, &pan.categories),
                "class embeddings come from embed_text or pretrain_teacher");
    Vit model;
    stage_check(&st, vit_load(&model, model_path, NULL), NULL);
    uint64_t model_digest = 0, classes_digest = 0; /* name the exact inputs in the results */
    const char *classes_file = classes_path ? classes_path : ds.classes;
    if (st.rank == 0) {
        stage_check(&st, file_digest(&model_digest, model_path), NULL);
        stage_check(&st, file_digest(&classes_digest, classes_file), NULL);
    }
    if (crop <= 0) crop = model.cfg.grid * model.cfg.patch;
    if (verify) {
        ReportInfo want = {.label = label, .model_digest = model_digest, .dataset = name,
                           .classes_digest = classes_digest, .det_size = det, .crop_size = crop,
                           .max_images = max_images, .precision = bf16 ? "bfloat16" : "float32"};
        stage_verified(&st, st.rank == 0 ? report_check_json(out, &want) : 0, out);
    }
    if (bf16) {
        stage_check(&st, vit_bf16_enable(&model), "--bf16 needs oneDNN's bf16 matmul");
        if (st.rank == 0) printf("evaluate: model blocks in bf16 (oneDNN, %s)\n", bf16_isa_name());
    }
    RegionEval re;
    stage_check(&st, regioneval_init(&re, &model, &ce, &pan.categories, det, crop, batch), NULL);
    RegionCounts rc;
    stage_check(&st, region_counts_init(&rc, ce.num), NULL);
    Vit vs = {0};
    Pictures pics = {0};
    if (pic_dir) {
        if (pic_vs)
            stage_check(&st, vit_load(&vs, pic_vs, NULL), "--pictures-vs takes a checkpoint");
        stage_check(&st, pictures_init(&pics, pic_dir, pic_size, det, &ce, pic_vs ? &vs : NULL),
                    "--pictures DIR must be a writable directory");
        if (st.rank == 0) stage_check(&st, pictures_write_legend(&pics, &pan.categories), NULL);
    }
    int n = max_images > 0 && max_images < pan.num_images ? max_images : pan.num_images;
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
        char ipath[4096], ppath[4096];
        int w = 0, h = 0, used = 0;
        free(ids);
        ids = NULL;
        int rc_img = coco_image_path(ipath, sizeof ipath, ds.eval_images, pi->file_name);
        if (!rc_img) rc_img = coco_image_path(ppath, sizeof ppath, ds.panoptic_png, pi->png_name);
        if (!rc_img) rc_img = image_read_jpeg(&im, ipath);
        if (!rc_img) rc_img = image_read_panoptic_png(&ids, &w, &h, ppath);
        if (!rc_img && (w != im.w || h != im.h))
            rc_img = cs_error_set(__FILE__, __LINE__, "%s is %dx%d but its image is %dx%d", ppath,
                                  w, h, im.w, im.h);
        if (!rc_img) rc_img = regioneval_image(&re, &rc, &im, ids, pi, &used);
        if (!rc_img) rc_img = regioneval_segment(&re, &rc, ids, pi);
        if (rc_img) {
            fprintf(stderr, "evaluate: skipping image %lld: %s\n", (long long)pi->id, cs_error());
            char reason[2048], line[2100];
            snprintf(reason, sizeof reason, "%s", cs_error());
            for (char *p = reason; *p; p++) /* one record per line: "id<TAB>reason" */
                if (*p == '\n' || *p == '\t') *p = ' ';
            snprintf(line, sizeof line, "%lld\t%s\n", (long long)pi->id, reason);
            char *grown = realloc(skipped, skipped_len + strlen(line) + 1);
            if (grown) {
                skipped = grown;
                memcpy(skipped + skipped_len, line, strlen(line) + 1);
                skipped_len += strlen(line);
            }
            stats[1]++;
        } else {
            stats[0]++;
            stats[2] += used;
            if (pic_dir && i < pic_max)
                stage_check(&st, pictures_draw(&pics, &im, ids, pi, re.full, re.dense,
                                               model.cfg.patch), "--pictures DIR must be writable");
        }
        progress_update(&prog, (long)(i / st.size + 1) * st.size);
    }
    MPI_Allreduce(MPI_IN_PLACE, stats, 3, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, rc.count, ce.num, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, rc.top1, EVAL_METHODS * ce.num, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, rc.top5, EVAL_METHODS * ce.num, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &rc.vanished, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, rc.seg_inter, ce.num, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, rc.seg_gt, ce.num, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, rc.seg_pred, ce.num, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    /* every region's record on rank 0, in image order (for intervals by resampling images) */
    {
        int bytes = (int)(rc.num_regions * (long)sizeof(RegionRec)), *cnt = NULL, *dsp = NULL;
        if (st.rank == 0) {
            cnt = calloc((size_t)st.size, sizeof(int)), dsp = calloc((size_t)st.size, sizeof(int));
            if (!cnt || !dsp) {
                cs_error_set(__FILE__, __LINE__, "out of memory");
                stage_die(&st, NULL);
            }
        }
        MPI_Gather(&bytes, 1, MPI_INT, cnt, 1, MPI_INT, 0, MPI_COMM_WORLD);
        RegionRec *all = NULL;
        long total = 0;
        if (st.rank == 0) {
            for (int r = 0; r < st.size; r++) dsp[r] = (int)total, total += cnt[r];
            all = malloc(total ? (size_t)total : 1);
            if (!all) {
                cs_error_set(__FILE__, __LINE__, "out of memory for %ld region records",
                             total / (long)sizeof(RegionRec));
                stage_die(&st, NULL);
            }
        }
        MPI_Gatherv(rc.regions, bytes, MPI_BYTE, all, cnt, dsp, MPI_BYTE, 0, MPI_COMM_WORLD);
        if (st.rank == 0) {
            free(rc.regions);
            rc.regions = all;
            rc.num_regions = rc.cap_regions = total / (long)sizeof(RegionRec);
            region_recs_sort(rc.regions, rc.num_regions);
        }
        free(cnt), free(dsp);
    }
    char *all_skipped = gather_text(skipped ? skipped : "", MPI_COMM_WORLD);
    if (st.rank == 0) {
        double macc[EVAL_METHODS][2][2];
        region_macc(&rc, &pan.categories, macc);
        ReportInfo info = {.model = model_path,
                           .label = label,
                           .model_digest = model_digest,
                           .dataset = name,
                           .classes_digest = classes_digest,
                           .det_size = det,
                           .crop_size = crop,
                           .max_images = max_images,
                           .precision = bf16 ? "bfloat16" : "float32",
                           .images = stats[0],
                           .images_skipped = stats[1],
                           .segments = stats[2],
                           .seconds = now_seconds() - t0,
                           .skipped = all_skipped};
        region_miou(&rc, &pan.categories, &info.miou[0], &info.miou[1], &info.miou[2]);
        stage_check(&st, report_write_json(out, &info, &rc, &pan.categories, macc), NULL);
        static char table[16384];
        char md[4200];
        stage_check(&st, report_markdown(table, sizeof table, &info, macc), NULL);
        snprintf(md, sizeof md, "%s.md", out);
        stage_check(&st, file_write_text(md, table), NULL);
        printf("%s\nevaluate: %d images (%d skipped), %d segments in %.1f s; wrote %s and %s\n",
               table, stats[0], stats[1], stats[2], info.seconds, out, md);
    }
    if (stats[0] == 0) { /* every image skipped: a result of nothing is a failure */
        cs_error_set(__FILE__, __LINE__, "no image of %s could be evaluated (%d skipped)", name,
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
    if (pic_vs) vit_free(&vs);
    vit_free(&model);
    classes_free(&ce);
    coco_panoptic_free(&pan);
    stage_end(&st);
    return 0;
}
