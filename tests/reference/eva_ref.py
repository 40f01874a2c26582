"""eva_ref.py: an independent PyTorch reference of EVA02-CLIP's vision tower; writes its fixtures.

Usage: /usr/bin/python3 tests/reference/eva_ref.py --out DIR [--configs eva_tiny,eva_b16]

The model is written the way EVA-CLIP writes it (eva_vit_model.py and rope.py of EVA-CLIP, the
CLIPSelf fork for the dense path), with torch modules, not as a transcription of the C code:
separate q_proj / k_proj / v_proj Linear layers without bias plus q_bias and v_bias parameters
(no k bias), a VisionRotaryEmbeddingFast module whose freqs_cos / freqs_sin tables are built
with torch ops from the formula for the input's token grid, explicit softmax attention with
RoPE on the patch tokens of q and k, inner_attn_ln (sub-LN) before attn.proj, a SwiGLU module
(w1, w2, SiLU, ffn_ln, w3), the final norm and a Linear head with bias. Everything is float32,
seeded and run with 2 threads, so two runs write the same numbers.

RoPE for a gh x gw grid (EVA's pt_seq_len = rope_grid, ft_seq_len = the grid side, per axis):
per head of D channels, dim = D/2 per axis, freqs = 1 / 1e4^(arange(0, dim, 2) / dim), each
repeated for an interleaved pair; row i at position i / gh * rope_grid drives the first D/2
channels, column j at j / gw * rope_grid the last D/2; x * cos + rotate_half(x) * sin with
rotate_half (x0, x1) -> (-x1, x0).

Configurations (ln_eps 1e-6, rope_grid 16, batch 2)
  eva_tiny: width 64, layers 2, heads 4 (D 16), mlp 170, embed 32, patch 8, grid 8.
  eva_b16:  EVA02-CLIP-B/16's shape (width 768, heads 12, D 64, mlp 2048, embed 512, patch 16,
            grid 14) with 2 blocks instead of 12, to keep the fixtures quick.

Files per configuration <cfg>:
  <cfg>.model.h5   the model as a clipself checkpoint (pipeline/io/checkpoint.h): root attributes
                   width, layers, heads, mlp, embed, patch, grid, rope_grid (int32), arch
                   "eva02", act "swiglu", ln_eps (float32), format "clipself-vit-1"; one float32
                   dataset per tensor and block in vit_tensors()' EVA02 names and shapes:
                   visual.patch_embed.proj.{weight (C,3,P,P), bias}, visual.cls_token (C),
                   visual.pos_embed (1+G*G, C), visual.blocks.N.{norm1, attn.qkv, attn.
                   inner_attn_ln, attn.proj, norm2, mlp.w12, mlp.ffn_ln, mlp.w3}.{weight,bias},
                   visual.norm.{weight,bias}, visual.head.weight (E, C), visual.head.bias (E).
                   attn.qkv.weight (3C, C) = rows q_proj | k_proj | v_proj; attn.qkv.bias (3C)
                   = q_bias | 0 | v_bias; mlp.w12.weight (2F, C) = rows w1 | w2, mlp.w12.bias
                   = w1.bias | w2.bias.
  <cfg>.eva.safetensors
                   the same weights in EVA-CLIP's own names under "visual." (blocks.N.attn.
                   {q_proj,k_proj,v_proj}.weight, attn.q_bias, attn.v_bias, mlp.w1, mlp.w2, ...,
                   cls_token (1, 1, C), pos_embed (1, 1+G*G, C), head.weight (E, C)) plus the
                   derived rope.freqs_cos / rope.freqs_sin (rope_grid^2, D/2), EVA's tables at
                   the pretraining grid, that a loader must skip; metadata clipself.heads,
                   clipself.ln_eps, clipself.rope_grid. Not read by the C tests yet: it is
                   for the EVA safetensors loader.
  <cfg>.h5         the cases; root attributes as the model's (int64, ln_eps float64).
     /<case>       attributes mode (0 image, 1 dense), freeze (0 nothing, 1 the positional
                   embedding only, 2 CLIPSelf: patch embedding weight and bias, cls_token,
                   pos_embed, norm, head weight and bias), B, H, W, gh, gw (int64)
         image     (B, 3, H, W)  random normal input
         out       (B, E) image embedding head(norm(x)[:, 0]), or (B, gh*gw, E) the v2 dense map
                   (last block: x + proj(inner_attn_ln(v_proj(norm1 x) + v_bias)), then its
                   MLP; norm on every token, head, class token dropped, L2-normalised)
         image mode: weight (B, E) random; loss () = sum(out * weight)
         dense mode: boxes (R, 5) [batch, x1, y1, x2, y2] in token coordinates, teacher (R, E)
                   random unit rows; loss () = 1 - mean_i <normalize(roi_align(out)_i),
                   teacher_i> (1x1, spatial scale 1, sampling_ratio -1, aligned)
         dout      d loss / d out
         dimage    d loss / d image
         grad/<name>  d loss / d parameter for every tensor not frozen by the case, in the
                   checkpoint's names and fused layout (the k third of attn.qkv.bias is 0:
                   EVA has no k bias)
     eva_tiny cases: image_sq 64x64 (freeze 0), image_ns 64x48 (grid 8x6, freeze 1),
                     dense_a 40x72 (grid 5x9), dense_b 96x96 (grid 12x12) (freeze 2)
     eva_b16 cases:  image_sq 224x224 (freeze 0), image_ns 160x224 (grid 10x14, freeze 1),
                     dense_a 160x224, dense_b 224x224 (freeze 2)
     /f64/<case>   eva_tiny only: image_64x48 (image mode) and dense_40x72 (v2 dense map), the
                   positional embedding frozen, run in float64 on a double copy of the model;
                   attributes mode, B, H, W; image, weight (the shape of out), out, dimage and
                   grad/<name> (every tensor but pos_embed), all float64, of
                   L = sum(out * weight)
     /adamw        attributes lr, weight_decay, beta1, beta2, eps (float64), warmup,
                   total_steps, steps (int64); lrs (steps,) float64; losses (steps,);
                   param/<name>: every tensor after `steps` steps of torch.optim.AdamW on the
                   dense_a loss with CLIPSelf freezing and open_clip's groups (weight decay for
                   ndim >= 2 and no "ln" / "bias" in the name: the q/k/v, proj, w1/w2/w3
                   weights), on open_clip's warmup + cosine schedule.
README_eva.txt lists the files.
"""
import argparse
import math
import os
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vit_ref import make_boxes, rescale_positional_embedding, st_entries, st_write  # noqa: E402

