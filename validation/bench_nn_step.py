#!/usr/bin/env python
"""Benchmark: one training step, dense SGD against TDLRT (Algorithm 1), batch 128.

Speed per training step at batch 128,

* LeNet5 on 28x28 inputs (conv 20, conv 50 (5x5), fc 500, fc 10), and
* a VGG-style CIFAR-size stack on 32x32 inputs (2 x [conv 3x3 - BN - ReLU] per stage, three
  stages of 32 / 64 / 128 channels with max-pooling, classifier 2048 - 256 - 10),

the time of a dense step (``torch.optim.SGD``, momentum 0.9) against a TDLRT step
(momentum 0.9; ``integrator="bug"`` -- Algorithm 1 -- and ``"parallel"``), with the
convolutions held in Tucker form at ranks giving about 90 % eval compression of the
convolutions (channel ranks :math:`\\lceil\\kappa n\\rceil`, full spatial ranks as in the
paper's Table 2, the common fraction :math:`\\kappa` found by bisection on the paper's eval
compression rate).  The ranks are kept there during the benchmark by
``max_rank`` = the initial ranks (the rank-adaptive step still augments to
:math:`\\min(2r_i, n_i)` and truncates with ``tau``; the cap only stops growth), so every
step does the full work of Algorithm 1 at a fixed compression.  Linear layers stay dense
and are updated by the same descent rule (as in the paper's Section 4.3); with ``--linear``
the hidden linear layers are low-rank too and the target applies to the whole model.

Also measured: inference time (eval mode, ``torch.no_grad``) of the compressed model
against the dense one, and parameter + optimizer-state bytes from
:func:`tucker_dlra.nn.compression_report`.  Threads pinned (``torch.set_num_threads``,
default 2), variants interleaved, medians; ratios printed and written to
``validation/out/bench_nn_step.json``.

Targets (on this CPU): TDLRT step <= 1.0x the dense step, inference >= 2x faster
than dense, both at >= 90 % compression.

Usage::

    python validation/bench_nn_step.py [--threads 2] [--repeats 9] [--batch 128]
        [--models lenet5 vgg] [--target 0.9] [--linear]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import time
from pathlib import Path


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=9, help="timed steps per variant")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--models", nargs="+", default=["lenet5", "vgg"],
                   choices=["lenet5", "vgg"])
    p.add_argument("--target", type=float, default=0.9,
                   help="eval compression of the convolutions (default 0.9)")
    p.add_argument("--linear", action="store_true",
                   help="also compress the hidden linear layers; the target then applies "
                        "to all layers")
    p.add_argument("--tau", type=float, default=0.1, help="TDLRT truncation tolerance")
    p.add_argument("--device", default="cpu", help="torch device (cpu or cuda)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"
                                        / "bench_nn_step.json"))
    return p.parse_args()


if __name__ == "__main__":
    ARGS = _parse()
    os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import torch  # noqa: E402  (after pinning the threads)
from torch import nn  # noqa: E402
from tucker_dlra.app.models import LeNet5  # noqa: E402
from tucker_dlra.nn import (  # noqa: E402
    compression_report,
    is_tucker_layer,
    parameter_counts,
    tuckerize,
)
from tucker_dlra.nn.optim import TDLRT  # noqa: E402


def vgg_stack(widths: tuple[int, ...] = (32, 64, 128), classes: int = 10) -> nn.Module:
    """VGG-style CIFAR stack: per stage 2 x (conv3x3-BN-ReLU) + max-pool; 2-layer classifier."""
    layers: list[nn.Module] = []
    cin = 3
    for w in widths:
        for _ in range(2):
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        layers.append(nn.MaxPool2d(2))
    side = 32 // 2 ** len(widths)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * side * side, 256),
                         nn.ReLU(inplace=True), nn.Linear(256, classes))


def make_model(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """The dense model and its input shape (C, H, W)."""
    if name == "lenet5":
        return LeNet5(), (1, 28, 28)
    return vgg_stack(), (3, 32, 32)


def channel_ranks(shape: tuple[int, ...], kappa: float) -> tuple[int, ...]:
    """Tucker ranks (ceil(kappa n_out), ceil(kappa n_in), full spatial ranks) of a kernel."""
    r = [max(1, math.ceil(kappa * shape[0] - 1e-9)), max(1, math.ceil(kappa * shape[1] - 1e-9))]
    r += list(shape[2:])
    total = math.prod(shape)
    return tuple(min(ri, n, total // n) for ri, n in zip(r, shape, strict=True))


def bisect_fraction(comp, target: float, what: str = "compression") -> float:  # noqa: ANN001
    """Smallest rank fraction kappa in (0, 1] with ``comp(kappa) >= target`` (30 bisection
    steps; ``comp`` decreases in kappa)."""
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if comp(mid) >= target else (lo, mid)
    if lo == 0.0:
        raise RuntimeError(f"no rank fraction reaches {target:.0%} {what}")
    return lo


def compress(dense: nn.Module, target: float, linear: bool = False) -> tuple[nn.Module, float]:
    """Tucker model at eval compression >= target; returns it and kappa.

    Convolutions get channel ranks ``ceil(kappa n)`` with full spatial ranks (as the paper's
    trained ranks, Table 2).  With ``linear`` the hidden linear layers (all but the last)
    become :class:`~tucker_dlra.nn.LowRankLinear` of rank ``ceil(kappa min(n_out, n_in))``
    whose common fraction is then chosen so that the whole model reaches the target too.
    The convolutions' common fraction kappa (returned) gives the target "convolutions
    compression rate" of the paper; fractions are found by bisection on the paper's eval
    compression (:func:`tucker_dlra.nn.parameter_counts`).
    """
    convs = {n: tuple(m.weight.shape) for n, m in dense.named_modules()
             if isinstance(m, nn.Conv2d)}
    lins = {n: tuple(m.weight.shape) for n, m in dense.named_modules()
            if isinstance(m, nn.Linear)}
    last = list(lins)[-1] if lins else None
    hidden = {n: s for n, s in lins.items() if n != last} if linear else {}

    def ranks(shape: tuple[int, ...], kappa: float) -> tuple[int, ...]:
        if len(shape) == 2:
            r = max(1, math.ceil(kappa * min(shape) - 1e-9))
            return (r, r)
        return channel_ranks(shape, kappa)

    def bisect(comp) -> float:
        return bisect_fraction(comp, target)

    def evals(layers: dict, kappa: float) -> int:
        return sum(parameter_counts(s, ranks(s, kappa))["eval"] for s in layers.values())

    conv_dense = sum(math.prod(s) for s in convs.values())
    kappa = bisect(lambda k: 1 - evals(convs, k) / conv_dense)
    kappa_lin = None
    if hidden:  # then the hidden linear layers, so that the whole model reaches the target
        total = conv_dense + sum(math.prod(s) for s in lins.values())
        rest = sum(math.prod(s) for n, s in lins.items() if n not in hidden)
        base = evals(convs, kappa) + rest
        kappa_lin = bisect(lambda k: 1 - (base + evals(hidden, k)) / total)
    chosen = {n: ranks(s, kappa) for n, s in convs.items()}
    chosen |= {n: ranks(s, kappa_lin) for n, s in hidden.items()}
    model = copy.deepcopy(dense)
    for name, r in chosen.items():
        tuckerize(model, rank=r, include=name, inplace=True)
    for m in model.modules():
        if is_tucker_layer(m):
            m.max_rank = tuple(m.ranks)  # keep the compression fixed during the benchmark
    return model, kappa


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_model(name: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    dev = args.device
    dense, shape = make_model(name)
    tucker, kappa = compress(dense, args.target, args.linear)
    dense, tucker = dense.to(dev), tucker.to(dev)
    variants = {
        "dense": (dense, torch.optim.SGD(dense.parameters(), lr=0.01, momentum=0.9)),
    }
    for integ in ("bug", "parallel"):
        m = copy.deepcopy(tucker)
        variants[f"tdlrt-{integ}"] = (m, TDLRT(m.parameters(), lr=0.01, momentum=0.9,
                                               tau=args.tau, integrator=integ))
    x = torch.randn(args.batch, *shape, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    loss_fn = nn.CrossEntropyLoss()

    def step(model, opt):
        model.train()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    def infer(model):
        model.eval()
        with torch.no_grad():
            model(x)

    def timed(fn) -> float:
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        return time.perf_counter() - t0

    step_t = {k: [] for k in variants}
    inf_t = {"dense": [], "tdlrt": []}
    for m, o in variants.values():  # warm-up
        step(m, o)
        step(m, o)
    for _ in range(args.repeats):
        for k, (m, o) in variants.items():
            step_t[k].append(timed(lambda m=m, o=o: step(m, o)))
    infer(dense)
    infer(variants["tdlrt-bug"][0])
    for _ in range(args.repeats):
        inf_t["dense"].append(timed(lambda: infer(dense)))
        inf_t["tdlrt"].append(timed(lambda: infer(variants["tdlrt-bug"][0])))
    med_step = {k: statistics.median(v) for k, v in step_t.items()}
    med_inf = {k: statistics.median(v) for k, v in inf_t.items()}
    reps = {k: compression_report(m, input_shape=shape, optimizer=o)
            for k, (m, o) in variants.items()}
    rep = reps["tdlrt-bug"]
    out = {
        "model": name, "input_shape": shape, "kappa": kappa,
        "ranks": {r.name: r.ranks for r in rep.layers if r.kind == "tdlrt"},
        "eval_compression_conv": rep.eval_compression_conv,
        "train_compression_conv": rep.train_compression_conv,
        "eval_compression_all": rep.eval_compression,
        "step_seconds": med_step,
        "step_ratio_tdlrt_over_dense": {k: med_step[k] / med_step["dense"]
                                        for k in med_step if k != "dense"},
        "inference_seconds": med_inf,
        "inference_speedup": med_inf["dense"] / med_inf["tdlrt"],
        "flops_per_sample": {"dense": rep.flops_dense, "factorized": rep.flops_factorized},
        "bytes": {k: {"params": r.bytes_params, "optimizer": r.bytes_optimizer}
                  for k, r in reps.items()},
    }
    b = out["bytes"]
    print(f"\n{name}: batch {args.batch}, input {shape}, kappa {kappa:.3f}, ranks {out['ranks']}")
    print(f"  conv compression: eval {rep.eval_compression_conv:.1f} %, train "
          f"{rep.train_compression_conv:.1f} %; whole model eval {rep.eval_compression:.1f} %")
    print("  step (median s): " + ", ".join(f"{k} {v:.4f}" for k, v in med_step.items()))
    print("  step ratio TDLRT/dense: " + ", ".join(
        f"{k} {v:.2f}x" for k, v in out["step_ratio_tdlrt_over_dense"].items())
        + "   (target <= 1.0x)")
    print(f"  inference (median s): dense {med_inf['dense']:.4f}, tdlrt {med_inf['tdlrt']:.4f}"
          f" -> {out['inference_speedup']:.2f}x faster (target >= 2x)")
    print(f"  FLOPs/sample: dense {rep.flops_dense / 1e6:.2f} M, factorized "
          f"{rep.flops_factorized / 1e6:.2f} M")
    print("  bytes params + optimizer: " + ", ".join(
        f"{k} {v['params'] + v['optimizer']:,}" for k, v in b.items()))
    return out


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    result = {"setting": {"threads": args.threads, "batch": args.batch, "repeats": args.repeats,
                          "target": args.target, "linear": args.linear, "tau": args.tau,
                          "device": args.device, "torch": torch.__version__},
              "models": [run_model(n, args) for n in args.models]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=list))
    tmp.replace(out)
    print(f"\nwritten to {out}")
    return result


if __name__ == "__main__":
    main(ARGS)
