/* bench.c: the performance benchmark of clipself (`make bench`, driven by scripts/bench).
 *
 *   bench kernels               the BLIS kernel set gemm() runs, and why
 *   bench peak                  the CPU's single-precision FMA peak, measured: independent FMA
 *                               chains of AVX2 and (if the CPU has it) AVX-512, on 1 thread and
 *                               on all; the best on all threads is the limit the report's
 *                               percentages are of
 *   bench sgemm                 sgemm per shape (2048^3 and the ViT's fc1, qkv, Q.K^T, P.V)
 *                               through gemm() (the library's BLIS kernel choice), and through
 *                               OpenBLAS's cblas_sgemm when libopenblas.so.0 loads
 *   bench [MODEL] teacher       image embedding, 224x224, batch 8, inference
 *   bench [MODEL] teacher-bf16  the same in float32 and with the bf16 blocks (vit_bf16.h)
 *   bench [MODEL] train SIZE [STEPS]
 *                               one CLIPSelf step at SIZE x SIZE, batch 1, 16 boxes
 * MODEL: b16 (OpenAI's ViT-B/16, the default) or eva-b16 (EVA02-CLIP-B/16), vit_preset names.
 * The teacher and train cases also report their phases (timing.h: the blocks' linear layers,
 * attention forward, attention backward, the rest) for the median pass.
 *
 * Each case runs in its own process so that its peak RSS (getrusage) is its own. Besides the
 * human-readable report, each case prints machine lines that scripts/bench turns into the
 * final table (tests/reference/bench_torch.py prints the same for PyTorch):
 *   result CASE IMPL SECONDS GFLOPS RSS_MIB      ("-" where a field does not apply)
 *   phase CASE IMPL PHASE SECONDS GFLOPS
 * CASE is peak, sgemm_SHAPE, teacher or trainSIZE, the last two prefixed with "eva_" for
 * EVA02-CLIP-B/16. Weights, images, boxes and teacher rows are random: the arithmetic does not
 * depend on them. */
#include <blis.h>
#include <dlfcn.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "base/check.h"
#include "base/timing.h"
#include "method/clipself.h"
#include "model/adamw.h"
#include "model/ops.h"
#include "model/vit.h"
#include "model/vit_bf16.h"

#define BOXES 16

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* Index of a median element of x (n <= 8; the lower middle one for even n), x unchanged. */
static int median_index(const double *x, int n) {
    for (int i = 0; i < n; i++) {
        int below = 0, equal_before = 0;
        for (int j = 0; j < n; j++) {
            below += x[j] < x[i];
            equal_before += j < i && x[j] == x[i];
        }
        if (below + equal_before == (n - 1) / 2) return i;
    }
    return 0;
}

