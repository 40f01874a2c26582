/* allreduce.c: bucketed, overlapped sum of the ViT's gradients over MPI ranks (allreduce.h). */
#include "model/allreduce.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"

#define NOT_STAGED ((size_t)-1)
/* MPI counts are ints: longer ranges are cut (a ViT-L/14 tensor is 25 M floats: never cut) */
#define MAX_RANGE ((size_t)1 << 30)

/* The grad_ready point after which vit_backward has finished tensor i (its block slices:
 * per_layer). Head: L; embedding: -1. */
static int part_of(int i, int layers) { return i >= VIT_LN_POST_W ? layers : -1; }

static int by_offset(const void *a, const void *b) {
    const GradRange *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int grad_reduce_init(GradReduce *r, Vit *m, size_t bucket_floats, MPI_Comm comm) {
    memset(r, 0, sizeof *r);
    CS_CHECK(m->grads_mem, "grad_reduce_init needs the model's gradients (vit_alloc_grads)");
    r->comm = comm;
    r->grads = m->grads_mem;
    r->drive = 1;
    r->model = m;
    MPI_Comm_size(comm, &r->size);
    MPI_Comm_rank(comm, &r->rank);
    int L = m->cfg.layers;
    /* every part adds at most one piece per tensor; a piece of a range cut at MAX_RANGE adds
     * at most one more per MAX_RANGE floats */
    size_t cap = (size_t)VIT_NUM_TENSORS * (size_t)(L + 2) + m->num_params / MAX_RANGE + 1;
    GradRange *pieces = NULL;
    CS_ALLOC(pieces, cap);
    CS_ALLOC(r->ranges, cap);
    CS_ALLOC(r->buckets, (size_t)L + 2);
    size_t np = 0, pending = 0, nreq = 1; /* + 1: grad_reduce_finish's extra buffer */
    int last = L;
    for (int e = L; e >= -1; e--) {
        for (int i = 0; i < VIT_NUM_TENSORS; i++) {
            const VitTensor *t = &m->tensors[i];
            if (m->frozen[i] || !t->numel) continue;
            size_t off = t->offset, n = t->numel;
            if (t->per_layer) {
                if (e < 0 || e >= L) continue;
                n = t->numel / (size_t)L;
                off += (size_t)e * n;
            } else if (part_of(i, L) != e) {
                continue;
            }
            pieces[np++] = (GradRange){off, n, NOT_STAGED};
            pending += n;
            last = e;
        }
        if (!pending || (e > -1 && (!bucket_floats || pending < bucket_floats))) continue;
        /* close the bucket: its pieces in buffer order, neighbours merged, then cut */
        qsort(pieces, np, sizeof *pieces, by_offset);
        GradBucket *b = &r->buckets[r->nbuckets++];
        b->ready = last;
        b->first = r->nranges;
        b->stage_off = r->staged;
        for (size_t k = 0; k < np;) {
            size_t off = pieces[k].offset, end = off + pieces[k].count;
            for (k++; k < np && pieces[k].offset == end; k++) end += pieces[k].count;
            for (; off < end; off += MAX_RANGE) {
                size_t n = end - off < MAX_RANGE ? end - off : MAX_RANGE;
                GradRange *g = &r->ranges[r->nranges++];
                *g = (GradRange){off, n, NOT_STAGED};
                if (n < GRAD_PACK_FLOATS) g->staged = r->staged, r->staged += n;
                else nreq++;
            }
        }
        b->nranges = r->nranges - b->first;
        b->stage_n = r->staged - b->stage_off;
        nreq += b->stage_n > 0;
        np = pending = 0;
    }
    free(pieces);
    CS_ALLOC(r->stage, r->staged ? r->staged : 1);
    CS_ALLOC(r->reqs, nreq);
    CS_ALLOC(r->req_of, nreq);
    CS_ALLOC(r->arrived, nreq);
    for (size_t k = 0; k < nreq; k++) r->reqs[k] = MPI_REQUEST_NULL;
    m->grad_ready = grad_reduce_hook;
    m->grad_ready_arg = r;
    return 0;
}

static void start_bucket(GradReduce *r, int bi) {
    const GradBucket *b = &r->buckets[bi];
    for (int k = b->first; k < b->first + b->nranges; k++) {
        const GradRange *g = &r->ranges[k];
        if (g->staged != NOT_STAGED) {
            memcpy(r->stage + g->staged, r->grads + g->offset, g->count * sizeof(float));
            continue;
        }
        r->req_of[r->nreqs] = k;
        if (r->opt) /* in place: this rank's share of the sum lands at the range's start */
            MPI_Ireduce_scatter(MPI_IN_PLACE, r->grads + g->offset,
                                r->counts + (size_t)k * r->size, MPI_FLOAT, MPI_SUM, r->comm,
                                &r->reqs[r->nreqs++]);
        else
            MPI_Iallreduce(MPI_IN_PLACE, r->grads + g->offset, (int)g->count, MPI_FLOAT, MPI_SUM,
                           r->comm, &r->reqs[r->nreqs++]);
    }
    if (b->stage_n) {
        r->req_of[r->nreqs] = -1 - bi;
        MPI_Iallreduce(MPI_IN_PLACE, r->stage + b->stage_off, (int)b->stage_n, MPI_FLOAT,
                       MPI_SUM, r->comm, &r->reqs[r->nreqs++]);
    }
}

void grad_reduce_hook(void *arg, int done) {
    GradReduce *r = arg;
    if (r->size < 2) return;
    if (r->next == 0) r->early = 0;
    while (r->next < r->nbuckets && r->buckets[r->next].ready >= done) {
        start_bucket(r, r->next++);
        r->early++;
    }
    /* progress for the buckets already under way (libnbc advances a round per call) */
    if (r->drive && r->nreqs) {
        int flag;
        MPI_Testall(r->nreqs, r->reqs, &flag, MPI_STATUSES_IGNORE);
    }
}

int grad_reduce_finish(GradReduce *r, float *extra, size_t nextra) {
    CS_CHECK(!r->opt, "grad_reduce_finish on a sharded GradReduce: use grad_reduce_step");
    if (r->size < 2) return 0;
    CS_CHECK(nextra <= INT_MAX, "grad_reduce_finish: %zu floats are more than one MPI count",
             nextra);
    if (r->next == 0) r->early = 0;
    while (r->next < r->nbuckets) start_bucket(r, r->next++);
    if (extra && nextra)
        MPI_Iallreduce(MPI_IN_PLACE, extra, (int)nextra, MPI_FLOAT, MPI_SUM, r->comm,
                       &r->reqs[r->nreqs++]);
    int rc = MPI_Waitall(r->nreqs, r->reqs, MPI_STATUSES_IGNORE);
    CS_CHECK(rc == MPI_SUCCESS, "MPI_Waitall of the gradient sums failed (%d)", rc);
    for (int k = 0; k < r->nranges; k++) {
        const GradRange *g = &r->ranges[k];
        if (g->staged != NOT_STAGED)
            memcpy(r->grads + g->offset, r->stage + g->staged, g->count * sizeof(float));
    }
    r->nreqs = r->next = 0;
    return 0;
}

int grad_reduce_shard(GradReduce *r, AdamW *opt) {
    CS_CHECK(r->size >= 1 && r->model, "grad_reduce_shard: r is not initialised");
    r->opt = opt;
    if (r->size < 2) return 0;
    size_t P = (size_t)r->size;
    CS_ALLOC(r->counts, (size_t)r->nranges * P);
    CS_ALLOC(r->displs, (size_t)r->nranges * P);
    CS_ALLOC(r->gathers, (size_t)r->nranges);
    for (int k = 0; k < r->nranges; k++) {
        size_t n = r->ranges[k].count;
        for (size_t q = 0; q < P; q++) {
            size_t lo = n * q / P, hi = n * (q + 1) / P;
            r->displs[(size_t)k * P + q] = (int)lo;
            r->counts[(size_t)k * P + q] = (int)(hi - lo);
        }
    }
    return 0;
}

/* The sum of request idx has arrived: update what it covers (this rank's share of an in-place
 * range, then start the gather of the range's parameters; or a bucket's staged ranges,
 * whole). */
static void update_arrived(GradReduce *r, int idx, float lr, int *ngather) {
    Vit *m = r->model;
    size_t P = (size_t)r->size;
    int k = r->req_of[idx];
    if (k >= 0) {
        const GradRange *g = &r->ranges[k];
        const int *cnt = r->counts + (size_t)k * P, *dsp = r->displs + (size_t)k * P;
        size_t lo = g->offset + (size_t)dsp[r->rank];
        adamw_update_span(r->opt, m, lo, lo + (size_t)cnt[r->rank], r->grads + g->offset, lr);
        MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, m->params_mem + g->offset, cnt, dsp,
                        MPI_FLOAT, r->comm, &r->gathers[(*ngather)++]);
        return;
    }
    const GradBucket *b = &r->buckets[-1 - k];
    for (int j = b->first; j < b->first + b->nranges; j++) {
        const GradRange *g = &r->ranges[j];
        if (g->staged == NOT_STAGED) continue;
        memcpy(r->grads + g->offset, r->stage + g->staged, g->count * sizeof(float));
        adamw_update_span(r->opt, m, g->offset, g->offset + g->count, r->grads + g->offset, lr);
    }
}

