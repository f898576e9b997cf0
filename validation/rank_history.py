#!/usr/bin/env python
"""Rank history and conservation of the rank-adaptive BUG (Ceruti, Kusch & Lubich 2022, Sec. 6.1).

* Panel 1: rank over time of ``ra_bug`` on the discrete Schrödinger equation (Ceruti, Kusch &
  Lubich, BIT 62, 2022, Sec. 6.1;
  n = 100, start rank 12, absolute tolerance theta = 1e-6, r_max = 30) for several h.
  Reference (the same paper, with the authors' l1-tail rule): rank 30 at h = 0.1, falling to 13
  at h = 0.001.  We use the l2 tail with the HOSVD "split" rule (tolerance theta / sqrt 2
  per mode), which keeps fewer singular values than the l1 rule.
* Panel 2: |‖Y(t)‖ - ‖Y0‖| and |E(t) - E0| over time at h = 0.01 for ``ra_bug`` and for
  the fixed-rank BUG at r = 12 (reference: ra_bug norm drift 5e-9 .. 2e-10, energy drift
  <= 9e-7; fixed-rank BUG norm drift ~0.15 h).
* Panel 3: error at t = 1 of ``ra_bug`` versus h (theta = 1e-6 fixed, and theta = 1e-4 h^2,
  equal at h = 0.1): with a fixed theta the n*theta term makes the error grow again at
  small h (reference: ~3.4e-5 at h = 0.02, 7e-4 at h = 0.001); theta ~ h^2 removes it
  (the n*theta term of the error bound then scales like h).
* Panel 4: rank adaptivity on the low-rank trajectory (a): from rank 1 (A(0) has rank 1,
  A(t) rank 3) and from an overestimated rank 6, both settle at the true rank 3.

Writes ``validation/out/rank_history.{json,png}``; resumable.  About 3 minutes on one core.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dlra_util import OUT, Store, finite, pin_threads  # noqa: E402

pin_threads(1)

HS = [0.1, 0.02, 0.01, 0.005, 0.002, 0.001]
THETA = 1e-6


def schrodinger_runs(store: Store) -> None:
    import tucker_dlra.problems as P
    from tucker_dlra.integrators import integrate

    p = P.schrodinger(100, 12, seed=0)
    for method, hs in (("ra_bug", HS), ("ra_bug_h2", HS), ("bug", [0.01])):
        for h in hs:
            key = f"T2/{method}/{h}"
            if store.get(key) is not None:
                continue
            rows = dict(t=[0.0], rank=[list(p.y0.rank)], norm=[float(p.y0.norm())],
                        energy=[p.energy(p.y0)])

            def record(t, y, rows=rows):
                rows["t"].append(t)
                rows["rank"].append(list(y.rank))
                rows["norm"].append(float(y.norm()))
                rows["energy"].append(p.energy(y))

            kw = {}
            if method == "ra_bug":
                kw = dict(atol=THETA, max_rank=30)
            elif method == "ra_bug_h2":
                kw = dict(atol=1e-4 * h * h, max_rank=30)
            res = integrate(p.F_tucker, p.y0, (0.0, 1.0), h,
                            method="bug" if method == "bug" else "ra_bug", structured=True,
                            keep=False, callback=record, **kw)
            rows["error"] = finite(p.error(res.y[-1], 1.0))
            rows["energy0"] = p.meta["energy0"]
            store.put(key, rows)
            print(f"{key:25s} error {rows['error']:.3e} final rank {rows['rank'][-1]}",
                  flush=True)


def low_rank_runs(store: Store) -> None:
    import tucker_dlra.problems as P
    from tucker_dlra.integrators import integrate

    cases = {
        "from_rank_1": (P.low_rank_trajectory((8, 8, 8), 3, initial_rank=1, relax=10.0, seed=5),
                        None),
        "from_rank_6": (P.low_rank_trajectory((8, 8, 8), 3, seed=5, relax=10.0), 6),
    }
    for name, (p, pad) in cases.items():
        key = f"a/{name}"
        if store.get(key) is not None:
            continue
        y0 = P.pad_rank(p.y0, pad, seed=1) if pad else p.y0
        res = integrate(p.F, y0, (0.0, 1.0), 0.05, method="ra_bug", atol=1e-3, substeps=2)
        store.put(key, dict(t=res.t, rank=[list(r) for r in res.ranks],
                            error=finite(p.error(res.y[-1], 1.0))))
        print(f"{key:25s} ranks {[r[0] for r in res.ranks]}", flush=True)


def plot(store: Store) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 4, figsize=(21, 5))
    a1, a2, a3, a4 = axes
    for h in HS:
        r = store.get(f"T2/ra_bug/{h}")
        if r:
            a1.plot(r["t"], [max(x) for x in r["rank"]], label=f"h = {h}")
    a1.set_xlabel("t")
    a1.set_ylabel("rank")
    a1.set_title(f"T2: ra_bug rank, theta = {THETA:g}, r_max = 30")
    a1.legend(fontsize=7)
    for key, label in (("T2/ra_bug/0.01", "ra_bug"), ("T2/bug/0.01", "bug r=12")):
        r = store.get(key)
        if not r:
            continue
        t = np.array(r["t"][1:])
        a2.semilogy(t, np.abs(np.array(r["norm"][1:]) - r["norm"][0]) + 1e-17,
                    label=f"{label}: |norm - norm0|")
        a2.semilogy(t, np.abs(np.array(r["energy"][1:]) - r["energy0"]) + 1e-17, "--",
                    label=f"{label}: |E - E0|")
    a2.set_xlabel("t (h = 0.01)")
    a2.set_title("T2: conservation of norm and energy")
    a2.legend(fontsize=7)
    for method, label in (("ra_bug", f"theta = {THETA:g}"), ("ra_bug_h2", "theta = 1e-4 h^2")):
        errs = [(store.get(f"T2/{method}/{h}") or {}).get("error") for h in HS]
        a3.loglog(HS, errs, "o-", label=f"ra_bug, {label}")
    a3.loglog(HS, [0.1 * h for h in HS], "k--", lw=0.8, label="slope 1")
    a3.set_xlabel("h")
    a3.set_ylabel("error at t = 1")
    a3.set_title("T2: n*theta term")
    a3.legend(fontsize=7)
    for name in ("from_rank_1", "from_rank_6"):
        r = store.get(f"a/{name}")
        if r:
            a4.plot(r["t"], [max(x) for x in r["rank"]], "o-", ms=3,
                    label=f"{name} (error {r['error']:.1e})")
    a4.axhline(3, color="k", ls=":", label="true rank 3")
    a4.set_xlabel("t (h = 0.05, atol = 1e-3)")
    a4.set_ylabel("max rank")
    a4.set_title("(a): rank adaptivity")
    a4.legend(fontsize=7)
    fig.suptitle("Rank-adaptive BUG: ranks and conservation (validation/rank_history.py)")
    fig.tight_layout()
    fig.savefig(OUT / "rank_history.png", dpi=110)
    print(f"wrote {OUT / 'rank_history.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    store = Store("rank_history", fresh=args.fresh, meta=dict(hs=HS, theta=THETA, version=2))
    schrodinger_runs(store)
    low_rank_runs(store)
    plot(store)


if __name__ == "__main__":
    main()
