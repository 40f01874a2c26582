/* compare_results: gather evaluation results (evaluate's JSON files) of many models on many
 * benchmarks into one comparison table, PREFIX.md for people and PREFIX.json for programs.
 * The expected results are listed in a manifest; a result that is absent or unusable is
 * reported as such (and makes the exit status 1) rather than stopping the gathering. Only
 * rank 0 works: the stage is an MPI program like the others so it can end a Slurm job. */
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>

#include "base/check.h"
#include "base/fileio.h"
#include "base/rng.h"
#include "base/stage.h"
#include "method/regioneval.h"
#include "results/report.h"

static const char *const kinds[2] = {"thing", "stuff"};

/* One manifest line and what was found in its result file. */
typedef struct {
    char *label, *model, *bench, *result;
    int line;
    char *status;                  /* "ok", "missing" or "invalid: <reason>" */
    int ok;
    ReportResult res;              /* what was read (empty unless ok) */
} Entry;

static const char *const seg_names[3] = {"all", "thing", "stuff"};

typedef struct {
    Entry *e;
    int n, cap;
} Manifest;

/* ---- a growing text buffer ---------------------------------------------------------------- */
typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} Buf;

static void bprintf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(Buf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap <= b->n + (size_t)k) cap *= 2;
        char *grown = realloc(b->s, cap);
        if (!grown) {
            b->oom = 1;
            return;
        }
        b->s = grown, b->cap = cap;
    }
}

/* Text inside a markdown table cell: '|' escaped, line breaks as spaces. */
static void bcell(Buf *b, const char *text) {
    for (const char *p = text; *p; p++) {
        if (*p == '|') bprintf(b, "\\|");
        else if (*p == '\n' || *p == '\r') bprintf(b, " ");
        else bprintf(b, "%c", *p);
    }
}

/* ---- the manifest ------------------------------------------------------------------------- */
static int add_entry(Manifest *mf, const char *path, int line, char **field) {
    for (int i = 0; i < mf->n; i++) {
        const Entry *o = &mf->e[i];
        CS_CHECK(strcmp(o->label, field[0]) || strcmp(o->bench, field[2]),
                 "%s, line %d: '%s' on '%s' is listed twice (first on line %d)", path, line,
                 field[0], field[2], o->line);
        CS_CHECK(strcmp(o->label, field[0]) || !strcmp(o->model, field[1]),
                 "%s, line %d: label '%s' names model %s, but %s on line %d", path, line,
                 field[0], field[1], o->model, o->line);
    }
    if (mf->n == mf->cap) {
        int cap = mf->cap ? 2 * mf->cap : 16;
        Entry *grown = realloc(mf->e, (size_t)cap * sizeof *grown);
        CS_CHECK(grown, "out of memory reading %s", path);
        mf->e = grown, mf->cap = cap;
    }
    Entry *e = &mf->e[mf->n];
    memset(e, 0, sizeof *e);
    e->line = line;
    e->label = strdup(field[0]), e->model = strdup(field[1]);
    e->bench = strdup(field[2]), e->result = strdup(field[3]);
    mf->n++; /* counted before the check so that manifest_free frees what was copied */
    CS_CHECK(e->label && e->model && e->bench && e->result, "out of memory reading %s", path);
    return 0;
}

static int parse_line(Manifest *mf, const char *path, int line, char *text) {
    size_t len = strlen(text);
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r')) text[--len] = '\0';
    if (!len || text[0] == '#') return 0;
    char *field[4];
    int nf = 0;
    for (char *p = text;; nf++) {
        char *tab = strchr(p, '\t');
        if (nf < 4) field[nf] = p;
        if (!tab) {
            nf++;
            break;
        }
        *tab = '\0';
        p = tab + 1;
    }
    CS_CHECK(nf == 4,
             "%s, line %d: expected 4 tab-separated fields (label, model, benchmark, result "
             "JSON), found %d",
             path, line, nf);
    static const char *names[4] = {"label", "model", "benchmark", "result JSON"};
    for (int i = 0; i < 4; i++)
        CS_CHECK(field[i][0], "%s, line %d: the %s field is empty", path, line, names[i]);
    return add_entry(mf, path, line, field);
}

