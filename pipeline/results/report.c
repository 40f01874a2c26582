/* report.c: results JSON through yajl's generator, the markdown table, atomic writes. */
#include "results/report.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "base/check.h"
#include "base/fileio.h"
#include "io/h5util.h"

#define GS(g, s) yajl_gen_string(g, (const unsigned char *)(s), strlen(s))

int report_write_json(const char *path, const ReportInfo *info, const RegionCounts *rc,
                      const CocoCategories *cats, double macc[EVAL_METHODS][2][2]) {
    yajl_gen g = yajl_gen_alloc(NULL);
    CS_CHECK(g, "out of memory");
    yajl_gen_config(g, yajl_gen_beautify, 1);
    yajl_gen_map_open(g);
    GS(g, "model"), GS(g, info->model ? info->model : "");
    GS(g, "label"), GS(g, info->label ? info->label : "");
    char digest[17];
    snprintf(digest, sizeof digest, "%016" PRIx64, info->model_digest);
    GS(g, "model_digest"), GS(g, digest);
    GS(g, "dataset"), GS(g, info->dataset ? info->dataset : "");
    snprintf(digest, sizeof digest, "%016" PRIx64, info->classes_digest);
    GS(g, "classes_digest"), GS(g, digest);
    GS(g, "det_size"), yajl_gen_integer(g, info->det_size);
    GS(g, "crop_size"), yajl_gen_integer(g, info->crop_size);
    GS(g, "max_images"), yajl_gen_integer(g, info->max_images);
    GS(g, "precision"), GS(g, info->precision ? info->precision : "float32");
    GS(g, "images"), yajl_gen_integer(g, info->images);
    GS(g, "images_skipped"), yajl_gen_integer(g, info->images_skipped);
    GS(g, "segments"), yajl_gen_integer(g, info->segments);
    GS(g, "masks_vanished"), yajl_gen_integer(g, rc->vanished);
    GS(g, "seconds"), yajl_gen_double(g, info->seconds);
    GS(g, "skipped");
    yajl_gen_array_open(g);
    for (const char *l = info->skipped; l && *l;) {
        const char *tab = strchr(l, '\t'), *nl = strchr(l, '\n');
        if (!tab || !nl || tab > nl) break;
        yajl_gen_map_open(g);
        GS(g, "image_id"), yajl_gen_number(g, l, (size_t)(tab - l));
        GS(g, "reason"), yajl_gen_string(g, (const unsigned char *)tab + 1, (size_t)(nl - tab - 1));
        yajl_gen_map_close(g);
        l = nl + 1;
    }
    yajl_gen_array_close(g);
    GS(g, "metrics");
    yajl_gen_map_open(g);
    for (int i = 0; i < REPORT_METRICS; i++) {
        char key[64];
        report_metric_key(key, sizeof key, i);
        double v = macc[i / 4][i / 2 % 2][i % 2];
        GS(g, key);
        if (isnan(v)) yajl_gen_null(g);
        else yajl_gen_double(g, v);
    }
    yajl_gen_map_close(g);
    double miou[3];
    region_miou(rc, cats, &miou[0], &miou[1], &miou[2]);
    GS(g, "segmentation");
    yajl_gen_map_open(g);
    const char *mk[3] = {"miou", "miou_thing", "miou_stuff"};
    for (int i = 0; i < 3; i++) {
        GS(g, mk[i]);
        if (isnan(miou[i])) yajl_gen_null(g);
        else yajl_gen_double(g, miou[i]);
    }
    yajl_gen_map_close(g);
    /* every region: [image_id, class, top-1 hits, top-5 hits], bit m for method m (rois,
     * crops, maskpool): what compare_results resamples for its intervals */
    GS(g, "regions");
    yajl_gen_array_open(g);
    for (long r = 0; r < rc->num_regions; r++) {
        const RegionRec *x = &rc->regions[r];
        yajl_gen_array_open(g);
        yajl_gen_integer(g, x->image_id), yajl_gen_integer(g, x->category);
        yajl_gen_integer(g, x->hit1), yajl_gen_integer(g, x->hit5);
        yajl_gen_array_close(g);
    }
    yajl_gen_array_close(g);
    GS(g, "per_class");
    yajl_gen_array_open(g);
    for (int k = 0; k < rc->num_classes; k++) {
        yajl_gen_map_open(g);
        GS(g, "category_id"), yajl_gen_integer(g, cats->cats[k].id);
        GS(g, "name"), GS(g, cats->cats[k].name);
        GS(g, "isthing"), yajl_gen_integer(g, cats->cats[k].isthing);
        GS(g, "samples"), yajl_gen_integer(g, rc->count[k]);
        for (int m = 0; m < EVAL_METHODS; m++) {
            char key[32];
            snprintf(key, sizeof key, "%s_top1", eval_method_names[m]);
            GS(g, key), yajl_gen_integer(g, rc->top1[(size_t)m * rc->num_classes + k]);
            snprintf(key, sizeof key, "%s_top5", eval_method_names[m]);
            GS(g, key), yajl_gen_integer(g, rc->top5[(size_t)m * rc->num_classes + k]);
        }
        GS(g, "seg_inter"), yajl_gen_integer(g, rc->seg_inter[k]);
        GS(g, "seg_gt"), yajl_gen_integer(g, rc->seg_gt[k]);
        GS(g, "seg_pred"), yajl_gen_integer(g, rc->seg_pred[k]);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    return file_write_json(g, path);
}

int report_markdown(char *buf, size_t len, const ReportInfo *info,
                    double macc[EVAL_METHODS][2][2]) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, len - n,
                          "Region recognition, %s (%s) on %s (%d images, %d segments; mAcc %%)\n\n"
                          "| method | thing top-1 | thing top-5 | stuff top-1 | stuff top-5 |\n"
                          "|---|---:|---:|---:|---:|\n",
                          info->label ? info->label : "", info->model, info->dataset,
                          info->images, info->segments);
    for (int m = 0; m < EVAL_METHODS && n < len; m++) {
        n += (size_t)snprintf(buf + n, len - n, "| %s |", eval_method_names[m]);
        for (int s = 0; s < 2 && n < len; s++)
            for (int t = 0; t < 2 && n < len; t++) {
                if (isnan(macc[m][s][t])) n += (size_t)snprintf(buf + n, len - n, " - |");
                else n += (size_t)snprintf(buf + n, len - n, " %.2f |", 100.0 * macc[m][s][t]);
            }
        if (n < len) n += (size_t)snprintf(buf + n, len - n, "\n");
    }
    if (n < len) {
        n += (size_t)snprintf(buf + n, len - n, "\nZero-shot segmentation (per-pixel argmax of the "
                              "dense map's class logits), mIoU %%:");
        const char *what[3] = {"all", "things", "stuff"};
        for (int i = 0; i < 3 && n < len; i++) {
            if (isnan(info->miou[i])) n += (size_t)snprintf(buf + n, len - n, " %s -", what[i]);
            else n += (size_t)snprintf(buf + n, len - n, " %s %.2f", what[i], 100.0 * info->miou[i]);
        }
        if (n < len) n += (size_t)snprintf(buf + n, len - n, "\n");
    }
    CS_CHECK(n < len, "report buffer too small");
    return 0;
}

