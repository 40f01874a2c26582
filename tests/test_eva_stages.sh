#!/usr/bin/env bash
# test_eva_stages.sh: an EVA02 model through every stage that takes a ViT, on a generated
# dataset: init_model's eva-tiny preset (--verify, the checkpoint's arch attributes), forward in
# both modes at a non-square size, embed_teacher with it as the teacher, train_student (a step
# on 2 ranks x 1 image equal to 1 rank x 2; the k third of the qkv bias, which EVA does not have,
# stays exactly 0; the frozen tensors stay the teacher's; the last block's q and k rows, which
# the dense path never reaches, are untouched, as PyTorch leaves parameters without gradient),
# evaluate on 1 and 2 ranks, and pretrain_teacher --arch eva02 with a resume.
# Ends with "test_eva_stages: N passed, N failed".
set -u
BIN=${BUILD:-build}/bin
PY=${PYTHON:-/usr/bin/python3}
T=$(mktemp -d /tmp/clipself-eva.XXXXXX)
trap 'rm -rf "$T"' EXIT
# shellcheck source=tests/testlib.sh
source "$(dirname "$0")/testlib.sh"

gen_dataset 12 4

# ---- init_model and forward ----
run "$BIN/init_model" --preset eva-tiny --seed 3 --out "$T/eva.h5" || bad "init_model eva-tiny"
vcode() { local want=$1 name=$2; shift 2; "$@" --verify >/dev/null 2>&1; check "$name (exit $want)" test $? -eq "$want"; }
vcode 0 "init_model --verify: the same EVA02 model" "$BIN/init_model" --preset eva-tiny --seed 3 --out "$T/eva.h5"
vcode 2 "init_model --verify: another seed" "$BIN/init_model" --preset eva-tiny --seed 4 --out "$T/eva.h5"
vcode 2 "init_model --verify: the CLIP tiny preset is another model" "$BIN/init_model" --preset tiny --seed 3 --out "$T/eva.h5"
check "init_model: the checkpoint says eva02, swiglu, RoPE grid 16, eps 1e-6" "$PY" -c "
import h5py, sys
a = h5py.File('$T/eva.h5').attrs
sys.exit(0 if a['arch'] == 'eva02' and a['act'] == 'swiglu' and a['rope_grid'] == 16 and abs(a['ln_eps'] - 1e-6) < 1e-12 and a['mlp'] == 170 else 1)"
check "init_model: --act is refused for an EVA02 preset" bash -c \
  "! '$BIN/init_model' --preset eva-tiny --act gelu --out '$T/x.h5' >/dev/null 2>&1"
for mode in image dense; do
  out=$("$BIN/forward" --checkpoint "$T/eva.h5" --mode "$mode" --height 40 --width 72 --images 3 --batch 2 2>&1)
  check "forward: EVA02 $mode mode at 40x72" grep -q "eva02, width 64.*$mode mode at 40x72" <<<"$out"
done

# ---- the CLIPSelf pipeline with the EVA02 model as teacher and student ----
run "$BIN/random_classes" "${D[@]}" --embed 32 || bad random_classes
run "$BIN/sample_crops" "${D[@]}" --epochs 2 --out "$T/crops.h5" || bad sample_crops
run "$BIN/embed_teacher" "${D[@]}" --crops "$T/crops.h5" --teacher "$T/eva.h5" --batch 8 --out "$T/cache.h5"
check "embed_teacher: an EVA02 teacher's cache" test -e "$T/cache.h5"
TR=(--crops "$T/crops.h5" --cache "$T/cache.h5" --model "$T/eva.h5" --det-size 64 --lr 1e-4 --warmup 1)
run "$BIN/train_student" "${D[@]}" "${TR[@]}" --batch 2 --max-steps 1 --run-dir "$T/r1x2"
run "${MPI2[@]}" "$BIN/train_student" "${D[@]}" "${TR[@]}" --batch 1 --max-steps 1 --run-dir "$T/r2x1"
check "train_student: one EVA02 step on 2 ranks x 1 image equals 1 rank x 2 images" "$PY" -c "
import h5py, numpy as np, sys
a = h5py.File('$T/r1x2/step_00000001.h5'); b = h5py.File('$T/r2x1/step_00000001.h5')
w = []
def cmp(n, o):
    if isinstance(o, h5py.Dataset) and o.size: w.append(float(np.abs(o[()] - b[n][()]).max()))
