r"""Synthetic tensor ODEs with exact or reference solutions (the standard test problems of the
DLRA literature, with their reference numbers on the theory page: :ref:`test-problems`).

Every constructor returns a :class:`Problem`: a Tucker initial value ``y0``, the
right-hand side ``F(t, y)`` on dense arrays, a structured ``F_tucker(t, y)`` that
takes a :class:`~tucker_dlra.TuckerTensor` and returns a TuckerTensor (or a dense
array where the problem has a full-rank part), the exact or reference solution
``solution(t)`` (dense) and, where known, the error of the best approximation of
that solution at the problem's rank.

All random data are drawn on the host with NumPy (``numpy.random.default_rng(seed)``,
float64/complex128) and then moved to the requested array library, dtype and device,
so the same seed gives the same problem on every backend.

Constructors:

* :func:`low_rank_trajectory` -- problem (a), :math:`A(t) = C(t)\times_i e^{tW_i}U_i` with
  F = dA/dt; with ``sigma_min``/``eps`` problem (b): a core whose singular values span
  many decades plus an :math:`\varepsilon` perturbation (Koch & Lubich, SIMAX 31, 2010;
  Kieri, Lubich & Walach, SINUM 54, 2016);
* :func:`gradient_flow` -- problem (c), :math:`\dot W = -\nabla L(W)` with
  :math:`L(W) = \tfrac12\|\mathcal A(W)-B\|^2` (the paper's Eq. (5)), exact solution;
* :func:`schrodinger` -- problem (d), discrete Schrödinger equation (Ceruti, Kusch &
  Lubich, BIT 62, 2022, Sec. 6.1);
* :func:`heat` -- problem (d), heat equation, exact solution;
* :func:`matrix_tiny_singular_values` -- problem (e): a matrix with singular values :math:`2^{-j}`;
* :func:`tucker_tiny_singular_values` -- problem (e): its Tucker analogue.

Helpers: :func:`descent_bound` (the constants of Theorem 2), :func:`pad_rank`,
:func:`quadrature_substep`, :func:`apply_linear`, :func:`apply_linear_tucker`,
:func:`expm_multiply_taylor`.

The core never imports torch at module level; ``backend="torch"`` imports it lazily.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._validate import check_int, check_tolerance
from .backend import import_torch
from .tensor import multi_mode_product, unfold
from .tucker import TuckerTensor, check_tucker_rank, pad_core, pad_rank

__all__ = [
    "Problem",
    "LinearTerm",
    "low_rank_trajectory",
    "gradient_flow",
    "schrodinger",
    "heat",
    "matrix_tiny_singular_values",
    "tucker_tiny_singular_values",
    "apply_linear",
    "apply_linear_tucker",
    "expm_multiply_taylor",
    "pad_rank",
    "quadrature_substep",
    "descent_bound",
]

Array = Any

#: A term ``coef * Y x_{i in modes} M_i`` of a linear tensor ODE: ``(coef, {mode: M})``.
LinearTerm = tuple[complex, dict[int, np.ndarray]]


# ----------------------------------------------------------------------------- backend
class _Target:
    """Moves host NumPy arrays to the requested library, dtype and device."""

    def __init__(self, backend: str, dtype: Any, device: Any, complex_problem: bool):
        if backend not in ("numpy", "torch"):
            raise ValueError(f"backend must be 'numpy' or 'torch'; got {backend!r}")
        name = np.dtype(dtype).name if not _is_torch_dtype(dtype) else str(dtype).split(".")[-1]
        real = {"float32": "float32", "float64": "float64",
                "complex64": "float32", "complex128": "float64"}
        if name not in real:
            raise ValueError(
                f"dtype must be float32, float64, complex64 or complex128; got {dtype!r}"
            )
        base = real[name]
        if complex_problem:
            name = "complex64" if base == "float32" else "complex128"
        self.backend = backend
        self.name = name
        self.complex = name.startswith("complex")
        self.np_dtype = np.dtype(name)
        self.device = device
        self._cache: dict[int, tuple[np.ndarray, Array]] = {}
        if backend == "torch":
            torch = import_torch()
            self.torch = torch
            self.torch_dtype = getattr(torch, name)
            self.device = torch.device(device) if device is not None else torch.device("cpu")
        elif device not in (None, "cpu"):
            raise ValueError(f"device must be None or 'cpu' for backend='numpy'; got {device!r}")

    def const(self, a: np.ndarray) -> Array:
        """Convert one of the problem's fixed arrays, once (cached by identity)."""
        key = id(a)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is a:
            return hit[1]
        out = self(a)
        self._cache[key] = (a, out)  # keeps ``a`` alive, so its id is not reused
        return out

    def __call__(self, a: np.ndarray) -> Array:
        a = np.asarray(a)
        if not self.complex and np.iscomplexobj(a):
            a = a.real
        a = np.ascontiguousarray(a.astype(self.np_dtype, copy=False))
        if self.backend == "numpy":
            return a
        return self.torch.from_numpy(a.copy()).to(self.device)

    def to_numpy(self, x: Array) -> np.ndarray:
        if self.backend == "torch" and hasattr(x, "detach"):
            return x.detach().cpu().numpy().astype(np.complex128 if self.complex else np.float64)
        return np.asarray(x, dtype=np.complex128 if self.complex else np.float64)

    def tucker(self, core: np.ndarray, factors: Sequence[np.ndarray],
               orthonormal: bool = True) -> TuckerTensor:
        return TuckerTensor(self(core), [self(u) for u in factors], orthonormal=orthonormal)


