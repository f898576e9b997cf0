#!/usr/bin/env python
"""Benchmark: our factorized Tucker conv against tensorly-torch's ``FactorizedConv``.

A 256 -> 256 3x3 convolution (padding 1) at Tucker ranks (57, 57, 3, 3), the setting
of a known comparison ("tensorly-torch runs it about 2.6x faster than the dense conv").  Variants,
all
built from the same dense ``nn.Conv2d`` by a truncated HOSVD at equal ranks:

* ``dense``: ``nn.Conv2d``;
* ``tdlrt``: :class:`tucker_dlra.nn.TuckerConv2d` with ``forward_mode="factorized"``
  (1x1 conv with :math:`U_1^\\top`, 3x3 conv with :math:`C \\times_3 U_3 \\times_4 U_4`,
  1x1 conv with :math:`U_0`);
* ``tdlrt-kernel-only``: the same layer with ``param_grads = False``, the way
  :class:`tucker_dlra.nn.TDLRT` trains it (backward computes the input gradient and the
  dense kernel gradient only, no factor gradients);
* ``vanilla``: :class:`tucker_dlra.nn.VanillaTuckerConv` (same path, plain parameters);
* ``tltorch``: ``tltorch.FactorizedConv.from_conv(conv, rank, factorization="tucker",
  implementation="factorized")`` (needs ``pip install tensorly-torch``; skipped with a
  note when it is missing).  Importing tltorch switches tensorly's global backend to
  pytorch; the previous backend is restored at the end (our library never uses tensorly).

Two measurements per variant: inference (``torch.no_grad``, eval mode) and a training
forward + backward (train mode; for ``tdlrt`` this includes the capture of the dense
kernel gradient that the TDLRT optimizer needs).  Threads are pinned
(``torch.set_num_threads``), variants interleaved, medians reported, and the ratios
``time(tltorch) / time(ours)`` and ``time(dense) / time(ours)`` printed and written to
``validation/out/bench_factorized_conv.json``.

Usage::

    python validation/bench_factorized_conv.py [--threads 2] [--repeats 15] [--batch 32]
        [--size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=15, help="timed repetitions per variant")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--size", type=int, default=32, help="input height = width (default 32)")
    p.add_argument("--device", default="cpu", help="torch device (cpu or cuda)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"
                                        / "bench_factorized_conv.json"))
    return p.parse_args()


ARGS = _parse()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import torch  # noqa: E402  (after pinning the threads)
from torch import nn  # noqa: E402
from tucker_dlra.nn import TuckerConv2d, VanillaTuckerConv  # noqa: E402

RANKS = (57, 57, 3, 3)


def _sync() -> None:
    if ARGS.device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def main() -> dict:
    torch.set_num_threads(ARGS.threads)
    torch.manual_seed(0)
    dev = torch.device(ARGS.device)
    conv = nn.Conv2d(256, 256, 3, padding=1).to(dev)
    variants: dict[str, nn.Module] = {"dense": conv}
    variants["tdlrt"] = TuckerConv2d.from_conv(conv, rank=RANKS, forward_mode="factorized")
    variants["tdlrt-kernel-only"] = TuckerConv2d.from_conv(conv, rank=RANKS,
                                                           forward_mode="factorized")
    variants["tdlrt-kernel-only"].param_grads = False  # as TDLRT trains it
    variants["vanilla"] = VanillaTuckerConv.from_conv(conv, rank=RANKS,
                                                      forward_mode="factorized")
    note = None
    try:
        import tensorly as tl

        previous = tl.get_backend()
        import tltorch

        tlc = tltorch.FactorizedConv.from_conv(
            conv, rank=RANKS, factorization="tucker", implementation="factorized",
            decompose_weights=True).to(dev)
        with torch.no_grad():  # same Tucker factors as ours (tensorly's tucker is HOOI)
            tlc.weight.core.data = variants["tdlrt"].core.detach().clone()
            for f, u in zip(tlc.weight.factors, variants["tdlrt"].factors, strict=True):
                f.data = u.detach().clone()
        variants["tltorch"] = tlc
    except ImportError as exc:  # tensorly-torch is optional
        previous, note = None, f"tltorch not available ({exc}); pip install tensorly-torch"
    x = torch.randn(ARGS.batch, 256, ARGS.size, ARGS.size, device=dev)
    with torch.no_grad():
        ref = variants["tdlrt"](x)
        if "tltorch" in variants:  # same Tucker approximation: same output
            rel = float(torch.linalg.vector_norm(variants["tltorch"](x) - ref)
                        / torch.linalg.vector_norm(ref))
            assert rel < 1e-3, f"tltorch and ours disagree (relative difference {rel:.2e})"

    def infer(m):
        m.eval()
        with torch.no_grad():
            m(x)

    def train(m):
        m.train()
        m.zero_grad(set_to_none=True)
        m(x).square().mean().backward()
        if hasattr(m, "grad_full"):
            m.grad_full = None

    times: dict[str, dict[str, list[float]]] = {"inference": {}, "train_fwd_bwd": {}}
    for what, fn in (("inference", infer), ("train_fwd_bwd", train)):
        for name, m in variants.items():  # warm-up
            fn(m)
            times[what][name] = []
        for _ in range(ARGS.repeats):
            for name, m in variants.items():  # interleaved
                times[what][name].append(_timed(lambda m=m, fn=fn: fn(m)))
    if previous is not None:
        tl.set_backend(previous)
    med = {w: {n: statistics.median(v) for n, v in d.items()} for w, d in times.items()}
    result = {
        "setting": {"in": 256, "out": 256, "kernel": 3, "ranks": RANKS, "batch": ARGS.batch,
                    "size": ARGS.size, "threads": ARGS.threads, "device": ARGS.device,
                    "repeats": ARGS.repeats, "torch": torch.__version__},
        "median_seconds": med,
        "ratios": {},
        "note": note,
    }
    print(f"256->256 3x3 conv at ranks {RANKS}, batch {ARGS.batch}, {ARGS.size}x{ARGS.size}, "
          f"{ARGS.threads} threads, {ARGS.device}; medians of {ARGS.repeats}")
    for what in med:
        m = med[what]
        r = {f"dense/{n}": m["dense"] / m[n] for n in m if n != "dense"}
        if "tltorch" in m:
            r["tltorch/tdlrt"] = m["tltorch"] / m["tdlrt"]
            r["tltorch/vanilla"] = m["tltorch"] / m["vanilla"]
        result["ratios"][what] = r
        print(f"  {what:14s} " + "  ".join(f"{n} {1e3 * t:8.2f} ms" for n, t in m.items()))
        print(f"  {'':14s} " + "  ".join(f"{k} = {v:.2f}x" for k, v in r.items()))
    if note:
        print("  note:", note)
    out = Path(ARGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(f"  written to {out}")
    return result


if __name__ == "__main__":
    main()
