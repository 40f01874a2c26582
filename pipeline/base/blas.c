/* blas.c: the thread count and BLIS's kernel set (see blas.h). */
#include "base/blas.h"

#include <blis.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"

static int threads_override;

int cs_num_threads(void) {
    /* The OpenMP team size (OMP_NUM_THREADS, else the cores): per-thread scratch is sized by
     * it, so it must be what omp_get_thread_num() ranges over. */
    return threads_override > 0 ? threads_override : omp_get_max_threads();
}

void cs_set_num_threads(int n) {
    threads_override = n;
    omp_set_num_threads(n > 0 ? n : omp_get_num_procs());
}

/* The sub-configurations this BLIS was built with (blis.h's BLIS_CONFIG_* macros). */
static const arch_t blas_configured[] = {
#ifdef BLIS_CONFIG_SKX
    BLIS_ARCH_SKX,
#endif
#ifdef BLIS_CONFIG_KNL
    BLIS_ARCH_KNL,
#endif
#ifdef BLIS_CONFIG_HASWELL
    BLIS_ARCH_HASWELL,
#endif
#ifdef BLIS_CONFIG_SANDYBRIDGE
    BLIS_ARCH_SANDYBRIDGE,
#endif
#ifdef BLIS_CONFIG_PENRYN
    BLIS_ARCH_PENRYN,
#endif
#ifdef BLIS_CONFIG_ZEN3
    BLIS_ARCH_ZEN3,
#endif
#ifdef BLIS_CONFIG_ZEN2
    BLIS_ARCH_ZEN2,
#endif
#ifdef BLIS_CONFIG_ZEN
    BLIS_ARCH_ZEN,
#endif
#ifdef BLIS_CONFIG_EXCAVATOR
    BLIS_ARCH_EXCAVATOR,
#endif
#ifdef BLIS_CONFIG_STEAMROLLER
    BLIS_ARCH_STEAMROLLER,
#endif
#ifdef BLIS_CONFIG_PILEDRIVER
    BLIS_ARCH_PILEDRIVER,
#endif
#ifdef BLIS_CONFIG_BULLDOZER
    BLIS_ARCH_BULLDOZER,
#endif
    BLIS_ARCH_GENERIC,
};

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static int blas_status;
static char blas_error[512];
static char blas_why[160] = "BLIS's own choice";

static int has_avx512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
static int has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

static void blas_setup(void) {
    const char *want = getenv("CLIPSELF_KERNELS");
    __builtin_cpu_init();
    if (getenv("BLIS_ARCH_TYPE")) {
        snprintf(blas_why, sizeof blas_why, "BLIS_ARCH_TYPE=%s, set by the user",
                 getenv("BLIS_ARCH_TYPE"));
    } else if (!want || !*want || !strcmp(want, "auto")) {
        /* BLIS picks by CPU family and model; a CPU newer than this BLIS (AMD family 26 for
         * 0.9.0) gets the generic kernels, 4-6x slower. Then take the widest SIMD set the CPU
         * runs: skx with AVX-512, else haswell with AVX2 and FMA. */
        arch_t own = bli_cpuid_query_id();
        const char *pick = NULL;
        if (own == BLIS_ARCH_GENERIC && has_avx512()) pick = "skx";
        else if (own == BLIS_ARCH_GENERIC && has_avx2()) pick = "haswell";
        if (pick) {
            snprintf(blas_why, sizeof blas_why, "BLIS's own choice is generic on this CPU; "
                     "picked for its %s (CLIPSELF_KERNELS=blis keeps generic)",
                     !strcmp(pick, "skx") ? "AVX-512" : "AVX2 and FMA");
            char v[16];
            snprintf(v, sizeof v, "%d", !strcmp(pick, "skx") ? BLIS_ARCH_SKX : BLIS_ARCH_HASWELL);
            setenv("BLIS_ARCH_TYPE", v, 1);
        }
    } else if (!strcmp(want, "blis")) {
        snprintf(blas_why, sizeof blas_why, "BLIS's own choice (CLIPSELF_KERNELS=blis)");
    } else {
        /* only a set this BLIS was built with: another id makes bli_init abort */
        int id = -1;
        char names[256] = "";
        for (size_t i = 0; i < sizeof blas_configured / sizeof blas_configured[0]; i++) {
            const char *n = bli_arch_string(blas_configured[i]);
            if (!strcmp(n, want)) id = (int)blas_configured[i];
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     n);
        }
        if (id < 0) {
            snprintf(blas_error, sizeof blas_error, "CLIPSELF_KERNELS=%s: this BLIS has no "
                     "kernel set of that name (it has: %.255s)", want, names);
            blas_status = -1;
            return;
        }
        /* a set whose instructions the CPU lacks would end in SIGILL */
        int fits = 1;
        if (id == BLIS_ARCH_SKX || id == BLIS_ARCH_KNL)
            fits = has_avx512();
        else if (id == BLIS_ARCH_EXCAVATOR || id == BLIS_ARCH_STEAMROLLER ||
                 id == BLIS_ARCH_PILEDRIVER || id == BLIS_ARCH_BULLDOZER)
            fits = __builtin_cpu_supports("fma4"); /* AMD's pre-Zen FMA4 kernels */
        else if (id != BLIS_ARCH_GENERIC && id != BLIS_ARCH_PENRYN && id != BLIS_ARCH_SANDYBRIDGE)
            fits = has_avx2();
        else if (id == BLIS_ARCH_SANDYBRIDGE)
            fits = __builtin_cpu_supports("avx");
        if (!fits) {
            snprintf(blas_error, sizeof blas_error, "CLIPSELF_KERNELS=%s: this CPU lacks the "
                     "instructions of that kernel set", want);
            blas_status = -1;
            return;
        }
        char v[16];
        snprintf(v, sizeof v, "%d", id);
        setenv("BLIS_ARCH_TYPE", v, 1);
        snprintf(blas_why, sizeof blas_why, "CLIPSELF_KERNELS=%s", want);
    }
    bli_init(); /* bli_arch_query_id() before bli_init() aborts ("uninitialized context") */
}

int cs_blas_init(void) {
    pthread_once(&blas_once, blas_setup);
    if (blas_status) CS_FAIL("%s", blas_error);
    return 0;
}

const char *cs_blas_kernels(void) {
    if (cs_blas_init()) return "unknown";
    return bli_arch_string(bli_arch_query_id());
}

const char *cs_blas_kernels_why(void) {
    cs_blas_init();
    return blas_why;
}
