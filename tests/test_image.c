/* test_image.c: decoding, PIL geometry and the CLIPSelf transforms against the fixtures of
 * tests/reference/image_ref.py (image.h5).
 *
 * JPEG decodes equal PIL's (photos, libjpeg-turbo test images, CMYK, YCCK, progressive 4:2:2,
 * odd sizes) and djpeg's reference PPM/PGM byte for byte; every file of tests/data/
 * images/jpeg_bad/, the 12-bit images and a missing file fail with the file name in the message. Crops
 * and bicubic resizes are bit-identical to PIL (differing values are counted and the worst
 * pixel is reported). The full-image and crop transforms match torchvision within 1e-6.
 * Panoptic PNGs (RGB, RGBA, 4-bit palette, gray, 16-bit) give panopticapi's ids; truncated
 * and foreign files fail. */
#include <dirent.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/check.h"
#include "io/image.h"
#include "testutil.h"

static hid_t fx; /* image.h5 */

/* ---- fixture access ---------------------------------------------------------------------- */
/* A string type in memory matching attribute a's: variable length, same character set. */
static hid_t vlen_str_type(hid_t a) {
    hid_t ft = H5Aget_type(a), t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5Tget_cset(ft));
    int ok = H5Tis_variable_str(ft) > 0;
    H5Tclose(ft);
    if (!ok) {
        fprintf(stderr, "fixture string attribute is not variable-length (h5py writes str so)\n");
        exit(1);
    }
    return t;
}

static void attr_str(hid_t obj, const char *name, char *buf, size_t len) {
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) {
        fprintf(stderr, "fixture attribute %s is missing\n", name);
        exit(1);
    }
    hid_t t = vlen_str_type(a);
    char *s = NULL;
    if (H5Aread(a, t, &s) < 0 || !s) {
        fprintf(stderr, "fixture attribute %s is not a string\n", name);
        exit(1);
    }
    snprintf(buf, len, "%s", s);
    H5free_memory(s);
    H5Tclose(t);
    H5Aclose(a);
}

static void attr_read(hid_t obj, const char *name, hid_t type, void *out) {
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, type, out) < 0) {
        fprintf(stderr, "fixture attribute %s is missing\n", name);
        exit(1);
    }
    H5Aclose(a);
}

static int attr_int(hid_t obj, const char *name) {
    int v;
    attr_read(obj, name, H5T_NATIVE_INT, &v);
    return v;
}

/* Read a dataset as type (elem bytes each); dims (up to 3) are returned, missing ones as 1. */
static void *read_data(const char *path, hid_t type, size_t elem, int dims[3], int *rank) {
    hid_t ds = H5Dopen2(fx, path, H5P_DEFAULT);
    if (ds < 0) {
        fprintf(stderr, "fixture dataset %s is missing\n", path);
        exit(1);
    }
    hid_t sp = H5Dget_space(ds);
    hsize_t d[3] = {1, 1, 1};
    int r = H5Sget_simple_extent_ndims(sp);
    if (r < 1 || r > 3) {
        fprintf(stderr, "fixture dataset %s has rank %d\n", path, r);
        exit(1);
    }
    H5Sget_simple_extent_dims(sp, d, NULL);
    size_t n = (size_t)d[0] * d[1] * d[2];
    void *buf = malloc(n * elem);
    if (!buf || H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        fprintf(stderr, "cannot read fixture dataset %s\n", path);
        exit(1);
    }
    for (int i = 0; i < 3; i++) dims[i] = i < r ? (int)d[i] : 1;
    if (rank) *rank = r;
    H5Sclose(sp);
    H5Dclose(ds);
    return buf;
}

