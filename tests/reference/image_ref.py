"""image_ref.py: PIL / torchvision references of io/image.h; writes image.h5 and test files.

Usage: /usr/bin/python3 tests/reference/image_ref.py --out DIR [--data DATA]

DATA is the test images' folder (default: tests/data of the repository). The
images are its photos/ and the 8-bit images of jpeg_libjpeg_turbo/, plus JPEG and PNG files
written here into DIR (CMYK, YCCK, progressive 4:2:2, odd-sized 4:2:0; panoptic PNGs).
Every reference is what the CLIPSelf reference code computes: PIL 9.4 on 8-bit images and
torchvision.transforms.functional, as open_clip uses them. Pixel data is uint8, tensors float32;
all datasets are gzip-compressed.

  /                  attrs data (DATA, absolute), jpeg_bad (its jpeg_bad/ folder)
  /decode/<img>      (h, w, 3) uint8: Image.open(path).convert("RGB"); attr path (absolute)
  /resize/<case>     (oh, ow, 3) uint8: decode.resize((ow, oh), Image.BICUBIC); attrs src (<img>),
                     ow, oh
  /crop/<case>       (h, w, 3) uint8: decode.crop(box); attrs src, box (4 float32: the values
                     the C test passes, given to PIL as Python floats)
  /full/<case>       (3, S, S) float32: ResizeLongest(S) (CLIPSelf's student transform: longest
                     side to S, bicubic, pad right/bottom with 0), to_tensor, normalize;
                     attrs src, S (224 for all; also 1024 for a few, and the longest side
                     itself, i.e. scale 1, for the small ones)
  /crop_tf/<case>    (3, h, w) float32: crop(box), then open_clip ResizeMaxSize(S, fill=0),
                     to_tensor, normalize; (h, w) = (S, S) except when the crop's longest side
                     is already S (ResizeMaxSize then neither resizes nor pads); attrs src, box,
                     S (224 for all, 336 for a few)
  /png/<name>        (h, w) uint32 ids R + 256 G + 65536 B of np.array(Image.open(p)
                     .convert("RGB")), as panopticapi's rgb2id; attr path. <name> is rgb, rgba,
                     palette4 (4-bit palette), gray, rgb16 (16-bit RGB, written by hand)
  /png_bad           attr paths: a truncated PNG and a file that is not a PNG (both must fail)
"""
import argparse
import glob
import os
import struct
import zlib

import h5py
import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
GZ = dict(compression="gzip", compression_opts=4, shuffle=True)


def resize_longest(img, max_size, fill=0):
    """CLIPSelf's ResizeLongest on a PIL image: longest side to max_size, pad right/bottom."""
    width, height = img.size
    scale = max_size / float(max(height, width))
    new_height, new_width = round(height * scale), round(width * scale)
    img = F.resize(img, [new_height, new_width], InterpolationMode.BICUBIC)
    pad_h, pad_w = max_size - new_height, max_size - new_width
    return F.pad(img, padding=[0, 0, pad_w, pad_h], fill=fill)


def resize_max_size(img, max_size, fill=0):
    """open_clip's ResizeMaxSize(max_size, fill) on a PIL image (padding centred)."""
    width, height = img.size
    scale = max_size / float(max(height, width))
    if scale != 1.0:
        new_size = tuple(round(dim * scale) for dim in (height, width))
        img = F.resize(img, new_size, InterpolationMode.BICUBIC)
        pad_h = max_size - new_size[0]
        pad_w = max_size - new_size[1]
        img = F.pad(img, padding=[pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2],
                    fill=fill)
    return img


def to_normalized(img):
    return F.normalize(F.to_tensor(img), MEAN, STD).numpy()


def f32_box(box):
    """The box as float32 values (what the C test holds), and as the Python floats PIL sees."""
    b = np.asarray(box, dtype=np.float32)
    return b, tuple(float(v) for v in b)


