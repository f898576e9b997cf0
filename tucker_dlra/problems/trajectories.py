r"""Problems (a)-(c): an exactly low-rank trajectory (exactness, robustness) and the
least-squares gradient flow of the paper's Eq. (5)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validate import check_int, check_tolerance
from ..tensor import multi_mode_product, unfold
from ..tucker import TuckerTensor, pad_core
from ._base import (
    Array,
    LinearTerm,
    Problem,
    _expm_skew,
    _hosvd_error,
    _hosvd_np,
    _ns,
    _odeco_core,
    _orth,
    _random_core,
    _rng,
    _shape_rank,
    _skew,
    _Target,
)
from .linear import (
    apply_linear_tucker,
)
from .quadrature import (
    quadrature_substep,
)


# ----------------------------------------------------------------------------- (a), (b)
def low_rank_trajectory(
    shape: Sequence[int] = (10, 10, 10),
    rank: int | Sequence[int] = 3,
    *,
    sigma_min: float | None = None,
    eps: float = 0.0,
    initial_rank: int | None = None,
    relax: float = 0.0,
    omega: float = 1.0,
    seed: int = 0,
    backend: str = "numpy",
    dtype: Any = "float64",
    device: Any = None,
) -> Problem:
    r"""(a)/(b): a rotating low-rank trajectory, :math:`F(t, Y) = \dot A(t)` ("data mode").

    .. math::
        A(t) = \big(C(t) \times_i U_i + \varepsilon R\big) \times_i e^{tW_i},
        \qquad C(t) = e^{t} C_0 + \sin(t)\, C_1,

    with random orthonormal :math:`U_i`, skew-symmetric :math:`W_i` (``omega`` scales
    them), random cores normalised to :math:`\|C_0\| = 1`, and a fixed dense
    :math:`R` with :math:`\|R\| = 1`.  :math:`\dot A = (\dot C \times_i U_i) \times_i
    e^{tW_i} + \sum_j A \times_j W_j`.

    * ``sigma_min=None, eps=0`` -- problem (a), exactly of Tucker rank ``rank``: the
      BUG integrators reproduce it up to rounding (Ceruti & Lubich, "An unconventional robust
      integrator for dynamical low-rank approximation", BIT 62, 2022: exactness).
    * ``sigma_min`` given -- problem (b): :math:`C_0` is superdiagonal (rotated) with
      singular values log-spaced from 1 to ``sigma_min`` in every unfolding and
      :math:`C_1 = 0` (all ranks equal), the Koch-Lubich / Lubich-Vandereycken-Walach
      robustness setting.  ``eps > 0`` adds the perturbation :math:`\varepsilon R`
      (the robustness test of Kieri, Lubich & Walach, SINUM 54, 2016, in Tucker form).
    * ``initial_rank=k`` -- :math:`C_0` has multilinear rank (k, ..., k) and ``y0`` is
      :math:`A(0)` at rank k, while :math:`A(t)` has rank ``rank`` for t > 0: the rank
      of a rank-adaptive integrator must grow (rank adaptivity).
    * ``relax=k > 0`` -- :math:`F(t, Y) = \dot A(t) + k\,(A(t) - Y)`: the same exact
      solution from :math:`Y_0 = A(0)`, but errors are damped at rate k instead of being
      carried along forever (useful when ``y0`` cannot follow :math:`A` at first, as with
      ``initial_rank``).  F then depends on Y: use ``rk4`` substeps (``substep`` is None).

    Parameters
    ----------
    shape : sequence of int (d >= 2)
    rank : int or sequence of int
    sigma_min : float in (0, 1], optional
    eps : float >= 0
        Size of the full-rank perturbation (the normal component of F is O(eps)).
    omega : float
        Scale of the rotations :math:`W_i` (spectral norm about ``omega``).
    seed : int
    backend : {"numpy", "torch"}
    dtype : float32 / float64 (default)
    device : torch device for ``backend="torch"``

    Returns
    -------
    Problem
        ``best_error(t)`` is 0 for ``eps == 0`` and otherwise the truncated-HOSVD error
        of :math:`A(t)` at ``rank`` (within :math:`\sqrt d` of the best).
        ``F_tucker`` returns a TuckerTensor of rank 2r when ``eps == 0`` (dense otherwise).
    """
    shape, rank = _shape_rank(shape, rank)
    eps = check_tolerance(eps, "eps")
    tgt = _Target(backend, dtype, device, complex_problem=False)
    rng = _rng(seed)
    d = len(shape)
    us = [_orth(rng, n, r) for n, r in zip(shape, rank, strict=True)]
    ws = [_skew(rng, n, omega) for n in shape]
    if initial_rank is not None:
        initial_rank = check_int(initial_rank, "initial_rank", 1, min(rank))
        if sigma_min is not None or eps:
            raise ValueError("initial_rank cannot be combined with sigma_min or eps")
        c0 = np.zeros(rank)
        c0[(slice(0, initial_rank),) * d] = _random_core(rng, (initial_rank,) * d)
        c0 = multi_mode_product(c0, [_orth(rng, r, r) for r in rank])
        c1 = _random_core(rng, rank)
    elif sigma_min is None:
        c0 = _random_core(rng, rank)
        c1 = _random_core(rng, rank)
    else:
        sigma_min = float(sigma_min)
        if not 0 < sigma_min <= 1:
            raise ValueError(f"sigma_min must be in (0, 1]; got {sigma_min}")
        if len(set(rank)) != 1:
            raise ValueError(f"sigma_min needs equal ranks in every mode; got rank={rank}")
        sig = np.logspace(0, math.log10(sigma_min), rank[0])
        c0 = _odeco_core(sig / np.linalg.norm(sig), d, rng)
        c1 = np.zeros(rank)
    r_noise = rng.standard_normal(shape)
    r_noise /= np.linalg.norm(r_noise)

    def core_at(t: float) -> tuple[np.ndarray, np.ndarray]:
        return math.exp(t) * c0 + math.sin(t) * c1, math.exp(t) * c0 + math.cos(t) * c1

    def dense_at(t: float) -> tuple[np.ndarray, np.ndarray]:
        qs = [_expm_skew(w, t) for w in ws]
        c, cd = core_at(t)
        b = multi_mode_product(c, us)
        if eps:
            b = b + eps * r_noise
        a = multi_mode_product(b, qs)
        adot = multi_mode_product(cd, [q @ u for q, u in zip(qs, us, strict=True)])
        for j, w in enumerate(ws):
            adot = adot + multi_mode_product(a, [w], modes=[j])
        return a, adot

    cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def at(t: float) -> tuple[np.ndarray, np.ndarray]:
        t = float(t)
        if t not in cache:
            if len(cache) > 64:
                cache.clear()
            cache[t] = dense_at(t)
        return cache[t]

    relax = check_tolerance(relax, "relax")

    def F(t: float, y: Array) -> Array:
        if relax:
            a, adot = at(t)
            return tgt(adot + relax * a) - relax * y
        return tgt(at(t)[1])

    def F_tucker(t: float, y: TuckerTensor) -> TuckerTensor | Array:
        if eps or relax:
            return F(t, y.full())
        qs = [_expm_skew(w, t) for w in ws]
        c, cd = core_at(t)
        fs = [q @ u for q, u in zip(qs, us, strict=True)]
        r = rank
        core = pad_core(cd, [(0, ri) for ri in r])
        for i in range(d):
            core = core + pad_core(c, [(ri, 0) if k == i else (0, ri) for k, ri in enumerate(r)])
        factors = [np.concatenate([f, w @ f], axis=1) for f, w in zip(fs, ws, strict=True)]
        return TuckerTensor(tgt(core), [tgt(f) for f in factors])

    def solution(t: float) -> Array:
        return tgt(at(t)[0])

    def best_error(t: float) -> float:
        if not eps:
            return 0.0
        return _hosvd_error(at(t)[0], rank)

    # y0: exact for eps == 0; the HOSVD truncation of A(0) otherwise
    c_init = core_at(0.0)[0]
    if eps:
        a0 = at(0.0)[0]
        bases = [np.linalg.svd(unfold(a0, i), full_matrices=False)[0][:, :r]
                 for i, r in enumerate(rank)]
        y0 = tgt.tucker(multi_mode_product(a0, bases, transpose=True), bases)
    elif initial_rank is not None:
        core0, bases = _hosvd_np(multi_mode_product(c_init, us), (initial_rank,) * d)
        y0 = tgt.tucker(core0, bases)
    else:
        y0 = tgt.tucker(c_init, us)
    kind = "a" if sigma_min is None and not eps else "b"
    return Problem(
        name=f"low_rank_trajectory({kind})",
        y0=y0, F=F, F_tucker=F_tucker, solution=solution, t_span=(0.0, 1.0), rank=rank,
        best_error=best_error, substep=None if relax else quadrature_substep,
        source=("Ceruti & Lubich, BIT 62 (2022): exactness; Koch & Lubich, SIMAX 31 (2010) / "
                "Lubich, Vandereycken & Walach, SINUM 56 (2018): robustness"),
        meta=dict(shape=list(shape), rank=list(rank), sigma_min=sigma_min, eps=eps,
                  initial_rank=initial_rank, relax=relax, omega=omega,
                  seed=seed if isinstance(seed, int) else None),
    )


# ----------------------------------------------------------------------------- (c)
def gradient_flow(
    shape: Sequence[int] = (8, 8, 8),
    rank: int | Sequence[int] = 2,
    *,
    eps: float = 0.0,
    decay: float | None = None,
    rows: int | None = None,
    seed: int = 0,
    backend: str = "numpy",
    dtype: Any = "float64",
    device: Any = None,
) -> Problem:
    r"""(c): the gradient flow :math:`\dot W = -\nabla L(W)` of a least-squares loss (Eq. (5)).

    .. math::
        L(W) = \tfrac12 \|\mathcal A(W) - B\|^2 = \tfrac12 \sum_{i=1}^d
        \|W \times_i A_i - B_i\|^2, \qquad B_i = W_\star \times_i A_i + \varepsilon N_i,

    i.e. :math:`\mathcal A` stacks d random mode-wise maps :math:`A_i` (``rows`` x
    :math:`n_i`, Gaussian / :math:`\sqrt{rows}`), :math:`W_\star` is a low-rank
    target, :math:`N_i` are noise tensors with :math:`\|N_i\| = 1`.  Then
    :math:`\mathcal A^*\mathcal A = \sum_i (\cdot)\times_i G_i`, :math:`G_i = A_i^\top A_i`,
    is a Kronecker *sum*, so the exact solution is

    .. math::
        W(t) = W_\infty + (W_0 - W_\infty) \times_i e^{-tG_i}, \qquad
        W_\infty = W_\star + \varepsilon (\mathcal A^*\mathcal A)^{-1}
        \sum_i N_i \times_i A_i^\top,

    computed from the eigen-decompositions of the small :math:`G_i`.  With
    ``eps = 0`` the exact flow stays on tensors of Tucker rank :math:`\le 3r`
    (factors in :math:`[e^{-tG_i}U_i^0, e^{-tG_i}U_i^\star, U_i^\star]`;
    ``meta["flow_rank"]``); the noise makes :math:`-\nabla L` "ε-close" to the
    tangent space as in Theorem 3.  Use :func:`pad_rank` to start a fixed-rank
    integrator at the flow rank.

    Parameters
    ----------
    shape : sequence of int
    rank : int or sequence of int
        Rank r of :math:`W_0` (``y0``) and of :math:`W_\star`.
    eps : float >= 0
        Noise level of B.
    decay : float in (0, 1), optional
        If given, :math:`W_\star` has a superdiagonal (rotated) core of full rank
        :math:`\min_i n_i` with entries ``decay**j`` (j = 0, 1, ...): a target without an
        exact low-rank structure, for the :math:`\tau/\lambda` term of Theorem 3.
    rows : int, optional
        Rows of each :math:`A_i` (default ``2 * n_i``, so :math:`G_i` is well conditioned).
    seed, backend, dtype, device
        As in :func:`low_rank_trajectory`.

    Returns
    -------
    Problem
        with ``loss``, ``grad`` (dense), ``grad_tucker`` (Tucker in, Tucker out when
        ``eps == 0``; the noise part is a dense tensor otherwise), ``F = -grad``.
        ``best_error`` is the truncated-HOSVD error of :math:`W(t)` at rank r
        (within :math:`\sqrt d` of the best).
        ``meta["L_min"]`` is the minimum of L.
    """
    shape, rank = _shape_rank(shape, rank)
    eps = check_tolerance(eps, "eps")
    tgt = _Target(backend, dtype, device, complex_problem=False)
    rng = _rng(seed)
    d = len(shape)
    a_mats = []
    for n in shape:
        m = int(rows) if rows is not None else 2 * n
        if m < 1:
            raise ValueError(f"rows must be >= 1; got {rows}")
        a_mats.append(rng.standard_normal((m, n)) / math.sqrt(m))
    g_mats = [a.T @ a for a in a_mats]
    eig = [np.linalg.eigh(g) for g in g_mats]
    u0 = [_orth(rng, n, r) for n, r in zip(shape, rank, strict=True)]
    w0 = multi_mode_product(_random_core(rng, rank), u0)
    if decay is None:
        ustar = [_orth(rng, n, r) for n, r in zip(shape, rank, strict=True)]
        cstar = _random_core(rng, rank)
    else:
        decay = float(decay)
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1); got {decay}")
        rfull = min(shape)
        ustar = [_orth(rng, n, rfull) for n in shape]
        sig = decay ** np.arange(rfull)
        cstar = _odeco_core(sig / np.linalg.norm(sig), d, None)
    wstar = multi_mode_product(cstar, ustar)
    noise = []
    for i, a in enumerate(a_mats):
        sh = list(shape)
        sh[i] = a.shape[0]
        nz = rng.standard_normal(sh)
        noise.append(nz / np.linalg.norm(nz))
    b_mats = [multi_mode_product(wstar, [a], modes=[i]) + eps * noise[i]
              for i, a in enumerate(a_mats)]
    # A^* B, split as W_star-part (low rank) + noise part (dense)
    noise_back = sum(multi_mode_product(nz, [a.T], modes=[i])
                     for i, (nz, a) in enumerate(zip(noise, a_mats, strict=True)))

    def gram_inverse(x: np.ndarray) -> np.ndarray:
        ps = [p for _, p in eig]
        xt = multi_mode_product(x, ps, transpose=True)
        lam = sum(np.reshape(mu, [-1 if k == i else 1 for k in range(d)])
                  for i, (mu, _) in enumerate(eig))
        return multi_mode_product(xt / lam, ps)

    w_inf = wstar + eps * gram_inverse(noise_back) if eps else wstar

    def solution_np(t: float) -> np.ndarray:
        decays = [(p * np.exp(-t * mu)) @ p.T for mu, p in eig]
        return w_inf + multi_mode_product(w0 - w_inf, decays)

    def loss(w: Array | TuckerTensor) -> float:
        if isinstance(w, TuckerTensor):
            val = 0.0
            for i, (a, b) in enumerate(zip(a_mats, b_mats, strict=True)):
                wa = TuckerTensor(w.core, [tgt.const(a) @ f if k == i else f
                                           for k, f in enumerate(w.factors)])
                val += 0.5 * float(wa.inner(wa)) - float(wa.inner(tgt.const(b))) \
                    + 0.5 * float(np.sum(b * b))
            return val
        xp = _ns(w)
        val = 0.0
        for i, (a, b) in enumerate(zip(a_mats, b_mats, strict=True)):
            r = multi_mode_product(w, [tgt.const(a)], modes=[i]) - tgt.const(b)
            val += 0.5 * float(xp.sum(r * r))
        return val

    atb = sum(multi_mode_product(b, [a.T], modes=[i])
              for i, (a, b) in enumerate(zip(a_mats, b_mats, strict=True)))  # A^* B
    eps_noise = eps * noise_back

    def grad(w: Array) -> Array:
        out = -tgt.const(atb)
        for i, g in enumerate(g_mats):
            out = out + multi_mode_product(w, [tgt.const(g)], modes=[i])
        return out

    terms: list[LinearTerm] = [(1.0, {i: g}) for i, g in enumerate(g_mats)]
    star_t = TuckerTensor(tgt(cstar), [tgt(u) for u in ustar], orthonormal=True)

    def grad_tucker(w: TuckerTensor) -> TuckerTensor | Array:
        out = (apply_linear_tucker(terms, w, to=tgt.const)
               - apply_linear_tucker(terms, star_t, to=tgt.const))
        if eps:
            return out.full() - tgt.const(eps_noise)
        return out

    def F(t: float, w: Array) -> Array:
        return -grad(w)

    def F_tucker(t: float, w: TuckerTensor) -> TuckerTensor | Array:
        return -grad_tucker(w)

    r3 = [min(3 * r, n) for r, n in zip(rank, shape, strict=True)]
    l_min = 0.5 * sum(float(np.sum((multi_mode_product(w_inf, [a], modes=[i]) - b) ** 2))
                      for i, (a, b) in enumerate(zip(a_mats, b_mats, strict=True)))
    return Problem(
        name="gradient_flow",
        y0=tgt.tucker(*_hosvd_np(w0, rank)), F=F, F_tucker=F_tucker,
        solution=lambda t: tgt(solution_np(t)), t_span=(0.0, 1.0), rank=rank,
        best_error=lambda t: _hosvd_error(solution_np(t), rank),
        loss=loss, grad=grad, grad_tucker=grad_tucker, terms=terms,
        source="paper Eq. (5), Theorems 2-3 and Appendix C (TDLRT paper, Zangrando et al. 2023)",
        meta=dict(shape=list(shape), rank=list(rank), eps=eps, decay=decay,
                  rows=[a.shape[0] for a in a_mats], L_min=l_min, flow_rank=r3,
                  lipschitz=float(sum(mu.max() for mu, _ in eig)),
                  seed=seed if isinstance(seed, int) else None),
    )