/* The names in a group, in name order; *n gets their count. Free each and the array. */
static char **group_names(const char *group, int *n) {
    hid_t g = H5Gopen2(fx, group, H5P_DEFAULT);
    H5G_info_t info;
    if (g < 0 || H5Gget_info(g, &info) < 0) {
        fprintf(stderr, "fixture group %s is missing\n", group);
        exit(1);
    }
    char **names = calloc(info.nlinks + 1, sizeof *names);
    for (hsize_t i = 0; i < info.nlinks; i++) {
        ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, NULL, 0,
                                         H5P_DEFAULT);
        names[i] = malloc((size_t)len + 1);
        H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, names[i], (size_t)len + 1,
                           H5P_DEFAULT);
    }
    H5Gclose(g);
    *n = (int)info.nlinks;
    return names;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* PIL's decode of a source image, as an Image (the input of the geometry tests). */
static Image pil_image(const char *src) {
    char path[512];
    int d[3];
    snprintf(path, sizeof path, "/decode/%s", src);
    Image im = {0};
    im.px = read_data(path, H5T_NATIVE_UCHAR, 1, d, NULL);
    im.h = d[0];
    im.w = d[1];
    im.cap = (size_t)d[0] * d[1] * d[2];
    return im;
}

/* ---- comparisons ------------------------------------------------------------------------- */
/* got (gh, gw, 3) against want (wh, ww, 3): sizes equal and every byte identical. */
static void check_pixels(const char *name, const unsigned char *got, int gw, int gh,
                         const unsigned char *want, int ww, int wh) {
    char detail[512];
    if (gw != ww || gh != wh) {
        snprintf(detail, sizeof detail, "size %d x %d, want %d x %d", gw, gh, ww, wh);
        tu_check(0, name, detail);
        return;
    }
    size_t n = (size_t)gw * gh * 3, bad = 0, worst = 0;
    int worst_d = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got[i] - (int)want[i]);
        if (d) bad++;
        if (d > worst_d) worst_d = d, worst = i;
    }
    snprintf(detail, sizeof detail,
             "%zu of %zu values differ; worst at x %zu y %zu channel %zu: got %d want %d",
             bad, n, worst / 3 % (size_t)gw, worst / 3 / (size_t)gw, worst % 3, got[worst],
             want[worst]);
    tu_check(bad == 0, name, detail);
    if (getenv("TEST_VERBOSE") && bad == 0) printf("  ok %-50s %d x %d identical\n", name, gw, gh);
}

/* A call that must fail with a message containing needle. */
static void check_fails(const char *name, int rc, const char *needle) {
    char detail[2300];
    snprintf(detail, sizeof detail, "rc %d, message \"%s\" should contain \"%s\"", rc,
             rc ? cs_error() : "", needle);
    tu_check(rc != 0 && strstr(cs_error(), needle) != NULL, name, detail);
    if (getenv("TEST_VERBOSE") && rc != 0) printf("  ok %-50s %s\n", name, cs_error());
}

/* ---- decoding ---------------------------------------------------------------------------- */
static void test_decode(void) {
    int n;
    char **names = group_names("/decode", &n);
    Image im = {0}; /* reused across files: the buffer only grows */
    for (int i = 0; i < n; i++) {
        char ds[512], path[1024], name[600];
        snprintf(ds, sizeof ds, "/decode/%s", names[i]);
        hid_t d = H5Dopen2(fx, ds, H5P_DEFAULT);
        attr_str(d, "path", path, sizeof path);
        H5Dclose(d);
        snprintf(name, sizeof name, "decode %s", names[i]);
        if (image_read_jpeg(&im, path) != 0) {
            tu_check(0, name, cs_error());
            continue;
        }
        Image want = pil_image(names[i]);
        check_pixels(name, im.px, im.w, im.h, want.px, want.w, want.h);
        image_free(&want);
    }
    tu_check(n >= 16, "decode: fixture images", "fewer than 16 images in /decode");
    free_names(names, n);
    image_free(&im);
}

