/* crop_stats: what the student learns from, measured. For a crops file, its teacher cache and
 * the panoptic ground truth of the training images: each crop (the student's box) is a
 *   whole object  when some thing segment has at least half of its pixels inside the box;
 *   fragment      when thing pixels are inside but no thing has half of its pixels there;
 *   stuff only    when only stuff pixels are inside (void-only boxes are not counted);
 * and its label is the whole object's category (the one with the most pixels inside), else
 * the category with the most pixels inside. For each group: the share of crops and the
 * teacher's top-1 (its cached embedding of the crop classified against the class embeddings).
 * With --before and --after (two evaluate results JSON), the per-class rois top-1 of both. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "base/fileio.h"
#include "base/stage.h"
#include "io/classes.h"
#include "io/coco.h"
#include "io/cropfile.h"
#include "io/image.h"
#include "io/teachercache.h"
#include "method/regioneval.h"
#include "results/report.h"

enum { G_WHOLE, G_FRAGMENT, G_STUFF, G_NUM };
static const char *const group_names[G_NUM] = {"whole object", "fragment", "stuff only"};

/* The group and label of box b (x0, y0, x1, y1) on the segment map ids (w, h): pixels whose
 * centres lie inside the box. Returns the group, or -1 for a box with no labelled pixel. */
static int classify_box(const float *b, const uint32_t *ids, int w, int h,
                        const CocoPanopticImage *pi, const long *total, long *inside,
                        const CocoCategories *cats, int *label) {
    int S = pi->num_segments;
    memset(inside, 0, (size_t)S * sizeof(long));
    int x0 = (int)(b[0] - 0.5f + 0.999999f), y0 = (int)(b[1] - 0.5f + 0.999999f);
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    for (int y = y0; y < h && y + 0.5f < b[3]; y++)
        for (int x = x0; x < w && x + 0.5f < b[2]; x++) {
            uint32_t id = ids[(size_t)y * w + x];
            for (int s = 0; s < S && id; s++)
                if (pi->segments[s].id == id) {
                    inside[s]++;
                    break;
                }
        }
    int whole = -1, most = -1, any_thing = 0;
    for (int s = 0; s < S; s++) {
        if (!inside[s]) continue;
        int thing = cats->cats[pi->segments[s].category].isthing;
        any_thing |= thing;
        if (thing && 2 * inside[s] >= total[s] && (whole < 0 || inside[s] > inside[whole])) whole = s;
        if (most < 0 || inside[s] > inside[most]) most = s;
    }
    if (most < 0) return -1;
    *label = pi->segments[whole >= 0 ? whole : most].category;
    return whole >= 0 ? G_WHOLE : any_thing ? G_FRAGMENT : G_STUFF;
}

