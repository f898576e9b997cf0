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
TDLRT ranks.  Figure: loss and accuracy versus steps, mean and standard deviation over the
seeds (as the paper: mean and std over 10 initialisations).

``--spectrum per-index`` reads "singular values decaying exponentially with powers of ten" as
one power of ten per index (:math:`\\sigma_j = 10^{-j}` in every mode; CP term weights likewise)
instead of three decades spread over the rank; ``--rule split`` truncates with the guaranteed
rule; ``--vanilla-split balanced`` gives the vanilla layers the same kernels with the spectrum
split evenly between their factors (the spectral initialisation of factorised layers of
M. Khodak, N. Tenenholtz, L. Mackey, N. Fusi, ICLR 2021) instead of vanilla Tucker sharing
TDLRT's orthonormal factors; TDLRT's start is the same, so its runs are shared.  The report
page (``validation/make_report.py``) shows the runs stored under
``validation/results/fig2_right/``.

Writes ``<out>/robustness_spectral.{json,png}`` (default ``validation/out/``); resumable: a
finished (method, seed) run is read back from the JSON and skipped, and new ``--taus`` may be
added to a stored file (the vanilla runs are shared).  A stored file with other settings is
never overwritten: the call stops with exit code 2 unless ``--fresh`` (start over) or
``--tag NAME`` (a separate ``..._NAME.json``, e.g. for more steps) is given.  Every run also
records how far each conv layer moved (``drift``: kernel, core, and every factor column of
the Tucker layers), the check of the paper's argument that vanilla factor gradients scale with
the small core singular values.

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
import time
from pathlib import Path
from typing import Any

from tucker_dlra._io import atomic_write_text

OUT = Path(__file__).resolve().parent / "out"
METHODS = ("tdlrt", "vanilla-tucker", "vanilla-cp")
DECADES = 3.0  # the layers' spectral init: three powers of ten over each mode's rank


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def spectral_cp_(layer: Any, norm: float, generator: Any, decades: float = DECADES,
                 balanced: bool = False) -> None:
    """Spectral initialisation of a :class:`~tucker_dlra.nn.vanilla.VanillaCPConv`, in place.

    Factors :math:`A_i` with independent Gaussian unit-norm columns; the R rank-one terms get
    weights :math:`\\lambda_\\rho = 10^{-\\mathrm{decades}\\,\\rho/(R-1)}` (absorbed into
    :math:`A_0`, or with ``balanced`` split evenly, :math:`\\lambda_\\rho^{1/d}` into each of
    the d factors); the kernel is then scaled to Frobenius norm ``norm``.  Only the public
    ``factors`` and ``weight_full()`` are used.  Cost :math:`O(R \\prod_i n_i)`.
    """
    import torch

    with torch.no_grad():
        rank = int(layer.factors[0].shape[1])
        for u in layer.factors:
            g = torch.randn(u.shape, generator=generator, dtype=u.dtype)
            u.copy_(g / torch.linalg.vector_norm(g, dim=0, keepdim=True))
        d = len(layer.factors)
        if balanced:
            lam = torch.logspace(0.0, -decades if rank > 1 else 0.0, rank, dtype=torch.float64)
            for u in layer.factors:
                u.mul_((lam ** (1.0 / d)).to(u.dtype))
        else:
            layer.factors[0].mul_(torch.logspace(0.0, -decades if rank > 1 else 0.0, rank,
                                                 dtype=layer.factors[0].dtype))
        cur = float(torch.linalg.vector_norm(layer.weight_full()))
        for u in layer.factors if balanced else layer.factors[:1]:
            u.mul_((norm / max(cur, 1e-30)) ** (1.0 / d if balanced else 1.0))


def _span(decades: float | None, r: int) -> float:
    """Decades spanned by ``r`` singular values: ``decades``, or ``r - 1`` (one power of ten per
    index, sigma_j = 10^-j) when ``decades`` is None (``--spectrum per-index``)."""
    return float(r - 1) if decades is None else float(decades)


