/* bench.c: the performance benchmark of clipself (`make bench`, driven by scripts/bench).
 *
 *   bench sgemm                 BLIS sgemm rate through gemm() on the ViT-B/16 shapes: the
 *                               roofline
 *   bench [MODEL] teacher       image embedding, 224x224, batch 8, inference
 *   bench [MODEL] teacher-bf16  the same in float32 and with the bf16 blocks (vit_bf16.h)
 *   bench [MODEL] train SIZE [STEPS]
 *                               one CLIPSelf step at SIZE x SIZE, batch 1, 16 boxes
 * MODEL: b16 (OpenAI's ViT-B/16, the default) or eva-b16 (EVA02-CLIP-B/16), vit_preset names.
 *
 * Each case runs in its own process so that its peak RSS (getrusage) is its own. Besides the
 * human-readable report, each case prints one machine line that scripts/bench turns into the
 * final table (tests/reference/bench_torch.py prints the same for PyTorch):
 *   result CASE IMPL SECONDS GFLOPS RSS_MIB      ("-" where a field does not apply)
 * CASE is sgemm, teacher or trainSIZE, prefixed with "eva_" for EVA02-CLIP-B/16.
 * Weights, images, boxes and teacher rows are random: the arithmetic does not depend on them. */
#include <blis.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "adamw.h"
#include "check.h"
#include "clipself.h"
#include "ops.h"
#include "vit.h"
#include "vit_bf16.h"

#define BOXES 16

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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

/* ---- sgemm -------------------------------------------------------------------------------- */

/* One product as the model issues it. per_thread: every thread runs its own single-threaded
 * product at once, as attention does (one head per thread), and the rate is their sum. */
typedef struct {
    const char *what;
    int ta, tb, m, n, k, lda, ldb, per_thread;
} GemmShape;

static const GemmShape shapes[] = {
    {"qkv      fwd, 8x197 tokens   Y = X.W^T", 0, 1, 8 * 197, 2304, 768, 768, 768, 0},
    {"c_fc     fwd, 8x197 tokens   Y = X.W^T", 0, 1, 8 * 197, 3072, 768, 768, 768, 0},
    {"c_proj   fwd, 8x197 tokens   Y = X.W^T", 0, 1, 8 * 197, 768, 3072, 3072, 3072, 0},
    {"out_proj fwd, 4097 tokens    Y = X.W^T", 0, 1, 4097, 768, 768, 768, 768, 0},
    {"c_fc     bwd, 4097 tokens   dX = dY.W", 0, 0, 4097, 768, 3072, 3072, 768, 0},
    {"c_fc     bwd, 4097 tokens  dW += dY^T.X", 1, 0, 3072, 768, 4097, 3072, 768, 0},
    {"attn Q.K^T, 256 queries, 1 thread/head", 0, 1, 256, 4097, 64, 2304, 2304, 1},
    {"attn P.V,   256 queries, 1 thread/head", 0, 0, 256, 64, 4097, 4097, 2304, 1},
};