CONFIGS = {
    "eva_tiny": dict(width=64, layers=2, heads=4, mlp=170, embed=32, patch=8, grid=8,
                     rope_grid=16, ln_eps=1e-6, batch=2,
                     cases=[("image_sq", 0, 0, (64, 64)), ("image_ns", 0, 1, (64, 48)),
                            ("dense_a", 1, 2, (40, 72)), ("dense_b", 1, 2, (96, 96))]),
    "eva_b16": dict(width=768, layers=2, heads=12, mlp=2048, embed=512, patch=16, grid=14,
                    rope_grid=16, ln_eps=1e-6, batch=2,
                    cases=[("image_sq", 0, 0, (224, 224)), ("image_ns", 0, 1, (160, 224)),
                           ("dense_a", 1, 2, (160, 224)), ("dense_b", 1, 2, (224, 224))]),
}
ADAMW = dict(lr=1e-3, weight_decay=0.1, beta1=0.9, beta2=0.999, eps=1e-8, warmup=2,
             total_steps=5, steps=3)


# ---- the model, EVA-CLIP's way --------------------------------------------------------------

def rotate_half(x):
    """EVA's rotate_half: '... (d r) -> ... d r', (x1, x2) -> (-x2, x1), back to '... (d r)'."""
    x = x.reshape(*x.shape[:-1], -1, 2)
    x1, x2 = x.unbind(dim=-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


class VisionRotaryEmbeddingFast(nn.Module):
    """EVA's 2-D RoPE for one token grid: dim = head_dim / 2 rotary channels per axis."""

    def __init__(self, dim, pt_seq_len, ft_hw, theta=10000.0):
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[:(dim // 2)].float() / dim))
        h, w = ft_hw
        t_h = torch.arange(h) / h * pt_seq_len
        t_w = torch.arange(w) / w * pt_seq_len
        f_h = torch.einsum("..., f -> ... f", t_h, freqs).repeat_interleave(2, dim=-1)  # (h, dim)
        f_w = torch.einsum("..., f -> ... f", t_w, freqs).repeat_interleave(2, dim=-1)  # (w, dim)
        freqs = torch.cat([f_h[:, None, :].expand(h, w, dim), f_w[None, :, :].expand(h, w, dim)],
                          dim=-1)  # broadcat: (h, w, 2 dim)
        self.register_buffer("freqs_cos", freqs.cos().view(-1, freqs.shape[-1]))
        self.register_buffer("freqs_sin", freqs.sin().view(-1, freqs.shape[-1]))

    def forward(self, t):
        return t * self.freqs_cos + rotate_half(t) * self.freqs_sin


class Attention(nn.Module):
    def __init__(self, dim, heads, eps):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.inner_attn_ln = nn.LayerNorm(dim, eps=eps)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope):
        B, N, C = x.shape
        q = F.linear(input=x, weight=self.q_proj.weight, bias=self.q_bias)
        k = F.linear(input=x, weight=self.k_proj.weight, bias=None)
        v = F.linear(input=x, weight=self.v_proj.weight, bias=self.v_bias)
        q = q.reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)  # (B, H, N, D)
        k = k.reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        v = v.reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        q = torch.cat((q[:, :, :1, :], rope(q[:, :, 1:, :])), -2).type_as(v)
        k = torch.cat((k[:, :, :1, :], rope(k[:, :, 1:, :])), -2).type_as(v)
        q = q * self.scale
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, -1)
        x = self.inner_attn_ln(x)
        return self.proj(x)

    def proj_without_attn(self, x):
        """CLIPSelf's dense path: the value projection alone."""
        x = F.linear(input=x, weight=self.v_proj.weight, bias=self.v_bias)
        x = self.inner_attn_ln(x)
        return self.proj(x)


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden, eps):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.ffn_ln = nn.LayerNorm(hidden, eps=eps)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x):
        hidden = self.act(self.w1(x)) * self.w2(x)
        return self.w3(self.ffn_ln(hidden))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = SwiGLU(dim, mlp, eps)

    def forward(self, x, rope):
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))

    def forward_without_attn(self, x):
        x = x + self.attn.proj_without_attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, gh*gw, C), row-major over the grid


