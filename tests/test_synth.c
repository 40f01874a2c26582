/* test_synth.c: the synthetic COCO world (pipeline/world/synth.c, stages/make_dataset.c).
 *
 * A small dataset is written by the library in one process, by the library as two simulated
 * ranks merged the way the stage gathers them, by the stage under `mpirun -np 2`, and by the
 * library again: all four folders must hold the same files byte for byte. Then one of them is
 * checked against itself and against fresh renders: every panoptic segment's area and box
 * equal what its PNG says, every PNG id is listed, every pixel is labelled; every instance's
 * RLE decodes to the visible mask of that thing; the JPEGs decode to the rendered pixels
 * (4:2:0); the category lists are complete and consistent; an image depends on (seed, split,
 * index) alone; and bad configs and paths fail with messages naming them. */
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <png.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include <jpeglib.h>

#include "base/check.h"
#include "world/synth.h"
#include "testutil.h"

static const SynthConfig CFG = {.train = 10, .val = 6, .seed = 7, .min_size = 96, .max_size = 160};

/* ---- files ---------------------------------------------------------------------------------- */

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = 0, *len = (size_t)n;
    return buf;
}

typedef struct {
    int n;
    char name[512][320]; /* "sub/file", sorted */
} FileList;

static int cmp_names(const void *a, const void *b) { return strcmp(a, b); }

static void list_files(const char *dir, FileList *fl) {
    static const char *subs[] = {".", "images", "panoptic_val", "panoptic_train"};
    fl->n = 0;
    for (int s = 0; s < 4; s++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, subs[s]);
        DIR *d = opendir(path);
        if (!d) continue;
        for (struct dirent *e; (e = readdir(d));) {
            char full[2048];
            struct stat st;
            snprintf(full, sizeof full, "%s/%s", path, e->d_name);
            if (stat(full, &st) != 0 || !S_ISREG(st.st_mode) || fl->n == 512) continue;
            snprintf(fl->name[fl->n++], sizeof fl->name[0], "%s/%s", subs[s], e->d_name);
        }
        closedir(d);
    }
    qsort(fl->name, (size_t)fl->n, sizeof fl->name[0], cmp_names);
}

