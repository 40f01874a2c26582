/* test_contrastive.c: the pretraining loss of pipeline/method/contrastive.h checked three ways:
 *   - against PyTorch: loss and autograd gradients of img, cls and log_scale on the cases of
 *     tests/reference/contrastive_ref.py (the fixture file is argv[1], else
 *     $FIXTURES/contrastive.h5; tests/test_pretrain.sh writes it and runs this program on it;
 *     without the file this part is skipped, saying so);
 *   - backward against central finite differences of the loss, at two logit scales;
 *   - backward accumulates (+=), a NULL gradient output changes nothing else, and more rows
 *     than the capacity are refused.
 * usage: test_contrastive [contrastive.h5] */
#include <stdint.h>
#include <unistd.h>

#include "method/contrastive.h"
#include "testutil.h"


static float *fx(hid_t f, const char *group, const char *name, size_t want) {
    char path[128];
    size_t n;
    snprintf(path, sizeof path, "%s/%s", group, name);
    float *p = tu_read(f, path, &n);
    if (n != want) {
        fprintf(stderr, "fixture %s has %zu elements, expected %zu\n---> HINT: regenerate it "
                        "with tests/reference/contrastive_ref.py\n", path, n, want);
        exit(1);
    }
    return p;
}

static int fx_int(hid_t f, const char *obj, const char *name) {
    int v;
    hid_t a = H5Aopen_by_name(f, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_INT, &v) < 0) {
        fprintf(stderr, "fixture attribute %s/%s is missing\n", obj, name);
        exit(1);
    }
    H5Aclose(a);
    return v;
}

/* Gradients are sums with cancellation: near-zero elements carry the rounding of the large
 * terms, so the absolute tolerance is relative to the largest element of the reference. */
static void close_scaled(const char *name, const float *got, const float *want, size_t n,
                         float rtol, float scaled_atol) {
    float mx = 0.0f;
    for (size_t i = 0; i < n; i++) mx = fabsf(want[i]) > mx ? fabsf(want[i]) : mx;
    tu_close(name, got, want, n, rtol, scaled_atol * mx);
}

static void test_torch(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        tu_check(0, "open the PyTorch fixture", path);
        return;
    }
    const char *cases[] = {"mixed", "sharp"};
    for (int c = 0; c < 2; c++) {
        const char *g = cases[c];
        int N = fx_int(f, g, "N"), K = fx_int(f, g, "K"), E = fx_int(f, g, "E");
        size_t ni = (size_t)N * E, nc = (size_t)K * E;
        float *img = fx(f, g, "img", ni), *cls = fx(f, g, "cls", nc);
        float *ls = fx(f, g, "log_scale", 1), *target = fx(f, g, "target", (size_t)N * K);
        float *wloss = fx(f, g, "loss", 1), *wdimg = fx(f, g, "dimg", ni);
        float *wdcls = fx(f, g, "dcls", nc), *wdls = fx(f, g, "dlog_scale", 1);
        ContrastiveLoss cl;
        CS_DIE_IF_FAIL(contrastive_init(&cl, N, K, E));
        float loss, dls = 0.0f, *dimg = alloc_f(ni), *dcls = alloc_f(nc);
        CS_DIE_IF_FAIL(contrastive_forward(&cl, &loss, img, cls, ls[0], target, N));
        contrastive_backward(&cl, dimg, dcls, &dls, 1.0f);
        char name[128];
        snprintf(name, sizeof name, "%s: loss vs torch", g);
        tu_close(name, &loss, wloss, 1, 1e-5f, 0.0f);
        snprintf(name, sizeof name, "%s: dimg vs torch", g);
        close_scaled(name, dimg, wdimg, ni, 1e-5f, 1e-5f);
        snprintf(name, sizeof name, "%s: dcls vs torch", g);
        close_scaled(name, dcls, wdcls, nc, 1e-5f, 1e-5f);
        snprintf(name, sizeof name, "%s: dlog_scale vs torch", g);
        tu_close(name, &dls, wdls, 1, 1e-5f, 1e-6f);
        contrastive_free(&cl);
        free(img), free(cls), free(ls), free(target), free(wloss), free(wdimg), free(wdcls);
        free(wdls), free(dimg), free(dcls);
    }
    H5Fclose(f);
}

/* ---- finite differences -------------------------------------------------------------------- */

static struct {
    int N, K, E;
    float *img, *cls, log_scale, *target;
    ContrastiveLoss cl;
} fd;

static double fd_loss(void) {
    float loss;
    CS_DIE_IF_FAIL(contrastive_forward(&fd.cl, &loss, fd.img, fd.cls, fd.log_scale, fd.target,
                                       fd.N));
    return loss;
}

