#!/usr/bin/env bash
# test_proposals.sh: region-proposal mode through the stages. make_proposals on a generated
# dataset; sample_crops --proposals equal on 1 and 2 ranks and as 2 shards joined, and every row
# equal to tests/reference/crops_ref.py's re-implementation of the reference's box arithmetic
# (draw, area filter, 1.5x teacher crop, fallback); --verify; embed_teacher on the proposal
# crops (1 and 2 ranks equal; crops the teacher box: the embedding of the enlarged crop);
# train_student one step on them, on 2 ranks x 1 image equal to 1 rank x 2; crop_stats'
# groups against a NumPy recount; tools/convert_proposals.py on detectron2 and mmdet pickles;
# grid --crop-scale; and bad proposals: not JSON, no annotations, an empty list, an unknown image
# id, a negative size, a missing bbox, boxes outside the image (skipped and counted).
# Ends with "test_proposals: N passed, N failed".
set -u
BIN=${BUILD:-build}/bin
PY=${PYTHON:-/usr/bin/python3}
T=$(mktemp -d /tmp/clipself-proposals.XXXXXX)
trap 'rm -rf "$T"' EXIT
# shellcheck source=tests/testlib.sh
source "$(dirname "$0")/testlib.sh"

gen_dataset 12 4
run "$BIN/init_model" --preset tiny --seed 3 --out "$T/teacher.h5" || bad init_model
run "$BIN/make_proposals" "${D[@]}" --out "$T/props.json" --per-object 3 --random 4 || bad make_proposals
check "make_proposals: a COCO file with the train images and no category" "$PY" -c "
import json, sys
p = json.load(open('$T/props.json')); t = json.load(open('$T/data/instances_train.json'))
ok = [i['id'] for i in p['images']] == sorted(i['id'] for i in t['images'])
ok &= len(p['annotations']) >= 4 * len(p['images']) and all('category_id' not in a for a in p['annotations'])
sys.exit(0 if ok else 1)"

# ---- sample_crops --proposals: ranks, shards, the reference's arithmetic ----
P=(--epochs 3 --proposals "$T/props.json" --max-boxes 10 --min-size 6 --max-size 30)
run "$BIN/sample_crops" "${D[@]}" "${P[@]}" --out "$T/pc1.h5" || bad "sample_crops --proposals"
run "${MPI2[@]}" "$BIN/sample_crops" "${D[@]}" "${P[@]}" --out "$T/pc2.h5"
check "sample_crops --proposals: 1 and 2 ranks give identical crops" same_h5 "$T/pc1.h5" "$T/pc2.h5"
for s in 0 1; do run "$BIN/sample_crops" "${D[@]}" "${P[@]}" --shards 2 --shard "$s" --out "$T/pcs.h5"; done
run "$BIN/sample_crops" "${D[@]}" "${P[@]}" --shards 2 --join --out "$T/pcs.h5"
check "sample_crops --proposals: 2 shards joined equal one run" same_h5 "$T/pc1.h5" "$T/pcs.h5"
check "sample_crops --proposals: every row is the reference's (crops_ref.py)" "$PY" -c "
import h5py, json, sys, numpy as np
sys.path.insert(0, 'tests/reference')
import crops_ref
f = h5py.File('$T/pc1.h5'); p = json.load(open('$T/props.json'))
boxes = {}
for a in p['annotations']: boxes.setdefault(a['image_id'], []).append(a['bbox'])
ids, W, H = f['images/id'][()], f['images/width'][()], f['images/height'][()]
first, count = f['index/first'][()], f['index/count'][()]
rows, tb = f['crops/box'][()], f['crops/teacher_box'][()]
tot = dict(filtered=0, outside=0, fallback=0); bad = 0
for i in range(len(ids)):
    for e in range(3):
        s, t, _, st = crops_ref.proposals(int(W[i]), int(H[i]), int(ids[i]), e, 0,
                                          boxes.get(int(ids[i]), []), 10, 6, 30, 64, 8)
        r0, n = first[i, e], count[i, e]
        bad += n != len(s) or not np.array_equal(rows[r0:r0 + n], s) or not np.array_equal(tb[r0:r0 + n], t)
        for k in tot: tot[k] += st[k]