/* Same file names and bytes in both folders. */
static void check_same_dirs(const char *what, const char *a, const char *b) {
    FileList fa, fb;
    list_files(a, &fa);
    list_files(b, &fb);
    char detail[512];
    snprintf(detail, sizeof detail, "%d files in %s, %d in %s", fa.n, a, fb.n, b);
    /* 4 JSON files, a JPEG per image, a PNG per image */
    int ok = fa.n == fb.n && fa.n == 4 + 2 * CFG.train + 2 * CFG.val;
    for (int i = 0; ok && i < fa.n; i++) {
        if (strcmp(fa.name[i], fb.name[i])) {
            snprintf(detail, sizeof detail, "file %s in %s, %s in %s", fa.name[i], a, fb.name[i], b);
            ok = 0;
            break;
        }
        char pa[1024], pb[1024];
        snprintf(pa, sizeof pa, "%s/%s", a, fa.name[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, fb.name[i]);
        size_t la = 0, lb = 0;
        char *da = read_all(pa, &la), *db = read_all(pb, &lb);
        if (!da || !db || la != lb || memcmp(da, db, la)) {
            snprintf(detail, sizeof detail, "%s differs (%zu vs %zu bytes)", fa.name[i], la, lb);
            ok = 0;
        }
        free(da);
        free(db);
    }
    tu_check(ok, what, detail);
}

static int lib_dataset(const char *dir, int simulated_ranks) {
    SynthRecords all = {0};
    CS_TRY(synth_prepare_dirs(dir));
    for (int r = 0; r < simulated_ranks; r++) {
        /* as the stage gathers: the records of rank 0, then rank 1, ... and their RLE strings */
        SynthRecords mine = {0};
        int rc = synth_generate(&CFG, dir, r, simulated_ranks, &mine, NULL);
        if (rc == 0)
            for (int i = 0; i < mine.n && rc == 0; i++) {
                size_t off = 0, len = 0;
                for (int j = 0; j < i; j++)
                    for (int q = 0; q < mine.rec[j].nseg; q++) off += (size_t)mine.rec[j].seg[q].rle_len;
                for (int q = 0; q < mine.rec[i].nseg; q++) len += (size_t)mine.rec[i].seg[q].rle_len;
                rc = synth_records_push(&all, &mine.rec[i], mine.rle + off, len);
            }
        synth_records_free(&mine);
        if (rc) {
            synth_records_free(&all);
            return -1;
        }
    }
    int rc = synth_write_annotations(&CFG, dir, &all);
    synth_records_free(&all);
    return rc;
}

/* ---- JSON ----------------------------------------------------------------------------------- */

static yajl_val load_json(const char *path) {
    size_t len;
    char *text = read_all(path, &len), err[256] = "";
    yajl_val v = text ? yajl_tree_parse(text, err, sizeof err) : NULL;
    char detail[600];
    snprintf(detail, sizeof detail, "%s: %s", path, text ? err : "cannot read");
    tu_check(v != NULL, "parse JSON", detail);
    free(text);
    return v;
}

static yajl_val jget(yajl_val obj, const char *key) {
    const char *path[] = {key, NULL};
    return obj ? yajl_tree_get(obj, path, yajl_t_any) : NULL;
}
/* The string obj[key] equals s. */
static int jis(yajl_val obj, const char *key, const char *s) {
    const char *v = YAJL_GET_STRING(jget(obj, key));
    return v && !strcmp(v, s);
}
static long long jint(yajl_val obj, const char *key) {
    yajl_val v = jget(obj, key);
    return YAJL_IS_INTEGER(v) ? YAJL_GET_INTEGER(v) : -999999;
}
static size_t jlen(yajl_val arr) { return YAJL_IS_ARRAY(arr) ? arr->u.array.len : 0; }
static yajl_val jat(yajl_val arr, size_t i) { return arr->u.array.values[i]; }

/* ---- decoders ------------------------------------------------------------------------------- */

/* pycocotools rleFrString + rleDecode: mask (H, W) row-major. Returns 0 if the counts cover
 * exactly H * W pixels. */
static int rle_decode(const char *s, int W, int H, unsigned char *mask) {
    static long long cnts[65536];
    size_t m = 0;
    for (size_t p = 0; s[p];) {
        long long x = 0;
        int k = 0, more = 1;
        while (more) {
            long long c = s[p] - 48;
            x |= (c & 0x1f) << (5 * k);
            more = (int)(c & 0x20);
            p++, k++;
            if (!more && (c & 0x10)) x |= -1LL * (1LL << (5 * k));
        }
        if (m > 2) x += cnts[m - 2];
        if (m == sizeof cnts / sizeof cnts[0]) return -1;
        cnts[m++] = x;
    }
    long long pos = 0, total = (long long)W * H;
    for (size_t i = 0; i < m; i++) {
        if (cnts[i] < 0 || pos + cnts[i] > total) return -1;
        for (long long j = 0; j < cnts[i]; j++, pos++) /* column-major */
            mask[(size_t)(pos % H) * W + (size_t)(pos / H)] = (unsigned char)(i & 1);
    }
    return pos == total ? 0 : -1;
}

static unsigned char *read_png_rgb(const char *path, int *W, int *H) {
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&pi, path)) return NULL;
    pi.format = PNG_FORMAT_RGB;
    unsigned char *buf = malloc(PNG_IMAGE_SIZE(pi));
    if (!buf || !png_image_finish_read(&pi, NULL, buf, 0, NULL)) {
        free(buf);
        png_image_free(&pi);
        return NULL;
    }
    *W = (int)pi.width, *H = (int)pi.height;
    return buf;
}

/* Decoded RGB; *h_samp, *v_samp of the luma component. libjpeg's default error handler exits
 * the test, which is a failure too. */
