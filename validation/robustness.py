#!/usr/bin/env python
"""Robustness: error at t = 1 versus the smallest core singular value and versus eps.

Problem (b) of ``tucker_dlra.problems.low_rank_trajectory``: a rotating Tucker tensor of
rank 4 in 10^3 whose core unfoldings have singular values log-spaced from 1 down to
``sigma_min``, plus a full-rank perturbation of size eps (Koch & Lubich 2010; Tucker
form of the robustness test of Kieri, Lubich & Walach, SINUM 54, 2016).  Data mode F = dA/dt, h =
0.05 (exact quadrature substeps for
the BUG family, RK4 with 4 substeps for the direct method).

* Left panel: eps = 1e-6, sigma_min from 1e-1 to 1e-12.  Theory: BUG, rank-adaptive
  BUG, parallel BUG, projector splitting and midpoint BUG stay at the error level of the
  perturbation (their bounds do not depend on singular values); the direct integration
  of the factor equations (8) needs h < sigma_min and blows up.
* Right panel: sigma_min = 1e-10, eps from 1e-10 to 1e-1, BUG at h in {0.1, 0.01} against
  the best-approximation error (HOSVD): the matrix version of this test gives an error ~1.25x best,
  linear in
  eps and independent of h, also for eps > sigma_r.

Writes ``validation/out/robustness.{json,png}``; resumable (``--fresh`` recomputes).
About 2 minutes on one core.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dlra_util import OUT, Store, pin_threads, run  # noqa: E402

pin_threads(1)

SIGMAS = [1e-1, 1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12]
EPSS = [1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1]
METHODS = ["bug", "ra_bug", "parallel_bug", "projector_splitting", "midpoint_bug", "direct"]
H = 0.05


def _kw(p, method):
    if method == "direct":
        return dict(substeps=4)
    kw = dict(substep=p.substep)
    if method == "parallel_bug":
        kw.update(atol=1e-10, max_rank=8)
    return kw


def main() -> None:
    import tucker_dlra.problems as P

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    store = Store("robustness", fresh=args.fresh,
                  meta=dict(sigmas=SIGMAS, epss=EPSS, h=H, version=1))
    for smin in SIGMAS:
        p = None
        for method in METHODS:
            key = f"sigma/{method}/{smin}"
            if store.get(key) is None:
                p = p or P.low_rank_trajectory((10, 10, 10), 4, sigma_min=smin, eps=1e-6, seed=0)
                res = run(p, method, H, **_kw(p, method))
                res["best_error"] = p.best_error(1.0)
                store.put(key, res)
                print(f"{key:40s} {res['error']!s:24s} {res['message'][:60]}", flush=True)
    for eps in EPSS:
        p = None
        for h in (0.1, 0.01):
            key = f"eps/bug/{h}/{eps}"
            if store.get(key) is None:
                p = p or P.low_rank_trajectory((10, 10, 10), 4, sigma_min=1e-10, eps=eps, seed=0)
                res = run(p, "bug", h, substep=p.substep)
                res["best_error"] = p.best_error(1.0)
                store.put(key, res)
                print(f"{key:40s} {res['error']!s:24s} best {res['best_error']:.3e}", flush=True)
    plot(store)


def plot(store: Store) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    for method in METHODS:
        errs = [(store.get(f"sigma/{method}/{s}") or {}).get("error") for s in SIGMAS]
        pts = [(s, e) for s, e in zip(SIGMAS, errs, strict=True) if e is not None]
        fails = [s for s, e in zip(SIGMAS, errs, strict=True) if e is None]
        line = a1.loglog(*zip(*pts, strict=True), "o-", label=method)[0] if pts else None
        if fails:
            a1.loglog(fails, [1e2] * len(fails), "x", ms=10,
                      color=line.get_color() if line else "r", label=f"{method}: failed")
    best = [(store.get(f"sigma/bug/{s}") or {}).get("best_error") for s in SIGMAS]
    a1.loglog(SIGMAS, best, "k:", label="best approx. (HOSVD)")
    a1.set_xlabel("smallest core singular value sigma_min")
    a1.set_ylabel("error at t = 1")
    a1.set_title(f"eps = 1e-6, h = {H}")
    a1.invert_xaxis()
    a1.legend(fontsize=7)
    for h in (0.1, 0.01):
        errs = [(store.get(f"eps/bug/{h}/{e}") or {}).get("error") for e in EPSS]
        a2.loglog(EPSS, errs, "o-", label=f"BUG, h = {h}")
    best = [(store.get(f"eps/bug/0.1/{e}") or {}).get("best_error") for e in EPSS]
    a2.loglog(EPSS, best, "k:", label="best approx. (HOSVD)")
    a2.set_xlabel("perturbation eps")
    a2.set_ylabel("error at t = 1")
    a2.set_title("sigma_min = 1e-10")
    a2.legend(fontsize=8)
    fig.suptitle("Robustness to small singular values (validation/robustness.py)")
    fig.tight_layout()
    fig.savefig(OUT / "robustness.png", dpi=110)
    print(f"wrote {OUT / 'robustness.png'}")


if __name__ == "__main__":
    main()
