#!/usr/bin/env bash
# test_embed_text.sh: the embed_text stage on a fixture text tower (textvis.safetensors from
# tests/reference/text_ref.py: a text tower with CLIP's vocabulary beside a tiny vision tower):
# the 133 real COCO panoptic categories x OpenAI's 80 templates on 1 and 2 ranks (identical
# files) against text_ref.py's PyTorch ensemble (normalise, average, renormalise); a text file
# of names with '_', '/' and non-ASCII; the synthetic dataset through --dataset, then evaluate
# on the same file as model; the replaced --out; an over-long prompt named on stderr; --verify;
# and bad inputs (no file written). Ends with "test_embed_text: N passed, N failed".
set -u
BUILD=${BUILD:-build}
BIN=$BUILD/bin
PY=${PYTHON:-/usr/bin/python3}
FIX=${FIXTURES:-build/fixtures}
T=$(mktemp -d /tmp/clipself-embedtext.XXXXXX)
trap 'rm -rf "$T"' EXIT
# shellcheck source=tests/testlib.sh
source "$(dirname "$0")/testlib.sh"

MODEL=$FIX/textvis.safetensors
BPE=data/clip/bpe_simple_vocab_16e6.txt.gz
CATS=data/coco/panoptic_coco_categories.json
TPL=data/clip/openai_imagenet_templates_80.txt
if [ ! -e "$MODEL" ]; then
  bad "fixture $MODEL is missing (make test writes it with tests/reference/text_ref.py)"
  echo "test_embed_text: $pass passed, $fail failed"; exit 1
fi
E=(--model "$MODEL" --bpe "$BPE")
# close A.h5 B.npy: the class file's embeddings equal the reference's to 1e-5 (unit vectors)
close() {
  "$PY" -c "
import h5py, numpy as np, sys
a = h5py.File('$1')['embeddings'][()]; b = np.load('$2')
d = np.abs(a - b).max() if a.shape == b.shape else np.inf
print('max abs difference', d); sys.exit(0 if d < 1e-5 else 1)"
}

# ---- COCO panoptic categories x 80 templates: 1 and 2 ranks, against PyTorch ----
run "$BIN/embed_text" "${E[@]}" --categories "$CATS" --templates "$TPL" --out "$T/coco1.h5" || bad "embed_text 1 rank"
run "${MPI2[@]}" "$BIN/embed_text" "${E[@]}" --categories "$CATS" --templates "$TPL" --out "$T/coco2.h5" || bad "embed_text 2 ranks"
check "embed_text: 1 and 2 ranks write the same file" same_h5 "$T/coco1.h5" "$T/coco2.h5"
run "$PY" tests/reference/text_ref.py embed --model "$MODEL" --categories "$CATS" --templates "$TPL" \
  --bpe "$BPE" --out "$T/coco_ref.npy" || bad "text_ref.py embed"
check "embed_text: COCO x 80 templates equal PyTorch's ensemble to 1e-5" close "$T/coco1.h5" "$T/coco_ref.npy"
check "embed_text: ids and names in category-id order, unit rows, source noted" "$PY" -c "
import h5py, json, numpy as np, sys
f = h5py.File('$T/coco1.h5'); cats = sorted(json.load(open('$CATS')), key=lambda c: c['id'])
ok = list(f['category_id'][()]) == [c['id'] for c in cats]
ok &= [n.decode() for n in f['name'][()]] == [c['name'] for c in cats]
ok &= np.allclose(np.linalg.norm(f['embeddings'][()], axis=1), 1, atol=1e-6)
s = f.attrs['source']; s = s.decode() if isinstance(s, bytes) else s
sys.exit(0 if ok and '80 template' in s and '$MODEL' in s else 1)"

