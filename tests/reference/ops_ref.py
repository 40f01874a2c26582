"""ops_ref.py: PyTorch / torchvision references of the ops of pipeline/model/ops.h; writes ops.h5.

Usage: /usr/bin/python3 tests/reference/ops_ref.py --out DIR

Every op is computed with torch's own functions (F.layer_norm, F.interpolate, F.normalize,
torchvision.ops.roi_align, F.conv2d, ...), float32, seeded, 2 threads: two runs write the same
numbers. Gradients are torch autograd of the loss sum(out * dout) for a random dout.
Tensors are stored in the channel-last layouts of ops.h (float32 unless said otherwise).

  /layernorm/{c96,c768}  attr eps; inp (N, C) (mean 3, std 2), w, b (C), out (N, C),
                         mean, rstd (N), dout (N, C), dinp (N, C), dw, db (C)
  /act                   inp (n) in [-8, 8]; quickgelu, gelu (n); dout (n);
                         dquickgelu, dgelu (n); the same computed in float64 and rounded:
                         quickgelu64, gelu64, dquickgelu64, dgelu64
  /bicubic/<name>        attrs ih, iw, oh, ow, C; inp (ih, iw, C), out (oh, ow, C)
                         (F.interpolate(mode="bicubic", align_corners=False) of the NCHW
                         contiguous view, as CLIPSelf resizes its positional embedding)
  /roi_align/<name>      attrs PH, PW, scale (float64), sr (sampling_ratio); feat (B, FH, FW, C),
                         boxes (R, 5) [batch, x1, y1, x2, y2], out (R, PH, PW, C), dout, dfeat
                         (torchvision.ops.roi_align, aligned=True)
  /maskpool              feat (B, N, C), mask (R, N) (mask 2 is all zeros), batch (R) int32,
                         out (R, C), dout (R, C), dfeat (B, N, C)
  /l2norm                inp (N, C) (row 1 all zeros), out (N, C); ginp (N, C) without a zero
                         row, gdout (N, C), gdinp (N, C)
  /cosine                s, t (N, C) unit rows; loss (1); ds (N, C) for dloss = 1
  /linear                inp (N, IC), w (OC, IC), b (OC), out (N, OC), dout, dinp, dw, db
  /attention             attr H; qkv (B, T, 3C) rows q|k|v, out (B, T, C), lse (B, H, T),
                         dout (B, T, C), dqkv (B, T, 3C); B 2, T 11, C 24, H 3; out, lse and
                         dqkv computed in float64 (stored as float64)
  /attention_long        the same with B 1, T 300, C 16, H 2 and larger scores
  /attention_edges/<name>  attrs B, T, C, H; qkv (B, T, 3C), dout (B, T, C); out, lse,
                         dqkv and the causal forward's out_causal, lse_causal, all float64:
                         T 1, 7, 127, 129, 259 around the C blocks of 128 (ATTENTION_EDGES)
  /patch_embed           attr P; img (B, 3, H, W), w (C, 3, P, P), out (B, gh*gw, C), dout,
                         dw (C, 3, P, P), dimg (B, 3, H, W)
  /swiglu                inp (N, 2F) rows x1|x2 in [-8, 8]; out (N, F) = silu(x1) * x2
                         (F.silu); dout (N, F), dinp (N, 2F); N 7, F 45
  /rope/<name>           attrs B, gh, gw, H, D, G; EVA-CLIP's VisionRotaryEmbeddingFast applied
                         to q and k of a fused qkv (B, 1+gh*gw, 3*H*D) (rows q|k|v, class
                         token first and not rotated); cos, sin (gh*gw, D) EVA's tables for
                         the grid (positions i*G/gh, j*G/gw); out (B, T, 3HD); dout, dqkv
                         (B, T, 3HD); "sq" 1 x 4x4 grid H 2 D 16 G 4, "ns" 2 x 3x5 grid
                         H 3 D 8 G 16
"""
import argparse
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F
import torchvision


def put(grp, name, t):
    grp.create_dataset(name, data=t.detach().cpu().numpy() if torch.is_tensor(t) else t)