def build_models(seed: int, shape: tuple[int, int, int], num_classes: int, rank_fraction: float,
                 cp_rank: int | None, decades: float | None = DECADES,
                 vanilla_split: str = "core") -> dict[str, Any]:
    r"""The three LeNet5 variants of one seed (same dense linear layers, same Tucker start).

    ``decades``: every mode of the core is scaled by powers of ten falling over this many
    decades (CP: the term weights); 3 is the layers' ``init="spectral"``, other values redraw
    the TDLRT core as a Gaussian times :math:`\mathrm{diag}(10^{-\mathrm{decades}\,j/(r_i-1)})`
    in every mode, at the same norm; None: one power of ten per index
    (:math:`\sigma_j = 10^{-j}`, the reading "singular values decaying with powers of ten").

    ``vanilla_split``: where the vanilla layers keep the spectrum.  ``"core"``: vanilla Tucker
    gets TDLRT's orthonormal factors and core (the spectrum sits in the core), vanilla CP its
    term weights in :math:`A_0`.  ``"balanced"``: the same kernels, but the spectrum is split
    evenly between the factors, as in the spectral initialisation of factorised layers of
    M. Khodak, N. Tenenholtz, L. Mackey, N. Fusi, "Initialization and regularization of
    factorized neural layers", ICLR 2021 (:math:`U\Sigma^{1/2}, \Sigma^{1/2}V^\top`):
    vanilla Tucker :math:`U_i\,\mathrm{diag}(s_i)^{1/2}` with core
    :math:`G \times_i \mathrm{diag}(s_i)^{1/2}` (G the Gaussian, :math:`s_i` mode i's
    powers of ten), vanilla CP :math:`\lambda_\rho^{1/4}` in every factor.  TDLRT's start
    (orthonormal factors) is the same under both.
    Returns ``{method: model}``.
    """
    import torch
    from torch import nn
    from tucker_dlra.app.models import build_model
    from tucker_dlra.nn import tuckerize

    from tucker_dlra import multi_mode_product

    if vanilla_split not in ("core", "balanced"):
        raise ValueError(f"vanilla_split must be 'core' or 'balanced'; got {vanilla_split!r}")
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
            spec = [torch.logspace(0.0, -_span(decades, r) if r > 1 else 0.0, r,
                                   dtype=torch.float64) for r in src.ranks]
            if decades is None or decades != DECADES:
                c0 = torch.randn(src.core.shape, generator=gen, dtype=torch.float64)
                c = multi_mode_product(c0, [torch.diag(v) for v in spec]).to(src.core.dtype)
                scale = float(torch.linalg.vector_norm(src.core)) / float(
                    torch.linalg.vector_norm(c))
                c0 = c0 * scale
                src.core.copy_(c * scale)
            else:  # the layer's own spectral init: its Gaussian, recovered in float64
                c0 = multi_mode_product(src.core.double(), [torch.diag(1 / v) for v in spec])
            if tuple(t_layer.ranks) != tuple(src.ranks):
                raise RuntimeError(f"{name}: vanilla Tucker ranks {t_layer.ranks} != TDLRT ranks "
                                   f"{src.ranks}")
            if vanilla_split == "balanced":
                half = [torch.sqrt(v) for v in spec]
                t_layer.core.copy_(multi_mode_product(c0, [torch.diag(h) for h in half]))
                for p, q, h in zip(t_layer.factors, src.factors, half, strict=True):
                    p.copy_(q.double() * h)
            else:
                t_layer.core.copy_(src.core)
                for p, q in zip(t_layer.factors, src.factors, strict=True):
                    p.copy_(q)
            norm = float(torch.linalg.vector_norm(src.weight_full()))
            spectral_cp_(c_layer, norm, gen,
                         _span(decades, int(c_layer.factors[0].shape[1])),
                         balanced=vanilla_split == "balanced")
            for m in (t_layer, c_layer):
                m.bias.copy_(src.bias)
    return {"tdlrt": tdlrt, "vanilla-tucker": vt, "vanilla-cp": cp}


