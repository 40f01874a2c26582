"""bench_torch.py: the PyTorch side of `make bench`: the same cases as tests/bench.c.

Usage: python3 tests/reference/bench_torch.py [--tuned] sgemm | [MODEL] teacher | [MODEL] teacher-bf16 | [MODEL] train SIZE [STEPS]

MODEL b16 (the default) is tests/reference/vit_ref.py's ViT-B/16 (torch modules:
nn.MultiheadAttention blocks, the "v2" dense path); eva-b16 is tests/reference/eva_ref.py's
EVAVisionTransformer at EVA02-CLIP-B/16's shape (12 blocks, explicit softmax attention with
RoPE, SwiGLU, its own v2 dense path). Both train with CLIPSelf's freezing (the blocks only),
torchvision roi_align in the loss, float32, with torch.set_num_threads set to OMP_NUM_THREADS
(else the processor count), the thread count the C benchmark uses. Run one case per process:
the peak RSS reported (resource.getrusage) is the whole process's. Each case ends with the
machine line scripts/bench reads:
    result CASE IMPL SECONDS GFLOPS RSS_MIB      ("-" where a field does not apply,
                                                  SECONDS "skipped" when it would not fit)
CASE as in tests/bench.c: sgemm_SHAPE, teacher or trainSIZE, the last two prefixed with "eva_"
for eva-b16. IMPL is "torch", or "torch_tuned" with --tuned.

--tuned: PyTorch at its best on this machine, everything outside the model code that makes it
faster, each measured by scripts/bench against the plain run:
  - (where the step fits with it: tuned_malloc_fits) glibc malloc kept from returning memory to the system and from mmap'ing big blocks
    (GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736): PyTorch
    frees and reallocates its activations every step, and each mmap'ed block costs page faults;
  - the BLAS kernel set: Debian's torch calls the system libblas.so.3 (BLAS_INFO=generic; oneDNN
    only for convolutions), which on this project's machines is BLIS, and BLIS 0.9.0 runs its
    generic kernels on CPUs newer than itself (AMD family 26); BLIS_ARCH_TYPE picks the kernel
    set gemm.c would (skx with AVX-512, haswell with AVX2 + FMA), unless the user set it;
  - torch.set_num_threads (as always) and the teacher under torch.inference_mode instead of
    no_grad. (torch.jit.freeze + optimize_for_inference on the teacher measured no better.)
The two variables must be in force before the process starts, so --tuned re-executes itself
with them.
"""
import os
import resource
import statistics
import sys
import time

TUNED = "--tuned" in sys.argv[1:]