int grad_reduce_step(GradReduce *r, float lr) {
    CS_CHECK(r->opt, "grad_reduce_step needs grad_reduce_shard first");
    if (r->size < 2) {
        adamw_step(r->opt, r->model, lr);
        return 0;
    }
    if (r->next == 0) r->early = 0;
    while (r->next < r->nbuckets) start_bucket(r, r->next++);
    adamw_begin_step(r->opt);
    int ngather = 0;
    memset(r->arrived, 0, (size_t)r->nreqs);
    for (;;) { /* each sum as it arrives */
        int idx, rc = MPI_Waitany(r->nreqs, r->reqs, &idx, MPI_STATUS_IGNORE);
        CS_CHECK(rc == MPI_SUCCESS, "MPI_Waitany of the gradient sums failed (%d)", rc);
        if (idx == MPI_UNDEFINED) break;
        r->arrived[idx] = 1;
        update_arrived(r, idx, lr, &ngather);
    }
    /* a hook's MPI_Testall that found every started sum complete has freed their requests
     * (MPI_REQUEST_NULL), which MPI_Waitany then never reports: those sums are here too */
    for (int idx = 0; idx < r->nreqs; idx++)
        if (!r->arrived[idx]) update_arrived(r, idx, lr, &ngather);
    int rc = MPI_Waitall(ngather, r->gathers, MPI_STATUSES_IGNORE);
    CS_CHECK(rc == MPI_SUCCESS, "MPI_Waitall of the parameter gathers failed (%d)", rc);
    r->nreqs = r->next = 0;
    return 0;
}

int grad_reduce_gather_moments(GradReduce *r) {
    if (!r->opt || r->size < 2) return 0;
    size_t P = (size_t)r->size;
    for (int k = 0; k < r->nranges; k++) {
        const GradRange *g = &r->ranges[k];
        if (g->staged != NOT_STAGED) continue;
        const int *cnt = r->counts + (size_t)k * P, *dsp = r->displs + (size_t)k * P;
        float *mom[2] = {r->opt->m + g->offset, r->opt->v + g->offset};
        for (int j = 0; j < 2; j++) {
            int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, mom[j], cnt, dsp,
                                    MPI_FLOAT, r->comm);
            CS_CHECK(rc == MPI_SUCCESS, "MPI_Allgatherv of the AdamW moments failed (%d)", rc);
        }
    }
    return 0;
}

void grad_reduce_free(GradReduce *r, Vit *m) {
    if (m && m->grad_ready_arg == r) m->grad_ready = NULL, m->grad_ready_arg = NULL;
    free(r->buckets);
    free(r->ranges);
    free(r->stage);
    free(r->reqs);
    free(r->req_of);
    free(r->arrived);
    free(r->counts);
    free(r->displs);
    free(r->gathers);
    memset(r, 0, sizeof *r);
}
