#!/usr/bin/env bash
# test_export.sh: export_model end to end. A model that is not the original (a fresh tiny
# model standing in for a trained student, in the project's HDF5 format) is exported with the
# names of the checkpoint it "came from" (open_clip, Hugging Face, EVA02-CLIP), and the PyTorch
# reference loads the exported file and reproduces what the C model computes (forward --dump),
# in image and dense mode, square and non-square; the text tower is carried over; --verify
# says ok / missing / stale. (Round trips and byte-identity: test_checkpoint.)
set -uo pipefail
BIN=${BUILD:-build}/bin
FIX=${FIXTURES:-build/fixtures}
PY=${PYTHON:-/usr/bin/python3}
T=$(mktemp -d /tmp/test_export.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/testlib.sh"

run "$BIN/init_model" --preset tiny --seed 5 --out "$T/student.h5"
for like in openclip hf; do
  out=$T/student.$like.safetensors
  check "export an HDF5 student like tiny.$like" \
    "$BIN/export_model" --model "$T/student.h5" --like "$FIX/tiny.$like.safetensors" --out "$out"
  check "--verify: ok ($like)" "$BIN/export_model" --model "$T/student.h5" --verify --out "$out"
  for shape in "64 64" "48 80"; do
    set -- $shape
    for mode in image dense; do
      dump=$T/dump.$like.$mode.$1x$2.h5
      run "$BIN/forward" --checkpoint "$T/student.h5" --mode $mode --height $1 --width $2 \
        --images 3 --batch 2 --dump "$dump"
      echo "$out $dump $mode" >>"$T/cases"
    done
  done
  # the text tower came along, byte for byte
  if "$PY" - "$FIX/tiny.$like.safetensors" "$out" >>"$T/log" 2>&1 <<'PYEOF'
import sys
sys.path.insert(0, "tests/reference")
import vit_ref
a, _ = vit_ref.st_read(sys.argv[1])
b, meta = vit_ref.st_read(sys.argv[2])
text = [k for k in a if not k.startswith(("visual.", "vision_model.", "visual_projection."))]
assert text, "no text tensors in the original"
for k in text:
    assert a[k] == b[k], k
assert meta.get("format") == "pt", meta
print("carried", len(text), "tensors")
PYEOF
  then ok; else bad "text tower carried over ($like)"; fi
done

# EVA02: a fresh eva-tiny model exported like the EVA fixture (RoPE tables carried over)
run "$BIN/init_model" --preset eva-tiny --seed 5 --out "$T/eva.h5"
check "export an EVA02 student like an EVA02-CLIP checkpoint" "$BIN/export_model" \
  --model "$T/eva.h5" --like "$FIX/eva_tiny.eva.safetensors" --out "$T/eva.safetensors"
for shape in "64 64" "48 80"; do
  set -- $shape
  for mode in image dense; do
    dump=$T/dump.eva.$mode.$1x$2.h5
    run "$BIN/forward" --checkpoint "$T/eva.h5" --mode $mode --height $1 --width $2 --images 3 \
      --batch 2 --dump "$dump"
    echo "$T/eva.safetensors $dump $mode" >>"$T/cases"
  done
done
# every export against PyTorch, in one process (one torch start-up)
"$PY" tests/reference/export_check.py --cases "$T/cases" >"$T/checks" 2>&1
cat "$T/checks" >>"$T/log"
for naming in openclip hf eva; do
  check "PyTorch reproduces C from the $naming export (image and dense, 64x64 and 48x80)" \
    test "$(grep -c "($naming names, .*) ok$" "$T/checks")" -eq 4
done
check "every export_check case ran and passed" grep -q "^export_check: 12 of 12 cases reproduced" "$T/checks"

# 2 ranks: forward's dump gathers every rank's images
run "$BIN/forward" --checkpoint "$T/student.h5" --mode image --images 5 --batch 2 --dump "$T/d1.h5"
run "${MPI2[@]}" "$BIN/forward" --checkpoint "$T/student.h5" --mode image --images 5 --batch 2 \
  --dump "$T/d2.h5"
check "forward --dump: 1 and 2 ranks give the same outputs" h5diff -d 1e-6 "$T/d1.h5" "$T/d2.h5"

# --verify verdicts and refusals
"$BIN/export_model" --model "$T/student.h5" --verify --out "$T/none.safetensors" >/dev/null 2>&1
check "--verify: missing is 1" test $? -eq 1
run "$BIN/init_model" --preset tiny --seed 6 --out "$T/other.h5"
"$BIN/export_model" --model "$T/other.h5" --verify --out "$T/student.openclip.safetensors" \
  >/dev/null 2>&1
check "--verify: another model is 2" test $? -eq 2
"$BIN/export_model" --model "$T/student.h5" --like "$FIX/b16.openclip.safetensors" \
  --out "$T/wrong.safetensors" >"$T/err" 2>&1
check "a like file of another shape is refused" grep -q "another vision tower" "$T/err"
check "and nothing is written" test ! -e "$T/wrong.safetensors"
"$BIN/export_model" --model "$T/student.h5" --naming eva --out "$T/wrong.safetensors" \
  >"$T/err" 2>&1
check "CLIP in EVA names is refused" grep -q "EVA02" "$T/err"
"$BIN/export_model" --model "$T/student.h5" --naming nonsense --out "$T/wrong.safetensors" \
  >"$T/err" 2>&1
check "an unknown naming is refused" grep -q "unknown naming" "$T/err"
"$BIN/export_model" --model "$T/student.h5" --out "$T/student.st" >"$T/err" 2>&1
check "--out must be named .safetensors" grep -q "must end in .safetensors" "$T/err"
check "--help" "$BIN/export_model" --help

if [ "$fail" -ne 0 ]; then echo "--- log"; tail -40 "$T/log"; fi
echo "test_export: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