def blis_arch_for_cpu():
    """BLIS's arch_t id of the kernel set pipeline/model/gemm.c picks: skx (0) with AVX-512, haswell
    (3) with AVX2 and FMA, None otherwise (BLIS's own choice stays)."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":")[1].split() for line in f if line.startswith("flags")), [])
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= set(flags):
        return "0"
    if {"avx2", "fma"} <= set(flags):
        return "3"
    return None


def tuned_malloc_fits():
    """The malloc tunables keep every freed block in the heap: a training step whose PyTorch
    peak (need_gib's fit, ~16 GiB at 1024) exceeds half of the available memory would grow
    past it (measured: EVA02 at 1024 reached 24 GB and was OOM-killed on 23.5 GiB), so there
    they stay off."""
    args = [a for a in sys.argv[1:] if a != "--tuned"]
    if "train" not in args or not args[-1].isdigit():
        return True
    i = args.index("train")
    S = int(args[i + 1]) if i + 1 < len(args) and args[i + 1].isdigit() else 448
    T = (S // 16) ** 2 + 1  # both models: patch 16, 12 layers, 12 heads (need_gib below)
    need = 1.47 * 12 * 12 * T * T * 4 / 2**30 + 2.55
    with open("/proc/meminfo") as f:
        avail = next(int(l.split()[1]) for l in f if l.startswith("MemAvailable:")) / 2**20
    return need < 0.5 * avail


if TUNED and os.environ.get("CLIPSELF_TORCH_TUNED") != "1":
    env = dict(os.environ, CLIPSELF_TORCH_TUNED="1")
    if tuned_malloc_fits():
        env["GLIBC_TUNABLES"] = ("glibc.malloc.mmap_max=0:"
                                 "glibc.malloc.trim_threshold=68719476736")
    arch = blis_arch_for_cpu()
    if arch is not None and "BLIS_ARCH_TYPE" not in env:
        env["BLIS_ARCH_TYPE"] = arch
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import torch  # noqa: E402  (after the re-execution above)

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


IMPL = "torch_tuned" if TUNED else "torch"


def tuning():
    """What --tuned set, for the report."""
    if not TUNED:
        return "plain (no tuning)"
    return "tuned: BLIS_ARCH_TYPE=%s, GLIBC_TUNABLES=%s" % (
        os.environ.get("BLIS_ARCH_TYPE", "unset"),
        os.environ.get("GLIBC_TUNABLES", "unset: the step would not fit with it"))


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
    """torch.mm on the shapes of tests/bench.c (M, N, K; the attention ones as strided views
    of a fused qkv tensor, as the model reads them), best of 5."""
    n = threads()
    shapes = [  # name, what, ta, tb, m, n, k, (lda, ldb): as tests/bench.c
        ("sgemm_2048", "square 2048^3", 0, 0, 2048, 2048, 2048, 2048, 2048),
        ("sgemm_fc1", "c_fc fwd, 8x197 tokens  X.W^T", 0, 1, 1576, 3072, 768, 768, 768),
        ("sgemm_qkv", "qkv fwd, 4097 tokens    X.W^T", 0, 1, 4097, 2304, 768, 768, 768),
        ("sgemm_qk", "attn Q.K^T, one head, 4097", 0, 1, 4097, 4097, 64, 2304, 2304),
        ("sgemm_pv", "attn P.V,   one head, 4097", 0, 0, 4097, 64, 4097, 4097, 2304),
    ]
    print("== sgemm: torch.mm, best of 5, %d threads (%s) ==" % (n, tuning()))
    print("torch %s, BLAS %s" % (torch.__version__, blas_library()))
    print("  %-30s %5s %5s %5s  %8s" % ("product", "m", "n", "k", "GFLOP/s"))
    for name, what, ta, tb, m, nn, k, lda, ldb in shapes:
        a = torch.randn(m, lda)[:, :k]
        b = torch.randn(nn, ldb)[:, :k].t() if tb else torch.randn(k, ldb)[:, :nn]
        best = float("inf")
        for r in range(6):  # r == 0 warms up
            t0 = time.perf_counter()
            torch.mm(a, b)
            dt = time.perf_counter() - t0
            if r:
                best = min(best, dt)
        g = 2.0 * m * nn * k / best * 1e-9
        print("  %-30s %5d %5d %5d  %8.1f" % (what, m, nn, k, g))
        print("result %s %s %.5f %.2f -" % (name, IMPL, best, g))
    print("peak RSS: %.0f MiB" % peak_rss_mib())


def bench_teacher(m, bf16=False):
    """The teacher forward; bf16: the model and the images converted to torch.bfloat16, PyTorch's
    own bf16 inference (its matrix products through oneDNN), the counterpart of bench.c's
    teacher-bf16. (torch 1.13's autocast on CPU fails inside nn.MultiheadAttention: "expected
    scalar type BFloat16 but found Float".)"""
    B, S, reps = 8, 224, 3
    model = m.build().eval()
    img = torch.randn(B, 3, S, S)
    if bf16:
        model, img = model.to(torch.bfloat16), img.to(torch.bfloat16)
    case = m.prefix + ("teacher_bf16" if bf16 else "teacher")
    print("== %s: %s image embedding, %dx%d, batch %d, inference%s, %d threads (%s) ==" % (
        case, m.label, S, S, B, ", bfloat16" if bf16 else "", threads(), tuning()))
    times = []
    with torch.inference_mode() if TUNED else torch.no_grad():
        model.forward_image(img)  # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            model.forward_image(img)
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    print("forward: %.3f s per batch (median of %d after a warm-up), %.2f images/s" % (
        sec, reps, B / sec))
    print("peak RSS: %.0f MiB" % peak_rss_mib())
    print("result %s %s %.4f - %.0f" % (case, IMPL, sec, peak_rss_mib()))


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
    print("== %strain%d: CLIPSelf step of %s, %dx%d, batch 1, %d boxes, %d threads (%s) ==" % (
        m.prefix, S, m.label, S, S, BOXES, threads(), tuning()))
    need, avail = need_gib(m.cfg, S), mem_available_gib()
    if need > 0.95 * avail:
        print("skipped: PyTorch needs ~%.1f GiB here, %.1f GiB is available" % (need, avail))
        print("result %strain%d %s skipped - -" % (m.prefix, S, IMPL))
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
    print("result %strain%d %s %.4f - %.0f" % (m.prefix, S, IMPL, sec, peak_rss_mib()))


def main():
    usage = __doc__.split("\n")[2]
    args = [a for a in sys.argv[1:] if a != "--tuned"]
    m = MODELS[args.pop(0)] if args and args[0] in MODELS else None
    torch.set_num_threads(threads())
    torch.manual_seed(0)
    if args == ["sgemm"] and m is None:
        bench_sgemm()
    elif args in (["teacher"], ["teacher-bf16"]):
        bench_teacher(m or MODELS["b16"], args[0] == "teacher-bf16")
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