/* Best of reps timings of one shape, in GFLOP/s. */
static double time_shape(const GemmShape *s, int nthreads, int reps) {
    int copies = s->per_thread ? nthreads : 1;
    size_t ra = s->ta ? s->k : s->m, rb = s->tb ? s->n : s->k;
    size_t na = ra * s->lda, nb = rb * s->ldb, nc = (size_t)s->m * s->n;
    float *a = random_buffer(na * copies), *b = random_buffer(nb * copies);
    float *c = random_buffer(nc * copies);
    double best = INFINITY;
    for (int r = 0; r <= reps; r++) { /* r == 0 warms up: BLIS packing buffers, page faults */
        double t0 = now();
        if (s->per_thread) {
#pragma omp parallel num_threads(nthreads)
            {
                size_t i = (size_t)omp_get_thread_num();
                gemm(s->ta, s->tb, s->m, s->n, s->k, 1.0f, a + i * na, s->lda, b + i * nb,
                     s->ldb, 0.0f, c + i * nc, s->n, 1);
            }
        } else {
            gemm(s->ta, s->tb, s->m, s->n, s->k, 1.0f, a, s->lda, b, s->ldb, 0.0f, c, s->n,
                 nthreads);
        }
        double dt = now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * s->m * s->n * (double)s->k * copies / best * 1e-9;
}

static int bench_sgemm(void) {
    int nt = cs_num_threads();
    printf("== sgemm: gemm() (ops.h) on BLIS, best of 5, %d threads ==\n", nt);
    /* cs_blas_kernels() first: it chooses the kernel set before BLIS initialises (a BLIS call
     * before it would start BLIS on its own pick, or abort under BLIS_ARCH_TYPE) */
    const char *kernels = cs_blas_kernels();
    printf("BLIS %s, kernel config %s (%s); %d processors, %d threads used\n",
           bli_info_get_version_str(), kernels, cs_blas_kernels_why(), omp_get_num_procs(), nt);
    printf("  %-40s %6s %6s %6s  %8s\n", "product", "m", "n", "k", "GFLOP/s");
    double rate = 0.0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const GemmShape *s = &shapes[i];
        double g = time_shape(s, nt, 5);
        printf("  %-40s %6d %6d %6d  %8.1f%s\n", s->what, s->m, s->n, s->k, g,
               s->per_thread ? " (sum over threads)" : "");
        rate = g > rate ? g : rate;
    }
    printf("sgemm rate (max of the above): %.1f GFLOP/s\n", rate);
    printf("result sgemm c - %.2f %.0f\n", rate, peak_rss_mib());
    return 0;
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
    vit_forward(&m, img); /* warm-up */
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        vit_forward(&m, img);
        t[r] = now() - t0;
    }
    double sec = median(t, reps);
    printf("forward: %.3f s per batch (median of %d after a warm-up), %.2f images/s\n", sec,
           reps, B / sec);
    printf("achieved: %.1f GFLOP/s (%.1f GFLOP per forward, vit_forward_flops)\n",
           flops / sec * 1e-9, flops * 1e-9);
    printf("peak RSS: %.0f MiB\n", peak_rss_mib());
    printf("result %steacher c %.4f %.2f %.0f\n", bm->prefix, sec, flops / sec * 1e-9,
           peak_rss_mib());
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
            double t0 = now();
            vit_forward(&m, img);
            t[r] = now() - t0;
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
    double t[NPHASE][8], loss0 = 0.0;
    float loss = 0.0f;
    for (int s = 0; s <= steps; s++) { /* s == 0 warms up */
        double t0 = now();
        vit_zero_grad(&m);
        vit_forward(&m, img);
        double t1 = now();
        CS_TRY(clipself_loss_forward(&cl, &loss, m.acts.out, boxes, teacher, R, B, gh, gw, E));
        memset(ddense, 0, nd * sizeof(float));
        clipself_loss_backward(&cl, ddense, 1.0f);
        double t2 = now();
        CS_DIE_IF_FAIL(vit_backward(&m, ddense, NULL));
        double t3 = now();
        adamw_step(&opt, &m, ocfg.lr);
        double t4 = now();
        if (s == 0) loss0 = loss;
        if (s == 0) continue;
        t[FWD][s - 1] = t1 - t0, t[LOSS][s - 1] = t2 - t1, t[BWD][s - 1] = t3 - t2;
        t[OPT][s - 1] = t4 - t3, t[TOTAL][s - 1] = t4 - t0;
    }
    double sec = median(t[TOTAL], steps);
    printf("step: %.3f s (median of %d after a warm-up): forward %.3f, loss %.4f, backward "
           "%.3f, adamw %.3f; loss %.5f -> %.5f\n",
           sec, steps, median(t[FWD], steps), median(t[LOSS], steps), median(t[BWD], steps),
           median(t[OPT], steps), loss0, (double)loss);
    printf("achieved: %.1f GFLOP/s, counting the step as 3 x the forward (%.1f GFLOP)\n",
           flops / sec * 1e-9, flops * 1e-9);
    printf("peak RSS: %.0f MiB\n", peak_rss_mib());
    printf("result %strain%d c %.4f %.2f %.0f\n", bm->prefix, S, sec, flops / sec * 1e-9,
           peak_rss_mib());
    free(ddense);
    free(img);
    free(teacher);
    clipself_loss_free(&cl);
    adamw_free(&opt);
    vit_free(&m);
    return 0;
}

int main(int argc, char **argv) {
    const char *usage = "usage: bench sgemm | [MODEL] teacher | [MODEL] teacher-bf16 | [MODEL] train SIZE "
                        "[STEPS]\n"
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
    if (!strcmp(argv[1], "sgemm") && bm == &models[0]) {
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
