/* stage.c: MPI start-up, option parsing and fatal errors for the stages. */
#include "base/stage.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/blas.h"
#include "base/check.h"

void stage_begin(Stage *s, const char *name, int *argc, char ***argv) {
    /* stdout is a pipe or a file under mpirun, srun and Slurm: lines reach the job log as
     * they are printed, not when a buffer fills */
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* FUNNELED: OpenMP threads run the compute while MPI is called by the main thread only,
     * between parallel regions (the overlapped gradient sums in vit_backward, allreduce.h) */
    int provided = MPI_THREAD_SINGLE;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    s->name = name;
    MPI_Comm_rank(MPI_COMM_WORLD, &s->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &s->size);
    if (provided < MPI_THREAD_FUNNELED) {
        cs_error_set(__FILE__, __LINE__, "the MPI library gives thread level %d, below "
                     "MPI_THREAD_FUNNELED (%d)", provided, MPI_THREAD_FUNNELED);
        stage_die(s, "use an MPI built with thread support");
    }
}

int stage_options(Stage *s, int argc, char **argv, const char *synopsis, const CliOpt *opts,
                  int nopts) {
    if (s->rank != 0)
        for (int a = 1; a < argc; a++)
            if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) return 1;
    int rc = cli_parse(argc, argv, synopsis, opts, nopts);
    if (rc < 0) {
        if (s->rank == 0) fprintf(stderr, "%s: %s\n", s->name, cs_error());
        MPI_Finalize();
        exit(2);
    }
    if (rc == 0) {
        /* the first line: what the products run on (a wrong CLIPSELF_KERNELS stops here) */
        if (cs_blas_init() != 0) stage_die(s, "unset CLIPSELF_KERNELS, or name a set of this "
                                              "BLIS that the CPU runs");
        if (s->rank == 0)
            printf("%s: BLIS kernels %s: %s; %d threads x %d ranks\n", s->name,
                   cs_blas_kernels(), cs_blas_kernels_why(), cs_num_threads(), s->size);
    }
    return rc;
}

void stage_die(const Stage *s, const char *hint) {
    fprintf(stderr, "%s: rank %d: error: %s\n", s->name, s->rank, cs_error());
    if (hint) fprintf(stderr, "---> HINT: %s\n", hint);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

void stage_check(const Stage *s, int rc, const char *hint) {
    if (rc != 0) stage_die(s, hint);
}

void stage_end(Stage *s) {
    (void)s;
    MPI_Finalize();
}

void stage_verified(Stage *s, int rc, const char *file) {
    int status = VERIFY_OK;
    if (s->rank == 0) {
        if (rc != 0) status = access(file, F_OK) != 0 ? VERIFY_MISSING : VERIFY_STALE;
        if (status == VERIFY_OK) printf("%s: verify: ok: %s\n", s->name, file);
        else if (status == VERIFY_MISSING) printf("%s: verify: missing: %s\n", s->name, file);
        else printf("%s: verify: stale: %s\n", s->name, cs_error());
        fflush(stdout);
    }
    MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    exit(status);
}

char *gather_text(const char *mine, MPI_Comm comm) {
    int rank, size, len = (int)strlen(mine);
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int *lens = rank == 0 ? calloc((size_t)size, sizeof(int)) : NULL;
    int *displs = rank == 0 ? calloc((size_t)size, sizeof(int)) : NULL;
    MPI_Gather(&len, 1, MPI_INT, lens, 1, MPI_INT, 0, comm);
    char *all = NULL;
    if (rank == 0) {
        long total = 0;
        for (int r = 0; lens && displs && r < size; r++) displs[r] = (int)total, total += lens[r];
        all = lens && displs ? calloc((size_t)total + 1, 1) : NULL;
        if (!all) { /* the other ranks are already in the gather: nothing to return to */
            fprintf(stderr, "gather_text: out of memory on rank 0\n");
            MPI_Abort(comm, 1);
        }
    }
    MPI_Gatherv(mine, len, MPI_CHAR, all, lens, displs, MPI_CHAR, 0, comm);
    free(lens);
    free(displs);
    return all;
}
