#!/usr/bin/env bash
# test_demo.sh: the README's main job (scripts/demo: jobs/demo.job through scripts/run-job)
# runs to the end and leaves well-formed evaluation results for the teacher, each epoch's model
# and the student, gathered in one comparison table; run again, it finds everything complete.
set -u
PY=${PYTHON:-/usr/bin/python3}
# shellcheck source=tests/testlib.sh
source "$(dirname "$0")/testlib.sh"
log=$(mktemp /tmp/clipself-demo.XXXXXX)
trap 'rm -f "$log"' EXIT
scripts/demo "${BUILD:-build}" >"$log" 2>&1
rc=$?
check "the demo job exits 0" test "$rc" -eq 0
# (a checkout that ran the demo before finds some results complete)
check "it evaluated the three models (or found their results complete)" \
  test "$(( $(grep -cE '^\| rois \| [0-9-]' "$log") + $(grep -c '^=== evaluate .*complete, skipped' "$log") ))" -eq 3
check "it printed the before/after table" grep -q '^### Before/after on demo: teacher -> student' "$log"
for who in teacher epoch_1 student; do
  check "eval/$who@demo.json is complete" "$PY" -c "
import json, math, sys
r = json.load(open('runs/demo/eval/$who@demo.json'))
m = r['metrics']
ok = len(m) == 12 and r['images'] > 0 and r['segments'] > 0 and \\
     all(v is None or 0.0 <= v <= 1.0 for v in m.values()) and len(r['per_class']) == 17
sys.exit(0 if ok else 1)"
done
check "the student checkpoint exists" test -s runs/demo/train/student.h5
check "the comparison table lists the three models" "$PY" -c "
import json, sys
c = json.load(open('runs/demo/comparison.json'))
ok = [r['label'] for r in c['results'] if r['status'] == 'ok'] == ['teacher', 'epoch_1', 'student']
sys.exit(0 if ok else 1)"
check "comparison.md has their rows" test "$(grep -cE '^\| (teacher|epoch_1|student) \|' runs/demo/comparison.md)" -eq 3
scripts/demo "${BUILD:-build}" >"$log" 2>&1
check "the demo run again exits 0" test $? -eq 0
check "run again, it skips every stage as complete (only the table is made again)" \
  test "$(grep -c '^=== .* (20' "$log")" -eq 1 -a "$(grep -c 'complete, skipped' "$log")" -eq 8
[ "$fail" -gt 0 ] && tail -n 30 "$log"
echo "test_demo: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
