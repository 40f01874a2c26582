"""vit_ref.py: an independent PyTorch reference of the clipself ViT; writes the test fixtures.

Usage: /usr/bin/python3 tests/reference/vit_ref.py --out DIR [--configs tiny,b16]

The model is an open_clip-style VisionTransformer written with torch's own modules
(nn.MultiheadAttention, nn.LayerNorm, ...), not a transcription of the C code. Everything is
float32, seeded and run with 2 threads, so two runs write the same numbers.

Configurations
  tiny: width 64, layers 2, heads 4, mlp 256, embed 32, patch 8, grid 8, act gelu, eps 1e-5;
        dense input 2 x 3 x 64 x 96 (token grid 8 x 12: the positional embedding is resized),
        image input 2 x 3 x 64 x 64.
  b16:  width 768, layers 12, heads 12, mlp 3072, embed 512, patch 16, grid 14, act quickgelu,
        eps 1e-5; dense and image inputs 2 x 3 x 224 x 224.

Models (safetensors: 8-byte little-endian header length, JSON header padded with spaces to a
multiple of 8, then little-endian C-order data, tensors in name order)
  tiny.openclip.safetensors, b16.openclip.safetensors
      F32, open_clip names under "visual." (per block "visual.transformer.resblocks.N...."),
      plus text-tower tensors a vision loader must ignore: "token_embedding.weight",
      "positional_embedding", "transformer.resblocks.0.ln_1.weight", "ln_final.weight",
      "text_projection", "logit_scale" (shape [], a 0-d tensor).
      __metadata__ = {"clipself.heads": "4", "clipself.act": "gelu"|"quickgelu",
                      "clipself.ln_eps": "1e-05"}
  tiny.hf.safetensors
      the same weights under the Hugging Face CLIPModel names: vision_model.embeddings.
      {patch_embedding.weight, class_embedding, position_embedding.weight},
      vision_model.pre_layrnorm.{weight,bias}, vision_model.encoder.layers.N.{layer_norm1,
      self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, self_attn.out_proj, layer_norm2,
      mlp.fc1, mlp.fc2}.{weight,bias}, vision_model.post_layernorm.{weight,bias},
      visual_projection.weight (= proj transposed, (E, C)); q/k/v = row thirds of in_proj.
      Text tensors to ignore: "text_model.embeddings.token_embedding.weight",
      "text_projection.weight", "logit_scale". Same metadata.
  tiny.f16.safetensors, tiny.bf16.safetensors
      tiny.openclip with every tensor stored as F16 / BF16 (round to nearest even).
  tiny.f16asf32.safetensors, tiny.bf16asf32.safetensors
      exactly those rounded values, stored back as F32 (bit-for-bit comparison).
  Bad files, all derived from tiny.openclip:
      bad_missing      "visual.ln_post.bias" removed
      bad_unexpected   extra "visual.transformer.resblocks.0.attn.extra_weight" (C,)
      bad_shape        "visual.proj" declared [E, C] instead of [C, E] (same byte count)
      bad_truncated    the file cut 100 bytes before its end (inside the data of
                       "visual.transformer.resblocks.1.mlp.c_proj.weight", the last by name)
      bad_header       header length 64, followed by 64 bytes of malformed JSON
      bad_dtype        "visual.ln_pre.bias" stored with dtype "I64" (8 bytes per element)

Fixtures: tiny.h5 and b16.h5 (float32 datasets unless said otherwise)
  root attributes: width, layers, heads, mlp, embed, patch, grid (int64), act (fixed-length
      ASCII string "quickgelu" or "gelu"), act_id (int64: 0 quickgelu, 1 gelu, as ACT_* in
      ops.h), ln_eps (float64).
  Parameter names below ("<name>") are the open_clip names of pipeline/model/vit_params.c with the
  block index filled in, e.g. "visual.transformer.resblocks.1.attn.in_proj_weight"; each
  per-block tensor is one dataset per block with the per-block shape.
  /dense  attributes B, H, W, gh, gw, R (int64)
      image      (B, 3, H, W)       random normal input
      pos        (1+gh*gw, C)       positional embedding at the token grid (class row kept,
                                    grid part bicubic-resized, align_corners=False)
      out        (B, gh*gw, E)      "v2" dense map: blocks 0..L-2 as usual, the last block
                                    value-only (x + out_proj(v(ln_1 x)), then its MLP),
                                    ln_post on every token, @ proj, class token dropped,
                                    L2-normalised per token; tokens row-major over (gh, gw)
      boxes      (R, 5)             [batch, x1, y1, x2, y2] in feature-map (token) coordinates
      rois       (R, E)             roi_align(out as (B, E, gh, gw), boxes, 1x1,
                                    spatial_scale 1, sampling_ratio -1, aligned True),
                                    before normalisation
      rois_2x3   (R, 2, 3, E)       the same with output_size (2, 3), channel-last
      masks      (R, gh*gw)         {0, 1}, each non-empty
      mask_batch (R,) int32         image index of each mask
      maskpool   (R, E)             normalize((m @ out[b]) / sum(m))
      teacher    (R, E)             random unit targets
      loss       ()                 1 - mean_i <normalize(rois_i), teacher_i>
      dout       (B, gh*gw, E)      d loss / d out
      dimage     (B, 3, H, W)       d loss / d image (conv1 is frozen, its input still gets one)
      grad/<name>                   d loss / d parameter, only for the parameters CLIPSelf
                                    trains: all except visual.conv1.weight,
                                    visual.class_embedding, visual.positional_embedding,
                                    visual.ln_pre.{weight,bias}, visual.ln_post.{weight,bias},
                                    visual.proj (the transformer blocks only; no dataset for
                                    those). The q and k rows of the last block's in_proj get
                                    zero gradient (the dense path uses only v).
  /image  attributes B, H, W (int64); H = W = grid * patch
      image      (B, 3, H, W)       random normal input
      out        (B, E)             image embedding: ln_post(class token) @ proj, not normalised
      weight     (B, E)             random
      dimage     (B, 3, H, W)       d sum(out * weight) / d image
      grad/<name>                   d sum(out * weight) / d parameter, for EVERY parameter
  /adamw  attributes lr, weight_decay, beta1, beta2, eps (float64), warmup, total_steps,
          steps (int64)
      lrs        (steps,) float64   learning rate used at step s (open_clip cosine_lr)
      losses     (steps,)           /dense loss evaluated before step s
      param/<name>                  every parameter after `steps` steps of torch.optim.AdamW
                                    on the /dense loss with the /dense inputs, CLIPSelf
                                    freezing (frozen tensors are unchanged), two groups:
                                    weight decay for ndim >= 2 and no "ln"/"bias" in the name,
                                    none otherwise. torch's AdamW: p *= 1 - lr*wd, then the
                                    bias-corrected Adam step.
      step1/<name>                  tiny.h5 only: the trained parameters after the first step,
                                    whose gradients are exactly /dense/grad (same parameters
                                    and inputs), to test the optimiser alone
  /pos    bicubic resize of tiny's / b16's positional embedding to other token grids:
      <gh>x<gw>  (1+gh*gw, C)       for a few grids (both axes up, both down, mixed)
README.txt lists the files.
"""
import argparse
import json
import math
import os
import struct
import time
from collections import OrderedDict

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