def _is_torch_dtype(dtype: Any) -> bool:
    return type(dtype).__module__.startswith("torch")


# ----------------------------------------------------------------------------- problem
@dataclass
class Problem:
    r"""A tensor ODE :math:`\dot Y = F(t, Y)` with its exact or reference solution.

    Attributes
    ----------
    name : str
        Short identifier (used in validation output).
    y0 : TuckerTensor
        Initial value (orthonormal factors) at ``t_span[0]``, at the problem's rank.
    F : callable ``F(t, y)``
        Right-hand side on dense arrays (returns a dense array of ``y``'s shape).
    F_tucker : callable ``F_tucker(t, y)`` or None
        Structured right-hand side: takes a TuckerTensor and returns a TuckerTensor
        (never forming a dense tensor of the full shape), or a dense array where the
        problem has a full-rank component (noted in ``meta["F_tucker_dense"]``).
    solution : callable ``solution(t) -> dense array``
        Exact solution (or a reference accurate to ~1e-12 where stated in ``source``).
    t_span : tuple of float
        Default time interval.
    rank : tuple of int
        Tucker rank of ``y0`` (the rank the fixed-rank integrators run at); with
        ``low_rank_trajectory(initial_rank=...)`` the rank of the solution for t > 0.
    best_error : callable ``best_error(t) -> float`` or None
        Frobenius error of the best approximation of ``solution(t)`` at ``rank``
        (exact where the problem allows it, otherwise the HOSVD quasi-optimal value;
        see the constructor's docstring).
    source : str
        Where the problem comes from (the published paper that introduced it).
    loss, grad, grad_tucker : callables or None
        For gradient flows (:func:`gradient_flow`): :math:`L`, :math:`\nabla L` on dense
        arrays and on TuckerTensors.
    energy : callable or None
        Conserved energy (Schrödinger).
    terms : list of LinearTerm or None
        For linear problems :math:`F(Y) = \sum_k c_k\, Y \times_{i\in S_k} M_{k,i}`
        (host NumPy matrices), so a substep solver may use exponentials.
    substep : callable or None
        A substep solver (``substep=`` argument of the integrators) that is exact to
        rounding for this problem, where one exists: :func:`quadrature_substep` for the
        data-mode problems whose F does not depend on Y.
    meta : dict
        Parameters of the instance (JSON-serialisable numbers and strings).
    """

    name: str
    y0: TuckerTensor
    F: Callable[[float, Array], Array]
    solution: Callable[[float], Array]
    t_span: tuple[float, float]
    rank: tuple[int, ...]
    source: str
    F_tucker: Callable[[float, TuckerTensor], TuckerTensor | Array] | None = None
    best_error: Callable[[float], float] | None = None
    loss: Callable[[Array | TuckerTensor], float] | None = None
    grad: Callable[[Array], Array] | None = None
    grad_tucker: Callable[[TuckerTensor], TuckerTensor | Array] | None = None
    energy: Callable[[Array | TuckerTensor], float] | None = None
    terms: list[LinearTerm] | None = None
    substep: Callable | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def error(self, y: TuckerTensor | Array, t: float) -> float:
        """Frobenius error :math:`\\|y - Y(t)\\|` against :meth:`solution` (dense)."""
        full = y.full() if isinstance(y, TuckerTensor) else y
        xp = _ns(full)
        return float(xp.linalg.vector_norm(xp.reshape(full - self.solution(t), (-1,))))

    def __repr__(self) -> str:
        return (f"Problem({self.name!r}, shape={self.y0.shape}, rank={self.rank}, "
                f"t_span={self.t_span}, dtype={self.y0.dtype})")


def _ns(x: Array) -> Any:
    from .backend import namespace

    return namespace(x)


# ----------------------------------------------------------------------------- helpers
def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int >= 0 or a numpy Generator; got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    return np.random.default_rng(int(seed))