ok = bad == 0 and all(int(f.attrs[k]) == v for k, v in tot.items()) and f.attrs['mode'] == 'proposals'
print(tot, bad)
sys.exit(0 if ok and tot['filtered'] > 0 else 1)"
vcode() { local want=$1 name=$2; shift 2; "$@" >/dev/null 2>&1; local rc=$?; [ "$rc" -eq "$want" ] && ok || bad "$name (exit $rc, want $want)"; }
vcode 0 "sample_crops --proposals --verify: complete" "$BIN/sample_crops" "${D[@]}" "${P[@]}" --out "$T/pc1.h5" --verify
vcode 2 "sample_crops --proposals --verify: another --min-size is stale" "$BIN/sample_crops" "${D[@]}" "${P[@]}" --min-size 4 --out "$T/pc1.h5" --verify
vcode 2 "sample_crops --verify: grid settings on a proposals file are stale" "$BIN/sample_crops" "${D[@]}" --epochs 3 --max-boxes 10 --out "$T/pc1.h5" --verify

# ---- embed_teacher and train_student on proposal crops ----
E=(--crops "$T/pc1.h5" --teacher "$T/teacher.h5" --chunk 2 --batch 8)
run "$BIN/embed_teacher" "${D[@]}" "${E[@]}" --out "$T/cache1.h5" || bad "embed_teacher on proposal crops"
run "${MPI2[@]}" "$BIN/embed_teacher" "${D[@]}" "${E[@]}" --out "$T/cache2.h5"
check "embed_teacher on proposal crops: 1 and 2 ranks give the same embeddings" same_h5 "$T/cache1.h5" "$T/cache2.h5"
# the teacher crops the 1.5x box: a centred box of 0.8 of each side and the whole image have
# the same teacher crop (both clip to the image), so the same embeddings, though the student's
# boxes differ
"$PY" -c "
import json
t = json.load(open('$T/data/instances_train.json'))
for name, f in (('centre', 0.8), ('whole', 1.0)):
    a = [{'image_id': i['id'], 'bbox': [i['width'] * (1 - f) / 2, i['height'] * (1 - f) / 2,
                                         i['width'] * f, i['height'] * f]} for i in t['images']]
    json.dump({'images': t['images'], 'annotations': a}, open('$T/%s.json' % name, 'w'))"
for n in centre whole; do
  run "$BIN/sample_crops" "${D[@]}" --epochs 1 --proposals "$T/$n.json" --out "$T/c_$n.h5"
  run "$BIN/embed_teacher" "${D[@]}" --crops "$T/c_$n.h5" --teacher "$T/teacher.h5" --out "$T/e_$n.h5"
done
check "embed_teacher crops the teacher box: a 0.8 box and the whole image embed the same" \
  h5diff -q "$T/e_centre.h5" "$T/e_whole.h5" /embeddings /embeddings
check "... while the student's boxes differ" bash -c "! h5diff -q '$T/c_centre.h5' '$T/c_whole.h5' /crops/box /crops/box"
TR=(--crops "$T/pc1.h5" --cache "$T/cache1.h5" --init "$T/teacher.h5" --det-size 64 --lr 1e-4 --warmup 1 --max-steps 1)
run "$BIN/train_student" "${D[@]}" "${TR[@]}" --batch 2 --run-dir "$T/r1x2" || bad "train_student on proposal crops"
run "${MPI2[@]}" "$BIN/train_student" "${D[@]}" "${TR[@]}" --batch 1 --run-dir "$T/r2x1"
check "train_student on proposal crops: same loss on 2 ranks x 1 and 1 rank x 2" "$PY" -c "
import sys, math
l = [float(open(p).read().splitlines()[1].split(',')[2]) for p in ('$T/r1x2/train_log.csv', '$T/r2x1/train_log.csv')]
sys.exit(0 if math.isfinite(l[0]) and abs(l[0] - l[1]) < 1e-6 else 1)"

# ---- crop_stats: whole objects, fragments, stuff, against a NumPy recount ----
run "$BIN/random_classes" "${D[@]}" --embed 32 || bad random_classes
out=$("$BIN/crop_stats" --crops "$T/pc1.h5" --cache "$T/cache1.h5" --panoptic "$T/data/panoptic_train.json" \
  --panoptic-png "$T/data/panoptic_train" --classes "$T/data/classes.h5" --out "$T/stats.md" 2>&1)
