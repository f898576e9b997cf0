#!/usr/bin/env python
"""Figure 2 (left) of the paper: inference time and memory of VGG16 / AlexNet with Tucker convs.

The paper (Section 4.2) times the inference of 120K RGB images by VGG16 and AlexNet whose
convolutions are in Tucker format, against the conv compression rate, beside the dense
(non-factorised) model.  Here: the application's ``vgg16`` and ``alexnet`` (CIFAR-10 shapes,
3 x 32 x 32), synthetic Gaussian inputs, the convolutions replaced by
:class:`tucker_dlra.nn.TuckerConv2d` with channel ranks ``ceil(kappa n)`` and full spatial ranks
(the shape of the paper's trained ranks, its Table 2), kappa chosen by bisection so that the
conv eval compression reaches each target.  Per model and target: the median time of one
forward pass of a batch (eval mode, ``torch.no_grad``; dense and Tucker interleaved), the time
for ``--images`` images derived from it, the parameter memory of the convolutions, and the peak
memory the forward pass allocates beyond what is live before it (activations and workspaces:
on CUDA the caching allocator's high-water mark, on a CPU the running sum of the allocations
and frees the PyTorch profiler records, :func:`peak_forward_bytes`).  Device-agnostic:
``--device auto`` uses CUDA when available.

Writes ``validation/results/fig2_left/fig2_left-<device>.json`` and a PNG (time and memory
versus compression, dense as a horizontal line).

Usage::

    OMP_NUM_THREADS=2 python validation/fig2_left.py --threads 2 --repeats 5
    python validation/fig2_left.py --device cuda --batch 1024 --repeats 20   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from tucker_dlra._io import atomic_write_text

OUT = Path(__file__).resolve().parent / "results" / "fig2_left"
TARGETS = (0.5, 0.7, 0.8, 0.9, 0.95)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["vgg16", "alexnet"],
                   choices=["vgg16", "alexnet"])
    p.add_argument("--targets", nargs="+", type=float, default=list(TARGETS),
                   help="conv eval compression targets in (0, 1)")
    p.add_argument("--batch", type=int, default=256, help="images per forward [256]")
    p.add_argument("--images", type=int, default=120_000,
                   help="images whose inference time is reported (the paper: 120K) [120000]")
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per variant [5]")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads [2]")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda [auto]")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    for name, ok in (("batch", a.batch >= 1), ("images", a.images >= 1),
                     ("repeats", a.repeats >= 1), ("threads", a.threads >= 1),
                     ("targets", all(0 < t < 1 for t in a.targets))):
        if not ok:
            p.error(f"--{name} out of range (batch, images, repeats, threads >= 1; targets in "
                    "(0, 1))")
    return a


def run(args: argparse.Namespace) -> dict:
    """Time and measure every (model, variant); returns the JSON record."""
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    from torch import nn
    from tucker_dlra.app.models import build_model
    from tucker_dlra.nn import compression_report

    torch.set_num_threads(args.threads)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else args.device
    cuda = dev.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def conv_bytes(model: nn.Module) -> int:
        n = 0
        for m in model.modules():
            if isinstance(m, nn.Conv2d) or type(m).__name__.startswith("TuckerConv"):
                n += sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
        return n

    record = {"device": dev, "torch": torch.__version__, "threads": args.threads,
              "batch": args.batch, "images": args.images, "repeats": args.repeats,
              "device_name": torch.cuda.get_device_name(0) if cuda else _cpu_name(),
              "models": {}}
    for name in args.models:
        torch.manual_seed(0)
        dense = build_model(name, 3, 10, (32, 32)).eval()
        variants: dict[str, tuple[nn.Module, float]] = {"dense": (dense, 0.0)}
        for t in args.targets:
            model, _ = compress(dense, t)
            comp = float(compression_report(model).eval_compression_conv)
            variants[f"tucker-{t:g}"] = (model.eval(), comp)
        x = torch.randn(args.batch, 3, 32, 32, device=dev)
        times: dict[str, list[float]] = {k: [] for k in variants}
        peak: dict[str, int | None] = {}
        with torch.no_grad():
            for k, (m, _) in variants.items():  # warm-up and peak memory
                m.to(dev)
                m(x)
                sync()
                peak[k] = peak_forward_bytes(lambda m=m, x=x: m(x), cuda)
            for _ in range(args.repeats):
                for k, (m, _) in variants.items():  # interleaved
                    sync()
                    t0 = time.perf_counter()
                    m(x)
                    sync()
                    times[k].append(time.perf_counter() - t0)
        rows = []
        t_dense = statistics.median(times["dense"])
        for k, (m, comp) in variants.items():
            med = statistics.median(times[k])
            rows.append({"variant": k, "conv_eval_compression": comp,
                         "ms_per_batch": 1e3 * med,
                         "seconds_for_images": med * args.images / args.batch,
                         "speedup_vs_dense": t_dense / med,
                         "conv_param_mb": conv_bytes(m) / 2**20,
                         "peak_forward_mb": None if peak[k] is None else peak[k] / 2**20,
                         "ranks": {n: list(mm.ranks) for n, mm in m.named_modules()
                                   if hasattr(mm, "ranks") and hasattr(mm, "core")}})
            print(f"{name:8s} {k:12s} compression {comp:5.1f} %  {1e3 * med:8.1f} ms/batch  "
                  f"x{t_dense / med:4.2f}  conv params {conv_bytes(m) / 2**20:6.2f} MB", flush=True)
        record["models"][name] = rows
    return record


def peak_forward_bytes(fn, cuda: bool) -> int | None:  # noqa: ANN001
    """Peak memory that ``fn()`` allocates beyond what is live when it starts, in bytes.

    Its result is freed before the peak is read, but counts while it is alive.  On CUDA: the
    allocator's high-water mark (``torch.cuda.max_memory_allocated``) less the memory allocated
    before the call.  On a CPU, where PyTorch keeps no such statistic: the maximum of the
    running sum of the allocation (+) and free (-) events that the profiler records with
    ``profile_memory=True``, in time order.  ``None`` where the profiler offers no events.
    """
    import torch

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        del out
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    results = getattr(prof.profiler, "kineto_results", None)
    if results is None:
        return None
    events = sorted((e.start_ns(), e.nbytes()) for e in results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def channel_ranks(shape: tuple[int, ...], kappa: float) -> tuple[int, ...]:
    """Tucker ranks of a conv kernel at fraction ``kappa``: ``ceil(kappa n)`` in the output and
    input channel modes (an input of at most 3 channels, RGB, is kept whole, as in the paper's
    Table 2), full spatial ranks, each channel rank at most the product of the others."""
    import math

    r = [max(1, math.ceil(kappa * shape[0] - 1e-9)),
         shape[1] if shape[1] <= 3 else max(1, math.ceil(kappa * shape[1] - 1e-9))]
    r += list(shape[2:])
    for i in (0, 1):
        r[i] = min(r[i], math.prod(r) // r[i])
    return tuple(r)


def compress(dense, target: float):  # noqa: ANN001, ANN201
    """Copy of ``dense`` with every ``nn.Conv2d`` a fixed-rank Tucker convolution whose conv
    eval compression is >= ``target`` (bisection on the common fraction kappa)."""
    import math

    from torch import nn
    from tucker_dlra.nn import is_tucker_layer, parameter_counts, tuckerize

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_nn_step import bisect_fraction

    convs = {n: tuple(m.weight.shape) for n, m in dense.named_modules()
             if isinstance(m, nn.Conv2d)}
    full = sum(math.prod(s) for s in convs.values())

    def comp(k: float) -> float:
        return 1 - sum(parameter_counts(s, channel_ranks(s, k))["eval"]
                       for s in convs.values()) / full

    lo = bisect_fraction(comp, target)
    import copy

    model = copy.deepcopy(dense)
    for name, shape in convs.items():
        tuckerize(model, rank=channel_ranks(shape, lo), include=name, inplace=True)
    for m in model.modules():
        if is_tucker_layer(m):
            m.max_rank = tuple(m.ranks)
    return model, lo


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def plot(record: dict, path: Path) -> Path:
    """Time per ``images`` images and conv parameter memory versus compression."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["seconds_for_images", "conv_param_mb"]
    if all(r.get("peak_forward_mb") is not None for rows in record["models"].values()
           for r in rows):
        keys.append("peak_forward_mb")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6))
    for name, rows in record["models"].items():
        tk = [r for r in rows if r["variant"] != "dense"]
        dense = next(r for r in rows if r["variant"] == "dense")
        xs = [r["conv_eval_compression"] for r in tk]
        for ax, key in zip(axes, keys, strict=True):
            line, = ax.plot(xs, [r[key] for r in tk], "o-", label=f"{name} Tucker")
            ax.axhline(dense[key], color=line.get_color(), ls="--", label=f"{name} dense")
    axes[0].set_ylabel(f"inference time of {record['images']} images [s]")
    axes[1].set_ylabel("conv parameters [MB]")
    if len(keys) == 3:
        axes[2].set_ylabel(f"peak forward memory, batch {record['batch']} [MB]")
    for ax in axes:
        ax.set_xlabel("conv compression [%]")
        ax.legend(fontsize=7)
    fig.suptitle(f"{record['device_name']} ({record['device']}, batch {record['batch']})",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    record = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if record["device"].startswith("cuda") else "cpu"
    path = args.out / f"fig2_left-{dev}.json"
    atomic_write_text(path, json.dumps(record, indent=1))
    png = plot(record, args.out / f"fig2_left-{dev}.png")
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