static unsigned char *read_jpeg(const char *path, int *W, int *H, int *h_samp, int *v_samp) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    struct jpeg_decompress_struct ci;
    struct jpeg_error_mgr err;
    ci.err = jpeg_std_error(&err);
    jpeg_create_decompress(&ci);
    jpeg_stdio_src(&ci, f);
    jpeg_read_header(&ci, TRUE);
    *h_samp = ci.comp_info[0].h_samp_factor, *v_samp = ci.comp_info[0].v_samp_factor;
    ci.out_color_space = JCS_RGB;
    jpeg_start_decompress(&ci);
    *W = (int)ci.output_width, *H = (int)ci.output_height;
    unsigned char *buf = malloc((size_t)*W * *H * 3);
    while (buf && ci.output_scanline < ci.output_height) {
        JSAMPROW row = buf + (size_t)ci.output_scanline * *W * 3;
        jpeg_read_scanlines(&ci, &row, 1);
    }
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    fclose(f);
    return buf;
}

/* ---- checks --------------------------------------------------------------------------------- */

static void check_categories(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/categories.json", dir);
    yajl_val cats = load_json(path);
    snprintf(path, sizeof path, "%s/panoptic_val.json", dir);
    yajl_val pan = load_json(path);
    snprintf(path, sizeof path, "%s/instances_train.json", dir);
    yajl_val ins = load_json(path);
    if (!cats || !pan || !ins) goto done;
    yajl_val pc = jget(pan, "categories"), ic = jget(ins, "categories");
    int things = 0, stuff = 0, ok = YAJL_IS_ARRAY(cats) && (int)jlen(cats) == synth_num_categories;
    char detail[256] = "";
    for (size_t i = 0; ok && i < jlen(cats); i++) {
        yajl_val c = jat(cats, i), p = i < jlen(pc) ? jat(pc, i) : NULL;
        const char *name = YAJL_GET_STRING(jget(c, "name"));
        int id = (int)jint(c, "id"), isthing = (int)jint(c, "isthing");
        const SynthCategory *sc = synth_category(id);
        yajl_val col = jget(c, "color");
        ok = name && *name && sc && !strcmp(sc->name, name) && isthing == sc->isthing &&
             (isthing ? id >= 1 && id < 100 : id >= 100) && jlen(col) == 3 &&
             YAJL_GET_STRING(jget(c, "supercategory")) && jint(p, "id") == id &&
             jis(p, "name", name) &&
             jint(p, "isthing") == isthing;
        for (size_t j = 0; ok && j < i; j++)
            ok = jint(jat(cats, j), "id") != id && !jis(jat(cats, j), "name", name);
        if (!ok) snprintf(detail, sizeof detail, "category %zu (id %d) is bad or repeated", i, id);
        if (isthing) {
            yajl_val t = things < (int)jlen(ic) ? jat(ic, (size_t)things) : NULL;
            ok = ok && t && jint(t, "id") == id && jis(t, "name", name);
            if (!ok && !detail[0]) snprintf(detail, sizeof detail, "instances category %d", things);
            things++;
        } else {
            stuff++;
        }
    }
    tu_check(ok && jlen(pc) == jlen(cats) && (int)jlen(ic) == things, "categories consistent",
             detail);
    snprintf(detail, sizeof detail, "%d things, %d stuff", things, stuff);
    tu_check(things >= 8 && stuff >= 5, "categories: >= 8 things and >= 5 stuff", detail);
done:
    yajl_tree_free(cats);
    yajl_tree_free(pan);
    yajl_tree_free(ins);
}

/* Every segment's area and box from its PNG; every PNG id listed; every pixel labelled; the
 * images list matches the JPEG files. */