def grads(out, *inputs):
    """Gradients of sum(out * dout) for a random dout; returns (dout, grads...)."""
    dout = torch.randn_like(out)
    return (dout,) + torch.autograd.grad((out * dout).sum(), inputs)


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def layernorm(f):
    g = f.create_group("layernorm")
    for name, N, C in (("c96", 7, 96), ("c768", 5, 768)):
        s = g.create_group(name)
        eps = 1e-5
        inp = leaf(torch.randn(N, C) * 2 + 3)
        w = leaf(torch.randn(C) * 0.5 + 1)
        b = leaf(torch.randn(C) * 0.5)
        out, mean, rstd = torch.native_layer_norm(inp, [C], w, b, eps)
        dout, dinp, dw, db = grads(out, inp, w, b)
        s.attrs["eps"] = eps
        for k, v in (("inp", inp), ("w", w), ("b", b), ("out", out), ("mean", mean.view(N)),
                     ("rstd", rstd.view(N)), ("dout", dout), ("dinp", dinp), ("dw", dw),
                     ("db", db)):
            put(s, k, v)


def act(f):
    g = f.create_group("act")
    inp = leaf(torch.linspace(-8, 8, 301) + torch.randn(301) * 0.01)
    quick = inp * torch.sigmoid(1.702 * inp)  # open_clip QuickGELU
    gelu = F.gelu(inp)  # exact erf GELU (approximate="none")
    dout, dq = grads(quick, inp)
    dg = torch.autograd.grad((gelu * dout).sum(), inp)[0]
    # the exact values, in float64 and rounded once; GELU through erfc, since float64
    # 1 + erf(x) cancels in the negative tail (F.gelu in float64 is off by 3e-4 at x = -7.4)
    x64 = leaf(inp.double())
    q64 = x64 * torch.sigmoid(1.702 * x64)
    dq64 = torch.autograd.grad((q64 * dout.double()).sum(), x64)[0]
    x64 = x64.detach()
    cdf = 0.5 * torch.special.erfc(-x64 / 2 ** 0.5)
    pdf = torch.exp(-0.5 * x64 * x64) / (2 * torch.pi) ** 0.5
    g64, dg64 = x64 * cdf, dout.double() * (cdf + x64 * pdf)
    for k, v in (("inp", inp), ("quickgelu", quick), ("gelu", gelu), ("dout", dout),
                 ("dquickgelu", dq), ("dgelu", dg), ("quickgelu64", q64.float()),
                 ("gelu64", g64.float()), ("dquickgelu64", dq64.float()),
                 ("dgelu64", dg64.float())):
        put(g, k, v)


def bicubic(f):
    g = f.create_group("bicubic")
    cases = (("up_8x8_8x12", 8, 8, 8, 12, 5), ("up_14x14_64x64", 14, 14, 64, 64, 16),
             ("down_14x14_7x5", 14, 14, 7, 5, 6), ("id_6x6_6x6", 6, 6, 6, 6, 3),
             ("mixed_7x9_13x4", 7, 9, 13, 4, 4))
    for name, ih, iw, oh, ow, C in cases:
        s = g.create_group(name)
        inp = torch.randn(ih, iw, C)
        nchw = inp.permute(2, 0, 1).contiguous()[None]
        out = F.interpolate(nchw, size=(oh, ow), mode="bicubic", align_corners=False)
        for k, v in (("ih", ih), ("iw", iw), ("oh", oh), ("ow", ow), ("C", C)):
            s.attrs[k] = v
        put(s, "inp", inp)
        put(s, "out", out[0].permute(1, 2, 0))


def roi_align(f):
    g = f.create_group("roi_align")
    B, FH, FW, C = 2, 7, 9, 5
    feat = torch.randn(B, FH, FW, C)
    # inside, touching and crossing every border, fully outside, tiny (< 1 px), inverted
    boxes = torch.tensor([
        [0, 1.3, 0.7, 5.2, 4.9],
        [1, -2.0, -1.5, 3.3, 2.2],
        [0, 6.1, 4.4, 10.5, 8.9],
        [1, 0.0, 0.0, 9.0, 7.0],
        [0, -5.0, -4.0, -2.5, -1.8],
        [1, 3.2, 2.6, 3.7, 2.9],
        [0, 8.6, 6.6, 9.4, 7.4],
        [1, 4.0, 3.0, 2.5, 1.0],
        [0, -0.7, 5.9, 4.1, 7.6],
    ])
    cases = (("out1x1", 1, 1, 1.0, -1), ("out2x3", 2, 3, 1.0, -1),
             ("out2x3_scale_half_sr2", 2, 3, 0.5, 2))
    for name, PH, PW, scale, sr in cases:
        s = g.create_group(name)
        x = leaf(feat.permute(0, 3, 1, 2).contiguous())
        out = torchvision.ops.roi_align(x, boxes, (PH, PW), spatial_scale=scale,
                                        sampling_ratio=sr, aligned=True)
        dout, dx = grads(out, x)
        s.attrs["PH"], s.attrs["PW"], s.attrs["scale"], s.attrs["sr"] = PH, PW, scale, sr
        put(s, "feat", feat)
        put(s, "boxes", boxes)
        put(s, "out", out.permute(0, 2, 3, 1))
        put(s, "dout", dout.permute(0, 2, 3, 1))
        put(s, "dfeat", dx.permute(0, 2, 3, 1))


