r"""Problems (d): the discrete Schrödinger and heat equations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validate import check_int, check_tolerance
from ..tensor import multi_mode_product
from ..tucker import TuckerTensor
from ._base import (
    Array,
    LinearTerm,
    Problem,
    _expm_sym,
    _ns,
    _random_core,
    _rng,
    _shape_rank,
    _Target,
)
from .linear import (
    apply_linear,
    apply_linear_tucker,
    expm_multiply_taylor,
)


# ----------------------------------------------------------------------------- (d)
def schrodinger(
    n: int = 100,
    rank: int = 12,
    *,
    seed: int = 0,
    backend: str = "numpy",
    dtype: Any = "complex128",
    device: Any = None,
) -> Problem:
    r"""(d) The discrete Schrödinger equation of Ceruti, Kusch & Lubich 2022, Sec. 6.1 (T2).

    .. math::
        \dot Y = -i\,(D Y + Y D^\top + V_{\cos} Y V_{\cos}), \qquad
        D = \tfrac12\,\mathrm{tridiag}(-1, 2, -1),\quad
        V_{\cos} = \mathrm{diag}(1 - \cos x_j),\ x_j = 2\pi j/n,\ j = -n/2, \dots, n/2-1,

    with :math:`Y_0 = U_0 S_0 V_0^\top`, :math:`U_0, V_0` orthonormal bases of uniform
    random :math:`n\times n` matrices, :math:`S_0 = \mathrm{diag}(10^{-i})` normalised to
    :math:`\|S_0\|_F = 1` (Ceruti, Kusch & Lubich, BIT 62, 2022, Sec. 6.1).  The initial value
    of the integrators is the rank-``rank`` truncation; the reference solution starts
    from the full :math:`Y_0` and is computed by :func:`expm_multiply_taylor` (accurate
    to ~1e-13; cached).  In Tucker notation :math:`F(Y) = -i(Y\times_1 D + Y\times_2 D +
    Y\times_1 V\times_2 V)`.

    Returns
    -------
    Problem
        ``energy(Y) = |<Y, H[Y]>|`` with :math:`H[Y] = DY + YD + VYV` (conserved by the
        exact flow, as is the norm); ``best_error(t)`` is the exact best rank-r
        error of the reference solution (matrix SVD); ``terms`` lists the three terms.
    """
    n = check_int(n, "n", 2)
    rank = check_int(rank, "rank", 1, n)
    tgt = _Target(backend, dtype, device, complex_problem=True)
    rng = _rng(seed)
    dmat = 0.5 * (2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1))
    x = 2 * np.pi * np.arange(-n // 2, n - n // 2) / n
    vmat = np.diag(1 - np.cos(x))
    u0, _ = np.linalg.qr(rng.random((n, n)))
    v0, _ = np.linalg.qr(rng.random((n, n)))
    s = 10.0 ** -np.arange(1, n + 1)
    s = s / np.linalg.norm(s)
    y_full = (u0 * s) @ v0.T

    terms: list[LinearTerm] = [(-1j, {0: dmat}), (-1j, {1: dmat}), (-1j, {0: vmat, 1: vmat})]
    h_terms: list[LinearTerm] = [(1.0, {0: dmat}), (1.0, {1: dmat}), (1.0, {0: vmat, 1: vmat})]
    opnorm = 2 * np.linalg.norm(dmat, 2) + np.linalg.norm(vmat, 2) ** 2

    def op(y: np.ndarray) -> np.ndarray:
        return -1j * (dmat @ y + y @ dmat.T + vmat @ y @ vmat)

    cache: dict[float, np.ndarray] = {0.0: y_full.astype(complex)}

    def reference(t: float) -> np.ndarray:
        t = float(t)
        if t not in cache:
            t0 = max((s for s in cache if s <= t), default=0.0)
            cache[t] = expm_multiply_taylor(op, cache[t0], t - t0, opnorm)
        return cache[t]

    def F(t: float, y: Array) -> Array:
        return apply_linear(terms, y, to=tgt.const)

    def F_tucker(t: float, y: TuckerTensor) -> TuckerTensor:
        return apply_linear_tucker(terms, y, to=tgt.const)

    def energy(y: Array | TuckerTensor) -> float:
        if isinstance(y, TuckerTensor):
            return abs(complex(y.inner(apply_linear_tucker(h_terms, y, to=tgt.const))))
        xp = _ns(y)
        hy = apply_linear(h_terms, y, to=tgt.const)
        return abs(complex(xp.sum(xp.conj(y) * hy)))

    def best_error(t: float) -> float:
        sv = np.linalg.svd(reference(t), compute_uv=False)
        return float(np.linalg.norm(sv[rank:]))

    y0 = tgt.tucker(np.diag(s[:rank]).astype(complex), [u0[:, :rank], v0[:, :rank]])
    return Problem(
        name="schrodinger", y0=y0, F=F, F_tucker=F_tucker,
        solution=lambda t: tgt(reference(t)), t_span=(0.0, 1.0), rank=(rank, rank),
        best_error=best_error, energy=energy, terms=terms,
        source="Ceruti, Kusch & Lubich, BIT 62 (2022), Sec. 6.1",
        meta=dict(n=n, rank=rank, seed=seed if isinstance(seed, int) else None,
                  norm0=1.0, energy0=float(abs(np.vdot(y_full, op(y_full) * 1j)))),
    )


def heat(
    shape: Sequence[int] = (16, 16, 16),
    rank: int | Sequence[int] = 3,
    *,
    kappa: float = 0.01,
    seed: int = 0,
    backend: str = "numpy",
    dtype: Any = "float64",
    device: Any = None,
) -> Problem:
    r"""(d) Heat equation :math:`\dot Y = \kappa \sum_i Y \times_i \Delta_i` on :math:`(0,1)^d`.

    :math:`\Delta_i = (n_i+1)^2\,\mathrm{tridiag}(1, -2, 1)` (Dirichlet, 3-point), a smooth
    rank-``rank`` Tucker initial value with :math:`\|Y_0\| = 1` (factors: orthonormalised
    Gaussian bumps of width 0.15 at random centres, random core).  Because the operator is
    a Kronecker sum, :math:`Y(t) = Y_0 \times_i e^{t\kappa\Delta_i}` exactly, and the
    solution keeps the Tucker rank of :math:`Y_0` (``best_error`` is 0).  One of the
    test problems of Ceruti, Einkemmer, Kusch & Lubich, "A robust second-order
    low-rank BUG integrator based on the midpoint rule", BIT 64 (2024).  Stiffness:
    :math:`\|\kappa\Delta_i\| \approx 4\kappa(n_i+1)^2`.
    """
    shape, rank = _shape_rank(shape, rank)
    kappa = check_tolerance(kappa, "kappa")
    tgt = _Target(backend, dtype, device, complex_problem=False)
    rng = _rng(seed)
    laps = [kappa * (n + 1) ** 2 * (np.eye(n, k=1) + np.eye(n, k=-1) - 2 * np.eye(n))
            for n in shape]
    us = []
    for n, r in zip(shape, rank, strict=True):  # smooth: Gaussian bumps at random centres
        x = np.arange(1, n + 1) / (n + 1)
        centres = rng.uniform(0.25, 0.75, r)
        us.append(np.linalg.qr(np.exp(-((x[:, None] - centres) ** 2) / (2 * 0.15**2)))[0])
    core = _random_core(rng, rank)
    terms: list[LinearTerm] = [(1.0, {i: a}) for i, a in enumerate(laps)]

    def solution_np(t: float) -> np.ndarray:
        return multi_mode_product(core, [_expm_sym(a, t) @ u for a, u in zip(laps, us,
                                                                           strict=True)])

    return Problem(
        name="heat", y0=tgt.tucker(core, us),
        F=lambda t, y: apply_linear(terms, y, to=tgt.const),
        F_tucker=lambda t, y: apply_linear_tucker(terms, y, to=tgt.const),
        solution=lambda t: tgt(solution_np(t)), t_span=(0.0, 1.0), rank=rank,
        best_error=lambda t: 0.0, terms=terms,
        source="heat test of Ceruti, Einkemmer, Kusch & Lubich, BIT 64 (2024)",
        meta=dict(shape=list(shape), rank=list(rank), kappa=kappa,
                  stiffness=float(max(4 * kappa * (n + 1) ** 2 for n in shape)),
                  seed=seed if isinstance(seed, int) else None),
    )
