/* test_ops.c: every op of pipeline/model/ops.h checked three ways:
 *   - against PyTorch / torchvision outputs and autograd gradients (build/fixtures/ops.h5,
 *     written by tests/reference/ops_ref.py), gemm against a double-precision loop;
 *   - backward against central finite differences of L = sum(out * g) for a random g,
 *     L summed in double from the float forward;
 *   - backward accumulates: run on a pre-filled gradient buffer it adds exactly its gradient.
 * Sizes are small so the whole program runs in about a second. */
#include <stdint.h>

#include "model/ops.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------------------ */


static float *rand_f(size_t n, float scale) {
    float *p = alloc_f(n);
    for (size_t i = 0; i < n; i++) p[i] = scale * frand();
    return p;
}

static float *copy_f(const float *src, size_t n) {
    float *p = alloc_f(n);
    memcpy(p, src, n * sizeof(float));
    return p;
}

static double dot_d(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Check a fixture tensor has the expected element count before comparing. */
static float *fx(hid_t f, const char *path, size_t want) {
    size_t n;
    float *p = tu_read(f, path, &n);
    if (n != want) {
        fprintf(stderr, "fixture %s has %zu elements, expected %zu\n---> HINT: regenerate it "
                        "with tests/reference/ops_ref.py\n", path, n, want);
        exit(1);
    }
    return p;
}

static double fx_attr(hid_t f, const char *obj, const char *name) {
    double v;
    hid_t a = H5Aopen_by_name(f, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) {
        fprintf(stderr, "fixture attribute %s/%s is missing\n", obj, name);
        exit(1);
    }
    H5Aclose(a);
    return v;
}

static int fx_int(hid_t f, const char *obj, const char *name) {
    return (int)fx_attr(f, obj, name);
}

/* Finite-difference check of one input x (n): loss() recomputes L from the current x. The
 * perturbation actually applied is measured in double, since x +- eps rounds in float. */
static void check_fd(const char *name, float *x, size_t n, const float *grad, double (*loss)(void),
                     float eps, float rtol, float atol) {
    float *fd = alloc_f(n);
    for (size_t i = 0; i < n; i++) {
        float x0 = x[i];
        float xp = x0 + eps, xm = x0 - eps;
        x[i] = xp;
        double lp = loss();
        x[i] = xm;
        double lm = loss();
        x[i] = x0;
        fd[i] = (float)((lp - lm) / ((double)xp - (double)xm));
    }
    char full[256];
    snprintf(full, sizeof full, "%s vs finite differences", name);
    tu_close(full, grad, fd, n, rtol, atol);
    free(fd);
}

/* after = prefill + grad, up to one rounding of the sum. */
static void check_accum(const char *name, const float *after, const float *prefill,
                        const float *grad, size_t n) {
    float *added = alloc_f(n);
    for (size_t i = 0; i < n; i++) added[i] = after[i] - prefill[i];
    char full[256];
    snprintf(full, sizeof full, "%s accumulates (+=)", name);
    tu_close(full, added, grad, n, 1e-5f, 1e-6f);
    free(added);
}

static void close_named(const char *op, const char *tensor, const float *got, const float *want,
                        size_t n, float rtol, float atol) {
    char full[256];
    snprintf(full, sizeof full, "%s %s", op, tensor);
    tu_close(full, got, want, n, rtol, atol);
}

/* For reductions with cancellation (attention): the absolute tolerance is relative to the
 * largest element of the reference, since near-zero elements carry the rounding of large sums. */
static void close_scaled(const char *op, const char *tensor, const float *got, const float *want,
                         size_t n, float rtol, float scaled_atol) {
    float mx = 0.0f;
    for (size_t i = 0; i < n; i++) mx = fabsf(want[i]) > mx ? fabsf(want[i]) : mx;
    close_named(op, tensor, got, want, n, rtol, scaled_atol * mx);
}

/* FD tolerances: float forward, eps 1e-3, so L carries ~1e-7 relative noise amplified ~1e3 */
#define FD_RTOL 1e-2f
#define FD_ATOL 2e-3f

/* ---- gemm and linear ---------------------------------------------------------------------- */

static void test_gemm(void) {
    const int shapes[][3] = {{5, 7, 6}, {70, 50, 300}, {1, 9, 4}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int nt = 0; nt < 2; nt++) {
                    int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
                    /* padded row strides: the routine must honour lda/ldb/ldc */
                    int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 5;
                    float *a = rand_f((size_t)(ta ? k : m) * lda, 1.0f);
                    float *b = rand_f((size_t)(tb ? n : k) * ldb, 1.0f);
                    float *c = rand_f((size_t)m * ldc, 1.0f);
                    float *want = copy_f(c, (size_t)m * ldc);
                    float *bound = alloc_f((size_t)m * ldc); /* 0 on the padding: untouched */
                    float alpha = 0.7f, beta = 0.4f;
                    /* Any float32 summation order, with or without FMA, is within the
                     * classical bound gamma_k * sum_p |a_ip b_pj| of the exact dot product
                     * (gamma_k = k u / (1 - k u), u = 2^-24), then scaled by alpha, plus beta c
                     * and the final roundings (2 u of each). It holds for every BLIS kernel
                     * set and thread split; a dropped or misplaced term is off by |a b|. */
                    const double u = ldexp(1.0, -24), gk = k * u / (1.0 - k * u);
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++) {
                            double acc = 0.0, mag = 0.0;
                            for (int p = 0; p < k; p++) {
                                double t = (double)(ta ? a[(size_t)p * lda + i]
                                                       : a[(size_t)i * lda + p]) *
                                           (tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j]);
                                acc += t, mag += fabs(t);
                            }
                            double cij = beta * want[(size_t)i * ldc + j];
                            double r = alpha * acc + cij;
                            want[(size_t)i * ldc + j] = (float)r;
                            bound[(size_t)i * ldc + j] =
                                (float)(alpha * gk * mag + 2 * u * (alpha * mag + fabs(cij)) +
                                        u * fabs(r));
                        }
                    gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, nt ? 1 : 0);
                    char name[128];
                    snprintf(name, sizeof name, "gemm m%d n%d k%d ta%d tb%d nthreads%d", m, n, k,
                             ta, tb, nt ? 1 : 0);
                    /* the whole padded C: padding columns must be untouched (bound 0) */
                    snprintf(name + strlen(name), sizeof name - strlen(name), " C");
                    tu_close_bound(name, c, want, bound, (size_t)m * ldc);
                    free(a), free(b), free(c), free(want), free(bound);
                }
}

static struct {
    int N, IC, OC, ldw;
    float *inp, *w, *b, *out, *g;
} lin;

static double linear_loss(void) {
    linear_forward(lin.out, lin.inp, lin.w, lin.ldw, lin.b, lin.N, lin.IC, lin.OC);
    return dot_d(lin.out, lin.g, (size_t)lin.N * lin.OC);
}