def _orth(rng: np.random.Generator, n: int, r: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((n, r)))
    return q


def _skew(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    g = rng.standard_normal((n, n)) / math.sqrt(n)
    return scale * (g - g.T) / 2.0


def _expm_skew(w: np.ndarray, t: float) -> np.ndarray:
    """:math:`e^{tW}` for real skew-symmetric W (eigen-decomposition of the Hermitian iW)."""
    lam, p = np.linalg.eigh(1j * w)
    return ((p * np.exp(-1j * t * lam)) @ p.conj().T).real


def _expm_sym(a: np.ndarray, t: float) -> np.ndarray:
    """:math:`e^{tA}` for real symmetric (or complex Hermitian) A."""
    lam, p = np.linalg.eigh(a)
    return (p * np.exp(t * lam)) @ p.conj().T


def _shape_rank(shape: Sequence[int], rank: int | Sequence[int]) -> tuple[tuple, tuple]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of ints; got {shape!r}") from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must have at least 2 modes, each >= 1; got {shape}")
    d = len(shape)
    if isinstance(rank, (int, np.integer)) and not isinstance(rank, bool):
        rank = (int(rank),) * d
    rank = tuple(check_int(r, "rank", 1) for r in rank)
    if len(rank) != d:
        raise ValueError(f"rank must have one entry per mode ({d}); got {rank}")
    for i, (n, r) in enumerate(zip(shape, rank, strict=True)):
        if r > n:
            raise ValueError(f"rank[{i}] = {r} must be <= shape[{i}] = {n}")
    check_tucker_rank(rank, "rank")
    return shape, rank


def _random_core(rng: np.random.Generator, rank: tuple[int, ...]) -> np.ndarray:
    c = rng.standard_normal(rank)
    return c / np.linalg.norm(c)


def _odeco_core(sigma: np.ndarray, d: int, rng: np.random.Generator | None) -> np.ndarray:
    """Superdiagonal core with entries ``sigma`` (rotated by random orthogonal matrices)."""
    r = len(sigma)
    c = np.zeros((r,) * d)
    idx = np.arange(r)
    c[(idx,) * d] = sigma
    if rng is not None:
        c = multi_mode_product(c, [_orth(rng, r, r) for _ in range(d)])
    return c


def _hosvd_error(x: np.ndarray, rank: Sequence[int]) -> float:
    """Error of the rank-``rank`` truncated HOSVD of a dense NumPy tensor (<= sqrt(d) x best)."""
    us = []
    for i, r in enumerate(rank):
        u, _, _ = np.linalg.svd(unfold(x, i), full_matrices=False)
        us.append(u[:, :r])
    core = multi_mode_product(x, us, transpose=True)
    return float(np.linalg.norm(x - multi_mode_product(core, us)))


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
    from .operators import LinearOperator

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


_GAUSS = np.polynomial.legendre.leggauss(8)


def quadrature_substep(f: Callable[[float, Any], Any], t0: float, y0: Any, h: float) -> Any:
    r"""Substep solver for right-hand sides that do not depend on the state: Gauss quadrature.

    For the data-mode problems :math:`F(t, Y) = \dot A(t)` (:func:`low_rank_trajectory`)
    every substep ODE of the BUG integrators is :math:`\dot y = f(t)`, so
    :math:`y_1 = y_0 + \int_{t_0}^{t_0+h} f`; an 8-point Gauss-Legendre rule (order 16)
    computes it to rounding for smooth :math:`A` -- exact substeps: the
    integrator error is then the DLRA error alone.  Pass it as ``substep=`` to any integrator.
    Wrong (silently) for an F that depends on Y.  Cost: 8 evaluations of ``f``.
    """
    nodes, weights = _GAUSS
    acc = None
    for x, w in zip(nodes, weights, strict=True):
        v = f(t0 + 0.5 * h * (1.0 + float(x)), y0)
        if isinstance(v, tuple):
            v = tuple(vi * (0.5 * h * float(w)) for vi in v)
            acc = v if acc is None else tuple(a + b for a, b in zip(acc, v, strict=True))
        else:
            v = v * (0.5 * h * float(w))
            acc = v if acc is None else acc + v
    if isinstance(y0, tuple):
        return tuple(a + b for a, b in zip(y0, acc, strict=True))
    return y0 + acc


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