/* xorshift64* uniform in [0, 1) and a Box-Muller normal: reproducible random inputs. */
static unsigned long long rng_state = 0x9E3779B97F4A7C15ULL;
static float uniform(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (float)((rng_state * 2685821657736338717ULL) >> 40) / 16777216.0f;
}
static float normal(void) {
    float u = uniform() + 1e-7f, v = uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static float *random_buffer(size_t n) {
    float *x = malloc(n * sizeof(float));
    if (!x) {
        fprintf(stderr, "bench: out of memory (%zu floats)\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) x[i] = normal();
    return x;
}

/* The models CLIPSelf fine-tunes: OpenAI's ViT-B/16 (QuickGELU) and EVA02-CLIP-B/16. The
 * cases are the same for both; prefix tells their result lines apart. */
typedef struct {
    const char *preset; /* vit_preset name */
    const char *label;  /* for the report */
    const char *prefix; /* of the case names in result lines */
} BenchModel;

static const BenchModel models[] = {
    {"b16", "ViT-B/16", ""},
    {"eva-b16", "EVA02-CLIP-B/16", "eva_"},
};

/* ---- FMA peak ----------------------------------------------------------------------------- */

/* FMA_CHAINS independent multiply-add chains, acc = acc * a + b: more chains than FMA latency x
 * FMA ports (Zen 4/5 and Intel cores: 4 cycles x 2 ports), so the units never wait on a result.
 * a just below 1 and b small keep every value near 1 (no overflow, no denormals); the sum at the
 * end keeps the compiler from dropping the loop. Each variant is compiled for its instruction
 * set by a target attribute, so the default x86-64-v3 build still has the AVX-512 one. */
#define FMA_CHAINS 12
#define FMA_KERNEL(name, target_set, vec, set1, fmadd, store)                                   \
    __attribute__((target(target_set))) static float name(long iters) {                        \
        vec a = set1(0.99999994f), b = set1(1e-7f);                                            \
        /* twelve named accumulators, not an array, so that they live in registers */          \
        vec c0 = set1(1.00f), c1 = set1(1.01f), c2 = set1(1.02f), c3 = set1(1.03f);            \
        vec c4 = set1(1.04f), c5 = set1(1.05f), c6 = set1(1.06f), c7 = set1(1.07f);            \
        vec c8 = set1(1.08f), c9 = set1(1.09f), c10 = set1(1.10f), c11 = set1(1.11f);          \
        for (long i = 0; i < iters; i++) {                                                     \
            c0 = fmadd(c0, a, b), c1 = fmadd(c1, a, b), c2 = fmadd(c2, a, b);                  \
            c3 = fmadd(c3, a, b), c4 = fmadd(c4, a, b), c5 = fmadd(c5, a, b);                  \
            c6 = fmadd(c6, a, b), c7 = fmadd(c7, a, b), c8 = fmadd(c8, a, b);                  \
            c9 = fmadd(c9, a, b), c10 = fmadd(c10, a, b), c11 = fmadd(c11, a, b);              \
        }                                                                                      \
        c0 = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11));    \
        float out[sizeof(vec) / sizeof(float)];                                                \
        store(out, c0);                                                                        \
        return out[0];                                                                         \
    }
FMA_KERNEL(fma_avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps)
FMA_KERNEL(fma_avx512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps)

/* GFLOP/s of FMA chains on nthreads threads at once: best of 10 runs spread over ~2 s (a 50 ms
 * pause after each, so that a co-tenant's burst spoils some runs, not all), every thread's work
 * counted, the wall time of the slowest. */
static double fma_peak(int avx512, int nthreads) {
    const long iters = 10000000; /* 12 x 1e7 FMAs a thread: ~60 ms at 2 FMAs a cycle, 1 GHz */
    int lanes = avx512 ? 16 : 8;
    double best = INFINITY;
    volatile float sink = 0.0f;
    for (int r = 0; r <= 10; r++) { /* r == 0 warms up (and lets the clock settle) */
        double t0 = cs_clock();
#pragma omp parallel num_threads(nthreads)
        {
            float v = avx512 ? fma_avx512(iters) : fma_avx2(iters);
#pragma omp atomic
            sink += v;
        }
        double dt = cs_clock() - t0;
        if (r > 0 && dt < best) best = dt;
        nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
    }
    (void)sink;
    return 2.0 * FMA_CHAINS * lanes * (double)iters * nthreads / best * 1e-9;
}

/* The machine's single-precision FMA peak on all threads: the best of AVX2 and AVX-512 (when
 * the CPU has it). With report, prints both sets on 1 and on all threads. */
static double measure_peak(int report) {
    int nt = cs_num_threads(), has512 = __builtin_cpu_supports("avx512f");
    double peak = 0.0;
    if (report) printf("  %-8s %12s %12s  (GFLOP/s, %d FMA chains a thread)\n", "set", "1 thread",
                       "all threads", FMA_CHAINS);
    for (int v = 0; v < 2; v++) {
        if (v == 1 && !has512) {
            if (report) printf("  %-8s %12s %12s  (this CPU has no AVX-512F)\n", "avx512", "-",
                               "-");
            continue;
        }
        double one = report ? fma_peak(v, 1) : 0.0, all = fma_peak(v, nt);
        const char *set = v ? "avx512" : "avx2";
        if (report) {
            printf("  %-8s %12.1f %12.1f\n", set, one, all);
            printf("result peak_%s_1 c - %.2f -\nresult peak_%s_all c - %.2f -\n", set, one,
                   set, all);
        }
        peak = all > peak ? all : peak;
    }
    return peak;
}

static int bench_peak(void) {
    int nt = cs_num_threads();
    printf("== peak: single-precision FMA rate of this CPU, %d threads ==\n", nt);
    double peak = measure_peak(1);
    printf("FMA peak (best set on all %d threads): %.1f GFLOP/s\n", nt, peak);
    printf("result peak c - %.2f %.0f\n", peak, peak_rss_mib());
    return 0;
}

/* ---- sgemm -------------------------------------------------------------------------------- */

/* One product as the model issues it: row-major C (m, n) = op(A) . op(B), lda/ldb the strides
 * the model reads them with (attention reads Q, K and V out of the fused qkv rows, 3C = 2304). */
typedef struct {
    const char *name, *what;
    int ta, tb, m, n, k, lda, ldb;
} GemmShape;

static const GemmShape shapes[] = {
    {"sgemm_2048", "square 2048^3", 0, 0, 2048, 2048, 2048, 2048, 2048},
    {"sgemm_fc1", "c_fc fwd, 8x197 tokens  X.W^T", 0, 1, 1576, 3072, 768, 768, 768},
    {"sgemm_qkv", "qkv fwd, 4097 tokens    X.W^T", 0, 1, 4097, 2304, 768, 768, 768},
    {"sgemm_qk", "attn Q.K^T, one head, 4097", 0, 1, 4097, 4097, 64, 2304, 2304},
    {"sgemm_pv", "attn P.V,   one head, 4097", 0, 0, 4097, 64, 4097, 4097, 2304},
};

/* OpenBLAS's cblas_sgemm, looked up at run time (dlopen, so its symbols never meet BLIS's in
 * the link) in libopenblas.so.0, or the file CLIPSELF_OPENBLAS names; NULL when absent. */
typedef void (*cblas_sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
                               const float *a, int lda, const float *b, int ldb, float beta,
                               float *c, int ldc);
static cblas_sgemm_fn openblas_sgemm(int nthreads, char *about, size_t about_size) {
    const char *file = getenv("CLIPSELF_OPENBLAS");
    if (!file || !*file) file = "libopenblas.so.0";
    void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(about, about_size, "not installed (%s)", dlerror());
        return NULL;
    }
    cblas_sgemm_fn f = (cblas_sgemm_fn)(uintptr_t)dlsym(h, "cblas_sgemm");
    void (*set_threads)(int) = (void (*)(int))(uintptr_t)dlsym(h, "openblas_set_num_threads");
    char *(*config)(void) = (char *(*)(void))(uintptr_t)dlsym(h, "openblas_get_config");
    char *(*core)(void) = (char *(*)(void))(uintptr_t)dlsym(h, "openblas_get_corename");
    if (set_threads) set_threads(nthreads);
    snprintf(about, about_size, "%s: %s, core %s", file, config ? config() : "?",
             core ? core() : "?");
    if (!f) snprintf(about, about_size, "%s has no cblas_sgemm", file);
    return f;
}

