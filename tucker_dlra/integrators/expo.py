r"""Exponential substep solver for linear substep ODEs: Krylov (Arnoldi) approximation of
:math:`e^{hL}y_0` with a posteriori error control (NumPy only; no SciPy needed).

For a linear, autonomous F (e.g. :class:`~tucker_dlra.operators.LinearOperator` without
sources) every K-, C- and S-substep of the BUG integrators is a small linear ODE
:math:`\dot y = L y` whose exact flow is :math:`e^{hL}y_0`.  :func:`krylov_substep`
computes it by the Arnoldi method (Saad 1992, "Analysis of some Krylov subspace
approximations to the matrix exponential operator", SINUM 29; Hochbruck & Lubich 1997,
"On Krylov subspace approximations to the matrix exponential operator", SINUM 34) with
the time-stepping and error estimate of Expokit (Sidje 1998, ACM TOMS 24): the Krylov
space of dimension m is built once per sub-interval, and the sub-interval :math:`\tau` is
halved until the estimate :math:`\beta\,|[e^{\tau\hat H_m}]_{m+1,1}|` (the corrected
Arnoldi matrix :math:`\hat H_m` with the row :math:`h_{m+1,m}e_m^T`) is below the
tolerance; the basis is reused for every trial :math:`\tau`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import dtype_eps, namespace

__all__ = ["krylov_substep"]

State = Any


def _parts(y: State) -> list:
    return list(y) if isinstance(y, tuple) else [y]


def _pack(y0: State, parts: list) -> State:
    return tuple(parts) if isinstance(y0, tuple) else parts[0]


def _inner(a: State, b: State) -> complex:
    """:math:`\\langle a, b\\rangle = \\sum \\bar a b` over all parts."""
    total = 0j
    for x, y in zip(_parts(a), _parts(b), strict=True):
        xp = namespace(x)
        xc = xp.conj(x) if xp.isdtype(x.dtype, "complex floating") else x
        total += complex(xp.sum(xc * y))
    return total


def _norm(a: State) -> float:
    return math.sqrt(sum(float(namespace(x).linalg.vector_norm(namespace(x).reshape(x, (-1,))))
                         ** 2 for x in _parts(a)))


def _comb(coefs: list[complex], vs: list[State], real: bool) -> State:
    """``sum_j coefs[j] * vs[j]`` (real coefficients for a real state)."""
    out = None
    for c, v in zip(coefs, vs, strict=True):
        c = c.real if real else c
        term = [c * x for x in _parts(v)]
        out = term if out is None else [o + t for o, t in zip(out, term, strict=True)]
    return _pack(vs[0], out)


def _expm(a: np.ndarray) -> np.ndarray:
    """Exponential of a small dense matrix: scaling and squaring with a degree-18 Taylor
    polynomial (truncation error below :math:`0.5^{19}/19! \\approx 10^{-22}` relative)."""
    nrm = float(np.abs(a).sum(axis=0).max()) if a.size else 0.0
    s = max(0, math.ceil(math.log2(nrm / 0.5))) if nrm > 0.5 else 0
    b = a / (2.0**s)
    out = np.eye(a.shape[0], dtype=a.dtype)
    term = np.eye(a.shape[0], dtype=a.dtype)
    for k in range(1, 19):
        term = term @ b / k
        out = out + term
    for _ in range(s):
        out = out @ out
    return out


def _corrected_expm(hm: np.ndarray, k: int, tau: float) -> np.ndarray:
    r""":math:`e^{\tau\hat H_k}` with the corrected (k+1)x(k+1) Arnoldi matrix."""
    big = np.zeros((k + 1, k + 1), dtype=complex)
    big[: k + 1, :k] = tau * hm[: k + 1, :k]
    return _expm(big)


def krylov_substep(f: Callable[[float, State], State], t0: float, y0: State, h: float,
                   *, m: int = 30, tol: float | None = None, max_halvings: int = 60) -> State:
    r"""Exact flow :math:`e^{hL}y_0` of a linear autonomous substep ODE by Krylov projection.

    Parameters
    ----------
    f : callable
        ``f(t, y) = L y``; evaluated at :math:`t_0 + h/2` only (linearity and autonomy are
        assumed, not checked: an affine or time-dependent f gives a wrong result).
    t0, y0, h
        Start time, start value (array or tuple of arrays), step.
    m : int, default 30
        Maximal Krylov dimension per sub-interval (less when the space is invariant:
        "happy breakdown", then the result is exact up to rounding).
    tol : float, optional
        Relative error target per step; default :math:`100\,\varepsilon` of the dtype.
    max_halvings : int, default 60
        Safety limit on the sub-interval halvings.

    Returns
    -------
    The approximation of :math:`e^{hL}y_0`, same structure as ``y0``.

    Notes
    -----
    Cost per sub-interval: m evaluations of f, :math:`O(m^2 N)` for the Gram-Schmidt
    (with one re-orthogonalisation) and :math:`O(m^3)` per trial exponential.  The number of
    sub-intervals grows like :math:`h\|L\|/m`; for a non-stiff L one sub-interval suffices.
    Unlike ``substep="exact"`` (Taylor series with a power-method norm estimate) the error
    is controlled a posteriori and no norm estimate is needed.
    """
    first = _parts(y0)[0]
    xp = namespace(first)
    real = not xp.isdtype(first.dtype, "complex floating")
    eps = dtype_eps(xp, first.dtype)
    tol = 100.0 * eps if tol is None else float(tol)
    tm = t0 + h / 2
    y = y0
    t = 0.0
    tau = h
    while t < h * (1 - 1e-14):
        beta = _norm(y)
        if beta == 0.0:
            return y
        vs = [_pack(y, [x / beta for x in _parts(y)])]
        hm = np.zeros((m + 1, m), dtype=complex)
        tau = min(tau, h - t)
        k, happy, done = m, False, False
        e = np.zeros((1, 1))
        err = 0.0
        for j in range(m):
            w = f(tm, vs[j])
            for _ in range(2):  # classical Gram-Schmidt, twice
                cs = [_inner(v, w) for v in vs]
                hm[: j + 1, j] += cs
                w = _pack(w, [a - b for a, b in zip(_parts(w), _parts(_comb(cs, vs, real)),
                                                       strict=True)])
            hn = _norm(w)
            hm[j + 1, j] = hn
            k = j + 1
            if hn <= 10 * eps * max(np.abs(hm[: j + 2, j]).sum(), 1e-300) * (j + 1):
                happy = done = True  # invariant subspace: exact up to rounding
                e = _expm(tau * hm[:k, :k])
                break
            e = _corrected_expm(hm, k, tau)
            err = beta * abs(e[k, 0])
            if err <= tol * beta * max(tau / h, 1e-3):
                done = True
                break
            vs.append(_pack(w, [x / hn for x in _parts(w)]))
        for _ in range(max_halvings):
            if done:
                break
            tau /= 2
            e = _corrected_expm(hm, k, tau)
            err = beta * abs(e[k, 0])
            done = err <= tol * beta * max(tau / h, 1e-3)
        else:  # pragma: no cover - needs a pathological operator
            raise ValueError("substep='krylov' did not converge; the substep operator may not "
                             "be linear, or use substep='rk4' with more substeps")
        coefs = list(beta * e[:k, 0])
        y = _comb(coefs, vs[:k], real)
        t += tau
        if not happy and k == m and err < 0.1 * tol * beta * max(tau / h, 1e-3):
            tau *= 2  # the estimate leaves room: try a longer sub-interval next
    return y
