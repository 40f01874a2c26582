"""crops_ref.py: the reference's box arithmetic for CLIPSelf's region-proposal and grid crops,
re-implemented in Python; writes crops.h5 of expected rows for tests/test_crops.c.

Usage: /usr/bin/python3 tests/reference/crops_ref.py --out DIR

Written from the reference's ProposalDistillDataset.__getitem__ and GridDistillDataset.
_obtain_image_crops (src/training/data.py of CLIPSelf), not from the C code:
  - proposals: shuffle the image's boxes, keep the first max_boxes drawn, drop those whose area
    w*h is outside [min_size^2, max_size^2]; the teacher crops (max(cx - w*0.75, 0),
    max(cy - h*0.75, 0), min(cx + w*0.75, W), min(cy + h*0.75, H)) with cx = x + w*0.5 in Python
    floats; the student's box is torch.tensor([x, y, x + w, y + h]) (float32); with no box
    left, the fallback box [0, 0, W/4, H/4] and the crop (0, 0, W//4, H//4);
  - the student's box on the token grid: boxes *= scale (scale = min(S/h, S/w), the float32
    tensor times a Python float), /= S (normalised), then *= g (_denormalize_boxes), all in
    float32;
  - grid --crop-scale s: box.tolist(), then cx = (x1 + x0)/2, delta = 0.5*s, (max(cx - bw*delta,
    0), ..., min(cy + bh*delta, H)) in Python floats.
The shuffle is this project's seeded draw, not Python's random (it makes every rank count and
resume give the same crops): splitmix64 keyed by (seed, image id, epoch), then Fisher-Yates with
rejection sampling, written here from its description in pipeline/method/crops.h.
Beyond the reference, the sampler also skips a box that lies wholly outside its image (the
teacher's crop of it would be empty); the cases below include such boxes.

  /proposals/<case>   attrs w, h, image_id, epoch, seed, max_boxes, min_size, max_size, S, g;
                      boxes (n, 4) float64 x, y, w, h; rows (k, 4) float32 student boxes;
                      tbox (k, 4) float64 teacher crops; token (k, 4) float32;
                      filtered, outside, fallback (attrs)
  /grid/<case>        attrs w, h, crop_scale; box (k, 4) float32 cells (given), tbox (k, 4)
"""
import argparse
import os

import h5py
import numpy as np
import torch

M64 = (1 << 64) - 1


def mix(state):
    state[0] = (state[0] + 0x9E3779B97F4A7C15) & M64
    z = state[0]
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def draw_key(seed, image_id, epoch):
    s = [seed & M64]
    m = mix(s)
    s[0] ^= m ^ ((image_id * 0xD1B54A32D192ED03) & M64)
    m = mix(s)
    s[0] ^= m ^ (((epoch & 0xFFFFFFFF) * 0x8CB92BA72F3D8DD7) & M64)
    return s


def below(s, n):
    limit = M64 - M64 % n
    while True:
        r = mix(s)
        if r < limit:
            return r % n


def shuffle(n, s):
    idx = list(range(n))
    for i in range(n - 1, 0, -1):
        j = below(s, i + 1)
        idx[i], idx[j] = idx[j], idx[i]
    return idx