CONFIGS = {
    "tiny": dict(width=64, layers=2, heads=4, mlp=256, embed=32, patch=8, grid=8, act="gelu",
                 ln_eps=1e-5, dense_hw=(64, 96), batch=2),
    "b16": dict(width=768, layers=12, heads=12, mlp=3072, embed=512, patch=16, grid=14,
                act="quickgelu", ln_eps=1e-5, dense_hw=(224, 224), batch=2),
}
ADAMW = dict(lr=1e-3, weight_decay=0.1, beta1=0.9, beta2=0.999, eps=1e-8, warmup=2,
             total_steps=5, steps=3)
# CLIPSelf trains the transformer blocks only: its open_clip lock() with unlocked groups = the
# depth leaves conv1, class_embedding, ln_pre, positional_embedding, ln_post and proj frozen.
FROZEN = ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding",
          "visual.ln_pre.weight", "visual.ln_pre.bias",
          "visual.ln_post.weight", "visual.ln_post.bias", "visual.proj")


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads, mlp, act, eps):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, mlp)),
            ("gelu", QuickGELU() if act == "quickgelu" else nn.GELU()),
            ("c_proj", nn.Linear(mlp, width)),
        ]))

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))

    def forward_value_only(self, x):
        """CLIPSelf's last block in the dense path: attention replaced by its value path."""
        v = F.linear(self.ln_1(x), self.attn.in_proj_weight, self.attn.in_proj_bias)
        v = v.chunk(3, dim=-1)[2]
        x = x + self.attn.out_proj(v)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, mlp, act, eps):
        super().__init__()
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp, act, eps) for _ in range(layers)])