/* The string (or NULL) under key of object o. */
static const char *json_str(yajl_val o, const char *key) {
    const char *p[2] = {key, NULL};
    yajl_val v = yajl_tree_get(o, p, yajl_t_string);
    return v ? YAJL_GET_STRING(v) : NULL;
}

static int json_int(yajl_val o, const char *key, long long *out) {
    const char *p[2] = {key, NULL};
    yajl_val v = yajl_tree_get(o, p, yajl_t_number);
    if (!v || !YAJL_IS_INTEGER(v)) return -1;
    *out = YAJL_GET_INTEGER(v);
    return 0;
}

static int check_tree(yajl_val root, const char *path, const ReportInfo *w) {
    CS_CHECK(YAJL_IS_OBJECT(root), "%s is not a results JSON object", path);
    char hex[2][17];
    snprintf(hex[0], sizeof hex[0], "%016" PRIx64, w->model_digest);
    snprintf(hex[1], sizeof hex[1], "%016" PRIx64, w->classes_digest);
    const char *keys[5] = {"model_digest", "classes_digest", "label", "dataset", NULL};
    const char *want[4] = {hex[0], hex[1], w->label ? w->label : "", w->dataset ? w->dataset : ""};
    for (int i = 0; keys[i]; i++) {
        const char *have = json_str(root, keys[i]);
        CS_CHECK(have && !strcmp(have, want[i]), "%s: %s is %s%s%s, now %s", path, keys[i],
                 have ? "'" : "", have ? have : "absent", have ? "'" : "", want[i]);
    }
    /* results written before the precision was recorded are float32 ones */
    const char *prec = json_str(root, "precision");
    const char *wprec = w->precision ? w->precision : "float32";
    CS_CHECK(!strcmp(prec ? prec : "float32", wprec), "%s: precision is %s, now %s", path,
             prec ? prec : "float32 (absent)", wprec);
    const char *ikeys[3] = {"det_size", "crop_size", "max_images"};
    int iwant[3] = {w->det_size, w->crop_size, w->max_images};
    for (int i = 0; i < 3; i++) {
        long long v;
        CS_CHECK(!json_int(root, ikeys[i], &v) && v == iwant[i], "%s: %s is not %d", path,
                 ikeys[i], iwant[i]);
    }
    const char *mp[2] = {"metrics", NULL};
    yajl_val m = yajl_tree_get(root, mp, yajl_t_object);
    CS_CHECK(m && m->u.object.len == (size_t)EVAL_METHODS * 4, "%s: the metrics are incomplete",
             path);
    return 0;
}