def run_one(method: str, model: Any, train_set: Any, test_set: Any, seed: int, steps: int,
            eval_every: int, batch_size: int, lr: float, momentum: float, tau: float,
            rule: str = "per_mode") -> dict:
    """Train ``model`` for ``steps`` SGD/TDLRT steps; record losses, test metrics and ranks."""
    import torch
    import torch.nn.functional as F
    from tucker_dlra.app.train import TrainConfig, build_optimizer, current_ranks, evaluate

    cfg = TrainConfig(method=method, lr=lr, momentum=momentum, tau=tau, rule=rule,
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
    start = _snapshot(model)
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
    rec["drift"] = drift(start, _snapshot(model))
    return rec


def _snapshot(model: Any) -> dict[str, dict[str, Any]]:
    """Detached copies of the kernel (and, for Tucker layers, core and factors) of ``conv1`` /
    ``conv2``."""
    out = {}
    for name in ("conv1", "conv2"):
        layer = getattr(model, name)
        snap = {"kernel": layer.weight_full().detach().clone()}
        if hasattr(layer, "core"):
            snap["core"] = layer.core.detach().clone()
            snap["factors"] = [u.detach().clone() for u in layer.factors]
        out[name] = snap
    return out


def drift(start: dict, end: dict) -> dict[str, dict[str, Any]]:
    r"""How far each conv layer moved: relative changes :math:`\|X_1 - X_0\| / \|X_0\|`.

    ``kernel`` for every layer; where core and factors kept their shapes (vanilla Tucker,
    TDLRT at tau = 0 and full rank) also ``core`` and, per mode, ``factor_cols``: the relative
    change of every factor column, in the order of the start's core singular values (the
    spectral start scales row j of every core unfolding by the j-th power of ten, so column
    j of :math:`U_i` belongs to the j-th singular value).  This is the quantity behind the
    paper's argument (Section 4.3): the vanilla gradient
    :math:`\partial L/\partial U_i = G_{(i)}\,(C \times_{j \ne i} U_j)_{(i)}^\top` scales
    column j with that singular value, the K-step gradient
    :math:`\partial L/\partial K_i = G_{(i)} V_i` (orthonormal :math:`V_i`) does not.
    Cost :math:`O(\prod_i n_i)` per layer.
    """
    import torch

    def rel(a: Any, b: Any, dim: int | None = None) -> Any:
        num = torch.linalg.vector_norm((b - a).double(), dim=dim)
        den = torch.linalg.vector_norm(a.double(), dim=dim).clamp_min(1e-300)
        return num / den

    out: dict[str, dict[str, Any]] = {}
    for name, s0 in start.items():
        s1 = end[name]
        rec: dict[str, Any] = {"kernel": float(rel(s0["kernel"], s1["kernel"]))}
        if "core" in s0 and "core" in s1 and s0["core"].shape == s1["core"].shape:
            rec["core"] = float(rel(s0["core"], s1["core"]))
            rec["factor_cols"] = [rel(u0, u1, 0).tolist()
                                  for u0, u1 in zip(s0["factors"], s1["factors"], strict=True)]
        out[name] = rec
    return out


def merge_meta(old: dict, new: dict) -> dict | None:
    """The settings of a stored JSON extended by a new call, or None if they differ.

    Runs may be added to a stored file when every setting but ``taus`` agrees (the vanilla
    runs do not depend on tau, so a new tolerance reuses them); the merged ``taus`` are the
    sorted union.  Any other difference (steps, spectrum, learning rate, ...) returns None:
    the caller must not mix such runs in one file.
    """
    rest_old = {k: v for k, v in old.items() if k != "taus"}
    rest_new = {k: v for k, v in new.items() if k != "taus"}
    if rest_old != rest_new:
        return None
    return {**new, "taus": sorted({float(t) for t in (*old.get("taus", []), *new["taus"])})}


def _band(curves: list[list[float]]):
    """Mean and mean -+ sample standard deviation over the curves (cut to the shortest)."""
    import numpy as np

    n = min(len(c) for c in curves)
    a = np.array([c[:n] for c in curves], dtype=float)
    sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros(n)
    mean = a.mean(0)
    return mean, np.maximum(mean - sd, 0.1 * mean), mean + sd  # kept > 0 for the log axes


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
    spec = ("sigma_j = 10^-j, one power of ten per index" if cfg.get("spectrum") == "per-index"
            else f"singular values over {cfg.get('decades', DECADES):g} powers of ten")
    rule = f", {cfg['rule']} rule" if cfg.get("rule") else ""
    if cfg.get("rank_fraction", 1.0) != 1.0:
        rule += f", rank fraction {cfg['rank_fraction']:g}"
    if cfg.get("vanilla_split"):
        rule += f", vanilla split {cfg['vanilla_split']}"
    fig.suptitle("LeNet5 / MNIST, conv layers at an overestimated rank with spectral init "
                 f"({spec}{rule}; paper Sec. 4.3, Fig. 2 right); band = mean -+ std over seeds",
                 fontsize=10)
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
    ap.add_argument("--spectrum", choices=["spread", "per-index"], default="spread",
                    help="spread: the powers of ten of --decades spread over each mode's rank; "
                    "per-index: one power of ten per index, sigma_j = 10^-j (writes "
                    "robustness_spectral_pi.*) [spread]")
    ap.add_argument("--rule", choices=["per_mode", "split"], default="per_mode",
                    help="TDLRT truncation rule [per_mode]; split writes *_split.*")
    ap.add_argument("--vanilla-split", choices=["core", "balanced"], default="core",
                    help="where the vanilla layers keep the spectrum: core (vanilla Tucker "
                    "shares TDLRT's orthonormal factors and core) or balanced (split evenly "
                    "between core and factors, Khodak et al. 2021; writes *_bal.*, TDLRT runs "
                    "are taken from the core file where it has them) [core]")
    ap.add_argument("--tag", default=None,
                    help="suffix of the output names (robustness_spectral<...>_<tag>.*) for a "
                    "variant the other names do not tell apart, e.g. more --steps or a smaller "
                    "--rank-fraction; letters, digits, '.', '-'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--fresh", action="store_true",
                    help="discard the runs stored under the output name and start over")
    args = ap.parse_args(argv)
    if args.tag is not None and not (args.tag and all(c.isascii() and (c.isalnum() or c in ".-")
                                                      for c in args.tag)):
        ap.error("--tag must be letters, digits, '.' or '-'")
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
    per_index = args.spectrum == "per-index"
    stem = "robustness_spectral" + ("_pi" if per_index else "" if args.decades == DECADES
                                    else f"_d{args.decades:g}")
    if args.decades != DECADES and not per_index:
        meta["decades"] = args.decades
    if per_index:
        meta["spectrum"] = "per-index"
    if args.rule != "per_mode":
        meta["rule"] = args.rule
        stem += f"_{args.rule}"
    base_path = args.out / f"{stem}{'_' + args.tag if args.tag else ''}.json"
    base_meta = dict(meta, **({"tag": args.tag} if args.tag else {}))
    if args.vanilla_split != "core":
        meta["vanilla_split"] = args.vanilla_split
        stem += "_bal"
    if args.tag:
        meta["tag"] = args.tag
        stem += f"_{args.tag}"
    path = args.out / f"{stem}.json"
    data = {"meta": meta, "runs": {}}
    if path.is_file() and not args.fresh:
        old = json.loads(path.read_text())
        merged = merge_meta(old.get("meta", {}), meta)
        if merged is None:
            print(f"error: {path} holds runs with other settings ({old.get('meta')}); "
                  "use --tag NAME for a new variant or --fresh to discard them",
                  file=sys.stderr)
            return 2
        data = {**old, "meta": merged}
    shared = 0
    if args.vanilla_split != "core" and base_path.is_file():
        # TDLRT's start does not depend on where the vanilla layers keep the spectrum: its
        # runs are the same as in the file of the core split (same seed, same settings)
        base = json.loads(base_path.read_text())
        if merge_meta(base["meta"], base_meta) is not None:
            for k, rec in base["runs"].items():
                key, seed = k.rsplit("/", 1)
                if (key.startswith("tdlrt-") and float(key[6:]) in args.taus
                        and int(seed[4:]) in args.seeds and k not in data["runs"]):
                    data["runs"][k] = rec
                    shared += 1
    if shared:
        print(f"{shared} TDLRT runs taken from {base_path.name}", flush=True)
    train_set, test_set = load_dataset(args.dataset, args.data_dir, progress=False)
    test_set = test_set.subset(slice(0, args.test_limit))
    variants = [(f"tdlrt-{t:g}" if m == "tdlrt" else m, m, t if m == "tdlrt" else 0.0)
                for m in args.methods for t in (args.taus if m == "tdlrt" else [None])]
    for seed in args.seeds:
        todo = [v for v in variants if f"{v[0]}/seed{seed}" not in data["runs"]]
        if not todo:
            continue
        models = build_models(seed, train_set.image_shape, train_set.num_classes,
                              args.rank_fraction, args.cp_rank,
                              None if per_index else args.decades, args.vanilla_split)
        for key, m, tau in todo:
            print(f"[{time.strftime('%H:%M:%S')}] {key} seed {seed}: {args.steps} steps",
                  flush=True)
            model = copy.deepcopy(models[m])  # every TDLRT tolerance starts from the same model
            rec = run_one(m, model, train_set, test_set, seed, args.steps, args.eval_every,
                          args.batch_size, args.lr, args.momentum, tau, args.rule)
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
