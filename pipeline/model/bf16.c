/* bf16.c: bfloat16 linear layers through oneDNN's matmul (see the header). */
#include "model/bf16.h"

#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"

#define DNNL_CHECK(expr, what)                                                                  \
    do {                                                                                       \
        dnnl_status_t s_ = (expr);                                                             \
        CS_CHECK(s_ == dnnl_success, "oneDNN: %s failed (status %d)", what, (int)s_);           \
    } while (0)

void bf16_from_float(uint16_t *dst, const float *src, size_t n) {
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        /* round to nearest even on the 16 bits dropped; a NaN keeps a mantissa bit (quiet) */
        uint32_t r = (u & 0x7fffffffu) > 0x7f800000u ? (u | 0x00400000u)
                                                     : u + 0x7fffu + ((u >> 16) & 1u);
        dst[i] = (uint16_t)(r >> 16);
    }
}

void bf16_to_float(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, 4);
    }
}

/* ---- one engine, one stream, the primitives by shape, one scratchpad --------------------- */

typedef struct {
    int M, K, N, out_bf16, act, bias;
    dnnl_primitive_t prim;
    dnnl_memory_t src, dst, scratch;
    char impl[64];
} Entry;

static struct {
    int ready;
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    Entry *entries;
    int num, cap;
    void *scratch;
    size_t scratch_size;
} ctx;

static int ctx_init(void) {
    if (ctx.ready) return 0;
    DNNL_CHECK(dnnl_engine_create(&ctx.engine, dnnl_cpu, 0), "creating the CPU engine");
    DNNL_CHECK(dnnl_stream_create(&ctx.stream, ctx.engine, dnnl_stream_default_flags),
               "creating a stream");
    ctx.ready = 1;
    return 0;
}

/* The matmul descriptor for src (M, K) bf16, weights wmd, bias (1, N) f32 or none, dst (M, N). */
static int matmul_pd(dnnl_primitive_desc_t *pd, int M, int K, int N, const dnnl_memory_desc_t *wmd,
                     int bias, int out_bf16, int act) {
    dnnl_memory_desc_t smd, bmd, dmd;
    dnnl_dims_t sd = {M, K}, bd = {1, N}, dd = {M, N};
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&smd, 2, sd, dnnl_bf16, dnnl_ab), "a source desc");
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&bmd, 2, bd, dnnl_f32, dnnl_ab), "a bias desc");
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&dmd, 2, dd, out_bf16 ? dnnl_bf16 : dnnl_f32, dnnl_ab),
               "a destination desc");
    dnnl_matmul_desc_t md;
    DNNL_CHECK(dnnl_matmul_desc_init(&md, &smd, wmd, bias ? &bmd : NULL, &dmd), "a matmul desc");
    CS_CHECK(act != BF16_ADD || !out_bf16, "bf16 linear: the residual add needs a float output");
    dnnl_primitive_attr_t attr;
    DNNL_CHECK(dnnl_primitive_attr_create(&attr), "creating attributes");
    dnnl_status_t s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    dnnl_post_ops_t po = NULL;
    if (s == dnnl_success && act != BF16_ACT_NONE) {
        s = dnnl_post_ops_create(&po);
        if (s == dnnl_success && act == BF16_ADD)
            s = dnnl_post_ops_append_sum(po, 1.0f);
        else if (s == dnnl_success)
            s = dnnl_post_ops_append_eltwise(po, 1.0f, act == BF16_ACT_GELU ? dnnl_eltwise_gelu_erf
                                                                            : dnnl_eltwise_swish,
                                             act == BF16_ACT_GELU ? 0.0f : 1.702f, 0.0f);
        if (s == dnnl_success) s = dnnl_primitive_attr_set_post_ops(attr, po);
    }
    if (s == dnnl_success) s = dnnl_primitive_desc_create(pd, &md, attr, ctx.engine, NULL);
    if (po) dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    CS_CHECK(s == dnnl_success, "oneDNN has no bf16 matmul for %d x %d x %d (status %d)", M, K, N,
             (int)s);
    return 0;
}

/* The layout every layer's weights are converted to: the one matmul prefers for (K, N) at a
 * typical row count. Products of other row counts take the same layout (matmul_entry). */
