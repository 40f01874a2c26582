#!/usr/bin/env bash
# test_slurm.sh: the pipeline on a real Slurm cluster. Starts a one-node cluster on localhost
# (slurm/local-cluster: munged, slurmctld, slurmd with a config written here), then
#  1. submits a small experiment with slurm/submit (crops and teacher cache as 2-task arrays
#     with joins, training as an MPI job, evaluation of 4 models x 2 benchmarks as an array and
#     the comparison table) and checks that every output equals a local run's (scripts/run-job);
#     a second submission finds everything complete and submits nothing;
#  2. submits training again in a fresh run directory (earlier stages copied in, so skipped),
#     sends the time-limit warning (USR1 to the batch script, as --signal=B:USR1 does), lets
#     the job requeue itself and resume, then requeues it from outside (scontrol requeue), and
#     checks that the final student equals the uninterrupted run's.
# Stops the daemons it started. Ends with "test_slurm: N passed, N failed".
set -u
BUILD=${BUILD:-build}
export BUILD
PY=${PYTHON:-/usr/bin/python3}
ROOT=$(pwd)
T=$(mktemp -d /tmp/clipself-slurm.XXXXXX)
export PATH=$PATH:/usr/sbin
# shellcheck source=tests/testlib.sh
source "$(dirname "$0")/testlib.sh"
cleanup() {
  if [ -n "${SLURM_CONF:-}" ]; then
    scancel --user "$(id -un)" 2>/dev/null
    slurm/local-cluster stop "$T/cluster" >/dev/null 2>&1
  fi
  [ -n "${KEEP:-}" ] && echo "test_slurm: kept $T" || rm -rf "$T"
}
trap cleanup EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1}
finish() {
  echo "test_slurm: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]; exit
}

# ---- the experiment: a generated dataset known under two benchmark names
{ dataset_entry s; dataset_entry s_again; } >"$T/datasets.cfg"
"$BUILD/bin/init_model" --preset tiny --seed 7 --out "$T/other.h5" >/dev/null || bad "init_model other"
job() { # job RUN_DIR: the experiment file for that run directory
  cat <<JOB
DATASET=s
DATASETS=$T/datasets.cfg
RUN_DIR=$1
DATA_DIR=$T/data
TRAIN_IMAGES=48
VAL_IMAGES=6
TEACHER_PRESET=tiny
TEACHER_SEED=1
EPOCHS=2
MAX_SPLIT=4
MAX_BOXES=8
BATCH=1
LR=1e-4
WARMUP=4
DET_SIZE=256
SAVE_EVERY=4
RANKS=2
CROPS_SHARDS=2
EMBED_SHARDS=2
EMBED_CHUNK=8
EVAL_BENCHMARKS="s s_again"
EVAL_MODELS="other=$T/other.h5"
TIME_PREPARE=00:10:00
TIME_CROPS=00:10:00
TIME_EMBED=00:10:00
TIME_TRAIN=00:20:00
TIME_EVAL=00:10:00
JOB
}
job "$T/local" >"$T/local.job"
job "$T/slurm" >"$T/slurm.job"
job "$T/rq" >"$T/rq.job"
echo "LAUNCHER=srun" >>"$T/rq.job" # the interrupted run's ranks are a Slurm step (PMIx)

# ---- the uninterrupted local run
timeout 900 scripts/run-job "$T/local.job" "$BUILD" >"$T/local.log" 2>&1
check "the local run of the experiment exits 0" test $? -eq 0
[ -s "$T/local/comparison.json" ] || { tail -n 30 "$T/local.log"; bad "local run"; finish; }

# ---- the cluster, on two free ports (other clusters may be running on this machine)
for _ in $(seq 1 50); do
  SLURM_PORT=$(( 20000 + RANDOM % 20000 ))
  (exec 3<>"/dev/tcp/127.0.0.1/$SLURM_PORT") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$((SLURM_PORT + 1))") 2>/dev/null || break
done
export SLURM_PORT
if ! slurm/local-cluster start "$T/cluster" >"$T/cluster.log" 2>&1; then
  cat "$T/cluster.log"; bad "the one-node Slurm cluster starts"; finish
fi
ok
export SLURM_CONF=$T/cluster/slurm.conf

