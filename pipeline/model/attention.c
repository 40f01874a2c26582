/* attention.c: multi-head softmax attention over a fused qkv tensor, forward and backward,
 * fused ("flash") in fp32.
 *
 * Memory: a 1024x1024 image at patch 16 has T = 4097 tokens, and keeping every layer's T x T
 * probabilities would cost 12 layers x 12 heads x T^2 floats = 9.6 GB. The forward keeps only
 * the per-row log-sum-exp (B, H, T); the backward recomputes the probabilities from q, k and
 * that log-sum-exp. Neither ever holds a T x T or an ATTN_BQ x T matrix: the work is cut into
 * ATTN_BQ query rows x ATTN_BK keys, and a thread's working set is one such score block plus
 * its Q, K, V panels and accumulators, 130 KB (forward) to 270 KB (backward) at D = 64, inside
 * a 1 MB L2 whatever T is (the former 256 x T score blocks were 4.2 MB per thread at T = 4097,
 * 8.4 MB in the backward). attention_scratch_floats sizes for D <= 128: ~0.4 MB per thread.
 *
 * Forward (tasks over image x head x query block, dynamic schedule): for each key block,
 * S = Q K^T / sqrt(D) (ATTN_BQ x ATTN_BK), an online softmax (a running row max m and sum l;
 * when m grows the running output and l are rescaled by exp(m_old - m_new)), O += P V. At the
 * end O /= l and lse = m + log l. The causal variant skips key blocks past the query block and
 * masks inside the diagonal ones.
 *
 * Backward (flash-attention-2 order; tasks over image x head, each owning its head's dQ, dK and
 * dV columns, so no two threads write the same element and no atomics are needed): D_i =
 * dO_i . O_i per row once; then per key block, dK and dV accumulate in thread-local
 * ATTN_BK x D buffers over all query blocks, each of which recomputes P = exp(S - lse) and
 * dP = dO V^T, dS = P (dP - D_i) / sqrt(D), and adds dS K to its dQ rows. B x H tasks (12 per
 * image for the B/16 models) keep 2..12 threads busy.
 *
 * Products: every block product has K = D = 64 or K = ATTN_BK, small for BLIS's packing and
 * call overhead (the former code, single-threaded BLIS per head with K = 64, ran at 17-25 %
 * of the 2-core AVX-512 peak; this one at ~50 %, B = 1, H = 12, D = 64, T = 197 and 4097,
 * measured on Zen 5, 2 threads). They are register-blocked AVX-512 micro-kernels
 * (function-level target, chosen at run time when the CPU has AVX-512F, D % 16 == 0 and the
 * BLIS kernel set is not "generic"), with portable C loops as the fallback (any D;
 * CLIPSELF_KERNELS=generic selects them, so the tests cover both). Q, V and the K rows of
 * dQ += dS K are read in place from the (B, T, 3C) qkv rows; K (and V in the backward) is
 * packed transposed per key block. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/ops.h"

#define ATTN_BQ 128 /* query rows per block */
#define ATTN_BK 128 /* keys per block (a multiple of 16) */

/* exp(x) for the softmax's x <= 0, written so the compiler vectorises it (libm's expf is a
 * scalar call, a fifth of the 1024x1024 step): x = n ln2 + r with |r| <= ln2 / 2, a degree-6
 * polynomial for exp(r) (Cephes' coefficients, within 2 ulp), and 2^n from the exponent bits.
 * Below -87.3 the result would be subnormal and is flushed to 0, which a softmax cannot see.
 * exp16_nonpos below is the same computation on 16 lanes (with fused multiply-adds). */
static inline float exp_nonpos(float x) {
    x = x < -87.3f ? -87.3f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } two_n = {.i = ((int32_t)n + 127) << 23};
    return x <= -87.3f ? 0.0f : p * two_n.f;
}

/* Padded block width: key columns of a score block, a multiple of 16. */
static int pad16(int n) { return (n + 15) & ~15; }

/* Per-thread floats: forward Kt (D, BK) + S (BQ, BK) + O (BQ, D) + m, l (BQ); backward
 * Kt, Vt (D, BK) + P, dS (BQ, BK) + dK, dV (BK, D) + D_i (T). 16 more to align to 64 bytes. */
