/* runfolder.h: a training run's folder, the shell both training stages (train_student,
 * pretrain_teacher) run in.
 *
 *   <dir>/run.txt          the run's settings signature: one line naming everything a resumed
 *                          run must share with the one it continues (ranks, batch, schedule,
 *                          data, model...); written when the run starts
 *   <dir>/step_N.h5        step checkpoints: parameters, AdamW moments and step, and the stage's
 *                          extra state (checkpoint.h); the newest --keep kept
 *   <dir>/<log>.csv        CSV logs whose first field is the step (or epoch); a resumed run
 *                          drops the rows after its checkpoint, which it is about to redo
 *
 * runfolder_open decides on rank 0 (file systems may disagree) and tells every rank: a fresh
 * run refuses a folder with checkpoints, and --resume refuses one whose run.txt has another
 * signature. SIGTERM and SIGUSR1 (Slurm's warning before the time limit) set a flag the stage
 * reads between steps, to checkpoint and stop. */
#ifndef CLIPSELF_RUNFOLDER_H
#define CLIPSELF_RUNFOLDER_H

#include <mpi.h>
#include <stdio.h>

#include "io/checkpoint.h"
#include "model/adamw.h"
#include "model/vit.h"

typedef struct {
    char dir[4096];
    const char *stage; /* the stage's name, for its messages */
    int rank;
    long newest;       /* the newest step checkpoint when opened, -1: none (a fresh run) */
    char hint[512];    /* after a failed runfolder_open: what the user can do */
} RunFolder;

/* Open dir for a run with this signature (one line, ending in '\n'): create it, check it (see
 * above), and write run.txt for a fresh run. same names what a resumed run must keep the same
 * ("ranks, batch, ..."), for the hint. Collective over comm. */
int runfolder_open(RunFolder *rf, const char *stage, const char *dir, const char *signature,
                   int resume, const char *same, MPI_Comm comm);
/* run.txt's line into buf ("" when there is none). */
void runfolder_signature(char *buf, size_t len, const char *dir);
/* Continue from the newest checkpoint, if there is one: m's parameters, opt's moments and
 * step, the extras; *step is the step to go on from (0 for a fresh run). */
int runfolder_resume(RunFolder *rf, Vit *m, AdamW *opt, const CheckpointExtra *x, int nx,
                     long *step);
/* Rank 0: open the log name (in dir) for this run: a fresh run writes header, a resumed one
 * keeps the rows whose first field is at most last (and the header) and appends. Other ranks
 * get NULL. */
int runfolder_log(RunFolder *rf, FILE **f, const char *name, const char *header, long step,
                  long last);
/* Rank 0: the step checkpoint (with opt's moments, which must be whole on rank 0, and the
 * extras), then all but the newest keep removed. */
int runfolder_save(RunFolder *rf, const Vit *m, const AdamW *opt, long step,
                   const CheckpointExtra *x, int nx, int keep);
/* Catch SIGTERM and SIGUSR1; runfolder_stop_signal() is then 1 once one has come. */
void runfolder_catch_signals(void);
int runfolder_stop_signal(void);

#endif