/* Best of reps timings of one shape, in seconds: through gemm() (the library's kernel choice)
 * or, with ob, OpenBLAS. */
static double time_shape(const GemmShape *s, cblas_sgemm_fn ob, int nthreads, int reps) {
    size_t ra = s->ta ? s->k : s->m, rb = s->tb ? s->n : s->k;
    float *a = random_buffer(ra * s->lda), *b = random_buffer(rb * s->ldb);
    float *c = random_buffer((size_t)s->m * s->n);
    double best = INFINITY;
    for (int r = 0; r <= reps; r++) { /* r == 0 warms up: packing buffers, page faults */
        double t0 = cs_clock();
        if (ob)
            ob(101, s->ta ? 112 : 111, s->tb ? 112 : 111, s->m, s->n, s->k, 1.0f, a, s->lda, b,
               s->ldb, 0.0f, c, s->n); /* CblasRowMajor, CblasNoTrans / CblasTrans */
        else
            gemm(s->ta, s->tb, s->m, s->n, s->k, 1.0f, a, s->lda, b, s->ldb, 0.0f, c, s->n,
                 nthreads);
        double dt = cs_clock() - t0;
        if (r > 0 && dt < best) best = dt;
        nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
    }
    free(a);
    free(b);
    free(c);
    return best;
}