static size_t fwd_floats(int D) {
    return (size_t)D * ATTN_BK + (size_t)ATTN_BQ * ATTN_BK + (size_t)ATTN_BQ * D + 2 * ATTN_BQ;
}
static size_t bwd_floats(int D, int T) {
    return 2 * (size_t)D * ATTN_BK + 2 * (size_t)ATTN_BQ * ATTN_BK + 2 * (size_t)ATTN_BK * D +
           (size_t)pad16(T);
}
static size_t per_thread(int D, int T) {
    size_t f = fwd_floats(D), b = bwd_floats(D, T);
    return (f > b ? f : b) + 16;
}

/* The scratch depends on D = C / H too; the callers pass T only, so this sizes for D <= 128
 * (every model here has D = 64) and the entry points check D against it. */
#define ATTN_DMAX 128

size_t attention_scratch_floats(int T, int nthreads) {
    return (size_t)(nthreads > 0 ? nthreads : 1) * per_thread(ATTN_DMAX, T);
}

/* A head wider than the scratch was sized for is a programming error (no model here has one). */
static void check_d(int D) {
    if (D > ATTN_DMAX) {
        fprintf(stderr, "%s:%d: attention: head size %d > %d, the most the scratch holds\n",
                __FILE__, __LINE__, D, ATTN_DMAX);
        abort();
    }
}

static float *thread_scratch(float *scratch, int T) {
    float *s = scratch + (size_t)omp_get_thread_num() * per_thread(ATTN_DMAX, T);
    return (float *)(((uintptr_t)s + 63) & ~(uintptr_t)63);
}

/* ---- the kernels: portable loops ---------------------------------------------------------- */
/* k1: C (m, n) = alpha A (m, D) Bt (D, n); A rows lda, Bt rows ldb, C rows ldc, n % 16 == 0.
 * k2: C (m, D) += A (m, k) B (k, D); A(r, j) = a[r rsa + j csa], B rows ldb, C rows ldc.
 * row_max: the max of s[0..n). row_exp: s[j] = exp(s[j] - mx) for j < n, 0 for n <= j < np;
 * returns the sum. bwd_row: p[j] = exp(s[j] - lse) and ds[j] = scale p[j] (ds[j] - di) for
 * j < n, both 0 for n <= j < np (ds holds dP on entry). */

static void k1_c(int m, int n, int D, float alpha, const float *a, int lda, const float *bt,
                 int ldb, float *c, int ldc) {
    for (int r = 0; r < m; r++) {
        float *cr = c + (size_t)r * ldc;
        memset(cr, 0, (size_t)n * sizeof(float));
        for (int d = 0; d < D; d++) {
            float av = a[(size_t)r * lda + d];
            const float *br = bt + (size_t)d * ldb;
#pragma omp simd
            for (int j = 0; j < n; j++) cr[j] += av * br[j];
        }
#pragma omp simd
        for (int j = 0; j < n; j++) cr[j] *= alpha;
    }
}

static void k2_c(int m, int k, int D, const float *a, size_t rsa, size_t csa, const float *b,
                 int ldb, float *c, int ldc) {
    for (int r = 0; r < m; r++) {
        float *cr = c + (size_t)r * ldc;
        for (int j = 0; j < k; j++) {
            float av = a[r * rsa + j * csa];
            const float *br = b + (size_t)j * ldb;
#pragma omp simd
            for (int e = 0; e < D; e++) cr[e] += av * br[e];
        }
    }
}

static float row_max_c(const float *s, int n) {
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    return mx;
}

static float row_exp_c(float *s, int n, int np, float mx) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
        s[j] = exp_nonpos(s[j] - mx);
        sum += s[j];
    }
    for (int j = n; j < np; j++) s[j] = 0.0f;
    return sum;
}

static void bwd_row_c(float *p, float *ds, int n, int np, float lse, float di, float scale) {
#pragma omp simd
    for (int j = 0; j < n; j++) {
        p[j] = exp_nonpos(p[j] - lse);
        ds[j] = scale * p[j] * (ds[j] - di);
    }
    for (int j = n; j < np; j++) p[j] = ds[j] = 0.0f;
}