static void check_panoptic(const char *dir, int split) {
    const char *sp = split == SYNTH_VAL ? "val" : "train";
    int count = split == SYNTH_VAL ? CFG.val : CFG.train;
    char path[1024], detail[512] = "";
    snprintf(path, sizeof path, "%s/panoptic_%s.json", dir, sp);
    yajl_val pan = load_json(path);
    if (!pan) return;
    yajl_val images = jget(pan, "images"), anns = jget(pan, "annotations");
    int bad = 0, nseg = 0;
    tu_check((int)jlen(images) == count && (int)jlen(anns) == count,
             split == SYNTH_VAL ? "panoptic val: one image and one annotation per image"
                                : "panoptic train: one image and one annotation per image",
             NULL);
    for (size_t a = 0; a < jlen(anns) && a < jlen(images); a++) {
        yajl_val ann = jat(anns, a), img = jat(images, a);
        long long id = jint(ann, "image_id");
        char want[64], jpg_name[64];
        snprintf(want, sizeof want, "%012lld.png", id);
        snprintf(jpg_name, sizeof jpg_name, "%012lld.jpg", id);
        const char *png = YAJL_GET_STRING(jget(ann, "file_name"));
        if (id != jint(img, "id") || id != synth_image_id(split, (int)a) || !png ||
            strcmp(png, want) || !jis(img, "file_name", jpg_name)) {
            snprintf(detail, sizeof detail, "annotation %zu: image_id %lld, file_name %s", a, id,
                     png ? png : "(none)");
            bad++;
            continue;
        }
        int W = 0, H = 0, jw = 0, jh = 0, hs = 0, vs = 0;
        snprintf(path, sizeof path, "%s/panoptic_%s/%s", dir, sp, png);
        unsigned char *rgb = read_png_rgb(path, &W, &H);
        snprintf(path, sizeof path, "%s/images/%s", dir, jpg_name);
        unsigned char *jpg = read_jpeg(path, &jw, &jh, &hs, &vs);
        if (!rgb || !jpg || W != jint(img, "width") || H != jint(img, "height") || jw != W ||
            jh != H) {
            snprintf(detail, sizeof detail, "image %lld: PNG %dx%d, JPEG %dx%d, JSON %lldx%lld",
                     id, W, H, jw, jh, jint(img, "width"), jint(img, "height"));
            bad++;
            free(rgb);
            free(jpg);
            continue;
        }
        yajl_val segs = jget(ann, "segments_info");
        long long covered = 0;
        for (size_t q = 0; q < jlen(segs); q++) {
            yajl_val sg = jat(segs, q), box = jget(sg, "bbox");
            long long sid = jint(sg, "id"), area = 0;
            int x0 = W, y0 = H, x1 = -1, y1 = -1;
            for (int i = 0; i < W * H; i++) {
                long long v = rgb[3 * i] + 256LL * rgb[3 * i + 1] + 65536LL * rgb[3 * i + 2];
                if (v != sid) continue;
                area++;
                int x = i % W, y = i / W;
                x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1;
                y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1;
            }
            const SynthCategory *c = synth_category((int)jint(sg, "category_id"));
            int ok = sid > 0 && area > 0 && area == jint(sg, "area") && jlen(box) == 4 &&
                     YAJL_GET_INTEGER(jat(box, 0)) == x0 && YAJL_GET_INTEGER(jat(box, 1)) == y0 &&
                     YAJL_GET_INTEGER(jat(box, 2)) == x1 - x0 + 1 &&
                     YAJL_GET_INTEGER(jat(box, 3)) == y1 - y0 + 1 && c &&
                     jint(sg, "iscrowd") == 0 && (!c->isthing || area >= SYNTH_MIN_THING_AREA);
            for (size_t o = 0; o < q; o++) ok = ok && jint(jat(segs, o), "id") != sid;
            if (!ok) {
                snprintf(detail, sizeof detail, "image %lld segment %lld: PNG area %lld box "
                         "[%d %d %d %d], JSON area %lld", id, sid, area, x0, y0, x1 - x0 + 1,
                         y1 - y0 + 1, jint(sg, "area"));
                bad++;
            }
            covered += area;
            nseg++;
        }
        if (covered != (long long)W * H) { /* an id in the PNG that is not listed */
            snprintf(detail, sizeof detail, "image %lld: listed segments cover %lld of %d "
                     "pixels", id, covered, W * H);
            bad++;
        }
        free(rgb);
        free(jpg);
    }
    char what[64];
    snprintf(what, sizeof what, "panoptic segments match their PNGs (%d segments)", nseg);
    tu_check(bad == 0 && nseg > count, what, detail);
    yajl_tree_free(pan);
}

/* Each instance's RLE is the visible mask of that thing in a fresh render; boxes and areas
 * follow from it; ids count up from 1. */
