#!/usr/bin/env bash
# test_open_vocab.sh: issue 6's whole path, through scripts/run-job on a generated dataset. The
# teacher is an EVA02-CLIP checkpoint with a text tower, in EVA-CLIP's names (the eva_tiny
# vision tower of eva_ref.py and a text tower of text_ref.py under text.*), given as TEACHER and
# TEXT_MODEL, so:
#   - embed_text makes the dataset's class embeddings from its text tower, in the teacher stage;
#   - sample_crops, embed_teacher, train_student (EVA02, CLIPSelf freezing), evaluate of the
#     teacher and the student, the comparison;
#   - the student is exported to RUN_DIR/student.safetensors in EVA names, the text tower and
#     RoPE tables carried over byte for byte; PyTorch's EVA02 reference loads the exported file
#     and reproduces the C student; embed_text on the exported student gives the same class
#     embeddings (the text tower was never trained);
#   - a second run finds every stage complete.
# Ends with "test_open_vocab: N passed, N failed".
set -u
BUILD=${BUILD:-build}
BIN=$BUILD/bin
FIX=${FIXTURES:-build/fixtures}
PY=${PYTHON:-/usr/bin/python3}
T=$(mktemp -d /tmp/clipself-openvocab.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
# shellcheck source=tests/testlib.sh
source "$(dirname "$0")/testlib.sh"

# EVA02-CLIP tiny: eva_tiny's vision tower (embed 32) + textvis's text tower (embed 32) as text.*
"$PY" - "$FIX/eva_tiny.eva.safetensors" "$FIX/textvis.safetensors" "$T/eva_clip.safetensors" \
  >>"$T/log" 2>&1 <<'PYEOF' || bad "the EVA02-CLIP teacher file"
import sys
sys.path.insert(0, "tests/reference")
import vit_ref
vis, vmeta = vit_ref.st_read(sys.argv[1])
txt, tmeta = vit_ref.st_read(sys.argv[2])
ents = [(k, *v) for k, v in vis.items()]
ents += [(k if k == "logit_scale" else "text." + k, *v) for k, v in txt.items()
         if not k.startswith("visual.")]
meta = dict(vmeta)
meta.update({k: v for k, v in tmeta.items() if k.startswith("clipself.text_")})
vit_ref.st_write(sys.argv[3], ents, meta)
PYEOF

dataset_entry ov >"$T/datasets.cfg"
cat >"$T/ov.job" <<JOB
DATASET=ov
DATASETS=$T/datasets.cfg
RUN_DIR=$T/run
DATA_DIR=$T/data
TRAIN_IMAGES=12
VAL_IMAGES=6
TEACHER=$T/eva_clip.safetensors
TEXT_MODEL=$T/eva_clip.safetensors
TEMPLATES=data/clip/openai_imagenet_templates_7_selected.txt
EPOCHS=2
BATCH=2
LR=1e-4
WARMUP=2
DET_SIZE=64
SAVE_EVERY=4
EVAL_BENCHMARKS=ov
RANKS=2
THREADS_PER_RANK=1
JOB
R=$T/run
scripts/run-job "$T/ov.job" "$BUILD" >>"$T/log" 2>&1
check "run-job with an EVA02-CLIP teacher and its text tower exits 0" test $? -eq 0
check "embed_text ran in the teacher stage" grep -q "^=== embed_text" "$T/log"
check "the classes file was made by embed_text from the teacher's text tower" "$PY" -c "
import h5py, sys
a = h5py.File('$T/data/classes.h5').attrs
s = a['source']; s = s.decode() if isinstance(s, bytes) else s
sys.exit(0 if 'eva_clip.safetensors' in s and h5py.File('$T/data/classes.h5')['embeddings'].shape[1] == 32 else 1)"
check "the student is EVA02" "$PY" -c "
import h5py, sys; sys.exit(0 if h5py.File('$R/train/student.h5').attrs['arch'] == 'eva02' else 1)"
for who in teacher epoch_1 student; do
  check "evaluate: $who on ov" "$PY" -c "
import json, sys
r = json.load(open('$R/eval/$who@ov.json'))
sys.exit(0 if r['segments'] > 0 and len(r['metrics']) == 12 else 1)"
done
check "the comparison lists the three models" grep -q "student" "$R/comparison.md"

# the export: EVA names, text tower and RoPE tables byte for byte, PyTorch reproduces C
check "student.safetensors loads back to the student (export_model --verify)" \
  "$BIN/export_model" --model "$R/train/student.h5" --out "$R/student.safetensors" --verify
check "the export carries the teacher's text tower and RoPE tables byte for byte" "$PY" - \
  "$T/eva_clip.safetensors" "$R/student.safetensors" <<'PYEOF'
import sys
sys.path.insert(0, "tests/reference")
import vit_ref
a, _ = vit_ref.st_read(sys.argv[1])
b, _ = vit_ref.st_read(sys.argv[2])
kept = [k for k in a if k.startswith("text.") or "rope.freqs_" in k]
assert len(kept) > 20 and all(a[k] == b[k] for k in kept), kept
assert set(a) == set(b), set(a) ^ set(b)
changed = [k for k in a if k.startswith("visual.blocks.") and a[k][2] != b[k][2]]
assert changed, "no trained block tensor differs from the teacher"
PYEOF
for mode in image dense; do
  run "$BIN/forward" --checkpoint "$R/train/student.h5" --mode $mode --height 64 --width 48 \
    --images 2 --dump "$T/dump.h5"
  if "$PY" tests/reference/export_check.py --model "$R/student.safetensors" --dump "$T/dump.h5" \
       --mode $mode >>"$T/log" 2>&1; then ok; else bad "PyTorch reproduces the exported student ($mode)"; fi
done
run "$BIN/embed_text" --model "$R/student.safetensors" --categories "$T/data/panoptic_val.json" \
  --templates data/clip/openai_imagenet_templates_7_selected.txt --out "$T/classes_student.h5"
check "embed_text on the exported student: the teacher's class embeddings" \
  h5diff -d 0 "$T/data/classes.h5" "$T/classes_student.h5" /embeddings /embeddings

# a second run: every stage is complete
scripts/run-job "$T/ov.job" "$BUILD" >"$T/log2" 2>&1
check "a second run exits 0" test $? -eq 0
for s in prepare teacher crops embed train; do
  check "second run: $s complete, skipped" grep -q "^=== $s: complete, skipped" "$T/log2"
done

if [ "$fail" -ne 0 ]; then echo "--- log"; tail -40 "$T/log"; fi
echo "test_open_vocab: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