def proposals(w, h, image_id, epoch, seed, boxes, max_boxes, min_size, max_size, S, g):
    s = draw_key(seed, image_id, epoch)
    idx = shuffle(len(boxes), s)
    rows, tboxes, st = [], [], dict(filtered=0, outside=0, fallback=0)
    for k in idx[:max_boxes]:
        x, y, bw, bh = boxes[k]
        if bw * bh < min_size ** 2 or bw * bh > max_size ** 2:
            st["filtered"] += 1
            continue
        if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
            st["outside"] += 1
            continue
        cx, cy = x + bw * 0.5, y + bh * 0.5
        tboxes.append([max(cx - bw * 0.75, 0), max(cy - bh * 0.75, 0),
                       min(cx + bw * 0.75, w), min(cy + bh * 0.75, h)])
        rows.append(torch.tensor([x, y, x + bw, y + bh]))
    if not rows:
        rows.append(torch.tensor([0, 0, w / 4, h / 4]))
        tboxes.append([0, 0, w // 4, h // 4])
        st["fallback"] += 1
    student = torch.stack(rows).float()
    scale = min(S / h, S / w)
    token = student.clone()
    token *= scale
    token /= S
    token *= g
    return student.numpy(), np.array(tboxes, dtype=np.float64), token.numpy(), st


def grid_teacher(box, crop_scale, w, h):
    out = []
    for x0, y0, x1, y1 in torch.tensor(box).tolist():
        bw, bh = x1 - x0, y1 - y0
        cx, cy = (x1 + x0) / 2, (y1 + y0) / 2
        d = 0.5 * crop_scale
        out.append([max(cx - bw * d, 0), max(cy - bh * d, 0), min(cx + bw * d, w),
                    min(cy + bh * d, h)])
    return np.array(out, dtype=np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(7)
    path = os.path.join(args.out, "crops.h5")
    with h5py.File(path, "w") as f:
        pg = f.create_group("proposals")
        cases = []
        # many boxes (more than max_boxes), odd sizes, fractional coordinates
        w, h = 333, 217
        xy = rng.uniform(-20, [w, h], size=(45, 2))
        wh = rng.uniform(0.5, 180, size=(45, 2))
        cases.append(("many", w, h, 1234567, 0, np.concatenate([xy, wh], 1), 20, 8, 1024, 64, 8))
        cases.append(("many_epoch3", w, h, 1234567, 3, np.concatenate([xy, wh], 1), 20, 8, 1024,
                      64, 8))
        # fewer than max_boxes, with tiny, huge, outside and edge-clipped boxes
        edge = np.array([[0, 0, 50, 40], [300, 200, 60, 60], [-30, -30, 20, 20],  # outside
                         [340, 10, 30, 30],                                       # outside
                         [10, 10, 2, 3],                                          # tiny
                         [0, 0, 333, 217], [100.25, 50.5, 60.75, 33.125]], float)
        cases.append(("edges", w, h, 987654321987, 1, edge, 20, 8, 160, 224, 14))
        # nothing valid: the reference's fallback (odd sides: W/4 vs W//4)
        cases.append(("fallback", 101, 67, -5, 0, np.array([[1, 1, 3, 3], [200, 5, 10, 10]]),
                      20, 8, 1024, 64, 8))
        cases.append(("empty", 97, 131, 42, 2, np.zeros((0, 4)), 20, 8, 1024, 64, 8))
        # max_boxes smaller than the list; a 64-bit seed
        cases.append(("max5", 640, 480, 2 ** 40 + 3, 5, np.concatenate(
            [rng.uniform(0, 400, size=(12, 2)), rng.uniform(10, 200, size=(12, 2))], 1), 5, 8,
            1024, 1024, 16))
        for (name, w, h, iid, ep, boxes, mb, mn, mx, S, g) in cases:
            seed = 11 if name != "max5" else 2 ** 63 + 12345
            stu, tb, tok, st = proposals(w, h, iid, ep, seed, [list(b) for b in boxes], mb, mn,
                                         mx, S, g)
            c = pg.create_group(name)
            for k, v in dict(w=w, h=h, image_id=iid, epoch=ep, max_boxes=mb, S=S, g=g,
                             **st).items():
                c.attrs[k] = np.int64(v)
            c.attrs["seed"] = np.uint64(seed)
            c.attrs["min_size"] = np.float64(mn)
            c.attrs["max_size"] = np.float64(mx)
            c.create_dataset("boxes", data=np.asarray(boxes, np.float64).reshape(-1, 4))
            c.create_dataset("rows", data=stu)
            c.create_dataset("tbox", data=tb)
            c.create_dataset("token", data=tok)
        gg = f.create_group("grid")
        for name, w, h, s in (("s2", 333, 217, 2.0), ("s1.5", 640, 427, 1.5)):
            cells = torch.linspace(0, 1, 4)
            box = [[float(cells[i]) * w, float(cells[j]) * h, float(cells[i + 1]) * w,
                    float(cells[j + 1]) * h] for j in range(3) for i in range(3)]
            box = torch.tensor(box).float().numpy()
            c = gg.create_group(name)
            c.attrs["w"], c.attrs["h"], c.attrs["crop_scale"] = np.int64(w), np.int64(h), s
            c.create_dataset("box", data=box)
            c.create_dataset("tbox", data=grid_teacher(box, s, w, h))
    print("crops_ref: %d proposal cases, 2 grid cases -> %s" % (len(cases), path))


if __name__ == "__main__":
    main()