static int bench_sgemm(void) {
    int nt = cs_num_threads();
    printf("== sgemm: gemm() (ops.h) on BLIS, and OpenBLAS if installed, best of 5, %d threads "
           "==\n", nt);
    /* cs_blas_kernels() first: it chooses the kernel set before BLIS initialises (a BLIS call
     * before it would start BLIS on its own pick, or abort under BLIS_ARCH_TYPE) */
    const char *kernels = cs_blas_kernels();
    char about[512];
    cblas_sgemm_fn ob = openblas_sgemm(nt, about, sizeof about);
    double peak = measure_peak(0);
    printf("BLIS %s, kernel set %s (%s); %d processors, %d threads used\n",
           bli_info_get_version_str(), kernels, cs_blas_kernels_why(), omp_get_num_procs(), nt);
    printf("OpenBLAS: %s\n", about);
    printf("FMA peak (measured now, as `bench peak`): %.1f GFLOP/s\n", peak);
    printf("  %-30s %5s %5s %5s  %9s %7s  %9s %7s  %s\n", "product", "m", "n", "k",
           "BLIS GF/s", "% peak", "OpenB GF/s", "% peak", "faster");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const GemmShape *s = &shapes[i];
        double flops = 2.0 * s->m * s->n * (double)s->k;
        double tb = time_shape(s, NULL, nt, 5), to = ob ? time_shape(s, ob, nt, 5) : 0.0;
        double gb = flops / tb * 1e-9, go = ob ? flops / to * 1e-9 : 0.0;
        printf("  %-30s %5d %5d %5d  %9.1f %6.0f%%", s->what, s->m, s->n, s->k, gb,
               100 * gb / peak);
        if (ob)
            printf("  %9.1f %6.0f%%  %s\n", go, 100 * go / peak, gb >= go ? "BLIS" : "OpenBLAS");
        else
            printf("  %9s %7s  -\n", "-", "-");
        printf("result %s c %.5f %.2f -\n", s->name, tb, gb);
        if (ob) printf("result %s openblas %.5f %.2f -\n", s->name, to, go);
    }
    printf("result blis_kernels c %s - -\n", kernels);
    printf("peak RSS: %.0f MiB\n", peak_rss_mib());
    return 0;
}

/* ---- phases ------------------------------------------------------------------------------- */

/* The phase times of one pass (timing.h) and the rest of total; FLOPs per phase where they
 * are defined: the linear layers' and attention's share of vit_forward_flops, times train ? 3
 * (forward, dX and dW) : 1 for the linear layers, and twice the forward for the attention
 * backward (dP and dV, dQ and dK: the C backward also recomputes the probabilities, which is
 * not counted, as in the step's 3 x forward). Prints the human lines and the machine lines
 *   phase CASE c NAME SECONDS GFLOPS */