def maskpool(f):
    g = f.create_group("maskpool")
    B, N, C, R = 2, 12, 6, 5
    feat = leaf(torch.randn(B, N, C))
    mask = (torch.rand(R, N) > 0.6).float()
    mask[0, 3] = 0.25  # soft weights are allowed
    mask[2] = 0
    mask[3, 0] = 1
    batch = torch.tensor([0, 1, 1, 0, 1])
    msum = mask.sum(1, keepdim=True)
    pooled = (mask[:, :, None] * feat[batch]).sum(1)
    out = torch.where(msum > 0, pooled / msum.clamp_min(1e-30), torch.zeros_like(pooled))
    dout, dfeat = grads(out, feat)
    for k, v in (("feat", feat), ("mask", mask), ("out", out), ("dout", dout), ("dfeat", dfeat)):
        put(g, k, v)
    put(g, "batch", batch.numpy().astype(np.int32))


def l2norm(f):
    g = f.create_group("l2norm")
    inp = torch.randn(4, 10) * 3
    inp[1] = 0
    put(g, "inp", inp)
    put(g, "out", F.normalize(inp, dim=-1))
    ginp = leaf(torch.randn(4, 10) * 3)
    out = F.normalize(ginp, dim=-1)
    dout, dinp = grads(out, ginp)
    put(g, "ginp", ginp)
    put(g, "gdout", dout)
    put(g, "gdinp", dinp)


def cosine(f):
    g = f.create_group("cosine")
    s = leaf(F.normalize(torch.randn(6, 16), dim=-1))
    t = F.normalize(torch.randn(6, 16), dim=-1)
    loss = 1 - (s * t).sum(-1).mean()
    (ds,) = torch.autograd.grad(loss, s)
    for k, v in (("s", s), ("t", t), ("loss", loss.view(1)), ("ds", ds)):
        put(g, k, v)


def linear(f):
    g = f.create_group("linear")
    N, IC, OC = 9, 13, 7
    inp, w, b = leaf(torch.randn(N, IC)), leaf(torch.randn(OC, IC)), leaf(torch.randn(OC))
    out = F.linear(inp, w, b)
    dout, dinp, dw, db = grads(out, inp, w, b)
    for k, v in (("inp", inp), ("w", w), ("b", b), ("out", out), ("dout", dout),
                 ("dinp", dinp), ("dw", dw), ("db", db)):
        put(g, k, v)


def attention(f):
    # "long": more query rows than one block of the C backward (ATTN_BQ = 256)
    for name, B, T, C, H, amp in (("attention", 2, 11, 24, 3, 1.0),
                                  ("attention_long", 1, 300, 16, 2, 3.0)):
        # computed in float64 from the float32 inputs (the same random draws as in float32):
        # a float32 reference's own rounding varies with the BLAS torch runs on the machine
        g = f.create_group(name)
        D = C // H
        qkv32 = torch.randn(B, T, 3 * C) * amp
        qkv = leaf(qkv32.double())
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=-1))
        scores = q @ k.transpose(-1, -2) / D ** 0.5  # (B, H, T, T)
        lse = torch.logsumexp(scores, dim=-1)  # (B, H, T)
        out = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
        dout = torch.randn(B, T, C).double()
        dqkv, = torch.autograd.grad((out * dout).sum(), qkv)
        qkv, dout = qkv32, dout.float()
        g.attrs["H"] = H
        for k_, v_ in (("qkv", qkv), ("out", out), ("lse", lse), ("dout", dout),
                       ("dqkv", dqkv)):
            put(g, k_, v_)


# The block edges of the fused C attention (ATTN_BQ = ATTN_BK = 128 rows and keys per block):
# T of one key, a few, one short of a block, one past it, two blocks and 3; several heads,
# B = 2; D = 64 (the models' head size) and 16, 32 (the AVX-512 path needs D % 16 == 0).
ATTENTION_EDGES = (("t1", 2, 1, 128, 2), ("t7", 2, 7, 48, 3), ("t127", 1, 127, 128, 2),
                   ("t129", 2, 129, 64, 2), ("t259", 1, 259, 128, 2))