static void test_linear(hid_t f) {
    /* against torch */
    int N = 9, IC = 13, OC = 7;
    float *inp = fx(f, "linear/inp", (size_t)N * IC), *w = fx(f, "linear/w", (size_t)OC * IC);
    float *b = fx(f, "linear/b", OC), *out = alloc_f((size_t)N * OC);
    float *dout = fx(f, "linear/dout", (size_t)N * OC);
    float *dinp = alloc_f((size_t)N * IC), *dw = alloc_f((size_t)OC * IC), *db = alloc_f(OC);
    linear_forward(out, inp, w, IC, b, N, IC, OC);
    float *want = fx(f, "linear/out", (size_t)N * OC);
    close_named("linear", "out vs torch", out, want, (size_t)N * OC, 1e-5f, 1e-5f);
    free(want);
    linear_backward(dinp, dw, db, dout, inp, w, IC, N, IC, OC);
    want = fx(f, "linear/dinp", (size_t)N * IC);
    close_named("linear", "dinp vs torch", dinp, want, (size_t)N * IC, 1e-5f, 1e-5f);
    free(want);
    want = fx(f, "linear/dw", (size_t)OC * IC);
    close_named("linear", "dw vs torch", dw, want, (size_t)OC * IC, 1e-5f, 1e-5f);
    free(want);
    want = fx(f, "linear/db", OC);
    close_named("linear", "db vs torch", db, want, OC, 1e-5f, 1e-5f);
    free(want);
    free(inp), free(w), free(b), free(out), free(dout), free(dinp), free(dw), free(db);

    /* finite differences, with a weight row stride ldw > IC (a slice of a fused matrix) */
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        lin.N = 4, lin.IC = 6, lin.OC = 5, lin.ldw = 9;
        lin.inp = rand_f((size_t)lin.N * lin.IC, 1.0f);
        lin.w = rand_f((size_t)lin.OC * lin.ldw, 1.0f);
        lin.b = with_bias ? rand_f(lin.OC, 1.0f) : NULL;
        lin.out = alloc_f((size_t)lin.N * lin.OC);
        lin.g = rand_f((size_t)lin.N * lin.OC, 1.0f);
        size_t ni = (size_t)lin.N * lin.IC, nw = (size_t)lin.OC * lin.ldw;
        float *gi = alloc_f(ni), *gw = alloc_f(nw), *gb = alloc_f(lin.OC);
        linear_backward(gi, gw, with_bias ? gb : NULL, lin.g, lin.inp, lin.w, lin.ldw, lin.N,
                        lin.IC, lin.OC);
        const char *tag = with_bias ? "linear (bias, ldw 9)" : "linear (no bias, ldw 9)";
        char name[128];
        snprintf(name, sizeof name, "%s dinp", tag);
        check_fd(name, lin.inp, ni, gi, linear_loss, 1e-2f, FD_RTOL, FD_ATOL);
        /* the padding columns of w are outside the matrix: their gradient must stay 0 */
        snprintf(name, sizeof name, "%s dw (incl. padding)", tag);
        check_fd(name, lin.w, nw, gw, linear_loss, 1e-2f, FD_RTOL, FD_ATOL);
        if (with_bias) {
            snprintf(name, sizeof name, "%s db", tag);
            check_fd(name, lin.b, lin.OC, gb, linear_loss, 1e-2f, FD_RTOL, FD_ATOL);
        }
        float *pi = rand_f(ni, 1.0f), *pw = rand_f(nw, 1.0f), *pb = rand_f(lin.OC, 1.0f);
        float *ai = copy_f(pi, ni), *aw = copy_f(pw, nw), *ab = copy_f(pb, lin.OC);
        linear_backward(ai, aw, with_bias ? ab : NULL, lin.g, lin.inp, lin.w, lin.ldw, lin.N,
                        lin.IC, lin.OC);
        snprintf(name, sizeof name, "%s dinp", tag);
        check_accum(name, ai, pi, gi, ni);
        snprintf(name, sizeof name, "%s dw", tag);
        check_accum(name, aw, pw, gw, nw);
        if (with_bias) {
            snprintf(name, sizeof name, "%s db", tag);
            check_accum(name, ab, pb, gb, lin.OC);
        }
        free(lin.inp), free(lin.w), free(lin.b), free(lin.out), free(lin.g);
        free(gi), free(gw), free(gb), free(pi), free(pw), free(pb), free(ai), free(aw), free(ab);
    }
}

/* ---- layernorm ---------------------------------------------------------------------------- */

static struct {
    int N, C;
    float *inp, *w, *b, *out, *mean, *rstd, *g;
} ln;

static double layernorm_loss(void) {
    layernorm_forward(ln.out, ln.mean, ln.rstd, ln.inp, ln.w, ln.b, ln.N, ln.C, 1e-5f);
    return dot_d(ln.out, ln.g, (size_t)ln.N * ln.C);
}