static int manifest_read(Manifest *mf, const char *path) {
    FILE *f = fopen(path, "r");
    CS_CHECK(f, "cannot open the manifest %s: %s", path, strerror(errno));
    char *text = NULL;
    size_t cap = 0;
    int line = 0, rc = 0;
    while (!rc && getline(&text, &cap, f) >= 0) rc = parse_line(mf, path, ++line, text);
    int err = ferror(f);
    free(text);
    fclose(f);
    CS_TRY(rc);
    CS_CHECK(!err, "error reading the manifest %s", path);
    CS_CHECK(mf->n > 0, "the manifest %s lists no results", path);
    return 0;
}

static void manifest_free(Manifest *mf) {
    for (int i = 0; i < mf->n; i++) {
        Entry *e = &mf->e[i];
        free(e->label), free(e->model), free(e->bench), free(e->result), free(e->status);
        report_result_free(&e->res);
    }
    free(mf->e);
    memset(mf, 0, sizeof *mf);
}

/* ---- one result file ---------------------------------------------------------------------- */
/* Read e's result file (report_read_json) and check it is of e's benchmark; e->status says
 * what was found: "ok", "missing" or "invalid: <reason>". */
static int load_result(Entry *e) {
    char why[1024], status[1200];
    int missing;
    int rc = report_read_json(&e->res, e->result, &missing, why, sizeof why);
    if (!rc && strcmp(e->res.dataset, e->bench)) {
        snprintf(why, sizeof why, "its dataset is '%s', not '%s'", e->res.dataset, e->bench);
        report_result_free(&e->res); /* nothing half-read is reported */
        rc = -1;
    }
    if (missing) snprintf(status, sizeof status, "missing");
    else if (rc) snprintf(status, sizeof status, "invalid: %s", why);
    else snprintf(status, sizeof status, "ok");
    e->ok = rc == 0;
    e->status = strdup(status);
    CS_CHECK(e->status, "out of memory");
    return 0;
}

/* ---- the outputs -------------------------------------------------------------------------- */
/* The distinct labels (bench = 0) or benchmarks (bench = 1), in order of first appearance
 * (pointers into mf). */
static int distinct(const Manifest *mf, int bench, const char ***out, int *n) {
    const char **v;
    CS_ALLOC(v, mf->n);
    int k = 0;
    for (int i = 0; i < mf->n; i++) {
        const char *s = bench ? mf->e[i].bench : mf->e[i].label;
        int seen = 0;
        for (int j = 0; j < k && !seen; j++) seen = !strcmp(v[j], s);
        if (!seen) v[k++] = s;
    }
    *out = v, *n = k;
    return 0;
}

static const Entry *find(const Manifest *mf, const char *label, const char *bench) {
    for (int i = 0; i < mf->n; i++)
        if (!strcmp(mf->e[i].label, label) && !strcmp(mf->e[i].bench, bench)) return &mf->e[i];
    return NULL;
}

