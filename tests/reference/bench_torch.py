"""bench_torch.py: the PyTorch side of `make bench`: the same cases as tests/bench.c.

Usage: python3 tests/reference/bench_torch.py sgemm | [MODEL] teacher | [MODEL] train SIZE [STEPS]

MODEL b16 (the default) is tests/reference/vit_ref.py's ViT-B/16 (torch modules:
nn.MultiheadAttention blocks, the "v2" dense path); eva-b16 is tests/reference/eva_ref.py's
EVAVisionTransformer at EVA02-CLIP-B/16's shape (12 blocks, explicit softmax attention with
RoPE, SwiGLU, its own v2 dense path). Both train with CLIPSelf's freezing (the blocks only),
torchvision roi_align in the loss, float32, with torch.set_num_threads set to OMP_NUM_THREADS
(else the processor count), the thread count the C benchmark uses. Run one case per process:
the peak RSS reported (resource.getrusage) is the whole process's. Each case ends with the
machine line scripts/bench reads:
    result CASE torch SECONDS GFLOPS RSS_MIB     ("-" where a field does not apply,
                                                  SECONDS "skipped" when it would not fit)
CASE as in tests/bench.c: sgemm, teacher or trainSIZE, prefixed with "eva_" for eva-b16.
"""
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eva_ref  # noqa: E402  (the reference models live once, next to this file)
import vit_ref  # noqa: E402

BOXES = 16


class Model:
    """One model the benchmark runs, through its reference module's own helpers."""

    def __init__(self, label, prefix, ref, cfg):
        self.label, self.prefix, self.ref, self.cfg = label, prefix, ref, cfg

    def build(self):
        return self.ref.build_model(self.cfg, seed=1)

    def trainable(self, model):
        """CLIPSelf's freezing (the blocks train); (name, parameter) of what trains."""
        if self.ref is vit_ref:
            vit_ref.set_clipself_freezing(model)
            named = vit_ref.visual_params(model)
        else:
            eva_ref.set_freezing(model, 2)
            named = list(model.named_parameters())
        return [(n, t) for n, t in named if t.requires_grad]


MODELS = {
    "b16": Model("ViT-B/16", "", vit_ref, vit_ref.CONFIGS["b16"]),
    # eva_ref's eva_b16 fixture has 2 blocks; the released model has 12
    "eva-b16": Model("EVA02-CLIP-B/16", "eva_", eva_ref,
                     dict(eva_ref.CONFIGS["eva_b16"], layers=12)),
}


def threads():
    n = os.environ.get("OMP_NUM_THREADS", "")
    return int(n) if n.isdigit() and int(n) > 0 else os.cpu_count()


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def blas_library():
    """The BLAS shared object torch resolved at load time (Debian's torch uses the system one)."""
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
    return ", ".join(sorted(libs)) or "unknown"


def mem_available_gib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def bench_sgemm():
    """torch.mm on the products of tests/bench.c; the attention ones as a bmm with one head
    per thread."""
    n = threads()
    shapes = [
        ("qkv      fwd, 8x197 tokens   Y = X.W^T", 0, 1, 8 * 197, 2304, 768, 1),
        ("c_fc     fwd, 8x197 tokens   Y = X.W^T", 0, 1, 8 * 197, 3072, 768, 1),
        ("c_proj   fwd, 8x197 tokens   Y = X.W^T", 0, 1, 8 * 197, 768, 3072, 1),
        ("out_proj fwd, 4097 tokens    Y = X.W^T", 0, 1, 4097, 768, 768, 1),
        ("c_fc     bwd, 4097 tokens   dX = dY.W", 0, 0, 4097, 768, 3072, 1),
        ("c_fc     bwd, 4097 tokens  dW += dY^T.X", 1, 0, 3072, 768, 4097, 1),
        ("attn Q.K^T, 256 queries, bmm of heads", 0, 1, 256, 4097, 64, n),
        ("attn P.V,   256 queries, bmm of heads", 0, 0, 256, 64, 4097, n),
    ]
    print("== sgemm: torch.mm / torch.bmm, best of 5, %d threads ==" % n)
    print("torch %s, BLAS %s" % (torch.__version__, blas_library()))
    print("  %-40s %6s %6s %6s  %8s" % ("product", "m", "n", "k", "GFLOP/s"))
    rate = 0.0
    for what, ta, tb, m, nn, k, batch in shapes:
        a = torch.randn(batch, k, m).transpose(1, 2) if ta else torch.randn(batch, m, k)
        b = torch.randn(batch, nn, k).transpose(1, 2) if tb else torch.randn(batch, k, nn)
        if batch == 1:
            a, b = a[0], b[0]
        mul = torch.bmm if batch > 1 else torch.mm
        best = float("inf")
        for r in range(6):  # r == 0 warms up
            t0 = time.perf_counter()
            mul(a, b)
            dt = time.perf_counter() - t0
            if r:
                best = min(best, dt)
        g = 2.0 * m * nn * k * batch / best * 1e-9
        rate = max(rate, g)
        print("  %-40s %6d %6d %6d  %8.1f" % (what, m, nn, k, g))
    print("torch matmul rate (max of the above): %.1f GFLOP/s" % rate)
    print("result sgemm torch - %.2f %.0f" % (rate, peak_rss_mib()))