/* Binary PPM (P6) or PGM (P5) with maxval 255, gray expanded to RGB: (h, w, 3). */
static unsigned char *read_pnm(const char *path, int *w, int *h) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char magic[3] = {0};
    int maxval, ch;
    unsigned char *px = NULL;
    if (fscanf(f, "%2s %d %d %d", magic, w, h, &maxval) == 4 && maxval == 255 &&
        (ch = strcmp(magic, "P6") == 0 ? 3 : strcmp(magic, "P5") == 0 ? 1 : 0) &&
        fgetc(f) != EOF) {
        size_t n = (size_t)*w * *h;
        px = malloc(n * 3);
        if (px && fread(px, ch, n, f) == n) {
            for (size_t i = n; ch == 1 && i-- > 0;) /* backwards: in place */
                px[3 * i] = px[3 * i + 1] = px[3 * i + 2] = px[i];
        } else {
            free(px);
            px = NULL;
        }
    }
    fclose(f);
    return px;
}

static void test_djpeg(const char *data) {
    static const char *refs[][2] = {{"testorig", "ppm"}, {"testimgint", "ppm"},
                                    {"testimgp", "ppm"},  {"testimgari", "ppm"},
                                    {"testimggray", "pgm"}};
    Image im = {0};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        char jpg[1024], pnm[1024], name[128];
        snprintf(jpg, sizeof jpg, "%s/images/jpeg_libjpeg_turbo/%s.jpg", data, refs[i][0]);
        snprintf(pnm, sizeof pnm, "%s/images/jpeg_libjpeg_turbo/%s.djpeg.%s", data, refs[i][0],
                 refs[i][1]);
        snprintf(name, sizeof name, "djpeg reference %s", refs[i][0]);
        int w, h;
        unsigned char *want = read_pnm(pnm, &w, &h);
        if (!want) {
            tu_check(0, name, "cannot read the reference PPM/PGM");
            continue;
        }
        if (image_read_jpeg(&im, jpg) != 0)
            tu_check(0, name, cs_error());
        else
            check_pixels(name, im.px, im.w, im.h, want, w, h);
        free(want);
    }
    image_free(&im);
}

static void test_bad_jpegs(const char *data, const char *bad_dir) {
    Image im = {0};
    DIR *d = opendir(bad_dir);
    int count = 0;
    tu_check(d != NULL, "bad JPEGs: folder", bad_dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[1024], name[600];
        snprintf(path, sizeof path, "%s/%s", bad_dir, e->d_name);
        snprintf(name, sizeof name, "bad JPEG %s", e->d_name);
        check_fails(name, image_read_jpeg(&im, path), e->d_name);
        tu_check(im.w == 0 && im.h == 0, name, "the image should be left empty (0 x 0)");
        count++;
    }
    if (d) closedir(d);
    tu_check(count >= 13, "bad JPEGs: count", "fewer than 13 files in jpeg_bad/");

    static const char *twelve[] = {"testorig12.jpg", "monkey12.jpg"};
    for (int i = 0; i < 2; i++) {
        char path[1024], name[128];
        snprintf(path, sizeof path, "%s/images/jpeg_libjpeg_turbo/%s", data, twelve[i]);
        snprintf(name, sizeof name, "12-bit JPEG %s refused", twelve[i]);
        int rc = image_read_jpeg(&im, path);
        check_fails(name, rc, twelve[i]);
        check_fails(name, rc, "12-bit");
    }
    check_fails("missing JPEG", image_read_jpeg(&im, "/nonexistent/dir/missing.jpg"),
                "missing.jpg");
    char ppm[1024];
    snprintf(ppm, sizeof ppm, "%s/images/jpeg_libjpeg_turbo/testorig.djpeg.ppm", data);
    check_fails("not a JPEG", image_read_jpeg(&im, ppm), "testorig.djpeg.ppm");
    image_free(&im);
}

/* Damaged copies of good files, written next to the fixtures: every truncation must fail with
 * the file name in the message; byte flips may decode or fail but never crash (the sanitizer
 * build runs this too) and a decode that succeeds has the original size. */
static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = len > 0 ? malloc((size_t)len) : NULL;
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = buf ? (size_t)len : 0;
    return buf;
}

