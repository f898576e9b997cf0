#!/usr/bin/env python
"""Benchmark: inference time of compressed models against the dense model, batch 128.

For LeNet5 (28x28) and the VGG-style CIFAR stack of ``bench_nn_step.py`` (32x32), at each
target eval compression of the convolutions (default 80 %, 90 %, 95 %), the forward time in
eval mode under ``torch.no_grad`` of

* ``dense``: the model with ``nn.Conv2d`` layers;
* ``tdlrt``: Tucker convolutions (:class:`tucker_dlra.nn.TuckerConv2d`, channel ranks
  :math:`\\lceil\\kappa n\\rceil`, full spatial ranks), ``forward_mode="auto"`` (the layer's
  FLOP model picks the dense or the factorized path) and ``"factorized"`` forced;
* ``dense-channels_last``: the dense model run in channels-last memory format (weights
  and input converted; the conversion of the input is timed) -- a second, stronger dense
  baseline: the 2-d factorized path writes channels-last outputs in inference, which also
  speeds up the pooling/BN/ReLU that follow, so part of its speed-up over ``dense`` is
  available to a dense model too;
* ``vanilla-tucker``, ``vanilla-cp``, ``vanilla-matrix``: the paper's baselines
  (:mod:`tucker_dlra.nn.vanilla`) at ranks giving the same target compression
  (bisection on a common rank fraction), ``forward_mode="auto"``.

Linear layers stay dense.  Threads pinned (default 2), variants interleaved, medians;
speed-ups ``time(dense) / time(variant)`` printed and written to
``validation/out/bench_nn_inference.json``.  Target: >= 2x at >= 90 %.

Usage::

    python validation/bench_nn_inference.py [--threads 2] [--repeats 9] [--batch 128]
        [--targets 0.8 0.9 0.95] [--models lenet5 vgg]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=9, help="timed forwards per variant")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    p.add_argument("--models", nargs="+", default=["lenet5", "vgg"], choices=["lenet5", "vgg"])
    p.add_argument("--device", default="cpu", help="torch device (cpu or cuda)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"
                                        / "bench_nn_inference.json"))
    return p.parse_args()


ARGS = _parse()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import torch  # noqa: E402  (after pinning the threads)
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nn_step import compress, make_model  # noqa: E402
from tucker_dlra.nn import compression_report, tuckerize  # noqa: E402


def vanilla_at(dense: nn.Module, kind: str, target: float) -> tuple[nn.Module, float]:
    """Vanilla model whose conv eval compression is >= target (bisection on the fraction)."""
    lo, hi, best = 0.0, 1.0, None
    for _ in range(12):
        mid = 0.5 * (lo + hi)
        model = tuckerize(dense, rank=mid, kind=kind, exclude=nn.Linear)
        if compression_report(model).eval_compression_conv / 100 >= target:
            lo, best = mid, model
        else:
            hi = mid
    if best is None:
        raise RuntimeError(f"{kind}: no rank fraction reaches {target:.0%}")
    return best, lo


class ChannelsLast(nn.Module):
    """``model`` with weights and input in channels-last memory format."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def _set_mode(model: nn.Module, mode: str) -> nn.Module:
    for m in model.modules():
        if hasattr(m, "forward_mode"):
            m.forward_mode = mode
    return model


def main() -> dict:
    torch.set_num_threads(ARGS.threads)
    dev = ARGS.device
    results = []
    for name in ARGS.models:
        for target in ARGS.targets:
            torch.manual_seed(0)
            dense, shape = make_model(name)
            tucker, kappa = compress(dense, target)
            variants = {"dense": dense,
                        "dense-channels_last": ChannelsLast(copy.deepcopy(dense)),
                        "tdlrt-auto": tucker,
                        "tdlrt-factorized": _set_mode(copy.deepcopy(tucker), "factorized")}
            comp = {"tdlrt-auto": compression_report(tucker).eval_compression_conv}
            comp["tdlrt-factorized"] = comp["tdlrt-auto"]
            comp["dense-channels_last"] = 0.0
            for kind in ("vanilla-tucker", "vanilla-cp", "vanilla-matrix"):
                model, _ = vanilla_at(dense, kind, target)
                variants[kind] = model
                comp[kind] = compression_report(model).eval_compression_conv
            x = torch.randn(ARGS.batch, *shape, device=dev)
            for m in variants.values():
                m.to(dev).eval()
            times = {k: [] for k in variants}
            with torch.no_grad():
                for m in variants.values():  # warm-up
                    m(x)
                for _ in range(ARGS.repeats):
                    for k, m in variants.items():  # interleaved
                        if dev.startswith("cuda"):
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        m(x)
                        if dev.startswith("cuda"):
                            torch.cuda.synchronize()
                        times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            speed = {k: med["dense"] / med[k] for k in med if k != "dense"}
            speed_cl = {k: med["dense-channels_last"] / med[k] for k in med
                        if not k.startswith("dense")}
            results.append({"model": name, "target": target, "kappa_tdlrt": kappa,
                            "eval_compression_conv": comp, "median_seconds": med,
                            "speedup_vs_dense": speed,
                            "speedup_vs_dense_channels_last": speed_cl})
            print(f"{name} @ {100 * target:.0f} % (batch {ARGS.batch}, {ARGS.threads} threads): "
                  f"dense {1e3 * med['dense']:.1f} ms")
            for k, v in speed.items():
                vs_cl = (f", {speed_cl[k]:5.2f}x vs dense-channels_last" if k in speed_cl
                         else "")
                print(f"   {k:19s} {1e3 * med[k]:8.1f} ms  {v:5.2f}x faster{vs_cl}  "
                      f"(conv eval compression {comp[k]:.1f} %)")
    out = Path(ARGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"setting": vars(ARGS) | {"torch": torch.__version__},
                               "results": results}, indent=2))
    tmp.replace(out)
    print(f"written to {out}")
    return {"results": results}


if __name__ == "__main__":
    main()
