r"""Linear right-hand sides :math:`F(Y) = \sum_k c_k\, Y \times_{i \in S_k} A_i` and
their exponential."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..tensor import multi_mode_product
from ..tucker import TuckerTensor
from ._base import (
    Array,
    LinearTerm,
)


# ----------------------------------------------------------------------------- linear ops
def apply_linear(terms: Sequence[LinearTerm], y: Array, to: Callable | None = None) -> Array:
    r""":math:`\sum_k c_k\, Y \times_{i \in S_k} M_{k,i}` on a dense array.

    Parameters
    ----------
    terms : sequence of ``(coef, {mode: matrix})``
    y : dense array
    to : callable, optional
        Converts the (host) matrices to ``y``'s library/dtype/device.

    Notes
    -----
    The right-hand side of a linear tensor ODE (the tiny-singular-value and
    Schrödinger test problems).
    Cost :math:`O(\sum_k |S_k|\, n \prod_j n_j)`.
    """
    out = None
    for coef, mats in terms:
        modes = sorted(mats)
        ms = [mats[m] if to is None else to(mats[m]) for m in modes]
        v = multi_mode_product(y, ms, modes=modes) if modes else y
        v = v * coef if coef != 1 else v
        out = v if out is None else out + v
    return out


def apply_linear_tucker(terms: Sequence[LinearTerm], y: TuckerTensor,
                        to: Callable | None = None) -> TuckerTensor:
    r"""The linear operator of :func:`apply_linear` applied to a TuckerTensor, in Tucker form.

    A thin wrapper of :meth:`tucker_dlra.operators.LinearOperator.apply_tucker` (the
    public, documented form of this operator): the mode-i factor is
    :math:`[U_i, M_{i,1}U_i, \dots]` (one block per distinct matrix acting on mode i) and
    the core holds :math:`c_k C` in the block of term k.  For :math:`\sum_i Y\times_i A_i`
    the rank is :math:`2r` per mode and the core has d nonzero blocks of size :math:`r^d`.
    ``to`` converts the host matrices to ``y``'s library first (else they are converted
    by the operator).  Never forms a dense tensor.
    """
    from ..operators import LinearOperator

    if to is not None:
        conv: dict[int, Any] = {}

        def once(m: Any) -> Any:  # convert each distinct matrix once (keeps shared blocks)
            if id(m) not in conv:
                conv[id(m)] = to(m)
            return conv[id(m)]

        terms = [(c, {i: once(m) for i, m in mats.items()}) for c, mats in terms]
    return LinearOperator(terms).apply_tucker(y)


def expm_multiply_taylor(apply: Callable[[np.ndarray], np.ndarray], y: np.ndarray, t: float,
                         opnorm: float, tol: float = 1e-16) -> np.ndarray:
    r""":math:`e^{t\mathcal L} y` for a linear map :math:`\mathcal L` by a truncated Taylor series.

    The interval is split into steps with :math:`\|\mathcal L\|\,\delta t \le 1/2`; on each,
    the series is summed until a term falls below ``tol`` times the partial sum
    (so the result is accurate to a few units of rounding times the number of steps).
    Used for the reference solution of the Schrödinger problem, whose operator
    :math:`-i(D\,\cdot + \cdot\,D + V\cdot V)` is not a Kronecker sum.
    Cost: about 20 applications of :math:`\mathcal L` per unit of
    :math:`2\|\mathcal L\| t`.
    """
    if t == 0:
        return y.copy()
    nsteps = max(1, math.ceil(2.0 * abs(t) * max(opnorm, 1e-300)))
    dt = t / nsteps
    for _ in range(nsteps):
        term = y
        acc = y.copy()
        for k in range(1, 200):
            term = apply(term) * (dt / k)
            acc = acc + term
            if np.linalg.norm(term) <= tol * np.linalg.norm(acc):
                break
        y = acc
    return y
