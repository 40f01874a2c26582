#!/usr/bin/env bash
# test_demo.sh: the README's main job, shortened (jobs/demo-ci.job: the demo's stages on fewer
# images, epochs and steps): generate the world, pretrain the teacher, crops, teacher cache,
# CLIPSelf training, evaluation of teacher and student, the before/after report and the
# pictures. Checks the report is produced and well formed, and that a second run finds every
# stage complete. (It does not check CLIPSelf's effect: too few steps; the README has the full
# demo's numbers.)
set -u
PY=${PYTHON:-/usr/bin/python3}
# shellcheck source=tests/testlib.sh
source "$(dirname "$0")/testlib.sh"
log=$(mktemp /tmp/clipself-demo.XXXXXX)
R=runs/demo-ci
trap 'rm -f "$log"' EXIT
rm -rf "$R" # from scratch, as on a fresh checkout
scripts/run-job jobs/demo-ci.job "${BUILD:-build}" >"$log" 2>&1
rc=$?
check "the shortened demo exits 0" test "$rc" -eq 0
check "it pretrained the teacher (epoch lines with train accuracy)" grep -q 'train top-1 things' "$log"
check "it evaluated teacher and student" test "$(grep -cE '^\| rois \| [0-9-]' "$log")" -eq 2
check "it exported the student as safetensors (export_model --verify)" \
  "${BUILD:-build}/bin/export_model" --model "$R/train/student.h5" --out "$R/student.safetensors" --verify
check "it printed the before/after table" grep -q '^### Before/after on demo-ci: teacher -> student' "$log"
for who in teacher student; do
  check "eval/$who@demo-ci.json is complete" "$PY" -c "
import json, sys
r = json.load(open('$R/eval/$who@demo-ci.json'))
m = r['metrics']
ok = len(m) == 12 and r['images'] == 8 and r['segments'] > 0 and \\
     all(v is None or 0.0 <= v <= 1.0 for v in m.values()) and len(r['per_class']) == 17
sys.exit(0 if ok else 1)"
done
check "the report: comparison.json lists teacher and student, both ok" "$PY" -c "
import json, sys
c = json.load(open('$R/comparison.json'))
sys.exit(0 if [(r['label'], r['status']) for r in c['results']] == [('teacher', 'ok'), ('student', 'ok')] else 1)"
check "the report: comparison.md has the before/after rows (3 methods x 2 kinds)" "$PY" - "$R" <<'EOF'
import json, sys
R = sys.argv[1]
text = open(f"{R}/comparison.md").read().split("### Before/after")[1]
rows = [l for l in text.splitlines() if l.startswith("| ") and "|---" not in l][1:]
assert [r.split("|")[1].strip() + " " + r.split("|")[2].strip() for r in rows] == \
    ["rois thing", "rois stuff", "crops thing", "crops stuff", "maskpool thing", "maskpool stuff"], rows
m = {n: json.load(open(f"{R}/eval/{n}@demo-ci.json"))["metrics"] for n in ("teacher", "student")}
for r in rows:
    c = [x.strip() for x in r.split("|")[1:-1]]
    k = f"{c[0]}.{c[1]}.macc1"
    if m["teacher"][k] is not None:
        assert c[2] == f"{100 * m['teacher'][k]:.2f}" and c[3] == f"{100 * m['student'][k]:.2f}", r
EOF
check "the pictures: 2 PNGs and a legend" test "$(ls "$R/pictures/demo-ci/"*.png 2>/dev/null | wc -l)" -eq 2 -a -s "$R/pictures/demo-ci/legend.txt"
check "a picture is 4 panels wide" "$PY" -c "
import glob, sys
from PIL import Image
im = Image.open(sorted(glob.glob('$R/pictures/demo-ci/*.png'))[0])
sys.exit(0 if im.width > 3 * im.height and im.mode == 'RGB' else 1)"
check "the teacher and its class embeddings exist" test -s "$R/teacher.h5" -a -s "$R/data/classes.h5"
scripts/run-job jobs/demo-ci.job "${BUILD:-build}" >"$log" 2>&1
check "run again, it exits 0" test $? -eq 0
check "run again, it skips every stage as complete (only the table is made again)" \
  test "$(grep -c '^=== .* (20' "$log")" -eq 1 -a "$(grep -c 'complete, skipped' "$log")" -eq 7
[ "$fail" -gt 0 ] && tail -n 30 "$log"
echo "test_demo: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