static void spit(const char *path, const unsigned char *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static void test_damaged(const char *data) {
    static const char *files[] = {"testorig", "testimgp", "testimgari", "testimggray"};
    char tmp[1024], png_tmp[1024];
    tu_fixture_path("damaged_tmp.jpg", tmp, sizeof tmp);
    tu_fixture_path("damaged_tmp.png", png_tmp, sizeof png_tmp);
    Image im = {0};
    unsigned seed = 12345;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[1024], name[256];
        snprintf(path, sizeof path, "%s/images/jpeg_libjpeg_turbo/%s.jpg", data, files[i]);
        size_t n;
        unsigned char *orig = slurp(path, &n), *buf = orig ? malloc(n) : NULL;
        snprintf(name, sizeof name, "damaged %s: read the original", files[i]);
        tu_check(buf != NULL, name, path);
        if (!buf) continue;
        int trunc_ok = 0, flips_decoded = 0, flips_failed = 0, wrong_size = 0;
        for (int k = 1; k <= 40; k++) {
            spit(tmp, orig, n * k / 41);
            trunc_ok += image_read_jpeg(&im, tmp) != 0 && strstr(cs_error(), "damaged_tmp.jpg");
        }
        for (int k = 0; k < 150; k++) {
            memcpy(buf, orig, n);
            for (int j = 0; j < 3; j++) {
                seed = seed * 1103515245u + 12345u;
                buf[(seed >> 8) % n] ^= (unsigned char)(1u << (seed >> 4 & 7));
            }
            spit(tmp, buf, n);
            if (image_read_jpeg(&im, tmp) == 0) {
                flips_decoded++;
                wrong_size += im.w != 227 || im.h != 149;
            } else {
                flips_failed++;
            }
        }
        char detail[256];
        snprintf(name, sizeof name, "damaged %s: 40 truncations fail", files[i]);
        snprintf(detail, sizeof detail, "%d of 40 failed naming the file", trunc_ok);
        tu_check(trunc_ok == 40, name, detail);
        snprintf(name, sizeof name, "damaged %s: 150 x 3 bit flips", files[i]);
        snprintf(detail, sizeof detail, "%d decoded (%d with a wrong size), %d refused",
                 flips_decoded, wrong_size, flips_failed);
        tu_check(wrong_size == 0, name, detail);
        if (getenv("TEST_VERBOSE")) printf("  ok %-50s %s\n", name, detail);
        free(orig);
        free(buf);
    }

    /* testorig's frame header patched to declare other sizes: 60000 x 60000 passes libjpeg's
     * 65500 limit and must be refused before any pixel buffer exists; 0 wide is empty */
    char path0[1024];
    snprintf(path0, sizeof path0, "%s/images/jpeg_libjpeg_turbo/testorig.jpg", data);
    size_t n0;
    unsigned char *jpg = slurp(path0, &n0);
    size_t sof = 0;
    for (size_t i = 2; jpg && i + 9 < n0 && !sof; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) sof = i; /* FFC0 len(2) P(1) Y(2) X(2) */
    tu_check(sof != 0, "patched frame header: SOF0 found", path0);
    if (sof) {
        static const struct { unsigned y, x; const char *needle; } cases[] = {
            {60000, 60000, "decompression-bomb"}, {149, 0, "Empty JPEG image"},
            {65535, 100, "65500"}};
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            jpg[sof + 5] = (unsigned char)(cases[c].y >> 8);
            jpg[sof + 6] = (unsigned char)cases[c].y;
            jpg[sof + 7] = (unsigned char)(cases[c].x >> 8);
            jpg[sof + 8] = (unsigned char)cases[c].x;
            spit(tmp, jpg, n0);
            char name[128];
            snprintf(name, sizeof name, "JPEG declaring %u x %u refused", cases[c].x,
                     cases[c].y);
            check_fails(name, image_read_jpeg(&im, tmp), cases[c].needle);
            check_fails(name, image_read_jpeg(&im, tmp), "damaged_tmp.jpg");
        }
    }
    free(jpg);

    hid_t d = H5Dopen2(fx, "/png/rgb", H5P_DEFAULT);
    char path[1024];
    attr_str(d, "path", path, sizeof path);
    H5Dclose(d);
    size_t n;
    unsigned char *orig = slurp(path, &n);
    int trunc_ok = 0;
    for (int k = 1; orig && k <= 30; k++) {
        uint32_t *ids = NULL;
        int w, h;
        spit(png_tmp, orig, n * k / 31);
        trunc_ok += image_read_panoptic_png(&ids, &w, &h, png_tmp) != 0 &&
                    strstr(cs_error(), "damaged_tmp.png") && !ids;
        free(ids);
    }
    char detail[64];
    snprintf(detail, sizeof detail, "%d of 30 failed naming the file", trunc_ok);
    tu_check(trunc_ok == 30, "damaged panoptic PNG: 30 truncations fail", detail);
    free(orig);
    remove(tmp);
    remove(png_tmp);
    image_free(&im);
}

