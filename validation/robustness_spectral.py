#!/usr/bin/env python
"""Paper Section 4.3 / Figure 2 (right): training from an overestimated rank, spectral init.

LeNet5 on MNIST; both convolutions are low-rank at an overestimated rank (default: the full
Tucker rank (20,1,5,5) / (50,20,5,5), CP rank max(n_out, n_in) = 20 / 50) and start from a
*spectral* initialisation -- singular values decaying exponentially over powers of ten -- while
the linear layers stay dense and are trained by plain SGD.  Three methods, same SGD settings
(lr 0.05, momentum 0.1, batch 128, no schedule), same data order and same dense layers per seed:

``tdlrt``
    :func:`tucker_dlra.nn.tuckerize` with ``kind="tdlrt", init="spectral"`` (the layers'
    spectral init: Gaussian core times :math:`\\mathrm{diag}(10^{-3j/(r_i-1)})` in every mode,
    orthonormal factors, kernel norm of PyTorch's default init), trained by Algorithm 1
    (``TDLRT`` optimiser, per-mode rule) once for every tolerance of ``--taus`` (default
    0, 0.05, 0.2; the paper does not give its tau).  tau = 0 keeps the full rank, i.e. the
    parametrisation of vanilla Tucker with only the integrator changed; tau > 0 lets the ranks
    fall;
``vanilla-tucker``
    fixed-rank Tucker layers started from *the same* core and factors as TDLRT, SGD on core and
    factors;
``vanilla-cp``
    fixed-rank CP layers: Gaussian factors with unit columns, term weights
    :math:`\\lambda_\\rho = 10^{-3\\rho/(R-1)}` (the CP analogue), rescaled to the TDLRT kernel's
    norm; SGD on the factors.

One optimisation step = one batch: Algorithm 1 for every Tucker layer, or one SGD update of all
factors (paper Section 4.3).  Recorded per step: the training batch loss; every
``--eval-every`` steps: test loss and accuracy on the first ``--test-limit`` test images and the
TDLRT ranks.  Figure: loss and accuracy versus steps, mean and min-max band over the seeds
(the paper: mean and std over 10 initialisations).

Writes ``<out>/robustness_spectral.{json,png}`` (default ``validation/out/``); resumable: a
finished (method, seed) run is read back from the JSON and skipped (``--fresh`` starts over).

Usage::

    OMP_NUM_THREADS=1 nice -n 19 python validation/robustness_spectral.py --data-dir DATA \
        --steps 500 --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
METHODS = ("tdlrt", "vanilla-tucker", "vanilla-cp")
DECADES = 3.0  # the layers' spectral init: three powers of ten over each mode's rank


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def spectral_cp_(layer: Any, norm: float, generator: Any, decades: float = DECADES) -> None:
    """Spectral initialisation of a :class:`~tucker_dlra.nn.vanilla.VanillaCPConv`, in place.

    Factors :math:`A_i` with independent Gaussian unit-norm columns; the R rank-one terms get
    weights :math:`\\lambda_\\rho = 10^{-\\mathrm{decades}\\,\\rho/(R-1)}` (absorbed into
    :math:`A_0`); the kernel is then scaled to Frobenius norm ``norm``.  Only the public
    ``factors`` and ``weight_full()`` are used.  Cost :math:`O(R \\prod_i n_i)`.
    """
    import torch

    with torch.no_grad():
        rank = int(layer.factors[0].shape[1])
        for u in layer.factors:
            g = torch.randn(u.shape, generator=generator, dtype=u.dtype)
            u.copy_(g / torch.linalg.vector_norm(g, dim=0, keepdim=True))
        lam = torch.logspace(0.0, -decades if rank > 1 else 0.0, rank, dtype=layer.factors[0].dtype)
        layer.factors[0].mul_(lam)
        cur = float(torch.linalg.vector_norm(layer.weight_full()))
        layer.factors[0].mul_(norm / max(cur, 1e-30))


def build_models(seed: int, shape: tuple[int, int, int], num_classes: int, rank_fraction: float,
                 cp_rank: int | None, decades: float = DECADES) -> dict[str, Any]:
    r"""The three LeNet5 variants of one seed (same dense linear layers, same Tucker start).

    ``decades``: every mode of the core is scaled by powers of ten falling over this many
    decades (CP: the term weights); 3 is the layers' ``init="spectral"``, other values redraw
    the TDLRT core as a Gaussian times :math:`\mathrm{diag}(10^{-\mathrm{decades}\,j/(r_i-1)})`
    in every mode, at the same norm.  Returns ``{method: model}``.
    """
    import torch
    from torch import nn
    from tucker_dlra.app.models import build_model
    from tucker_dlra.nn import tuckerize

    torch.manual_seed(seed)
    dense = build_model("lenet5", shape[0], num_classes, shape[1:])
    torch.manual_seed(seed + 10_000)
    tdlrt = tuckerize(dense, rank=rank_fraction, include=[nn.Conv2d], kind="tdlrt",
                      init="spectral")
    vt = tuckerize(dense, rank=rank_fraction, include=[nn.Conv2d], kind="vanilla-tucker")
    cp = tuckerize(dense, rank=cp_rank, include=[nn.Conv2d], kind="vanilla-cp")
    gen = torch.Generator().manual_seed(seed + 20_000)
    with torch.no_grad():
        for name in ("conv1", "conv2"):
            src, t_layer, c_layer = (getattr(m, name) for m in (tdlrt, vt, cp))
            if decades != DECADES:
                from tucker_dlra import multi_mode_product

                c = torch.randn(src.core.shape, generator=gen, dtype=src.core.dtype)
                c = multi_mode_product(c, [torch.diag(torch.logspace(
                    0.0, -decades if r > 1 else 0.0, r, dtype=c.dtype)) for r in src.ranks])
                c = c * (float(torch.linalg.vector_norm(src.core)) / float(
                    torch.linalg.vector_norm(c)))
                src.core.copy_(c)
            if tuple(t_layer.ranks) != tuple(src.ranks):
                raise RuntimeError(f"{name}: vanilla Tucker ranks {t_layer.ranks} != TDLRT ranks "
                                   f"{src.ranks}")
            t_layer.core.copy_(src.core)
            for p, q in zip(t_layer.factors, src.factors, strict=True):
                p.copy_(q)
            norm = float(torch.linalg.vector_norm(src.weight_full()))
            spectral_cp_(c_layer, norm, gen, decades)
            for m in (t_layer, c_layer):
                m.bias.copy_(src.bias)
    return {"tdlrt": tdlrt, "vanilla-tucker": vt, "vanilla-cp": cp}


def run_one(method: str, model: Any, train_set: Any, test_set: Any, seed: int, steps: int,
            eval_every: int, batch_size: int, lr: float, momentum: float, tau: float) -> dict:
    """Train ``model`` for ``steps`` SGD/TDLRT steps; record losses, test metrics and ranks."""
    import torch
    import torch.nn.functional as F
    from tucker_dlra.app.train import TrainConfig, build_optimizer, current_ranks, evaluate

    cfg = TrainConfig(method=method, lr=lr, momentum=momentum, tau=tau, rule="per_mode",
                      schedule="none", batch_size=batch_size, seed=seed)
    opt = build_optimizer(model, cfg)
    torch.manual_seed(seed)
    rec: dict[str, Any] = {"loss": [], "eval_step": [], "test_loss": [], "test_acc": [],
                           "ranks": [], "diverged_at": None}

    def do_eval(step: int) -> None:
        tl, ta = evaluate(model, test_set)
        rec["eval_step"].append(step)
        rec["test_loss"].append(tl if math.isfinite(tl) else None)
        rec["test_acc"].append(ta)
        rec["ranks"].append(current_ranks(model))

    do_eval(0)
    t0 = time.perf_counter()
    step, epoch = 0, 0
    model.train()
    while step < steps and rec["diverged_at"] is None:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        for x, y in train_set.batches(batch_size, shuffle=True, generator=gen):
            loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                rec["diverged_at"] = step + 1
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            try:
                opt.step()
            except FloatingPointError:
                rec["diverged_at"] = step + 1
                break
            step += 1
            rec["loss"].append(float(loss.detach()))
            if step % eval_every == 0 or step == steps:
                do_eval(step)
            if step >= steps:
                break
        epoch += 1
    rec["time_s"] = time.perf_counter() - t0
    rec["ms_per_step"] = 1000 * rec["time_s"] / max(step, 1)
    return rec


def _band(curves: list[list[float]]):
    import numpy as np

    n = min(len(c) for c in curves)
    a = np.array([c[:n] for c in curves], dtype=float)
    return a.mean(0), a.min(0), a.max(0)


def _smooth(x: list[float], w: int) -> list[float]:
    import numpy as np

    if len(x) < w or w <= 1:
        return list(x)
    c = np.cumsum(np.insert(np.asarray(x, dtype=float), 0, 0.0))
    return list((c[w:] - c[:-w]) / w)


def _variants(data: dict) -> list[str]:
    """Run keys without the seed, TDLRT tolerances first: ``tdlrt-0.05``, ..., ``vanilla-cp``."""
    keys = {k.rsplit("/", 1)[0] for k in data["runs"]}
    order = sorted((k for k in keys if k.startswith("tdlrt")), key=lambda k: float(k[6:]))
    return order + [m for m in METHODS[1:] if m in keys]


def _label(key: str) -> str:
    if key.startswith("tdlrt-"):
        return f"TDLRT (tau = {key[6:]})"
    return {"vanilla-tucker": "Vanilla Tucker", "vanilla-cp": "Vanilla CP"}.get(key, key)


def plot(data: dict, path: Path) -> Path:
    """Three panels: smoothed training loss, test accuracy, TDLRT ranks versus steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = data["runs"]
    cfg = data["meta"]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    w = max(1, min(20, cfg["steps"] // 25))
    for ci, key in enumerate(_variants(data)):
        color = f"C{ci}"
        recs = [r for k, r in runs.items() if k.rsplit("/", 1)[0] == key]
        losses = [_smooth(r["loss"], w) for r in recs if r["loss"]]
        if losses:
            mean, lo, hi = _band(losses)
            x = np.arange(len(mean)) + w
            ax[0].plot(x, mean, color=color, label=f"{_label(key)} ({len(recs)} seeds)")
            ax[0].fill_between(x, lo, hi, color=color, alpha=0.2)
        accs = [[100 * a for a in r["test_acc"]] for r in recs]
        mean, lo, hi = _band(accs)
        steps = recs[0]["eval_step"][:len(mean)]
        ax[1].plot(steps, mean, "o-", ms=3, color=color, label=_label(key))
        ax[1].fill_between(steps, lo, hi, color=color, alpha=0.2)
        if key.startswith("tdlrt"):
            for layer, mode, ls in (("conv1", 0, ":"), ("conv2", 0, "-"), ("conv2", 1, "--")):
                rr = [[e[layer][mode] for e in r["ranks"]] for r in recs]
                mean, _, _ = _band(rr)
                ax[2].plot(recs[0]["eval_step"][:len(mean)], mean, ls, color=color,
                           label=f"{_label(key)}: {layer} mode {mode}")
    ax[0].set_yscale("log")
    ax[0].set_xlabel("optimisation step")
    ax[0].set_ylabel(f"training loss (batch, moving avg. {w})")
    ax[1].set_xlabel("optimisation step")
    ax[1].set_ylabel(f"test accuracy [%] ({cfg['test_limit']} images)")
    ax[2].set_xlabel("optimisation step")
    ax[2].set_ylabel("TDLRT Tucker rank (mean over seeds)")
    ax[2].set_yscale("log")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle("LeNet5 / MNIST, conv layers at an overestimated rank with spectral init "
                 f"(singular values over {cfg.get('decades', DECADES):g} powers of ten; paper "
                 "Sec. 4.3, Fig. 2 right); band = min..max over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_lines(data: dict) -> list[str]:
    """One line per variant: final loss (mean of the last 50 batches), test accuracy, ranks."""
    lines = []
    for key in _variants(data):
        recs = [r for k, r in data["runs"].items() if k.rsplit("/", 1)[0] == key]
        tail = [sum(r["loss"][-50:]) / max(len(r["loss"][-50:]), 1) for r in recs]
        acc = [100 * r["test_acc"][-1] for r in recs]
        div = [r["diverged_at"] for r in recs if r["diverged_at"]]
        ranks = recs[0]["ranks"][-1] if key.startswith("tdlrt") else {}
        lines.append(f"{key:15s} seeds {len(recs)}: final train loss "
                     f"{min(tail):.4f}..{max(tail):.4f}, test acc "
                     f"{min(acc):.2f}..{max(acc):.2f} %, "
                     f"{sum(r['ms_per_step'] for r in recs) / len(recs):.0f} ms/step"
                     + (", final ranks (first seed) " + " ".join(
                         f"{n}:{tuple(v)}" for n, v in ranks.items()) if ranks else "")
                     + (f", diverged at steps {div}" if div else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True, help="folder holding mnist/ (IDX files)")
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "mnist-subset"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--test-limit", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.1)
    ap.add_argument("--taus", nargs="+", type=float, default=[0.0, 0.05, 0.2],
                    help="TDLRT truncation tolerances (per-mode rule), one run each")
    ap.add_argument("--rank-fraction", type=float, default=1.0,
                    help="Tucker rank of the conv layers as a fraction of each mode [1.0: full]")
    ap.add_argument("--cp-rank", type=int, default=None, help="CP rank [max(n_out, n_in)]")
    ap.add_argument("--decades", type=float, default=DECADES,
                    help="powers of ten spanned by each mode's singular values [3: the layers' "
                    "init='spectral']; other values write robustness_spectral_d<decades>.*")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args(argv)
    for name, ok in (("steps", args.steps >= 1), ("eval-every", args.eval_every >= 1),
                     ("test-limit", args.test_limit >= 1), ("threads", args.threads >= 1),
                     ("rank-fraction", 0 < args.rank_fraction <= 1)):
        if not ok:
            ap.error(f"--{name} out of range (steps, eval-every, test-limit, threads >= 1; "
                     f"rank-fraction in (0, 1])")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    from tucker_dlra.app.datasets import load_dataset

    torch.set_num_threads(args.threads)
    meta = {k: getattr(args, k) for k in ("dataset", "steps", "eval_every", "test_limit",
                                          "batch_size", "lr", "momentum", "taus",
                                          "rank_fraction", "cp_rank")}
    stem = "robustness_spectral" + ("" if args.decades == DECADES else f"_d{args.decades:g}")
    if args.decades != DECADES:
        meta["decades"] = args.decades
    path = args.out / f"{stem}.json"
    data = {"meta": meta, "runs": {}}
    if path.is_file() and not args.fresh:
        old = json.loads(path.read_text())
        if old.get("meta") == meta:
            data = old
        else:
            print(f"{path}: other settings ({old.get('meta')}); starting over", flush=True)
    train_set, test_set = load_dataset(args.dataset, args.data_dir, progress=False)
    test_set = test_set.subset(slice(0, args.test_limit))
    variants = [(f"tdlrt-{t:g}" if m == "tdlrt" else m, m, t if m == "tdlrt" else 0.0)
                for m in args.methods for t in (args.taus if m == "tdlrt" else [None])]
    for seed in args.seeds:
        todo = [v for v in variants if f"{v[0]}/seed{seed}" not in data["runs"]]
        if not todo:
            continue
        models = build_models(seed, train_set.image_shape, train_set.num_classes,
                              args.rank_fraction, args.cp_rank, args.decades)
        for key, m, tau in todo:
            print(f"[{time.strftime('%H:%M:%S')}] {key} seed {seed}: {args.steps} steps",
                  flush=True)
            model = copy.deepcopy(models[m])  # every TDLRT tolerance starts from the same model
            rec = run_one(m, model, train_set, test_set, seed, args.steps, args.eval_every,
                          args.batch_size, args.lr, args.momentum, tau)
            data["runs"][f"{key}/seed{seed}"] = rec
            _atomic_write(path, json.dumps(data) + "\n")
            print(f"  test acc {100 * rec['test_acc'][-1]:.2f} %, {rec['ms_per_step']:.0f} ms/step"
                  + (f", diverged at step {rec['diverged_at']}" if rec["diverged_at"] else ""),
                  flush=True)
    _atomic_write(path, json.dumps(data) + "\n")
    png = plot(data, args.out / f"{stem}.png")
    print("\n".join(summary_lines(data)))
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
