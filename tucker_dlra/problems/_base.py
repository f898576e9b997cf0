r"""The :class:`Problem` record, the backend target and the NumPy helpers shared by the
constructors."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validate import check_int
from ..backend import import_torch
from ..tensor import multi_mode_product, unfold
from ..tucker import TuckerTensor, check_tucker_rank

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
    from ..backend import namespace

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



def _hosvd_np(x: np.ndarray, rank: Sequence[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    us = [np.linalg.svd(unfold(x, i), full_matrices=False)[0][:, :r] for i, r in enumerate(rank)]
    return multi_mode_product(x, us, transpose=True), us
