"""coco_ref.py: randomised COCO files written by Python's json encoder, with what they hold.

For tests/test_coco.c: the C streaming reader must read back exactly what Python encoded.
  coco_random_instances.json  images with random unicode / escaped file names, int64 ids
                              (negative, beyond 2^53), random key order, extra keys holding
                              nested junk (some named like the keys we read), annotations
                              with polygons and RLE before or after the images
  coco_random_instances.txt   "id width height hex(utf-8 file_name)" per image, in id order
  coco_random_panoptic.json   images, annotations (some images unannotated), categories
                              with non-contiguous ids in random order
  coco_random_panoptic.txt    "unannotated N", then per annotated image in id order
                              "image id hex(png name) nseg" and one line per segment:
                              "id category_id category_index iscrowd area x y w h"

usage: coco_ref.py --out DIR
"""
import argparse
import json
import os
import random


def random_name(rng):
    pool = ("abcXYZ019_-. ", "\"\\/\t\n\b\f\r\x01\x1f", "\u00e9\u00fc\u00df", "\u65e5\u672c\u8a9e",
            "\U0001F600\U0001F4A9\U00010348", "\u2028\u2029\ufeff")
    parts = []
    for _ in range(rng.randint(1, 12)):
        chars = rng.choice(pool)
        parts.append(rng.choice(chars))
    return "".join(parts) + rng.choice([".jpg", ".png", "/x.jpg"])


def junk(rng, depth=0):
    kind = rng.randrange(6 if depth < 4 else 4)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([rng.randint(-10**18, 10**18), rng.uniform(-1e6, 1e6), 1e-300, 0])
    if kind == 2:
        return random_name(rng)
    if kind == 3:
        return []
    if kind == 4:
        return [junk(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["id", "width", "file_name", "images", "segments_info", "bbox", "categories", "x"]
    return {rng.choice(keys): junk(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def shuffled(rng, d):
    items = list(d.items())
    rng.shuffle(items)
    return dict(items)


def dumps(obj, rng):
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1, 2]))


def instances(rng, out):
    ids = set()
    while len(ids) < 400:
        ids.add(rng.choice([rng.randint(-2**63, 2**63 - 1), rng.randint(0, 600000),
                            2**53 + rng.randint(1, 1000)]))
    images = []
    for i in sorted(ids, key=lambda _: rng.random()):
        im = {"id": i, "file_name": random_name(rng), "width": rng.randint(1, 2**31 - 1),
              "height": rng.randint(1, 5000), "license": rng.randint(1, 8),
              "coco_url": "http://images.cocodataset.org/x.jpg"}
        if rng.random() < 0.3:
            im["extra"] = junk(rng)
        images.append(shuffled(rng, im))
    anns = []
    for k in range(600):
        if rng.random() < 0.1:
            seg = {"counts": [rng.randint(0, 999) for _ in range(rng.randint(1, 30))],
                   "size": [rng.randint(1, 640), rng.randint(1, 640)]}
        else:
            seg = [[round(rng.uniform(0, 640), 2) for _ in range(rng.randint(6, 100))]]
        anns.append(shuffled(rng, {"segmentation": seg, "area": rng.uniform(0, 1e5), "id": k,
                                   "iscrowd": 0, "image_id": rng.choice(list(ids)),
                                   "bbox": [rng.uniform(0, 600) for _ in range(4)],
                                   "category_id": rng.randint(1, 90),
                                   "images": junk(rng)}))
    sections = [("info", {"description": "random", "nested": junk(rng)}),
                ("licenses", [{"id": 1, "name": "x", "url": "y"}]),
                ("annotations", anns), ("images", images),
                ("categories", [{"id": 1, "name": "person", "supercategory": "person"}])]
    rng.shuffle(sections)
    # each section encoded on its own, so raw UTF-8 and \u escapes both occur in one file
    text = "{" + ", ".join(json.dumps(k) + ": " + dumps(v, rng) for k, v in sections) + "}"
    with open(os.path.join(out, "coco_random_instances.json"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(out, "coco_random_instances.txt"), "w") as f:
        for im in sorted(images, key=lambda m: m["id"]):
            f.write(f"{im['id']} {im['width']} {im['height']} "
                    f"{im['file_name'].encode('utf-8').hex()}\n")


def panoptic(rng, out):
    cat_ids = rng.sample(range(1, 1000), 40)
    cats = [shuffled(rng, {"id": c, "name": random_name(rng), "isthing": rng.choice([0, 1]),
                           "supercategory": random_name(rng), "color": [1, 2, 3]})
            for c in cat_ids]
    index = {c: i for i, c in enumerate(sorted(cat_ids))}
    image_ids = rng.sample(range(1, 10**12), 60)
    images = [shuffled(rng, {"id": i, "file_name": random_name(rng),
                             "width": rng.randint(1, 4000), "height": rng.randint(1, 4000)})
              for i in image_ids]
    annotated = rng.sample(image_ids, 45)
    anns = []
    for i in annotated:
        segs = []
        for _ in range(rng.randint(0, 30)):
            segs.append(shuffled(rng, {
                "id": rng.randint(0, 2**32 - 1), "category_id": rng.choice(cat_ids),
                "iscrowd": rng.choice([0, 1]),
                "area": rng.choice([rng.randint(0, 10**6), rng.uniform(0, 1e6)]),
                "bbox": [rng.choice([rng.randint(0, 640), rng.uniform(0, 640)])
                         for _ in range(4)]}))
        anns.append(shuffled(rng, {"image_id": i, "file_name": random_name(rng),
                                   "segments_info": segs}))
    sections = [("annotations", anns), ("images", images), ("categories", cats),
                ("info", junk(rng)), ("licenses", junk(rng))]
    rng.shuffle(sections)
    text = "{" + ", ".join(json.dumps(k) + ": " + dumps(v, rng) for k, v in sections) + "}"
    with open(os.path.join(out, "coco_random_panoptic.json"), "w", encoding="utf-8") as f:
        f.write(text)
    by_image = {a["image_id"]: a for a in anns}
    with open(os.path.join(out, "coco_random_panoptic.txt"), "w") as f:
        f.write(f"unannotated {len(image_ids) - len(annotated)}\n")
        for i in sorted(annotated):
            a = by_image[i]
            f.write(f"image {i} {a['file_name'].encode('utf-8').hex()} "
                    f"{len(a['segments_info'])}\n")
            for s in a["segments_info"]:
                f.write(f"{s['id']} {s['category_id']} {index[s['category_id']]} {s['iscrowd']} "
                        f"{float(s['area'])!r} " + " ".join(repr(float(v)) for v in s["bbox"]) +
                        "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(20240117)
    instances(rng, args.out)
    panoptic(rng, args.out)


if __name__ == "__main__":
    main()
