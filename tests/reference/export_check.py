#!/usr/bin/python3
"""Load a safetensors file written by export_model into the PyTorch reference model and check
that it reproduces the outputs the C model gave (forward --dump): the proof that a PyTorch
program reading the exported names gets the model clipself trained.

  export_check.py --model M.safetensors --dump D.h5 --mode image|dense [--tol 1e-4]
  export_check.py --cases FILE    (lines "MODEL DUMP MODE": many checks, one torch start-up)

The naming is detected as the C loader does (vision_model.* = Hugging Face, visual.blocks.* =
EVA02-CLIP, else open_clip); each is mapped onto the reference modules here, independently of
the C table. Prints the largest error and exits 1 when it exceeds the tolerance."""
import argparse
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vit_ref  # noqa: E402

DTYPES = {"F32": np.float32, "F16": np.float16}


def read_safetensors(path):
    named, meta = vit_ref.st_read(path)
    out = {}
    for name, (dtype, shape, raw) in named.items():
        if dtype == "BF16":
            u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=DTYPES[dtype]).astype(np.float32)
        out[name] = torch.from_numpy(arr.reshape(shape).copy())
    return out, meta


def naming_of(t):
    if any(k.startswith("vision_model.") for k in t):
        return "hf"
    if any(k.startswith("visual.blocks.") for k in t):
        return "eva"
    return "openclip"


def openclip_state(t, naming):
    """open_clip names (without "visual.") from open_clip or Hugging Face tensors."""
    if naming == "openclip":
        return {k[len("visual."):]: v for k, v in t.items() if k.startswith("visual.")}
    v = "vision_model."
    s = {"conv1.weight": t[v + "embeddings.patch_embedding.weight"],
         "class_embedding": t[v + "embeddings.class_embedding"],
         "positional_embedding": t[v + "embeddings.position_embedding.weight"],
         "ln_pre.weight": t[v + "pre_layrnorm.weight"], "ln_pre.bias": t[v + "pre_layrnorm.bias"],
         "ln_post.weight": t[v + "post_layernorm.weight"],
         "ln_post.bias": t[v + "post_layernorm.bias"],
         "proj": t["visual_projection.weight"].T.contiguous()}
    layers = 1 + max(int(k.split(".")[3]) for k in t if k.startswith(v + "encoder.layers."))
    for i in range(layers):
        h, o = v + "encoder.layers.%d." % i, "transformer.resblocks.%d." % i
        a = h + "self_attn."
        s[o + "attn.in_proj_weight"] = torch.cat([t[a + x + "_proj.weight"] for x in "qkv"])
        s[o + "attn.in_proj_bias"] = torch.cat([t[a + x + "_proj.bias"] for x in "qkv"])
        for ours, theirs in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                             ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
                             ("mlp.c_proj", "mlp.fc2")):
            for p in ("weight", "bias"):
                s[o + ours + "." + p] = t[h + theirs + "." + p]
    return s


def clip_model(t, meta, naming):
    s = openclip_state(t, naming)
    width = s["class_embedding"].shape[0]
    layers = 1 + max(int(k.split(".")[2]) for k in s if k.startswith("transformer.resblocks."))
    cfg = dict(width=width, layers=layers,
               heads=int(meta.get("clipself.heads", width // 64)),
               mlp=s["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
               embed=s["proj"].shape[1], patch=s["conv1.weight"].shape[2],
               grid=int(round((s["positional_embedding"].shape[0] - 1) ** 0.5)),
               act=meta.get("clipself.act", "quickgelu"),
               ln_eps=float(meta.get("clipself.ln_eps", "1e-5")))
    m = vit_ref.VisionTransformer(**cfg)
    m.load_state_dict(s, strict=True)
    return m


def eva_model(t, meta):
    """EVA02-CLIP's vision tower (tests/reference/eva_ref.py) from EVA names; the RoPE tables
    in the file are derived buffers, rebuilt by the model."""
    import eva_ref
    s = {k[len("visual."):]: v for k, v in t.items()
         if k.startswith("visual.") and "rope.freqs_" not in k}
    width = s["cls_token"].shape[-1]
    cfg = dict(width=width,
               layers=1 + max(int(k.split(".")[1]) for k in s if k.startswith("blocks.")),
               heads=int(meta.get("clipself.heads", width // 64)),
               mlp=s["blocks.0.mlp.w1.weight"].shape[0], embed=s["head.weight"].shape[0],
               patch=s["patch_embed.proj.weight"].shape[2],
               grid=int(round((s["pos_embed"].shape[1] - 1) ** 0.5)),
               rope_grid=int(meta.get("clipself.rope_grid", "16")),
               ln_eps=float(meta.get("clipself.ln_eps", "1e-6")))
    m = eva_ref.EVAVisionTransformer(**cfg)
    m.load_state_dict(s, strict=True)
    return m


def check(model, dump, mode, tol):
    t, meta = read_safetensors(model)
    naming = naming_of(t)
    m = eva_model(t, meta) if naming == "eva" else clip_model(t, meta, naming)
    m.eval()
    with h5py.File(dump, "r") as f:
        img = torch.from_numpy(f["images"][()])
        want = torch.from_numpy(f["out"][()])
    got = m.forward_image(img) if mode == "image" else m.forward_dense(img)[0]
    if got.shape != want.shape:
        print("export_check: %s: shape %s, C gave %s" % (model, tuple(got.shape),
                                                        tuple(want.shape)))
        return False
    err = (got - want).abs().max().item()
    scale = want.abs().max().item()
    ok = err <= tol * max(scale, 1.0)
    print("export_check: %s (%s names, %s mode, %d images %dx%d): max |torch - C| = %.3g "
          "(scale %.3g) %s" % (model, naming, mode, img.shape[0], img.shape[2], img.shape[3], err,
                               scale, "ok" if ok else "TOO LARGE"))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--dump")
    ap.add_argument("--mode", choices=("image", "dense"))
    ap.add_argument("--cases", help="a file of 'MODEL DUMP MODE' lines, checked in one process")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    cases = []
    if a.cases:
        with open(a.cases) as f:
            cases = [line.split() for line in f if line.strip()]
    if a.model:
        cases.append([a.model, a.dump, a.mode])
    if not cases or any(len(c) != 3 or c[2] not in ("image", "dense") for c in cases):
        ap.error("give --model, --dump and --mode, or --cases with 'MODEL DUMP MODE' lines")
    bad = sum(not check(m, d, mode, a.tol) for m, d, mode in cases)
    print("export_check: %d of %d cases reproduced" % (len(cases) - bad, len(cases)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