#define LAYOUT_M 1024

static Entry *matmul_entry(int M, const Bf16Linear *l, int out_bf16, int act) {
    for (int i = 0; i < ctx.num; i++) {
        Entry *e = &ctx.entries[i];
        if (e->M == M && e->K == l->K && e->N == l->N && e->out_bf16 == out_bf16 &&
            e->act == act && e->bias == (l->bias != NULL))
            return e;
    }
    if (ctx.num == ctx.cap) {
        int cap = ctx.cap ? 2 * ctx.cap : 16;
        Entry *grown = realloc(ctx.entries, (size_t)cap * sizeof(Entry));
        if (!grown) {
            cs_error_set(__FILE__, __LINE__, "out of memory");
            return NULL;
        }
        ctx.entries = grown, ctx.cap = cap;
    }
    const dnnl_memory_desc_t *wmd;
    if (dnnl_memory_get_memory_desc(l->weights, &wmd) != dnnl_success) {
        cs_error_set(__FILE__, __LINE__, "oneDNN: no weights descriptor");
        return NULL;
    }
    dnnl_primitive_desc_t pd;
    if (matmul_pd(&pd, M, l->K, l->N, wmd, l->bias != NULL, out_bf16, act)) return NULL;
    Entry e = {M, l->K, l->N, out_bf16, act, l->bias != NULL, NULL, NULL, NULL, NULL, ""};
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    snprintf(e.impl, sizeof e.impl, "%s", impl ? impl : "?");
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *dmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *pmd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t need = pmd ? dnnl_memory_desc_get_size(pmd) : 0;
    int bad = dnnl_primitive_create(&e.prim, pd) != dnnl_success;
    if (!bad) bad = dnnl_memory_create(&e.src, smd, ctx.engine, DNNL_MEMORY_NONE) != dnnl_success;
    if (!bad) bad = dnnl_memory_create(&e.dst, dmd, ctx.engine, DNNL_MEMORY_NONE) != dnnl_success;
    if (!bad && need) {
        if (need > ctx.scratch_size) { /* one buffer for all: primitives run one at a time */
            free(ctx.scratch);
            ctx.scratch = aligned_alloc(64, (need + 63) / 64 * 64);
            ctx.scratch_size = ctx.scratch ? need : 0;
            /* the older entries' scratchpad memories point at the freed buffer: repoint them */
            for (int i = 0; i < ctx.num; i++)
                if (ctx.entries[i].scratch)
                    dnnl_memory_set_data_handle(ctx.entries[i].scratch, ctx.scratch);
        }
        bad = !ctx.scratch ||
              dnnl_memory_create(&e.scratch, pmd, ctx.engine, ctx.scratch) != dnnl_success;
    }
    dnnl_primitive_desc_destroy(pd);
    if (bad) {
        if (e.prim) dnnl_primitive_destroy(e.prim);
        if (e.src) dnnl_memory_destroy(e.src);
        if (e.dst) dnnl_memory_destroy(e.dst);
        cs_error_set(__FILE__, __LINE__, "oneDNN: cannot create the bf16 matmul %d x %d x %d", M,
                     l->K, l->N);
        return NULL;
    }
    ctx.entries[ctx.num] = e;
    return &ctx.entries[ctx.num++];
}

