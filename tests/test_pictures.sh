#!/usr/bin/env bash
# test_pictures.sh: evaluate --pictures (results/picture.h) on a generated dataset. On 2 ranks
# with --pictures-vs and --pictures-max 3: exactly 3 PNGs and legend.txt, each PNG one row of
# 4 panels of the displayed size with white gaps; panel 1 is the image resized (PIL bicubic),
# panel 2 the ground truth in the legend's colours with darker boundaries (every pixel), panels
# 3 and 4 the class maps of the vs model and of the model, checked token by token against an
# independent PyTorch dense map (tests/reference/vit_ref.py); the zero-shot segmentation's
# tallies and mIoU against a NumPy re-implementation on that dense map; the results JSON equals
# the one of a run without --pictures. On 1 rank without --pictures-vs: 3 panels, every image (default
# --pictures-max 6 > 4 images), the same panels as the 2-rank run. Bad options fail.
# Ends with "test_pictures: N passed, N failed".
set -u
BIN=${BUILD:-build}/bin
PY=${PYTHON:-/usr/bin/python3}
T=$(mktemp -d /tmp/clipself-pictures.XXXXXX)
trap 'rm -rf "$T"' EXIT
# shellcheck source=tests/testlib.sh
source "$(dirname "$0")/testlib.sh"
REF=$(cd "$(dirname "$0")/reference" && pwd)

gen_dataset 2 4
run "$BIN/init_model" --preset tiny --seed 3 --out "$T/model.h5" || bad init_model
run "$BIN/init_model" --preset tiny --seed 4 --out "$T/vs.h5" || bad init_model
run "$BIN/random_classes" "${D[@]}" --embed 32 || bad random_classes

EV=("$BIN/evaluate" "${D[@]}" --model "$T/model.h5" --det-size 96)
run "${MPI2[@]}" "${EV[@]}" --out "$T/plain.json" || bad "evaluate without --pictures"
run "${MPI2[@]}" "${EV[@]}" --out "$T/pics.json" --pictures "$T/pics" --pictures-vs "$T/vs.h5" \
  --pictures-max 3 || bad "evaluate --pictures --pictures-vs on 2 ranks"
run "${EV[@]}" --out "$T/pics1.json" --pictures "$T/p1/sub" || bad "evaluate --pictures on 1 rank"

# One Python run (torch is slow to import) makes every check below and prints one line per
# check: "PASS name" or "FAIL name: reason".
"$PY" - "$T" "$REF" >"$T/py.out" 2>&1 <<'PYEOF'
import json, os, sys, traceback
import h5py, numpy as np
from PIL import Image
T, REF = sys.argv[1:3]
sys.path.insert(0, REF)
import torch
import torchvision.transforms.functional as TF
from vit_ref import VisionTransformer
from image_ref import resize_longest, MEAN, STD
torch.set_num_threads(2)
S, GAP, DET = 256, 4, 96

def check(name, fn):
    try:
        fn()
        print("PASS", name)
    except Exception as e:
        print("FAIL %s: %s" % (name, e))
        traceback.print_exc(file=sys.stdout)

pan = json.load(open(T + "/data/panoptic_val.json"))
cats = sorted(pan["categories"], key=lambda c: c["id"])
cat_index = {c["id"]: k for k, c in enumerate(cats)}
images = sorted(pan["images"], key=lambda i: i["id"])
anns = {a["image_id"]: a for a in pan["annotations"]}
legend = [l.rstrip("\n").split(" ", 3) for l in open(T + "/pics/legend.txt")]
palette = np.array([[int(v) for v in l[:3]] for l in legend[:-1]], np.int64)  # (K, 3)

def legend_ok():
    assert len(legend) == len(cats) + 1, len(legend)
    assert [l[3] for l in legend[:-1]] == [c["name"] for c in cats]
    assert legend[-1] == ["0", "0", "0", "unlabelled"], legend[-1]
    assert len({tuple(c) for c in palette}) == len(cats), "colours repeat"
    assert not (palette == 0).all(1).any(), "a class is black"
    assert open(T + "/pics/legend.txt").read() == open(T + "/p1/sub/legend.txt").read()
check("legend.txt: one 'r g b name' line per class in class order, distinct, then unlabelled",
      legend_ok)