# ---- a text file of names, plain prompts, {article} ----
printf '%s\n' "hair_drier" "  Apple/pear.  " "" "Éclair" "wall-other-merged" "ice cream" >"$T/names.txt"
printf '%s\n' "itap of {article} {}." "" "{} in the scene" "a photo of the {}." >"$T/tpl.txt"
for plain in "" --plain-prompts; do
  run "$BIN/embed_text" "${E[@]}" --categories "$T/names.txt" --templates "$T/tpl.txt" $plain --out "$T/names$plain.h5" || bad "embed_text names $plain"
  run "$PY" tests/reference/text_ref.py embed --model "$MODEL" --categories "$T/names.txt" --templates "$T/tpl.txt" $plain \
    --bpe "$BPE" --out "$T/names_ref$plain.npy" || bad "text_ref.py embed names $plain"
  check "embed_text: a name list ('_', '/', non-ASCII, {article}) ${plain:-with \"This is \"} equals PyTorch's" \
    close "$T/names$plain.h5" "$T/names_ref$plain.npy"
done
check "embed_text: a name list gets ids 1..5 in line order, names as written" "$PY" -c "
import h5py, sys
f = h5py.File('$T/names.h5')
sys.exit(0 if list(f['category_id'][()]) == [1, 2, 3, 4, 5] and f['name'][1].decode() == 'Apple/pear.' else 1)"
run "$BIN/embed_text" "${E[@]}" --categories "$T/names.txt" --out "$T/single.h5" || bad "embed_text default template"
run "$PY" tests/reference/text_ref.py embed --model "$MODEL" --categories "$T/names.txt" --bpe "$BPE" --out "$T/single_ref.npy"
check "embed_text: the default template (\"This is a photo of {article} {}.\") equals PyTorch's" close "$T/single.h5" "$T/single_ref.npy"

# ---- an existing --out is replaced; an over-long prompt is named on stderr ----
cp "$T/single.h5" "$T/replace.h5"
long="a photo of $(printf 'a very %.0s' $(seq 1 40)){}."
printf '%s\n' "$long" >"$T/long.txt"
err=$("$BIN/embed_text" "${E[@]}" --categories "$T/names.txt" --templates "$T/long.txt" --out "$T/replace.h5" 2>&1 >/dev/null)
check "embed_text: an over-long prompt is named on stderr as truncated" grep -q "prompt \"This is a photo of a very a very .* truncated to 77" <<<"$err"
check "embed_text: an existing --out is replaced" bash -c "! cmp -s '$T/single.h5' '$T/replace.h5'"
run "$PY" tests/reference/text_ref.py embed --model "$MODEL" --categories "$T/names.txt" --templates "$T/long.txt" --bpe "$BPE" --out "$T/long_ref.npy"
check "embed_text: truncated prompts equal PyTorch's (open_clip's truncation)" close "$T/replace.h5" "$T/long_ref.npy"

# ---- the synthetic dataset: --dataset writes its classes file, evaluate reads it ----
gen_dataset 2 3 96
run "${MPI2[@]}" "$BIN/embed_text" "${E[@]}" --datasets "$T/datasets.cfg" --dataset t || bad "embed_text --dataset"
check "embed_text --dataset: writes the dataset's classes file" test -s "$T/data/classes.h5"
run "$PY" tests/reference/text_ref.py embed --model "$MODEL" --categories "$T/data/panoptic_val.json" --bpe "$BPE" --out "$T/synth_ref.npy"
check "embed_text --dataset: the synthetic categories equal PyTorch's" close "$T/data/classes.h5" "$T/synth_ref.npy"
run "$BIN/evaluate" --datasets "$T/datasets.cfg" --dataset t --model "$MODEL" --det-size 64 --out "$T/ev.json" || bad "evaluate"
check "evaluate: reads embed_text's classes with the same file as vision model" "$PY" -c "
import json, sys
r = json.load(open('$T/ev.json')); sys.exit(0 if r['segments'] > 0 and len(r['metrics']) == 12 else 1)"

