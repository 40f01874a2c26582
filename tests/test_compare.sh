#!/usr/bin/env bash
# test_compare.sh: evaluate's label and model digest, and compare_results gathering results
# into one table: two models evaluated on 2 ranks, a manifest with their results, a missing
# one and a malformed one (exit status 1, both outputs written, every number copied), an
# all-ok manifest (exit 0), a result of another dataset, before/after tables with intervals
# (against a Python resampling with the same draws), malformed manifests and --help.
# Ends with "test_compare: N passed, N failed".
set -u
BIN=${BUILD:-build}/bin
PY=${PYTHON:-/usr/bin/python3}
T=$(mktemp -d /tmp/clipself-compare.XXXXXX)
trap 'rm -rf "$T"' EXIT
# shellcheck source=tests/testlib.sh
source "$(dirname "$0")/testlib.sh"

gen_dataset 2 4
run "$BIN/init_model" --preset tiny --seed 3 --out "$T/model_a.h5" || bad init_model
run "$BIN/init_model" --preset tiny --seed 4 --out "$T/model_b.h5" || bad init_model
run "$BIN/random_classes" "${D[@]}" --embed 32 || bad random_classes

# ---- evaluate: label (default and given) and model digest ----
run "${MPI2[@]}" "$BIN/evaluate" "${D[@]}" --model "$T/model_a.h5" --det-size 64 --out "$T/a.json" \
  || bad "evaluate model_a"
run "${MPI2[@]}" "$BIN/evaluate" "${D[@]}" --model "$T/model_b.h5" --label "B run" --det-size 64 \
  --out "$T/b.json" || bad "evaluate model_b"
check "evaluate: label and model_digest follow model, digest is FNV-1a 64 of the file" "$PY" - \
  "$T/a.json" "$T/model_a.h5" model_a "$T/b.json" "$T/model_b.h5" "B run" <<'PYEOF'
import json, sys
def fnv1a64(path):
    h = 0xcbf29ce484222325
    for b in open(path, 'rb').read():
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return '%016x' % h
a = sys.argv[1:]
for res, model, label in (a[0:3], a[3:6]):
    r = json.load(open(res))
    assert list(r)[:4] == ['model', 'label', 'model_digest', 'dataset'], list(r)
    assert r['model'] == model and r['label'] == label, (r['model'], r['label'])
    assert r['model_digest'] == fnv1a64(model), (r['model_digest'], fnv1a64(model))
    assert len(r['metrics']) == 12 and r['segments'] > 0
PYEOF
check "evaluate: the two models' digests differ" "$PY" -c "
import json, sys
sys.exit(0 if json.load(open('$T/a.json'))['model_digest'] != json.load(open('$T/b.json'))['model_digest'] else 1)"
check "evaluate: the markdown names the label" grep -q '^Region recognition, B run (' "$T/b.json.md"
check "evaluate: a label with a tab is refused" bash -c \
  "! '$BIN/evaluate' --datasets '$T/datasets.cfg' --dataset t --model '$T/model_a.h5' --label \$'x\ty' --out '$T/x.json'"

# ---- compare_results: two ok, one missing, one malformed ----
head -c 300 "$T/a.json" >"$T/broken.json"
{
  printf '# label\tmodel\tbenchmark\tresult\n\n'
  printf 'model_a\t%s\tt\t%s\n' "$T/model_a.h5" "$T/a.json"
  printf 'B run\t%s\tt\t%s\n' "$T/model_b.h5" "$T/b.json"
  printf 'gone\t%s\tt\t%s\n' "$T/model_c.h5" "$T/nowhere.json"
  printf 'broken\t%s\tt\t%s\n' "$T/model_d.h5" "$T/broken.json"
} >"$T/m.tsv"
timeout 300 "${MPI2[@]}" "$BIN/compare_results" --manifest "$T/m.tsv" --out "$T/cmp" >"$T/cmp.out" 2>&1
rc=$?
check "compare_results: exit status 1 with results missing" test "$rc" -eq 1
check "compare_results: says how many are missing or invalid" grep -q '^compare_results: 2 of 4 results missing or invalid$' "$T/cmp.out"
check "compare_results: ends through MPI_Finalize, not MPI_Abort" bash -c "! grep -q MPI_ABORT '$T/cmp.out'"
check "compare_results: writes PREFIX.md and PREFIX.json anyway" test -s "$T/cmp.md" -a -s "$T/cmp.json"
check "compare_results: prints the markdown" "$PY" -c "
import sys; sys.exit(0 if open('$T/cmp.md').read() in open('$T/cmp.out').read() else 1)"
check "compare_results: JSON lists every result, its status, digest and numbers" "$PY" - \
  "$T/cmp.json" "$T/a.json" "$T/b.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
