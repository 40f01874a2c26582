# tests/testlib.sh: what the shell tests share (sourced): the check counters and a datasets.cfg
# entry for a generated dataset. A test ends with "NAME: N passed, N failed" (scripts/run-tests
# adds them up).
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
# check NAME CMD...: one check, passed when CMD exits 0 (its output is dropped)
check() { local name=$1; shift; if "$@" >/dev/null 2>&1; then ok; else bad "$name"; fi; }
# dataset_entry NAME: a datasets.cfg section for make_dataset's output in data/ beside the cfg
dataset_entry() {
  cat <<CFG
[$1]
images = data/images
train = data/instances_train.json
eval_images = data/images
panoptic = data/panoptic_val.json
panoptic_png = data/panoptic_val
classes = data/classes.h5
CFG
}

# gen_dataset TRAIN VAL [MAX_SIZE]: make_dataset's images (sides 64 to MAX_SIZE, default 128) as
# dataset "t" of $T/datasets.cfg, and D, the options that name it ($BIN and $T: the caller's)
gen_dataset() {
  dataset_entry t >"$T/datasets.cfg"
  D=(--datasets "$T/datasets.cfg" --dataset t)
  run "$BIN/make_dataset" --out "$T/data" --train "$1" --val "$2" --min-size 64 --max-size "${3:-128}" ||
    bad make_dataset
}

# The stage tests' environment: MPI as root, one thread a rank, sanitizer options passed on.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1}
MPI2=(mpirun -np 2 --oversubscribe -x OMP_NUM_THREADS=1 -x ASAN_OPTIONS -x UBSAN_OPTIONS)
# run CMD...: a stage with its output appended to $T/log (the caller's temporary folder)
run() { timeout 600 "$@" >>"$T/log" 2>&1; }
same_h5() { h5diff -q "$1" "$2" >/dev/null 2>&1; }
# kill_group PID: SIGKILL a process group (started with setsid) and wait until none is left
kill_group() {
  kill -9 -- "-$1" 2>/dev/null
  wait "$1" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 -- "-$1" 2>/dev/null || return 0; sleep 0.1; done
  bad "process group $1 survived kill -9"
}