static void test_layernorm(hid_t f) {
    const char *cases[] = {"c96", "c768"};
    const int Ns[] = {7, 5}, Cs[] = {96, 768};
    for (int k = 0; k < 2; k++) {
        int N = Ns[k], C = Cs[k];
        size_t n = (size_t)N * C;
        char path[128], op[64];
        snprintf(op, sizeof op, "layernorm/%s", cases[k]);
#define LN_FX(name, cnt) (snprintf(path, sizeof path, "%s/" name, op), fx(f, path, cnt))
        float *inp = LN_FX("inp", n), *w = LN_FX("w", C), *b = LN_FX("b", C);
        float *dout = LN_FX("dout", n);
        float *out = alloc_f(n), *mean = alloc_f(N), *rstd = alloc_f(N);
        float eps = (float)fx_attr(f, op, "eps");
        layernorm_forward(out, mean, rstd, inp, w, b, N, C, eps);
        float *want = LN_FX("out", n);
        close_named(op, "out vs torch", out, want, n, 1e-5f, 1e-5f);
        free(want);
        want = LN_FX("mean", N);
        close_named(op, "mean vs torch", mean, want, N, 1e-6f, 1e-6f);
        free(want);
        want = LN_FX("rstd", N);
        close_named(op, "rstd vs torch", rstd, want, N, 1e-6f, 1e-6f);
        free(want);
        float *dinp = alloc_f(n), *dw = alloc_f(C), *db = alloc_f(C);
        layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
        want = LN_FX("dinp", n);
        close_named(op, "dinp vs torch", dinp, want, n, 1e-4f, 1e-5f);
        free(want);
        want = LN_FX("dw", C);
        close_named(op, "dw vs torch", dw, want, C, 1e-5f, 1e-5f);
        free(want);
        want = LN_FX("db", C);
        close_named(op, "db vs torch", db, want, C, 1e-5f, 1e-5f);
        free(want);
#undef LN_FX
        /* each gradient output alone (the others NULL) gives the same numbers */
        float *dinp1 = alloc_f(n), *dw1 = alloc_f(C), *db1 = alloc_f(C);
        layernorm_backward(dinp1, NULL, NULL, dout, inp, w, mean, rstd, N, C);
        layernorm_backward(NULL, dw1, NULL, dout, inp, w, mean, rstd, N, C);
        layernorm_backward(NULL, NULL, db1, dout, inp, w, mean, rstd, N, C);
        close_named(op, "dinp alone", dinp1, dinp, n, 0.0f, 0.0f);
        close_named(op, "dw alone", dw1, dw, C, 0.0f, 0.0f);
        close_named(op, "db alone", db1, db, C, 0.0f, 0.0f);
        free(inp), free(w), free(b), free(dout), free(out), free(mean), free(rstd);
        free(dinp), free(dw), free(db), free(dinp1), free(dw1), free(db1);
    }

    ln.N = 3, ln.C = 10;
    size_t n = (size_t)ln.N * ln.C;
    ln.inp = rand_f(n, 2.0f), ln.w = rand_f(ln.C, 1.0f), ln.b = rand_f(ln.C, 1.0f);
    ln.out = alloc_f(n), ln.mean = alloc_f(ln.N), ln.rstd = alloc_f(ln.N), ln.g = rand_f(n, 1.0f);
    for (size_t i = 0; i < n; i++) ln.inp[i] += 1.5f; /* a non-zero mean */
    layernorm_loss();
    float *gi = alloc_f(n), *gw = alloc_f(ln.C), *gb = alloc_f(ln.C);
    layernorm_backward(gi, gw, gb, ln.g, ln.inp, ln.w, ln.mean, ln.rstd, ln.N, ln.C);
    check_fd("layernorm dinp", ln.inp, n, gi, layernorm_loss, 1e-3f, FD_RTOL, FD_ATOL);
    check_fd("layernorm dw", ln.w, ln.C, gw, layernorm_loss, 1e-3f, FD_RTOL, FD_ATOL);
    check_fd("layernorm db", ln.b, ln.C, gb, layernorm_loss, 1e-3f, FD_RTOL, FD_ATOL);
    layernorm_loss(); /* mean and rstd of the unperturbed input again */
    float *pi = rand_f(n, 1.0f), *pw = rand_f(ln.C, 1.0f), *pb = rand_f(ln.C, 1.0f);
    float *ai = copy_f(pi, n), *aw = copy_f(pw, ln.C), *ab = copy_f(pb, ln.C);
    layernorm_backward(ai, aw, ab, ln.g, ln.inp, ln.w, ln.mean, ln.rstd, ln.N, ln.C);
    check_accum("layernorm dinp", ai, pi, gi, n);
    check_accum("layernorm dw", aw, pw, gw, ln.C);
    check_accum("layernorm db", ab, pb, gb, ln.C);
    free(ln.inp), free(ln.w), free(ln.b), free(ln.out), free(ln.mean), free(ln.rstd), free(ln.g);
    free(gi), free(gw), free(gb), free(pi), free(pw), free(pb), free(ai), free(aw), free(ab);
}

/* ---- activations -------------------------------------------------------------------------- */

static struct {
    size_t n;
    int kind;
    float *inp, *out, *g;
} act;

static double act_loss(void) {
    act_forward(act.out, act.inp, act.n, act.kind);
    return dot_d(act.out, act.g, act.n);
}

static void test_activation(hid_t f) {
    const char *names[] = {"quickgelu", "gelu"};
    const int kinds[] = {ACT_QUICKGELU, ACT_GELU};
    size_t n = 301;
    float *inp = fx(f, "act/inp", n), *dout = fx(f, "act/dout", n);
    for (int k = 0; k < 2; k++) {
        char path[64], op[64];
        snprintf(op, sizeof op, "act %s", names[k]);
        float *out = alloc_f(n), *dinp = alloc_f(n);
        act_forward(out, inp, n, kinds[k]);
        snprintf(path, sizeof path, "act/%s", names[k]);
        float *want = fx(f, path, n);
        close_named(op, "out vs torch", out, want, n, 1e-5f, 1e-6f);
        free(want);
        act_backward(dinp, dout, inp, n, kinds[k]);
        snprintf(path, sizeof path, "act/d%s", names[k]);
        want = fx(f, path, n);
        close_named(op, "dinp vs torch", dinp, want, n, 1e-5f, 1e-6f);
        free(want);
        /* torch's float kernels approximate (its vectorised erf is good to 1.5e-7 absolute);
         * against the float64 values rounded once, the error is a few float ulps */
        snprintf(path, sizeof path, "act/%s64", names[k]);
        want = fx(f, path, n);
        close_named(op, "out vs float64", out, want, n, 3e-7f, 1e-30f);
        free(want);
        snprintf(path, sizeof path, "act/d%s64", names[k]);
        want = fx(f, path, n);
        /* the derivative crosses zero where its two terms (each ~|dout|) cancel */
        close_named(op, "dinp vs float64", dinp, want, n, 3e-7f, 1e-7f);
        free(want), free(out), free(dinp);

        act.n = 64, act.kind = kinds[k];
        act.inp = rand_f(act.n, 4.0f), act.out = alloc_f(act.n), act.g = rand_f(act.n, 1.0f);
        float *gi = alloc_f(act.n);
        act_backward(gi, act.g, act.inp, act.n, act.kind);
        check_fd(op, act.inp, act.n, gi, act_loss, 1e-3f, FD_RTOL, FD_ATOL);
        float *pi = rand_f(act.n, 1.0f), *ai = copy_f(pi, act.n);
        act_backward(ai, act.g, act.inp, act.n, act.kind);
        check_accum(op, ai, pi, gi, act.n);
        free(act.inp), free(act.out), free(act.g), free(gi), free(pi), free(ai);
    }
    free(inp), free(dout);
}

/* ---- attention ---------------------------------------------------------------------------- */

static struct {
    int B, T, C, H;
    float *qkv, *out, *lse, *scratch, *g;
} att;

static double attention_loss(void) {
    attention_forward(att.out, att.lse, att.qkv, att.scratch, att.B, att.T, att.C, att.H);
    return dot_d(att.out, att.g, (size_t)att.B * att.T * att.C);
}

/* The per-element error bound of a float32 attention forward (see test_attention); with
 * causal, row i over keys 0..i. */