static void check_instances(const char *dir) {
    char path[1024], detail[512] = "";
    snprintf(path, sizeof path, "%s/instances_train.json", dir);
    yajl_val ins = load_json(path);
    if (!ins) return;
    yajl_val images = jget(ins, "images"), anns = jget(ins, "annotations");
    tu_check((int)jlen(images) == CFG.train, "instances: one entry per train image", NULL);
    size_t a = 0;
    int bad = 0;
    for (int k = 0; k < CFG.train && k < (int)jlen(images); k++) {
        SynthImage im;
        if (synth_render(&im, &CFG, SYNTH_TRAIN, k) != 0) {
            tu_check(0, "render train image", cs_error());
            break;
        }
        yajl_val img = jat(images, (size_t)k);
        char name[64];
        snprintf(name, sizeof name, "%012d.jpg", im.rec.image_id);
        if (jint(img, "id") != im.rec.image_id || jint(img, "width") != im.width ||
            jint(img, "height") != im.height ||
            !jis(img, "file_name", name)) {
            snprintf(detail, sizeof detail, "images[%d] is not train image %d", k, k);
            bad++;
        }
        unsigned char *mask = malloc((size_t)im.width * im.height);
        for (int q = 0; q < im.rec.nseg; q++) {
            const SynthSegment *sg = &im.rec.seg[q];
            if (!synth_category(sg->category_id)->isthing) continue;
            yajl_val an = a < jlen(anns) ? jat(anns, a) : NULL;
            a++;
            yajl_val seg = an ? jget(an, "segmentation") : NULL, size = jget(seg, "size"),
                     box = jget(an, "bbox");
            const char *counts = YAJL_GET_STRING(jget(seg, "counts"));
            int ok = an && counts && jint(an, "id") == (long long)a &&
                     jint(an, "image_id") == im.rec.image_id &&
                     jint(an, "category_id") == sg->category_id && jint(an, "iscrowd") == 0 &&
                     jlen(size) == 2 && YAJL_GET_INTEGER(jat(size, 0)) == im.height &&
                     YAJL_GET_INTEGER(jat(size, 1)) == im.width &&
                     rle_decode(counts, im.width, im.height, mask) == 0;
            long long area = 0;
            int x0 = im.width, y0 = im.height, x1 = -1, y1 = -1;
            for (int i = 0; ok && i < im.width * im.height; i++) {
                if (mask[i] != (im.ids[i] == sg->id)) ok = 0;
                if (!mask[i]) continue;
                area++;
                int x = i % im.width, y = i / im.width;
                x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1;
                y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1;
            }
            ok = ok && area == jint(an, "area") && area >= SYNTH_MIN_THING_AREA &&
                 jlen(box) == 4 && YAJL_GET_INTEGER(jat(box, 0)) == x0 &&
                 YAJL_GET_INTEGER(jat(box, 1)) == y0 &&
                 YAJL_GET_INTEGER(jat(box, 2)) == x1 - x0 + 1 &&
                 YAJL_GET_INTEGER(jat(box, 3)) == y1 - y0 + 1;
            if (!ok) {
                snprintf(detail, sizeof detail, "annotation %zu (train image %d, thing segment "
                         "%d): RLE mask, area or box differs from the render", a, k, q);
                bad++;
            }
        }
        free(mask);
        synth_image_free(&im);
    }
    char what[64];
    snprintf(what, sizeof what, "instance RLEs are the visible masks (%zu things)", a);
    tu_check(bad == 0 && a == jlen(anns) && a >= (size_t)CFG.train, what, detail);
    yajl_tree_free(ins);
}

