/* test_allreduce: the bucketed gradient sum of allreduce.h.
 *
 * On one rank (how run-tests starts it): the buckets of the tiny CLIP and EVA02 models and of
 * ViT-B/16 cover exactly the trainable tensors, each range once, every range is final at its
 * bucket's point of the backward, buckets reach their size; the sum on one rank leaves the
 * gradients as they are. Then the program runs itself under mpirun -np 2 --oversubscribe, where
 * each rank backpropagates its own images and dout through the same model and the bucketed,
 * overlapped sum (several bucket sizes, with and without MPI_Testall) must give bit for bit the
 * gradients of the blocking sums it replaced: one MPI_Allreduce per trainable tensor
 * (train_student's, the dense path with CLIPSelf's frozen tensors) or one over the whole
 * buffer (pretrain_teacher's, the image path, every tensor trained), and the extra buffer's
 * sum; both ranks hold the same result. The sharded update (each rank AdamW on its share, the
 * parameters gathered) must give bit for bit the parameters and moments of the sum followed by
 * adamw_step. Exact equality is the claim of allreduce.h on 2 ranks
 * (a + b is one rounding whatever the algorithm), so no tolerance. */
#include <libgen.h>
#include <mpi.h>
#include <unistd.h>

#include "model/adamw.h"
#include "model/allreduce.h"
#include "model/vit.h"
#include "testutil.h"

enum { NEXTRA = 1000, B = 2, S = 64 };

/* The earliest event of vit_backward (grad_ready's done: L head, l block l, -1 embedding)
 * after which all of [a, b) is final: within a tensor, later blocks lie at higher offsets. */
static int final_at(const Vit *m, size_t a, size_t b) {
    int at = m->cfg.layers + 1;
    for (int i = 0; i < VIT_NUM_TENSORS; i++) {
        const VitTensor *t = &m->tensors[i];
        size_t lo = a > t->offset ? a : t->offset;
        if (lo >= b || lo >= t->offset + t->numel) continue;
        int e = t->per_layer ? (int)((lo - t->offset) / (t->numel / (size_t)m->cfg.layers))
                             : i >= VIT_LN_POST_W ? m->cfg.layers : -1;
        at = e < at ? e : at;
    }
    return at;
}

/* The buckets of a model: coverage, readiness, sizes. Returns the bucket count. */
static int check_layout(const char *name, const char *preset, int frozen, size_t bucket) {
    Vit m;
    VitConfig c;
    GradReduce r;
    char what[256], detail[256];
    CS_DIE_IF_FAIL(vit_preset(&c, preset));
    CS_DIE_IF_FAIL(vit_init(&m, &c));
    CS_DIE_IF_FAIL(vit_alloc_grads(&m));
    if (frozen) vit_freeze_clipself(&m);
    CS_DIE_IF_FAIL(grad_reduce_init(&r, &m, bucket, MPI_COMM_SELF));
    unsigned char *seen = calloc(m.num_params, 1), *train = calloc(m.num_params, 1);
    for (int i = 0; i < VIT_NUM_TENSORS; i++)
        if (!m.frozen[i]) memset(train + m.tensors[i].offset, 1, m.tensors[i].numel);
    size_t twice = 0, late = 0, missing = 0, extra = 0, small = 0, badstage = 0;
    int order = 1;
    for (int b = 0; b < r.nbuckets; b++) {
        const GradBucket *k = &r.buckets[b];
        size_t n = 0, staged = 0;
        if (b && k->ready > r.buckets[b - 1].ready) order = 0;
        for (int j = k->first; j < k->first + k->nranges; j++) {
            const GradRange *g = &r.ranges[j];
            n += g->count;
            if (g->staged != (size_t)-1) {
                staged += g->count;
                badstage += g->count >= GRAD_PACK_FLOATS || g->staged < k->stage_off ||
                            g->staged + g->count > k->stage_off + k->stage_n;
            } else {
                badstage += g->count < GRAD_PACK_FLOATS;
            }
            for (size_t o = g->offset; o < g->offset + g->count; o++) twice += seen[o]++ > 0;
            late += final_at(&m, g->offset, g->offset + g->count) < k->ready;
        }
        badstage += staged != k->stage_n;
        if (b < r.nbuckets - 1 && bucket && n < bucket) small++;
    }
    for (size_t o = 0; o < m.num_params; o++) {
        missing += train[o] && !seen[o];
        extra += !train[o] && seen[o];
    }
    snprintf(what, sizeof what, "%s: buckets cover the trainable tensors once", name);
    snprintf(detail, sizeof detail, "%zu twice, %zu missing, %zu frozen", twice, missing, extra);
    tu_check(!twice && !missing && !extra, what, detail);
    snprintf(what, sizeof what, "%s: every range is final when its bucket starts", name);
    snprintf(detail, sizeof detail, "%zu ranges written later; ready order %s", late,
             order ? "ok" : "not decreasing");
    tu_check(!late && order, what, detail);
    snprintf(what, sizeof what, "%s: buckets reach their size, staging only the small ranges",
             name);
    snprintf(detail, sizeof detail, "%zu small buckets, %zu badly staged ranges", small,
             badstage);
    tu_check(!small && !badstage, what, detail);
    int nb = r.nbuckets;
    free(seen), free(train);
    grad_reduce_free(&r, &m);
    tu_check(m.grad_ready == NULL, "grad_reduce_free unhooks the model", name);
    vit_free(&m);
    return nb;
}