static void attention_bound(float *bound, const float *qkv, int B, int T, int C, int H,
                            int causal) {
    int D = C / H, C3 = 3 * C;
    const double u = ldexp(1.0, -24), gT = T * u / (1 - T * u), gD = D * u / (1 - D * u);
    double *s = malloc((size_t)T * sizeof(double)), *mag = malloc((size_t)T * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const float *q = qkv + ((size_t)b * T + i) * C3 + h * D;
                double mx = -INFINITY, smag = 0.0, z = 0.0;
                int nk = causal ? i + 1 : T;
                for (int j = 0; j < nk; j++) {
                    const float *kk = qkv + ((size_t)b * T + j) * C3 + C + h * D;
                    double d = 0.0, m = 0.0;
                    for (int e = 0; e < D; e++) d += (double)q[e] * kk[e], m += fabs((double)q[e] * kk[e]);
                    s[j] = d / sqrt((double)D), mag[j] = m / sqrt((double)D);
                    mx = s[j] > mx ? s[j] : mx;
                    smag = mag[j] > smag ? mag[j] : smag;
                }
                for (int j = 0; j < nk; j++) z += exp(s[j] - mx);
                double eps_p = gD * smag + 8 * u;
                for (int e = 0; e < D; e++) {
                    double a = 0.0, o = 0.0;
                    for (int j = 0; j < nk; j++) {
                        double p = exp(s[j] - mx) / z;
                        double v = qkv[((size_t)b * T + j) * C3 + 2 * C + h * D + e];
                        a += p * fabs(v), o += p * v;
                    }
                    bound[((size_t)b * T + i) * C + h * D + e] =
                        (float)((gT + eps_p) * a + u * fabs(o));
                }
            }
    free(s), free(mag);
}

static void test_attention(hid_t f) {
    const char *groups[] = {"attention", "attention_long"};
    const int Bs[] = {2, 1}, Ts[] = {11, 300}, Cs[] = {24, 16};
    for (int k = 0; k < 2; k++) {
        int B = Bs[k], T = Ts[k], C = Cs[k], H = fx_int(f, groups[k], "H");
        size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * H * T;
        char path[128];
#define ATT_FX(name, cnt) (snprintf(path, sizeof path, "%s/" name, groups[k]), fx(f, path, cnt))
        float *qkv = ATT_FX("qkv", nq), *dout = ATT_FX("dout", no);
        float *out = alloc_f(no), *lse = alloc_f(nl), *dqkv = alloc_f(nq);
        float *scratch = alloc_f(attention_scratch_floats(T, cs_num_threads()));
        attention_forward(out, lse, qkv, scratch, B, T, C, H);
        float *want = ATT_FX("out", no);
        /* The reference is float64, so the difference is this float32 computation's error,
         * bounded per element: out_i = sum_j P_ij v_j in float32 is within
         * gamma_T sum_j P_ij |v_j| of the sum of its rounded terms, and each P_ij carries the
         * error of its score s_ij = q.k / sqrt(D) (gamma_D sum_d |q_d k_d| / sqrt(D), which
         * exp turns into a relative error) and of the exp, max and division (8 u, for the
         * vectorised exp's 2 ulp and three roundings). So
         *   |out_i - exact| <= (gamma_T + gamma_D max_j sum_d |q_d k_d| / sqrt(D) + 8 u)
         *                      * sum_j P_ij |v_j| + u |out_i|.
         * This holds for any kernel set or thread split. (The former 1e-4 |want| + 1e-6
         * max|want| was at the rounding's typical size: half of it was used on haswell.) */
        float *bound = alloc_f(no);
        attention_bound(bound, qkv, B, T, C, H, 0);
        char bname[64];
        snprintf(bname, sizeof bname, "%s out vs torch (float64)", groups[k]);
        tu_close_bound(bname, out, want, bound, no);
        free(bound);
        free(want);
        want = ATT_FX("lse", nl);
        close_scaled(groups[k], "lse vs torch", lse, want, nl, 1e-5f, 1e-6f);
        free(want);
        attention_backward(dqkv, dout, qkv, out, lse, scratch, B, T, C, H);
        want = ATT_FX("dqkv", nq);
        close_scaled(groups[k], "dqkv vs torch", dqkv, want, nq, 1e-4f, 1e-5f);
        free(want);
#undef ATT_FX
        free(qkv), free(dout), free(out), free(lse), free(dqkv), free(scratch);
    }

    att.B = 2, att.T = 5, att.C = 8, att.H = 2;
    size_t nq = (size_t)att.B * att.T * 3 * att.C, no = (size_t)att.B * att.T * att.C;
    att.qkv = rand_f(nq, 1.5f), att.out = alloc_f(no), att.g = rand_f(no, 1.0f);
    att.lse = alloc_f((size_t)att.B * att.H * att.T);
    att.scratch = alloc_f(attention_scratch_floats(att.T, cs_num_threads()));
    attention_loss();
    float *gq = alloc_f(nq);
    attention_backward(gq, att.g, att.qkv, att.out, att.lse, att.scratch, att.B, att.T, att.C,
                       att.H);
    check_fd("attention dqkv", att.qkv, nq, gq, attention_loss, 1e-3f, FD_RTOL, FD_ATOL);
    attention_loss();
    float *pq = rand_f(nq, 1.0f), *aq = copy_f(pq, nq);
    attention_backward(aq, att.g, att.qkv, att.out, att.lse, att.scratch, att.B, att.T, att.C,
                       att.H);
    check_accum("attention dqkv", aq, pq, gq, nq);
    free(att.qkv), free(att.out), free(att.g), free(att.lse), free(att.scratch);
    free(gq), free(pq), free(aq);
}

/* The block edges of the fused attention (blocks of 128 query rows and 128 keys): T = 1, 7,
 * 127, 129, 259, B = 2 or 1, 2-3 heads of D = 64, 32 or 16 (the AVX-512 path; the cases above
 * have D = 8 and 4, the portable one), causal and not, against float64 torch. The same
 * tolerances as test_attention: the per-element bound for out, 1e-5 for lse and 1e-4 (plus
 * 1e-5 of the largest) for dqkv. */
