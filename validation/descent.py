#!/usr/bin/env python
"""Loss descent (Theorem 2) and approximation error (Theorem 3) of Algorithm 1 on a gradient flow.

Problem (c) of ``tucker_dlra.problems.gradient_flow``: L(W) = 1/2 sum_i ||W x_i A_i - B_i||^2
on 10x10x10 tensors, B_i = W* x_i A_i + eps N_i, exact solution W(t) of the gradient flow
(5) known in closed form.  Algorithm 1 is ``ra_bug`` (RK4 substeps, absolute tolerance tau).

* Panel 1 (Theorem 2): loss L(W_k) along 20 steps of size lambda = 0.05 for
  tau in {0, 1e-3, 3e-2}, with the bound L(W_{k-1}) - alpha_k lambda + beta_k tau_k of
  Appendix C (alpha_k, beta_k from ``problems.descent_bound``) and the loss of the exact
  gradient flow.  Every step must satisfy the bound; with tau = 0 the loss decreases.
* Panel 2 (Theorem 3, lambda and tau/lambda terms): error ||W(1) - Y(1)|| versus lambda for
  tau in {1e-9, 1e-4, 1e-3, 1e-2} on a target with geometric spectrum (decay 0.6), so that
  truncations really discard ~tau per step: slope 1 for tau << lambda^2, growth like
  tau/lambda when tau is fixed and lambda shrinks.
* Panel 3 (Theorem 3, eps term): error versus the noise level eps at lambda = 0.01,
  tau = 1e-9 and ranks capped at 6 (the rank of the noise-free flow), so that the noise
  is the normal component of the flow: the error grows linearly in eps.

Writes ``validation/out/descent.{json,png}``; resumable.  About 2 minutes on one core.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dlra_util import OUT, Store, pin_threads, run, slope  # noqa: E402

pin_threads(1)

LAM = 0.05
TAUS_DESCENT = [0.0, 1e-3, 3e-2]
LAMS = [0.1, 0.05, 0.02, 0.01, 0.005]
TAUS = [1e-9, 1e-4, 1e-3, 1e-2]
EPSS = [0.0, 1e-4, 1e-3, 1e-2, 1e-1]


def descent_runs(store: Store) -> None:
    import tucker_dlra.problems as P
    from tucker_dlra.integrators import ra_bug

    p = P.gradient_flow((10, 10, 10), 2, eps=1e-2, seed=0)
    for tau in TAUS_DESCENT:
        key = f"descent/{tau}"
        if store.get(key) is not None:
            continue
        y, rows = p.y0, []
        for k in range(20):
            y1, info = ra_bug(p.F, k * LAM, y, LAM, substeps=8, atol=tau)
            q = P.descent_bound(p, k * LAM, y, LAM, y1, substeps=8)
            rows.append(dict(step=k + 1, loss=q["loss1"], bound=q["bound"], alpha=q["alpha"],
                             beta=q["beta"], tau=q["tau"], loss_prev=q["loss0"],
                             error_bound=info.truncation.error_bound, rank=list(y1.rank),
                             exact_loss=p.loss(p.solution((k + 1) * LAM)),
                             holds=q["loss1"] <= q["bound"] + 1e-12 * q["loss0"]))
            y = y1
        store.put(key, rows)
        print(f"{key}: bound holds in {sum(r['holds'] for r in rows)}/20 steps; "
              f"L: {rows[0]['loss_prev']:.4f} -> {rows[-1]['loss']:.4f}", flush=True)


def theorem3_runs(store: Store) -> None:
    import tucker_dlra.problems as P

    p = P.gradient_flow((10, 10, 10), 2, decay=0.6, seed=0)
    for tau in TAUS:
        for lam in LAMS:
            key = f"tau/{tau}/{lam}"
            if store.get(key) is None:
                res = run(p, "ra_bug", lam, substeps=1, atol=tau)
                store.put(key, res)
                print(f"{key:30s} {res['error']}", flush=True)
    for eps in EPSS:
        key = f"eps/{eps}"
        if store.get(key) is None:
            q = P.gradient_flow((10, 10, 10), 2, eps=eps, seed=0)
            # rank capped at the rank of the noise-free flow (3r): eps is the normal part
            res = run(q, "ra_bug", 0.01, substeps=1, atol=1e-9, max_rank=6)
            res["best_error"] = q.best_error(1.0)
            store.put(key, res)
            print(f"{key:30s} {res['error']}", flush=True)


def plot(store: Store) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(17, 5))
    for tau in TAUS_DESCENT:
        rows = store.get(f"descent/{tau}") or []
        if not rows:
            continue
        k = [0] + [r["step"] for r in rows]
        line = a1.semilogy(k, [rows[0]["loss_prev"]] + [r["loss"] for r in rows], "-",
                           label=f"L(W_k), tau = {tau:g}")[0]
        a1.semilogy([r["step"] for r in rows], [r["bound"] for r in rows], "v",
                    color=line.get_color(), ms=5,
                    label=f"bound L(W_k-1) - alpha lambda + beta tau ({tau:g})")
    rows = store.get(f"descent/{TAUS_DESCENT[0]}") or []
    if rows:
        a1.semilogy([0] + [r["step"] for r in rows],
                    [rows[0]["loss_prev"]] + [r["exact_loss"] for r in rows], "k:",
                    label="exact gradient flow")
    held = [sum(r["holds"] for r in store.get(f"descent/{t}") or []) for t in TAUS_DESCENT]
    a1.set_xlabel(f"step k (lambda = {LAM})")
    a1.set_ylabel("loss")
    a1.set_title(f"Theorem 2: bound holds in {held} of 20 steps")
    a1.legend(fontsize=6)
    summary = {}
    for tau in TAUS:
        errs = [(store.get(f"tau/{tau}/{lam}") or {}).get("error") for lam in LAMS]
        summary[f"tau={tau}"] = dict(errors=errs, slope=slope(LAMS, errs))
        a2.loglog(LAMS, errs, "o-", label=f"tau = {tau:g}")
    a2.loglog(LAMS, [0.1 * lam for lam in LAMS], "k--", lw=0.8, label="slope 1 (c2 lambda)")
    a2.loglog(LAMS, [1e-3 / lam for lam in LAMS], "k-.", lw=0.8, label="tau/lambda, tau=1e-3")
    a2.set_xlabel("lambda (step size)")
    a2.set_ylabel("||W(1) - Y(1)||")
    a2.set_title("Theorem 3: c2 lambda + c3 tau / lambda")
    a2.legend(fontsize=7)
    errs = [(store.get(f"eps/{e}") or {}).get("error") for e in EPSS]
    xs = [max(e, 1e-5) for e in EPSS]
    a3.loglog(xs, errs, "o-", label="ra_bug, lambda = 0.01, tau = 1e-9, max rank 6")
    a3.loglog(xs[1:], [0.3 * e for e in EPSS[1:]], "k--", lw=0.8, label="slope 1 (0.3 eps)")
    a3.set_xlabel("noise eps (eps = 0 plotted at 1e-5)")
    a3.set_ylabel("||W(1) - Y(1)||")
    a3.set_title("Theorem 3: c1 eps")
    a3.legend(fontsize=7)
    fig.suptitle("Algorithm 1 on a least-squares gradient flow (validation/descent.py)")
    fig.tight_layout()
    fig.savefig(OUT / "descent.png", dpi=110)
    store.data["summary"] = summary
    store.save()
    print(f"wrote {OUT / 'descent.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    store = Store("descent", fresh=args.fresh,
                  meta=dict(lam=LAM, taus=TAUS, lams=LAMS, epss=EPSS, version=1))
    descent_runs(store)
    theorem3_runs(store)
    plot(store)


if __name__ == "__main__":
    main()