/* ---- the kernels: AVX-512 ----------------------------------------------------------------- */
#define AVX512 __attribute__((target("avx512f,avx512vl,fma")))
#define TILE static inline __attribute__((always_inline, target("avx512f,avx512vl,fma")))

TILE __m512 exp16_nonpos(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    __mmask16 flush = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LE_OQ);
    __m512 n = _mm512_roundscale_ps(
        _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
        _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps((__mmask16)~flush, p, _mm512_castsi512_ps(e));
}

/* One MR x (16 NV) tile of k1 (MR, NV compile-time after inlining). */
TILE void k1_tile(const int MR, const int NV, int D, float alpha, const float *a, int lda,
                  const float *bt, int ldb, float *c, int ldc) {
    __m512 acc[8][2];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
    for (int d = 0; d < D; d++) {
        __m512 bv[2];
        for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(bt + (size_t)d * ldb + 16 * v);
        for (int r = 0; r < MR; r++) {
            __m512 av = _mm512_set1_ps(a[(size_t)r * lda + d]);
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    __m512 al = _mm512_set1_ps(alpha);
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++)
            _mm512_storeu_ps(c + (size_t)r * ldc + 16 * v, _mm512_mul_ps(al, acc[r][v]));
}

#define K1_ROWS(NV)                                                                            \
    switch (mr) {                                                                              \
    case 8: k1_tile(8, NV, D, alpha, ar, lda, bt + j, ldb, cr + j, ldc); break;                \
    case 7: k1_tile(7, NV, D, alpha, ar, lda, bt + j, ldb, cr + j, ldc); break;                \
    case 6: k1_tile(6, NV, D, alpha, ar, lda, bt + j, ldb, cr + j, ldc); break;                \
    case 5: k1_tile(5, NV, D, alpha, ar, lda, bt + j, ldb, cr + j, ldc); break;                \
    case 4: k1_tile(4, NV, D, alpha, ar, lda, bt + j, ldb, cr + j, ldc); break;                \
    case 3: k1_tile(3, NV, D, alpha, ar, lda, bt + j, ldb, cr + j, ldc); break;                \
    case 2: k1_tile(2, NV, D, alpha, ar, lda, bt + j, ldb, cr + j, ldc); break;                \
    default: k1_tile(1, NV, D, alpha, ar, lda, bt + j, ldb, cr + j, ldc); break;               \
    }

AVX512 static void k1_avx512(int m, int n, int D, float alpha, const float *a, int lda,
                             const float *bt, int ldb, float *c, int ldc) {
    for (int r0 = 0; r0 < m; r0 += 8) {
        int mr = m - r0 < 8 ? m - r0 : 8;
        const float *ar = a + (size_t)r0 * lda;
        float *cr = c + (size_t)r0 * ldc;
        int j = 0;
        for (; j + 32 <= n; j += 32) K1_ROWS(2)
        if (j < n) K1_ROWS(1)
    }
}

/* One MR x (16 NV) tile of k2. */
TILE void k2_tile(const int MR, const int NV, int k, const float *a, size_t rsa, size_t csa,
                  const float *b, int ldb, float *c, int ldc) {
    __m512 acc[6][4];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_loadu_ps(c + (size_t)r * ldc + 16 * v);
    for (int j = 0; j < k; j++) {
        __m512 bv[4];
        for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + (size_t)j * ldb + 16 * v);
        for (int r = 0; r < MR; r++) {
            __m512 av = _mm512_set1_ps(a[r * rsa + j * csa]);
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) _mm512_storeu_ps(c + (size_t)r * ldc + 16 * v, acc[r][v]);
}

#define K2_ROWS(NV)                                                                            \
    switch (mr) {                                                                              \
    case 6: k2_tile(6, NV, k, ar, rsa, csa, b + e, ldb, cr + e, ldc); break;                   \
    case 5: k2_tile(5, NV, k, ar, rsa, csa, b + e, ldb, cr + e, ldc); break;                   \
    case 4: k2_tile(4, NV, k, ar, rsa, csa, b + e, ldb, cr + e, ldc); break;                   \
    case 3: k2_tile(3, NV, k, ar, rsa, csa, b + e, ldb, cr + e, ldc); break;                   \
    case 2: k2_tile(2, NV, k, ar, rsa, csa, b + e, ldb, cr + e, ldc); break;                   \
    default: k2_tile(1, NV, k, ar, rsa, csa, b + e, ldb, cr + e, ldc); break;                  \
    }

AVX512 static void k2_avx512(int m, int k, int D, const float *a, size_t rsa, size_t csa,
                             const float *b, int ldb, float *c, int ldc) {
    for (int r0 = 0; r0 < m; r0 += 6) {
        int mr = m - r0 < 6 ? m - r0 : 6;
        const float *ar = a + r0 * rsa;
        float *cr = c + (size_t)r0 * ldc;
        int e = 0;
        for (; e + 64 <= D; e += 64) K2_ROWS(4)
        switch ((D - e) / 16) {
        case 3: K2_ROWS(3) break;
        case 2: K2_ROWS(2) break;
        case 1: K2_ROWS(1) break;
        default: break;
        }
    }
}

static inline __mmask16 tail_mask(int left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

AVX512 static float row_max_avx512(const float *s, int n) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < n; j += 16)
        mx = _mm512_mask_max_ps(mx, tail_mask(n - j), mx, _mm512_loadu_ps(s + j));
    return _mm512_reduce_max_ps(mx);
}