static void test_attention_edges(hid_t f) {
    const char *names[] = {"t1", "t7", "t127", "t129", "t259"};
    for (size_t c = 0; c < sizeof names / sizeof names[0]; c++) {
        char grp[64], path[128], label[128];
        snprintf(grp, sizeof grp, "attention_edges/%s", names[c]);
        int B = fx_int(f, grp, "B"), T = fx_int(f, grp, "T"), C = fx_int(f, grp, "C");
        int H = fx_int(f, grp, "H");
        size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * H * T;
#define EDGE_FX(name, cnt) (snprintf(path, sizeof path, "%s/" name, grp), fx(f, path, cnt))
        float *qkv = EDGE_FX("qkv", nq), *dout = EDGE_FX("dout", no);
        float *out = alloc_f(no), *lse = alloc_f(nl), *dqkv = alloc_f(nq), *bound = alloc_f(no);
        float *scratch = alloc_f(attention_scratch_floats(T, cs_num_threads()));
        for (int causal = 0; causal < 2; causal++) {
            const char *how = causal ? "causal" : "full";
            if (causal) attention_forward_causal(out, lse, qkv, scratch, B, T, C, H);
            else attention_forward(out, lse, qkv, scratch, B, T, C, H);
            float *want = causal ? EDGE_FX("out_causal", no) : EDGE_FX("out", no);
            attention_bound(bound, qkv, B, T, C, H, causal);
            snprintf(label, sizeof label, "%s %s out vs torch (float64)", grp, how);
            tu_close_bound(label, out, want, bound, no);
            free(want);
            want = causal ? EDGE_FX("lse_causal", nl) : EDGE_FX("lse", nl);
            snprintf(label, sizeof label, "%s %s", grp, how);
            close_scaled(label, "lse vs torch", lse, want, nl, 1e-5f, 1e-6f);
            free(want);
        }
        attention_forward(out, lse, qkv, scratch, B, T, C, H);
        attention_backward(dqkv, dout, qkv, out, lse, scratch, B, T, C, H);
        float *want = EDGE_FX("dqkv", nq);
        close_scaled(grp, "dqkv vs torch", dqkv, want, nq, 1e-4f, 1e-5f);
        free(want);
#undef EDGE_FX
        free(qkv), free(dout), free(out), free(lse), free(dqkv), free(bound), free(scratch);
    }
}

/* ---- patch embedding ---------------------------------------------------------------------- */

static struct {
    int B, H, W, P, C;
    float *img, *w, *cols, *out, *g;
} pe;

static double patch_embed_loss(void) {
    patch_embed_forward(pe.out, pe.cols, pe.img, pe.w, pe.B, pe.H, pe.W, pe.P, pe.C);
    return dot_d(pe.out, pe.g, (size_t)pe.B * (pe.H / pe.P) * (pe.W / pe.P) * pe.C);
}

static void test_patch_embed(hid_t f) {
    int B = 2, H = 12, W = 16, C = 10, P = fx_int(f, "patch_embed", "P");
    int N = (H / P) * (W / P), K = 3 * P * P;
    size_t ni = (size_t)B * 3 * H * W, nw = (size_t)C * K, no = (size_t)B * N * C;
    float *img = fx(f, "patch_embed/img", ni), *w = fx(f, "patch_embed/w", nw);
    float *dout = fx(f, "patch_embed/dout", no);
    float *cols = alloc_f((size_t)B * N * K), *out = alloc_f(no);
    float *dw = alloc_f(nw), *dimg = alloc_f(ni);
    patch_embed_forward(out, cols, img, w, B, H, W, P, C);
    float *want = fx(f, "patch_embed/out", no);
    close_named("patch_embed", "out vs torch conv2d", out, want, no, 1e-5f, 1e-5f);
    free(want);
    patch_embed_backward(dw, dimg, dout, cols, w, B, H, W, P, C);
    want = fx(f, "patch_embed/dw", nw);
    close_named("patch_embed", "dw vs torch", dw, want, nw, 1e-5f, 1e-5f);
    free(want);
    want = fx(f, "patch_embed/dimg", ni);
    close_named("patch_embed", "dimg vs torch", dimg, want, ni, 1e-5f, 1e-5f);
    free(want);
    free(img), free(w), free(dout), free(cols), free(out), free(dw), free(dimg);

    pe.B = 2, pe.H = 4, pe.W = 6, pe.P = 2, pe.C = 3;
    N = (pe.H / pe.P) * (pe.W / pe.P), K = 3 * pe.P * pe.P;
    ni = (size_t)pe.B * 3 * pe.H * pe.W, nw = (size_t)pe.C * K, no = (size_t)pe.B * N * pe.C;
    pe.img = rand_f(ni, 1.0f), pe.w = rand_f(nw, 1.0f), pe.g = rand_f(no, 1.0f);
    pe.cols = alloc_f((size_t)pe.B * N * K), pe.out = alloc_f(no);
    patch_embed_loss();
    float *gw = alloc_f(nw), *gi = alloc_f(ni);
    patch_embed_backward(gw, gi, pe.g, pe.cols, pe.w, pe.B, pe.H, pe.W, pe.P, pe.C);
    check_fd("patch_embed dimg", pe.img, ni, gi, patch_embed_loss, 1e-2f, FD_RTOL, FD_ATOL);
    check_fd("patch_embed dw", pe.w, nw, gw, patch_embed_loss, 1e-2f, FD_RTOL, FD_ATOL);
    patch_embed_loss();
    float *pw = rand_f(nw, 1.0f), *pi = rand_f(ni, 1.0f);
    float *aw = copy_f(pw, nw), *ai = copy_f(pi, ni);
    patch_embed_backward(aw, ai, pe.g, pe.cols, pe.w, pe.B, pe.H, pe.W, pe.P, pe.C);
    check_accum("patch_embed dw", aw, pw, gw, nw);
    check_accum("patch_embed dimg", ai, pi, gi, ni);
    float *aw1 = copy_f(pw, nw);
    patch_embed_backward(aw1, NULL, pe.g, pe.cols, pe.w, pe.B, pe.H, pe.W, pe.P, pe.C);
    close_named("patch_embed", "dw with dimg NULL", aw1, aw, nw, 0.0f, 0.0f);
    free(pe.img), free(pe.w), free(pe.g), free(pe.cols), free(pe.out);
    free(gw), free(gi), free(pw), free(pi), free(aw), free(ai), free(aw1);
}

/* ---- bicubic resize ----------------------------------------------------------------------- */

static void test_bicubic(hid_t f) {
    const char *cases[] = {"up_8x8_8x12", "up_14x14_64x64", "down_14x14_7x5", "id_6x6_6x6",
                           "mixed_7x9_13x4"};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char obj[64], path[128];
        snprintf(obj, sizeof obj, "bicubic/%s", cases[k]);
        int ih = fx_int(f, obj, "ih"), iw = fx_int(f, obj, "iw"), oh = fx_int(f, obj, "oh");
        int ow = fx_int(f, obj, "ow"), C = fx_int(f, obj, "C");
        snprintf(path, sizeof path, "%s/inp", obj);
        float *inp = fx(f, path, (size_t)ih * iw * C);
        snprintf(path, sizeof path, "%s/out", obj);
        float *want = fx(f, path, (size_t)oh * ow * C);
        float *out = alloc_f((size_t)oh * ow * C);
        bicubic_resize(out, inp, ih, iw, oh, ow, C);
        /* the same float arithmetic as PyTorch: equal up to the last bit or so */
        close_named(obj, "out vs torch F.interpolate", out, want, (size_t)oh * ow * C, 1e-6f,
                    1e-6f);
        free(inp), free(want), free(out);
    }
}

/* ---- L2 normalisation and the cosine loss ------------------------------------------------- */

