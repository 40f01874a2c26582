#!/usr/bin/env bash
# test_bf16.sh: the --bf16 teacher pass through the stages, on a generated dataset and a tiny
# teacher: embed_teacher --bf16 (1 and 2 ranks) against the float32 cache, cosine of every row
# at least the bound of tests/test_bf16.c for the teacher's depth; the teacher_precision
# attribute; the refusals of a mix (an existing cache, resumed chunks, a join of chunks of both
# precisions, --verify, train_student resuming on a cache of the other pass), each naming the
# file; evaluate --bf16 against float32. Ends with "test_bf16.sh: N passed, N failed".
set -u
BIN=${BUILD:-build}/bin
PY=${PYTHON:-/usr/bin/python3}
T=$(mktemp -d /tmp/clipself-bf16.XXXXXX)
trap 'rm -rf "$T"' EXIT
# shellcheck source=tests/testlib.sh
source "$(dirname "$0")/testlib.sh"

gen_dataset 12 6
run "$BIN/init_model" --preset tiny --seed 3 --out "$T/teacher.h5" || bad init_model
run "$BIN/random_classes" "${D[@]}" --embed 32 || bad random_classes
run "$BIN/sample_crops" "${D[@]}" --epochs 2 --out "$T/crops.h5" || bad sample_crops

# ---- embed_teacher --bf16 against float32 ----
E=(--crops "$T/crops.h5" --teacher "$T/teacher.h5" --chunk 2 --batch 8)
run "$BIN/embed_teacher" "${D[@]}" "${E[@]}" --out "$T/c32.h5"
run "$BIN/embed_teacher" "${D[@]}" "${E[@]}" --bf16 --out "$T/c16.h5"
run "${MPI2[@]}" "$BIN/embed_teacher" "${D[@]}" "${E[@]}" --bf16 --out "$T/c16b.h5"
check "embed_teacher --bf16: 1 and 2 ranks give the same embeddings" same_h5 "$T/c16.h5" "$T/c16b.h5"
# the bound of tests/test_bf16.c (cosine_bound): 1 - cos <= (16 L / 3) u^2, u = 2^-8, L = 2
check "embed_teacher --bf16: cosine of every row to float32 >= 1 - (16 L / 3) 2^-16 (L = 2)" "$PY" -c "
import h5py, numpy as np, sys
a = h5py.File('$T/c32.h5')['embeddings'][()].astype(np.float64)
b = h5py.File('$T/c16.h5')['embeddings'][()].astype(np.float64)
c = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
bound = 1 - 16 * 2 / 3 * 2.0 ** -16
print('smallest cosine %.6f over %d rows, bound %.6f' % (c.min(), len(c), bound))
sys.exit(0 if len(c) > 20 and c.min() >= bound and not np.array_equal(a, b) else 1)"
attr() { "$PY" -c "import h5py; v = h5py.File('$1').attrs['teacher_precision']; print(v.decode() if isinstance(v, bytes) else v)"; }
check "teacher_precision: bfloat16 on the --bf16 cache" test "$(attr "$T/c16.h5")" = bfloat16
check "teacher_precision: float32 on the float32 cache" test "$(attr "$T/c32.h5")" = float32

# ---- a mix is refused, naming the file ----
out=$("$BIN/embed_teacher" "${D[@]}" "${E[@]}" --bf16 --out "$T/c32.h5" 2>&1)
check "embed_teacher --bf16 on an existing float32 cache is refused, naming it" \
  grep -q "c32.h5 was computed by a float32 teacher pass, this one is bfloat16" <<<"$out"
"$BIN/embed_teacher" "${D[@]}" "${E[@]}" --bf16 --out "$T/c32.h5" --verify >/dev/null 2>&1
check "embed_teacher --bf16 --verify of a float32 cache: not this one (exit 2)" test $? -eq 2
"$BIN/embed_teacher" "${D[@]}" "${E[@]}" --bf16 --out "$T/c16.h5" --verify >/dev/null 2>&1
check "embed_teacher --bf16 --verify of its own cache (exit 0)" test $? -eq 0
# float32 chunks (not joined), then a --bf16 run resuming them
run "$BIN/embed_teacher" "${D[@]}" "${E[@]}" --no-join --out "$T/cr.h5"
out=$("$BIN/embed_teacher" "${D[@]}" "${E[@]}" --bf16 --out "$T/cr.h5" 2>&1)
check "embed_teacher --bf16 resuming float32 chunks is refused, naming a chunk" \
  grep -q "cr.h5.parts/chunk-000000.h5 was computed by a float32 teacher pass" <<<"$out"