check "crop_stats: the groups' shares as a NumPy recount" "$PY" - "$T" <<'PYEOF'
import json, sys, h5py, numpy as np
from PIL import Image
T = sys.argv[1]
f = h5py.File(T + "/pc1.h5"); pan = json.load(open(T + "/data/panoptic_train.json"))
cats = {c["id"]: c for c in pan["categories"]}
anns = {a["image_id"]: a for a in pan["annotations"]}
ids, first, count, box = f["images/id"][()], f["index/first"][()], f["index/count"][()], f["crops/box"][()]
n = [0, 0, 0]
for i, iid in enumerate(ids):
    a = anns[int(iid)]
    p = np.asarray(Image.open(T + "/data/panoptic_train/" + a["file_name"]).convert("RGB")).astype(np.int64)
    p = p[..., 0] + 256 * p[..., 1] + 65536 * p[..., 2]
    H, W = p.shape
    segs = a["segments_info"]
    total = [int((p == s["id"]).sum()) for s in segs]
    for e in range(f.attrs["epochs"]):
        for r in range(first[i, e], first[i, e] + count[i, e]):
            b = box[r]
            xs = (np.arange(W) + 0.5 >= b[0]) & (np.arange(W) + 0.5 < b[2])
            ys = (np.arange(H) + 0.5 >= b[1]) & (np.arange(H) + 0.5 < b[3])
            sub = p[ys][:, xs]
            inside = [int((sub == s["id"]).sum()) for s in segs]
            thing = [cats[s["category_id"]]["isthing"] for s in segs]
            if not any(inside): continue
            if any(t and 2 * k >= tot and k for t, k, tot in zip(thing, inside, total)): n[0] += 1
            elif any(t and k for t, k in zip(thing, inside)): n[1] += 1
            else: n[2] += 1
rows = [l for l in open(T + "/stats.md").read().splitlines() if l.startswith("| whole") or l.startswith("| fragment") or l.startswith("| stuff")]
got = [float(r.split("|")[2].strip().rstrip(" %")) for r in rows]
want = [100.0 * k / sum(n) for k in n]
assert len(got) == 3 and all(abs(g - w) < 0.06 for g, w in zip(got, want)), (got, want)
PYEOF
grep -q "| whole object |" <<<"$out" && ok || bad "crop_stats prints its table: $out"

# ---- grid --crop-scale: the teacher crops each tile enlarged and clipped ----
run "$BIN/sample_crops" "${D[@]}" --epochs 1 --crop-scale 2 --out "$T/gs.h5" || bad "sample_crops --crop-scale"
check "sample_crops --crop-scale 2: teacher crops are the tiles doubled about their centres, clipped" "$PY" -c "
import sys, h5py, numpy as np
sys.path.insert(0, 'tests/reference')
import crops_ref
f = h5py.File('$T/gs.h5'); W, H = f['images/width'][()], f['images/height'][()]
img, box, tb = f['crops/image'][()], f['crops/box'][()], f['crops/teacher_box'][()]
ok = all(np.array_equal(crops_ref.grid_teacher(box[r:r + 1], 2.0, int(W[img[r]]), int(H[img[r]]))[0], tb[r]) for r in range(len(box)))
sys.exit(0 if ok and (tb[:, 2] - tb[:, 0] > box[:, 2] - box[:, 0]).any() else 1)"
vcode 2 "sample_crops --verify: another --crop-scale is stale" "$BIN/sample_crops" "${D[@]}" --epochs 1 --crop-scale 1.5 --out "$T/gs.h5" --verify

# ---- tools/convert_proposals.py: detectron2's and mmdet's pickles into the same JSON ----
"$PY" - "$T" <<'PYEOF' || bad "writing the detectron2 and mmdet pickles"
import json, pickle, sys, numpy as np
T = sys.argv[1]
imgs = sorted(json.load(open(T + "/data/instances_train.json"))["images"], key=lambda i: i["id"])
rng = np.random.default_rng(3)
boxes, scores = [], []
for im in imgs:
    xy = rng.uniform(0, [im["width"] * 0.5, im["height"] * 0.5], size=(6, 2))
    wh = rng.uniform(8, 40, size=(6, 2))
    boxes.append(np.concatenate([xy, xy + wh], 1)); scores.append(rng.normal(size=6))
pickle.dump({"ids": [i["id"] for i in imgs], "boxes": boxes, "objectness_logits": scores,
             "bbox_mode": 0}, open(T + "/d2.pkl", "wb"))
pickle.dump([np.concatenate([b, s[:, None]], 1) for b, s in zip(boxes, scores)], open(T + "/mm.pkl", "wb"))
PYEOF
for fmt in detectron2 mmdet; do
  f=$([ $fmt = detectron2 ] && echo d2 || echo mm)
  run "$PY" tools/convert_proposals.py --format $fmt --proposals "$T/$f.pkl" \
    --images "$T/data/instances_train.json" --out "$T/$f.json" --top 4 || bad "convert_proposals $fmt"
