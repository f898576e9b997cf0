r"""A two-minute numerical demo of the core: ``python -m tucker_dlra.demo``.

1. **Truncation** (paper Section 3.1, the rank-adjustment step): a 64 x 64 x 3 x 3
   tensor with a decaying multilinear spectrum (a stand-in for a convolution kernel) is
   compressed by :func:`tucker_dlra.hosvd` at several tolerances; for each, the chosen
   Tucker rank, the compression, the guaranteed error bound and the true error.
2. **Integration** (the paper's Algorithm 1, rank-adaptive BUG): the gradient flow
   :math:`\dot W = -\nabla L(W)` of :math:`L(W) = \tfrac12\|W - A\|^2` (Eq. (5)), whose
   exact solution is :math:`W(t) = A + e^{-t}(W_0 - A)`, is integrated on the manifold
   of low Tucker rank from a rank-(1, 1, 1, 1) start with :func:`tucker_dlra.integrate`.
   The rank grows to what the tolerance needs; the error against the exact solution is
   printed over time.

Runs on NumPy by default, on PyTorch with ``--backend torch``.  Later issues replace this
demo with CNN training (see the README).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import TuckerTensor, hosvd, integrate
from .backend import import_torch

__all__ = ["main", "kernel_like_tensor"]


def kernel_like_tensor(shape: Sequence[int] = (64, 64, 3, 3), decay: float = 0.85,
                       noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    """Random tensor with geometrically decaying multilinear singular values plus noise.

    Core entries of mode index ``k_i`` are scaled by ``decay ** sum(k_i)`` and multiplied
    by random orthogonal factors; then ``noise``-relative white noise is added.  Cost
    :math:`O(\\sum_i n_i \\prod_j n_j)`.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(tuple(shape))
    for i, n in enumerate(shape):
        x = x * (decay ** np.arange(n)).reshape([-1 if k == i else 1 for k in range(len(shape))])
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        x = np.moveaxis(np.tensordot(q, x, axes=(1, i)), 0, i)
    x /= np.linalg.norm(x)
    return x + noise * rng.standard_normal(x.shape) / math.sqrt(x.size)


def _to_backend(x: np.ndarray, backend: str):
    if backend == "torch":
        return import_torch().from_numpy(x)
    return x


def _host(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def truncation_demo(backend: str = "numpy") -> None:
    """Part 1: hosvd at several relative tolerances (prints a table)."""
    a_np = kernel_like_tensor()
    a = _to_backend(a_np, backend)
    nrm = np.linalg.norm(a_np)
    print(f"1) Truncated HOSVD of a {'x'.join(map(str, a_np.shape))} tensor ({backend}); "
          "guarantee ||x - y|| <= rtol ||x||")
    print(f"   {'rtol':>7}  {'rank':>16}  {'stored':>8}  {'bound/||x||':>11}  {'err/||x||':>10}")
    for rtol in (0.3, 0.1, 0.03, 0.01):
        y, info = hosvd(a, rtol=rtol, full_output=True)
        err = np.linalg.norm(_host(y.full()) - a_np) / nrm
        stored = math.prod(y.rank) + sum(n * r for n, r in zip(y.shape, y.rank, strict=True))
        print(f"   {rtol:7.2g}  {str(y.rank):>16}  {stored / a_np.size:7.1%}  "
              f"{info.error_bound / nrm:11.3e}  {err:10.3e}")
        assert err <= rtol * (1 + 1e-10), "HOSVD error bound violated"


def integration_demo(backend: str = "numpy", rtol: float = 1e-3, h: float = 0.2,
                     t_end: float = 6.0) -> float:
    """Part 2: rank-adaptive BUG on a gradient flow with exact solution; returns the final error."""
    target_np = kernel_like_tensor(shape=(20, 20, 3, 3), decay=0.6, noise=0.0, seed=1)
    target = _to_backend(target_np, backend)
    rng = np.random.default_rng(2)
    core = _to_backend(np.ones((1, 1, 1, 1)), backend)
    factors = [_to_backend(np.linalg.qr(rng.standard_normal((n, 1)))[0], backend)
               for n in target_np.shape]
    y0 = TuckerTensor(core, factors, orthonormal=True)
    w0 = _host(y0.full())

    def grad_flow(t, w):  # F(t, W) = -grad L(W) = A - W
        return target - w

    def exact(t: float) -> np.ndarray:
        return target_np + math.exp(-t) * (w0 - target_np)

    print(f"\n2) Rank-adaptive BUG (Algorithm 1) for dW/dt = -(W - A), A of size "
          f"{'x'.join(map(str, target_np.shape))}, h = {h}, rtol = {rtol}, start rank (1,1,1,1)")
    t0 = time.perf_counter()
    res = integrate(grad_flow, y0, (0.0, t_end), h, method="ra_bug", rtol=rtol)
    elapsed = time.perf_counter() - t0
    print(f"   {'t':>5}  {'rank':>14}  {'||Y - W(t)|| / ||W(t)||':>24}")
    every = max(1, len(res.t) // 6)
    for k in list(range(0, len(res.t), every)) + ([len(res.t) - 1]
                                                   if (len(res.t) - 1) % every else []):
        w = exact(res.t[k])
        err = np.linalg.norm(_host(res.y[k].full()) - w) / np.linalg.norm(w)
        print(f"   {res.t[k]:5.2f}  {str(res.ranks[k]):>14}  {err:24.3e}")
    best = hosvd(target, rtol=rtol)
    print(f"   {res.nsteps} steps in {elapsed:.2f} s; the target itself needs rank {best.rank} "
          f"at rtol {rtol}")
    return float(err)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tucker_dlra.demo``; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m tucker_dlra.demo",
                                description="Truncate a tensor and integrate a toy DLRA problem.")
    p.add_argument("--backend", choices=("numpy", "torch"), default="numpy")
    args = p.parse_args(argv)
    truncation_demo(args.backend)
    err = integration_demo(args.backend)
    ok = err < 0.05
    print(f"\n{'OK' if ok else 'FAILED'}: final relative error {err:.2e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
