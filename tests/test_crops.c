/* test_crops.c: the crop boxes against tests/reference/crops_ref.py's re-implementation of the
 * reference's box arithmetic (fixture crops.h5). Region-proposal mode (crops_for_proposals):
 * which boxes are drawn, the area filter, boxes wholly outside the image skipped, the teacher's
 * 1.5x crop clipped to the image, the fallback box, the counts of what was left out, and the
 * student's box on the token grid (geom_token_box); grid mode's teacher crops with
 * --crop-scale (crops_scale_teacher). Every value must be bit-identical: the boxes are what
 * the reference computes in float32 and in Python floats. */
#include <stdint.h>

#include "base/geometry.h"
#include "method/crops.h"
#include "testutil.h"

static void same_f(const char *label, const float *got, const float *want, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&got[i], &want[i], sizeof(float)) != 0;
    char detail[160];
    snprintf(detail, sizeof detail, "%zu of %zu values differ", bad, n);
    tu_check(bad == 0, label, detail);
}

static void same_d(const char *label, const double *got, const double *want, size_t n) {
    size_t bad = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) bad++, worst = i;
    char detail[200];
    snprintf(detail, sizeof detail, "%zu of %zu values differ (e.g. [%zu]: %.17g, want %.17g)",
             bad, n, worst, n ? got[worst] : 0.0, n ? want[worst] : 0.0);
    tu_check(bad == 0, label, detail);
}

static double *read_d(hid_t f, const char *path, size_t *n) {
    hid_t ds = H5Dopen2(f, path, H5P_DEFAULT);
    if (ds < 0) {
        fprintf(stderr, "fixture dataset %s is missing (regenerate with crops_ref.py)\n", path);
        exit(1);
    }
    hid_t sp = H5Dget_space(ds);
    size_t cnt = (size_t)H5Sget_simple_extent_npoints(sp);
    double *buf = malloc((cnt ? cnt : 1) * sizeof(double));
    if (!buf || H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) exit(1);
    H5Sclose(sp), H5Dclose(ds);
    *n = cnt;
    return buf;
}

static void proposal_case(hid_t f, const char *name) {
    char g[128], p[200], label[300];
    snprintf(g, sizeof g, "/proposals/%s", name);
    hid_t grp = H5Gopen2(f, g, H5P_DEFAULT);
    int w = (int)tu_attr_long(grp, "w"), h = (int)tu_attr_long(grp, "h");
    int epoch = (int)tu_attr_long(grp, "epoch"), max_boxes = (int)tu_attr_long(grp, "max_boxes");
    int S = (int)tu_attr_long(grp, "S"), gs = (int)tu_attr_long(grp, "g");
    int64_t image_id = (int64_t)tu_attr_long(grp, "image_id");
    uint64_t seed;
    hid_t a = H5Aopen(grp, "seed", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_UINT64, &seed);
    H5Aclose(a);
    double min_size = tu_attr_double(grp, "min_size"), max_size = tu_attr_double(grp, "max_size");
    CropStats want_st = {tu_attr_long(grp, "filtered"), tu_attr_long(grp, "outside"),
                         tu_attr_long(grp, "fallback")};
    H5Gclose(grp);
    size_t nb, nr, nt, nk;
    snprintf(p, sizeof p, "%s/boxes", g);
    double *boxes = read_d(f, p, &nb);
    snprintf(p, sizeof p, "%s/rows", g);
    float *rows = tu_read(f, p, &nr);
    snprintf(p, sizeof p, "%s/tbox", g);
    double *tbox = read_d(f, p, &nt);
    snprintf(p, sizeof p, "%s/token", g);
    float *token = tu_read(f, p, &nk);
    CropRow out[64];
    CropStats st = {0};
    int k = crops_for_proposals(out, 3, image_id, w, h, epoch, seed, (const double(*)[4])boxes,
                                (int)(nb / 4), max_boxes, min_size, max_size, &st);
    snprintf(label, sizeof label, "proposals %s: %zu rows", name, nr / 4);
    tu_check(k == (int)(nr / 4), label, "another count");
    snprintf(label, sizeof label, "proposals %s: filtered, outside, fallback counts", name);
    tu_check(st.filtered == want_st.filtered && st.outside == want_st.outside &&
                 st.fallback == want_st.fallback, label, "differ");
    if (k == (int)(nr / 4)) {
        float sb[256] = {0}, tk[256] = {0};
        double tb[256] = {0};
        int ok = 1;
        for (int r = 0; r < k; r++) {
            memcpy(sb + 4 * r, out[r].box, sizeof out[r].box);
            memcpy(tb + 4 * r, out[r].tbox, sizeof out[r].tbox);
            geom_token_box(tk + 4 * r, out[r].box, geom_fit_scale(S, w, h), S, gs);
            ok &= out[r].image == 3 && out[r].epoch == epoch && out[r].m == 0 && out[r].n == 0;
        }
        snprintf(label, sizeof label, "proposals %s: image, epoch, no layout", name);
        tu_check(ok, label, NULL);
        snprintf(label, sizeof label, "proposals %s: the student's boxes (draw, filter, order)", name);
        same_f(label, sb, rows, nr);
        snprintf(label, sizeof label, "proposals %s: the teacher's crops (1.5x, clipped)", name);
        same_d(label, tb, tbox, nt);
        snprintf(label, sizeof label, "proposals %s: the student's boxes on the %dx%d token grid",
                 name, gs, gs);
        same_f(label, tk, token, nk);
    }
    free(boxes), free(rows), free(tbox), free(token);
}