/* ---- geometry ---------------------------------------------------------------------------- */
static void test_resize(void) {
    int n;
    char **names = group_names("/resize", &n);
    ImageWork ws = {0};
    Image out = {0};
    for (int i = 0; i < n; i++) {
        char path[512], src[256], name[600];
        snprintf(path, sizeof path, "/resize/%s", names[i]);
        hid_t d = H5Dopen2(fx, path, H5P_DEFAULT);
        attr_str(d, "src", src, sizeof src);
        int ow = attr_int(d, "ow"), oh = attr_int(d, "oh");
        H5Dclose(d);
        int dims[3];
        unsigned char *want = read_data(path, H5T_NATIVE_UCHAR, 1, dims, NULL);
        Image in = pil_image(src);
        snprintf(name, sizeof name, "resize %s (%d x %d -> %d x %d)", names[i], in.w, in.h, ow,
                 oh);
        /* every other case without a workspace: both paths must give the same pixels */
        if (image_resize_bicubic(&out, &in, ow, oh, i % 2 ? NULL : &ws) != 0)
            tu_check(0, name, cs_error());
        else
            check_pixels(name, out.px, out.w, out.h, want, dims[1], dims[0]);
        free(want);
        image_free(&in);
    }
    tu_check(n >= 100, "resize: fixture cases", "fewer than 100 cases in /resize");
    free_names(names, n);

    Image in = pil_image("skimage_chelsea");
    check_fails("resize to width 0", image_resize_bicubic(&out, &in, 0, 5, &ws), "positive");
    check_fails("resize in place", image_resize_bicubic(&in, &in, 5, 5, &ws), "different");
    image_free(&in);
    image_free(&out);
    image_work_free(&ws);
}

static void test_crop(void) {
    int n;
    char **names = group_names("/crop", &n);
    Image out = {0};
    for (int i = 0; i < n; i++) {
        char path[512], src[256], name[600];
        snprintf(path, sizeof path, "/crop/%s", names[i]);
        hid_t d = H5Dopen2(fx, path, H5P_DEFAULT);
        attr_str(d, "src", src, sizeof src);
        double box[4];
        attr_read(d, "box", H5T_NATIVE_DOUBLE, box);
        H5Dclose(d);
        int dims[3];
        unsigned char *want = read_data(path, H5T_NATIVE_UCHAR, 1, dims, NULL);
        Image in = pil_image(src);
        snprintf(name, sizeof name, "crop %s (%g, %g, %g, %g)", names[i], (double)box[0],
                 (double)box[1], (double)box[2], (double)box[3]);
        if (image_crop(&out, &in, box) != 0)
            tu_check(0, name, cs_error());
        else
            check_pixels(name, out.px, out.w, out.h, want, dims[1], dims[0]);
        free(want);
        image_free(&in);
    }
    tu_check(n >= 100, "crop: fixture cases", "fewer than 100 cases in /crop");
    free_names(names, n);

    Image in = pil_image("testorig");
    const double empty[4] = {5.0f, 5.0f, 5.0f, 10.0f};
    const double halves[4] = {3.5f, 0.0f, 4.5f, 5.0f}; /* both x round to 4 */
    const double flipped[4] = {10.0f, 0.0f, 4.0f, 5.0f};
    const double nan_box[4] = {NAN, 0.0f, 4.0f, 5.0f};
    check_fails("crop: empty box", image_crop(&out, &in, empty), "degenerate box");
    check_fails("crop: box empty after half-to-even rounding", image_crop(&out, &in, halves),
                "degenerate box");
    check_fails("crop: flipped box", image_crop(&out, &in, flipped), "degenerate box");
    check_fails("crop: NaN box", image_crop(&out, &in, nan_box), "box coordinate 0");
    image_free(&in);
    image_free(&out);
}

