#!/usr/bin/env python
"""Convergence: error at t = 1 versus step size h for every integrator on the test problems.

Problems (``tucker_dlra.problems``; the standard test problems of the docs' theory page):

* ``a``     -- exactly low-rank trajectory, data mode F = dA/dt, exact (quadrature) substeps:
              the BUG family is exact (error ~1e-14 for every h);
* ``b``     -- the same with singular values down to 1e-10 and a perturbation eps = 1e-6:
              error ~ eps for every h (robust), while the direct integration of (8) fails;
* ``T1``    -- matrix, singular values 2^-j, n = 100, r = 16 (Ceruti & Lubich, BIT 62, 2022);
* ``T4a``   -- Tucker analogue, n = 20, d = 3, r = 10;
* ``T2``    -- discrete Schrödinger equation, n = 100, r = 8 (Ceruti, Kusch & Lubich, BIT 62, 2022);
* ``heat``  -- heat equation 16^3, rank 3 (a Kronecker-sum flow, exactly rank 3).

Methods: bug, ra_bug (truncated back to r), parallel_bug (atol 1e-10, ranks capped at r),
projector_splitting, midpoint_bug (truncated to r), direct.  Substeps: exact quadrature
for (a)/(b) (RK4 x4 for direct), RK4 x4 for T1/T4a as in the reference tables, one RK4 step for T2
as in the authors' code, exponential ("exact") substeps for the stiff heat equation
(RK4 x8 for direct); structured F where the problem has one.

Writes ``validation/out/convergence.{json,png}``; finished runs are kept in the JSON and
skipped on a rerun (``--fresh`` recomputes).  About 5 minutes on one core.

Usage::

    python validation/convergence.py [--fresh] [--only T1,T2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dlra_util import OUT, Store, pin_threads, run, slope  # noqa: E402

pin_threads(1)

HS = [0.1, 0.05, 0.02, 0.01]
METHODS = ["bug", "ra_bug", "parallel_bug", "projector_splitting", "midpoint_bug", "direct"]


def problems():
    import tucker_dlra.problems as P

    return {
        "a": (lambda: P.low_rank_trajectory((10, 10, 10), 3, seed=0), dict(quad=True)),
        "b": (lambda: P.low_rank_trajectory((10, 10, 10), 4, sigma_min=1e-10, eps=1e-6, seed=0),
              dict(quad=True)),
        "T1": (lambda: P.matrix_tiny_singular_values(100, 16, seed=1234),
               dict(substeps=4, structured=True)),
        "T4a": (lambda: P.tucker_tiny_singular_values(20, 10, seed=0),
                dict(substeps=4, structured=True)),
        "T2": (lambda: P.schrodinger(100, 8, seed=0), dict(structured=True)),
        "heat": (lambda: P.heat((16, 16, 16), 3, seed=0), dict(structured=True, exact=True)),
    }


def method_kwargs(method: str, rank: tuple[int, ...]) -> dict:
    if method == "parallel_bug":  # rank-adaptive, capped at r to compare at equal rank
        return dict(atol=1e-10, max_rank=list(rank))
    return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fresh", action="store_true", help="ignore stored results")
    ap.add_argument("--only", default="", help="comma-separated problem keys")
    args = ap.parse_args()
    store = Store("convergence", fresh=args.fresh, meta=dict(hs=HS, methods=METHODS, version=2))
    probs = problems()
    keys = [k for k in probs if not args.only or k in args.only.split(",")]
    for key in keys:
        make, opts = probs[key]
        p = None
        for method in METHODS:
            for h in HS:
                name = f"{key}/{method}/{h}"
                if store.get(name) is not None:
                    continue
                p = p or make()
                kw = dict(method_kwargs(method, p.rank))
                if opts.get("quad") and method != "direct":
                    # exact for the BUG family: their substep ODEs are y' = f(t) here;
                    # the direct method's factor ODEs depend on the state -> RK4
                    kw["substep"] = p.substep
                elif opts.get("quad"):
                    kw["substeps"] = 4
                elif opts.get("exact") and method != "direct":
                    kw["substep"] = "exact"  # linear autonomous F: exponential substeps
                elif opts.get("exact"):
                    kw["substeps"] = 8  # the direct method's ODE is nonlinear; stiff: 8 RK4
                else:
                    kw["substeps"] = opts.get("substeps", 1)
                structured = opts.get("structured", False) and method != "direct"
                res = run(p, method, h, structured=structured, **kw)
                res["best_error"] = p.best_error(1.0) if p.best_error else None
                store.put(name, res)
                print(f"{name:40s} error {res['error']!s:24s} {res['seconds']:.1f}s", flush=True)
    plot(store)


def plot(store: Store) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(problems())
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    summary = {}
    for ax, key in zip(axes.ravel(), keys, strict=True):
        best = None
        for method in METHODS:
            errs = [(store.get(f"{key}/{method}/{h}") or {}).get("error") for h in HS]
            pts = [(h, e) for h, e in zip(HS, errs, strict=True) if e is not None]
            s = slope(HS, errs)
            summary[f"{key}/{method}"] = dict(errors=errs, slope=s)
            if pts:
                ax.loglog(*zip(*pts, strict=True), "o-",
                          label=f"{method} (slope {s:.2f})" if s is not None else method)
            else:
                ax.plot([], [], "x", label=f"{method}: failed")
            r = store.get(f"{key}/{method}/{HS[0]}")
            best = best or (r or {}).get("best_error")
        if best:
            ax.axhline(best, color="k", ls=":", lw=1, label=f"best approx. {best:.2e}")
        h = [HS[0], HS[-1]]
        ax.loglog(h, [x * 1e-1 for x in h], "k--", lw=0.8, label="slope 1")
        ax.loglog(h, [x * x * 1e-1 for x in h], "k-.", lw=0.8, label="slope 2")
        ax.set_title(key)
        ax.set_xlabel("step size h")
        ax.set_ylabel("error at t = 1")
        ax.legend(fontsize=7)
    fig.suptitle("Error vs step size (validation/convergence.py)")
    fig.tight_layout()
    fig.savefig(OUT / "convergence.png", dpi=110)
    store.data["summary"] = summary
    store.save()
    print(f"wrote {OUT / 'convergence.png'}")


if __name__ == "__main__":
    main()