int bf16_linear_init(Bf16Linear *l, const float *W, int ldw, const float *b, int K, int N) {
    memset(l, 0, sizeof *l);
    CS_CHECK(K > 0 && N > 0 && ldw >= K, "bf16 linear: bad shape %d x %d (ldw %d)", K, N, ldw);
    CS_TRY(ctx_init());
    l->K = K, l->N = N;
    /* W (N, K) row-major is the (K, N) matrix with strides (1, ldw) */
    dnnl_memory_desc_t umd, amd;
    dnnl_dims_t wd = {K, N}, ws = {1, ldw};
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&umd, 2, wd, dnnl_f32, ws), "a weights desc");
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&amd, 2, wd, dnnl_bf16, dnnl_format_tag_any),
               "a weights desc");
    dnnl_primitive_desc_t pd, rpd;
    CS_TRY(matmul_pd(&pd, LAYOUT_M, K, N, &amd, b != NULL, 0, BF16_ACT_NONE));
    const dnnl_memory_desc_t *pmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_t user = NULL;
    dnnl_primitive_t reorder = NULL;
    int bad = dnnl_memory_create(&user, &umd, ctx.engine, (void *)W) != dnnl_success;
    if (!bad) bad = dnnl_memory_create((dnnl_memory_t *)&l->weights, pmd, ctx.engine,
                                       DNNL_MEMORY_ALLOCATE) != dnnl_success;
    if (!bad) bad = dnnl_reorder_primitive_desc_create(&rpd, &umd, ctx.engine, pmd, ctx.engine,
                                                       NULL) != dnnl_success;
    dnnl_primitive_desc_destroy(pd);
    if (!bad) {
        bad = dnnl_primitive_create(&reorder, rpd) != dnnl_success;
        dnnl_primitive_desc_destroy(rpd);
    }
    if (!bad) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, l->weights}};
        bad = dnnl_primitive_execute(reorder, ctx.stream, 2, args) != dnnl_success ||
              dnnl_stream_wait(ctx.stream) != dnnl_success;
    }
    if (reorder) dnnl_primitive_destroy(reorder);
    if (user) dnnl_memory_destroy(user);
    if (!bad && b) {
        dnnl_memory_desc_t bmd;
        dnnl_dims_t bd = {1, N};
        l->bias_data = malloc((size_t)N * sizeof(float));
        bad = !l->bias_data ||
              dnnl_memory_desc_init_by_tag(&bmd, 2, bd, dnnl_f32, dnnl_ab) != dnnl_success ||
              dnnl_memory_create((dnnl_memory_t *)&l->bias, &bmd, ctx.engine, l->bias_data) !=
                  dnnl_success;
        if (!bad) memcpy(l->bias_data, b, (size_t)N * sizeof(float));
    }
    if (bad) {
        bf16_linear_free(l);
        CS_FAIL("oneDNN: cannot convert a %d x %d layer to bf16", N, K);
    }
    return 0;
}

void bf16_linear_free(Bf16Linear *l) {
    if (l->weights) dnnl_memory_destroy(l->weights);
    if (l->bias) dnnl_memory_destroy(l->bias);
    free(l->bias_data);
    memset(l, 0, sizeof *l);
}

int bf16_linear_forward(void *out, int out_bf16, const uint16_t *in, const Bf16Linear *l, int M,
                        int act) {
    CS_CHECK(M > 0 && l->weights, "bf16 linear: %d rows, or the layer is not set up", M);
    Entry *e = matmul_entry(M, l, out_bf16, act);
    if (!e) return -1;
    DNNL_CHECK(dnnl_memory_set_data_handle(e->src, (void *)in), "setting the source");
    DNNL_CHECK(dnnl_memory_set_data_handle(e->dst, out), "setting the destination");
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, l->weights},
                               {DNNL_ARG_DST, e->dst}};
    int n = 3;
    if (l->bias) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, l->bias};
    if (e->scratch) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, e->scratch};
    DNNL_CHECK(dnnl_primitive_execute(e->prim, ctx.stream, n, args), "the bf16 matmul");
    DNNL_CHECK(dnnl_stream_wait(ctx.stream), "waiting for the bf16 matmul");
    return 0;
}

int bf16_linear_plan(const Bf16Linear *l, int M, int out_bf16, int post) {
    CS_CHECK(M > 0 && l->weights, "bf16 linear: %d rows, or the layer is not set up", M);
    return matmul_entry(M, l, out_bf16, post) ? 0 : -1;
}

const char *bf16_impl_name(int M, int K, int N, int out_bf16, int act) {
    for (int i = 0; i < ctx.num; i++) {
        Entry *e = &ctx.entries[i];
        if (e->M == M && e->K == K && e->N == N && e->out_bf16 == out_bf16 && e->act == act)
            return e->impl;
    }
    return "(not made)";
}

const char *bf16_isa_name(void) {
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx2: return "avx2";
    default: return "older than avx2";
    }
}

int bf16_num_primitives(void) { return ctx.num; }