class EVAVisionTransformer(nn.Module):
    def __init__(self, width, layers, heads, mlp, embed, patch, grid, rope_grid, ln_eps, **_):
        super().__init__()
        self.patch, self.heads, self.rope_grid = patch, heads, rope_grid
        self.patch_embed = PatchEmbed(patch, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, width))
        self.blocks = nn.ModuleList([Block(width, heads, mlp, ln_eps) for _ in range(layers)])
        self.norm = nn.LayerNorm(width, eps=ln_eps)
        self.head = nn.Linear(width, embed)

    def tokens(self, img):
        gh, gw = img.shape[2] // self.patch, img.shape[3] // self.patch
        x = self.patch_embed(img)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + rescale_positional_embedding(self.pos_embed[0], gh, gw)[None]
        half_head_dim = x.shape[-1] // self.heads // 2
        rope = VisionRotaryEmbeddingFast(half_head_dim, self.rope_grid, (gh, gw))
        return x, rope, gh, gw

    def forward_image(self, img):
        x, rope, _, _ = self.tokens(img)
        for blk in self.blocks:
            x = blk(x, rope)
        return self.head(self.norm(x)[:, 0])

    def forward_dense(self, img):
        x, rope, gh, gw = self.tokens(img)
        for blk in self.blocks[:-1]:
            x = blk(x, rope)
        x = self.blocks[-1].forward_without_attn(x)[:, 1:]
        x = self.head(self.norm(x))
        return F.normalize(x, dim=-1), gh, gw


def build_model(cfg, seed):
    """Random weights at transformer scales, with non-zero biases and LayerNorm affine terms so
    that every parameter matters."""
    torch.manual_seed(seed)
    m = EVAVisionTransformer(**cfg)
    c, L, p, f = cfg["width"], cfg["layers"], cfg["patch"], cfg["mlp"]
    with torch.no_grad():
        for name, t in m.named_parameters():
            if name.endswith("bias"):  # also attn.q_bias, attn.v_bias
                t.normal_(0.0, 0.02)
            elif "norm" in name or "_ln" in name:
                t.copy_(1.0 + 0.1 * torch.randn_like(t))
            elif name == "patch_embed.proj.weight":
                t.normal_(0.0, (3 * p * p) ** -0.5)
            elif name in ("cls_token", "pos_embed"):
                t.normal_(0.0, 0.1)
            elif name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "w1.weight",
                                "w2.weight", "head.weight")):
                t.normal_(0.0, c ** -0.5)
            elif name.endswith("attn.proj.weight"):
                t.normal_(0.0, c ** -0.5 * (2 * L) ** -0.5)
            elif name.endswith("w3.weight"):
                t.normal_(0.0, f ** -0.5 * (2 * L) ** -0.5)
            else:
                raise ValueError("no initialisation for " + name)
    return m