AVX512 static float row_exp_avx512(float *s, int n, int np, float mx) {
    __m512 sum = _mm512_setzero_ps(), m = _mm512_set1_ps(mx);
    for (int j = 0; j < np; j += 16) {
        __mmask16 k = n - j > 0 ? tail_mask(n - j) : 0;
        __m512 p = _mm512_maskz_mov_ps(k, exp16_nonpos(_mm512_sub_ps(_mm512_loadu_ps(s + j), m)));
        _mm512_storeu_ps(s + j, p);
        sum = _mm512_add_ps(sum, p);
    }
    return _mm512_reduce_add_ps(sum);
}

AVX512 static void bwd_row_avx512(float *p, float *ds, int n, int np, float lse, float di,
                                  float scale) {
    __m512 l = _mm512_set1_ps(lse), dv = _mm512_set1_ps(di), sc = _mm512_set1_ps(scale);
    for (int j = 0; j < np; j += 16) {
        __mmask16 k = n - j > 0 ? tail_mask(n - j) : 0;
        __m512 pv = _mm512_maskz_mov_ps(k, exp16_nonpos(_mm512_sub_ps(_mm512_loadu_ps(p + j), l)));
        __m512 d = _mm512_mul_ps(_mm512_mul_ps(sc, pv), _mm512_sub_ps(_mm512_loadu_ps(ds + j), dv));
        _mm512_storeu_ps(p + j, pv);
        _mm512_storeu_ps(ds + j, d);
    }
}

/* ---- dispatch ----------------------------------------------------------------------------- */
static int use_avx512(int D) {
    static int cpu = -1; /* AVX-512F and a kernel set other than generic: read once */
    if (cpu < 0) {
        int c = __builtin_cpu_supports("avx512f") && strcmp(cs_blas_kernels(), "generic") != 0;
        __atomic_store_n(&cpu, c, __ATOMIC_RELAXED);
    }
    return cpu && D % 16 == 0;
}

static void k1(int simd, int m, int n, int D, float alpha, const float *a, int lda,
               const float *bt, int ldb, float *c, int ldc) {
    if (simd) k1_avx512(m, n, D, alpha, a, lda, bt, ldb, c, ldc);
    else k1_c(m, n, D, alpha, a, lda, bt, ldb, c, ldc);
}
static void k2(int simd, int m, int k, int D, const float *a, size_t rsa, size_t csa,
               const float *b, int ldb, float *c, int ldc) {
    if (simd) k2_avx512(m, k, D, a, rsa, csa, b, ldb, c, ldc);
    else k2_c(m, k, D, a, rsa, csa, b, ldb, c, ldc);
}

/* Bt (D, np) = the nk rows of x (row stride ld) transposed, columns nk..np-1 zero. */
static void pack_t(float *bt, int np, const float *x, size_t ld, int nk, int D) {
    for (int d = 0; d < D; d++) {
        float *o = bt + (size_t)d * np;
        for (int j = 0; j < nk; j++) o[j] = x[(size_t)j * ld + d];
        for (int j = nk; j < np; j++) o[j] = 0.0f;
    }
}