a.visititems(cmp)
sys.exit(0 if len(w) > 10 and max(w) < 1e-6 else 1)"
check "train_student: after a step, k bias 0, frozen tensors and unreached q/k rows unchanged" "$PY" -c "
import h5py, numpy as np, sys
s = h5py.File('$T/r1x2/step_00000001.h5'); t = h5py.File('$T/eva.h5'); C = t.attrs['width']
ok = all(s['visual.blocks.%d.attn.qkv.bias' % l][C:2 * C].max() == 0 == s['visual.blocks.%d.attn.qkv.bias' % l][C:2 * C].min() for l in range(2))
frozen = ['visual.patch_embed.proj.weight', 'visual.patch_embed.proj.bias', 'visual.cls_token', 'visual.pos_embed', 'visual.norm.weight', 'visual.norm.bias', 'visual.head.weight', 'visual.head.bias']
ok &= all(np.array_equal(s[n][()], t[n][()]) for n in frozen)
n = 'visual.blocks.1.attn.qkv.'
ok &= np.array_equal(s[n + 'weight'][:2 * C], t[n + 'weight'][:2 * C]) and np.array_equal(s[n + 'bias'][:2 * C], t[n + 'bias'][:2 * C])
ok &= not np.array_equal(s[n + 'weight'][2 * C:], t[n + 'weight'][2 * C:])
ok &= not np.array_equal(s['visual.blocks.0.attn.qkv.weight'][()], t['visual.blocks.0.attn.qkv.weight'][()])
sys.exit(0 if ok else 1)"
run "$BIN/train_student" "${D[@]}" "${TR[@]}" --batch 2 --epochs 2 --run-dir "$T/full"
check "train_student: an EVA02 student, saved as eva02" "$PY" -c "
import h5py, sys
sys.exit(0 if h5py.File('$T/full/student.h5').attrs['arch'] == 'eva02' else 1)"

# ---- evaluate ----
EV=(--model "$T/full/student.h5" --det-size 64)
run "$BIN/evaluate" "${D[@]}" "${EV[@]}" --out "$T/ev1.json"
run "${MPI2[@]}" "$BIN/evaluate" "${D[@]}" "${EV[@]}" --out "$T/ev2.json"
check "evaluate: an EVA02 student, the same results on 1 and 2 ranks" "$PY" -c "
import json, sys
a, b = (json.load(open(p)) for p in ('$T/ev1.json', '$T/ev2.json'))
a.pop('seconds'); b.pop('seconds')
sys.exit(0 if a == b and a['segments'] > 0 and len(a['metrics']) == 12 else 1)"

# ---- pretrain_teacher --arch eva02, with a resume ----
P=(--datasets "$T/datasets.cfg" --dataset t --annotations "$T/data/panoptic_val.json" --arch eva02
   --width 64 --layers 2 --heads 4 --mlp 170 --embed 32 --batch 8 --epochs 2 --warmup 1 --save-every 1)
outs() { echo --out "$T/$1.h5" --classes-out "$T/$1-classes.h5" --run-dir "$T/$1"; }
run "$BIN/pretrain_teacher" "${P[@]}" $(outs pfull)
check "pretrain_teacher --arch eva02: a teacher saved as eva02 with RoPE grid 8" "$PY" -c "
import h5py, sys
a = h5py.File('$T/pfull.h5').attrs
sys.exit(0 if a['arch'] == 'eva02' and a['rope_grid'] == 8 else 1)"
check "pretrain_teacher: the run signature names the architecture" grep -q "arch=eva02 rope_grid=8" "$T/pfull/run.txt"
run "$BIN/pretrain_teacher" "${P[@]}" --max-steps 2 $(outs pkill)
run "$BIN/pretrain_teacher" "${P[@]}" --resume $(outs pkill)
check "pretrain_teacher: an EVA02 run resumed equals the uninterrupted one" same_h5 "$T/pfull.h5" "$T/pkill.h5"

if [ "$fail" -gt 0 ]; then echo "--- last lines of the stage log:"; tail -n 30 "$T/log"; fi
echo "test_eva_stages: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