# ---- the checkpoint's fused layout ----------------------------------------------------------

def table(model, get):
    """(checkpoint name, tensor) in the layout of pipeline/model/vit_params.c for EVA02, where get
    maps a parameter to what is stored (the parameter, or its gradient); None if get gives None
    for any part (a frozen tensor)."""
    c = model.cls_token.shape[-1]

    def cat(*parts):
        parts = [get(p) if isinstance(p, nn.Parameter) else p for p in parts]
        return None if any(x is None for x in parts) else torch.cat(parts, dim=0)

    def one(p, shape=None):
        t = get(p)
        return None if t is None else (t.reshape(shape) if shape else t)

    out = [("visual.patch_embed.proj.weight", one(model.patch_embed.proj.weight)),
           ("visual.patch_embed.proj.bias", one(model.patch_embed.proj.bias)),
           ("visual.cls_token", one(model.cls_token, (c,))),
           ("visual.pos_embed", one(model.pos_embed, (-1, c)))]
    for i, b in enumerate(model.blocks):
        n = "visual.blocks.%d." % i
        a, mlp = b.attn, b.mlp
        out += [(n + "norm1.weight", one(b.norm1.weight)), (n + "norm1.bias", one(b.norm1.bias)),
                (n + "attn.qkv.weight", cat(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight)),
                (n + "attn.qkv.bias", cat(a.q_bias, torch.zeros(c), a.v_bias)),
                (n + "attn.inner_attn_ln.weight", one(a.inner_attn_ln.weight)),
                (n + "attn.inner_attn_ln.bias", one(a.inner_attn_ln.bias)),
                (n + "attn.proj.weight", one(a.proj.weight)),
                (n + "attn.proj.bias", one(a.proj.bias)),
                (n + "norm2.weight", one(b.norm2.weight)), (n + "norm2.bias", one(b.norm2.bias)),
                (n + "mlp.w12.weight", cat(mlp.w1.weight, mlp.w2.weight)),
                (n + "mlp.w12.bias", cat(mlp.w1.bias, mlp.w2.bias)),
                (n + "mlp.ffn_ln.weight", one(mlp.ffn_ln.weight)),
                (n + "mlp.ffn_ln.bias", one(mlp.ffn_ln.bias)),
                (n + "mlp.w3.weight", one(mlp.w3.weight)), (n + "mlp.w3.bias", one(mlp.w3.bias))]
    out += [("visual.norm.weight", one(model.norm.weight)),
            ("visual.norm.bias", one(model.norm.bias)),
            ("visual.head.weight", one(model.head.weight)),
            ("visual.head.bias", one(model.head.bias))]
    return out


# CLIPSelf freezes everything but the blocks (EVA names of the torch model)
FROZEN_CLIPSELF = ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed",
                   "norm.weight", "norm.bias", "head.weight", "head.bias")


def set_freezing(model, freeze):
    for n, t in model.named_parameters():
        frozen = (freeze == 1 and n == "pos_embed") or (freeze == 2 and n in FROZEN_CLIPSELF)
        t.requires_grad_(not frozen)


def decays(name, t):
    """open_clip's rule, on the torch names: no decay for ndim < 2, "ln" and "bias" names."""
    return t.ndim >= 2 and "ln" not in name and "bias" not in name