static void report_phases(const Vit *m, const char *casename, const double *sec, double total,
                          int train) {
    double lin, att, rest = total;
    vit_forward_flops_parts(m, &lin, &att);
    double flops[CS_NUM_PHASES] = {0};
    flops[CS_PHASE_LINEAR] = (train ? 3 : 1) * lin;
    flops[CS_PHASE_ATTN_FWD] = att;
    flops[CS_PHASE_ATTN_BWD] = train ? 2 * att : 0;
    printf("phases:");
    for (int p = 0; p < CS_NUM_PHASES; p++) {
        if (!train && p == CS_PHASE_ATTN_BWD) continue;
        rest -= sec[p];
        double g = sec[p] > 0 ? flops[p] / sec[p] * 1e-9 : 0.0;
        printf(" %s %.3f s (%.1f GFLOP/s),", cs_phase_name(p), sec[p], g);
    }
    printf(" rest %.3f s\n", rest);
    for (int p = 0; p < CS_NUM_PHASES; p++) {
        if (!train && p == CS_PHASE_ATTN_BWD) continue;
        printf("phase %s c %s %.4f %.2f\n", casename, cs_phase_name(p), sec[p],
               sec[p] > 0 ? flops[p] / sec[p] * 1e-9 : 0.0);
    }
    printf("phase %s c rest %.4f -\n", casename, rest);
}

/* ---- teacher forward ---------------------------------------------------------------------- */

static int bench_teacher(const BenchModel *bm) {
    const int B = 8, S = 224, reps = 3;
    VitConfig cfg;
    Vit m;
    CS_TRY(vit_preset(&cfg, bm->preset));
    CS_TRY(vit_init(&m, &cfg));
    vit_init_random(&m, 1);
    CS_TRY(vit_prepare(&m, VIT_IMAGE, B, S, S, 0));
    float *img = random_buffer((size_t)B * 3 * S * S);
    double flops = vit_forward_flops(&m), t[8];
    printf("== %steacher: %s image embedding, %dx%d, batch %d, inference, %d threads ==\n",
           bm->prefix, bm->label, S, S, B, cs_num_threads());
    double ph[8][CS_NUM_PHASES];
    vit_forward(&m, img); /* warm-up */
    for (int r = 0; r < reps; r++) {
        cs_phase_reset();
        double t0 = cs_clock();
        vit_forward(&m, img);
        t[r] = cs_clock() - t0;
        memcpy(ph[r], cs_phase_seconds, sizeof ph[r]);
    }
    int mid = median_index(t, reps);
    double sec = t[mid];
    printf("forward: %.3f s per batch (median of %d after a warm-up), %.2f images/s\n", sec,
           reps, B / sec);
    printf("achieved: %.1f GFLOP/s (%.1f GFLOP per forward, vit_forward_flops)\n",
           flops / sec * 1e-9, flops * 1e-9);
    char casename[64];
    snprintf(casename, sizeof casename, "%steacher", bm->prefix);
    report_phases(&m, casename, ph[mid], sec, 0);
    printf("peak RSS: %.0f MiB\n", peak_rss_mib());
    printf("result %s c %.4f %.2f %.0f\n", casename, sec, flops / sec * 1e-9, peak_rss_mib());
    free(img);
    vit_free(&m);
    return 0;
}

/* ---- teacher forward in bf16 (vit_bf16.h): the --bf16 teacher against the float32 one ---- */

static int bench_teacher_bf16(const BenchModel *bm) {
    const int B = 8, S = 224, reps = 3;
    VitConfig cfg;
    Vit m;
    CS_TRY(vit_preset(&cfg, bm->preset));
    CS_TRY(vit_init(&m, &cfg));
    vit_init_random(&m, 1);
    float *img = random_buffer((size_t)B * 3 * S * S);
    double sec[2];
    for (int bf = 0; bf < 2; bf++) { /* float32, then bf16, on the same model and images */
        if (bf) CS_TRY(vit_bf16_enable(&m));
        CS_TRY(vit_prepare(&m, VIT_IMAGE, B, S, S, 0));
        double t[8];
        vit_forward(&m, img); /* warm-up */
        for (int r = 0; r < reps; r++) {
            double t0 = cs_clock();
            vit_forward(&m, img);
            t[r] = cs_clock() - t0;
        }
        sec[bf] = median(t, reps);
    }
    int C = cfg.width, BT = B * (1 + (S / cfg.patch) * (S / cfg.patch));
    printf("== %steacher-bf16: %s image embedding, %dx%d, batch %d, %d threads ==\n", bm->prefix,
           bm->label, S, S, B, cs_num_threads());
    printf("oneDNN ISA %s; qkv matmul: %s\n", bf16_isa_name(),
           bf16_impl_name(BT, C, 3 * C, 0, BF16_ACT_NONE));
    printf("float32 %.3f s, bf16 %.3f s per batch (medians of %d): bf16 is %.2fx\n", sec[0],
           sec[1], reps, sec[0] / sec[1]);
    printf("result %steacher_bf16 c %.4f %.2f %.0f\n", bm->prefix, sec[1],
           vit_forward_flops(&m) / sec[1] * 1e-9, peak_rss_mib());
    free(img);
    vit_free(&m);
    return 0;
}