static struct {
    int N, C;
    float *inp, *out, *norm, *g;
} l2;

static double l2norm_loss(void) {
    l2norm_forward(l2.out, l2.norm, l2.inp, l2.N, l2.C);
    return dot_d(l2.out, l2.g, (size_t)l2.N * l2.C);
}

static struct {
    int N, C;
    float *s, *t;
} cs;

static double cosine_loss(void) { return cosine_loss_forward(cs.s, cs.t, cs.N, cs.C); }

static void test_normalize(hid_t f) {
    int N = 4, C = 10;
    size_t n = (size_t)N * C;
    float *inp = fx(f, "l2norm/inp", n), *out = alloc_f(n), *norm = alloc_f(N);
    l2norm_forward(out, norm, inp, N, C);
    float *want = fx(f, "l2norm/out", n);
    close_named("l2norm", "out vs torch F.normalize (zero row incl.)", out, want, n, 1e-6f,
                1e-7f);
    free(want), free(inp);
    inp = fx(f, "l2norm/ginp", n);
    float *dout = fx(f, "l2norm/gdout", n), *dinp = alloc_f(n);
    l2norm_forward(out, norm, inp, N, C);
    l2norm_backward(dinp, dout, out, norm, N, C);
    want = fx(f, "l2norm/gdinp", n);
    close_named("l2norm", "dinp vs torch", dinp, want, n, 1e-5f, 1e-6f);
    free(want), free(inp), free(out), free(norm), free(dout), free(dinp);

    l2.N = 3, l2.C = 7;
    n = (size_t)l2.N * l2.C;
    l2.inp = rand_f(n, 1.0f), l2.out = alloc_f(n), l2.norm = alloc_f(l2.N), l2.g = rand_f(n, 1.0f);
    l2norm_loss();
    float *gi = alloc_f(n);
    l2norm_backward(gi, l2.g, l2.out, l2.norm, l2.N, l2.C);
    check_fd("l2norm dinp", l2.inp, n, gi, l2norm_loss, 1e-3f, FD_RTOL, FD_ATOL);
    l2norm_loss();
    float *pi = rand_f(n, 1.0f), *ai = copy_f(pi, n);
    l2norm_backward(ai, l2.g, l2.out, l2.norm, l2.N, l2.C);
    check_accum("l2norm dinp", ai, pi, gi, n);
    free(l2.inp), free(l2.out), free(l2.norm), free(l2.g), free(gi), free(pi), free(ai);

    N = 6, C = 16, n = (size_t)N * C;
    float *s = fx(f, "cosine/s", n), *t = fx(f, "cosine/t", n), *ds = alloc_f(n);
    float loss = cosine_loss_forward(s, t, N, C);
    want = fx(f, "cosine/loss", 1);
    close_named("cosine_loss", "loss vs torch", &loss, want, 1, 1e-6f, 1e-6f);
    free(want);
    cosine_loss_backward(ds, t, 1.0f, N, C);
    want = fx(f, "cosine/ds", n);
    close_named("cosine_loss", "ds vs torch", ds, want, n, 1e-6f, 1e-7f);
    free(want), free(s), free(t), free(ds);

    /* the loss is linear in s: differences with a large step are exact up to rounding */
    cs.N = 3, cs.C = 5, n = (size_t)cs.N * cs.C;
    cs.s = rand_f(n, 1.0f), cs.t = rand_f(n, 1.0f);
    float *gs = alloc_f(n), dloss = 0.7f;
    cosine_loss_backward(gs, cs.t, 1.0f, cs.N, cs.C);
    check_fd("cosine_loss ds", cs.s, n, gs, cosine_loss, 1e-2f, FD_RTOL, FD_ATOL);
    float *ps = rand_f(n, 1.0f), *as = copy_f(ps, n);
    cosine_loss_backward(as, cs.t, dloss, cs.N, cs.C);
    for (size_t i = 0; i < n; i++) gs[i] *= dloss;
    check_accum("cosine_loss ds (dloss 0.7)", as, ps, gs, n);
    free(cs.s), free(cs.t), free(gs), free(ps), free(as);
}

/* ---- roi_align ---------------------------------------------------------------------------- */

static struct {
    int R, B, FH, FW, C, PH, PW, sr;
    float scale;
    float *feat, *boxes, *out, *g;
} ra;

static double roi_align_loss(void) {
    roi_align_forward(ra.out, ra.feat, ra.boxes, ra.R, ra.B, ra.FH, ra.FW, ra.C, ra.PH, ra.PW,
                      ra.scale, ra.sr);
    return dot_d(ra.out, ra.g, (size_t)ra.R * ra.PH * ra.PW * ra.C);
}

