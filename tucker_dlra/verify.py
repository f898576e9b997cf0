r"""``tucker-dlra verify``: the integrator guarantees checked on synthetic problems, with plots.

Each check integrates a problem of :mod:`tucker_dlra.problems` with
:func:`tucker_dlra.integrate` (NumPy, float64) and compares with the exact solution:

``exactness``
    problem (a), an exactly low-rank trajectory: ``bug`` and ``ra_bug`` (the paper's
    Algorithm 1) reproduce it to rounding error (Ceruti & Lubich 2022).
``robustness``
    problem (b), core singular values down to ``sigma_min`` plus an ``eps`` perturbation: the
    BUG errors stay at the level of ``eps`` for every ``sigma_min``, while the direct
    integration of the factor equations (8) degrades (the curvature problem the paper's
    Section 3 is about; Koch & Lubich 2007).
``descent`` (Theorem 2)
    the gradient flow (c) of :math:`L(W) = \tfrac12\|\mathcal A(W) - B\|^2` integrated by
    ``ra_bug`` with explicit Euler substeps (= SGD with step ``h``): with :math:`\tau = 0` the
    loss decreases at every step, and with :math:`\tau > 0` it stays within
    :math:`\beta\tau` of that.
``error-order`` (Theorem 3)
    on (c), the error :math:`\|W(t) - Y(t)\|` of ``ra_bug`` with :math:`\tau \ll \lambda^2`
    falls like :math:`O(\lambda)` (fitted slope close to 1).
``rank-adaptivity``
    on (a), ``ra_bug`` started at an overestimated rank settles at the true rank.

Cost: a few seconds in all (problems of size at most 9 x 9 x 9).  NumPy only: ``tucker-dlra
verify`` runs without PyTorch (the figure needs matplotlib; ``--no-plots`` does not).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._io import ensure_writable_dir

__all__ = ["CHECKS", "add_arguments", "format_results", "main", "run_checks", "run_command"]


def _fro(x: Any) -> float:
    full = x.full() if hasattr(x, "full") else x
    return float(np.linalg.norm(np.asarray(full).ravel()))


def _slope(hs: list[float], errs: list[float]) -> float:
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def check_exactness(quick: bool, seed: int) -> dict[str, Any]:
    """Problem (a): bug and ra_bug reproduce an exactly low-rank trajectory."""
    from tucker_dlra import integrate, problems

    p = problems.low_rank_trajectory((7, 8, 9), (2, 3, 4), seed=seed)
    ref = _fro(p.solution(1.0))
    rel = {}
    for method, kw in (("bug", {}), ("ra_bug", {"atol": 1e-10})):
        res = integrate(p.F, p.y0, (0.0, 1.0), 0.1, method=method, substeps=8, **kw)
        rel[method] = p.error(res.y_final, 1.0) / ref
    bound = 1e-9  # rounding plus the RK4 substep error (~1e-10 here)
    ok = all(e <= bound for e in rel.values())
    return {"name": "exactness", "passed": ok, "relative_errors": rel, "bound": bound,
            "text": "relative error at t = 1: " + ", ".join(f"{k} {v:.1e}" for k, v in rel.items())
            + f" (bound {bound:.0e})"}


def check_robustness(quick: bool, seed: int) -> dict[str, Any]:
    """Problem (b): errors vs the smallest core singular value, BUG vs direct integration."""
    from tucker_dlra import integrate, problems

    eps, h = 1e-5, 0.05
    smins = [1e-2, 1e-6, 1e-12] if quick else [1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12]
    errs: dict[str, list[float]] = {"bug": [], "ra_bug": [], "direct": []}
    for smin in smins:
        p = problems.low_rank_trajectory((8, 8, 8), 3, sigma_min=smin, eps=eps, seed=11 + seed)
        for method in errs:
            kw = {"rank": 3} if method == "ra_bug" else {}  # augmented BUG truncated to 3
            try:
                with np.errstate(all="ignore"):
                    res = integrate(p.F, p.y0, (0.0, 1.0), h, method=method, substeps=2, **kw)
                e = p.error(res.y_final, 1.0)
            except (ValueError, ArithmeticError, np.linalg.LinAlgError):
                e = math.inf
            errs[method].append(e if math.isfinite(e) else math.inf)
    bug_ok = all(max(errs[m]) <= 3 * min(errs[m]) and max(errs[m]) <= 50 * eps
                 for m in ("bug", "ra_bug"))
    direct_fails = errs["direct"][-1] >= 100 * max(errs["bug"])
    return {"name": "robustness", "passed": bug_ok and direct_fails, "sigma_min": smins,
            "errors": errs, "eps": eps, "h": h,
            "text": f"error at t = 1 for sigma_min {smins[0]:.0e} .. {smins[-1]:.0e}: bug "
                    f"{min(errs['bug']):.1e}..{max(errs['bug']):.1e}, ra_bug "
                    f"{min(errs['ra_bug']):.1e}..{max(errs['ra_bug']):.1e} (eps = {eps:.0e}); "
                    f"direct {errs['direct'][0]:.1e} -> {errs['direct'][-1]:.1e}"}


def check_descent(quick: bool, seed: int) -> dict[str, Any]:
    """Theorem 2 on the gradient flow (c): the loss decreases along ra_bug with Euler substeps."""
    from tucker_dlra import integrate, problems

    p = problems.gradient_flow((6, 6, 6), 2, eps=1e-2, seed=seed)
    h, t_end = 0.05, 0.5 if quick else 1.0
    losses: dict[str, list[float]] = {}
    ranks: dict[str, list[list[int]]] = {}
    for label, atol in (("tau=0", 0.0), ("tau=1e-3", 1e-3)):
        res = integrate(p.F, p.y0, (0.0, t_end), h, method="ra_bug", substep="euler",
                        atol=atol, max_rank=6)
        losses[label] = [float(p.loss(y)) for y in res.y]
        ranks[label] = [list(r) for r in res.ranks]
        times = res.t
    exact = [float(p.loss(p.solution(t))) for t in times]
    l0 = losses["tau=0"]
    monotone = all(b < a for a, b in zip(l0, l0[1:], strict=False))
    # with tau > 0 every step may lose at most beta*tau; beta <= max ||grad L|| along the path
    beta = max(_fro(p.grad(p.solution(t))) for t in times) * 2
    lt = losses["tau=1e-3"]
    bounded = all(b <= a + beta * 1e-3 for a, b in zip(lt, lt[1:], strict=False))
    return {"name": "descent", "passed": monotone and bounded, "t": list(times),
            "losses": losses, "exact_loss": exact, "ranks": ranks, "h": h,
            "text": f"loss {l0[0]:.3e} -> {l0[-1]:.3e} in {len(l0) - 1} SGD-like steps, "
                    f"decreasing at every step with tau = 0: {monotone}; within beta*tau with "
                    f"tau = 1e-3: {bounded}"}


def check_error_order(quick: bool, seed: int) -> dict[str, Any]:
    """Theorem 3 on (c): error O(lambda) when tau << lambda^2."""
    from tucker_dlra import integrate, problems

    p = problems.gradient_flow((9, 9, 9), 2, seed=4 + seed)
    hs = [0.1, 0.05, 0.025] if quick else [0.1, 0.05, 0.025, 0.0125]
    errs = []
    for h in hs:
        res = integrate(p.F, p.y0, (0.0, 0.5), h, method="ra_bug", substeps=2, atol=1e-9)
        errs.append(p.error(res.y_final, 0.5))
    slope = _slope(hs, errs)
    ok = 0.75 <= slope <= 1.4
    return {"name": "error-order", "passed": ok, "h": hs, "errors": errs, "slope": slope,
            "text": f"error at t = 0.5 vs lambda {hs[0]}..{hs[-1]}: {errs[0]:.2e} -> "
                    f"{errs[-1]:.2e}, fitted order {slope:.2f} (expected 1)"}


def check_rank_adaptivity(quick: bool, seed: int) -> dict[str, Any]:
    """Problem (a) from an overestimated rank: ra_bug truncates back to the true rank."""
    from tucker_dlra import integrate, problems

    p = problems.low_rank_trajectory((8, 8, 8), 3, seed=5 + seed)
    y0 = problems.pad_rank(p.y0, 6, seed=1)
    res = integrate(p.F, y0, (0.0, 0.3), 0.1, method="ra_bug", substeps=4, atol=1e-8)
    err = p.error(res.y_final, 0.3)
    ok = tuple(res.ranks[-1]) == tuple(p.rank) and err <= 1e-8
    return {"name": "rank-adaptivity", "passed": ok, "t": list(res.t),
            "ranks": [list(r) for r in res.ranks], "true_rank": list(p.rank), "error": err,
            "text": f"ranks {tuple(res.ranks[0])} -> {tuple(res.ranks[-1])} (true "
                    f"{tuple(p.rank)}), error {err:.1e}"}


CHECKS = {
    "exactness": check_exactness,
    "robustness": check_robustness,
    "descent": check_descent,
    "error-order": check_error_order,
    "rank-adaptivity": check_rank_adaptivity,
}


def _plot(results: dict[str, dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    r = results["robustness"]
    for m, style in (("bug", "-o"), ("ra_bug", "--s"), ("direct", ":^")):
        ys = [e if math.isfinite(e) else np.nan for e in r["errors"][m]]
        ax[0, 0].loglog(r["sigma_min"], ys, style, label=m)
    failed = [s for s, e in zip(r["sigma_min"], r["errors"]["direct"], strict=True)
              if not math.isfinite(e)]
    if failed:
        top = max(e for m in r["errors"].values() for e in m if math.isfinite(e)) * 2
        ax[0, 0].loglog(failed, [top] * len(failed), "x", color="C2", ms=9,
                        label="direct diverged (inf/NaN)")
    ax[0, 0].axhline(r["eps"], color="gray", lw=0.8, label="eps")
    ax[0, 0].invert_xaxis()
    ax[0, 0].set_xlabel("smallest core singular value")
    ax[0, 0].set_ylabel("error at t = 1")
    ax[0, 0].set_title("robustness: problem (b)")
    ax[0, 0].legend(fontsize=8)
    d = results["descent"]
    for label, ls in d["losses"].items():
        ax[0, 1].plot(d["t"], ls, "-o", ms=3, label=f"ra_bug, Euler, {label}")
    ax[0, 1].plot(d["t"], d["exact_loss"], "k:", label="exact gradient flow")
    ax[0, 1].set_yscale("log")
    ax[0, 1].set_xlabel("t")
    ax[0, 1].set_ylabel("loss L(W)")
    ax[0, 1].set_title("Theorem 2: loss descent, problem (c)")
    ax[0, 1].legend(fontsize=8)
    e = results["error-order"]
    ax[1, 0].loglog(e["h"], e["errors"], "-o", label=f"ra_bug (order {e['slope']:.2f})")
    ax[1, 0].loglog(e["h"], [e["errors"][0] * h / e["h"][0] for h in e["h"]], "k:",
                    label="slope 1")
    ax[1, 0].set_xlabel("step size lambda")
    ax[1, 0].set_ylabel("error at t = 0.5")
    ax[1, 0].set_title("Theorem 3: error O(lambda), problem (c)")
    ax[1, 0].legend(fontsize=8)
    ra = results["rank-adaptivity"]
    for mode in range(len(ra["true_rank"])):
        ax[1, 1].step(ra["t"], [rk[mode] for rk in ra["ranks"]], where="post",
                      label=f"mode {mode + 1}")
    ax[1, 1].axhline(ra["true_rank"][0], color="gray", lw=0.8, ls="--", label="true rank")
    ax[1, 1].set_xlabel("t")
    ax[1, 1].set_ylabel("Tucker rank")
    ax[1, 1].set_title("rank adaptivity: problem (a) from rank 6")
    ax[1, 1].legend(fontsize=8)
    for a in ax.flat:
        a.grid(alpha=0.3)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "verify.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_checks(out: str | Path, quick: bool = False, seed: int = 0,
               plots: bool = True) -> dict[str, Any]:
    """Run every check of :data:`CHECKS`; write ``verify.json`` (and ``verify.png``) to ``out``.

    Returns ``{"checks": [...], "time": seconds, "figure": path or None}``; each check is a
    dict with ``name``, ``passed``, its numbers and a one-line ``text``.
    """
    out = Path(out)
    t0 = time.perf_counter()
    results = {}
    for name, fn in CHECKS.items():
        t1 = time.perf_counter()
        results[name] = fn(quick, seed)
        results[name]["time"] = time.perf_counter() - t1
    figure = str(_plot(results, out)) if plots else None
    record = {"checks": list(results.values()), "time": time.perf_counter() - t0,
              "figure": figure}
    out.mkdir(parents=True, exist_ok=True)
    from ._io import atomic_write_text

    atomic_write_text(out / "verify.json", json.dumps(record, indent=1, default=float))
    return record


def format_results(record: dict[str, Any]) -> str:
    """One line per check (PASS/FAIL and its numbers), then the figure and the time."""
    lines = [f"{'PASS' if c['passed'] else 'FAIL'}  {c['name']:<16} {c['text']}"
             for c in record["checks"]]
    if record.get("figure"):
        lines.append(f"figure: {record['figure']}")
    n_ok = sum(c["passed"] for c in record["checks"])
    lines.append(f"{n_ok}/{len(record['checks'])} checks passed in {record['time']:.1f} s")
    return "\n".join(lines)


def _seed(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer; got {s!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tucker-dlra verify`` (shared by this module's :func:`main` and the app)."""
    parser.add_argument("--out", type=Path, default=Path("runs/verify"),
                        help="output folder of the plots")
    parser.add_argument("--quick", action="store_true", help="fewer step sizes (a few seconds)")
    parser.add_argument("--seed", type=_seed, default=0, help="seed of the random test problems")
    parser.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def run_command(args: argparse.Namespace) -> int:
    """Run ``tucker-dlra verify`` with parsed ``args``: 0 all checks pass, 1 a check fails.

    Raises ``ValueError`` (one line) when the output folder cannot be written or the figure is
    asked for without matplotlib installed.
    """
    out = ensure_writable_dir(args.out)
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("the figure needs matplotlib: pip install matplotlib, or add "
                             "--no-plots") from None
    results = run_checks(out, quick=args.quick, seed=args.seed, plots=not args.no_plots)
    print(json.dumps(results, indent=1, default=str) if args.json else format_results(results))
    return 0 if all(r["passed"] for r in results["checks"]) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``tucker-dlra verify [options]`` without PyTorch; returns the exit status (2: bad input)."""
    parser = argparse.ArgumentParser(
        prog="tucker-dlra verify",
        description="check the integrators against the paper's theorems on synthetic problems")
    add_arguments(parser)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return run_command(args)
    except ValueError as exc:
        if os.environ.get("TUCKER_DLRA_DEBUG", "") not in ("", "0"):
            raise
        print(f"tucker-dlra verify: error: {exc}", file=sys.stderr)
        return 2