int report_check_json(const char *path, const ReportInfo *want) {
    char *text;
    size_t n;
    CS_TRY(file_read_all(path, "results JSON", &text, &n));
    char why[256] = "";
    yajl_val root = yajl_tree_parse(text, why, sizeof why);
    free(text);
    CS_CHECK(root, "%s is not valid JSON: %s", path, why[0] ? why : "parse error");
    int rc = check_tree(root, path, want);
    yajl_tree_free(root);
    return rc;
}

void report_metric_key(char *key, size_t len, int i) {
    static const char *const kind[2] = {"thing", "stuff"};
    snprintf(key, len, "%s.%s.macc%d", eval_method_names[i / 4], kind[i / 2 % 2],
             i % 2 ? 5 : 1);
}

void report_result_free(ReportResult *r) {
    free(r->dataset);
    for (int k = 0; k < REPORT_METRICS; k++) free(r->raw[k]);
    free(r->reg), free(r->isthing), free(r->samples), free(r->rois_top1);
    memset(r, 0, sizeof *r);
}

/* Fill r from the parsed tree; returns the reason it is unusable (in why), or NULL. */
static const char *read_tree(ReportResult *r, yajl_val root, char *why, size_t whylen) {
    if (!YAJL_IS_OBJECT(root)) return "not a JSON object";
    const char *p_dataset[] = {"dataset", NULL}, *p_metrics[] = {"metrics", NULL};
    const char *p_images[] = {"images", NULL}, *p_segments[] = {"segments", NULL};
    const char *p_digest[] = {"model_digest", NULL};
    const char *ds = YAJL_GET_STRING(yajl_tree_get(root, p_dataset, yajl_t_string));
    if (!ds) return "no \"dataset\"";
    if (!(r->dataset = strdup(ds))) return "out of memory";
    yajl_val m = yajl_tree_get(root, p_metrics, yajl_t_object);
    if (!m) return "no \"metrics\"";
    for (int i = 0; i < REPORT_METRICS; i++) {
        char key[64];
        report_metric_key(key, sizeof key, i);
        const char *p_key[] = {key, NULL};
        yajl_val v = yajl_tree_get(m, p_key, yajl_t_any);
        if (!v) {
            snprintf(why, whylen, "metric %s missing", key);
            return why;
        }
        if (YAJL_IS_NULL(v)) continue;
        if (!YAJL_IS_DOUBLE(v)) {
            snprintf(why, whylen, "metric %s is not a number", key);
            return why;
        }
        r->has_value[i] = 1;
        r->value[i] = YAJL_GET_DOUBLE(v);
        if (!(r->raw[i] = strdup(YAJL_GET_NUMBER(v)))) return "out of memory";
    }
    static const char *const seg_keys[3] = {"miou", "miou_thing", "miou_stuff"};
    const char *p_seg[] = {"segmentation", NULL};
    yajl_val sv = yajl_tree_get(root, p_seg, yajl_t_object);
    for (int i = 0; sv && i < 3; i++) {
        const char *p_key[] = {seg_keys[i], NULL};
        yajl_val v = yajl_tree_get(sv, p_key, yajl_t_any);
        if (v && YAJL_IS_DOUBLE(v)) r->has_seg[i] = 1, r->seg[i] = YAJL_GET_DOUBLE(v);
    }
    const char *p_reg[] = {"regions", NULL};
    yajl_val rv = yajl_tree_get(root, p_reg, yajl_t_array);
    if (rv && rv->u.array.len) {
        if (!(r->reg = calloc(rv->u.array.len, sizeof *r->reg))) return "out of memory";
        for (size_t i = 0; i < rv->u.array.len; i++) {
            yajl_val x = rv->u.array.values[i];
            int ok = YAJL_IS_ARRAY(x) && x->u.array.len == 4;
            for (size_t j = 0; ok && j < 4; j++) ok = YAJL_IS_INTEGER(x->u.array.values[j]);
            if (!ok) return "a \"regions\" entry is not [image_id, class, hit1, hit5]";
            r->reg[i] = (RegionRec){.image_id = YAJL_GET_INTEGER(x->u.array.values[0]),
                                    .category = (int32_t)YAJL_GET_INTEGER(x->u.array.values[1]),
                                    .hit1 = (uint8_t)YAJL_GET_INTEGER(x->u.array.values[2]),
                                    .hit5 = (uint8_t)YAJL_GET_INTEGER(x->u.array.values[3])};
            if (r->reg[i].category < 0 || r->reg[i].category > 100000)
                return "a \"regions\" entry has a bad class";
        }
        r->nreg = (long)rv->u.array.len;
    }
    const char *p_pc[] = {"per_class", NULL}, *p_it[] = {"isthing", NULL};
    const char *p_s[] = {"samples", NULL}, *p_h[] = {"rois_top1", NULL};
    yajl_val pc = yajl_tree_get(root, p_pc, yajl_t_array);
    if (pc && pc->u.array.len) {
        size_t K = pc->u.array.len;
        r->isthing = calloc(K, sizeof(int));
        r->samples = calloc(K, sizeof(long)), r->rois_top1 = calloc(K, sizeof(long));
        if (!r->isthing || !r->samples || !r->rois_top1) return "out of memory";
        for (size_t i = 0; i < K; i++) {
            yajl_val c = pc->u.array.values[i];
            yajl_val v = yajl_tree_get(c, p_it, yajl_t_number);
            r->isthing[i] = v && YAJL_IS_INTEGER(v) && YAJL_GET_INTEGER(v) == 1;
            /* -1: not given (a per_class entry without the counts) */
            yajl_val n = yajl_tree_get(c, p_s, yajl_t_number), h = yajl_tree_get(c, p_h,
                                                                                 yajl_t_number);
            r->samples[i] = n && YAJL_IS_INTEGER(n) ? (long)YAJL_GET_INTEGER(n) : -1;
            r->rois_top1[i] = h && YAJL_IS_INTEGER(h) ? (long)YAJL_GET_INTEGER(h) : -1;
        }
        r->ncls = (int)K;
    }
    yajl_val im = yajl_tree_get(root, p_images, yajl_t_number);
    yajl_val sg = yajl_tree_get(root, p_segments, yajl_t_number);
    if (!YAJL_IS_INTEGER(im) || !YAJL_IS_INTEGER(sg)) return "no \"images\" or \"segments\" count";
    r->images = (long)YAJL_GET_INTEGER(im);
    r->segments = (long)YAJL_GET_INTEGER(sg);
    /* older results have no digest: null in the JSON, as is one not of 16 hex digits */
    const char *dg = YAJL_GET_STRING(yajl_tree_get(root, p_digest, yajl_t_string));
    if (dg && strlen(dg) == 16 && strspn(dg, "0123456789abcdef") == 16)
        memcpy(r->digest, dg, sizeof r->digest);
    return NULL;
}

int report_read_json(ReportResult *r, const char *path, int *missing, char *why,
                     size_t whylen) {
    memset(r, 0, sizeof *r);
    *missing = 0;
    char *text;
    size_t n;
    if (file_read_all(path, "results JSON", &text, &n) != 0) {
        *missing = errno == ENOENT;
        snprintf(why, whylen, "unreadable: %s", strerror(errno));
        return -1;
    }
    const char *reason = NULL;
    char buf[1024];
    yajl_val root = NULL;
    if (memchr(text, '\0', n)) {
        reason = "unreadable: not a text file";
    } else {
        char err[512] = "";
        root = yajl_tree_parse(text, err, sizeof err);
        if (!root) {
            err[strcspn(err, "\n")] = '\0'; /* yajl adds lines pointing at the place */
            snprintf(buf, sizeof buf, "malformed JSON: %s", err[0] ? err : "parse error");
            reason = buf;
        } else {
            reason = read_tree(r, root, buf, sizeof buf);
        }
    }
    yajl_tree_free(root);
    free(text);
    if (!reason) return 0;
    snprintf(why, whylen, "%s", reason);
    report_result_free(r);
    return -1;
}