/* ---- transforms -------------------------------------------------------------------------- */
static const float MEAN[3] = {CLIP_MEAN_R, CLIP_MEAN_G, CLIP_MEAN_B};
static const float STD[3] = {CLIP_STD_R, CLIP_STD_G, CLIP_STD_B};

static void test_full(void) {
    int n;
    char **names = group_names("/full", &n);
    ImageWork ws = {0};
    for (int i = 0; i < n; i++) {
        char path[512], src[256], name[600];
        snprintf(path, sizeof path, "/full/%s", names[i]);
        hid_t d = H5Dopen2(fx, path, H5P_DEFAULT);
        attr_str(d, "src", src, sizeof src);
        int S = attr_int(d, "S");
        H5Dclose(d);
        int dims[3];
        float *want = read_data(path, H5T_NATIVE_FLOAT, 4, dims, NULL);
        Image in = pil_image(src);
        snprintf(name, sizeof name, "preprocess_full %s (%d x %d, S %d)", names[i], in.w, in.h,
                 S);
        float *got = malloc(sizeof *got * 3 * S * S); /* (3, S, S) */
        if (dims[0] != 3 || dims[1] != S || dims[2] != S)
            tu_check(0, name, "fixture is not (3, S, S)");
        else if (preprocess_full(got, &in, S, i % 2 ? NULL : &ws) != 0)
            tu_check(0, name, cs_error());
        else
            tu_close(name, got, want, (size_t)3 * S * S, 0.0f, 1e-6f);
        free(got);
        free(want);
        image_free(&in);
    }
    tu_check(n >= 16, "preprocess_full: fixture cases", "fewer than 16 cases in /full");
    free_names(names, n);
    image_work_free(&ws);
}

