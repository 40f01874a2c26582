/* testutil.h: what every test program shares: comparison with a named tolerance that records
 * failures, reading fixture tensors written by tests/reference/vit_ref.py, and the closing
 * "N passed, N failed" line. A test program exits non-zero if any check failed. */
#ifndef CLIPSELF_TESTUTIL_H
#define CLIPSELF_TESTUTIL_H

#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "base/rng.h"
#include "model/ops.h"

static int tu_passed, tu_failed;

/* Random test inputs: frand() is uniform in [-1, 1) (splitmix64 over tu_rng; a test may seed
 * it), alloc_f a zeroed buffer or exit. */
static uint64_t tu_rng = 0x9E3779B97F4A7C15ull;
static inline float frand(void) {
    uint64_t z = rng_next(&tu_rng);
    return (float)((double)(z >> 40) / (double)(1ull << 23) - 1.0);
}
static inline float *alloc_f(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory (%zu floats)\n", n);
        exit(1);
    }
    return p;
}

/* Record one named check. */
static inline void tu_check(int ok, const char *name, const char *detail) {
    if (ok) {
        tu_passed++;
    } else {
        tu_failed++;
        fprintf(stderr, "FAIL %s: %s\n", name, detail ? detail : "");
    }
}

/* Compare got with want elementwise: |got - want| <= atol + rtol * |want|. Reports the largest
 * absolute and relative difference and where it is. Returns 1 if within tolerance. */
static inline int tu_close(const char *name, const float *got, const float *want, size_t n,
                           float rtol, float atol) {
    size_t worst = 0, bad = 0;
    double worst_excess = -1.0, max_abs = 0.0, max_rel = 0.0, margin = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        double lim = atol + rtol * fabs((double)want[i]);
        if (!(d <= lim)) bad++; /* also catches NaN */
        if (lim > 0 && d / lim > margin) margin = d / lim;
        if (d > max_abs || d != d) max_abs = d;
        double rel = d / (fabs((double)want[i]) + 1e-30);
        if (fabs((double)want[i]) > atol && rel > max_rel) max_rel = rel;
        if (d - lim > worst_excess || d != d) {
            worst_excess = d - lim;
            worst = i;
        }
    }
    char detail[512];
    snprintf(detail, sizeof detail,
             "%zu of %zu elements out of tolerance (rtol %.1e, atol %.1e); max abs diff %.3e, "
             "max rel diff %.3e; worst at [%zu]: got %.8g want %.8g",
             bad, n, rtol, atol, max_abs, max_rel, worst, n ? got[worst] : 0.0,
             n ? want[worst] : 0.0);
    tu_check(bad == 0, name, detail);
    /* TEST_MARGINS: how much of its tolerance each check used (the largest |d| / limit), to
     * find the checks that the rounding of another kernel set or thread count could fail */
    if (getenv("TEST_MARGINS")) printf("margin %.4f %s\n", margin, name);
    if (getenv("TEST_VERBOSE") && bad == 0)
        printf("  ok %-60s max abs %.2e max rel %.2e\n", name, max_abs, max_rel);
    return bad == 0;
}

/* Compare got with want elementwise: |got - want| <= bound[i], a per-element error bound. */
static inline int tu_close_bound(const char *name, const float *got, const float *want,
                                 const float *bound, size_t n) {
    size_t bad = 0, worst = 0;
    double margin = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= bound[i])) bad++; /* also catches NaN */
        double r = bound[i] > 0 ? d / bound[i] : (d > 0 ? INFINITY : 0.0);
        if (!(r <= margin)) margin = r, worst = i;
    }
    char detail[512];
    snprintf(detail, sizeof detail, "%zu of %zu elements beyond their error bound; worst at "
             "[%zu]: got %.8g want %.8g bound %.3g", bad, n, worst, n ? got[worst] : 0.0,
             n ? want[worst] : 0.0, n ? bound[worst] : 0.0);
    tu_check(bad == 0, name, detail);
    if (getenv("TEST_MARGINS")) printf("margin %.4f %s\n", margin, name);
    return bad == 0;
}

/* tu_close for results in which a few elements may legitimately leave the tolerance: every
 * element within atol + rtol * |want|, except at most max_out elements, which must still lie
 * within hard_atol (a bound that holds for any implementation, e.g. Adam's per-step limit). */
