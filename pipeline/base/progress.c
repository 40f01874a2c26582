/* progress.c: rate and ETA lines on stderr for the stages. */
#include "base/progress.h"

#include <stdio.h>
#include <time.h>

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void progress_init(Progress *p, const char *label, const char *unit, long total, int enabled) {
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->start = p->last = now_seconds();
    p->enabled = enabled;
}

static void line(const Progress *p, long done, double t) {
    double el = t - p->start, rate = el > 0 ? (double)done / el : 0.0;
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0.0;
    fprintf(stderr, "%s: %ld/%ld %s (%.1f%%) %.2f %s/s elapsed %.0fs ETA %.0fs\n", p->label,
            done, p->total, p->unit, p->total ? 100.0 * (double)done / (double)p->total : 100.0,
            rate, p->unit, el, eta);
}

void progress_update(Progress *p, long done) {
    double t = now_seconds();
    if (!p->enabled || t - p->last < 5.0) return;
    p->last = t;
    line(p, done, t);
}

void progress_done(Progress *p, long done) {
    if (p->enabled) line(p, done, now_seconds());
}
