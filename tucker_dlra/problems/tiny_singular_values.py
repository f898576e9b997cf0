r"""Problems (e): a matrix and a Tucker tensor with singular values :math:`2^{-j}`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validate import check_int
from ..tensor import multi_mode_product
from ._base import (
    LinearTerm,
    Problem,
    _expm_skew,
    _odeco_core,
    _rng,
    _Target,
)
from .linear import (
    apply_linear,
    apply_linear_tucker,
)


# ----------------------------------------------------------------------------- (e)
def _skew_uniform(rng: np.random.Generator, n: int) -> np.ndarray:
    g = rng.random((n, n))
    return (g - g.T) / 2.0


def matrix_tiny_singular_values(
    n: int = 100,
    rank: int = 8,
    *,
    seed: int = 1234,
    backend: str = "numpy",
    dtype: Any = "float64",
    device: Any = None,
) -> Problem:
    r"""(e) Matrix with tiny singular values: :math:`A(t) = e^{tW_1} e^{t} D (e^{tW_2})^\top`,
    :math:`D = \mathrm{diag}(2^{-j})`.

    The test of Ceruti & Lubich, "An unconventional robust integrator for dynamical
    low-rank approximation", BIT 62 (2022), Sec. 5:
    n = 100, :math:`W_k = (\tilde W - \tilde W^\top)/2` with :math:`\tilde W \sim U[0,1]`,
    the linear ODE :math:`F(Y) = W_1 Y + Y + Y W_2^\top` (Tucker form
    :math:`Y + Y\times_1 W_1 + Y\times_2 W_2`) on [0, 1], started from the best
    rank-r approximation :math:`D_r`.  Best error at t:
    :math:`e^t (\sum_{j>r} 4^{-j})^{1/2}` (= 9.81e-2, 6.13e-3, 2.39e-5 at t = 1 for
    r = 4, 8, 16).
    """
    n = check_int(n, "n", 2)
    rank = check_int(rank, "rank", 1, n)
    tgt = _Target(backend, dtype, device, complex_problem=False)
    rng = _rng(seed)
    w1, w2 = _skew_uniform(rng, n), _skew_uniform(rng, n)
    sig = 2.0 ** -np.arange(1, n + 1)
    terms: list[LinearTerm] = [(1.0, {}), (1.0, {0: w1}), (1.0, {1: w2})]
    eye = np.eye(n)

    def solution_np(t: float) -> np.ndarray:
        return math.exp(t) * (_expm_skew(w1, t) * sig) @ _expm_skew(w2, t).T

    def best_error(t: float) -> float:
        return math.exp(t) * float(np.linalg.norm(sig[rank:]))

    return Problem(
        name="T1", y0=tgt.tucker(np.diag(sig[:rank]), [eye[:, :rank], eye[:, :rank]]),
        F=lambda t, y: apply_linear(terms, y, to=tgt.const),
        F_tucker=lambda t, y: apply_linear_tucker(terms, y, to=tgt.const),
        solution=lambda t: tgt(solution_np(t)), t_span=(0.0, 1.0), rank=(rank, rank),
        best_error=best_error, terms=terms,
        source="Ceruti & Lubich, BIT 62 (2022), Sec. 5",
        meta=dict(n=n, rank=rank, seed=seed if isinstance(seed, int) else None),
    )


def tucker_tiny_singular_values(
    n: int = 20,
    rank: int = 10,
    *,
    d: int = 3,
    seed: int = 0,
    backend: str = "numpy",
    dtype: Any = "float64",
    device: Any = None,
) -> Problem:
    r"""(e) The Tucker analogue of the matrix problem, :math:`A(t) = e^t D \times_i e^{tW_i}`.

    The Tucker analogue of :func:`matrix_tiny_singular_values`: n = 20, d = 3, :math:`D`
    superdiagonal with entries
    :math:`2^{-j}`, j = 1..n, random skew :math:`W_i` (uniform, as in the matrix problem),
    :math:`F(Y) = Y + \sum_i Y \times_i W_i`, started from the superdiagonal truncation
    to rank r.  :math:`A(t)` is orthogonally decomposable, so its best rank-(r,...,r)
    error is exactly :math:`e^t(\sum_{j>r}4^{-j})^{1/2}` (0.196, 0.0245, 1.53e-3 at
    t = 1 for r = 3, 6, 10): the HOSVD attains it and it equals the tail of a single
    unfolding, a lower bound.
    """
    n = check_int(n, "n", 2)
    d = check_int(d, "d", 2)
    rank = check_int(rank, "rank", 1, n)
    tgt = _Target(backend, dtype, device, complex_problem=False)
    rng = _rng(seed)
    ws = [_skew_uniform(rng, n) for _ in range(d)]
    sig = 2.0 ** -np.arange(1, n + 1)
    terms: list[LinearTerm] = [(1.0, {})] + [(1.0, {i: w}) for i, w in enumerate(ws)]
    eye = np.eye(n)

    def solution_np(t: float) -> np.ndarray:
        return math.exp(t) * multi_mode_product(_odeco_core(sig, d, None),
                                                [_expm_skew(w, t) for w in ws])

    def best_error(t: float) -> float:
        return math.exp(t) * float(np.linalg.norm(sig[rank:]))

    return Problem(
        name="T4a", y0=tgt.tucker(_odeco_core(sig[:rank], d, None), [eye[:, :rank]] * d),
        F=lambda t, y: apply_linear(terms, y, to=tgt.const),
        F_tucker=lambda t, y: apply_linear_tucker(terms, y, to=tgt.const),
        solution=lambda t: tgt(solution_np(t)), t_span=(0.0, 1.0), rank=(rank,) * d,
        best_error=best_error, terms=terms,
        source="Tucker analogue of Ceruti & Lubich, BIT 62 (2022), Sec. 5",
        meta=dict(n=n, d=d, rank=rank, seed=seed if isinstance(seed, int) else None),
    )