static inline int tu_close_most(const char *name, const float *got, const float *want, size_t n,
                                float rtol, float atol, float hard_atol, size_t max_out) {
    size_t out = 0, beyond = 0, worst = 0;
    double worst_d = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (d <= atol + rtol * fabs((double)want[i])) continue;
        out++;
        if (!(d <= hard_atol)) beyond++; /* also catches NaN */
        if (!(d <= worst_d)) worst_d = d, worst = i;
    }
    char detail[512];
    snprintf(detail, sizeof detail,
             "%zu of %zu elements out of tolerance (rtol %.1e, atol %.1e; at most %zu may be, "
             "within %.1e), %zu beyond that bound; worst at [%zu]: got %.8g want %.8g",
             out, n, rtol, atol, max_out, hard_atol, beyond, worst, n ? got[worst] : 0.0,
             n ? want[worst] : 0.0);
    int ok = out <= max_out && beyond == 0;
    tu_check(ok, name, detail);
    if (getenv("TEST_MARGINS"))
        printf("margin %.4f %s (%zu outliers of %zu allowed)\n",
               max_out ? (double)out / (double)max_out : (double)out, name, out, max_out);
    return ok;
}

static inline float tu_absmax(const float *x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

/* got vs want with |d| <= rel * (|want| + max|want|): a tolerance relative to the tensor's
 * scale, for tensors whose small entries are sums of large cancelling terms. */
static inline int tu_close_scaled(const char *name, const float *got, const float *want,
                                  size_t n, float rel) {
    return tu_close(name, got, want, n, rel, rel * tu_absmax(want, n));
}

/* A numeric attribute of a fixture object; a missing one ends the test program. */
static inline double tu_attr_double(hid_t obj, const char *name) {
    double v = 0;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) {
        fprintf(stderr, "fixture attribute %s is missing\n", name);
        exit(1);
    }
    H5Aclose(a);
    return v;
}
static inline long tu_attr_long(hid_t obj, const char *name) {
    return (long)tu_attr_double(obj, name);
}

/* Read a float dataset (any stored float type, converted) into a new buffer; *n gets the
 * element count. Exits with the file and dataset name if it is missing. */
static inline float *tu_read(hid_t file, const char *path, size_t *n) {
    if (H5Lexists(file, path, H5P_DEFAULT) <= 0) {
        fprintf(stderr, "fixture dataset %s is missing\n", path);
        exit(1);
    }
    hid_t ds = H5Dopen2(file, path, H5P_DEFAULT);
    hid_t sp = H5Dget_space(ds);
    hssize_t cnt = H5Sget_simple_extent_npoints(sp);
    float *buf = malloc(((size_t)cnt ? (size_t)cnt : 1) * sizeof(float));
    if (!buf || H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        fprintf(stderr, "cannot read fixture dataset %s\n", path);
        exit(1);
    }
    H5Sclose(sp);
    H5Dclose(ds);
    if (n) *n = (size_t)cnt;
    return buf;
}

/* The shape of a fixture's image batch (B, 3, H, W). Exits naming the dataset if it is missing
 * or of another rank. */
static inline void tu_image_dims(hid_t file, const char *path, hsize_t dims[4]) {
    hid_t ds = H5Lexists(file, path, H5P_DEFAULT) > 0 ? H5Dopen2(file, path, H5P_DEFAULT) : -1;
    hid_t sp = ds < 0 ? -1 : H5Dget_space(ds);
    if (sp < 0 || H5Sget_simple_extent_ndims(sp) != 4) {
        fprintf(stderr, "fixture dataset %s is missing or not (B, 3, H, W)\n", path);
        exit(1);
    }
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    H5Dclose(ds);
}

static inline hid_t tu_open_fixture(const char *name) {
    const char *dir = getenv("FIXTURES");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "build/fixtures", name);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "cannot open fixture %s\n---> HINT: run make test (it runs "
                        "tests/reference/{ops,vit}_ref.py with /usr/bin/python3 first)\n", path);
        exit(1);
    }
    return f;
}

static inline const char *tu_fixture_path(const char *name, char *buf, size_t len) {
    const char *dir = getenv("FIXTURES");
    snprintf(buf, len, "%s/%s", dir ? dir : "build/fixtures", name);
    return buf;
}

/* Print the BLIS kernel set and thread count the checks ran with, then the closing line;
 * return the exit status for main. */
static inline int tu_finish(const char *program) {
    printf("BLIS kernel set %s, %d threads\n", cs_blas_kernels(), cs_num_threads());
    printf("%s: %d passed, %d failed\n", program, tu_passed, tu_failed);
    return tu_failed ? 1 : 0;
}

#endif