/* The JPEG of a val image decodes close to the rendered pixels, with 4:2:0 chroma. */
static void check_jpeg(const char *dir) {
    SynthImage im;
    if (synth_render(&im, &CFG, SYNTH_VAL, 1) != 0) {
        tu_check(0, "render val image 1", cs_error());
        return;
    }
    char path[1024], detail[256];
    snprintf(path, sizeof path, "%s/images/%012d.jpg", dir, im.rec.image_id);
    int W = 0, H = 0, hs = 0, vs = 0;
    unsigned char *jpg = read_jpeg(path, &W, &H, &hs, &vs);
    double sum = 0;
    if (jpg && W == im.width && H == im.height)
        for (size_t i = 0; i < (size_t)W * H * 3; i++) sum += abs((int)jpg[i] - (int)im.rgb[i]);
    double mad = W ? sum / ((double)W * H * 3) : 1e9;
    snprintf(detail, sizeof detail, "%dx%d (render %dx%d), luma sampling %dx%d, mean abs diff "
             "%.2f", W, H, im.width, im.height, hs, vs, mad);
    tu_check(jpg && W == im.width && H == im.height && hs == 2 && vs == 2 && mad < 8.0,
             "JPEG decodes to the render (quality 90, 4:2:0)", detail);
    if (getenv("TEST_VERBOSE")) printf("  jpeg: %s\n", detail);
    free(jpg);
    synth_image_free(&im);
}

/* An image depends on (seed, split, index) alone; the seed matters; records are in range. */
static void check_determinism_and_ranges(void) {
    SynthConfig more = CFG, other = CFG;
    more.train = 5000, more.val = 0;
    other.seed = CFG.seed + 1;
    SynthImage a, b, c;
    int ok = synth_render(&a, &CFG, SYNTH_VAL, 2) == 0 && synth_render(&b, &more, SYNTH_VAL, 2) == 0 &&
             synth_render(&c, &other, SYNTH_VAL, 2) == 0;
    tu_check(ok, "render", ok ? NULL : cs_error());
    if (!ok) return;
    tu_check(a.width == b.width && a.height == b.height &&
                 !memcmp(a.rgb, b.rgb, (size_t)a.width * a.height * 3) &&
                 !memcmp(&a.rec, &b.rec, sizeof a.rec),
             "val image independent of the other counts", NULL);
    tu_check(a.width != c.width || a.height != c.height ||
                 memcmp(a.rgb, c.rgb, (size_t)a.width * a.height * 3),
             "another seed, another image", NULL);
    synth_image_free(&a);
    synth_image_free(&b);
    synth_image_free(&c);

    int bad = 0, things_total = 0, hist[SYNTH_MAX_THINGS + 1] = {0};
    char detail[256] = "";
    for (int k = 0; k < 40; k++) {
        SynthImage im;
        if (synth_render(&im, &CFG, SYNTH_TRAIN, k) != 0) {
            bad++;
            snprintf(detail, sizeof detail, "%s", cs_error());
            continue;
        }
        int things = 0, stuff = 0;
        long long area = 0;
        for (int q = 0; q < im.rec.nseg; q++) {
            const SynthCategory *cat = synth_category(im.rec.seg[q].category_id);
            if (!cat) bad++;
            else cat->isthing ? things++ : stuff++;
            area += im.rec.seg[q].area;
        }
        if (things < 1 || things > SYNTH_MAX_THINGS || stuff < 1 || stuff > SYNTH_MAX_STUFF ||
            area != (long long)im.width * im.height || im.width < CFG.min_size ||
            im.width > CFG.max_size || im.height < CFG.min_size || im.height > CFG.max_size) {
            snprintf(detail, sizeof detail, "train image %d: %d things, %d stuff, %dx%d, areas "
                     "sum to %lld", k, things, stuff, im.width, im.height, area);
            bad++;
        }
        things_total += things;
        hist[things < 0 ? 0 : things > SYNTH_MAX_THINGS ? SYNTH_MAX_THINGS : things]++;
        synth_image_free(&im);
    }
    tu_check(bad == 0, "40 images: 1-6 things, 1-3 stuff, sizes in range, all pixels labelled",
             detail);
    if (getenv("TEST_VERBOSE"))
        printf("  things per image: mean %.2f, 1..6: %d %d %d %d %d %d\n", things_total / 40.0,
               hist[1], hist[2], hist[3], hist[4], hist[5], hist[6]);
}