src = [json.load(open(p)) for p in sys.argv[2:4]]
assert c['benchmarks'] == ['t'], c['benchmarks']
assert [m['label'] for m in c['models']] == ['model_a', 'B run', 'gone', 'broken']
assert c['models'][0]['model'].endswith('/model_a.h5')
r = c['results']
assert len(r) == 4
st = [x['status'] for x in r]
assert st[:3] == ['ok', 'ok', 'missing'] and st[3].startswith('invalid: malformed JSON'), st
for x, s in zip(r[:2], src):
    assert set(x) == {'label', 'model', 'benchmark', 'result', 'status', 'model_digest', 'images',
                      'segments', 'metrics'}, set(x)
    assert x['benchmark'] == 't' and x['model_digest'] == s['model_digest']
    assert x['images'] == s['images'] and x['segments'] == s['segments']
    assert list(x['metrics']) == list(s['metrics']) and x['metrics'] == s['metrics']
for x in r[2:]:
    assert x['metrics'] is None and x['images'] is None and x['model_digest'] is None
assert r[2]['result'].endswith('/nowhere.json')
PYEOF
check "compare_results: markdown rows with percentages, missing and invalid marked" "$PY" - \
  "$T/cmp.md" "$T/a.json" "$T/b.json" <<'PYEOF'
import json, sys
md = open(sys.argv[1]).read()
lines = md.splitlines()
assert lines[0].startswith('# ') and '### t' in lines
head = [l for l in lines if l.startswith('| model |')]
assert len(head) == 1 and head[0].split('|')[2].strip() == 'rois thing top-1' \
    and head[0].split('|')[-2].strip() == 'images', head
for label, path in (('model_a', sys.argv[2]), ('B run', sys.argv[3])):
    s = json.load(open(path))
    want = ['-' if v is None else '%.2f' % (100 * v) for v in s['metrics'].values()]
    want += ['-' if s['segmentation'][k] is None else '%.2f' % (100 * s['segmentation'][k])
             for k in ('miou', 'miou_thing', 'miou_stuff')]
    row = [l for l in lines if l.startswith('| %s |' % label)]
    assert len(row) == 1, (label, row)
    cells = [c.strip() for c in row[0].split('|')[2:-1]]
    assert cells == want + [str(s['images'])], (cells, want)
gone = [l for l in lines if l.startswith('| gone |')]
assert len(gone) == 1 and gone[0].split('|')[2].strip() == 'missing'
brk = [l for l in lines if l.startswith('| broken |')]
assert len(brk) == 1 and brk[0].split('|')[2].strip() == 'invalid'
assert len(gone[0].split('|')) == len(head[0].split('|'))
notes = md.split('| broken |')[1]
assert '- gone on t: missing' in notes and '- broken on t: invalid: malformed JSON' in notes
PYEOF
"$BIN/compare_results" --manifest "$T/m.tsv" --out "$T/cmp1" >/dev/null 2>&1
check "compare_results: 1 rank writes the same outputs as 2" cmp -s "$T/cmp.json" "$T/cmp1.json"

# ---- all ok: exit 0; a null metric shows as "-" ----
"$PY" -c "
import json
r = json.load(open('$T/b.json')); r['metrics']['crops.stuff.macc5'] = None
json.dump(r, open('$T/b_null.json', 'w'))"
printf 'model_a\t%s\tt\t%s\nB run\t%s\tt\t%s\n' "$T/model_a.h5" "$T/a.json" "$T/model_b.h5" \
  "$T/b_null.json" >"$T/ok.tsv"
