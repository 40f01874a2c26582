/* runfolder.c: a training run's folder (see runfolder.h). */
#include "io/runfolder.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/check.h"
#include "base/fileio.h"

/* ---- step checkpoints: step_%08ld.h5 ------------------------------------------------------ */

static int step_path(char *out, size_t len, const char *dir, long step) {
    int n = snprintf(out, len, "%s/step_%08ld.h5", dir, step);
    CS_CHECK(n >= 0 && (size_t)n < len, "checkpoint path in %s is too long", dir);
    return 0;
}

/* The step of a file name step_N.h5, or -1. */
static long step_of(const char *name) {
    long s;
    char tail[8];
    if (sscanf(name, "step_%ld.%7s", &s, tail) == 2 && !strcmp(tail, "h5") && s >= 0) return s;
    return -1;
}

static long newest_step(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    long best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s = step_of(e->d_name);
        if (s > best) best = s;
    }
    closedir(d);
    return best;
}

static int cmp_desc(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x < y) - (x > y);
}

static void prune_steps(const char *dir, int keep) {
    DIR *d = opendir(dir);
    if (!d) return;
    long steps[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        long s = step_of(e->d_name);
        if (s >= 0) steps[n++] = s;
    }
    closedir(d);
    qsort(steps, (size_t)n, sizeof steps[0], cmp_desc);
    for (int i = keep; i < n; i++) {
        char path[4200];
        if (step_path(path, sizeof path, dir, steps[i]) == 0 && unlink(path) != 0)
            fprintf(stderr, "warning: cannot remove old checkpoint %s: %s\n", path,
                    strerror(errno));
    }
}

/* ---- the run ----------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

void runfolder_catch_signals(void) {
    signal(SIGTERM, on_signal);
    signal(SIGUSR1, on_signal);
}

int runfolder_stop_signal(void) { return stop_flag != 0; }

void runfolder_signature(char *buf, size_t len, const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/run.txt", dir);
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (!fgets(buf, (int)len, f)) buf[0] = 0;
    fclose(f);
}

/* Rank 0's decision: 0, or -1 with the error and rf->hint. */
static int open_here(RunFolder *rf, const char *signature, int resume, const char *same) {
    if (mkdir(rf->dir, 0777) != 0 && errno != EEXIST)
        CS_FAIL("cannot create %s: %s", rf->dir, strerror(errno));
    rf->newest = newest_step(rf->dir);
    if (!resume && rf->newest >= 0) {
        snprintf(rf->hint, sizeof rf->hint, "continue it with --resume, or choose a new "
                 "--run-dir");
        CS_FAIL("%s already holds checkpoints of a run", rf->dir);
    }
    char old[1024];
    runfolder_signature(old, sizeof old, rf->dir);
    if (rf->newest >= 0 && strcmp(old, signature) != 0) {
        snprintf(rf->hint, sizeof rf->hint, "resume with the same %s, or start in a new "
                 "--run-dir", same);
        CS_FAIL("%s was made by a run with other settings:\n  was: %s  now: %s", rf->dir,
                old[0] ? old : "(unknown)\n", signature);
    }
    if (rf->newest < 0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/run.txt", rf->dir);
        CS_TRY(file_write_text(path, signature));
    }
    return 0;
}

int runfolder_open(RunFolder *rf, const char *stage, const char *dir, const char *signature,
                   int resume, const char *same, MPI_Comm comm) {
    memset(rf, 0, sizeof *rf);
    rf->stage = stage;
    rf->newest = -1;
    MPI_Comm_rank(comm, &rf->rank);
    int n = snprintf(rf->dir, sizeof rf->dir, "%s", dir);
    CS_CHECK(n > 0 && (size_t)n < sizeof rf->dir, "run folder path too long: %s", dir);
    int rc = rf->rank == 0 ? open_here(rf, signature, resume, same) : 0;
    /* every rank learns the outcome: a failure on rank 0 must not leave the others waiting */
    long msg[2] = {rc, rf->newest};
    MPI_Bcast(msg, 2, MPI_LONG, 0, comm);
    rf->newest = msg[1];
    if (msg[0] != 0 && rf->rank != 0)
        CS_FAIL("rank 0 could not open the run folder %s", dir);
    return (int)msg[0];
}

int runfolder_resume(RunFolder *rf, Vit *m, AdamW *opt, const CheckpointExtra *x, int nx,
                     long *step) {
    *step = 0;
    if (rf->newest < 0) return 0;
    char path[4200];
    CS_TRY(step_path(path, sizeof path, rf->dir, rf->newest));
    Vit back;
    VitOptState os;
    CS_TRY(vit_load_h5(&back, path, &os));
    int same = back.num_params == m->num_params;
    if (same && nx) same = checkpoint_read_extra(path, x, nx) == 0 ? 1 : -1;
    if (same == 1) {
        memcpy(m->params_mem, back.params_mem, m->num_params * sizeof(float));
        memcpy(opt->m, os.m, m->num_params * sizeof(float));
        memcpy(opt->v, os.v, m->num_params * sizeof(float));
        opt->step = *step = os.step;
    }
    free(os.m), free(os.v);
    vit_free(&back);
    if (same < 0) return -1; /* checkpoint_read_extra's error */
    CS_CHECK(same, "%s is not a checkpoint of this model", path);
    if (rf->rank == 0) printf("%s: resumed from %s (step %ld)\n", rf->stage, path, *step);
    return 0;
}

/* Keep the header and the rows of a CSV log whose first field is at most last (committed
 * through a temporary: a kill leaves the old log or the truncated one). No log: nothing. */
static int truncate_log(const char *path, long last) {
    FILE *old = fopen(path, "r");
    if (!old) return 0;
    char tmp[4300], line[512];
    FILE *keep = file_tmp_path(tmp, sizeof tmp, path) == 0 ? fopen(tmp, "w") : NULL;
    if (!keep) {
        fclose(old);
        CS_FAIL("cannot write a truncated copy of %s", path);
    }
    while (fgets(line, sizeof line, old))
        if (!isdigit((unsigned char)line[0]) || atol(line) <= last) fputs(line, keep);
    int bad = ferror(old) != 0;
    fclose(old);
    if (bad) cs_error_set(__FILE__, __LINE__, "cannot read %s", path);
    return file_commit_stream(keep, tmp, path, bad);
}

int runfolder_log(RunFolder *rf, FILE **f, const char *name, const char *header, long step,
                  long last) {
    *f = NULL;
    if (rf->rank != 0) return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", rf->dir, name);
    if (step) CS_TRY(truncate_log(path, last));
    *f = fopen(path, step ? "a" : "w");
    CS_CHECK(*f, "cannot write %s: %s", path, strerror(errno));
    if (!step) fputs(header, *f);
    return 0;
}

int runfolder_save(RunFolder *rf, const Vit *m, const AdamW *opt, long step,
                   const CheckpointExtra *x, int nx, int keep) {
    if (rf->rank != 0) return 0;
    char path[4200];
    VitOptState os = {step, opt->m, opt->v};
    CS_TRY(step_path(path, sizeof path, rf->dir, step));
    CS_TRY(nx ? vit_save_h5_extra(m, path, &os, x, nx) : vit_save_h5(m, path, &os));
    prune_steps(rf->dir, keep);
    return 0;
}