/* ---- forward ------------------------------------------------------------------------------ */
/* With causal, query row i sees keys 0..i only: key blocks starting past the query block's last
 * row are skipped, and inside a block row i keeps its first q0 + i + 1 - k0 keys. */
static void forward_rows(float *out, float *lse, const float *qkv, float *scratch, int B, int T,
                         int C, int H, int causal) {
    int D = C / H, nqb = (T + ATTN_BQ - 1) / ATTN_BQ, simd = use_avx512(D);
    check_d(D);
    float scale = 1.0f / sqrtf((float)D);
    size_t C3 = 3 * (size_t)C;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < B * H * nqb; task++) {
        int b = task / (H * nqb), h = task / nqb % H, q0 = task % nqb * ATTN_BQ;
        int bq = T - q0 < ATTN_BQ ? T - q0 : ATTN_BQ, kend = causal ? q0 + bq : T;
        float *Kt = thread_scratch(scratch, T);   /* (D, ATTN_BK) */
        float *S = Kt + (size_t)D * ATTN_BK;          /* (bq, np) */
        float *O = S + (size_t)ATTN_BQ * ATTN_BK;     /* (bq, D) */
        float *m = O + (size_t)ATTN_BQ * D, *l = m + ATTN_BQ; /* (bq) */
        const float *q = qkv + ((size_t)b * T + q0) * C3 + (size_t)h * D; /* (bq, D) ld 3C */
        const float *kb = qkv + (size_t)b * T * C3 + C + (size_t)h * D;    /* (T, D) ld 3C */
        memset(O, 0, (size_t)bq * D * sizeof(float));
        for (int i = 0; i < bq; i++) m[i] = -INFINITY, l[i] = 0.0f;
        for (int k0 = 0; k0 < kend; k0 += ATTN_BK) {
            int nk = kend - k0 < ATTN_BK ? kend - k0 : ATTN_BK, np = pad16(nk);
            const float *k = kb + (size_t)k0 * C3, *v = k + C;
            pack_t(Kt, np, k, C3, nk, D);
            k1(simd, bq, np, D, scale, q, (int)C3, Kt, np, S, np);
            for (int i = 0; i < bq; i++) {
                float *s = S + (size_t)i * np, *o = O + (size_t)i * D;
                int n = causal ? q0 + i + 1 - k0 : nk; /* keys this row sees in the block */
                n = n > nk ? nk : n;
                if (n <= 0) { /* only under causal: the row sees nothing here */
                    memset(s, 0, (size_t)np * sizeof(float));
                    continue;
                }
                float bm = simd ? row_max_avx512(s, n) : row_max_c(s, n);
                float mn = bm > m[i] ? bm : m[i];
                float alpha = exp_nonpos(m[i] - mn); /* 0 on the first block (m = -inf) */
                float sum = simd ? row_exp_avx512(s, n, np, mn) : row_exp_c(s, n, np, mn);
                if (alpha != 1.0f)
                    for (int e = 0; e < D; e++) o[e] *= alpha;
                l[i] = l[i] * alpha + sum, m[i] = mn;
            }
            k2(simd, bq, nk, D, S, (size_t)np, 1, v, (int)C3, O, D);
        }
        float *o = out + ((size_t)b * T + q0) * C + (size_t)h * D; /* (bq, D) ld C */
        float *ls = lse + ((size_t)b * H + h) * T + q0;
        for (int i = 0; i < bq; i++) {
            float inv = 1.0f / l[i];
            for (int e = 0; e < D; e++) o[(size_t)i * C + e] = O[(size_t)i * D + e] * inv;
            ls[i] = m[i] + logf(l[i]);
        }
    }
}

void attention_forward(float *out, float *lse, const float *qkv, float *scratch, int B, int T,
                       int C, int H) {
    forward_rows(out, lse, qkv, scratch, B, T, C, H, 0);
}

void attention_forward_causal(float *out, float *lse, const float *qkv, float *scratch, int B,
                              int T, int C, int H) {
    forward_rows(out, lse, qkv, scratch, B, T, C, H, 1);
}

