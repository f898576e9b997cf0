#!/usr/bin/env python
"""Benchmark figure: ATen operations and host syncs of one optimizer step, counted on CPU.

For LeNet5 (1x28x28) and the CIFAR-10 VGG16 (3x32x32, 13 convolutions), with every
convolution in Tucker form at >= 90 % eval compression (channel ranks
:math:`\\lceil\\kappa n\\rceil`, full spatial ranks, ``bench_nn_step.compress``), one
``TDLRT.step()`` (momentum 0.9, ``integrator="bug"``; also with ``descent="adam"`` and
with ``integrator="parallel"``; after one forward/backward at batch ``--batch``) is run
under :class:`tucker_dlra.nn._profiling.OpCounter`; for reference, so is
one ``torch.optim.SGD`` step (momentum 0.9, default implementation) of the dense model.
Counted: ATen operations dispatched (about one kernel launch each on a GPU) and host
synchronisations (``aten._local_scalar_dense`` = ``.item()``/``bool()``/``float()``, plus
``tolist()``, device-to-host copies and data-dependent shapes).  Only the step is counted,
not forward/backward.  Counts are deterministic (no timing).

Targets (GPU-shaped step): <= 2 host syncs per step whatever the number of layers; <= 2,000
ATen ops per step for VGG16.

Usage::

    python validation/bench_step_ops.py [--models lenet5 vgg16] [--batch 8] [--steps 2]
        [--out validation/out/bench_step_ops.json]

The table is printed; the JSON holds per model and variant the counts of the last counted
step, syncs by kind and the most frequent ops.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nn_step import bisect_fraction, channel_ranks  # noqa: E402
from tucker_dlra.app.models import build_model  # noqa: E402
from tucker_dlra.nn import (  # noqa: E402
    TDLRT,
    compression_report,
    is_tucker_layer,
    parameter_counts,
    tuckerize,
)
from tucker_dlra.nn._profiling import OpCounter  # noqa: E402

from tucker_dlra import valid_rank  # noqa: E402

SHAPES = {"lenet5": (1, 28, 28), "vgg16": (3, 32, 32), "resnet18": (3, 32, 32),
          "alexnet": (3, 32, 32)}


def tucker_ranks(shape: tuple[int, ...], kappa: float) -> tuple[int, ...]:
    """Channel ranks ``ceil(kappa n)``, full spatial ranks, lowered to a valid Tucker rank
    (:math:`r_i \\le \\prod_{j\\ne i} r_j`; e.g. a 3-channel input caps the output rank
    of a 3x3 convolution at 27)."""
    return valid_rank(channel_ranks(shape, kappa))


def compress(dense: nn.Module, target: float) -> tuple[nn.Module, float]:
    """Copy of ``dense`` with every ``nn.Conv2d`` in Tucker form (:func:`tucker_ranks` at
    the smallest common fraction kappa whose conv eval compression is >= ``target``, by
    bisection on the paper's counts); ``max_rank`` = the initial ranks.  Returns it and
    kappa."""
    convs = {n: tuple(m.weight.shape) for n, m in dense.named_modules()
             if isinstance(m, nn.Conv2d)}
    total = sum(math.prod(s) for s in convs.values())

    def comp(k: float) -> float:
        return 1 - sum(parameter_counts(s, tucker_ranks(s, k))["eval"]
                       for s in convs.values()) / total

    lo = bisect_fraction(comp, target, "conv compression")
    model = copy.deepcopy(dense)
    for name, s in convs.items():
        tuckerize(model, rank=tucker_ranks(s, lo), include=name, inplace=True)
    for m in model.modules():
        if is_tucker_layer(m):
            m.max_rank = tuple(m.ranks)  # the compression stays fixed while benchmarking
    return model, lo


def make(name: str, target: float) -> tuple[nn.Module, nn.Module, tuple[int, int, int]]:
    """Dense model, its Tucker copy at conv eval compression >= target, input shape."""
    shape = SHAPES[name]
    torch.manual_seed(0)
    dense = build_model(name, in_channels=shape[0], num_classes=10, image_size=shape[1:])
    tucker, _ = compress(dense, target)
    return dense, tucker, shape


def count(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          steps: int) -> OpCounter:
    """Forward/backward uncounted, the step counted; the counter of the last of ``steps``."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    counters = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        with OpCounter() as c:
            opt.step()
        counters.append(c)
    return counters[-1]


def run(models: list[str], batch: int, steps: int, target: float, tau: float) -> list[dict]:
    rows = []
    for name in models:
        dense, tucker, shape = make(name, target)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(batch, *shape, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        n_tucker = sum(1 for m in tucker.modules() if is_tucker_layer(m))
        comp = compression_report(tucker).eval_compression_conv
        variants = {
            "dense-sgd": (dense, torch.optim.SGD(dense.parameters(), lr=0.01, momentum=0.9)),
        }
        for variant, kw in (("tdlrt-bug", dict(momentum=0.9)),
                            ("tdlrt-adam", dict(descent="adam")),
                            ("tdlrt-par", dict(momentum=0.9, integrator="parallel"))):
            m = copy.deepcopy(tucker)
            variants[variant] = (m, TDLRT(m.parameters(), lr=0.01, tau=tau, **kw))
        for variant, (model, opt) in variants.items():
            c = count(model, opt, x, y, steps)
            rows.append({"model": name, "variant": variant, "tucker_layers": n_tucker,
                         "conv_eval_compression": comp, **c.to_dict()})
    return rows


def table(rows: list[dict]) -> str:
    head = f"{'model':8s} {'variant':10s} {'layers':>6s} {'ops':>7s} {'ops/layer':>9s} " \
           f"{'syncs':>6s}  syncs by kind"
    out = [head, "-" * len(head)]
    for r in rows:
        per = r["ops"] / r["tucker_layers"] if r["tucker_layers"] and r["variant"] != \
            "dense-sgd" else float("nan")
        out.append(f"{r['model']:8s} {r['variant']:10s} {r['tucker_layers']:6d} {r['ops']:7d} "
                   f"{per:9.0f} {r['syncs']:6d}  {r['syncs_by_kind']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["lenet5", "vgg16"], choices=sorted(SHAPES))
    p.add_argument("--batch", type=int, default=8, help="batch of the forward/backward "
                   "before each counted step (the step's op count does not depend on it)")
    p.add_argument("--steps", type=int, default=2, help="steps run; the last is reported "
                   "(the first allocates optimizer state)")
    p.add_argument("--target", type=float, default=0.9, help="conv eval compression")
    p.add_argument("--tau", type=float, default=0.1, help="TDLRT truncation tolerance")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"
                                        / "bench_step_ops.json"))
    a = p.parse_args(argv)
    for name, v, lo in (("--batch", a.batch, 1), ("--steps", a.steps, 1)):
        if v < lo:
            p.error(f"{name} must be >= {lo}; got {v}")
    if not 0.0 < a.target < 1.0:
        p.error(f"--target must lie in (0, 1); got {a.target}")
    torch.set_num_threads(1)
    rows = run(a.models, a.batch, a.steps, a.target, a.tau)
    print(table(rows))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"setting": vars(a) | {"torch": torch.__version__},
                               "results": rows}, indent=2))
    tmp.replace(out)
    print(f"written to {out}")
    return rows


if __name__ == "__main__":
    main()
