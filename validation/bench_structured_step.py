#!/usr/bin/env python
"""Benchmark: one ``ra_bug`` step (Algorithm 1) of a 64^4 problem at Tucker rank 8.

F(Y) = sum_i Y x_i A_i (A_i skew, a linear tensor ODE such as a heat or Schrödinger
equation) is given in structured form: it takes a TuckerTensor and returns a TuckerTensor
of rank 2r (factors [U_i, A_i U_i]), so the step never forms a dense 64^4 array
(128 MiB in float64; enforced in ``tests/test_integrators.py``).  The baseline, timed in
the same process, is the same step with the dense F (``structured=False``): every
evaluation then builds the dense 64^4 tensor, applies the operator densely and projects.

Prints the median time per step (NumPy and torch CPU, float64, rk4 and euler substeps,
``rtol=1e-8``) and, for euler substeps (one evaluation of F per step; a dense rk4 step
takes ~40 s), the ratio dense / structured.  Threads are pinned (environment
variables before NumPy/torch are imported, and ``torch.set_num_threads``); the variants
are interleaved; medians over ``--repeats`` runs (the dense baseline runs
``--dense-repeats`` times).  Numbers are written to
``validation/out/bench_structured_step.json``.

Usage::

    python validation/bench_structured_step.py [--threads 1] [--repeats 7]
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
    p.add_argument("--threads", type=int, default=1, help="BLAS/torch threads (default 1)")
    p.add_argument("--repeats", type=int, default=7, help="timed structured steps per variant")
    p.add_argument("--dense-repeats", type=int, default=3,
                   help="timed dense-baseline steps (0: skip the baseline)")
    p.add_argument("--n", type=int, default=64, help="mode size (default 64)")
    p.add_argument("--rank", type=int, default=8, help="Tucker rank per mode (default 8)")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"
                                        / "bench_structured_step.json"))
    return p.parse_args()


ARGS = _parse()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after pinning the threads)

from tucker_dlra import TuckerTensor, ra_bug  # noqa: E402


def structured_operator(mats):
    """F(Y) = sum_i Y x_i A_i for TuckerTensor Y, as a TuckerTensor of rank 2r."""

    def F(t, y):
        if not isinstance(y, TuckerTensor):
            raise TypeError("structured F got a dense array")
        xp = y.xp
        r = y.rank
        core = xp.zeros(tuple(2 * ri for ri in r), dtype=y.dtype)
        for i in range(y.ndim):  # C in each block that is "new" in mode i only
            core[tuple(slice(ri, None) if j == i else slice(0, ri)
                       for j, ri in enumerate(r))] = y.core
        return TuckerTensor(core, [xp.concat([u, a @ u], axis=1)
                                   for u, a in zip(y.factors, mats, strict=True)])

    return F


def dense_operator(mats):
    """The same F on dense arrays (the baseline)."""
    from tucker_dlra import mode_product

    def F(t, y):
        out = None
        for i, a in enumerate(mats):
            term = mode_product(y, a, i)
            out = term if out is None else out + term
        return out

    return F


def problem(lib: str):
    rng = np.random.default_rng(0)
    n, r, d = ARGS.n, ARGS.rank, 4
    mats = []
    for _ in range(d):
        a = rng.standard_normal((n, n)) / n
        mats.append(a - a.T)
    core = rng.standard_normal((r,) * d)
    factors = [np.linalg.qr(rng.standard_normal((n, r)))[0] for _ in range(d)]
    if lib == "torch":
        import torch

        conv = torch.from_numpy
        mats = [conv(m) for m in mats]
        core = conv(core)
        factors = [conv(u.copy()) for u in factors]
    return mats, TuckerTensor(core, factors, orthonormal=True)


def time_step(F, y0, structured: bool, substep: str) -> tuple[float, tuple]:
    t = time.perf_counter()
    y1, info = ra_bug(F, 0.0, y0, 0.01, rtol=1e-8, structured=structured, substep=substep)
    return time.perf_counter() - t, (y1.rank, info.nfev)


def main() -> None:
    libs = ["numpy"] + ([] if ARGS.skip_torch else ["torch"])
    if "torch" in libs:
        import torch

        torch.set_num_threads(ARGS.threads)
    probs = {lib: problem(lib) for lib in libs}
    results: dict = {"n": ARGS.n, "rank": ARGS.rank, "threads": ARGS.threads, "runs": {}}
    for substep in ("rk4", "euler"):
        times: dict = {lib: [] for lib in libs}
        meta: dict = {}
        for lib in libs:  # warm-up
            mats, y0 = probs[lib]
            time_step(structured_operator(mats), y0, True, substep)
        for _ in range(ARGS.repeats):  # interleaved
            for lib in libs:
                mats, y0 = probs[lib]
                dt, meta[lib] = time_step(structured_operator(mats), y0, True, substep)
                times[lib].append(dt)
        dense: dict = {lib: [] for lib in libs}
        for _ in range(ARGS.dense_repeats if substep == "euler" else 0):
            for lib in libs:
                mats, y0 = probs[lib]
                dt, _ = time_step(dense_operator(mats), y0, False, substep)
                dense[lib].append(dt)
        for lib in libs:
            med = statistics.median(times[lib])
            row = {"structured_s": med, "rank_after": meta[lib][0], "nfev": meta[lib][1]}
            line = (f"{substep:5s} {lib:6s} structured ra_bug step: {1e3 * med:8.2f} ms "
                    f"(median of {ARGS.repeats}; nfev {meta[lib][1]}, rank -> {meta[lib][0]})")
            if dense[lib]:
                dmed = statistics.median(dense[lib])
                row["dense_s"] = dmed
                row["ratio_dense_over_structured"] = dmed / med
                line += f"; dense F: {dmed:7.3f} s, ratio {dmed / med:7.1f}x"
            print(line, flush=True)
            results["runs"][f"{substep}/{lib}"] = row
    out = Path(ARGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