static int markdown(Buf *b, const Manifest *mf, const char **benches, int nb,
                    const char **labels, int nl, int nbad) {
    bprintf(b, "# Region recognition: %d model%s on %d benchmark%s (mAcc %%)\n", nl,
            nl == 1 ? "" : "s", nb, nb == 1 ? "" : "s");
    for (int j = 0; j < nb; j++) {
        bprintf(b, "\n### ");
        bcell(b, benches[j]);
        bprintf(b, "\n\n| model |");
        for (int i = 0; i < REPORT_METRICS; i++)
            bprintf(b, " %s %s top-%d |", eval_method_names[i / 4], kinds[i / 2 % 2],
                    i % 2 ? 5 : 1);
        for (int i = 0; i < 3; i++) bprintf(b, " mIoU %s |", seg_names[i]);
        bprintf(b, " images |\n|---|");
        for (int i = 0; i <= REPORT_METRICS + 3; i++) bprintf(b, "---:|");
        bprintf(b, "\n");
        for (int l = 0; l < nl; l++) {
            const Entry *e = find(mf, labels[l], benches[j]);
            if (!e) continue;
            bprintf(b, "| ");
            bcell(b, e->label);
            bprintf(b, " |");
            if (!e->ok) {
                bprintf(b, " %s |", strncmp(e->status, "invalid", 7) ? e->status : "invalid");
                for (int i = 1; i <= REPORT_METRICS + 3; i++) bprintf(b, " |");
            } else {
                for (int i = 0; i < REPORT_METRICS; i++)
                    if (e->res.has_value[i]) bprintf(b, " %.2f |", 100.0 * e->res.value[i]);
                    else bprintf(b, " - |");
                for (int i = 0; i < 3; i++)
                    if (e->res.has_seg[i]) bprintf(b, " %.2f |", 100.0 * e->res.seg[i]);
                    else bprintf(b, " - |");
                bprintf(b, " %ld |", e->res.images);
            }
            bprintf(b, "\n");
        }
    }
    if (nbad) {
        bprintf(b, "\n%d of %d results missing or invalid:\n\n", nbad, mf->n);
        for (int i = 0; i < mf->n; i++) {
            const Entry *e = &mf->e[i];
            if (e->ok) continue;
            bprintf(b, "- ");
            bcell(b, e->label);
            bprintf(b, " on ");
            bcell(b, e->bench);
            bprintf(b, ": ");
            bcell(b, e->status);
            bprintf(b, " (");
            bcell(b, e->result);
            bprintf(b, ")\n");
        }
    }
    CS_CHECK(!b->oom, "out of memory writing the table");
    return 0;
}

/* ---- intervals by resampling images --------------------------------------------------------- */
#define BOOT_DRAWS 1000

/* mAcc (mean over classes with samples of the hit rate, things or stuff apart) of the regions
 * of the drawn images, per metric; cls (K) the kinds (1 thing). */