static void check_fd(const char *name, float *x, size_t n, const float *grad, float eps) {
    float *num = alloc_f(n);
    for (size_t i = 0; i < n; i++) {
        float x0 = x[i], xp = x0 + eps, xm = x0 - eps;
        x[i] = xp;
        double lp = fd_loss();
        x[i] = xm;
        double lm = fd_loss();
        x[i] = x0;
        num[i] = (float)((lp - lm) / ((double)xp - (double)xm));
    }
    tu_close(name, grad, num, n, 1e-2f, 2e-3f);
    free(num);
}

static void test_fd(float log_scale) {
    fd.N = 6, fd.K = 5, fd.E = 8, fd.log_scale = log_scale;
    size_t ni = (size_t)fd.N * fd.E, nc = (size_t)fd.K * fd.E;
    fd.img = alloc_f(ni), fd.cls = alloc_f(nc), fd.target = alloc_f((size_t)fd.N * fd.K);
    for (size_t i = 0; i < ni; i++) fd.img[i] = frand();
    for (size_t i = 0; i < nc; i++) fd.cls[i] = frand();
    for (int i = 0; i < fd.N; i++) { /* one-hot rows and one soft row */
        if (i == 3) {
            fd.target[i * fd.K + 1] = fd.target[i * fd.K + 4] = 0.5f;
        } else {
            fd.target[i * fd.K + (i * 2) % fd.K] = 1.0f;
        }
    }
    CS_DIE_IF_FAIL(contrastive_init(&fd.cl, fd.N, fd.K, fd.E));
    float *dimg = alloc_f(ni), *dcls = alloc_f(nc), dls = 0.0f;
    fd_loss();
    contrastive_backward(&fd.cl, dimg, dcls, &dls, 1.0f);
    char name[128];
    snprintf(name, sizeof name, "log_scale %.2f: dimg vs finite differences", (double)log_scale);
    check_fd(name, fd.img, ni, dimg, 1e-3f);
    snprintf(name, sizeof name, "log_scale %.2f: dcls vs finite differences", (double)log_scale);
    check_fd(name, fd.cls, nc, dcls, 1e-3f);
    snprintf(name, sizeof name, "log_scale %.2f: dlog_scale vs finite differences",
             (double)log_scale);
    check_fd(name, &fd.log_scale, 1, &dls, 1e-3f);

    /* accumulation, dloss scaling and NULL outputs */
    fd_loss();
    float *aimg = alloc_f(ni), *acls = alloc_f(nc), als = 0.25f;
    for (size_t i = 0; i < ni; i++) aimg[i] = 0.5f;
    for (size_t i = 0; i < nc; i++) acls[i] = -0.5f;
    contrastive_backward(&fd.cl, aimg, acls, &als, 2.0f);
    float *want_i = alloc_f(ni), *want_c = alloc_f(nc), want_s = 0.25f + 2.0f * dls;
    for (size_t i = 0; i < ni; i++) want_i[i] = 0.5f + 2.0f * dimg[i];
    for (size_t i = 0; i < nc; i++) want_c[i] = -0.5f + 2.0f * dcls[i];
    tu_close("dimg accumulates, scaled by dloss", aimg, want_i, ni, 1e-5f, 1e-6f);
    tu_close("dcls accumulates, scaled by dloss", acls, want_c, nc, 1e-5f, 1e-6f);
    tu_close("dlog_scale accumulates, scaled by dloss", &als, &want_s, 1, 1e-5f, 1e-6f);
    float *oimg = alloc_f(ni);
    contrastive_backward(&fd.cl, oimg, NULL, NULL, 1.0f);
    tu_close("dimg alone (dcls, dlog_scale NULL)", oimg, dimg, ni, 0.0f, 0.0f);
    float loss;
    int rc = contrastive_forward(&fd.cl, &loss, fd.img, fd.cls, 0.0f, fd.target, fd.N + 1);
    tu_check(rc != 0 && strstr(cs_error(), "sized for 6"), "more rows than the capacity are "
             "refused", cs_error());
    contrastive_free(&fd.cl);
    free(fd.img), free(fd.cls), free(fd.target), free(dimg), free(dcls);
    free(aimg), free(acls), free(want_i), free(want_c), free(oimg);
}

int main(int argc, char **argv) {
    tu_rng = 0x243F6A8885A308D3ull; /* this test's own random inputs */
    char buf[1024];
    const char *path = argc > 1 ? argv[1] : tu_fixture_path("contrastive.h5", buf, sizeof buf);
    if (argc > 1 || access(path, F_OK) == 0)
        test_torch(path);
    else
        printf("note: %s not found: the PyTorch comparison is left to tests/test_pretrain.sh\n",
               path);
    test_fd(0.0f);
    test_fd(logf(1.0f / 0.07f));
    return tu_finish("test_contrastive");
}