def attention_edges(f):
    for name, B, T, C, H in ATTENTION_EDGES:
        g = f.create_group("attention_edges/" + name)
        D = C // H
        qkv32 = torch.randn(B, T, 3 * C) * 2.0
        dout32 = torch.randn(B, T, C)
        g.attrs["B"], g.attrs["T"], g.attrs["C"], g.attrs["H"] = B, T, C, H
        put(g, "qkv", qkv32), put(g, "dout", dout32)
        for causal in (False, True):
            qkv = leaf(qkv32.double())
            q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=-1))
            scores = q @ k.transpose(-1, -2) / D ** 0.5  # (B, H, T, T)
            if causal:
                scores = scores.masked_fill(
                    torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            lse = torch.logsumexp(scores, dim=-1)  # (B, H, T)
            out = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
            sfx = "_causal" if causal else ""
            put(g, "out" + sfx, out), put(g, "lse" + sfx, lse)
            if not causal:  # the C backward is non-causal only (the text tower is not trained)
                dqkv, = torch.autograd.grad((out * dout32.double()).sum(), qkv)
                put(g, "dqkv", dqkv)


def patch_embed(f):
    g = f.create_group("patch_embed")
    B, H, W, P, C = 2, 12, 16, 4, 10
    img, w = leaf(torch.randn(B, 3, H, W)), leaf(torch.randn(C, 3, P, P))
    out = F.conv2d(img, w, stride=P).flatten(2).transpose(1, 2)  # (B, gh*gw, C)
    dout, dimg, dw = grads(out, img, w)
    g.attrs["P"] = P
    for k, v in (("img", img), ("w", w), ("out", out), ("dout", dout), ("dw", dw),
                 ("dimg", dimg)):
        put(g, k, v)


def swiglu(f):
    g = f.create_group("swiglu")
    N, Fh = 7, 45
    inp = leaf((torch.rand(N, 2 * Fh) * 2 - 1) * 8)
    x1, x2 = inp.split(Fh, dim=-1)
    out = F.silu(x1) * x2
    dout, dinp = grads(out, inp)
    for k, v in (("inp", inp), ("out", out), ("dout", dout), ("dinp", dinp)):
        put(g, k, v)


def eva_rope_tables(gh, gw, D, G, theta=10000.0):
    """EVA-CLIP's VisionRotaryEmbeddingFast tables (dim = D/2 per axis), for a gh x gw grid."""
    dim = D // 2
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[:(dim // 2)].float() / dim))
    rows = torch.einsum("i,f->if", torch.arange(gh) / gh * G, freqs).repeat_interleave(2, -1)
    cols = torch.einsum("j,f->jf", torch.arange(gw) / gw * G, freqs).repeat_interleave(2, -1)
    table = torch.cat([rows[:, None, :].expand(gh, gw, dim),
                       cols[None, :, :].expand(gh, gw, dim)], dim=-1).reshape(gh * gw, D)
    return table.cos(), table.sin()


def rotate_half(x):
    x = x.reshape(*x.shape[:-1], -1, 2)
    x1, x2 = x.unbind(dim=-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def rope(f):
    top = f.create_group("rope")
    for name, B, gh, gw, H, D, G in (("sq", 1, 4, 4, 2, 16, 4), ("ns", 2, 3, 5, 3, 8, 16)):
        g = top.create_group(name)
        C, T = H * D, 1 + gh * gw
        cos, sin = eva_rope_tables(gh, gw, D, G)
        qkv = leaf(torch.randn(B, T, 3 * C))
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=-1))

        def apply(t):  # EVA's Attention: class token kept, patch tokens rotated
            rot = t[:, :, 1:] * cos + rotate_half(t[:, :, 1:]) * sin
            return torch.cat([t[:, :, :1], rot], dim=2).transpose(1, 2).reshape(B, T, C)

        out = torch.cat([apply(q), apply(k), v.transpose(1, 2).reshape(B, T, C)], dim=-1)
        dout, dqkv = grads(out, qkv)
        for k_, v_ in dict(B=B, gh=gh, gw=gw, H=H, D=D, G=G).items():
            g.attrs[k_] = v_
        for k_, v_ in (("cos", cos), ("sin", sin), ("qkv", qkv), ("out", out), ("dout", dout),
                       ("dqkv", dqkv)):
            put(g, k_, v_)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    with h5py.File(os.path.join(args.out, "ops.h5"), "w") as f:
        for op in (layernorm, act, bicubic, roi_align, maskpool, l2norm, cosine, linear,
                   attention, patch_embed, swiglu, rope, attention_edges):
            op(f)


if __name__ == "__main__":
    main()
