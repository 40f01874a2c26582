/* test_runfolder.c: the training-run shell of io/runfolder.h, on one rank.
 *
 * A fresh run creates the folder and run.txt; step checkpoints are written and pruned to the
 * newest `keep`; a second fresh run refuses the folder, a resume with another signature is
 * refused (both with a hint naming what to do); a resume with the same signature continues
 * from the newest checkpoint with the parameters, both AdamW moments, the step and the extra
 * state bit for bit; a resumed log keeps its header and the rows up to the checkpoint; SIGUSR1
 * sets the stop flag; a folder that cannot be made is an error naming it. */
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/check.h"
#include "io/checkpoint.h"
#include "io/runfolder.h"
#include "model/adamw.h"
#include "model/vit.h"
#include "testutil.h"

static char *read_text(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char *buf = calloc(1 << 16, 1);
    if (buf) buf[fread(buf, 1, (1 << 16) - 1, f)] = 0;
    fclose(f);
    return buf;
}

static int exists(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    char tmp[] = "/tmp/test_runfolder.XXXXXX", dir[4200], detail[1200];
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(dir, sizeof dir, "%s/run", tmp);
    const char *sig = "ranks=1 batch=2 seed=0\n", *other = "ranks=1 batch=4 seed=0\n";
    Vit m;
    VitConfig c;
    CS_DIE_IF_FAIL(vit_preset(&c, "tiny"));
    CS_DIE_IF_FAIL(vit_init(&m, &c));
    vit_init_random(&m, 5);
    AdamWConfig ac = adamw_clipself_defaults();
    AdamW opt;
    CS_DIE_IF_FAIL(adamw_init(&opt, &ac, m.num_params));
    float head[6] = {1, 2, 3, 4, 5, 6}, head_back[6] = {0};
    CheckpointExtra x = {"test/head", 1, {6, 0}, head}, xb = {"test/head", 1, {6, 0}, head_back};

    /* a fresh run */
    RunFolder rf;
    int rc = runfolder_open(&rf, "test", dir, sig, 0, "batch", MPI_COMM_WORLD);
    char *txt = read_text(strcat(strcpy(detail, dir), "/run.txt"));
    tu_check(rc == 0 && rf.newest == -1 && txt && !strcmp(txt, sig),
             "a fresh run makes the folder and writes its signature to run.txt",
             rc ? cs_error() : txt ? txt : "no run.txt");
    free(txt);
    long step = -1;
    rc = runfolder_resume(&rf, &m, &opt, &x, 1, &step);
    tu_check(rc == 0 && step == 0, "a fresh run starts at step 0", rc ? cs_error() : NULL);
    FILE *log;
    CS_DIE_IF_FAIL(runfolder_log(&rf, &log, "log.csv", "step,loss\n", 0, 0));
    for (int s = 1; s <= 6; s++) fprintf(log, "%d,%g\n", s, 1.0 / s);
    fclose(log);
    float want_p = 0, want_m = 0;
    for (long s = 2; s <= 6; s += 2) {
        for (size_t i = 0; i < m.num_params; i++) {
            m.params_mem[i] += 0.001f * (float)s;
            opt.m[i] = 0.01f * (float)(i % 7) * (float)s;
            opt.v[i] = 0.001f * (float)(i % 5) * (float)s;
        }
        head[0] = (float)s;
        rc = runfolder_save(&rf, &m, &opt, s, &x, 1, 2);
        if (rc) break;
    }
    want_p = m.params_mem[17], want_m = opt.m[23];
    tu_check(rc == 0 && !exists(dir, "step_00000002.h5") && exists(dir, "step_00000004.h5") &&
                 exists(dir, "step_00000006.h5"),
             "step checkpoints are written and only the newest 2 kept", rc ? cs_error() : NULL);

    /* a second fresh run, and a resume with other settings, are refused */
    rc = runfolder_open(&rf, "test", dir, sig, 0, "batch", MPI_COMM_WORLD);
    snprintf(detail, sizeof detail, "rc %d: %s / hint: %s", rc, cs_error(), rf.hint);
    tu_check(rc != 0 && strstr(cs_error(), "already holds checkpoints") &&
                 strstr(rf.hint, "--resume"),
             "a fresh run refuses a folder with checkpoints, hinting at --resume", detail);
    rc = runfolder_open(&rf, "test", dir, other, 1, "batch", MPI_COMM_WORLD);
    snprintf(detail, sizeof detail, "rc %d: %s / hint: %s", rc, cs_error(), rf.hint);
    tu_check(rc != 0 && strstr(cs_error(), "other settings") && strstr(cs_error(), "batch=4") &&
                 strstr(rf.hint, "the same batch"),
             "a resume with another signature is refused, naming both and what to keep", detail);

    /* the resume itself */
    Vit m2;
    AdamW opt2;
    CS_DIE_IF_FAIL(vit_init(&m2, &c));
    vit_init_random(&m2, 9);
    CS_DIE_IF_FAIL(adamw_init(&opt2, &ac, m2.num_params));
    rc = runfolder_open(&rf, "test", dir, sig, 1, "batch", MPI_COMM_WORLD);
    if (rc == 0) rc = runfolder_resume(&rf, &m2, &opt2, &xb, 1, &step);
    int same = rc == 0 && !memcmp(m.params_mem, m2.params_mem, m.num_params * sizeof(float)) &&
               !memcmp(opt.m, opt2.m, m.num_params * sizeof(float)) &&
               !memcmp(opt.v, opt2.v, m.num_params * sizeof(float)) && opt2.step == 6 &&
               !memcmp(head, head_back, sizeof head) && m2.params_mem[17] == want_p &&
               opt2.m[23] == want_m;
    snprintf(detail, sizeof detail, "rc %d (%s), newest %ld, step %ld", rc, rc ? cs_error() : "",
             rf.newest, step);
    tu_check(same && rf.newest == 6 && step == 6,
             "a resume continues from the newest checkpoint bit for bit (parameters, moments, "
             "step, extras)", detail);
    CS_DIE_IF_FAIL(runfolder_log(&rf, &log, "log.csv", "step,loss\n", 4, 4));
    fprintf(log, "5,0.2\n");
    fclose(log);
    txt = read_text(strcat(strcpy(detail, dir), "/log.csv"));
    tu_check(txt && !strcmp(txt, "step,loss\n1,1\n2,0.5\n3,0.333333\n4,0.25\n5,0.2\n"),
             "a resumed log keeps the header and the rows up to its checkpoint, then appends",
             txt ? txt : "no log");
    free(txt);

    /* the stop signal */
    runfolder_catch_signals();
    int before = runfolder_stop_signal();
    raise(SIGUSR1);
    tu_check(!before && runfolder_stop_signal(), "SIGUSR1 sets the stop flag", NULL);

    /* a folder that cannot be made */
    char bad[4300];
    snprintf(bad, sizeof bad, "%s/run.txt/sub", dir);
    rc = runfolder_open(&rf, "test", bad, sig, 0, "batch", MPI_COMM_WORLD);
    tu_check(rc != 0 && strstr(cs_error(), bad), "a folder that cannot be made is an error "
             "naming it", cs_error());

    vit_free(&m), vit_free(&m2);
    adamw_free(&opt), adamw_free(&opt2);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "test_runfolder: could not remove %s\n", tmp);
    MPI_Finalize();
    return tu_finish("test_runfolder");
}
