/* timing.c: the phase accumulators of timing.h. */
#include "base/timing.h"

#include <string.h>
#include <time.h>

double cs_phase_seconds[CS_NUM_PHASES];

double cs_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cs_phase_reset(void) { memset(cs_phase_seconds, 0, sizeof cs_phase_seconds); }

const char *cs_phase_name(int phase) {
    static const char *const names[CS_NUM_PHASES] = {"linear", "attn_fwd", "attn_bwd"};
    return phase >= 0 && phase < CS_NUM_PHASES ? names[phase] : "?";
}