static void test_roi_align(hid_t f) {
    const char *cases[] = {"out1x1", "out2x3", "out2x3_scale_half_sr2"};
    int R = 9, B = 2, FH = 7, FW = 9, C = 5;
    size_t nf = (size_t)B * FH * FW * C;
    for (int k = 0; k < 3; k++) {
        char obj[64], path[128];
        snprintf(obj, sizeof obj, "roi_align/%s", cases[k]);
        int PH = fx_int(f, obj, "PH"), PW = fx_int(f, obj, "PW"), sr = fx_int(f, obj, "sr");
        float scale = (float)fx_attr(f, obj, "scale");
        size_t no = (size_t)R * PH * PW * C;
#define RA_FX(name, cnt) (snprintf(path, sizeof path, "%s/" name, obj), fx(f, path, cnt))
        float *feat = RA_FX("feat", nf), *boxes = RA_FX("boxes", (size_t)R * 5);
        float *dout = RA_FX("dout", no), *out = alloc_f(no), *dfeat = alloc_f(nf);
        roi_align_forward(out, feat, boxes, R, B, FH, FW, C, PH, PW, scale, sr);
        float *want = RA_FX("out", no);
        close_named(obj, "out vs torchvision", out, want, no, 1e-6f, 1e-6f);
        free(want);
        roi_align_backward(dfeat, dout, boxes, R, B, FH, FW, C, PH, PW, scale, sr);
        want = RA_FX("dfeat", nf);
        close_named(obj, "dfeat vs torchvision", dfeat, want, nf, 1e-5f, 1e-6f);
        free(want);
#undef RA_FX
        free(feat), free(boxes), free(dout), free(out), free(dfeat);
    }

    /* roi_align is linear in the features, so differences are exact up to rounding; the boxes
     * cover borders, out-of-map samples and several bins, with non-integer sample points */
    static float boxes[] = {0, 0.3f, 0.6f, 3.7f, 2.9f, 1, -1.2f, 1.1f, 2.45f, 4.3f,
                            1, 2.2f, -0.8f, 5.7f, 1.35f};
    ra.R = 3, ra.B = 2, ra.FH = 4, ra.FW = 5, ra.C = 3, ra.PH = 2, ra.PW = 2, ra.sr = -1;
    ra.scale = 1.0f, ra.boxes = boxes;
    nf = (size_t)ra.B * ra.FH * ra.FW * ra.C;
    size_t no = (size_t)ra.R * ra.PH * ra.PW * ra.C;
    ra.feat = rand_f(nf, 1.0f), ra.out = alloc_f(no), ra.g = rand_f(no, 1.0f);
    float *gf = alloc_f(nf);
    roi_align_backward(gf, ra.g, ra.boxes, ra.R, ra.B, ra.FH, ra.FW, ra.C, ra.PH, ra.PW,
                       ra.scale, ra.sr);
    check_fd("roi_align dfeat", ra.feat, nf, gf, roi_align_loss, 1e-2f, FD_RTOL, FD_ATOL);
    float *pf = rand_f(nf, 1.0f), *af = copy_f(pf, nf);
    roi_align_backward(af, ra.g, ra.boxes, ra.R, ra.B, ra.FH, ra.FW, ra.C, ra.PH, ra.PW,
                       ra.scale, ra.sr);
    check_accum("roi_align dfeat", af, pf, gf, nf);
    free(ra.feat), free(ra.out), free(ra.g), free(gf), free(pf), free(af);

    /* more channels than one backward task (64) */
    ra.C = 150;
    nf = (size_t)ra.B * ra.FH * ra.FW * ra.C, no = (size_t)ra.R * ra.PH * ra.PW * ra.C;
    ra.feat = rand_f(nf, 1.0f), ra.out = alloc_f(no), ra.g = rand_f(no, 1.0f);
    gf = alloc_f(nf);
    roi_align_backward(gf, ra.g, ra.boxes, ra.R, ra.B, ra.FH, ra.FW, ra.C, ra.PH, ra.PW,
                       ra.scale, ra.sr);
    /* only every 7th feature: enough to touch every channel block */
    float *gsub = alloc_f(nf), *fdsub = alloc_f(nf);
    size_t m = 0;
    for (size_t i = 0; i < nf; i += 7, m++) {
        float x0 = ra.feat[i];
        ra.feat[i] = x0 + 1e-2f;
        double lp = roi_align_loss();
        ra.feat[i] = x0 - 1e-2f;
        double lm = roi_align_loss();
        ra.feat[i] = x0;
        fdsub[m] = (float)((lp - lm) / ((double)(x0 + 1e-2f) - (double)(x0 - 1e-2f)));
        gsub[m] = gf[i];
    }
    tu_close("roi_align dfeat (C 150) vs finite differences", gsub, fdsub, m, FD_RTOL, FD_ATOL);
    free(ra.feat), free(ra.out), free(ra.g), free(gf), free(gsub), free(fdsub);
}

/* ---- maskpool ----------------------------------------------------------------------------- */

static struct {
    int R, B, N, C;
    float *feat, *mask, *out, *g;
    int *batch;
} mp;

static double maskpool_loss(void) {
    maskpool_forward(mp.out, mp.feat, mp.mask, mp.batch, mp.R, mp.B, mp.N, mp.C);
    return dot_d(mp.out, mp.g, (size_t)mp.R * mp.C);
}

static void test_maskpool(hid_t f) {
    int R = 5, B = 2, N = 12, C = 6;
    size_t nf = (size_t)B * N * C, no = (size_t)R * C;
    float *feat = fx(f, "maskpool/feat", nf), *mask = fx(f, "maskpool/mask", (size_t)R * N);
    float *bf = fx(f, "maskpool/batch", R), *dout = fx(f, "maskpool/dout", no);
    int batch[5];
    for (int r = 0; r < R; r++) batch[r] = (int)bf[r];
    float *out = alloc_f(no), *dfeat = alloc_f(nf);
    maskpool_forward(out, feat, mask, batch, R, B, N, C);
    float *want = fx(f, "maskpool/out", no);
    close_named("maskpool", "out vs torch (empty mask incl.)", out, want, no, 1e-5f, 1e-6f);
    free(want);
    maskpool_backward(dfeat, dout, mask, batch, R, B, N, C);
    want = fx(f, "maskpool/dfeat", nf);
    close_named("maskpool", "dfeat vs torch", dfeat, want, nf, 1e-5f, 1e-6f);
    free(want), free(feat), free(mask), free(bf), free(dout), free(out), free(dfeat);

    /* two masks on the same image (shared token rows), one empty, soft weights */
    static int mbatch[] = {1, 0, 1, 1};
    mp.R = 4, mp.B = 2, mp.N = 6, mp.C = 3, mp.batch = mbatch;
    nf = (size_t)mp.B * mp.N * mp.C, no = (size_t)mp.R * mp.C;
    mp.feat = rand_f(nf, 1.0f), mp.out = alloc_f(no), mp.g = rand_f(no, 1.0f);
    mp.mask = alloc_f((size_t)mp.R * mp.N);
    for (int i = 0; i < mp.R * mp.N; i++) mp.mask[i] = frand() > 0.0f ? 1.0f : 0.0f;
    mp.mask[0] = 0.3f, mp.mask[mp.N] = 1.0f, mp.mask[2 * mp.N + 1] = 1.0f;
    memset(mp.mask + 3 * mp.N, 0, (size_t)mp.N * sizeof(float));
    float *gf = alloc_f(nf);
    maskpool_backward(gf, mp.g, mp.mask, mp.batch, mp.R, mp.B, mp.N, mp.C);
    check_fd("maskpool dfeat", mp.feat, nf, gf, maskpool_loss, 1e-2f, FD_RTOL, FD_ATOL);
    float *pf = rand_f(nf, 1.0f), *af = copy_f(pf, nf);
    maskpool_backward(af, mp.g, mp.mask, mp.batch, mp.R, mp.B, mp.N, mp.C);
    check_accum("maskpool dfeat", af, pf, gf, nf);
    free(mp.feat), free(mp.out), free(mp.g), free(mp.mask), free(gf), free(pf), free(af);
}

/* ---- SwiGLU ------------------------------------------------------------------------------- */

static struct {
    int N, F;
    float *inp, *out, *g;
} sw;

static double swiglu_loss(void) {
    swiglu_forward(sw.out, sw.inp, sw.N, sw.F);
    return dot_d(sw.out, sw.g, (size_t)sw.N * sw.F);
}

