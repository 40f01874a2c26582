"""bench_torch.py: the PyTorch side of `make bench`: the same cases as tests/bench.c.

Usage: /usr/bin/python3 tests/reference/bench_torch.py sgemm | teacher | train SIZE [STEPS]

The model is tests/reference/vit_ref.py's (torch modules: nn.MultiheadAttention blocks, the
"v2" dense path, torchvision roi_align), float32, with torch.set_num_threads set to
OMP_NUM_THREADS (else the processor count), the thread count the C benchmark uses. Run one case
per process: the peak RSS reported (resource.getrusage) is the whole process's. Each case ends
with the machine line scripts/bench reads:
    result CASE torch SECONDS GFLOPS RSS_MIB     ("-" where a field does not apply,
                                                  SECONDS "skipped" when it would not fit)
"""
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vit_ref  # noqa: E402  (the reference model lives once, next to this file)

B16 = vit_ref.CONFIGS["b16"]
BOXES = 16


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


def bench_teacher():
    B, S, reps = 8, 224, 3
    model = vit_ref.build_model(B16, seed=1).eval()
    img = torch.randn(B, 3, S, S)
    print("== teacher: ViT-B/16 image embedding, %dx%d, batch %d, inference, %d threads ==" % (
        S, S, B, threads()))
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
    print("result teacher torch %.4f - %.0f" % (sec, peak_rss_mib()))


def need_gib(S):
    """PyTorch's peak for one training step at S x S: nn.MultiheadAttention keeps every
    layer's (heads, T, T) probabilities for the backward, and the softmax backward briefly
    holds more; the rest (weights, AdamW moments, token activations) is ~2.5 GiB. Fitted to
    this benchmark's peaks: 3102 MiB at 448, 16134 MiB at 1024 (probabilities 9.0 GiB)."""
    T = (S // B16["patch"]) ** 2 + 1
    probs = B16["layers"] * B16["heads"] * T * T * 4 / 2**30
    return 1.47 * probs + 2.55


def random_boxes(R, gh, gw, g):
    """[0, x1, y1, x2, y2] in token-grid coordinates, each box at least half a token."""
    u = torch.rand(R, 4, generator=g)
    x1, y1 = u[:, 0] * (gw - 0.5), u[:, 1] * (gh - 0.5)
    x2 = x1 + 0.5 + u[:, 2] * (gw - x1 - 0.5)
    y2 = y1 + 0.5 + u[:, 3] * (gh - y1 - 0.5)
    return torch.stack([torch.zeros(R), x1, y1, x2, y2], dim=1)


def bench_train(S, steps):
    print("== train %d: CLIPSelf step of ViT-B/16, %dx%d, batch 1, %d boxes, %d threads ==" % (
        S, S, S, BOXES, threads()))
    need, avail = need_gib(S), mem_available_gib()
    if need > 0.95 * avail:
        print("skipped: PyTorch needs ~%.1f GiB here, %.1f GiB is available" % (need, avail))
        print("result train%d torch skipped - -" % S)
        return
    g = torch.Generator().manual_seed(1)
    model = vit_ref.build_model(B16, seed=1).train()
    vit_ref.set_clipself_freezing(model)
    named = [(n, t) for n, t in vit_ref.visual_params(model) if t.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": [t for n, t in named if vit_ref.decays(n, t)], "weight_decay": 0.1},
         {"params": [t for n, t in named if not vit_ref.decays(n, t)], "weight_decay": 0.0}],
        lr=1e-5, betas=(0.9, 0.999), eps=1e-8)
    gh = gw = S // B16["patch"]
    img = torch.randn(1, 3, S, S, generator=g)
    teacher = torch.nn.functional.normalize(torch.randn(BOXES, B16["embed"], generator=g), dim=-1)
    boxes = random_boxes(BOXES, gh, gw, g)
    phases = {"forward+loss": [], "backward": [], "adamw": [], "total": []}
    losses = []
    for s in range(steps + 1):  # s == 0 warms up
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = vit_ref.dense_loss(model, img, boxes, teacher)[0]
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
    print("result train%d torch %.4f - %.0f" % (S, sec, peak_rss_mib()))


def main():
    usage = __doc__.split("\n")[2]
    args = sys.argv[1:]
    torch.set_num_threads(threads())
    torch.manual_seed(0)
    if args == ["sgemm"]:
        bench_sgemm()
    elif args == ["teacher"]:
        bench_teacher()
    elif len(args) in (2, 3) and args[0] == "train" and all(a.isdigit() for a in args[1:]):
        S = int(args[1])
        steps = int(args[2]) if len(args) == 3 else (1 if S > 448 else 3)
        if S % B16["patch"] or not 1 <= steps <= 8:
            sys.exit(usage)
        bench_train(S, steps)
    else:
        sys.exit(usage)


if __name__ == "__main__":
    main()