static void check_error(const char *name, int rc, const char *needle) {
    char detail[2300];
    snprintf(detail, sizeof detail, "rc %d, message \"%s\" should contain \"%s\"", rc,
             rc ? cs_error() : "", needle);
    tu_check(rc != 0 && strstr(cs_error(), needle), name, detail);
}

static void check_errors(const char *root) {
    SynthConfig c = CFG;
    c.min_size = 200, c.max_size = 100;
    check_error("min-size > max-size", synth_config_check(&c), "min-size (200)");
    c = CFG, c.train = -1;
    check_error("negative train count", synth_config_check(&c), "train images");
    char file[1024], under[1100];
    snprintf(file, sizeof file, "%s/plainfile", root);
    FILE *f = fopen(file, "w");
    if (f) fclose(f);
    snprintf(under, sizeof under, "%s/sub", file);
    check_error("output under a regular file", synth_prepare_dirs(under), file);
    SynthRecords none = {0};
    check_error("missing records", synth_write_annotations(&CFG, root, &none), "0 image records for 10 train");
    SynthRecords r = {0};
    c = CFG, c.train = 2, c.val = 0;
    SynthImage im;
    int rc = synth_render(&im, &c, SYNTH_TRAIN, 0);
    if (rc == 0) {
        synth_records_push(&r, &im.rec, im.rle, im.rle_len);
        synth_records_push(&r, &im.rec, im.rle, im.rle_len);
        synth_image_free(&im);
    }
    check_error("duplicated record", synth_write_annotations(&c, root, &r), "train image 1");
    synth_records_free(&r);
}

int main(int argc, char **argv) {
    (void)argc;
    char root[] = "/tmp/test_synth.XXXXXX";
    if (!mkdtemp(root)) {
        fprintf(stderr, "cannot create a temporary folder: %s\n", strerror(errno));
        return 1;
    }
    char lib1[256], lib2[256], mpi[256], again[256];
    snprintf(lib1, sizeof lib1, "%s/lib1", root);
    snprintf(lib2, sizeof lib2, "%s/lib2", root);
    snprintf(mpi, sizeof mpi, "%s/mpi2", root);
    snprintf(again, sizeof again, "%s/again", root);

    tu_check(lib_dataset(lib1, 1) == 0, "library, one rank", cs_error());
    tu_check(lib_dataset(lib2, 2) == 0, "library, two simulated ranks", cs_error());
    check_same_dirs("1 rank == 2 simulated ranks", lib1, lib2);

    char self[1024], stage[1100], cmd[4096];
    snprintf(self, sizeof self, "%s", argv[0]);
    snprintf(stage, sizeof stage, "%s/../bin/make_dataset", dirname(self));
    if (access(stage, X_OK) != 0) {
        tu_check(0, "stage binary", "make_dataset not found next to the tests (run make)");
    } else {
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
        snprintf(cmd, sizeof cmd, "mpirun -np 2 --oversubscribe %s --out %s --train %d --val %d "
                 "--seed %d --min-size %d --max-size %d > %s/stage.log 2>&1", stage, mpi,
                 CFG.train, CFG.val, CFG.seed, CFG.min_size, CFG.max_size, root);
        int rc = system(cmd);
        char detail[4200];
        snprintf(detail, sizeof detail, "exit status %d of: %s (log in %s/stage.log)", rc, cmd,
                 root);
        tu_check(rc == 0, "stage under mpirun -np 2", detail);
        check_same_dirs("library == stage on 2 MPI ranks", lib1, mpi);
        snprintf(cmd, sizeof cmd, "%s --help > /dev/null", stage);
        tu_check(system(cmd) == 0, "stage --help exits 0", cmd);
    }

    tu_check(lib_dataset(again, 1) == 0, "library, rerun", cs_error());
    check_same_dirs("rerun gives the same bytes", lib1, again);

    check_categories(lib1);
    check_panoptic(lib1, SYNTH_VAL);
    check_panoptic(lib1, SYNTH_TRAIN);
    check_instances(lib1);
    check_jpeg(lib1);
    check_determinism_and_ranges();
    check_errors(root);

    if (tu_failed == 0) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    } else {
        fprintf(stderr, "outputs kept in %s\n", root);
    }
    return tu_finish("test_synth");
}