def write_model(out, name, model, cfg):
    path = os.path.join(out, name + ".model.h5")
    with h5py.File(path, "w") as f:
        for k in ("width", "layers", "heads", "mlp", "embed", "patch", "grid", "rope_grid"):
            f.attrs[k] = np.int32(cfg[k])
        f.attrs["arch"] = "eva02"
        f.attrs["act"] = "swiglu"
        f.attrs["ln_eps"] = np.float32(cfg["ln_eps"])
        f.attrs["format"] = "clipself-vit-1"
        for n, t in table(model, lambda p: p.detach()):
            f.create_dataset(n, data=t.numpy().astype(np.float32))
    # EVA-CLIP's own names, with the derived RoPE tables a loader must skip
    named = [("visual." + n, p.detach()) for n, p in model.named_parameters()]
    rope = VisionRotaryEmbeddingFast(cfg["width"] // cfg["heads"] // 2, cfg["rope_grid"],
                                     (cfg["rope_grid"], cfg["rope_grid"]))
    named += [("visual.rope.freqs_cos", rope.freqs_cos), ("visual.rope.freqs_sin", rope.freqs_sin)]
    st = os.path.join(out, name + ".eva.safetensors")
    st_write(st, st_entries(named), {"clipself.heads": str(cfg["heads"]),
                                     "clipself.ln_eps": str(cfg["ln_eps"]),
                                     "clipself.rope_grid": str(cfg["rope_grid"])})
    return [path, st]


def h5_tensor(grp, name, t):
    grp.create_dataset(name, data=t.detach().cpu().numpy())


def dense_loss(model, img, boxes, teacher):
    dense, gh, gw = model.forward_dense(img)
    fmap = dense.reshape(dense.shape[0], gh, gw, -1).permute(0, 3, 1, 2)
    rois = torchvision.ops.roi_align(fmap, boxes, output_size=1, spatial_scale=1.0,
                                     sampling_ratio=-1, aligned=True).flatten(1)
    return 1.0 - (F.normalize(rois, dim=-1) * teacher).sum(-1).mean(), dense


def write_case(f, model, cfg, case, g):
    cname, mode, freeze, (H, W) = case
    B, P, E = cfg["batch"], cfg["patch"], cfg["embed"]
    gh, gw = H // P, W // P
    set_freezing(model, freeze)
    model.zero_grad(set_to_none=True)
    img = torch.randn(B, 3, H, W, generator=g).requires_grad_(True)
    grp = f.create_group(cname)
    for k, v in dict(mode=mode, freeze=freeze, B=B, H=H, W=W, gh=gh, gw=gw).items():
        grp.attrs[k] = np.int64(v)
    if mode == 0:
        weight = torch.randn(B, E, generator=g)
        out = model.forward_image(img)
        loss = (out * weight).sum()
        extra = (("weight", weight),)
    else:
        boxes = make_boxes(B, gh, gw)
        teacher = F.normalize(torch.randn(boxes.shape[0], E, generator=g), dim=-1)
        loss, out = dense_loss(model, img, boxes, teacher)
        extra = (("boxes", boxes), ("teacher", teacher))
        norms = out.detach().norm(dim=-1)
        assert (norms - 1).abs().max() < 1e-5
    out.retain_grad()
    loss.backward()
    for k, v in (("image", img), ("out", out), ("loss", loss), ("dout", out.grad),
                 ("dimage", img.grad)) + extra:
        h5_tensor(grp, k, v)
    gg = grp.create_group("grad")
    n_grads = 0
    # a trainable parameter the loss does not reach (the dense path's last q and k) gets zeros
    def grad(p):
        if not p.requires_grad:
            return None
        return p.grad if p.grad is not None else torch.zeros_like(p)

    for n, t in table(model, grad):
        if t is None:
            continue
        assert torch.isfinite(t).all(), "%s: %s not finite" % (cname, n)
        nonzero = t.abs().max() > 0
        # the dense path never reaches the last block's q and k (nor its k bias: no such thing)
        assert nonzero or (mode == 1 and ".%d.attn.qkv" % (cfg["layers"] - 1) in n), (cname, n)
        h5_tensor(gg, n, t)
        n_grads += 1
    return loss.item(), n_grads