def bench_teacher(m):
    B, S, reps = 8, 224, 3
    model = m.build().eval()
    img = torch.randn(B, 3, S, S)
    print("== %steacher: %s image embedding, %dx%d, batch %d, inference, %d threads ==" % (
        m.prefix, m.label, S, S, B, threads()))
    times = []
    with torch.no_grad():
        model.forward_image(img)  # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            model.forward_image(img)
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    print("forward: %.3f s per batch (median of %d after a warm-up), %.2f images/s" % (
        sec, reps, B / sec))
    print("peak RSS: %.0f MiB" % peak_rss_mib())
    print("result %steacher torch %.4f - %.0f" % (m.prefix, sec, peak_rss_mib()))


def need_gib(cfg, S):
    """PyTorch's peak for one training step at S x S: the attention keeps every layer's
    (heads, T, T) probabilities for the backward, and the softmax backward briefly holds more;
    the rest (weights, AdamW moments, token activations) is ~2.5 GiB. Fitted to this
    benchmark's ViT-B/16 peaks: 3102 MiB at 448, 16134 MiB at 1024 (probabilities 9.0 GiB);
    EVA02-CLIP-B/16 has the same shape of attention and keeps the same."""
    T = (S // cfg["patch"]) ** 2 + 1
    probs = cfg["layers"] * cfg["heads"] * T * T * 4 / 2**30
    return 1.47 * probs + 2.55


def random_boxes(R, gh, gw, g):
    """[0, x1, y1, x2, y2] in token-grid coordinates, each box at least half a token."""
    u = torch.rand(R, 4, generator=g)
    x1, y1 = u[:, 0] * (gw - 0.5), u[:, 1] * (gh - 0.5)
    x2 = x1 + 0.5 + u[:, 2] * (gw - x1 - 0.5)
    y2 = y1 + 0.5 + u[:, 3] * (gh - y1 - 0.5)
    return torch.stack([torch.zeros(R), x1, y1, x2, y2], dim=1)


def bench_train(m, S, steps):
    print("== %strain%d: CLIPSelf step of %s, %dx%d, batch 1, %d boxes, %d threads ==" % (
        m.prefix, S, m.label, S, S, BOXES, threads()))
    need, avail = need_gib(m.cfg, S), mem_available_gib()
    if need > 0.95 * avail:
        print("skipped: PyTorch needs ~%.1f GiB here, %.1f GiB is available" % (need, avail))
        print("result %strain%d torch skipped - -" % (m.prefix, S))
        return
    g = torch.Generator().manual_seed(1)
    model = m.build().train()
    named = m.trainable(model)
    decays = m.ref.decays
    opt = torch.optim.AdamW(
        [{"params": [t for n, t in named if decays(n, t)], "weight_decay": 0.1},
         {"params": [t for n, t in named if not decays(n, t)], "weight_decay": 0.0}],
        lr=1e-5, betas=(0.9, 0.999), eps=1e-8)
    gh = gw = S // m.cfg["patch"]
    img = torch.randn(1, 3, S, S, generator=g)
    teacher = torch.nn.functional.normalize(torch.randn(BOXES, m.cfg["embed"], generator=g),
                                            dim=-1)
    boxes = random_boxes(BOXES, gh, gw, g)
    phases = {"forward+loss": [], "backward": [], "adamw": [], "total": []}
    losses = []
    for s in range(steps + 1):  # s == 0 warms up
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = m.ref.dense_loss(model, img, boxes, teacher)[0]
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        losses.append(loss.item())
        if s:
            for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                phases[k].append(v)
    sec = statistics.median(phases["total"])
    print("step: %.3f s (median of %d after a warm-up): forward+loss %.3f, backward %.3f, "
          "adamw %.3f; loss %.5f -> %.5f" % (
              sec, steps, statistics.median(phases["forward+loss"]),
              statistics.median(phases["backward"]), statistics.median(phases["adamw"]),
              losses[0], losses[-1]))
    print("peak RSS: %.0f MiB" % peak_rss_mib())
    print("result %strain%d torch %.4f - %.0f" % (m.prefix, S, sec, peak_rss_mib()))


def main():
    usage = __doc__.split("\n")[2]
    args = sys.argv[1:]
    m = MODELS[args.pop(0)] if args and args[0] in MODELS else None
    torch.set_num_threads(threads())
    torch.manual_seed(0)
    if args == ["sgemm"] and m is None:
        bench_sgemm()
    elif args == ["teacher"]:
        bench_teacher(m or MODELS["b16"])
    elif len(args) in (2, 3) and args[0] == "train" and all(a.isdigit() for a in args[1:]):
        m = m or MODELS["b16"]
        S = int(args[1])
        steps = int(args[2]) if len(args) == 3 else (1 if S > 448 else 3)
        if S % m.cfg["patch"] or not 1 <= steps <= 8:
            sys.exit(usage)
        bench_train(m, S, steps)
    else:
        sys.exit(usage)


if __name__ == "__main__":
    main()
