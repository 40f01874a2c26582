#!/usr/bin/env bash
# test_demo.sh: the README's main job, shortened (jobs/demo-ci.job: the demo's stages on fewer
# images, epochs and steps): generate the world and its proposals, pretrain the teacher, then
# for the patches and the proposals student crops, teacher cache and CLIPSelf training;
# evaluation of the teacher and both students, the before/after reports and the pictures. Checks the report is produced and well formed, and that a second run finds every
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
check "it evaluated the teacher and both students" test "$(grep -cE '^\| rois \| [0-9-]' "$log")" -eq 3
check "it made the proposals (make_proposals) and sampled them" grep -q 'sample_crops: proposals mode' "$log"
check "it exported the patches student as safetensors (export_model --verify)" \
  "${BUILD:-build}/bin/export_model" --model "$R/train/student.h5" --out "$R/student.safetensors" --verify
check "it exported the proposals student as safetensors (export_model --verify)" \
  "${BUILD:-build}/bin/export_model" --model "$R/train-proposals/student.h5" --out "$R/student-proposals.safetensors" --verify
for who in student_patches student_proposals; do
  check "it printed the before/after table teacher -> $who" grep -q "^### Before/after on demo-ci: teacher -> $who" "$log"
done
for who in teacher student_patches student_proposals; do
  check "eval/$who@demo-ci.json is complete" "$PY" -c "
import json, sys
r = json.load(open('$R/eval/$who@demo-ci.json'))
m = r['metrics']
ok = len(m) == 12 and r['images'] == 8 and r['segments'] > 0 and \\
     all(v is None or 0.0 <= v <= 1.0 for v in m.values()) and len(r['per_class']) == 17
sys.exit(0 if ok else 1)"
done
check "the report: comparison.json lists the teacher and both students, all ok" "$PY" -c "
import json, sys
c = json.load(open('$R/comparison.json'))
sys.exit(0 if [(r['label'], r['status']) for r in c['results']] == [('teacher', 'ok'), ('student_patches', 'ok'), ('student_proposals', 'ok')] else 1)"
check "the report: comparison.md has the before/after rows (3 methods x 2 kinds)" "$PY" - "$R" <<'EOF'
import json, sys
R = sys.argv[1]
tables = open(f"{R}/comparison.md").read().split("### Before/after")[1:]
assert len(tables) == 2, len(tables)
for who, text in zip(("student_patches", "student_proposals"), tables):
    assert text.splitlines()[0].startswith(f" on demo-ci: teacher -> {who} (mAcc %, change in points"), text
    table = text.split("\n\n")[1]  # the method rows; the segmentation table follows
    rows = [l for l in table.splitlines() if l.startswith("| ") and "|---" not in l][1:]
    assert [r.split("|")[1].strip() + " " + r.split("|")[2].strip() for r in rows] == \
        ["rois thing", "rois stuff", "crops thing", "crops stuff", "maskpool thing", "maskpool stuff"], rows
    m = {n: json.load(open(f"{R}/eval/{n}@demo-ci.json"))["metrics"] for n in ("teacher", who)}
    for r in rows:
        c = [x.strip() for x in r.split("|")[1:-1]]
        k = f"{c[0]}.{c[1]}.macc1"
        if m["teacher"][k] is not None:
            assert c[2] == f"{100 * m['teacher'][k]:.2f}" and c[3] == f"{100 * m[who][k]:.2f}", r
    seg = text.split("Zero-shot segmentation")[1]
    s = {n: json.load(open(f"{R}/eval/{n}@demo-ci.json"))["segmentation"] for n in ("teacher", who)}
    row = [l for l in seg.splitlines() if l.startswith("| all |")][0].split("|")
    assert row[2].strip() == f"{100 * s['teacher']['miou']:.2f}" and \
        row[3].strip() == f"{100 * s[who]['miou']:.2f}", row
EOF
for p in demo-ci_patches demo-ci_proposals; do
  check "the pictures of $p: 2 PNGs and a legend" test "$(ls "$R/pictures/$p/"*.png 2>/dev/null | wc -l)" -eq 2 -a -s "$R/pictures/$p/legend.txt"
  check "a picture of $p is 4 panels wide" "$PY" -c "
import glob, sys
from PIL import Image
im = Image.open(sorted(glob.glob('$R/pictures/$p/*.png'))[0])
sys.exit(0 if im.width > 3 * im.height and im.mode == 'RGB' else 1)"
done
check "the teacher and its class embeddings exist" test -s "$R/teacher.h5" -a -s "$R/data/classes.h5"
scripts/run-job jobs/demo-ci.job "${BUILD:-build}" >"$log" 2>&1
check "run again, it exits 0" test $? -eq 0
check "run again, it skips every stage as complete (only the table is made again)" \
  test "$(grep -c '^=== .* (20' "$log")" -eq 1 -a "$(grep -c 'complete, skipped' "$log")" -eq 11
[ "$fail" -gt 0 ] && tail -n 30 "$log"
echo "test_demo: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