static void test_swiglu(hid_t f) {
    int N = 7, F = 45;
    size_t ni = (size_t)N * 2 * F, no = (size_t)N * F;
    float *inp = fx(f, "swiglu/inp", ni), *dout = fx(f, "swiglu/dout", no);
    float *out = alloc_f(no), *dinp = alloc_f(ni);
    swiglu_forward(out, inp, N, F);
    float *want = fx(f, "swiglu/out", no);
    close_named("swiglu", "out vs torch", out, want, no, 1e-5f, 1e-6f);
    free(want);
    swiglu_backward(dinp, dout, inp, N, F);
    want = fx(f, "swiglu/dinp", ni);
    close_named("swiglu", "dinp vs torch", dinp, want, ni, 1e-5f, 1e-6f);
    free(want), free(inp), free(dout), free(out), free(dinp);

    sw.N = 3, sw.F = 10;
    ni = (size_t)sw.N * 2 * sw.F, no = (size_t)sw.N * sw.F;
    sw.inp = rand_f(ni, 4.0f), sw.out = alloc_f(no), sw.g = rand_f(no, 1.0f);
    float *gi = alloc_f(ni);
    swiglu_backward(gi, sw.g, sw.inp, sw.N, sw.F);
    check_fd("swiglu dinp", sw.inp, ni, gi, swiglu_loss, 1e-3f, FD_RTOL, FD_ATOL);
    float *pi = rand_f(ni, 1.0f), *ai = copy_f(pi, ni);
    swiglu_backward(ai, sw.g, sw.inp, sw.N, sw.F);
    check_accum("swiglu dinp", ai, pi, gi, ni);
    free(sw.inp), free(sw.out), free(sw.g), free(gi), free(pi), free(ai);
}

/* ---- RoPE --------------------------------------------------------------------------------- */

static struct {
    int B, gh, gw, H, D;
    float *cos, *sin, *inp, *x, *g;
} rp;

/* L = sum(rope(inp) * g) on q and k of a fused qkv, as the ViT applies it */
static double rope_loss(void) {
    size_t n = (size_t)rp.B * (1 + rp.gh * rp.gw) * 3 * rp.H * rp.D;
    memcpy(rp.x, rp.inp, n * sizeof(float));
    rope_forward(rp.x, rp.cos, rp.sin, rp.B, rp.gh, rp.gw, 2 * rp.H, rp.D, 3 * rp.H * rp.D);
    return dot_d(rp.x, rp.g, n);
}

static void test_rope(hid_t f) {
    const char *cases[] = {"sq", "ns"};
    for (int k = 0; k < 2; k++) {
        char obj[64], path[128];
        snprintf(obj, sizeof obj, "rope/%s", cases[k]);
        int B = fx_int(f, obj, "B"), gh = fx_int(f, obj, "gh"), gw = fx_int(f, obj, "gw");
        int H = fx_int(f, obj, "H"), D = fx_int(f, obj, "D"), G = fx_int(f, obj, "G");
        int N = gh * gw, half = D / 2, C = H * D;
        size_t nx = (size_t)B * (N + 1) * 3 * C;
        float *ct = alloc_f((size_t)(gh + gw) * half), *st = alloc_f((size_t)(gh + gw) * half);
        rope_tables(ct, st, gh, gw, D, G);
        /* EVA's (N, D) tables from the per-axis ones: row part, then column part */
        float *cfull = alloc_f((size_t)N * D), *sfull = alloc_f((size_t)N * D);
        for (int n = 0; n < N; n++)
            for (int i = 0; i < D; i++) {
                size_t r = i < half ? (size_t)(n / gw) : (size_t)(gh + n % gw);
                cfull[(size_t)n * D + i] = ct[r * half + i % half];
                sfull[(size_t)n * D + i] = st[r * half + i % half];
            }
#define RP_FX(name, cnt) (snprintf(path, sizeof path, "%s/" name, obj), fx(f, path, cnt))
        float *want = RP_FX("cos", (size_t)N * D);
        close_named(obj, "cos table vs EVA's", cfull, want, (size_t)N * D, 1e-6f, 1e-6f);
        free(want);
        want = RP_FX("sin", (size_t)N * D);
        close_named(obj, "sin table vs EVA's", sfull, want, (size_t)N * D, 1e-6f, 1e-6f);
        free(want);
        float *x = RP_FX("qkv", nx);
        rope_forward(x, ct, st, B, gh, gw, 2 * H, D, 3 * C);
        want = RP_FX("out", nx);
        close_named(obj, "out vs torch", x, want, nx, 1e-5f, 1e-6f);
        free(want), free(x);
        float *dx = RP_FX("dout", nx);
        rope_backward(dx, ct, st, B, gh, gw, 2 * H, D, 3 * C);
        want = RP_FX("dqkv", nx);
        close_named(obj, "dqkv vs torch", dx, want, nx, 1e-5f, 1e-6f);
#undef RP_FX
        free(want), free(dx), free(ct), free(st), free(cfull), free(sfull);
    }

    /* finite differences on a non-square grid with a position scale that is not an integer */
    rp.B = 2, rp.gh = 2, rp.gw = 3, rp.H = 2, rp.D = 8;
    int half = rp.D / 2;
    size_t nx = (size_t)rp.B * (1 + rp.gh * rp.gw) * 3 * rp.H * rp.D;
    rp.cos = alloc_f((size_t)(rp.gh + rp.gw) * half), rp.sin = alloc_f((size_t)(rp.gh + rp.gw) * half);
    rope_tables(rp.cos, rp.sin, rp.gh, rp.gw, rp.D, 7);
    rp.inp = rand_f(nx, 1.0f), rp.x = alloc_f(nx), rp.g = rand_f(nx, 1.0f);
    float *gi = copy_f(rp.g, nx);
    rope_backward(gi, rp.cos, rp.sin, rp.B, rp.gh, rp.gw, 2 * rp.H, rp.D, 3 * rp.H * rp.D);
    check_fd("rope dqkv", rp.inp, nx, gi, rope_loss, 1e-3f, FD_RTOL, FD_ATOL);
    /* forward then backward is the identity (a rotation), to rounding */
    memcpy(rp.x, rp.inp, nx * sizeof(float));
    rope_forward(rp.x, rp.cos, rp.sin, rp.B, rp.gh, rp.gw, 2 * rp.H, rp.D, 3 * rp.H * rp.D);
    rope_backward(rp.x, rp.cos, rp.sin, rp.B, rp.gh, rp.gw, 2 * rp.H, rp.D, 3 * rp.H * rp.D);
    close_named("rope", "backward(forward(x)) = x", rp.x, rp.inp, nx, 1e-6f, 1e-6f);
    free(rp.cos), free(rp.sin), free(rp.inp), free(rp.x), free(rp.g), free(gi);
}

int main(void) {
    hid_t f = tu_open_fixture("ops.h5");
    test_gemm();
    test_linear(f);
    test_layernorm(f);
    test_activation(f);
    test_attention(f);
    test_attention_edges(f);
    test_patch_embed(f);
    test_bicubic(f);
    test_normalize(f);
    test_roi_align(f);
    test_maskpool(f);
    test_swiglu(f);
    test_rope(f);
    H5Fclose(f);
    return tu_finish("test_ops");
}