/* ---- backward ----------------------------------------------------------------------------- */
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                        const float *lse, float *scratch, int B, int T, int C, int H) {
    int D = C / H, simd = use_avx512(D);
    check_d(D);
    float scale = 1.0f / sqrtf((float)D);
    size_t C3 = 3 * (size_t)C;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < B * H; task++) {
        int b = task / H, h = task % H;
        float *Kt = thread_scratch(scratch, T);  /* (D, ATTN_BK) */
        float *Vt = Kt + (size_t)D * ATTN_BK;        /* (D, ATTN_BK) */
        float *P = Vt + (size_t)D * ATTN_BK;         /* (bq, np) */
        float *dS = P + (size_t)ATTN_BQ * ATTN_BK;   /* (bq, np) */
        float *dK = dS + (size_t)ATTN_BQ * ATTN_BK;  /* (nk, D) */
        float *dV = dK + (size_t)ATTN_BK * D;        /* (nk, D) */
        float *Di = dV + (size_t)ATTN_BK * D;        /* (T) */
        const float *qb = qkv + (size_t)b * T * C3 + (size_t)h * D; /* (T, D) ld 3C */
        const float *kb = qb + C, *vb = kb + C;
        float *dqb = dqkv + (size_t)b * T * C3 + (size_t)h * D;
        const float *ob = out + (size_t)b * T * C + (size_t)h * D;   /* (T, D) ld C */
        const float *dob = dout + (size_t)b * T * C + (size_t)h * D; /* (T, D) ld C */
        const float *lb = lse + ((size_t)b * H + h) * T;
        /* sum_j P_ij dP_ij = dO_i . O_i: the softmax backward's row term */
        for (int i = 0; i < T; i++) {
            float di = 0.0f;
            for (int e = 0; e < D; e++) di += dob[(size_t)i * C + e] * ob[(size_t)i * C + e];
            Di[i] = di;
        }
        for (int k0 = 0; k0 < T; k0 += ATTN_BK) {
            int nk = T - k0 < ATTN_BK ? T - k0 : ATTN_BK, np = pad16(nk);
            const float *k = kb + (size_t)k0 * C3, *v = vb + (size_t)k0 * C3;
            pack_t(Kt, np, k, C3, nk, D);
            pack_t(Vt, np, v, C3, nk, D);
            memset(dK, 0, (size_t)nk * D * sizeof(float));
            memset(dV, 0, (size_t)nk * D * sizeof(float));
            for (int q0 = 0; q0 < T; q0 += ATTN_BQ) {
                int bq = T - q0 < ATTN_BQ ? T - q0 : ATTN_BQ;
                const float *q = qb + (size_t)q0 * C3, *dO = dob + (size_t)q0 * C;
                k1(simd, bq, np, D, scale, q, (int)C3, Kt, np, P, np);  /* S */
                k1(simd, bq, np, D, 1.0f, dO, C, Vt, np, dS, np);       /* dP */
                for (int i = 0; i < bq; i++) {
                    float *p = P + (size_t)i * np, *ds = dS + (size_t)i * np;
                    if (simd) bwd_row_avx512(p, ds, nk, np, lb[q0 + i], Di[q0 + i], scale);
                    else bwd_row_c(p, ds, nk, np, lb[q0 + i], Di[q0 + i], scale);
                }
                k2(simd, nk, bq, D, P, 1, (size_t)np, dO, C, dV, D);   /* dV += P^T dO */
                k2(simd, nk, bq, D, dS, 1, (size_t)np, q, (int)C3, dK, D); /* dK += dS^T Q */
                k2(simd, bq, nk, D, dS, (size_t)np, 1, k, (int)C3, dqb + (size_t)q0 * C3,
                   (int)C3); /* dQ += dS K */
            }
            float *dk = dqb + (size_t)k0 * C3 + C, *dv = dk + C;
            for (int j = 0; j < nk; j++)
                for (int e = 0; e < D; e++) {
                    dk[(size_t)j * C3 + e] += dK[(size_t)j * D + e];
                    dv[(size_t)j * C3 + e] += dV[(size_t)j * D + e];
                }
        }
    }
}
