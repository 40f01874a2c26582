/* allreduce.h: the sum over MPI ranks of a ViT's gradients, in buckets started while the
 * backward is still running.
 *
 * The trainable part of the flat gradient buffer (tensors not frozen, not empty) is cut into
 * buckets in the order vit_backward finishes it: the head's tensors, then each block's slice of
 * every per-layer tensor from the last block to the first, then the embedding's tensors. The
 * buffer is tensor-major ((L, ...) per tensor, vit_params.c), so the blocks [lo, hi] of a bucket
 * are one contiguous range per per-layer tensor. A bucket closes once it holds at least
 * bucket_floats floats (a ViT-B/16 block's trainable gradients are 7.1 M floats, so at 2 M
 * every block is a bucket). vit_backward calls grad_reduce_hook (Vit.grad_ready) after each
 * part; the hook starts every bucket that has become final with MPI_Iallreduce (MPI_SUM, in
 * place; ranges under GRAD_PACK_FLOATS, the biases and norms, are copied into one staging
 * range per bucket and summed there) and calls MPI_Testall, since Open MPI's non-blocking
 * collectives advance only inside MPI calls. grad_reduce_finish starts what is left, waits for
 * all, and copies the staged ranges back.
 *
 * The result is the sum over ranks, element by element, as one MPI_Allreduce(MPI_SUM) of each
 * tensor gives: on 1 rank nothing is sent and the buffer is left as it is; on 2 ranks each
 * element is the one rounded sum a + b whatever the algorithm, so bit for bit the same as the
 * blocking calls. On more ranks the association order is Open MPI's choice for the message
 * (fixed for a fixed bucketing, so runs and resumed runs are reproducible) and may differ from
 * the blocking calls' in the last bits; every rank gets the same result.
 *
 * Sharded update (grad_reduce_shard, then grad_reduce_step in place of grad_reduce_finish and
 * adamw_step): each in-place range is summed with MPI_Ireduce_scatter instead, rank q getting
 * the sum of its share [n q / P, n (q + 1) / P) of the range's n floats; as each range's sum
 * arrives, the rank runs AdamW on its share only (adamw_update_span) and starts an
 * MPI_Iallgatherv of the updated parameters. The staged ranges (biases, norms) are summed whole
 * and updated by every rank. So each rank does 1/P of the optimizer's memory traffic, overlapped
 * with the sums still under way, and the messages are those of the allreduce it replaces (a
 * reduce-scatter and an all-gather). On 2 ranks the parameters are bit for bit those of
 * grad_reduce_finish + adamw_step (one rounded sum a + b, then the same elementwise update). A
 * rank's moments are current only on its shares: grad_reduce_gather_moments makes them whole
 * on every rank, as a checkpoint needs. After grad_reduce_step the gradient buffer holds
 * partial sums and must not be read.
 *
 * Threads: the hook calls MPI from vit_backward's calling thread, between OpenMP parallel
 * regions, so MPI must be initialised with at least MPI_THREAD_FUNNELED (stage_begin does). */
#ifndef CLIPSELF_ALLREDUCE_H
#define CLIPSELF_ALLREDUCE_H

#include <mpi.h>
#include <stddef.h>

#include "model/adamw.h"
#include "model/vit.h"

/* The stages' bucket size (8 MB of floats) and the size under which a range is staged. */
#define GRAD_BUCKET_FLOATS ((size_t)2 << 20)
#define GRAD_PACK_FLOATS ((size_t)16384)

typedef struct {
    size_t offset, count; /* floats of the gradient buffer */
    size_t staged;        /* offset in the staging buffer, or (size_t)-1: summed in place */
} GradRange;

typedef struct {
    int ready;             /* the grad_ready point after which all its ranges are final */
    int first, nranges;    /* its ranges: ranges[first .. first + nranges) */
    size_t stage_off, stage_n; /* its part of the staging buffer */
} GradBucket;

typedef struct {
    MPI_Comm comm;
    int size;              /* ranks */
    float *grads;          /* the model's gradient buffer */
    GradBucket *buckets;
    GradRange *ranges;
    int nbuckets, nranges;
    float *stage;          /* (staged floats) biases and norms of every bucket */
    size_t staged;
    MPI_Request *reqs;     /* one per in-place range and per bucket's staged part, + 1 extra */
    int nreqs;             /* requests started this step */
    int next;              /* buckets started this step */
    int drive;             /* 1: MPI_Testall in the hook (default); 0: only start buckets */
    int early;             /* buckets the hook started this step before the backward's end */
    /* sharded update (grad_reduce_shard): NULL opt when off */
    AdamW *opt;
    Vit *model;
    int rank;
    int *counts, *displs;  /* (nranges, size) each range's shares */
    int *req_of;           /* per bucket request: range index, or -1 - bucket (staged part) */
    unsigned char *arrived; /* per request: its sum was handled this step */
    MPI_Request *gathers;  /* one per in-place range */
} GradReduce;

/* Cut m's trainable gradients (call after freezing, with the gradients allocated) into
 * buckets of at least bucket_floats floats (0: one bucket, summed after the whole backward),
 * allocate the staging buffer and the requests, and hook vit_backward (m->grad_ready). The
 * model must outlive r, keep its buffers, and run one vit_backward per grad_reduce_finish.
 * Collective over comm only in that every rank must build the same buckets (same model, same
 * frozen tensors, same bucket_floats). */
int grad_reduce_init(GradReduce *r, Vit *m, size_t bucket_floats, MPI_Comm comm);
/* Vit.grad_ready: start the buckets final at point done (L: head, l: block l, -1: the
 * embedding), then drive the started ones with MPI_Testall. */
void grad_reduce_hook(void *arg, int done);
/* Start the buckets not started yet, and the sum of extra[0 .. nextra) (another buffer of the
 * step: may be NULL), wait for everything, copy the staged ranges back. After it the gradients
 * are the sums over ranks, and r is ready for the next step. Collective over comm. */
int grad_reduce_finish(GradReduce *r, float *extra, size_t nextra);
/* Switch r to the sharded update with optimizer opt (for m, the model r was built on). Call
 * before the first step, on every rank. */
int grad_reduce_shard(GradReduce *r, AdamW *opt);
/* The sharded grad_reduce_finish + adamw_step(opt, model, lr): start the buckets not started,
 * update each share as its sum arrives, gather the parameters. On 1 rank: adamw_step.
 * Collective over comm. */
int grad_reduce_step(GradReduce *r, float lr);
/* Make every rank's moments whole (each share's from its owner). Collective over comm; a no-op
 * on 1 rank or without grad_reduce_shard. */
int grad_reduce_gather_moments(GradReduce *r);
/* Unhook the model (if given) and free r's buffers. */
void grad_reduce_free(GradReduce *r, Vit *m);

#endif
