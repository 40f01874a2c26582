#!/usr/bin/env python3
"""convert_proposals.py: region proposals from detectron2 or mmdet into the COCO-format JSON
that sample_crops --proposals reads.

Usage: /usr/bin/python3 tools/convert_proposals.py --format detectron2|mmdet
           --proposals FILE.pkl --images INSTANCES.json --out PROPOSALS.json
           [--top N] [--min-score S]

  detectron2  the pickle that detectron2's RPN writes for precomputed proposals
              (tools/train_net.py with MODEL.LOAD_PROPOSALS, or the model zoo's
              coco_2017_*_box_proposals_*.pkl): a dict with "ids" (image ids), "boxes"
              (per image an (N, 4) array in XYXY_ABS) and "objectness_logits" (N), sorted by
              score, and "bbox_mode".
  mmdet       the pickle of mmdet's RPN test (a list, in the order of the dataset's images, of
              (N, 5) arrays [x1, y1, x2, y2, score]).

--images is the COCO instances JSON of the same images (its "images" become the output's,
with id, file_name, width and height); mmdet's list is matched to it in its order, sorted by
image id as COCO's loader does. --top keeps each image's N highest-scoring boxes (CLIPSelf's
sampler then draws 20 per image and epoch). Boxes are written as [x, y, w, h]; those with
w or h <= 0 are dropped. Needs only Python's pickle and numpy.
"""
import argparse
import json
import pickle
import sys

import numpy as np


def load_detectron2(path):
    d = pickle.load(open(path, "rb"))
    if not isinstance(d, dict) or not {"ids", "boxes"} <= set(d):
        raise SystemExit("%s: not a detectron2 proposals file (a dict with ids and boxes)" % path)
    mode = d.get("bbox_mode", 0)
    if int(mode) != 0:
        raise SystemExit("%s: bbox_mode %s; only XYXY_ABS (0) is read" % (path, mode))
    scores = d.get("objectness_logits", [None] * len(d["ids"]))
    return {int(i): (np.asarray(b, np.float64).reshape(-1, 4),
                     None if s is None else np.asarray(s, np.float64).reshape(-1))
            for i, b, s in zip(d["ids"], d["boxes"], scores)}


def load_mmdet(path, image_ids):
    d = pickle.load(open(path, "rb"))
    if not isinstance(d, (list, tuple)):
        raise SystemExit("%s: not an mmdet proposals file (a list of (N, 5) arrays)" % path)
    if len(d) != len(image_ids):
        raise SystemExit("%s: %d entries, but --images has %d images" % (path, len(d),
                                                                        len(image_ids)))
    out = {}
    for i, a in zip(image_ids, d):
        a = np.asarray(a, np.float64)
        if a.ndim != 2 or a.shape[1] not in (4, 5):
            raise SystemExit("%s: image %d: an array of shape %s, not (N, 5)" % (path, i, a.shape))
        out[i] = (a[:, :4], a[:, 4] if a.shape[1] == 5 else None)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--format", required=True, choices=("detectron2", "mmdet"))
    ap.add_argument("--proposals", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--top", type=int, default=0, help="highest-scoring boxes kept per image")
    ap.add_argument("--min-score", type=float, default=None)
    a = ap.parse_args()
    images = sorted(json.load(open(a.images))["images"], key=lambda i: i["id"])
    ids = [i["id"] for i in images]
    props = (load_detectron2(a.proposals) if a.format == "detectron2"
             else load_mmdet(a.proposals, ids))
    unknown = sorted(set(props) - set(ids))
    if unknown:
        raise SystemExit("%s: proposals for image ids not in %s, e.g. %s" %
                         (a.proposals, a.images, unknown[:5]))
    anns, dropped = [], 0
    for iid in ids:
        if iid not in props:
            continue
        boxes, scores = props[iid]
        order = np.argsort(-scores, kind="stable") if scores is not None else np.arange(len(boxes))
        if a.min_score is not None and scores is not None:
            order = order[scores[order] >= a.min_score]
        if a.top > 0:
            order = order[:a.top]
        for k in order:
            x1, y1, x2, y2 = boxes[k]
            w, h = x2 - x1, y2 - y1
            if not (w > 0 and h > 0):
                dropped += 1
                continue
            ann = {"id": len(anns) + 1, "image_id": iid,
                   "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(w), 2),
                            round(float(h), 2)]}
            if scores is not None:
                ann["score"] = round(float(scores[k]), 4)
            anns.append(ann)
    out = {"info": {"description": "region proposals converted from %s (%s) by "
                    "tools/convert_proposals.py" % (a.proposals, a.format)},
           "images": [{k: i[k] for k in ("id", "file_name", "width", "height")} for i in images],
           "annotations": anns}
    json.dump(out, open(a.out, "w"))
    print("convert_proposals: %d images, %d boxes (%d with no area dropped) -> %s" %
          (len(images), len(anns), dropped, a.out))


if __name__ == "__main__":
    sys.exit(main())
