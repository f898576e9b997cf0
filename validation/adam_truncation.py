#!/usr/bin/env python
"""Adam inside TDLRT with rank truncation: why it stalls on a low-rank target, and a remedy.

Problem: a ``TuckerConv2d(8 -> 16, 3x3)`` started at full rank learns a teacher convolution of
Tucker rank (4, 3, 2, 2) by full-batch mean-squared error on fixed Gaussian inputs (256 images
of 8 x 10 x 10).  ``TDLRT(descent="sgd", lr=0.05, momentum=0.9, tau=0.05)`` finds the target's
ranks; ``TDLRT(descent="adam", lr=0.01, tau=0.05)`` stalls with larger ranks.

Diagnosis measured here, per step: the norm of the C-step's update restricted to the *new*
(augmented) directions, relative to ``tau * ||C||``.  Adam's second moment is transported into
the augmented basis by the squared change-of-basis matrices (``nn/optim.py``), so in a new
direction it starts at zero; one step later ``v = (1 - beta2) g^2`` and the bias correction uses
the global step count, hence the normalised step there is
``(1 - beta1) g / sqrt((1 - beta2) g^2) = 0.1 / 0.0316 = 3.16`` times ``lr`` per entry,
*whatever the size of the gradient*.  Every step thus writes a kick of size ``~3 lr`` into every
augmented direction; the relative truncation keeps it whenever its norm exceeds
``tau ||C||``, and the ranks and the loss stall at a level set by ``lr`` (not by the
gradient).  SGD's step in a new direction is ``lr * g``: it vanishes with the gradient.

Variants run (all ``lr = 0.01`` Adam unless named):

``sgd``              SGD + momentum 0.9, lr 0.05 (reference)
``adam``             the library's Adam: the second moment in new directions starts at the
                     mean of the transported one (an isotropic prior instead of zero), so the
                     first step there is ``~ lr * g / rms(g_old)``, proportional to the gradient
``adam-zero``        the earlier transport: zero second moment in new directions (the kick)
``adam-zero-lr1e-3`` the same with lr 0.001: the stall level falls with lr
``adam-tau0``        Adam, tau = 0 (no truncation)
``adam-reset``       the moments are dropped at every step (Adam without memory = signSGD-like)

The ``zero`` and ``reset`` variants subclass :class:`tucker_dlra.nn.TDLRT` here.
Writes ``validation/results/adam_truncation/adam_truncation.json`` and a PNG.

Usage: ``OMP_NUM_THREADS=1 nice -n 19 python validation/adam_truncation.py --steps 2000``
(~3 min on one core).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from tucker_dlra._io import atomic_write_text

OUT = Path(__file__).resolve().parent / "results" / "adam_truncation"
TEACHER_RANK = (4, 3, 2, 2)
TEACHER_NORM = 2.0
SHAPE = (16, 8, 3, 3)


def predicted_kick(lr: float, rank: tuple[int, ...] = TEACHER_RANK, betas=(0.9, 0.999)) -> float:
    """Norm of Adam's first step in the augmented directions of the core at ``rank``:
    ``(1 - beta1) / sqrt(1 - beta2) * lr`` per new entry (second moment transported as zero),
    times the square root of the number of new entries of the augmented core
    ``prod(min(2 r_i, n_i)) - prod(r_i)``.  Compare with ``tau * ||C||``."""
    import math

    aug = math.prod(min(2 * r, n) for r, n in zip(rank, SHAPE, strict=True))
    per_entry = (1 - betas[0]) / math.sqrt(1 - betas[1]) * lr
    return per_entry * math.sqrt(aug - math.prod(rank))


def teacher(seed: int = 0) -> torch.Tensor:
    """A 16 x 8 x 3 x 3 kernel of exact Tucker rank (4, 3, 2, 2), unit-scale core."""
    g = torch.Generator().manual_seed(seed)
    core = torch.randn(*TEACHER_RANK, generator=g, dtype=torch.float64)
    us = [torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))[0]
          for n, r in zip(SHAPE, TEACHER_RANK, strict=True)]
    w = core
    for i, u in enumerate(us):
        w = torch.movedim(torch.tensordot(u, w, dims=([1], [i])), 0, i)
    return w / torch.linalg.vector_norm(w) * TEACHER_NORM


def make_optimizer_class(variant: str):
    """TDLRT, or a subclass with the ``zero`` / ``reset`` treatment of Adam's moments.

    The library's TDLRT gives Adam's second moment in new directions the mean of the old
    one; ``zero`` reproduces the earlier behaviour (zero there: the kick), ``reset`` drops
    both moments at every step.
    """
    from tucker_dlra.nn import TDLRT

    from tucker_dlra.bug_step import core_transport

    if variant not in ("zero", "reset"):
        return TDLRT
    linear, square = ("momentum_buffer", "exp_avg"), ("exp_avg_sq",)

    def finish(out: dict) -> dict:
        if variant == "reset":
            return {k: v for k, v in out.items() if k not in ("exp_avg", "exp_avg_sq")}
        return out

    def transport(states: list, mats: list, move: Any) -> list:
        outs = []
        for st, m in zip(states, mats, strict=True):
            out = dict(st)
            for keys, sq in ((linear, False), (square, True)):
                for k in keys:
                    if k in out:
                        out[k] = move(out[k], m, sq)  # squares: zero in new directions
            outs.append(finish(out))
        return outs

    class Variant(TDLRT):
        @staticmethod
        def _transport_ks(states, bs):  # noqa: ANN001, ANN205
            return transport(states, bs, lambda x, b, sq: x @ (b * b if sq else b))

        @staticmethod
        def _transport_cores(states, a):  # noqa: ANN001, ANN205
            return transport(states, a, lambda x, at, sq: core_transport(x, at, square=sq))

    return Variant


VARIANTS = {
    "sgd": dict(descent="sgd", lr=0.05, momentum=0.9, tau=0.05),
    "adam": dict(descent="adam", lr=0.01, tau=0.05),
    "adam-zero": dict(descent="adam", lr=0.01, tau=0.05, _variant="zero"),
    "adam-zero-lr1e-3": dict(descent="adam", lr=0.001, tau=0.05, _variant="zero"),
    "adam-tau0": dict(descent="adam", lr=0.01, tau=0.0),
    "adam-reset": dict(descent="adam", lr=0.01, tau=0.05, _variant="reset"),
}


def run(name: str, steps: int, seed: int) -> dict:
    """Train one variant; loss, ranks and the new-direction kick per step."""
    from tucker_dlra.nn import TuckerConv2d

    kw = dict(VARIANTS[name])
    cls = make_optimizer_class(kw.pop("_variant", ""))
    torch.manual_seed(seed)
    w_t = teacher(seed)
    x = torch.randn(256, 8, 10, 10, dtype=torch.float64)
    y = torch.nn.functional.conv2d(x, w_t, padding=1)
    layer = TuckerConv2d(8, 16, 3, padding=1, bias=False).double()
    opt = cls(layer.parameters(), **kw)
    losses, ranks = [], []
    t0 = time.perf_counter()
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(layer(x), y)
            loss.backward()
            return loss
        loss = opt.step(closure)
        losses.append(float(loss.detach()))
        ranks.append(list(layer.ranks))
    return {"variant": name, "settings": VARIANTS[name], "loss": losses, "ranks": ranks,
            "final_loss": losses[-1], "final_rank": ranks[-1],
            "wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be >= 1; got {args.steps}")
    torch.set_num_threads(args.threads)
    res = {}
    for name in args.variants:
        r = run(name, args.steps, args.seed)
        res[name] = r
        print(f"{name:12s} final loss {r['final_loss']:.3e}  ranks {tuple(r['final_rank'])}  "
              f"({r['wall_s']:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "adam_truncation.json"
    atomic_write_text(path, json.dumps({"steps": args.steps, "seed": args.seed,
                                        "teacher_rank": TEACHER_RANK, "runs": res}))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, r in res.items():
            ax.semilogy(r["loss"], label=f"{name} {tuple(r['final_rank'])}")
        ax.set_xlabel("step")
        ax.set_ylabel("MSE loss")
        ax.set_title("Tucker-rank (4,3,2,2) teacher, TDLRT tau = 0.05")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.out / "adam_truncation.png", dpi=120)
    except ImportError:
        pass
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