static void test_crop_transform(void) {
    int n, same_shape = 0, unpadded = 0;
    char **names = group_names("/crop_tf", &n);
    ImageWork ws = {0};
    for (int i = 0; i < n; i++) {
        char path[512], src[256], name[600];
        snprintf(path, sizeof path, "/crop_tf/%s", names[i]);
        hid_t d = H5Dopen2(fx, path, H5P_DEFAULT);
        attr_str(d, "src", src, sizeof src);
        int S = attr_int(d, "S");
        double box[4];
        attr_read(d, "box", H5T_NATIVE_DOUBLE, box);
        H5Dclose(d);
        int dims[3];
        float *want = read_data(path, H5T_NATIVE_FLOAT, 4, dims, NULL); /* (3, h, w) */
        Image in = pil_image(src);
        snprintf(name, sizeof name, "preprocess_crop %s", names[i]);
        float *got = malloc(sizeof *got * 3 * S * S); /* (3, S, S) */
        if (preprocess_crop(got, &in, box, S, i % 2 ? NULL : &ws) != 0) {
            tu_check(0, name, cs_error());
        } else if (dims[1] == S && dims[2] == S) {
            same_shape++;
            tu_close(name, got, want, (size_t)3 * S * S, 0.0f, 1e-6f);
        } else {
            /* the reference skipped resize and padding (longest side already S): its tensor
             * must be our centred window, and the rest the normalised zero */
            unpadded++;
            int h = dims[1], w = dims[2], top = (S - h) / 2, left = (S - w) / 2;
            float *win = malloc(sizeof *win * 3 * h * w), *pad = malloc(sizeof *pad * 3 * S * S);
            float *padw = malloc(sizeof *padw * 3 * S * S);
            size_t np = 0;
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < S; y++)
                    for (int x = 0; x < S; x++) {
                        float v = got[((size_t)c * S + y) * S + x];
                        if (y >= top && y < top + h && x >= left && x < left + w) {
                            win[((size_t)c * h + y - top) * w + x - left] = v;
                        } else {
                            pad[np] = v;
                            padw[np++] = -MEAN[c] / STD[c];
                        }
                    }
            char wname[700];
            snprintf(wname, sizeof wname, "%s: window of the unpadded reference (%d x %d)", name,
                     w, h);
            tu_check(h <= S && w <= S && (h == S || w == S), wname,
                     "reference is neither S x S nor has a side of S");
            tu_close(wname, win, want, (size_t)3 * h * w, 0.0f, 1e-6f);
            snprintf(wname, sizeof wname, "%s: padding is -mean/std", name);
            tu_close(wname, pad, padw, np, 0.0f, 1e-6f);
            free(win);
            free(pad);
            free(padw);
        }
        free(got);
        free(want);
        image_free(&in);
    }
    char detail[128];
    snprintf(detail, sizeof detail, "%d square and %d unpadded cases", same_shape, unpadded);
    tu_check(same_shape >= 100 && unpadded >= 5, "preprocess_crop: fixture cases", detail);
    free_names(names, n);

    Image in = pil_image("skimage_chelsea");
    float *out = malloc(sizeof *out * 3 * 224 * 224);
    const double thin[4] = {0.0f, 0.0f, 451.0f, 0.4f}; /* rounds to height 0 */
    const double sliver[4] = {0.0f, 0.0f, 451.0f, 1.0f}; /* 224/451 rounds the height to 0 */
    check_fails("preprocess_crop: empty crop", preprocess_crop(out, &in, thin, 224, &ws),
                "degenerate box");
    check_fails("preprocess_crop: crop that resizes to nothing",
                preprocess_crop(out, &in, sliver, 224, &ws), "empty image");
    free(out);
    image_free(&in);
    image_work_free(&ws);
}