static void boot_macc(const RegionRec *reg, const long *first, const long *count,
                      const int *draw, int n, int K, const int *thing, long *tally,
                      double *out) {
    memset(tally, 0, (size_t)K * 7 * sizeof(long)); /* per class: samples, 3 x hit1, 3 x hit5 */
    for (int d = 0; d < n; d++)
        for (long r = first[draw[d]]; r < first[draw[d]] + count[draw[d]]; r++) {
            long *t = tally + (size_t)reg[r].category * 7;
            t[0]++;
            for (int m = 0; m < EVAL_METHODS; m++)
                t[1 + m] += reg[r].hit1 >> m & 1, t[4 + m] += reg[r].hit5 >> m & 1;
        }
    for (int i = 0; i < REPORT_METRICS; i++) {
        int m = i / 4, st = i / 2 % 2, top5 = i % 2;
        double sum = 0;
        int nc = 0;
        for (int k = 0; k < K; k++) {
            const long *t = tally + (size_t)k * 7;
            if (!t[0] || (thing[k] ? 0 : 1) != st) continue;
            sum += (double)t[top5 ? 4 + m : 1 + m] / (double)t[0], nc++;
        }
        out[i] = nc ? sum / nc : NAN;
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The 95 % interval of after - before for every metric, resampling the validation images with
 * replacement (paired: the same draw for both; BOOT_DRAWS draws, seeded, so the table is the
 * same every run). 0 with lo/hi filled; -1 when the two results do not hold the same images'
 * regions (then no interval is shown). */
static int boot_interval(const Entry *x, const Entry *y, double *lo, double *hi) {
    const int *thing = x->res.isthing;
    int K = x->res.ncls;
    if (!x->res.reg || !y->res.reg || x->res.nreg != y->res.nreg || !thing || K != y->res.ncls) return -1;
    for (long r = 0; r < x->res.nreg; r++)
        if (x->res.reg[r].image_id != y->res.reg[r].image_id || x->res.reg[r].category != y->res.reg[r].category)
            return -1;
    for (long r = 0; r < x->res.nreg; r++)
        if (x->res.reg[r].category >= K) return -1;
    long n = 0; /* images: runs of equal image id */
    for (long r = 0; r < x->res.nreg; r++) n += r == 0 || x->res.reg[r].image_id != x->res.reg[r - 1].image_id;
    long *first = malloc((size_t)n * sizeof(long)), *count = calloc((size_t)n, sizeof(long));
    int *draw = malloc((size_t)n * sizeof(int));
    long *tally = malloc((size_t)K * 7 * sizeof(long));
    double *diff = malloc((size_t)BOOT_DRAWS * REPORT_METRICS * sizeof(double));
    if (!first || !count || !draw || !tally || !diff) {
        free(first), free(count), free(draw), free(tally), free(diff);
        return -1;
    }
    for (long r = 0, i = -1; r < x->res.nreg; r++) {
        if (r == 0 || x->res.reg[r].image_id != x->res.reg[r - 1].image_id) first[++i] = r;
        count[i]++;
    }
    uint64_t s = 0x5EED0F1A7E5ULL;
    double a[REPORT_METRICS], b[REPORT_METRICS];
    for (int d = 0; d < BOOT_DRAWS; d++) {
        for (long i = 0; i < n; i++) draw[i] = (int)rng_below(&s, (uint32_t)n);
        boot_macc(x->res.reg, first, count, draw, (int)n, K, thing, tally, a);
        boot_macc(y->res.reg, first, count, draw, (int)n, K, thing, tally, b);
        for (int i = 0; i < REPORT_METRICS; i++) diff[(size_t)i * BOOT_DRAWS + d] = b[i] - a[i];
    }
    for (int i = 0; i < REPORT_METRICS; i++) {
        double *v = diff + (size_t)i * BOOT_DRAWS;
        int k = 0; /* a class absent from a draw gives NaN: keep the finite ones */
        for (int d = 0; d < BOOT_DRAWS; d++)
            if (!isnan(v[d])) v[k++] = v[d];
        qsort(v, (size_t)k, sizeof *v, cmp_double);
        lo[i] = k ? v[(int)(0.025 * (k - 1) + 0.5)] : NAN;
        hi[i] = k ? v[(int)(0.975 * (k - 1) + 0.5)] : NAN;
    }
    free(first), free(count), free(draw), free(tally), free(diff);
    return 0;
}

/* The before/after table of two labels on each benchmark where both are ok: one row per method
 * and kind, top-1 and top-5 of each and the change, in points. */
static int before_after(Buf *b, const Manifest *mf, const char **benches, int nb,
                        const char *before, const char *after) {
    for (int j = 0; j < nb; j++) {
        const Entry *x = find(mf, before, benches[j]), *y = find(mf, after, benches[j]);
        if (!x || !y || !x->ok || !y->ok) continue;
        double lo[REPORT_METRICS], hi[REPORT_METRICS];
        int ci = boot_interval(x, y, lo, hi) == 0;
        bprintf(b, "\n### Before/after on ");
        bcell(b, benches[j]);
        bprintf(b, ": ");
        bcell(b, before);
        bprintf(b, " -> ");
        bcell(b, after);
        bprintf(b, " (mAcc %%, change in points%s)\n\n| method | kind | top-1 ",
                ci ? " [95 % interval over validation images, 1000 paired resamples]" : "");
        bcell(b, before);
        bprintf(b, " | top-1 ");
        bcell(b, after);
        bprintf(b, " | change | top-5 ");
        bcell(b, before);
        bprintf(b, " | top-5 ");
        bcell(b, after);
        bprintf(b, " | change |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
        for (int i = 0; i < REPORT_METRICS; i += 2) {
            bprintf(b, "| %s | %s |", eval_method_names[i / 4], kinds[i / 2 % 2]);
            for (int t = 0; t < 2; t++) {
                int k = i + t;
                if (x->res.has_value[k]) bprintf(b, " %.2f |", 100.0 * x->res.value[k]);
                else bprintf(b, " - |");
                if (y->res.has_value[k]) bprintf(b, " %.2f |", 100.0 * y->res.value[k]);
                else bprintf(b, " - |");
                if (x->res.has_value[k] && y->res.has_value[k] && ci && !isnan(lo[k]))
                    bprintf(b, " %+.2f [%+.1f, %+.1f] |", 100.0 * (y->res.value[k] - x->res.value[k]),
                            100.0 * lo[k], 100.0 * hi[k]);
                else if (x->res.has_value[k] && y->res.has_value[k])
                    bprintf(b, " %+.2f |", 100.0 * (y->res.value[k] - x->res.value[k]));
                else bprintf(b, " - |");
            }
            bprintf(b, "\n");
        }
        /* the zero-shot segmentation, where both results have it */
        if (x->res.has_seg[0] && y->res.has_seg[0]) {
            bprintf(b, "\nZero-shot segmentation, mIoU %% (per-pixel argmax of the dense map):\n\n"
                       "| mIoU | ");
            bcell(b, before);
            bprintf(b, " | ");
            bcell(b, after);
            bprintf(b, " | change |\n|---|---:|---:|---:|\n");
            for (int i = 0; i < 3; i++) {
                bprintf(b, "| %s |", seg_names[i]);
                if (x->res.has_seg[i] && y->res.has_seg[i])
                    bprintf(b, " %.2f | %.2f | %+.2f |\n", 100.0 * x->res.seg[i], 100.0 * y->res.seg[i],
                            100.0 * (y->res.seg[i] - x->res.seg[i]));
                else bprintf(b, " - | - | - |\n");
            }
        }
    }
    CS_CHECK(!b->oom, "out of memory writing the table");
    return 0;
}

#define GS(g, s) yajl_gen_string(g, (const unsigned char *)(s), strlen(s))

static int json(const char *path, const Manifest *mf, const char **benches, int nb,
                const char **labels, int nl) {
    yajl_gen g = yajl_gen_alloc(NULL);
    CS_CHECK(g, "out of memory");
    yajl_gen_config(g, yajl_gen_beautify, 1);
    yajl_gen_map_open(g);
    GS(g, "benchmarks");
    yajl_gen_array_open(g);
    for (int j = 0; j < nb; j++) GS(g, benches[j]);
    yajl_gen_array_close(g);
    GS(g, "models");
    yajl_gen_array_open(g);
    for (int l = 0; l < nl; l++) {
        const Entry *e = NULL;
        for (int i = 0; i < mf->n && !e; i++)
            if (!strcmp(mf->e[i].label, labels[l])) e = &mf->e[i];
        yajl_gen_map_open(g);
        GS(g, "label"), GS(g, e->label);
        GS(g, "model"), GS(g, e->model);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    GS(g, "results");
    yajl_gen_array_open(g);
    for (int i = 0; i < mf->n; i++) {
        const Entry *e = &mf->e[i];
        yajl_gen_map_open(g);
        GS(g, "label"), GS(g, e->label);
        GS(g, "model"), GS(g, e->model);
        GS(g, "benchmark"), GS(g, e->bench);
        GS(g, "result"), GS(g, e->result);
        GS(g, "status"), GS(g, e->status);
        GS(g, "model_digest");
        if (e->res.digest[0]) GS(g, e->res.digest);
        else yajl_gen_null(g);
        GS(g, "images");
        if (e->ok) yajl_gen_integer(g, e->res.images);
        else yajl_gen_null(g);
        GS(g, "segments");
        if (e->ok) yajl_gen_integer(g, e->res.segments);
        else yajl_gen_null(g);
        GS(g, "metrics");
        if (e->ok) {
            yajl_gen_map_open(g);
            for (int k = 0; k < REPORT_METRICS; k++) {
                char key[64];
                report_metric_key(key, sizeof key, k);
                GS(g, key);
                if (e->res.has_value[k]) yajl_gen_number(g, e->res.raw[k], strlen(e->res.raw[k]));
                else yajl_gen_null(g);
            }
            yajl_gen_map_close(g);
        } else {
            yajl_gen_null(g);
        }
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    const unsigned char *buf;
    size_t len;
    int rc = -1;
    char *text = NULL;
    if (yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok)
        cs_error_set(__FILE__, __LINE__, "cannot generate the JSON for %s", path);
    else if (!(text = malloc(len + 2)))
        cs_error_set(__FILE__, __LINE__, "out of memory writing %s", path);
    else {
        memcpy(text, buf, len); /* ending in a newline */
        text[len] = '\n', text[len + 1] = '\0';
        if (len && buf[len - 1] == '\n') text[len] = '\0';
        rc = file_write_text(path, text);
    }
    free(text);
    yajl_gen_free(g);
    return rc;
}

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "compare_results", &argc, &argv);
    const char *manifest = NULL, *out = NULL, *before = NULL, *after = NULL;
    CliOpt opts[] = {
        {"before", CLI_STRING, &before, "with --after: a before/after table of these two labels "
                                        "(e.g. teacher and student) on each benchmark"},
        {"after", CLI_STRING, &after, "the label compared against --before, or several "
                                      "separated by commas (a table each)"},
        {"manifest", CLI_STRING, &manifest,
         "the expected results, one per line: label<TAB>model<TAB>benchmark<TAB>result.json "
         "(required)"},
        {"out", CLI_STRING, &out, "write the table to PREFIX.md and PREFIX.json (required)"},
    };
    if (stage_options(
            &st, argc, argv,
            "Gather evaluate's results JSON files into one comparison table: for each benchmark "
            "a markdown table of every model's mAcc (rois, crops, maskpool; thing, stuff; top-1, "
            "top-5; in %), written to PREFIX.md and printed, and the same numbers with each "
            "result's status and model digest in PREFIX.json.\n\n"
            "The manifest is a text file with one line per expected result, four fields "
            "separated by tabs:\n"
            "    label<TAB>model<TAB>benchmark<TAB>result_json\n"
            "label names the model's row in the tables (each label stands for one model path), "
            "model is the checkpoint's path (recorded, not read), benchmark the dataset name the "
            "result must report, result_json the path evaluate --out wrote. Relative paths are "
            "taken from the current directory. Empty lines and lines starting with '#' are "
            "ignored; a line of another shape, an empty field or a label and benchmark listed "
            "twice is an error.\n\n"
            "A result is 'ok', 'missing' (no such file) or 'invalid: <reason>' (unreadable, "
            "malformed JSON, no metrics, or another dataset than the manifest's benchmark). "
            "Both outputs are written in every case; the exit status is 1 when any result is "
            "not ok, 0 otherwise.",
            opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!manifest || !out) {
        cs_error_set(__FILE__, __LINE__, "--manifest and --out are required");
        stage_die(&st, "see --help");
    }
    int nbad = 0, total = 0;
    if (st.rank == 0) {
        Manifest mf = {0};
        stage_check(&st, manifest_read(&mf, manifest),
                    "one line per result: label<TAB>model<TAB>benchmark<TAB>result_json");
        for (int i = 0; i < mf.n; i++) {
            stage_check(&st, load_result(&mf.e[i]), NULL);
            nbad += !mf.e[i].ok;
        }
        total = mf.n;
        const char **benches, **labels;
        int nb, nl;
        stage_check(&st, distinct(&mf, 1, &benches, &nb), NULL);
        stage_check(&st, distinct(&mf, 0, &labels, &nl), NULL);
        Buf md = {0};
        stage_check(&st, markdown(&md, &mf, benches, nb, labels, nl, nbad), NULL);
        if (before && after) { /* one table per --after label, a comma-separated list */
            char list[1024];
            snprintf(list, sizeof list, "%s", after);
            for (char *save = NULL, *lab = strtok_r(list, ",", &save); lab;
                 lab = strtok_r(NULL, ",", &save))
                stage_check(&st, before_after(&md, &mf, benches, nb, before, lab), NULL);
        }
        size_t plen = strlen(out) + 6;
        char *md_path = malloc(plen), *json_path = malloc(plen);
        if (!md_path || !json_path) {
            cs_error_set(__FILE__, __LINE__, "out of memory");
            stage_die(&st, NULL);
        }
        snprintf(md_path, plen, "%s.md", out);
        snprintf(json_path, plen, "%s.json", out);
        stage_check(&st, file_write_text(md_path, md.s), NULL);
        stage_check(&st, json(json_path, &mf, benches, nb, labels, nl), NULL);
        printf("%s\n", md.s);
        if (nbad) {
            fflush(stdout);
            fprintf(stderr, "compare_results: %d of %d results missing or invalid\n", nbad,
                    total);
        } else {
            printf("compare_results: %d results ok; wrote %s and %s\n", total, md_path,
                   json_path);
        }
        free(md_path);
        free(json_path);
        free(md.s);
        free(benches);
        free(labels);
        manifest_free(&mf);
    }
    stage_end(&st);
    return nbad ? 1 : 0;
}
