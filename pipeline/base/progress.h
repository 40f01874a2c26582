/* progress.h: progress lines for long work: count, rate and ETA, at most one line every few
 * seconds, printed only where enabled (rank 0). */
#ifndef CLIPSELF_PROGRESS_H
#define CLIPSELF_PROGRESS_H

typedef struct {
    const char *label;
    const char *unit;   /* "img", "crops", "steps" */
    long total;
    double start, last; /* seconds (monotonic) */
    int enabled;
} Progress;

double now_seconds(void);
void progress_init(Progress *p, const char *label, const char *unit, long total, int enabled);
/* done: units finished so far (across all ranks when the caller knows it). */
void progress_update(Progress *p, long done);
void progress_done(Progress *p, long done);

#endif