done
check "convert_proposals: detectron2 and mmdet give the same JSON, the top 4 boxes as [x, y, w, h]" "$PY" -c "
import json, pickle, sys, numpy as np
a, b = (json.load(open('$T/%s.json' % f)) for f in ('d2', 'mm'))
d = pickle.load(open('$T/d2.pkl', 'rb'))
ok = a['annotations'] == b['annotations'] and a['images'] == b['images'] and len(a['annotations']) == 4 * len(a['images'])
i0 = d['ids'][0]; k = np.argsort(-d['objectness_logits'][0], kind='stable')[0]
x1, y1, x2, y2 = d['boxes'][0][k]
first = [r for r in a['annotations'] if r['image_id'] == i0][0]['bbox']
ok &= np.allclose(first, [x1, y1, x2 - x1, y2 - y1], atol=0.006)
sys.exit(0 if ok else 1)"
run "$BIN/sample_crops" "${D[@]}" --epochs 1 --proposals "$T/d2.json" --out "$T/d2c.h5"
check "convert_proposals: sample_crops reads its output" test -s "$T/d2c.h5"
out=$("$PY" tools/convert_proposals.py --format mmdet --proposals "$T/d2.pkl" --images "$T/data/instances_train.json" --out "$T/x.json" 2>&1)
check "convert_proposals: a detectron2 file given as mmdet is refused" grep -q "not an mmdet proposals file" <<<"$out"

# ---- bad proposals: a named error, or a recorded skip ----
# fails NAME WANT FILE: sample_crops --proposals FILE exits non-zero, names FILE and says WANT
fails() {
  local out
  out=$("$BIN/sample_crops" "${D[@]}" --proposals "$3" --out "$T/bad.h5" 2>&1) && { bad "$1: accepted"; return; }
  grep -qF "$3" <<<"$out" && grep -qF "$2" <<<"$out" && ok || bad "$1: message '$out'"
  [ ! -e "$T/bad.h5" ] && ok || bad "$1: wrote an output"
}
IMG='{"id": 1, "file_name": "000000000001.jpg", "width": 90, "height": 76}'
echo '{"images": [' > "$T/trunc.json"
fails "a truncated file" "premature EOF" "$T/trunc.json"
echo "{\"images\": [$IMG]}" > "$T/noanns.json"
fails "no annotations" 'no "annotations"' "$T/noanns.json"
echo "{\"images\": [$IMG], \"annotations\": []}" > "$T/empty.json"
fails "an empty list" "is empty" "$T/empty.json"
echo "{\"images\": [$IMG], \"annotations\": [{\"image_id\": 7, \"bbox\": [1, 2, 30, 30]}]}" > "$T/unknown.json"
fails "an unknown image id" "image_id 7, which is not in" "$T/unknown.json"
echo "{\"images\": [$IMG], \"annotations\": [{\"image_id\": 1, \"bbox\": [1, 2, -30, 30]}]}" > "$T/neg.json"
fails "a negative size" "negative width or height" "$T/neg.json"
echo "{\"images\": [$IMG], \"annotations\": [{\"image_id\": 1}]}" > "$T/nobbox.json"
fails "a missing bbox" 'missing required field "bbox"' "$T/nobbox.json"
echo "{\"images\": [$IMG], \"annotations\": [{\"image_id\": 1, \"bbox\": [1, 2, \"w\", 30]}]}" > "$T/strbox.json"
fails "a bbox with a string" "a finite number" "$T/strbox.json"
out=$("$BIN/sample_crops" "${D[@]}" --proposals "$T/props.json" --crop-scale 2 --out "$T/bad.h5" 2>&1)
check "--crop-scale with --proposals is refused" grep -q "crop-scale is for grid mode" <<<"$out"
# boxes outside the image are skipped and counted; an image left with nothing gets the fallback
cat > "$T/outside.json" <<EOF
{"images": [$IMG], "annotations": [{"image_id": 1, "bbox": [95, 10, 20, 20]},
 {"image_id": 1, "bbox": [-40, -40, 30, 30]}, {"image_id": 1, "bbox": [10, 80, 20, 20]}]}
EOF
out=$("$BIN/sample_crops" "${D[@]}" --epochs 1 --proposals "$T/outside.json" --out "$T/out.h5" 2>&1)
check "boxes outside the image: skipped, counted, fallback box used" "$PY" -c "
import sys, h5py, numpy as np
f = h5py.File('$T/out.h5')
ok = int(f.attrs['outside']) == 3 and int(f.attrs['fallback']) == 1
ok &= np.array_equal(f['crops/box'][()], np.array([[0, 0, 22.5, 19]], np.float32))
ok &= np.array_equal(f['crops/teacher_box'][()], np.array([[0, 0, 22, 19]], np.float64))
sys.exit(0 if ok else 1)"
grep -q "3 wholly outside their image (skipped); 1 image-epochs with no valid box" <<<"$out" && ok || bad "the skips are reported: $out"

echo "test_proposals: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
