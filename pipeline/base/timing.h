/* timing.h: phase timers of the ViT pass, for `make bench` (tests/bench.c).
 *
 * A few global accumulators of wall seconds, one per phase, always compiled in: each timed call
 * site in vit.c costs one clock_gettime pair, negligible next to the millisecond-scale products
 * it brackets. Phases:
 *   CS_PHASE_LINEAR    the blocks' linear layers (qkv, out-proj, fc1, fc2; their gemm calls,
 *                      bias and bias-gradient sums), forward and backward
 *   CS_PHASE_ATTN_FWD  attention_forward (the softmax attention core, all heads)
 *   CS_PHASE_ATTN_BWD  attention_backward (with its recomputation of the probabilities)
 * The rest of a pass is its total minus these. The sums are only meaningful when one thread
 * drives the passes (as the benchmark does): they are plain globals, not atomics, and the
 * timed call sites are outside OpenMP regions. */
#ifndef CLIPSELF_TIMING_H
#define CLIPSELF_TIMING_H

enum { CS_PHASE_LINEAR, CS_PHASE_ATTN_FWD, CS_PHASE_ATTN_BWD, CS_NUM_PHASES };

extern double cs_phase_seconds[CS_NUM_PHASES];

/* CLOCK_MONOTONIC in seconds. */
double cs_clock(void);
/* Zero every accumulator. */
void cs_phase_reset(void);
/* Short name of a phase ("linear", "attn_fwd", "attn_bwd"). */
const char *cs_phase_name(int phase);

/* Run the statement(s) and add their wall time to the phase. */
#define CS_TIMED(phase, ...)                                                                    \
    do {                                                                                       \
        double cs_t0_ = cs_clock();                                                            \
        __VA_ARGS__;                                                                           \
        cs_phase_seconds[phase] += cs_clock() - cs_t0_;                                        \
    } while (0)

#endif