def files_ok():
    want = {"%d.png" % im["id"] for im in images[:3]} | {"legend.txt"}
    assert set(os.listdir(T + "/pics")) == want, sorted(os.listdir(T + "/pics"))
    want1 = {"%d.png" % im["id"] for im in images} | {"legend.txt"}
    assert set(os.listdir(T + "/p1/sub")) == want1, sorted(os.listdir(T + "/p1/sub"))
check("the first --pictures-max images get a PNG, nothing else is left (2 and 1 ranks)", files_ok)

def load_model(path):
    f = h5py.File(path, "r")
    a = {k: f.attrs[k] for k in f.attrs}
    act = a["act"].decode() if isinstance(a["act"], bytes) else str(a["act"])
    m = VisionTransformer(width=int(a["width"]), layers=int(a["layers"]), heads=int(a["heads"]),
                          mlp=int(a["mlp"]), embed=int(a["embed"]), patch=int(a["patch"]),
                          grid=int(a["grid"]), act=act, ln_eps=float(a["ln_eps"]))
    sd = {k: torch.from_numpy(f["visual." + k][()]) for k in m.state_dict()}
    m.load_state_dict(sd)
    return m.eval()

models = {"model": load_model(T + "/model.h5"), "vs": load_model(T + "/vs.h5")}
cf = h5py.File(T + "/data/classes.h5", "r")
assert list(cf["category_id"][()]) == [c["id"] for c in cats]
emb = torch.from_numpy(cf["embeddings"][()])
emb = emb / emb.norm(dim=1, keepdim=True)  # (K, E)

def panels(path, n):
    a = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)  # (ph, width, 3)
    ph, width = a.shape[:2]
    pw = (width - (n - 1) * GAP) // n
    assert n * pw + (n - 1) * GAP == width, width
    for g in range(n - 1):
        gap = a[:, (g + 1) * pw + g * GAP:(g + 1) * (pw + GAP)]
        assert (gap == 255).all(), "gap %d is not white" % g
    return [a[:, p * (pw + GAP):p * (pw + GAP) + pw] for p in range(n)]