def rescale_positional_embedding(pe, gh, gw):
    """open_clip CLIPSelf: keep the class row, bicubic-resize the (G0, G0) grid part."""
    g0 = int(round(math.sqrt(pe.shape[0] - 1)))
    if (gh, gw) == (g0, g0):
        return pe
    c = pe.shape[1]
    grid = pe[1:].T.reshape(1, c, g0, g0)
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
    return torch.cat([pe[:1], grid.reshape(c, gh * gw).T], dim=0)


class VisionTransformer(nn.Module):
    def __init__(self, width, layers, heads, mlp, embed, patch, grid, act, ln_eps, **_):
        super().__init__()
        self.patch = patch
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(1 + grid * grid, width))
        self.ln_pre = nn.LayerNorm(width, eps=ln_eps)
        self.transformer = Transformer(width, layers, heads, mlp, act, ln_eps)
        self.ln_post = nn.LayerNorm(width, eps=ln_eps)
        self.proj = nn.Parameter(torch.empty(width, embed))

    def tokens(self, img):
        x = self.conv1(img)  # (B, C, gh, gw)
        b, c, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, gh*gw, C), row-major over the grid
        cls = self.class_embedding.reshape(1, 1, c).expand(b, 1, c)
        x = torch.cat([cls, x], dim=1)
        x = x + rescale_positional_embedding(self.positional_embedding, gh, gw)
        return self.ln_pre(x), gh, gw

    def forward_image(self, img):
        x, _, _ = self.tokens(img)
        for blk in self.transformer.resblocks:
            x = blk(x)
        return self.ln_post(x[:, 0]) @ self.proj  # (B, E)

    def forward_dense(self, img):
        x, gh, gw = self.tokens(img)
        blocks = self.transformer.resblocks
        for blk in blocks[:-1]:
            x = blk(x)
        x = blocks[-1].forward_value_only(x)
        x = self.ln_post(x) @ self.proj
        return F.normalize(x[:, 1:], dim=-1), gh, gw  # (B, gh*gw, E)


def build_model(cfg, seed):
    """Random weights at open_clip's initialisation scales, with non-zero biases and LayerNorm
    affine terms so that every parameter matters."""
    torch.manual_seed(seed)
    m = VisionTransformer(**cfg)
    c, L, p = cfg["width"], cfg["layers"], cfg["patch"]
    attn_std = c ** -0.5
    proj_std = c ** -0.5 * (2 * L) ** -0.5
    fc_std = (2 * c) ** -0.5
    with torch.no_grad():
        for name, t in m.named_parameters():
            if name.endswith("bias"):
                t.normal_(0.0, 0.02)
            elif ".ln" in name or name.startswith("ln"):
                t.copy_(1.0 + 0.1 * torch.randn_like(t))
            elif name == "conv1.weight":
                t.normal_(0.0, (3 * p * p) ** -0.5)
            elif name in ("class_embedding", "positional_embedding"):
                t.normal_(0.0, 0.1)
            elif name == "proj":
                t.normal_(0.0, c ** -0.5)
            elif name.endswith("attn.in_proj_weight"):
                t.normal_(0.0, attn_std)
            elif name.endswith("c_fc.weight"):
                t.normal_(0.0, fc_std)
            elif name.endswith("out_proj.weight") or name.endswith("c_proj.weight"):
                t.normal_(0.0, proj_std)
            else:
                raise ValueError("no initialisation for " + name)
    return m


