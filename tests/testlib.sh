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