check "and writes no cache" test ! -e "$T/cr.h5"
# shard 0 in float32, shard 1 in bf16: neither join mixes them
run "$BIN/embed_teacher" "${D[@]}" "${E[@]}" --shards 2 --shard 0 --no-join --out "$T/cm.h5"
run "$BIN/embed_teacher" "${D[@]}" "${E[@]}" --shards 2 --shard 1 --no-join --bf16 --out "$T/cm.h5"
out=$("$BIN/embed_teacher" "${D[@]}" "${E[@]}" --shards 2 --join --out "$T/cm.h5" 2>&1)
check "embed_teacher --join of float32 and bf16 chunks is refused, naming a bf16 chunk" \
  grep -q "cm.h5.parts/chunk-000001.h5 was computed by a bfloat16 teacher pass" <<<"$out"
out=$("$BIN/embed_teacher" "${D[@]}" "${E[@]}" --shards 2 --join --bf16 --out "$T/cm.h5" 2>&1)
check "embed_teacher --join --bf16 of the same chunks is refused, naming a float32 chunk" \
  grep -q "cm.h5.parts/chunk-000000.h5 was computed by a float32 teacher pass" <<<"$out"
check "and writes no cache" test ! -e "$T/cm.h5"
# train_student: a run on the float32 cache does not resume on the bf16 one
TR=(--crops "$T/crops.h5" --init "$T/teacher.h5" --det-size 64 --batch 2 --warmup 1 --save-every 1)
run "$BIN/train_student" "${D[@]}" "${TR[@]}" --cache "$T/c32.h5" --max-steps 1 --run-dir "$T/run"
out=$("$BIN/train_student" "${D[@]}" "${TR[@]}" --cache "$T/c16.h5" --max-steps 2 --resume --run-dir "$T/run" 2>&1)
check "train_student: resuming a float32-cache run on a bf16 cache is refused" \
  grep -q "teacher_pass=bfloat16" <<<"$out"
run "$BIN/train_student" "${D[@]}" "${TR[@]}" --cache "$T/c16.h5" --max-steps 1 --run-dir "$T/run16"
check "train_student: trains on a bf16 cache" test -e "$T/run16/step_00000001.h5"

# ---- evaluate --bf16 against float32 ----
EV=(--model "$T/teacher.h5" --det-size 64)
run "$BIN/evaluate" "${D[@]}" "${EV[@]}" --out "$T/ev32.json"
run "$BIN/evaluate" "${D[@]}" "${EV[@]}" --bf16 --out "$T/ev16.json"
# metrics_diff A B: the largest difference, in points (100 x the JSON's fractions), of the
# region metrics and the segmentation mIoU of two results
metrics_diff() { "$PY" -c "
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
pairs = [(a['metrics'][k], b['metrics'][k]) for k in a['metrics']]
pairs += [(a['segmentation'][k], b['segmentation'][k]) for k in a['segmentation']]
assert a['segments'] > 0 and len(pairs) == 15
d = [abs(x - y) * 100 for x, y in pairs if x is not None or y is not None]
print('%.3f' % max(d))" "$1" "$2"; }
d=$(metrics_diff "$T/ev32.json" "$T/ev16.json")
echo "evaluate --bf16: largest difference to float32 ${d:-?} points" >>"$T/log"
check "evaluate --bf16: every metric within 0.5 points of float32 (${d:-?})" \
  "$PY" -c "import sys; sys.exit(0 if '$d' and float('$d') <= 0.5 else 1)"
check "evaluate: the results record their precision (float32, bfloat16)" "$PY" -c "
import json, sys
sys.exit(0 if [json.load(open(p)).get('precision') for p in sys.argv[1:]] == ['float32', 'bfloat16'] else 1)" \
  "$T/ev32.json" "$T/ev16.json"
"$BIN/evaluate" "${D[@]}" "${EV[@]}" --out "$T/ev32.json" --verify >/dev/null 2>&1
check "evaluate --verify: float32 results are this float32 run's (exit 0)" test $? -eq 0
"$BIN/evaluate" "${D[@]}" "${EV[@]}" --bf16 --out "$T/ev32.json" --verify >"$T/verify.txt" 2>&1
check "evaluate --bf16 --verify of float32 results: not this run's (exit 2), naming the precision" \
  test $? -eq 2 -a -n "$(grep precision "$T/verify.txt")"
out=$("$BIN/embed_teacher" --help 2>&1)
check "embed_teacher --help: says what --bf16 does" grep -q "bfloat16" <<<"$out"
out=$("$BIN/evaluate" --help 2>&1)
check "evaluate --help: says what --bf16 does" grep -q "bfloat16" <<<"$out"

if [ "$fail" -gt 0 ]; then echo "--- last lines of the stage log:"; tail -n 30 "$T/log"; fi
echo "test_bf16.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