def write_generated_jpegs(out, photo):
    """JPEG variants PIL writes itself, from one photo: CMYK, YCCK (the CMYK file with its Adobe
    transform flag patched to 2, so libjpeg reads the components as YCCK), progressive 4:2:2,
    and an odd-sized 4:2:0 crop."""
    paths = {}
    # PIL's RGB -> CMYK leaves K at 0; K must vary to test the conversion back
    rgb = np.asarray(photo)
    cmyk = np.concatenate([255 - rgb, rgb[::-1, ::-1, 1:2]], axis=-1)
    p = os.path.join(out, "gen_cmyk.jpg")
    Image.fromarray(np.ascontiguousarray(cmyk), "CMYK").save(p, quality=90)
    paths["gen_cmyk"] = p
    data = bytearray(open(p, "rb").read())
    at = data.find(b"\xff\xee")
    assert at >= 0 and data[at + 4:at + 9] == b"Adobe", "PIL wrote no Adobe marker"
    # marker (2), length (2), "Adobe" (5), version (2), flags0 (2), flags1 (2), transform (1)
    assert data[at + 15] == 0
    data[at + 15] = 2
    p = os.path.join(out, "gen_ycck.jpg")
    open(p, "wb").write(bytes(data))
    paths["gen_ycck"] = p
    p = os.path.join(out, "gen_prog422.jpg")
    photo.save(p, quality=80, progressive=True, subsampling=1)
    paths["gen_prog422"] = p
    p = os.path.join(out, "gen_odd420.jpg")
    photo.crop((33, 17, 33 + 101, 17 + 77)).save(p, quality=85, subsampling=2)
    paths["gen_odd420"] = p
    return paths