timeout 300 "${MPI2[@]}" "$BIN/compare_results" --manifest "$T/ok.tsv" --out "$T/ok" >"$T/ok.out" 2>&1
check "compare_results: all ok exits 0" test $? -eq 0
check "compare_results: all ok in the JSON, a null metric stays null" "$PY" -c "
import json, sys; c = json.load(open('$T/ok.json'))
sys.exit(0 if [x['status'] for x in c['results']] == ['ok', 'ok'] and
         c['results'][1]['metrics']['crops.stuff.macc5'] is None else 1)"
check "compare_results: a null metric is '-' in the table" "$PY" -c "
import sys; row = [l for l in open('$T/ok.md') if l.startswith('| B run |')][0]
sys.exit(0 if [c.strip() for c in row.split('|')][9] == '-' else 1)"
"$BIN/compare_results" --manifest "$T/ok.tsv" --out "$T/ba" --before model_a --after "B run" >/dev/null 2>&1
check "compare_results --before/--after: 6 rows, each change = after - before" "$PY" - "$T" <<'PYEOF'
import json, sys
T = sys.argv[1]
a, b = (json.load(open(f"{T}/{n}.json"))["metrics"] for n in ("a", "b_null"))
text = open(f"{T}/ba.md").read().split("### Before/after on t: model_a -> B run")[1]
rows = [l for l in text.splitlines() if l.startswith("| rois") or l.startswith("| crops") or l.startswith("| maskpool")]
assert len(rows) == 6, rows
for r in rows:
    c = [x.strip() for x in r.split("|")[1:-1]]
    for t, off in ((1, 2), (5, 5)):
        k = f"{c[0]}.{c[1]}.macc{t}"
        if b[k] is None:
            assert c[off + 1] == "-" and c[off + 2] == "-", r
            continue
        assert c[off] == f"{100 * a[k]:.2f}" and c[off + 1] == f"{100 * b[k]:.2f}", r
        # the change, then its interval (b_null has no regions: no interval)
        assert c[off + 2].split(" [")[0] == f"{100 * (b[k] - a[k]):+.2f}", r
PYEOF

# ---- a result of another dataset is invalid ----
printf 'model_a\t%s\tother\t%s\n' "$T/model_a.h5" "$T/a.json" >"$T/other.tsv"
"$BIN/compare_results" --manifest "$T/other.tsv" --out "$T/other" >/dev/null 2>&1
rc=$?
check "compare_results: a result of another dataset is invalid" "$PY" -c "
import json, sys; s = json.load(open('$T/other.json'))['results'][0]['status']
sys.exit(0 if $rc == 1 and s.startswith('invalid: ') and 'other' in s else 1)"

# ---- before/after with intervals: a result against itself, and against another model ----
printf 'a1\t%s\tt\t%s\na2\t%s\tt\t%s\nB run\t%s\tt\t%s\n' "$T/model_a.h5" "$T/a.json" \
  "$T/model_a.h5" "$T/a.json" "$T/model_b.h5" "$T/b.json" >"$T/ba.tsv"
run "$BIN/compare_results" --manifest "$T/ba.tsv" --out "$T/ba" --before a1 --after "a2,B run"
check "compare_results: before/after intervals, the same as a re-implementation (draws of rng.h)" \
  "$PY" - "$T" <<'PYEOF'
import json, sys, math
sys.path.insert(0, "tests/reference")
import crops_ref  # the project's splitmix64 draw, written in Python
T = sys.argv[1]
md = open(T + "/ba.md").read()
tables = md.split("### Before/after")[1:]
assert len(tables) == 2, len(tables)
def rows(text):
    out = {}
    for l in text.split("\n\n")[1].splitlines()[2:]:
        c = [x.strip() for x in l.split("|")[1:-1]]
        out[(c[0], c[1])] = (c[4], c[7])
    return out
for c1, c5 in rows(tables[0]).values():  # a result against itself: no change, no spread
    assert c1 == "+0.00 [+0.0, +0.0]" or c1 == "-", c1