stats = {"tokens": 0, "differ": 0, "classes": set()}
for im in images[:3]:
    name = "%d.png" % im["id"]
    W, H = im["width"], im["height"]
    M = max(W, H)
    pw, ph = (2 * W * S + M) // (2 * M), (2 * H * S + M) // (2 * M)
    rgb = Image.open(T + "/data/images/" + im["file_name"]).convert("RGB")
    def shape_ok():
        a = Image.open(T + "/pics/" + name)
        assert a.mode == "RGB" and a.size == (4 * pw + 3 * GAP, ph), (a.mode, a.size, pw, ph)
        panels(T + "/pics/" + name, 4)
    check(name + ": 4 panels of the displayed size, white gaps", shape_ok)
    try:
        P = panels(T + "/pics/" + name, 4)
    except Exception:
        continue
    def image_ok():
        want = np.asarray(rgb.resize((pw, ph), Image.BICUBIC)).astype(np.int64)
        d = np.abs(P[0] - want).mean()
        assert d < 1.0, "mean abs diff %.3f" % d
    check(name + ": panel 1 is the image resized", image_ok)
    def truth_ok():
        ids = np.asarray(Image.open(T + "/data/panoptic_val/" + anns[im["id"]]["file_name"])
                         .convert("RGB")).astype(np.int64)
        ids = ids[..., 0] + 256 * ids[..., 1] + 65536 * ids[..., 2]  # (H, W)
        sy = (2 * np.arange(ph) + 1) * H // (2 * ph)
        sx = (2 * np.arange(pw) + 1) * W // (2 * pw)
        pid = ids[sy][:, sx]  # (ph, pw)
        cls = {s["id"]: cat_index[s["category_id"]] for s in anns[im["id"]]["segments_info"]}
        want = np.zeros((ph, pw, 3), np.int64)
        for sid in np.unique(pid):
            if sid in cls:
                want[pid == sid] = palette[cls[sid]]
        edge = np.zeros((ph, pw), bool)
        edge[:, :-1] |= pid[:, 1:] != pid[:, :-1]
        edge[:-1] |= pid[1:] != pid[:-1]
        want[edge] //= 2
        assert edge.any() and (~edge).any()
        bad = (P[1] != want).any(2).mean()
        assert bad == 0, "%.4f of the pixels differ" % bad
    check(name + ": panel 2 is the ground truth in the legend's colours, boundaries darker",
          truth_ok)
    # the reference class maps: the evaluation's full-image input, v2 dense map, argmax
    x = TF.normalize(TF.to_tensor(resize_longest(rgb, DET)), MEAN, STD)[None]
    scale = DET / float(M)
    rw, rh = round(W * scale), round(H * scale)
    for panel, key in ((2, "vs"), (3, "model")):
        def map_ok():
            m = models[key]
            with torch.no_grad():
                dense, gh, gw = m.forward_dense(x)
            cls = (dense[0] @ emb.T).argmax(1).numpy().reshape(gh, gw)  # (g, g)
            Pp = m.patch
            gy = (2 * np.arange(ph) + 1) * rh // (2 * ph * Pp)
            gx = (2 * np.arange(pw) + 1) * rw // (2 * pw * Pp)
            tok = gy[:, None] * gw + gx[None, :]  # (ph, pw) token under each panel pixel
            got = P[panel]
            # the panel's colour of each shown token: one colour per token, from the palette
            diff = 0
            shown = np.unique(tok)
            for t in shown:
                cols = np.unique(got[tok == t], axis=0)
                assert len(cols) == 1, "token %d shows %d colours" % (t, len(cols))
                k = np.where((palette == cols[0]).all(1))[0]
                assert len(k) == 1, "token %d: colour %s is not a class's" % (t, cols[0])
                stats["classes"].add(int(k[0]))
                diff += int(k[0] != cls.flat[t])
            assert set(shown) == {r * gw + c for r in range(-(-rh // Pp))
                                  for c in range(-(-rw // Pp))}, "not the tokens under the image"
            stats["tokens"] += len(shown)
            stats["differ"] += diff
            assert diff <= max(1, len(shown) // 50), "%d of %d tokens differ" % (diff, len(shown))
        check("%s: panel %d is the %s class map, as PyTorch's (ties aside)" % (name, panel + 1, key),
              map_ok)

def variety():
    assert len(stats["classes"]) >= 4, stats["classes"]
    assert stats["tokens"] > 100, stats
    print("class maps: %d tokens, %d differ, %d classes" % (stats["tokens"], stats["differ"],
                                                            len(stats["classes"])))
check("the class maps are not trivial (several classes)", variety)

def same_panels():
    for im in images[:3]:
        a = panels(T + "/pics/%d.png" % im["id"], 4)
        b = panels(T + "/p1/sub/%d.png" % im["id"], 3)
        for i, j in ((0, 0), (1, 1), (3, 2)):
            assert (a[i] == b[j]).all(), "image %d: panel %d" % (im["id"], i + 1)
check("1 rank without --pictures-vs: 3 panels, the same as the 2-rank run", same_panels)

# zero-shot segmentation: the dense map's class logits (PyTorch) upsampled bilinearly to the
# pixels (NumPy, the rule of regioneval.h), argmax, against the panoptic truth read as semantic
# labels (void and crowd not scored); per-class tallies and mIoU as evaluate's (near ties
# aside: the two dense maps differ by float rounding)
def segmentation_ok():
    res = json.load(open(T + "/plain.json"))
    K = len(cats)
    inter, gt, pred = np.zeros(K, np.int64), np.zeros(K, np.int64), np.zeros(K, np.int64)
    def axis(n_out, step, n_in):
        src = np.maximum((np.arange(n_out) + 0.5) * step - 0.5, 0.0)
        a = np.minimum(src.astype(np.int64), n_in - 1)
        b = np.minimum(a + 1, n_in - 1)
        w = np.where(b == a, 0.0, src - a)
        return a, b, w
    for im in images:
        W, H = im["width"], im["height"]
        rgb = Image.open(T + "/data/images/" + im["file_name"]).convert("RGB")
        x = TF.normalize(TF.to_tensor(resize_longest(rgb, DET)), MEAN, STD)[None]
        with torch.no_grad():
            dense, gh, gw = models["model"].forward_dense(x)
        L = (dense[0] @ emb.T).double().numpy().reshape(gh, gw, K)
        step = DET / max(W, H) / models["model"].patch
        ya, yb, wy = axis(H, step, gh)
        xa, xb, wx = axis(W, step, gw)
        top = L[ya][:, xa] + wx[None, :, None] * (L[ya][:, xb] - L[ya][:, xa])
        bot = L[yb][:, xa] + wx[None, :, None] * (L[yb][:, xb] - L[yb][:, xa])
        cls = (top + wy[:, None, None] * (bot - top)).argmax(2)  # (H, W)
        ids = np.asarray(Image.open(T + "/data/panoptic_val/" + anns[im["id"]]["file_name"])
                         .convert("RGB")).astype(np.int64)
        ids = ids[..., 0] + 256 * ids[..., 1] + 65536 * ids[..., 2]
        truth = np.full((H, W), -1, np.int64)
        for sg in anns[im["id"]]["segments_info"]:
            if not sg.get("iscrowd", 0):
                truth[ids == sg["id"]] = cat_index[sg["category_id"]]
        v = truth >= 0
        gt += np.bincount(truth[v], minlength=K)
        pred += np.bincount(cls[v], minlength=K)
        inter += np.bincount(truth[v][cls[v] == truth[v]], minlength=K)
    pc = res["per_class"]
    got = np.array([[c["seg_inter"], c["seg_gt"], c["seg_pred"]] for c in pc], np.int64)
    assert (got[:, 1] == gt).all(), "truth pixels differ: %s vs %s" % (got[:, 1], gt)
    npix = gt.sum()
    assert npix > 1000, npix
    dif = np.abs(got[:, 2] - pred).sum() + np.abs(got[:, 0] - inter).sum()
    assert dif <= 0.005 * npix, "%d of %d pixels' tallies differ" % (dif, npix)
    uni = gt + pred - inter
    iou = np.where(uni > 0, inter / np.maximum(uni, 1), np.nan)
    thing = np.array([c["isthing"] for c in cats], bool)
    want = [np.nanmean(iou), np.nanmean(iou[thing]), np.nanmean(iou[~thing])]
    seg = res["segmentation"]
    for k, w in zip(("miou", "miou_thing", "miou_stuff"), want):
        assert abs(seg[k] - w) < 0.01, "%s %.4f, NumPy %.4f" % (k, seg[k], w)
    print("segmentation: %d pixels, tallies differ at %d; mIoU %.4f (NumPy %.4f)" %
          (npix, dif, seg["miou"], want[0]))
check("zero-shot segmentation: tallies and mIoU as a NumPy re-implementation", segmentation_ok)

def results_ok():
    r = [json.load(open(T + p)) for p in ("/plain.json", "/pics.json", "/pics1.json")]
    for x in r:
        x.pop("seconds")
    assert r[0] == r[1], "2 ranks: results differ with --pictures"
    assert r[0] == r[2], "1 rank: results differ"
check("the results JSON is the same with and without --pictures (but seconds)", results_ok)
PYEOF
pyrc=$?
while read -r verdict rest; do
  case $verdict in
    PASS) ok ;;
    FAIL) bad "$rest" ;;
  esac
done <"$T/py.out"
if [ "$pyrc" -ne 0 ] || ! grep -q '^PASS\|^FAIL' "$T/py.out"; then
  bad "the Python checks did not run to the end"
fi
if [ "$fail" -gt 0 ]; then echo "--- Python output:"; cat "$T/py.out"; fi

# ---- bad options ----
out=$("$BIN/evaluate" "${D[@]}" --model "$T/model.h5" --out "$T/x.json" --pictures-vs "$T/vs.h5" 2>&1)
check "--pictures-vs without --pictures fails" grep -q 'pictures-vs needs --pictures' <<<"$out"
touch "$T/afile"
out=$("$BIN/evaluate" "${D[@]}" --model "$T/model.h5" --det-size 96 --out "$T/x.json" \
  --pictures "$T/afile" 2>&1)
check "--pictures on a file fails naming it" grep -q "afile exists and is not a directory" <<<"$out"
check "  and writes no results" test ! -e "$T/x.json"
out=$("$BIN/evaluate" "${D[@]}" --model "$T/model.h5" --out "$T/x.json" --pictures "$T/p3" \
  --pictures-max 0 2>&1)
check "--pictures-max 0 is refused" grep -q 'pictures-max must be positive' <<<"$out"
out=$("$BIN/evaluate" --help 2>&1)
check "--help names the panels" grep -q 'image | ground truth | \[--pictures-vs class map |\]' <<<"$out"

if [ "$fail" -gt 0 ]; then echo "--- last lines of the stage log:"; tail -n 30 "$T/log"; fi
echo "test_pictures: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
