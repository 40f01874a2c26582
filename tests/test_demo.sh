#!/usr/bin/env bash
# test_demo.sh: the README's main job (scripts/demo: jobs/demo.job through scripts/run-job)
# runs to the end and leaves well-formed evaluation results for the teacher and the student.
set -u
PY=${PYTHON:-/usr/bin/python3}
pass=0; fail=0
check() { local name=$1; shift; if "$@" >/dev/null 2>&1; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $name"; fi; }
log=$(mktemp /tmp/clipself-demo.XXXXXX)
trap 'rm -f "$log"' EXIT
scripts/demo "${BUILD:-build}" >"$log" 2>&1
rc=$?
check "the demo job exits 0" test "$rc" -eq 0
check "it printed both evaluation tables" test "$(grep -c '^| rois |' "$log")" -ge 2
for who in teacher student; do
  check "eval_$who.json is complete" "$PY" -c "
import json, math, sys
r = json.load(open('runs/demo/eval_$who.json'))
m = r['metrics']
ok = len(m) == 12 and r['images'] > 0 and r['segments'] > 0 and \\
     all(v is None or 0.0 <= v <= 1.0 for v in m.values()) and len(r['per_class']) == 17
sys.exit(0 if ok else 1)"
done
check "the student checkpoint exists" test -s runs/demo/train/student.h5
[ "$fail" -gt 0 ] && tail -n 30 "$log"
echo "test_demo: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