static void layouts(void) {
    int n = check_layout("tiny dense, 1-float buckets", "tiny", 1, 1);
    tu_check(n == 2, "tiny dense, 1-float buckets: one bucket a block", NULL);
    n = check_layout("tiny image, 1-float buckets", "tiny", 0, 1);
    tu_check(n == 4, "tiny image, 1-float buckets: head, each block, embedding", NULL);
    check_layout("eva-tiny dense, 3000-float buckets", "eva-tiny", 1, 3000);
    check_layout("eva-tiny image, one bucket", "eva-tiny", 0, 0);
    n = check_layout("tiny dense, default buckets", "tiny", 1, GRAD_BUCKET_FLOATS);
    tu_check(n == 1, "tiny dense, default buckets: the model is one bucket", NULL);
    n = check_layout("b16 dense, default buckets", "b16", 1, GRAD_BUCKET_FLOATS);
    tu_check(n == 12, "b16 dense, default buckets: one bucket a block", NULL);
}

/* One step's gradients of m on this rank's images: forward, backward (hooked or not). */
static void backward(Vit *m, const float *img, const float *dout) {
    vit_forward(m, img);
    vit_zero_grad(m);
    CS_DIE_IF_FAIL(vit_backward(m, dout, NULL));
}

static void numeric(const char *preset, int mode, int rank) {
    Vit m;
    VitConfig c;
    char what[256];
    CS_DIE_IF_FAIL(vit_preset(&c, preset));
    CS_DIE_IF_FAIL(vit_init(&m, &c));
    vit_init_random(&m, 7); /* the same replica on every rank */
    CS_DIE_IF_FAIL(vit_alloc_grads(&m));
    if (mode == VIT_DENSE) vit_freeze_clipself(&m);
    CS_DIE_IF_FAIL(vit_prepare(&m, mode, B, S, S, 1));
    size_t nout = mode == VIT_DENSE ? (size_t)B * m.gh * m.gw * c.embed : (size_t)B * c.embed;
    tu_rng = 0x1234567ull + (uint64_t)rank * 0x9E3779B97F4A7C15ull; /* each rank its own data */
    float *img = alloc_f((size_t)B * 3 * S * S), *dout = alloc_f(nout);
    float *extra0 = alloc_f(NEXTRA), *want_x = alloc_f(NEXTRA), *got_x = alloc_f(NEXTRA);
    for (size_t i = 0; i < (size_t)B * 3 * S * S; i++) img[i] = frand();
    for (size_t i = 0; i < nout; i++) dout[i] = frand();
    for (size_t i = 0; i < NEXTRA; i++) extra0[i] = frand();
    /* the blocking sums the stages had */
    float *want = alloc_f(m.num_params), *peer = alloc_f(m.num_params);
    backward(&m, img, dout);
    if (mode == VIT_DENSE) {
        for (int t = 0; t < VIT_NUM_TENSORS; t++) {
            if (m.frozen[t]) continue;
            const VitTensor *vt = &m.tensors[t];
            MPI_Allreduce(MPI_IN_PLACE, m.grads_mem + vt->offset, (int)vt->numel, MPI_FLOAT,
                          MPI_SUM, MPI_COMM_WORLD);
        }
    } else {
        MPI_Allreduce(MPI_IN_PLACE, m.grads_mem, (int)m.num_params, MPI_FLOAT, MPI_SUM,
                      MPI_COMM_WORLD);
    }
    memcpy(want, m.grads_mem, m.num_params * sizeof(float));
    memcpy(want_x, extra0, NEXTRA * sizeof(float));
    MPI_Allreduce(MPI_IN_PLACE, want_x, NEXTRA, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    size_t buckets[] = {1, 3000, GRAD_BUCKET_FLOATS, 0};
    for (size_t k = 0; k < sizeof buckets / sizeof buckets[0]; k++)
        for (int drive = 1; drive >= 0; drive--) {
            GradReduce r;
            CS_DIE_IF_FAIL(grad_reduce_init(&r, &m, buckets[k], MPI_COMM_WORLD));
            r.drive = drive;
            for (int step = 0; step < 2; step++) { /* the second reuses r */
                memcpy(got_x, extra0, NEXTRA * sizeof(float));
                backward(&m, img, dout);
                int rc = grad_reduce_finish(&r, got_x, NEXTRA);
                snprintf(what, sizeof what, "%s %s, buckets of %zu floats, %s, step %d", preset,
                         mode == VIT_DENSE ? "dense (frozen)" : "image (all)", buckets[k],
                         drive ? "MPI_Testall" : "no Testall", step + 1);
                char detail[512];
                snprintf(detail, sizeof detail, "finish rc %d (%s); %d of %d buckets started in "
                         "the backward", rc, rc ? cs_error() : "", r.early, r.nbuckets);
                tu_check(rc == 0 && r.early == r.nbuckets, what, detail);
                size_t diff = 0;
                for (size_t i = 0; i < m.num_params; i++)
                    diff += memcmp(&m.grads_mem[i], &want[i], sizeof(float)) != 0;
                snprintf(detail, sizeof detail, "%zu of %zu gradients differ from the blocking "
                         "sum", diff, m.num_params);
                tu_check(diff == 0, what, detail);
                tu_check(!memcmp(got_x, want_x, NEXTRA * sizeof(float)), what,
                         "the extra buffer differs from its blocking sum");
                memcpy(peer, m.grads_mem, m.num_params * sizeof(float));
                MPI_Bcast(peer, (int)m.num_params, MPI_FLOAT, 0, MPI_COMM_WORLD);
                tu_check(!memcmp(peer, m.grads_mem, m.num_params * sizeof(float)), what,
                         "rank 0 and this rank hold different sums");
            }
            grad_reduce_free(&r, &m);
        }
    free(img), free(dout), free(extra0), free(want_x), free(got_x), free(want), free(peer);
    vit_free(&m);
}

/* The sharded update (grad_reduce_step) against the path it replaces, grad_reduce_finish and
 * adamw_step: three steps from the same parameters, with the moments gathered after the second
 * (as a checkpoint does) and the third continuing from them. Parameters after every step and
 * the gathered moments at the end must be equal bit for bit (allreduce.h's claim on 2 ranks:
 * the same rounded sums, then the same elementwise update), on both ranks. */
static void sharded(const char *preset, int mode, int rank) {
    enum { STEPS = 3 };
    Vit m;
    VitConfig c;
    char what[256], detail[512];
    CS_DIE_IF_FAIL(vit_preset(&c, preset));
    CS_DIE_IF_FAIL(vit_init(&m, &c));
    vit_init_random(&m, 11);
    CS_DIE_IF_FAIL(vit_alloc_grads(&m));
    if (mode == VIT_DENSE) vit_freeze_clipself(&m);
    CS_DIE_IF_FAIL(vit_prepare(&m, mode, B, S, S, 1));
    size_t nout = mode == VIT_DENSE ? (size_t)B * m.gh * m.gw * c.embed : (size_t)B * c.embed;
    size_t np = m.num_params, bytes = np * sizeof(float);
    tu_rng = 0x7654321ull + (uint64_t)rank * 0x9E3779B97F4A7C15ull;
    float *img = alloc_f((size_t)B * 3 * S * S), *dout = alloc_f(nout);
    for (size_t i = 0; i < (size_t)B * 3 * S * S; i++) img[i] = frand();
    for (size_t i = 0; i < nout; i++) dout[i] = frand();
    float *p0 = alloc_f(np), *want = alloc_f(np * STEPS), *peer = alloc_f(np);
    memcpy(p0, m.params_mem, bytes);
    AdamWConfig ac = adamw_clipself_defaults();
    ac.lr = 1e-3f;
    size_t buckets[] = {1, 3000, GRAD_BUCKET_FLOATS, 0};
    for (size_t k = 0; k < sizeof buckets / sizeof buckets[0]; k++) {
        AdamW ref, opt;
        GradReduce r;
        CS_DIE_IF_FAIL(adamw_init(&ref, &ac, np));
        memcpy(m.params_mem, p0, bytes);
        CS_DIE_IF_FAIL(grad_reduce_init(&r, &m, buckets[k], MPI_COMM_WORLD));
        for (int t = 0; t < STEPS; t++) {
            backward(&m, img, dout);
            CS_DIE_IF_FAIL(grad_reduce_finish(&r, NULL, 0));
            adamw_step(&ref, &m, (float)lr_at_step(ac.lr, 1, 10, t));
            memcpy(want + (size_t)t * np, m.params_mem, bytes);
        }
        grad_reduce_free(&r, &m);
        /* wait 1: every sum the backward started is complete (and its request freed by
         * MPI_Testall) before the step, as a hook's MPI_Testall may leave them */
        for (int wait = 0; wait < 2; wait++) {
            CS_DIE_IF_FAIL(adamw_init(&opt, &ac, np));
            memcpy(m.params_mem, p0, bytes);
            CS_DIE_IF_FAIL(grad_reduce_init(&r, &m, buckets[k], MPI_COMM_WORLD));
            CS_DIE_IF_FAIL(grad_reduce_shard(&r, &opt));
            int inplace = 0;
            for (int j = 0; j < r.nranges; j++) inplace += r.ranges[j].staged == (size_t)-1;
            snprintf(what, sizeof what, "%s %s, buckets of %zu floats: sharded AdamW%s", preset,
                     mode == VIT_DENSE ? "dense (frozen)" : "image (all)", buckets[k],
                     wait ? ", the sums complete before the step" : "");
            snprintf(detail, sizeof detail, "%d of %d ranges are summed in place (shared out)",
                     inplace, r.nranges);
            tu_check(inplace > 0, what, detail);
            for (int t = 0; t < STEPS; t++) {
                backward(&m, img, dout);
                for (int flag = 0; wait && !flag;)
                    MPI_Testall(r.nreqs, r.reqs, &flag, MPI_STATUSES_IGNORE);
                int rc = grad_reduce_step(&r, (float)lr_at_step(ac.lr, 1, 10, t));
                if (rc == 0 && t == 1) rc = grad_reduce_gather_moments(&r);
                size_t diff = 0;
                for (size_t i = 0; i < np; i++)
                    diff += memcmp(&m.params_mem[i], &want[(size_t)t * np + i], sizeof(float)) != 0;
                memcpy(peer, m.params_mem, bytes);
                MPI_Bcast(peer, (int)np, MPI_FLOAT, 0, MPI_COMM_WORLD);
                snprintf(detail, sizeof detail, "step %d: rc %d (%s); %zu of %zu parameters "
                         "differ from finish + adamw_step; ranks %s", t + 1, rc,
                         rc ? cs_error() : "", diff, np,
                         memcmp(peer, m.params_mem, bytes) ? "differ" : "agree");
                tu_check(rc == 0 && diff == 0 && !memcmp(peer, m.params_mem, bytes), what, detail);
            }
            int rc = grad_reduce_gather_moments(&r);
            snprintf(detail, sizeof detail, "gather rc %d; first moments %s, second moments %s, "
                     "step %ld (want %ld)", rc, memcmp(opt.m, ref.m, bytes) ? "differ" : "equal",
                     memcmp(opt.v, ref.v, bytes) ? "differ" : "equal", opt.step, ref.step);
            tu_check(rc == 0 && !memcmp(opt.m, ref.m, bytes) && !memcmp(opt.v, ref.v, bytes) &&
                         opt.step == ref.step, what, detail);
            tu_check(grad_reduce_finish(&r, NULL, 0) != 0, what,
                     "grad_reduce_finish refuses a sharded GradReduce");
            grad_reduce_free(&r, &m);
            adamw_free(&opt);
        }
        adamw_free(&ref);
    }
    free(img), free(dout), free(p0), free(want), free(peer);
    vit_free(&m);
}

/* One rank: the sum is the buffer itself, and nothing waits. */
static void one_rank(void) {
    Vit m;
    VitConfig c;
    GradReduce r;
    CS_DIE_IF_FAIL(vit_preset(&c, "tiny"));
    CS_DIE_IF_FAIL(vit_init(&m, &c));
    vit_init_random(&m, 7);
    CS_DIE_IF_FAIL(vit_alloc_grads(&m));
    CS_DIE_IF_FAIL(vit_prepare(&m, VIT_IMAGE, B, S, S, 1));
    float *img = alloc_f((size_t)B * 3 * S * S), *dout = alloc_f((size_t)B * c.embed);
    float *want = alloc_f(m.num_params), x[3] = {1, 2, 3};
    for (size_t i = 0; i < (size_t)B * 3 * S * S; i++) img[i] = frand();
    for (size_t i = 0; i < (size_t)B * c.embed; i++) dout[i] = frand();
    backward(&m, img, dout);
    memcpy(want, m.grads_mem, m.num_params * sizeof(float));
    CS_DIE_IF_FAIL(grad_reduce_init(&r, &m, 1, MPI_COMM_WORLD));
    backward(&m, img, dout);
    tu_check(grad_reduce_finish(&r, x, 3) == 0, "one rank: finish", cs_error());
    tu_check(!memcmp(want, m.grads_mem, m.num_params * sizeof(float)) && x[0] == 1 &&
                 x[1] == 2 && x[2] == 3,
             "one rank: the gradients and the extra buffer are left as they are", NULL);
    grad_reduce_free(&r, &m);
    /* and the sharded step is adamw_step */
    AdamWConfig ac = adamw_clipself_defaults();
    AdamW ref, opt;
    CS_DIE_IF_FAIL(adamw_init(&ref, &ac, m.num_params));
    CS_DIE_IF_FAIL(adamw_init(&opt, &ac, m.num_params));
    float *p0 = alloc_f(m.num_params);
    memcpy(p0, m.params_mem, m.num_params * sizeof(float));
    backward(&m, img, dout);
    adamw_step(&ref, &m, 1e-3f);
    memcpy(want, m.params_mem, m.num_params * sizeof(float));
    memcpy(m.params_mem, p0, m.num_params * sizeof(float));
    CS_DIE_IF_FAIL(grad_reduce_init(&r, &m, 1, MPI_COMM_WORLD));
    CS_DIE_IF_FAIL(grad_reduce_shard(&r, &opt));
    backward(&m, img, dout);
    int rc = grad_reduce_step(&r, 1e-3f);
    rc = rc ? rc : grad_reduce_gather_moments(&r);
    tu_check(rc == 0 && !memcmp(want, m.params_mem, m.num_params * sizeof(float)) &&
                 !memcmp(ref.m, opt.m, m.num_params * sizeof(float)),
             "one rank: grad_reduce_step is adamw_step", rc ? cs_error() : NULL);
    grad_reduce_free(&r, &m);
    adamw_free(&ref), adamw_free(&opt);
    free(img), free(dout), free(want), free(p0);
    vit_free(&m);
}

int main(int argc, char **argv) {
    int provided, rank, size, child = argc > 1 && !strcmp(argv[1], "--ranks2"), rc = 0;
    char cmd[2200];
    if (!child) { /* before MPI starts here: mpirun must not see a singleton's environment */
        char self[1024];
        snprintf(self, sizeof self, "%s", argv[0]);
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
        snprintf(cmd, sizeof cmd, "mpirun -np 2 --oversubscribe %s/test_allreduce --ranks2",
                 dirname(self));
        fflush(stdout);
        rc = system(cmd);
    }
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    cs_blas_init();
    if (!child) {
        tu_check(rc == 0, "the checks on 2 ranks (mpirun -np 2 --oversubscribe) pass", cmd);
        tu_check(provided >= MPI_THREAD_FUNNELED, "MPI gives MPI_THREAD_FUNNELED", NULL);
        layouts();
        one_rank();
        MPI_Finalize();
        return tu_finish("test_allreduce");
    }
    numeric("tiny", VIT_DENSE, rank);
    numeric("tiny", VIT_IMAGE, rank);
    numeric("eva-tiny", VIT_DENSE, rank);
    numeric("eva-tiny", VIT_IMAGE, rank);
    sharded("tiny", VIT_DENSE, rank);
    sharded("tiny", VIT_IMAGE, rank);
    sharded("eva-tiny", VIT_DENSE, rank);
    int failed = tu_failed, passed = tu_passed;
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &passed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("test_allreduce on %d ranks: %d passed, %d failed (both ranks' checks)\n", size,
               passed, failed);
    MPI_Finalize();
    return failed ? 1 : 0;
}