a, b = (json.load(open(T + p)) for p in ("/a.json", "/b.json"))
thing = [c["isthing"] for c in a["per_class"]]
K = len(thing)
ra, rb = a["regions"], b["regions"]
assert len(ra) == len(rb) == a["segments"] and all(x[:2] == y[:2] for x, y in zip(ra, rb))
first, count = [], []
for i, r in enumerate(ra):
    if i == 0 or r[0] != ra[i - 1][0]:
        first.append(i); count.append(0)
    count[-1] += 1
n = len(first)
def macc(reg, draw):
    t = [[0] * 7 for _ in range(K)]
    for d in draw:
        for r in reg[first[d]:first[d] + count[d]]:
            x = t[r[1]]; x[0] += 1
            for m in range(3):
                x[1 + m] += r[2] >> m & 1; x[4 + m] += r[3] >> m & 1
    out = []
    for i in range(12):
        m, st, top5 = i // 4, i // 2 % 2, i % 2
        v = [x[(4 if top5 else 1) + m] / x[0] for k, x in enumerate(t) if x[0] and (0 if thing[k] else 1) == st]
        out.append(sum(v) / len(v) if v else math.nan)
    return out
s = [0x5EED0F1A7E5]
diffs = [[] for _ in range(12)]
for _ in range(1000):
    draw = [crops_ref.below(s, n) for _ in range(n)]
    x, y = macc(ra, draw), macc(rb, draw)
    for i in range(12):
        if not math.isnan(y[i] - x[i]): diffs[i].append(y[i] - x[i])
got = rows(tables[1])
names = ["rois", "crops", "maskpool"]
checked = False
for i in range(12):
    key = (names[i // 4], ("thing", "stuff")[i // 2 % 2])
    cell = got[key][i % 2]
    if cell == "-" or "[" not in cell:
        continue
    v = sorted(diffs[i]); k = len(v)
    lo, hi = v[int(0.025 * (k - 1) + 0.5)], v[int(0.975 * (k - 1) + 0.5)]
    want = "[%+.1f, %+.1f]" % (100 * lo, 100 * hi)
    assert cell.endswith(want), (key, i % 2, cell, want)
    checked = True
assert checked, "no interval in the a1 -> B run table"
PYEOF

# ---- malformed manifests, --help ----
printf 'model_a\t%s\tt\t%s\n\nB run\t%s\tt\n' "$T/model_a.h5" "$T/a.json" "$T/model_b.h5" >"$T/bad.tsv"
out=$("$BIN/compare_results" --manifest "$T/bad.tsv" --out "$T/bad" 2>&1)
rc=$?
check "compare_results: a malformed manifest line fails" test "$rc" -ne 0
check "compare_results: naming the manifest and the line" grep -q 'bad.tsv, line 3' <<<"$out"
check "compare_results: and writes nothing" test ! -e "$T/bad.md" -a ! -e "$T/bad.json"
printf 'model_a\t%s\tt\t%s\nmodel_a\t%s\tt\t%s\n' "$T/model_a.h5" "$T/a.json" "$T/model_a.h5" \
  "$T/a.json" >"$T/dup.tsv"
out=$("$BIN/compare_results" --manifest "$T/dup.tsv" --out "$T/dup" 2>&1)
check "compare_results: a result listed twice is an error" grep -q 'dup.tsv, line 2.*listed twice' <<<"$out"
out=$("$BIN/compare_results" --manifest "$T/none.tsv" --out "$T/none" 2>&1)
check "compare_results: a missing manifest is an error naming it" grep -q 'none.tsv' <<<"$out"
out=$("$BIN/compare_results" --help 2>&1)
check "compare_results: --help exits 0" test $? -eq 0
check "compare_results: --help explains the manifest" grep -q 'label<TAB>model<TAB>benchmark<TAB>result_json' <<<"$out"

if [ "$fail" -gt 0 ]; then echo "--- last lines of the stage log:"; tail -n 30 "$T/log"; fi
echo "test_compare: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