/* ---- panoptic PNG ------------------------------------------------------------------------ */
static void test_png(void) {
    int n;
    char **names = group_names("/png", &n);
    for (int i = 0; i < n; i++) {
        char ds[256], path[1024], name[300];
        snprintf(ds, sizeof ds, "/png/%s", names[i]);
        hid_t d = H5Dopen2(fx, ds, H5P_DEFAULT);
        attr_str(d, "path", path, sizeof path);
        H5Dclose(d);
        int dims[3];
        uint32_t *want = read_data(ds, H5T_NATIVE_UINT32, 4, dims, NULL), *ids = NULL;
        int w, h;
        snprintf(name, sizeof name, "panoptic PNG %s", names[i]);
        if (image_read_panoptic_png(&ids, &w, &h, path) != 0) {
            tu_check(0, name, cs_error());
        } else {
            size_t bad = 0, first = 0, cnt = (size_t)w * h;
            int same = w == dims[1] && h == dims[0];
            for (size_t j = 0; same && j < cnt; j++)
                if (ids[j] != want[j] && bad++ == 0) first = j;
            char detail[256];
            snprintf(detail, sizeof detail, "size %d x %d (want %d x %d); %zu ids differ, first "
                     "at %zu: got %u want %u", w, h, dims[1], dims[0], bad, first,
                     same && cnt ? ids[first] : 0, same && cnt ? want[first] : 0);
            tu_check(same && bad == 0, name, detail);
            if (strcmp(names[i], "rgb") == 0) {
                uint32_t mx = 0;
                for (size_t j = 0; j < cnt; j++) mx = ids[j] > mx ? ids[j] : mx;
                tu_check(mx > 65535, "panoptic PNG ids above 65535", "no id uses blue");
            }
        }
        free(ids);
        free(want);
    }
    tu_check(n >= 5, "panoptic PNG: fixture cases", "fewer than 5 PNGs in /png");
    free_names(names, n);

    hid_t g = H5Gopen2(fx, "/png_bad", H5P_DEFAULT);
    hid_t a = H5Aopen(g, "paths", H5P_DEFAULT);
    hid_t t = vlen_str_type(a);
    char *paths[2] = {NULL, NULL};
    hid_t sp = H5Aget_space(a);
    if (H5Sget_simple_extent_npoints(sp) != 2 || H5Aread(a, t, paths) < 0) {
        fprintf(stderr, "fixture attribute /png_bad/paths is not 2 strings\n");
        exit(1);
    }
    H5Sclose(sp);
    for (int i = 0; i < 2; i++) {
        uint32_t *ids = NULL;
        int w, h;
        const char *base = paths[i] ? strrchr(paths[i], '/') + 1 : "?";
        char name[300];
        snprintf(name, sizeof name, "bad PNG %s", base);
        check_fails(name, image_read_panoptic_png(&ids, &w, &h, paths[i] ? paths[i] : "?"),
                    base);
        tu_check(ids == NULL, name, "ids should stay NULL");
        H5free_memory(paths[i]);
    }
    H5Tclose(t);
    H5Aclose(a);
    H5Gclose(g);
    uint32_t *ids = NULL;
    int w, h;
    check_fails("missing PNG", image_read_panoptic_png(&ids, &w, &h, "/nonexistent/pan.png"),
                "pan.png");
}

/* ---- speed (reported, not checked) ------------------------------------------------------- */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void report_speed(void) {
    Image in = pil_image("sklearn_china"), out = {0};
    ImageWork ws = {0};
    float *t = malloc(sizeof *t * 3 * 1024 * 1024);
    CS_DIE_IF_FAIL(preprocess_full(t, &in, 1024, &ws)); /* warm the workspace */
    double t0 = now();
    for (int i = 0; i < 5; i++) CS_DIE_IF_FAIL(image_resize_bicubic(&out, &in, 1024, 683, &ws));
    double t1 = now();
    for (int i = 0; i < 5; i++) CS_DIE_IF_FAIL(preprocess_full(t, &in, 1024, &ws));
    double t2 = now();
    const double box[4] = {100.5, 50.25, 400.0, 300.0};
    for (int i = 0; i < 50; i++) CS_DIE_IF_FAIL(preprocess_crop(t, &in, box, 224, &ws));
    double t3 = now();
    printf("speed: resize 640x427 -> 1024x683 %.1f ms, preprocess_full(1024) %.1f ms, "
           "preprocess_crop(224) %.2f ms\n", (t1 - t0) / 5 * 1e3, (t2 - t1) / 5 * 1e3,
           (t3 - t2) / 50 * 1e3);
    free(t);
    image_free(&in);
    image_free(&out);
    image_work_free(&ws);
}

int main(void) {
    fx = tu_open_fixture("image.h5");
    char data[600], bad_dir[600]; /* short enough for the paths built from them */
    hid_t root = H5Gopen2(fx, "/", H5P_DEFAULT);
    attr_str(root, "data", data, sizeof data);
    attr_str(root, "jpeg_bad", bad_dir, sizeof bad_dir);
    H5Gclose(root);

    test_decode();
    test_djpeg(data);
    test_bad_jpegs(data, bad_dir);
    test_damaged(data);
    test_resize();
    test_crop();
    test_full();
    test_crop_transform();
    test_png();
    report_speed();
    H5Fclose(fx);
    return tu_finish("test_image");
}
