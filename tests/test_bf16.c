/* test_bf16: the bf16 teacher pass (pipeline/model/bf16.h, pipeline/model/vit_bf16.h).
 *   - bf16_from_float rounds to nearest even (ties, NaN, infinities, every value's neighbours);
 *   - bf16_linear_forward against a float64 product of the same bf16-rounded inputs, with a
 *     per-element bound (float accumulation, the bias, the fused activation or residual add,
 *     the bf16 output's rounding), at several row counts, and each shape's primitive made once;
 *   - the bf16 ViT forward against the float32 one (tiny CLIP, EVA02 tiny, dense mode, and a
 *     random ViT-B/16 at 224 x 224): the cosine of every embedding (every dense token) to its
 *     float32 twin is at least the bound derived below; the smallest is printed.
 * Prints the ISA oneDNN dispatches and the implementation it runs. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/bf16.h"
#include "model/vit.h"
#include "model/vit_bf16.h"
#include "testutil.h"

static const double U32 = 5.9604644775390625e-08; /* 2^-24, float's unit roundoff */
static const double UBF = 3.90625e-03; /* 2^-8, bf16's: 8 significant bits (7 stored + 1) */

static float bf_round(float x) { /* via the library, for one value */
    uint16_t h;
    float y;
    bf16_from_float(&h, &x, 1);
    bf16_to_float(&y, &h, 1);
    return y;
}