def write_adamw(f, model, cfg, case, g):
    """AdamW steps on a dense case's loss with CLIPSelf freezing, open_clip's groups."""
    _, _, _, (H, W) = case
    B, P, E = cfg["batch"], cfg["patch"], cfg["embed"]
    a = ADAMW
    set_freezing(model, 2)
    img = torch.randn(B, 3, H, W, generator=g)
    boxes = make_boxes(B, H // P, W // P)
    teacher = F.normalize(torch.randn(boxes.shape[0], E, generator=g), dim=-1)
    trainable = [(n, t) for n, t in model.named_parameters() if t.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": [t for n, t in trainable if decays(n, t)], "weight_decay": a["weight_decay"]},
         {"params": [t for n, t in trainable if not decays(n, t)], "weight_decay": 0.0}],
        lr=a["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"])
    ad = f.create_group("adamw")
    for k, v in (("image", img), ("boxes", boxes), ("teacher", teacher)):
        h5_tensor(ad, k, v)
    lrs, losses = [], []
    for s in range(a["steps"]):
        if s < a["warmup"]:
            lr = a["lr"] * (s + 1) / a["warmup"]
        else:
            e, es = s - a["warmup"], a["total_steps"] - a["warmup"]
            lr = 0.5 * (1 + math.cos(math.pi * e / es)) * a["lr"]
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = dense_loss(model, img, boxes, teacher)[0]
        loss.backward()
        opt.step()
        lrs.append(lr)
        losses.append(loss.item())
    for k, v in a.items():
        ad.attrs[k] = np.int64(v) if isinstance(v, int) else np.float64(v)
    ad.create_dataset("lrs", data=np.array(lrs, dtype=np.float64))
    ad.create_dataset("losses", data=np.array(losses, dtype=np.float32))
    pp = ad.create_group("param")
    for n, t in table(model, lambda p: p.detach()):
        h5_tensor(pp, n, t)
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    return losses


F64_CASES = [("image_64x48", 0, (64, 48)), ("dense_40x72", 1, (40, 72))]


def write_f64(f, model, cfg, g):
    """Gradients in float64 (a double copy of the model) of L = sum(out * weight), on the image
    and the v2 dense map of non-square grids with the positional embedding frozen: the exact
    values (to ~1e-7, the float32 RoPE tables) that the C test compares its float32 gradients
    with, in place of float32 finite differences whose rounding depends on the kernel set."""
    import copy
    m64 = copy.deepcopy(model).double()
    set_freezing(m64, 1)
    B, E = cfg["batch"], cfg["embed"]
    root = f.create_group("f64")
    for cname, mode, (H, W) in F64_CASES:
        m64.zero_grad(set_to_none=True)
        img = torch.randn(B, 3, H, W, generator=g).double().requires_grad_(True)
        if mode == 0:
            out = m64.forward_image(img)
        else:
            out = m64.forward_dense(img)[0]
        weight = torch.randn(*out.shape, generator=g).double()
        (out * weight).sum().backward()
        grp = root.create_group(cname)
        for k, v in dict(mode=mode, B=B, H=H, W=W).items():
            grp.attrs[k] = np.int64(v)
        for k, v in (("image", img), ("weight", weight), ("out", out), ("dimage", img.grad)):
            grp.create_dataset(k, data=v.detach().numpy())
        gg = grp.create_group("grad")
        for n, t in table(m64, lambda p: p.grad if p.requires_grad and p.grad is not None
                          else (torch.zeros_like(p) if p.requires_grad else None)):
            if t is not None:
                gg.create_dataset(n, data=t.detach().numpy())


def write_fixture(out, name, cfg, seed):
    model = build_model(cfg, seed)
    files = write_model(out, name, model, cfg)
    g = torch.Generator().manual_seed(seed + 1)
    path = os.path.join(out, name + ".h5")
    files.append(path)
    msgs = []
    with h5py.File(path, "w") as f:
        for k in ("width", "layers", "heads", "mlp", "embed", "patch", "grid", "rope_grid"):
            f.attrs[k] = np.int64(cfg[k])
        f.attrs["ln_eps"] = np.float64(cfg["ln_eps"])
        for case in cfg["cases"]:
            loss, n = write_case(f, model, cfg, case, g)
            msgs.append("%s loss %.6f (%d grads)" % (case[0], loss, n))
        dense_case = next(c for c in cfg["cases"] if c[1] == 1)
        losses = write_adamw(f, model, cfg, dense_case, g)
        msgs.append("adamw losses " + ", ".join("%.6f" % x for x in losses))
        if name == "eva_tiny":
            write_f64(f, build_model(cfg, seed), cfg, torch.Generator().manual_seed(seed + 2))
    return files, "; ".join(msgs)


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
        files, msg = write_fixture(args.out, name, cfg, seed=4321 + 100 * i)
        print("eva_ref %s: %s (%.1f s)" % (name, msg, time.time() - t0))
        all_files += files
    with open(os.path.join(args.out, "README_eva.txt"), "w") as f:
        f.write("Fixtures written by tests/reference/eva_ref.py (its docstring has the schema).\n")
        for p in sorted(all_files):
            f.write("%s\t%d bytes\n" % (os.path.basename(p), os.path.getsize(p)))


if __name__ == "__main__":
    main()