def _hosvd_np(x: np.ndarray, rank: Sequence[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    us = [np.linalg.svd(unfold(x, i), full_matrices=False)[0][:, :r] for i, r in enumerate(rank)]
    return multi_mode_product(x, us, transpose=True), us


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


def _rk4_path(f: Callable, y: Any, t0: float, h: float, n: int) -> list:
    dt = h / n
    path = [y]
    for k in range(n):
        t = t0 + k * dt
        k1 = f(t, y)
        k2 = f(t + dt / 2, y + (dt / 2) * k1)
        k3 = f(t + dt / 2, y + (dt / 2) * k2)
        k4 = f(t + dt, y + dt * k3)
        y = y + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        path.append(y)
    return path


def descent_bound(problem: Problem, t0: float, y0: TuckerTensor, h: float,
                  y1: TuckerTensor, substeps: int = 16, samples: int = 11) -> dict[str, float]:
    r"""The quantities of Theorem 2 (Appendix C) for one step :math:`W_0 \to W_1` of Algorithm 1.

    Re-derives the step's augmented bases :math:`\hat U_i = \mathrm{orth}[U_i \mid K_i(h)]`
    (K-steps of Eq. (9) with ``substeps`` RK4 steps) and the Galerkin trajectory
    :math:`\hat W(t) = \hat C(t)\times_i \hat U_i` on :math:`[t_0, t_0+h]` from the
    building blocks of :mod:`tucker_dlra.steps` (independently of the integrators), then

    * :math:`\alpha = \min_t \|\nabla L(\hat W(t)) \times_i \hat U_i^\top\|^2` over the
      RK4 nodes of the Galerkin trajectory (for the linear gradient flows of
      :func:`gradient_flow` this norm decreases monotonically, so the minimum is attained
      at the last node and is exact);
    * :math:`\beta = \max_{s\in[0,1]} \|\nabla L(s W_1 + (1-s)\hat W(t_1))\|` over
      ``samples`` points (exact for affine gradients: the norm is convex in s);
    * :math:`\tau = \|\hat W(t_1) - W_1\|`, the truncation error actually made.

    Theorem 2 then states ``loss1 <= loss0 - alpha*h + beta*tau`` (and
    ``loss_hat <= loss0 - alpha*h`` for the Galerkin step alone, Eq. (14)).

    Parameters
    ----------
    problem : Problem
        A gradient flow (``problem.grad`` and ``problem.loss`` set), e.g.
        :func:`gradient_flow`.
    t0, y0, h : the step (start time, start value :math:`W_0`, step size :math:`\lambda`)
    y1 : TuckerTensor
        The result :math:`W_1` of the step (e.g. from ``ra_bug``).
    substeps : int
        RK4 steps for the K- and C-substeps (use the integrator's value).

    Returns
    -------
    dict with ``alpha, beta, tau, loss0, loss1, loss_hat, bound`` (the right-hand side
    :math:`L(W_0) - \alpha h + \beta\tau`) and ``galerkin_bound``
    (:math:`L(W_0) - \alpha h`).  Dense computations: for small problems.
    """
    from .steps import augment_basis, c_gradient, galerkin_core, k_core, k_gradient, k_tensor

    if problem.grad is None or problem.loss is None:
        raise ValueError("problem must be a gradient flow (problem.grad and problem.loss set)")
    substeps = check_int(substeps, "substeps", 1)
    y0 = y0 if y0.orthonormal else y0.orthonormalize()
    F = problem.F
    uhat = []
    for i in range(y0.ndim):
        g, s = k_core(y0.core, i)

        def fk(t: float, k: Any, g: Any = g, i: int = i) -> Any:
            return k_gradient(F(t, k_tensor(g, y0.factors, k, i).full()), g, y0.factors, i)

        k1 = _rk4_path(fk, y0.factors[i] @ s, t0, h, substeps)[-1]
        uhat.append(augment_basis(y0.factors[i], k1))
    c0 = galerkin_core(y0.core, y0.factors, uhat)

    def fc(t: float, c: Any) -> Any:
        return c_gradient(F(t, TuckerTensor(c, uhat).full()), uhat)

    path = [TuckerTensor(c, uhat).full() for c in _rk4_path(fc, c0, t0, h, substeps)]
    xp = _ns(path[0])

    def nrm(x: Any) -> float:
        return float(xp.linalg.vector_norm(xp.reshape(x, (-1,))))

    alpha = min(nrm(c_gradient(problem.grad(w), uhat)) ** 2 for w in path)
    w1 = y1.full()
    w_hat = path[-1]
    beta = max(nrm(problem.grad(s * w1 + (1 - s) * w_hat)) for s in np.linspace(0, 1, samples))
    tau = nrm(w1 - w_hat)
    loss0 = problem.loss(y0)
    return dict(alpha=alpha, beta=beta, tau=tau, loss0=loss0, loss1=problem.loss(y1),
                loss_hat=problem.loss(w_hat), bound=loss0 - alpha * h + beta * tau,
                galerkin_bound=loss0 - alpha * h)
