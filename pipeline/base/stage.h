/* stage.h: what every MPI stage's main does the same way: MPI start and stop, options with
 * --help printed once, errors printed with the rank and a hint, then MPI_Abort. */
#ifndef CLIPSELF_STAGE_H
#define CLIPSELF_STAGE_H

#include <mpi.h>

#include "base/cli.h"

typedef struct {
    const char *name;
    int rank, size;
} Stage;

void stage_begin(Stage *s, const char *name, int *argc, char ***argv);
/* Parse options (help text printed by rank 0 only). Returns 1 when the stage should end
 * quietly (--help); on a bad option prints the error on rank 0 and exits. */
int stage_options(Stage *s, int argc, char **argv, const char *synopsis, const CliOpt *opts,
                  int nopts);
/* Print "NAME: rank R: <cs_error()>" and the hint (if any), then abort every rank. */
void stage_die(const Stage *s, const char *hint) __attribute__((noreturn));
/* Die unless rc == 0. */
void stage_check(const Stage *s, int rc, const char *hint);
void stage_end(Stage *s);
/* The end of a --verify run: rc is rank 0's verdict on whether the stage's output file is
 * complete, valid and made from these inputs and settings. Rank 0 prints one line, and every
 * rank exits with status 0 "ok", 1 "missing" (no such file: the stage has to run) or
 * 2 "stale" (the file is there but damaged or made from other inputs; the reason is
 * cs_error()). Collective. */
enum { VERIFY_OK = 0, VERIFY_MISSING = 1, VERIFY_STALE = 2 };
void stage_verified(Stage *s, int rc, const char *file) __attribute__((noreturn));

/* Concatenate every rank's text (in rank order) on rank 0; returns a malloc'ed string there
 * and NULL elsewhere (or on rank 0 when out of memory). Collective over comm. */
char *gather_text(const char *mine, MPI_Comm comm);

#endif