/* per_class rois_top1 / samples of a results JSON into acc (K), NaN without samples. */
static int rois_per_class(const char *path, int K, double *acc) {
    ReportResult r;
    int missing;
    char why[1024];
    CS_CHECK(report_read_json(&r, path, &missing, why, sizeof why) == 0, "%s: %s", path, why);
    int ok = r.ncls == K;
    for (int k = 0; ok && k < K; k++) {
        ok = r.samples[k] >= 0 && r.rois_top1[k] >= 0;
        if (ok) acc[k] = r.samples[k] ? (double)r.rois_top1[k] / (double)r.samples[k] : -1;
    }
    report_result_free(&r);
    CS_CHECK(ok, "%s: no per_class list of %d classes with samples and rois_top1", path, K);
    return 0;
}

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "crop_stats", &argc, &argv);
    const char *crops = NULL, *cache = NULL, *panoptic = NULL, *png = NULL, *classes = NULL;
    const char *before = NULL, *after = NULL, *out = NULL;
    CliOpt opts[] = {
        {"crops", CLI_STRING, &crops, "crops file (sample_crops) (required)"},
        {"cache", CLI_STRING, &cache, "its teacher cache (embed_teacher) (required)"},
        {"panoptic", CLI_STRING, &panoptic, "panoptic JSON of the training images (required)"},
        {"panoptic-png", CLI_STRING, &png, "its folder of PNGs (required)"},
        {"classes", CLI_STRING, &classes, "class embeddings of the panoptic categories (required)"},
        {"before", CLI_STRING, &before, "an evaluate results JSON (e.g. the teacher's)"},
        {"after", CLI_STRING, &after, "another (e.g. the student's): per-class rois top-1 of both"},
        {"out", CLI_STRING, &out, "also write the report (markdown) here"},
    };
    if (stage_options(&st, argc, argv,
                      "What the student learns from: the share of crops that hold a whole "
                      "object, a fragment of one, or stuff only, and the teacher's top-1 on each "
                      "group; with --before/--after, per-class rois top-1 of two results.",
                      opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!crops || !cache || !panoptic || !png || !classes) {
        cs_error_set(__FILE__, __LINE__, "--crops, --cache, --panoptic, --panoptic-png and "
                     "--classes are required");
        stage_die(&st, "see --help");
    }
    if (st.rank == 0) {
        CropFile cf;
        CocoPanoptic pan;
        ClassEmbeddings ce;
        TeacherCache tc;
        stage_check(&st, cropfile_read(&cf, crops), NULL);
        stage_check(&st, coco_read_panoptic(&pan, panoptic), NULL);
        stage_check(&st, classes_read(&ce, classes, &pan.categories), NULL);
        CacheIdentity id = {0, cf.digest, 0, 0, TEACHER_ANY};
        stage_check(&st, teacher_cache_open(&tc, cache, &id), "the cache of these crops");
        int K = ce.num, E = ce.embed;
        if (tc.embed != E) {
            cs_error_set(__FILE__, __LINE__, "the cache's embeddings are %d wide, the classes' %d",
                         tc.embed, E);
            stage_die(&st, NULL);
        }
        long n[G_NUM] = {0}, hit[G_NUM] = {0}, unlabelled = 0, unmatched = 0;
        float *emb = malloc((size_t)(cf.max_boxes > 0 ? cf.max_boxes : 1) * E * sizeof(float));
        uint8_t *valid = malloc((size_t)(cf.max_boxes > 0 ? cf.max_boxes : 1));
        float *logits = malloc((size_t)K * sizeof(float));
        for (int i = 0; i < cf.num_images; i++) {
            int lo = 0, hi = pan.num_images - 1, p = -1;
            while (lo <= hi) {
                int mid = (lo + hi) / 2;
                if (pan.images[mid].id == cf.image_id[i]) { p = mid; break; }
                if (pan.images[mid].id < cf.image_id[i]) lo = mid + 1;
                else hi = mid - 1;
            }
            if (p < 0) { unmatched++; continue; }
            const CocoPanopticImage *pi = &pan.images[p];
            char path[4096];
            uint32_t *ids = NULL;
            int w, h;
            stage_check(&st, coco_image_path(path, sizeof path, png, pi->png_name), NULL);
            stage_check(&st, image_read_panoptic_png(&ids, &w, &h, path), NULL);
            long *total = calloc((size_t)pi->num_segments + 1, sizeof(long));
            long *inside = calloc((size_t)pi->num_segments + 1, sizeof(long));
            for (size_t q = 0; q < (size_t)w * h; q++)
                for (int s = 0; s < pi->num_segments && ids[q]; s++)
                    if (pi->segments[s].id == ids[q]) { total[s]++; break; }
            for (int e = 0; e < cf.epochs; e++) {
                long r0 = cf.first[(size_t)i * cf.epochs + e];
                int cnt = cf.count[(size_t)i * cf.epochs + e];
                if (cnt <= 0) continue;
                stage_check(&st, teacher_cache_read(&tc, r0, cnt, emb, valid), NULL);
                for (int j = 0; j < cnt; j++) {
                    int label, g = classify_box(cf.rows[r0 + j].box, ids, w, h, pi, total, inside,
                                                &pan.categories, &label);
                    if (g < 0 || !valid[j]) { unlabelled++; continue; }
                    const float *f = emb + (size_t)j * E;
                    double nf = 0;
                    for (int d = 0; d < E; d++) nf += (double)f[d] * f[d];
                    for (int k = 0; k < K; k++) {
                        float s = 0;
                        for (int d = 0; d < E; d++) s += f[d] * ce.emb[(size_t)k * E + d];
                        logits[k] = nf > 0 ? s : 0.0f;
                    }
                    n[g]++;
                    hit[g] += region_rank(logits, K, label) == 0;
                }
            }
            free(ids), free(total), free(inside);
        }
        long all = n[0] + n[1] + n[2];
        char rep[16384];
        size_t len = 0;
        len += (size_t)snprintf(rep + len, sizeof rep - len,
                                "Crops of %s (%s mode, %ld with a labelled pixel, %ld void only or "
                                "skipped, %ld of images without panoptic annotation):\n\n"
                                "| crop holds | share | teacher top-1 |\n|---|---:|---:|\n",
                                crops, cf.mode, all, unlabelled, unmatched);
        for (int g = 0; g < G_NUM; g++)
            len += (size_t)snprintf(rep + len, sizeof rep - len, "| %s | %.1f %% | %.1f %% |\n",
                                    group_names[g], all ? 100.0 * n[g] / all : 0.0,
                                    n[g] ? 100.0 * hit[g] / n[g] : 0.0);
        if (before && after) {
            double *a = malloc((size_t)K * sizeof(double)), *b = malloc((size_t)K * sizeof(double));
            stage_check(&st, rois_per_class(before, K, a), NULL);
            stage_check(&st, rois_per_class(after, K, b), NULL);
            len += (size_t)snprintf(rep + len, sizeof rep - len,
                                    "\nPer-class rois top-1, %s -> %s:\n\n| class | kind | before | "
                                    "after | change |\n|---|---|---:|---:|---:|\n", before, after);
            for (int k = 0; k < K && len < sizeof rep - 200; k++) {
                if (a[k] < 0 || b[k] < 0) continue;
                len += (size_t)snprintf(rep + len, sizeof rep - len,
                                        "| %s | %s | %.1f | %.1f | %+.1f |\n",
                                        pan.categories.cats[k].name,
                                        pan.categories.cats[k].isthing ? "thing" : "stuff",
                                        100 * a[k], 100 * b[k], 100 * (b[k] - a[k]));
            }
            free(a), free(b);
        }
        printf("%s", rep);
        if (out) stage_check(&st, file_write_text(out, rep), NULL);
        free(emb), free(valid), free(logits);
        teacher_cache_close(&tc);
        classes_free(&ce);
        coco_panoptic_free(&pan);
        cropfile_free(&cf);
    }
    stage_end(&st);
    return 0;
}