def png_chunk(kind, payload):
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def write_png16(path, rgb16):
    """A 16-bit RGB PNG, which PIL cannot write: IHDR, one IDAT of unfiltered rows, IEND."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))
    open(path, "wb").write(data)


def write_pngs(f, out):
    g = f.create_group("png")
    rng = np.random.default_rng(5)
    h, w = 23, 37
    # segment ids as panopticapi encodes them, with ids above 65535 (blue channel in use)
    ids = np.array([0, 1, 255, 256, 65535, 65536, 1234567, 16777215, 7 + 256 * 200 + 65536 * 31],
                   dtype=np.uint32)
    idmap = ids[rng.integers(0, len(ids), (h, w))]
    idmap[:5, :9] = ids[6]
    rgb = np.stack([idmap % 256, idmap // 256 % 256, idmap // 65536], axis=-1).astype(np.uint8)
    files = {}
    files["rgb"] = os.path.join(out, "panoptic_rgb.png")
    Image.fromarray(rgb, "RGB").save(files["rgb"])
    rgba = np.concatenate([rgb, rng.integers(0, 256, (h, w, 1), dtype=np.uint8)], axis=-1)
    files["rgba"] = os.path.join(out, "panoptic_rgba.png")
    Image.fromarray(rgba, "RGBA").save(files["rgba"])
    pal = Image.fromarray(rgb, "RGB").quantize(colors=9)
    files["palette4"] = os.path.join(out, "panoptic_palette4.png")
    pal.save(files["palette4"], bits=4)
    files["gray"] = os.path.join(out, "panoptic_gray.png")
    Image.fromarray(rgb[..., 1], "L").save(files["gray"])
    files["rgb16"] = os.path.join(out, "panoptic_rgb16.png")
    write_png16(files["rgb16"], rng.integers(0, 65536, (h, w, 3)))
    for name, p in files.items():
        a = np.array(Image.open(p).convert("RGB"), dtype=np.uint32)
        d = g.create_dataset(name, data=a[..., 0] + 256 * a[..., 1] + 65536 * a[..., 2])
        d.attrs["path"] = os.path.abspath(p)
    assert (g["rgb"][()] == idmap).all() and (g["rgba"][()] == idmap).all()
    assert (g["palette4"][()] == idmap).all()
    data = open(files["rgb"], "rb").read()
    trunc = os.path.join(out, "panoptic_truncated.png")
    open(trunc, "wb").write(data[: len(data) // 2])
    notpng = os.path.join(out, "panoptic_not_png.png")
    open(notpng, "wb").write(b"P6\n2 2\n255\n" + bytes(12))
    f.create_group("png_bad").attrs["paths"] = [os.path.abspath(trunc), os.path.abspath(notpng)]


def longest_to(w, h, side):
    s = side / float(max(w, h))
    return max(1, round(w * s)), max(1, round(h * s))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=os.path.join(here, "..", "data"),
                    help="the test images' folder (default: tests/data of the repository)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    data = os.path.abspath(args.data)
    photos = sorted(glob.glob(os.path.join(data, "images", "photos", "*.jpg")))
    libjpeg = [os.path.join(data, "images", "jpeg_libjpeg_turbo", n + ".jpg")
               for n in ("testorig", "testimgint", "testimgp", "testimgari", "testimggray")]
    for p in photos[:1] + libjpeg:
        if not os.path.exists(p):
            raise SystemExit("image_ref.py: %s is missing (pass --data tests/data)" % p)

    path = os.path.join(args.out, "image.h5")
    with h5py.File(path, "w") as f:
        f.attrs["data"] = data
        f.attrs["jpeg_bad"] = os.path.join(data, "images", "jpeg_bad")
        sources = {os.path.splitext(os.path.basename(p))[0]: p for p in photos + libjpeg}
        sources.update(write_generated_jpegs(args.out, Image.open(photos[0]).convert("RGB")))
        imgs = {}
        g = f.create_group("decode")
        for name, p in sources.items():
            imgs[name] = Image.open(p).convert("RGB")
            d = g.create_dataset(name, data=np.asarray(imgs[name]), **GZ)
            d.attrs["path"] = os.path.abspath(p)

        gr, gc, gf, gt = (f.create_group(n) for n in ("resize", "crop", "full", "crop_tf"))
        big = {"skimage_astronaut", "skimage_chelsea", "sklearn_china", "testorig"}
        for name, im in imgs.items():
            w, h = im.size
            sizes = {"l224": longest_to(w, h, 224),
                     "odd": (max(1, w * 37 // 100), h * 17 // 10 + 1),
                     "w_only": (max(1, w * 3 // 5), h), "h_only": (w, h * 7 // 3),
                     "down": (max(1, round(w / 2.7)), max(1, round(h / 3.3))),
                     "tiny": (3, 2), "up_w": (w + 1, max(1, h - 1))}
            if name in big:
                sizes["l1024"] = longest_to(w, h, 1024)
            for tag, (ow, oh) in sizes.items():
                d = gr.create_dataset(name + "." + tag,
                                      data=np.asarray(im.resize((ow, oh), Image.BICUBIC)), **GZ)
                d.attrs.update(src=name, ow=ow, oh=oh)

            boxes = {"half": (10.5, 11.5, 100.5, 51.5),          # x.5 rounds half to even
                     "half2": (0.5, 1.5, w - 2.5, h - 3.5),
                     "frac": (3.25, 7.75, w * 0.6 + 0.375, h * 0.8 + 0.625),
                     "out_tl": (-20.3, -5.5, w * 0.4, h * 0.3 + 0.5),
                     "out_br": (w * 0.7, h * 0.6, w + 10.7, h + 33.5),
                     "around": (-3.5, -2.5, w + 4.5, h + 2.5),
                     "outside": (w + 5.0, 2.0, w + 20.0, 9.0)}
            for tag, box in boxes.items():
                b32, bpy = f32_box(box)
                d = gc.create_dataset(name + "." + tag, data=np.asarray(im.crop(bpy)), **GZ)
                d.attrs.update(src=name, box=b32)

            sides = (224, 1024) if name in big else (224,)
            if max(w, h) < 300:
                sides += (max(w, h),)  # scale 1: no resize, only the padding
            for S in sides:
                t = to_normalized(resize_longest(im, S))
                d = gf.create_dataset("%s.%d" % (name, S), data=t, **GZ)
                d.attrs.update(src=name, S=S)

            # crops as the teacher and the crop evaluation see them: tall, wide, tiny, partly
            # outside, and one whose longest side is already S (no resize, no padding)
            crop_boxes = {"wide": (5.5, 20.25, w * 0.9, h * 0.45),
                          "tall": (w * 0.2, 0.0, w * 0.35 + 0.5, h - 0.5),
                          "small": (w * 0.5, h * 0.5, w * 0.5 + 11.0, h * 0.5 + 7.0),
                          "thin": (1.0, 2.0, w - 1.0, 5.0),
                          "edge": (-12.5, h * 0.3, w * 0.5, h + 8.5),
                          "exact": (3.0, 2.0, 3.0 + min(224, w), 2.0 + min(100, h - 2))}
            for tag, box in crop_boxes.items():
                b32, bpy = f32_box(box)
                for S in (224, 336) if name in big else (224,):
                    t = to_normalized(resize_max_size(im.crop(bpy), S))
                    d = gt.create_dataset("%s.%s.%d" % (name, tag, S), data=t, **GZ)
                    d.attrs.update(src=name, box=b32, S=S)
        write_pngs(f, args.out)
        counts = (len(imgs), len(gr), len(gc), len(gf), len(gt))
    print("image_ref: %d images, %d resizes, %d crops, %d full and %d crop transforms"
          % counts, "-> %s (%.1f MB)" % (path, os.path.getsize(path) / 1e6))


if __name__ == "__main__":
    main()
