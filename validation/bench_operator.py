#!/usr/bin/env python
"""Benchmark: the structured operator ``tucker_dlra.operators.kronecker_sum`` against the
same F written naively as a sum of TuckerTensors with ``+``.

F(Y) = sum_i Y x_i A_i (A_i skew; d = 3, n = 100, Tucker rank 10: the size of a 3-D
Schroedinger or heat equation on a 100^3 grid).  Two variants of the *same* F, both in
``structured=True`` mode (TuckerTensor in, TuckerTensor out, never dense):

* ``operator``: :func:`~tucker_dlra.operators.kronecker_sum` -- factors [U_i, A_i U_i]
  (rank 2r per mode), a (2r)^d core with d nonzero blocks;
* ``naive``: ``sum_i TuckerTensor(C, [.., A_i U_i, ..])`` with ``+`` -- every term keeps
  copies of all factors, so the sum has rank (d)r per mode and a (dr)^d core.

Measured: one operator application, and one ``ra_bug`` step (rk4 substeps, rtol 1e-8).
Threads are pinned before NumPy is imported; the variants are interleaved; the medians of
``--repeats`` runs and their ratio (naive / operator, same process) are printed and written
to ``validation/out/bench_operator.json``.

Usage::

    python validation/bench_operator.py [--threads 1] [--repeats 7] [--n 100] [--rank 10]
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
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per variant")
    p.add_argument("--n", type=int, default=100, help="mode size (default 100)")
    p.add_argument("--rank", type=int, default=10, help="Tucker rank per mode (default 10)")
    p.add_argument("--d", type=int, default=3, help="order of the tensor (default 3)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"
                                        / "bench_operator.json"))
    return p.parse_args()


ARGS = _parse()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after pinning the threads)

from tucker_dlra import TuckerTensor, ra_bug  # noqa: E402
from tucker_dlra.operators import kronecker_sum  # noqa: E402


def naive(mats):
    """F written with ``+``: one TuckerTensor per term, summed."""

    def F(t, y):
        out = None
        for i, a in enumerate(mats):
            f = list(y.factors)
            f[i] = a @ f[i]
            term = TuckerTensor(y.core, f)
            out = term if out is None else out + term
        return out

    return F


def main() -> None:
    rng = np.random.default_rng(0)
    n, r, d = ARGS.n, ARGS.rank, ARGS.d
    mats = []
    for _ in range(d):
        a = rng.standard_normal((n, n)) / n
        mats.append(a - a.T)
    y0 = TuckerTensor(rng.standard_normal((r,) * d),
                      [np.linalg.qr(rng.standard_normal((n, r)))[0] for _ in range(d)],
                      orthonormal=True)
    variants = {"operator": kronecker_sum(mats), "naive": naive(mats)}
    # same F: check before timing
    ref = variants["operator"](0.0, y0)
    alt = variants["naive"](0.0, y0)
    diff = float(np.linalg.norm(ref.full() - alt.full()) / np.linalg.norm(ref.full()))
    assert diff < 1e-12, diff
    print(f"d = {d}, n = {n}, rank {r}: F ranks operator {ref.rank}, naive {alt.rank}; "
          f"relative difference {diff:.1e}")

    def apply(F):
        t = time.perf_counter()
        F(0.0, y0)
        return time.perf_counter() - t

    def step(F):
        t = time.perf_counter()
        ra_bug(F, 0.0, y0, 0.01, rtol=1e-8, structured=True, substep="rk4")
        return time.perf_counter() - t

    results: dict = {"n": n, "rank": r, "d": d, "threads": ARGS.threads, "runs": {}}
    for what, fn in (("apply", apply), ("ra_bug step", step)):
        times: dict = {k: [] for k in variants}
        for F in variants.values():  # warm-up
            fn(F)
        for _ in range(ARGS.repeats):  # interleaved
            for k, F in variants.items():
                times[k].append(fn(F))
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["naive"] / med["operator"]
        print(f"{what:12s}: operator {1e3 * med['operator']:8.2f} ms, naive "
              f"{1e3 * med['naive']:8.2f} ms (medians of {ARGS.repeats}); naive / operator "
              f"= {ratio:.2f}x", flush=True)
        results["runs"][what] = {"operator_s": med["operator"], "naive_s": med["naive"],
                                 "ratio_naive_over_operator": ratio}
    out = Path(ARGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