def visual_params(model):
    """(open_clip name, parameter): the embeddings, then block by block, then the head."""
    p = dict(model.named_parameters())
    head = ["conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight",
            "ln_pre.bias"]
    blocks = [n for n in p if n.startswith("transformer.")]
    tail = ["ln_post.weight", "ln_post.bias", "proj"]
    assert len(head) + len(blocks) + len(tail) == len(p)
    return [("visual." + n, p[n]) for n in head + blocks + tail]


def decays(name, t):
    return t.ndim >= 2 and "ln" not in name and "bias" not in name


# ---- safetensors ---------------------------------------------------------------------------

def st_bytes(t, dtype):
    t = t.detach().contiguous().cpu()
    if dtype == "F32":
        return t.to(torch.float32).numpy().astype("<f4").tobytes()
    if dtype == "F16":
        return t.to(torch.float16).numpy().astype("<f2").tobytes()
    if dtype == "BF16":
        return t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
    if dtype == "I64":
        return t.to(torch.int64).numpy().astype("<i8").tobytes()
    raise ValueError(dtype)


def st_write(path, entries, metadata):
    """entries: list of (name, dtype, shape, raw bytes). Like the safetensors library: header
    padded with spaces to a multiple of 8, data in name order (so the text tower of an open_clip
    file comes before "visual.*", and a cut at the end hits a vision tensor)."""
    entries = sorted(entries, key=lambda e: e[0])
    header = OrderedDict()
    header["__metadata__"] = metadata
    off = 0
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    hj = json.dumps(header).encode()
    hj += b" " * (-len(hj) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for _, _, _, raw in entries:
            f.write(raw)


def st_entries(named, dtype="F32"):
    return [(n, dtype, tuple(t.shape), st_bytes(t, dtype)) for n, t in named]


def st_read(path):
    """Read back a safetensors file as {name: (dtype, shape, raw)} (self-check of the writer)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for k, v in header.items():
        a, b = v["data_offsets"]
        out[k] = (v["dtype"], v["shape"], data[base + a:base + b])
    return out, meta


def text_tensors(g, width, embed):
    """Small text-tower tensors a vision loader must skip."""
    return [
        ("token_embedding.weight", 0.02 * torch.randn(100, width, generator=g)),
        ("positional_embedding", 0.01 * torch.randn(16, width, generator=g)),
        ("transformer.resblocks.0.ln_1.weight", 1.0 + 0.1 * torch.randn(width, generator=g)),
        ("ln_final.weight", 1.0 + 0.1 * torch.randn(width, generator=g)),
        ("text_projection", width ** -0.5 * torch.randn(width, embed, generator=g)),
        ("logit_scale", torch.tensor(math.log(1 / 0.07))),
    ]


def hf_named(model, cfg, g):
    p = dict(visual_params(model))
    c = cfg["width"]
    v = "vision_model."
    out = [
        (v + "embeddings.patch_embedding.weight", p["visual.conv1.weight"]),
        (v + "embeddings.class_embedding", p["visual.class_embedding"]),
        (v + "embeddings.position_embedding.weight", p["visual.positional_embedding"]),
        (v + "pre_layrnorm.weight", p["visual.ln_pre.weight"]),
        (v + "pre_layrnorm.bias", p["visual.ln_pre.bias"]),
    ]
    for i in range(cfg["layers"]):
        o = "visual.transformer.resblocks.%d." % i
        h = v + "encoder.layers.%d." % i
        w, b = p[o + "attn.in_proj_weight"], p[o + "attn.in_proj_bias"]
        out += [(h + "layer_norm1.weight", p[o + "ln_1.weight"]),
                (h + "layer_norm1.bias", p[o + "ln_1.bias"])]
        for j, qkv in enumerate("qkv"):
            out += [(h + "self_attn.%s_proj.weight" % qkv, w[j * c:(j + 1) * c]),
                    (h + "self_attn.%s_proj.bias" % qkv, b[j * c:(j + 1) * c])]
        out += [(h + "self_attn.out_proj.weight", p[o + "attn.out_proj.weight"]),
                (h + "self_attn.out_proj.bias", p[o + "attn.out_proj.bias"]),
                (h + "layer_norm2.weight", p[o + "ln_2.weight"]),
                (h + "layer_norm2.bias", p[o + "ln_2.bias"]),
                (h + "mlp.fc1.weight", p[o + "mlp.c_fc.weight"]),
                (h + "mlp.fc1.bias", p[o + "mlp.c_fc.bias"]),
                (h + "mlp.fc2.weight", p[o + "mlp.c_proj.weight"]),
                (h + "mlp.fc2.bias", p[o + "mlp.c_proj.bias"])]
    out += [(v + "post_layernorm.weight", p["visual.ln_post.weight"]),
            (v + "post_layernorm.bias", p["visual.ln_post.bias"]),
            ("visual_projection.weight", p["visual.proj"].T)]
    out += [("text_model.embeddings.token_embedding.weight",
             0.02 * torch.randn(100, c, generator=g)),
            ("text_projection.weight", c ** -0.5 * torch.randn(cfg["embed"], c, generator=g)),
            ("logit_scale", torch.tensor(math.log(1 / 0.07)))]
    return out


def write_models(out, name, model, cfg):
    meta = {"clipself.heads": str(cfg["heads"]), "clipself.act": cfg["act"],
            "clipself.ln_eps": str(cfg["ln_eps"])}
    g = torch.Generator().manual_seed(7)
    named = visual_params(model) + text_tensors(g, cfg["width"], cfg["embed"])
    path = os.path.join(out, name + ".openclip.safetensors")
    st_write(path, st_entries(named), meta)
    files = [path]
    if name != "tiny":
        return files
    files.append(os.path.join(out, "tiny.hf.safetensors"))
    st_write(files[-1], st_entries(hf_named(model, cfg, g)), meta)
    for dt, tdt in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        files.append(os.path.join(out, "tiny.%s.safetensors" % dt))
        st_write(files[-1], st_entries(named, dt.upper()), meta)
        rounded = [(n, t.detach().to(tdt).to(torch.float32)) for n, t in named]
        files.append(os.path.join(out, "tiny.%sasf32.safetensors" % dt))
        st_write(files[-1], st_entries(rounded), meta)

    ents = st_entries(named)
    c, e = cfg["width"], cfg["embed"]
    bad = {
        "bad_missing": [x for x in ents if x[0] != "visual.ln_post.bias"],
        "bad_unexpected": ents[:1] + [("visual.transformer.resblocks.0.attn.extra_weight", "F32",
                                       (c,), st_bytes(torch.ones(c), "F32"))] + ents[1:],
        "bad_shape": [(n, d, (e, c) if n == "visual.proj" else s, r) for n, d, s, r in ents],
        "bad_dtype": [(n, "I64", s, st_bytes(torch.zeros(s, dtype=torch.int64), "I64"))
                      if n == "visual.ln_pre.bias" else (n, d, s, r) for n, d, s, r in ents],
    }
    for bname, be in bad.items():
        files.append(os.path.join(out, bname + ".safetensors"))
        st_write(files[-1], be, meta)
    with open(path, "rb") as f:
        data = f.read()
    files.append(os.path.join(out, "bad_truncated.safetensors"))
    with open(files[-1], "wb") as f:
        f.write(data[:-100])
    junk = b'{"visual.proj": {"dtype": "F32", "shape": [64, 32], "data_offsets": [0,'
    junk = (junk + b" " * 64)[:64]
    files.append(os.path.join(out, "bad_header.safetensors"))
    with open(files[-1], "wb") as f:
        f.write(struct.pack("<Q", 64) + junk + data[8 + 64:8 + 64 + 256])
    return files


# ---- fixtures --------------------------------------------------------------------------------

def make_boxes(B, gh, gw):
    """[batch, x1, y1, x2, y2] in token coordinates, covering the roi_align edge cases."""
    rows = [
        [0, 1.0, 1.0, 3.0, 3.0],                              # whole cells 1..2 x 1..2
        [1, 0.0, 0.0, gw, gh],                                # the whole map (12 or 14 samples)
        [0, 3.2, 2.1, 3.7, 2.8],                              # smaller than one cell
        [1, -1.5, -0.7, 0.45 * gw, 0.4 * gh],                 # over the top-left border
        [0, gw - 2.5, gh - 3.1, gw + 1.2, gh + 0.6],          # over the bottom-right border
        [1, 0.19 * gw, 0.2 * gh, 0.82 * gw, 0.8 * gh],        # large, non-integer
        [0, -3.0, 0.25 * gh, 2.0, 0.7 * gh],                  # samples beyond -1: zero weight
        [1, 0.03 * gw, 0.59 * gh, 0.6 * gw, gh - 0.2],
    ]
    assert all(r[0] < B for r in rows)
    return torch.tensor(rows, dtype=torch.float32)


def make_masks(R, B, n, g):
    masks = (torch.rand(R, n, generator=g) < 0.3).float()
    masks[0] = 1.0                     # the whole map
    masks[1] = 0.0
    masks[1, n // 2 + 1] = 1.0         # a single token
    for r in range(R):
        if masks[r].sum() == 0:
            masks[r, r % n] = 1.0
    batch = torch.tensor([r % B for r in range(R)], dtype=torch.int32)
    return masks, batch


def dense_loss(model, img, boxes, teacher):
    dense, gh, gw = model.forward_dense(img)
    fmap = dense.reshape(dense.shape[0], gh, gw, -1).permute(0, 3, 1, 2)
    rois = torchvision.ops.roi_align(fmap, boxes, output_size=1, spatial_scale=1.0,
                                     sampling_ratio=-1, aligned=True).flatten(1)
    loss = 1.0 - (F.normalize(rois, dim=-1) * teacher).sum(-1).mean()
    return loss, dense, fmap, rois, gh, gw


def set_clipself_freezing(model):
    for n, t in visual_params(model):
        t.requires_grad_(n not in FROZEN)


def h5_tensor(grp, name, t):
    grp.create_dataset(name, data=t.detach().cpu().numpy())


def write_fixture(out, name, cfg, seed):
    model = build_model(cfg, seed)
    files = write_models(out, name, model, cfg)
    g = torch.Generator().manual_seed(seed + 1)
    B, (H, W), P, G0, E = cfg["batch"], cfg["dense_hw"], cfg["patch"], cfg["grid"], cfg["embed"]
    path = os.path.join(out, name + ".h5")
    files.append(path)
    f = h5py.File(path, "w")
    for k in ("width", "layers", "heads", "mlp", "embed", "patch", "grid"):
        f.attrs[k] = np.int64(cfg[k])
    f.attrs["act"] = np.bytes_(cfg["act"])
    f.attrs["act_id"] = np.int64(0 if cfg["act"] == "quickgelu" else 1)
    f.attrs["ln_eps"] = np.float64(cfg["ln_eps"])
    checks = {}

    # /image: the image embedding and gradients for every parameter
    Hi = G0 * P
    img = torch.randn(B, 3, Hi, Hi, generator=g).requires_grad_(True)
    weight = torch.randn(B, E, generator=g)
    emb = model.forward_image(img)
    (emb * weight).sum().backward()
    im = f.create_group("image")
    for k, v in dict(B=B, H=Hi, W=Hi).items():
        im.attrs[k] = np.int64(v)
    for k, v in (("image", img), ("out", emb), ("weight", weight), ("dimage", img.grad)):
        h5_tensor(im, k, v)
    gg = im.create_group("grad")
    for n, t in visual_params(model):
        h5_tensor(gg, n, t.grad)
    assert_grads("image", [(n, t.grad) for n, t in visual_params(model)])

    # /dense: the CLIPSelf training forward, region ops, loss and gradients
    set_clipself_freezing(model)
    model.zero_grad(set_to_none=True)
    img = torch.randn(B, 3, H, W, generator=g).requires_grad_(True)
    gh, gw = H // P, W // P
    boxes = make_boxes(B, gh, gw)
    R = boxes.shape[0]
    teacher = F.normalize(torch.randn(R, E, generator=g), dim=-1)
    masks, mask_batch = make_masks(R, B, gh * gw, g)
    loss, dense, fmap, rois, _, _ = dense_loss(model, img, boxes, teacher)
    dense.retain_grad()
    loss.backward()
    with torch.no_grad():
        rois23 = torchvision.ops.roi_align(fmap, boxes, output_size=(2, 3), spatial_scale=1.0,
                                           sampling_ratio=-1, aligned=True).permute(0, 2, 3, 1)
        mp = torch.stack([masks[r] @ dense[mask_batch[r].item()] / masks[r].sum()
                          for r in range(R)])
        maskpool = F.normalize(mp, dim=-1)
        pos = rescale_positional_embedding(model.positional_embedding, gh, gw)
    d = f.create_group("dense")
    for k, v in dict(B=B, H=H, W=W, gh=gh, gw=gw, R=R).items():
        d.attrs[k] = np.int64(v)
    for k, v in (("image", img), ("pos", pos), ("out", dense), ("boxes", boxes), ("rois", rois),
                 ("rois_2x3", rois23), ("masks", masks), ("maskpool", maskpool),
                 ("teacher", teacher), ("loss", loss), ("dout", dense.grad),
                 ("dimage", img.grad)):
        h5_tensor(d, k, v)
    d.create_dataset("mask_batch", data=mask_batch.numpy().astype(np.int32))
    gg = d.create_group("grad")
    for n, t in visual_params(model):
        if t.requires_grad:
            h5_tensor(gg, n, t.grad)
    assert_grads("dense", [(n, t.grad) for n, t in visual_params(model) if t.requires_grad])
    checks["dense"] = (dense.detach(), fmap.detach(), rois.detach(), loss.item())

    # /adamw: optimiser steps on the /dense loss with open_clip's groups and schedule; the
    # first step uses the gradients /dense just computed (same parameters, same inputs)
    a = ADAMW
    img = img.detach()
    trainable = [(n, t) for n, t in visual_params(model) if t.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": [t for n, t in trainable if decays(n, t)], "weight_decay": a["weight_decay"]},
         {"params": [t for n, t in trainable if not decays(n, t)], "weight_decay": 0.0}],
        lr=a["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"])
    ad = f.create_group("adamw")
    lrs, losses = [], []
    for s in range(a["steps"]):
        if s < a["warmup"]:
            lr = a["lr"] * (s + 1) / a["warmup"]
        else:
            e, es = s - a["warmup"], a["total_steps"] - a["warmup"]
            lr = 0.5 * (1 + math.cos(math.pi * e / es)) * a["lr"]
        for grp in opt.param_groups:
            grp["lr"] = lr
        if s > 0:
            opt.zero_grad(set_to_none=True)
            loss = dense_loss(model, img, boxes, teacher)[0]
            loss.backward()
        opt.step()
        if s == 0 and name == "tiny":
            st1 = ad.create_group("step1")
            for n, t in trainable:
                h5_tensor(st1, n, t)
        lrs.append(lr)
        losses.append(loss.item())
    for k, v in a.items():
        ad.attrs[k] = np.int64(v) if isinstance(v, int) else np.float64(v)
    ad.create_dataset("lrs", data=np.array(lrs, dtype=np.float64))
    ad.create_dataset("losses", data=np.array(losses, dtype=np.float32))
    pp = ad.create_group("param")
    for n, t in visual_params(model):
        h5_tensor(pp, n, t)
    checks["adamw"] = losses

    # /pos: the resize alone at a few other grids
    pg = f.create_group("pos")
    with torch.no_grad():
        for rh, rw in ((G0 + 3, G0 + 5), (G0 - 3, G0 - 2), (G0 - 1, 2 * G0 + 1)):
            h5_tensor(pg, "%dx%d" % (rh, rw),
                      rescale_positional_embedding(model.positional_embedding, rh, rw))
    f.close()
    return files, checks


def assert_grads(group, named):
    for n, gr in named:
        assert gr is not None and torch.isfinite(gr).all(), "%s: %s not finite" % (group, n)
        assert gr.abs().max() > 0, "%s: %s has an all-zero gradient" % (group, n)


def self_check(name, cfg, checks, files):
    """Sanity checks of the fixtures themselves; raise on failure."""
    dense, fmap, rois, loss = checks["dense"]
    assert math.isfinite(loss) and 0.0 < loss < 2.0, loss
    # Box 0 = [1, 1, 3, 3] on image 0: with aligned=True and 2 samples per side the samples sit
    # on the centres of cells 1..2 x 1..2, so the result is their plain average.
    manual = fmap[0, :, 1:3, 1:3].mean(dim=(1, 2))
    err = (rois[0] - manual).abs().max().item()
    assert err < 1e-6, "roi_align vs manual average: %g" % err
    # Box 1 covers the whole map of image 1 with one sample per cell centre.
    manual = fmap[1].mean(dim=(1, 2))
    err = (rois[1] - manual).abs().max().item()
    assert err < 1e-6, "roi_align whole map vs mean: %g" % err
    norms = dense.norm(dim=-1)
    assert (norms - 1).abs().max() < 1e-5
    assert all(math.isfinite(x) for x in checks["adamw"])
    assert checks["adamw"][-1] < checks["adamw"][0], checks["adamw"]
    with h5py.File(os.path.join(os.path.dirname(files[0]), name + ".h5"), "r") as f:
        for grp in ("dense", "image", "adamw"):
            assert grp in f
        n_trained = len(f["dense/grad"])
        n_all = len(f["image/grad"])
        assert n_all == 5 + 12 * cfg["layers"] + 3, n_all
        assert n_trained == n_all - len(FROZEN), n_trained
    st, meta = st_read(files[0])
    assert meta["clipself.heads"] == str(cfg["heads"])
    return "loss %.6f, adamw losses %s, roi/manual ok" % (
        loss, ", ".join("%.6f" % x for x in checks["adamw"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="comma-separated subset of %s (default: all)" % ",".join(CONFIGS))
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    all_files = []
    for i, (name, cfg) in enumerate(CONFIGS.items()):
        if name not in args.configs.split(","):
            continue
        t0 = time.time()
        files, checks = write_fixture(args.out, name, cfg, seed=1234 + 100 * i)
        msg = self_check(name, cfg, checks, files)
        print("vit_ref %s: %s (%.1f s)" % (name, msg, time.time() - t0))
        all_files += files
    with open(os.path.join(args.out, "README.txt"), "w") as f:
        f.write("Fixtures written by tests/reference/vit_ref.py (its docstring has the schema).\n")
        for p in sorted(all_files):
            f.write("%s\t%d bytes\n" % (os.path.basename(p), os.path.getsize(p)))


if __name__ == "__main__":
    main()