# ids JOBS...: wait until none is pending or running (up to $2 s), then print their states
wait_jobs() {
  local limit=$1; shift
  local t0; t0=$(date +%s)
  while [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do
    [ -z "$(squeue -h -j "$(IFS=,; echo "$*")" -o %i 2>/dev/null)" ] && return 0
    sleep 1
  done
  echo "wait_jobs: still queued after $limit s:"; squeue
  return 1
}
job_state() { scontrol show job "$1" 2>/dev/null | grep -oE 'JobState=[A-Z_]+' | head -n 1 | cut -d= -f2; }

slurm/submit "$T/slurm.job" >"$T/submit.log" 2>&1
check "slurm/submit exits 0" test $? -eq 0
ids=$(sed -n 's/^jobs: //p' "$T/submit.log")
echo "test_slurm: submitted $ids"
check "the dataset the local run made is complete: prepare skipped" grep -qE '^  prepare +complete, skipped' "$T/submit.log"
check "the rest of the chain was submitted (8 jobs: teacher, crops + join, embed + join, train, eval, compare)" \
  test "$(echo "$ids" | wc -w)" -eq 8
check "every stage is on the submission's list" \
  grep -qE '^  eval +job .*array 0-7 of 8' "$T/submit.log"
wait_jobs 900 $ids || bad "the chain finished in time"
for j in $ids; do
  st=$(job_state "$j")
  [ -z "$st" ] && st=$(scontrol show job "${j}_0" 2>/dev/null | grep -oE 'JobState=[A-Z]+' | head -n 1 | cut -d= -f2)
  check "job $j completed ($st)" test "$st" = COMPLETED
done
check "the crops array ran 2 tasks" test "$(ls "$T/slurm/logs/"clipself-crops-slurm-*_[01].out 2>/dev/null | wc -l)" -eq 2
check "the embed array ran 2 tasks" test "$(ls "$T/slurm/logs/"clipself-embed-slurm-*_[01].out 2>/dev/null | wc -l)" -eq 2
check "the eval array ran 8 tasks" test "$(ls "$T/slurm/logs/"clipself-eval-slurm-*_*.out 2>/dev/null | wc -l)" -eq 8
check "the shard folders are gone after the joins" test ! -e "$T/slurm/crops.h5.parts" -a ! -e "$T/slurm/teacher_cache.h5.parts"
for f in teacher.h5 crops.h5 teacher_cache.h5 train/epoch_1.h5 train/student.h5; do
  check "slurm $f equals the local run's" h5diff -q "$T/local/$f" "$T/slurm/$f"
done
check "train_log.csv equals the local run's (but the rate column)" \
  cmp <(cut -d, -f1-4 "$T/local/train/train_log.csv") <(cut -d, -f1-4 "$T/slurm/train/train_log.csv")
check "the comparison tables hold the same results" "$PY" - "$T/local" "$T/slurm" <<'EOF'
import json, sys
a, b = (json.load(open(d + "/comparison.json")) for d in sys.argv[1:3])
ra, rb = a["results"], b["results"]
assert len(ra) == len(rb) == 8, (len(ra), len(rb))
for x, y in zip(ra, rb):
    assert x["status"] == y["status"] == "ok", (x["status"], y["status"])
    assert (x["label"], x["benchmark"]) == (y["label"], y["benchmark"])
    assert x["metrics"] == y["metrics"], x["label"]
    assert x["model_digest"] == y["model_digest"], x["label"]
labels = [r["label"] for r in ra]
assert labels == ["teacher", "epoch_1", "student", "other"] * 2, labels
assert [r["benchmark"] for r in ra] == ["s"] * 4 + ["s_again"] * 4
EOF
check "the comparison table has a section per benchmark" test "$(grep -cE '^### (s|s_again)$' "$T/slurm/comparison.md")" -eq 2
check "and a teacher -> student table per benchmark" test "$(grep -c '^### Before/after on .*: teacher -> student' "$T/slurm/comparison.md")" -eq 2

# submitting again: everything is complete
slurm/submit "$T/slurm.job" >"$T/submit2.log" 2>&1
check "a second submission exits 0" test $? -eq 0
check "a second submission submits nothing" grep -q '^jobs: *$' "$T/submit2.log"
check "it reports every stage complete" test "$(grep -c 'complete, skipped' "$T/submit2.log")" -ge 5

# a second student on region proposals: the patches student's stages are complete and
# skipped; the proposals student's crops, cache and training are submitted with STUDENT in
# their environment, then every evaluation (the dry run prints the sbatch commands)
{ cat "$T/slurm.job"; echo 'STUDENTS="patches proposals"'; echo "PROPOSALS=$T/props.json"; } >"$T/two.job"
"$BUILD/bin/make_proposals" --datasets "$T/datasets.cfg" --dataset s --out "$T/props.json" >/dev/null 2>&1
slurm/submit --dry-run "$T/two.job" >"$T/submit5.log" 2>&1
check "two students: the dry run exits 0" test $? -eq 0
check "two students: the patches student's stages are complete" \
  test "$(grep -cE '^  (crops|embed|train) +complete, skipped' "$T/submit5.log")" -eq 3
for st in crops-proposals embed-proposals train-proposals; do
  check "two students: $st submitted for the proposals student" \
    grep -qE "job-name clipself-$st-two .*STUDENT=proposals" "$T/submit5.log"
done
# per benchmark: teacher (complete), the patches epoch and student (complete, but now labelled
# patches_epoch_1 and student_patches: results of their own), the proposals epoch and student,
# other (complete)
check "two students: the teacher's and other's results kept, the students' evaluated" \
  grep -qE '^  eval +job .*array 1-4,7-10 of 12' "$T/submit5.log"

# a stale output stops the submission, naming the file
cp "$T/slurm/crops.h5" "$T/crops.bak"
"$BUILD/bin/sample_crops" --datasets "$T/datasets.cfg" --dataset s --epochs 3 --out "$T/slurm/crops.h5" >/dev/null 2>&1
slurm/submit --dry-run "$T/slurm.job" >"$T/submit3.log" 2>&1
check "a stale crops file stops the submission" test $? -ne 0
check "the message names the stale file" grep -q "crops.h5" "$T/submit3.log"
cp "$T/crops.bak" "$T/slurm/crops.h5"

# ---- preemption: training interrupted twice, resumed twice, same final model (this run
# launches its ranks with srun --mpi=pmix, the first with mpirun)
mkdir -p "$T/rq"
cp "$T/slurm/teacher.h5" "$T/slurm/crops.h5" "$T/slurm/teacher_cache.h5" "$T/rq/"
slurm/submit "$T/rq.job" >"$T/submit4.log" 2>&1
check "the training submission exits 0" test $? -eq 0
check "prepare, teacher, crops and embed are skipped as complete" \
  test "$(grep -cE '^  (prepare|teacher|crops|embed) +complete, skipped' "$T/submit4.log")" -eq 4
ids=$(sed -n 's/^jobs: //p' "$T/submit4.log")
tj=$(echo "$ids" | awk '{print $1}')
log=$T/rq/train/train_log.csv
steps() { [ -s "$log" ] && tail -n 1 "$log" | cut -d, -f1 | grep -E '^[0-9]+$' || echo 0; }
# wait_step N: until training has logged step N (or the job left the queue)
wait_step() {
  for _ in $(seq 1 3000); do
    [ "$(steps)" -ge "$1" ] && return 0
    sleep 0.1
  done
  return 1
}
# release: a requeued job waits out Slurm's requeue delay (BeginTime); start it now, but not
# within the second its last run ended: slurmd revokes the job's credentials as of that second,
# and a launch in it is refused ("Job credential revoked"), failing the job and cancelling its
# dependents (seen in CI). A start time ahead (now+2) would wait for the scheduler's next
# periodic pass, about a minute.
release() {
  for _ in $(seq 1 300); do
    r=$(squeue -h -j "$tj" -o '%T %r' 2>/dev/null)
    case $r in "PENDING BeginTime") sleep 1.2; scontrol update JobId="$tj" StartTime=now; return 0 ;; esac
    sleep 0.1
  done
  return 1
}
wait_step 6 || bad "training reached step 6"
echo "test_slurm: $(date +%T) USR1 to job $tj at step $(steps)"
scancel --signal=USR1 --batch "$tj"   # what --signal=B:USR1@S delivers before the time limit
release || bad "the job requeued itself after the warning signal"
tlog=$T/rq/logs/clipself-train-rq-$tj.out
for _ in $(seq 1 600); do grep -q 'resumed from' "$tlog" && break; sleep 0.1; done
check "the requeued job resumed from a checkpoint" grep -q 'resumed from' "$tlog"
n=$(steps)
echo "test_slurm: $(date +%T) resumed at step $n"
wait_step $(( n + 3 )) || bad "training went on after the first requeue"
echo "test_slurm: $(date +%T) scontrol requeue $tj at step $(steps)"
scontrol requeue "$tj"
release || bad "scontrol requeue requeued the job"
wait_jobs 600 $ids || bad "the requeued chain finished in time"
check "training job completed" test "$(job_state "$tj")" = COMPLETED
check "no launch of it was refused" bash -c "! grep -iE 'JobId=$tj[^0-9].*(revoked|non-startable)' '$T/cluster/slurmctld.log'"
check "it ran three times (restart count 2)" grep -q "start 2 on" "$tlog"
check "its ranks ran as srun steps" grep -q "launcher srun" "$tlog"
check "the warning signal made it checkpoint and requeue itself" grep -q "requeueing job $tj" "$tlog"
check "it resumed twice" test "$(grep -c 'resumed from' "$tlog")" -ge 2
check "the interrupted run's student equals the uninterrupted run's" \
  h5diff -q "$T/local/train/student.h5" "$T/rq/train/student.h5"
check "so does its log (but the rate column)" \
  cmp <(cut -d, -f1-4 "$T/local/train/train_log.csv") <(cut -d, -f1-4 "$log")
check "the evaluation after training ran" test -s "$T/rq/comparison.json"
grep -E "resumed from|requeue|USR1|TERM" "$tlog" | sed 's/^/  /'
if [ "$fail" -gt 0 ]; then
  tail -n 20 "$T/slurm/logs/"*.out 2>/dev/null | tail -n 40
  echo "---- the preempted training's log, and what slurmctld said of job $tj"
  tail -n 40 "$tlog"
  grep -E "JobId=$tj[^0-9]|job $tj[^0-9]" "$T/cluster/slurmctld.log" | tail -n 30
fi
finish