# ---- --verify: 0 complete and made from these inputs, 1 missing, 2 otherwise ----
vcode() { local want=$1 name=$2; shift 2; "$@" --verify >/dev/null 2>&1; check "$name (exit $want)" test $? -eq "$want"; }
V=("$BIN/embed_text" "${E[@]}" --categories "$CATS" --templates "$TPL")
vcode 0 "embed_text --verify: the file of these inputs" "${V[@]}" --out "$T/coco1.h5"
vcode 0 "embed_text --verify: made on 2 ranks" "${V[@]}" --out "$T/coco2.h5"
vcode 1 "embed_text --verify: missing" "${V[@]}" --out "$T/none.h5"
vcode 2 "embed_text --verify: other templates" "${V[@]/$TPL/$T/tpl.txt}" --out "$T/coco1.h5"
vcode 2 "embed_text --verify: plain prompts" "${V[@]}" --plain-prompts --out "$T/coco1.h5"
vcode 2 "embed_text --verify: another text tower" "${V[@]/$MODEL/$FIX/text_tiny.eva.safetensors}" --out "$T/coco1.h5"
vcode 2 "embed_text --verify: other classes" "$BIN/embed_text" "${E[@]}" --categories "$T/names.txt" --templates "$TPL" --out "$T/coco1.h5"
head -c 3000 "$T/coco1.h5" >"$T/trunc.h5"
vcode 2 "embed_text --verify: a truncated file" "${V[@]}" --out "$T/trunc.h5"
vcode 0 "embed_text --verify: --dataset's classes file" "$BIN/embed_text" "${E[@]}" --datasets "$T/datasets.cfg" --dataset t

# ---- bad inputs: a clear error naming the file, non-zero exit, nothing written ----
# fails NAME NEEDLE ARGS...: embed_text exits non-zero, says NEEDLE, and writes no $T/bad.h5
fails() {
  local name=$1 needle=$2; shift 2
  local out; out=$("$BIN/embed_text" "$@" --out "$T/bad.h5" 2>&1); local rc=$?
  if [ "$rc" -ne 0 ] && grep -qF -- "$needle" <<<"$out" && [ ! -e "$T/bad.h5" ]; then ok; else bad "$name (exit $rc): $out"; fi
  ls "$T" | grep -q '^bad\.h5\.tmp' && bad "$name: a temporary file was left"
}
echo '[{"id": 1, "name": "cat"}, {"id": 2' >"$T/broken.json"
echo '[]' >"$T/empty.json"
printf '\n  \n' >"$T/empty.txt"
printf '%s\n' "a photo of a {}." "no placeholder here" >"$T/noslot.txt"
fails "a missing model" "$T/none.safetensors" --model "$T/none.safetensors" --bpe "$BPE" --categories "$CATS"
fails "a vision-only model" "has no text tower" --model "$FIX/text_bad_none.safetensors" --bpe "$BPE" --categories "$CATS"
fails "a truncated model" "truncated" --model "$FIX/text_bad_truncated.safetensors" --bpe "$BPE" --categories "$CATS"
fails "a tower without CLIP's vocabulary" "vocabulary has 1000" --model "$FIX/text_tiny.openclip.safetensors" --bpe "$BPE" --categories "$CATS"
fails "malformed JSON" "$T/broken.json" "${E[@]}" --categories "$T/broken.json"
fails "an empty JSON list" "$T/empty.json" "${E[@]}" --categories "$T/empty.json"
fails "an empty name list" "$T/empty.txt" "${E[@]}" --categories "$T/empty.txt"
fails "a missing name list" "$T/none.txt" "${E[@]}" --categories "$T/none.txt"
fails "a template without {}" "$T/noslot.txt, line 2" "${E[@]}" --categories "$CATS" --templates "$T/noslot.txt"
fails "a missing merges file" "$T/none.gz" --model "$MODEL" --bpe "$T/none.gz" --categories "$CATS"
fails "neither --categories nor --dataset" "--categories or --dataset" "${E[@]}"
printf 'bad \xff name\n' >"$T/utf8.txt"
fails "a name that is not UTF-8" "not valid UTF-8" "${E[@]}" --categories "$T/utf8.txt"

# the stage finds the repository's copy of the merges (data/clip/, whose digests test_data.sh
# checks against data/README.md) without --bpe
run "$BIN/embed_text" --model "$MODEL" --categories "$CATS" --templates data/clip/openai_imagenet_templates_80.txt \
  --out "$T/coco_default_bpe.h5" || bad "embed_text without --bpe"
check "without --bpe: the same embeddings" h5diff -d 0 "$T/coco1.h5" "$T/coco_default_bpe.h5" /embeddings /embeddings

echo "test_embed_text: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