/* ---- CLIPSelf training step --------------------------------------------------------------- */

/* R random boxes [0, x1, y1, x2, y2] in token-grid coordinates, each at least half a token. */
static void random_boxes(float *boxes, int R, int gh, int gw) {
    for (int r = 0; r < R; r++) {
        float x1 = uniform() * (gw - 0.5f), y1 = uniform() * (gh - 0.5f);
        float x2 = x1 + 0.5f + uniform() * (gw - x1 - 0.5f);
        float y2 = y1 + 0.5f + uniform() * (gh - y1 - 0.5f);
        float *b = boxes + 5 * r;
        b[0] = 0.0f, b[1] = x1, b[2] = y1, b[3] = x2, b[4] = y2;
    }
}

static int bench_train(const BenchModel *bm, int S, int steps) {
    const int B = 1, R = BOXES;
    VitConfig cfg;
    Vit m;
    AdamW opt;
    ClipselfLoss cl;
    CS_TRY(vit_preset(&cfg, bm->preset));
    CS_TRY(vit_init(&m, &cfg));
    vit_init_random(&m, 1);
    CS_TRY(vit_alloc_grads(&m));
    vit_freeze_clipself(&m);
    AdamWConfig ocfg = adamw_clipself_defaults();
    CS_TRY(adamw_init(&opt, &ocfg, m.num_params));
    CS_TRY(clipself_loss_init(&cl, R, cfg.embed));
    CS_TRY(vit_prepare(&m, VIT_DENSE, B, S, S, 1));
    int gh = m.gh, gw = m.gw, E = cfg.embed;
    size_t nd = (size_t)B * gh * gw * E;
    float *img = random_buffer((size_t)B * 3 * S * S), *teacher = random_buffer((size_t)R * E);
    float boxes[5 * BOXES], *ddense = malloc(nd * sizeof(float));
    CS_CHECK(ddense, "out of memory (%zu floats)", nd);
    for (int r = 0; r < R; r++) { /* the teacher rows arrive normalised from the cache */
        float *t = teacher + (size_t)r * E, s = 0.0f;
        for (int i = 0; i < E; i++) s += t[i] * t[i];
        for (int i = 0; i < E; i++) t[i] /= sqrtf(s);
    }
    random_boxes(boxes, R, gh, gw);
    double flops = 3.0 * vit_forward_flops(&m);
    printf("== %strain%d: CLIPSelf step of %s, %dx%d (%dx%d tokens), batch %d, %d boxes, "
           "%d threads ==\n", bm->prefix, S, bm->label, S, S, gh, gw, B, R, cs_num_threads());
    enum { FWD, LOSS, BWD, OPT, TOTAL, NPHASE };
    double t[NPHASE][8], ph[8][CS_NUM_PHASES], loss0 = 0.0;
    float loss = 0.0f;
    for (int s = 0; s <= steps; s++) { /* s == 0 warms up */
        cs_phase_reset();
        double t0 = cs_clock();
        vit_zero_grad(&m);
        vit_forward(&m, img);
        double t1 = cs_clock();
        CS_TRY(clipself_loss_forward(&cl, &loss, m.acts.out, boxes, teacher, R, B, gh, gw, E));
        memset(ddense, 0, nd * sizeof(float));
        clipself_loss_backward(&cl, ddense, 1.0f);
        double t2 = cs_clock();
        CS_DIE_IF_FAIL(vit_backward(&m, ddense, NULL));
        double t3 = cs_clock();
        adamw_step(&opt, &m, ocfg.lr);
        double t4 = cs_clock();
        if (s == 0) loss0 = loss;
        if (s == 0) continue;
        t[FWD][s - 1] = t1 - t0, t[LOSS][s - 1] = t2 - t1, t[BWD][s - 1] = t3 - t2;
        t[OPT][s - 1] = t4 - t3, t[TOTAL][s - 1] = t4 - t0;
        memcpy(ph[s - 1], cs_phase_seconds, sizeof ph[s - 1]);
    }
    int mid = median_index(t[TOTAL], steps);
    double sec = t[TOTAL][mid];
    printf("step: %.3f s (median of %d after a warm-up): forward %.3f, loss %.4f, backward "
           "%.3f, adamw %.3f; loss %.5f -> %.5f\n",
           sec, steps, median(t[FWD], steps), median(t[LOSS], steps), median(t[BWD], steps),
           median(t[OPT], steps), loss0, (double)loss);
    printf("achieved: %.1f GFLOP/s, counting the step as 3 x the forward (%.1f GFLOP)\n",
           flops / sec * 1e-9, flops * 1e-9);
    char casename[64];
    snprintf(casename, sizeof casename, "%strain%d", bm->prefix, S);
    report_phases(&m, casename, ph[mid], sec, 1);
    printf("peak RSS: %.0f MiB\n", peak_rss_mib());
    printf("result %s c %.4f %.2f %.0f\n", casename, sec, flops / sec * 1e-9, peak_rss_mib());
    free(ddense);
    free(img);
    free(teacher);
    clipself_loss_free(&cl);
    adamw_free(&opt);
    vit_free(&m);
    return 0;
}