static void test_rounding(void) {
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even significand (1); 1 + 3 *
     * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up */
    tu_check(bf_round(1.0f + 0x1p-8f) == 1.0f, "rne: a tie rounds to even (down)", NULL);
    tu_check(bf_round(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f, "rne: a tie rounds to even (up)",
             NULL);
    tu_check(bf_round(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f, "rne: above a tie: up", NULL);
    tu_check(bf_round(-1.0f - 0x1p-8f) == -1.0f, "rne: negative tie", NULL);
    tu_check(isinf(bf_round(INFINITY)) && bf_round(-INFINITY) < 0, "rne: infinities stay", NULL);
    tu_check(isnan(bf_round(NAN)), "rne: NaN stays NaN", NULL);
    tu_check(isinf(bf_round(3.4e38f)), "rne: above bf16's largest finite: infinity", NULL);
    /* every value: the nearer of its two bf16 neighbours (ties even) */
    int bad = 0;
    for (int i = 0; i < 100000; i++) {
        float x = frand() * ldexpf(1.0f, (int)(frand() * 60));
        float r = bf_round(x);
        uint32_t u;
        memcpy(&u, &x, 4);
        uint32_t lo_u = u & 0xffff0000u, hi_u = lo_u + 0x10000u;
        float lo, hi;
        memcpy(&lo, &lo_u, 4);
        memcpy(&hi, &hi_u, 4);
        double dl = fabs((double)x - lo), dh = fabs((double)hi - x);
        float want = dl < dh ? lo : dh < dl ? hi : ((lo_u >> 16) & 1) ? hi : lo;
        bad += r != want;
    }
    tu_check(bad == 0, "rne: 100000 random values round to their nearest bf16", NULL);
}

/* One product against float64 on the same bf16-rounded x and W: the only differences are the
 * float accumulation of K products and the bias (any order: gamma_{K+1} = (K+1) u / (1 -
 * (K+1) u) times sum |x w| + |b|, Higham's bound for a sum), the residual add (one more
 * float rounding of |out0 + y|), the activation (its Lipschitz constant, at most 1.13 for GELU
 * and QuickGELU, times that error, plus oneDNN's own evaluation of exp / erf: allowed 2^-20 of
 * |f| + 2^-20 |y|, a few hundred float ulps), and a bf16 output's rounding (2^-8 |out|). */
static void test_linear_case(int M, int K, int N, int out_bf16, int post) {
    float *x = alloc_f((size_t)M * K), *w = alloc_f((size_t)N * K), *b = alloc_f(N);
    float *out = alloc_f((size_t)M * N), *out0 = alloc_f((size_t)M * N);
    float *want = alloc_f((size_t)M * N), *bound = alloc_f((size_t)M * N);
    uint16_t *xb = malloc((size_t)M * K * 2), *ob = malloc((size_t)M * N * 2);
    for (size_t i = 0; i < (size_t)M * K; i++) x[i] = 2.0f * frand();
    for (size_t i = 0; i < (size_t)N * K; i++) w[i] = frand() / sqrtf((float)K);
    for (int j = 0; j < N; j++) b[j] = frand();
    for (size_t i = 0; i < (size_t)M * N; i++) out0[i] = out[i] = frand();
    bf16_from_float(xb, x, (size_t)M * K);
    float *xr = alloc_f((size_t)M * K), *wr = alloc_f((size_t)N * K); /* the rounded inputs */
    for (size_t i = 0; i < (size_t)M * K; i++) xr[i] = bf_round(x[i]);
    for (size_t i = 0; i < (size_t)N * K; i++) wr[i] = bf_round(w[i]);
    Bf16Linear l;
    CS_DIE_IF_FAIL(bf16_linear_init(&l, w, K, b, K, N));
    int before = bf16_num_primitives();
    void *dst = out_bf16 ? (void *)ob : (void *)out;
    CS_DIE_IF_FAIL(bf16_linear_forward(dst, out_bf16, xb, &l, M, post));
    int made = bf16_num_primitives() - before;
    memcpy(out, out0, (size_t)M * N * sizeof(float)); /* the residual add's start again */
    CS_DIE_IF_FAIL(bf16_linear_forward(dst, out_bf16, xb, &l, M, post));
    tu_check(bf16_num_primitives() - before == made && made <= 1,
             "bf16 linear: a shape's primitive is made once", NULL);
    if (out_bf16) bf16_to_float(out, ob, (size_t)M * N);
    double gK = (K + 2) * U32 / (1 - (K + 2) * U32);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = b[j], a = fabs(b[j]);
            for (int k = 0; k < K; k++) {
                double p = (double)xr[(size_t)i * K + k] * wr[(size_t)j * K + k];
                s += p, a += fabs(p);
            }
            double err = gK * a, f = s;
            if (post == BF16_ADD) {
                f = s + out0[(size_t)i * N + j];
                err = gK * (a + fabs(out0[(size_t)i * N + j]));
            } else if (post == BF16_ACT_GELU) {
                f = 0.5 * s * (1.0 + erf(s / sqrt(2.0)));
                err = 1.13 * err + 0x1p-20 * (fabs(f) + fabs(s));
            } else if (post == BF16_ACT_QUICKGELU) {
                f = s / (1.0 + exp(-1.702 * s));
                err = 1.13 * err + 0x1p-20 * (fabs(f) + fabs(s));
            }
            if (out_bf16) err += UBF * (fabs(f) + err);
            want[(size_t)i * N + j] = (float)f;
            bound[(size_t)i * N + j] = (float)(err + U32 * fabs(f)); /* want's own rounding */
        }
    char name[160];
    snprintf(name, sizeof name, "bf16 linear %dx%dx%d out %s post %d (%s)", M, K, N,
             out_bf16 ? "bf16" : "f32", post, bf16_impl_name(M, K, N, out_bf16, post));
    tu_close_bound(name, out, want, bound, (size_t)M * N);
    bf16_linear_free(&l);
    free(x), free(w), free(b), free(out), free(out0), free(want), free(bound), free(xb), free(ob);
    free(xr), free(wr);
}

/* The cosine of the bf16 forward's output to the float32 one, row by row.
 *
 * The bound. bf16 keeps 8 significant bits (7 stored, 1 implicit), so rounding to nearest even
 * has unit roundoff u = 2^-8 (test_rounding checks the ties at 1 + 2^-8: the spacing there is
 * 2^-7). Each bf16 product rounds both of its inputs, every element by a relative error
 * |delta| <= u, independent between elements and of mean about 0, so a product
 * sum_k x_k w_k (1 + delta_k)(1 + delta'_k) is off by a relative RMS of sqrt(2/3) u
 * (E delta^2 <= u^2 / 3 for each of the two roundings) where its terms do not cancel. A block
 * has 4 such products (CLIP: q|k|v, out_proj, c_fc, c_proj; EVA02: q|k|v, proj, w1|w2, w3),
 * each feeding the residual stream, and errors of independent roundings add in quadrature
 * through the identity path of the residual stream (LayerNorm rescales; the float32 parts
 * add nothing of this size): after L blocks (the depth) the embedding's relative RMS error is
 * eps = sqrt(4 L * 2/3) u. An error eps at right angles turns the vector by asin(eps):
 * 1 - cos = eps^2 / 2 (to O(eps^4)). We allow kappa = 2 times that RMS error (softmax and
 * LayerNorm amplify an error by a factor of order 1, and every embedding is asserted, not
 * their mean):
 *     1 - cos <= (kappa eps)^2 / 2 = 4 * (8 L / 3) u^2 / 2 = (16 L / 3) u^2,
 * for ViT-B/16 (L = 12) 64 u^2 = 9.8e-4: cos >= 0.99902, the 0.999 asked of the teacher; the
 * demo teacher (L = 4) 3.3e-4. Measured (TEST_MARGINS=1 prints the use of the bound): the
 * largest 1 - cos is about half the bound, on EVA02 tiny. */
static double cosine_bound(int L) { return 1.0 - 16.0 * L / 3.0 * UBF * UBF; }

static void test_vit_case(const char *preset, int mode, int B, int S, unsigned long long seed) {
    VitConfig cfg;
    Vit m;
    CS_DIE_IF_FAIL(vit_preset(&cfg, preset));
    CS_DIE_IF_FAIL(vit_init(&m, &cfg));
    vit_init_random(&m, seed);
    float *img = alloc_f((size_t)B * 3 * S * S);
    for (size_t i = 0; i < (size_t)B * 3 * S * S; i++) img[i] = 2.0f * frand();
    CS_DIE_IF_FAIL(vit_prepare(&m, mode, B, S, S, 0));
    int rows = mode == VIT_IMAGE ? B : B * (m.T - 1), E = cfg.embed;
    vit_forward(&m, img);
    float *ref = alloc_f((size_t)rows * E);
    memcpy(ref, m.acts.out, (size_t)rows * E * sizeof(float));
    CS_DIE_IF_FAIL(vit_bf16_enable(&m));
    CS_DIE_IF_FAIL(vit_prepare(&m, mode, B, S, S, 0));
    vit_forward(&m, img);
    double worst = 1.0, bound = cosine_bound(cfg.layers);
    int below = 0;
    for (int r = 0; r < rows; r++) {
        double d = 0, na = 0, nb = 0;
        for (int k = 0; k < E; k++) {
            double a = ref[(size_t)r * E + k], b = m.acts.out[(size_t)r * E + k];
            d += a * b, na += a * a, nb += b * b;
        }
        double c = d / sqrt(na * nb);
        if (!(c >= bound)) below++;
        if (!(c >= worst)) worst = c;
    }
    char name[200], detail[200];
    snprintf(name, sizeof name, "bf16 vs float32 %s %s %dx%d batch %d: cosine of every "
             "embedding >= %.6f", preset, mode == VIT_IMAGE ? "image" : "dense", S, S, B, bound);
    snprintf(detail, sizeof detail, "%d of %d below; smallest %.6f", below, rows, worst);
    printf("%s: smallest cosine %.6f (1 - cos = %.2e, bound %.2e) over %d\n", name, worst,
           1 - worst, 1 - bound, rows);
    if (getenv("TEST_MARGINS")) printf("margin %.4f %s\n", (1 - worst) / (1 - bound), name);
    tu_check(below == 0, name, detail);
    /* back to float32: the same numbers as before */
    vit_bf16_disable(&m);
    CS_DIE_IF_FAIL(vit_prepare(&m, mode, B, S, S, 0));
    vit_forward(&m, img);
    tu_check(!memcmp(ref, m.acts.out, (size_t)rows * E * sizeof(float)),
             "vit_bf16_disable: the float32 forward again, bit for bit", NULL);
    CS_DIE_IF_FAIL(vit_bf16_enable(&m));
    tu_check(vit_prepare(&m, mode, B, S, S, 1) != 0, "a bf16 model refuses a training prepare",
             NULL);
    free(img), free(ref);
    vit_free(&m);
}

int main(void) {
    test_rounding();
    const int M[] = {1, 37, 1024, 1576};
    for (size_t i = 0; i < sizeof M / sizeof M[0]; i++) {
        test_linear_case(M[i], 64, 96, 0, BF16_ACT_NONE);
        test_linear_case(M[i], 64, 96, 0, BF16_ADD);
    }
    test_linear_case(37, 96, 128, 1, BF16_ACT_QUICKGELU);
    test_linear_case(37, 96, 128, 1, BF16_ACT_GELU);
    test_linear_case(50, 768, 192, 0, BF16_ACT_QUICKGELU);
    test_linear_case(50, 3072, 64, 0, BF16_ADD);
    printf("oneDNN ISA: %s\n", bf16_isa_name());

    test_vit_case("tiny", VIT_IMAGE, 4, 64, 1);
    test_vit_case("tiny", VIT_DENSE, 2, 64, 2);
    test_vit_case("eva-tiny", VIT_IMAGE, 4, 64, 3);
    test_vit_case("eva-tiny", VIT_DENSE, 2, 64, 4);
    test_vit_case("b16", VIT_IMAGE, 2, 224, 5);
    return tu_finish("test_bf16");
}