static void grid_case(hid_t f, const char *name) {
    char g[128], p[200], label[200];
    snprintf(g, sizeof g, "/grid/%s", name);
    hid_t grp = H5Gopen2(f, g, H5P_DEFAULT);
    int w = (int)tu_attr_long(grp, "w"), h = (int)tu_attr_long(grp, "h");
    double s = tu_attr_double(grp, "crop_scale");
    H5Gclose(grp);
    size_t nb, nt;
    snprintf(p, sizeof p, "%s/box", g);
    float *box = tu_read(f, p, &nb);
    snprintf(p, sizeof p, "%s/tbox", g);
    double *tbox = read_d(f, p, &nt);
    CropRow rows[16] = {0};
    int k = (int)(nb / 4);
    if (k > 16 || nt != nb) {
        fprintf(stderr, "fixture %s: %zu cells, at most 16\n", g, nb / 4);
        exit(1);
    }
    for (int r = 0; r < k; r++) memcpy(rows[r].box, box + 4 * r, sizeof rows[r].box);
    crops_scale_teacher(rows, k, s, w, h);
    double tb[64] = {0};
    for (int r = 0; r < k; r++) memcpy(tb + 4 * r, rows[r].tbox, sizeof rows[r].tbox);
    snprintf(label, sizeof label, "grid --crop-scale %g (%dx%d): the teacher's crops", s, w, h);
    same_d(label, tb, tbox, nt);
    crops_scale_teacher(rows, k, 1.0, w, h);
    int same = 1;
    for (int r = 0; r < k; r++)
        for (int q = 0; q < 4; q++) same &= rows[r].tbox[q] == (double)rows[r].box[q];
    snprintf(label, sizeof label, "grid --crop-scale 1 (%dx%d): the teacher crops the cell", w, h);
    tu_check(same, label, NULL);
    free(box), free(tbox);
}

int main(int argc, char **argv) {
    (void)argc;
    hid_t f = tu_open_fixture("crops.h5");
    const char *cases[] = {"many", "many_epoch3", "edges", "fallback", "empty", "max5"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) proposal_case(f, cases[i]);
    grid_case(f, "s2");
    grid_case(f, "s1.5");
    H5Fclose(f);
    return tu_finish(argv[0]);
}