int main(int argc, char **argv) {
    const char *usage = "usage: bench kernels | peak | sgemm | [MODEL] teacher | [MODEL] "
                        "teacher-bf16 | [MODEL] train SIZE [STEPS]\n"
                        "  MODEL: b16 (default) or eva-b16; SIZE: image side, a multiple of 16;\n"
                        "  STEPS: timed steps after one warm-up (default 3; 1 above 448, where a\n"
                        "  step takes a minute; at most 8)\n";
    const BenchModel *bm = &models[0];
    for (size_t i = 0; argc >= 2 && i < sizeof models / sizeof models[0]; i++)
        if (!strcmp(argv[1], models[i].preset)) {
            bm = &models[i];
            argc--, argv++;
            break;
        }
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    cs_set_num_threads(cs_num_threads());
    if (!strcmp(argv[1], "kernels") && bm == &models[0]) {
        printf("%s (%s)\n", cs_blas_kernels(), cs_blas_kernels_why());
    } else if (!strcmp(argv[1], "peak") && bm == &models[0]) {
        CS_DIE_IF_FAIL(bench_peak());
    } else if (!strcmp(argv[1], "sgemm") && bm == &models[0]) {
        CS_DIE_IF_FAIL(bench_sgemm());
    } else if (!strcmp(argv[1], "teacher")) {
        CS_DIE_IF_FAIL(bench_teacher(bm));
    } else if (!strcmp(argv[1], "teacher-bf16")) {
        CS_DIE_IF_FAIL(bench_teacher_bf16(bm));
    } else if (!strcmp(argv[1], "train") && argc >= 3) {
        int S = atoi(argv[2]);
        int steps = argc >= 4 ? atoi(argv[3]) : S > 448 ? 1 : 3;
        if (S <= 0 || S % 16 || steps < 1 || steps > 8) {
            fputs(usage, stderr);
            return 2;
        }
        CS_DIE_IF_FAIL(bench_train(bm, S, steps));
    } else {
        fputs(usage, stderr);
        return 2;
    }
    return 0;
}
