r"""Tucker tensors, the truncated HOSVD and Tucker rounding (paper Sections 2.1 and 3.1).

A Tucker tensor is :math:`W = C \times_1 U_1 \cdots \times_d U_d` (Eq. (3)); the
rank-adjustment step of Algorithm 1 (lines 10-12) is :func:`truncate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._validate import RankSpec, check_tolerance, per_mode
from .backend import (
    check_floating,
    conj,
    ct,
    dtype_eps,
    eigh_descending,
    is_complex,
    namespace,
    qr,
    svd_left,
)
from .tensor import multi_mode_product, unfold

__all__ = [
    "TuckerTensor", "TruncationInfo", "hosvd", "truncate", "pad_core", "pad_rank", "valid_rank",
    "check_tucker_rank", "max_tucker_rank",
    "RULES", "check_orthonormal", "orthonormality_defects",
]

Array = Any

#: Truncation rules of :func:`truncate` / :func:`hosvd`.
#: ``"split"``: each mode discards a tail ``<= tol / sqrt(d)``, so the total error is
#: ``<= tol`` (guaranteed, HOSVD bound).  ``"per_mode"``: each mode discards a tail
#: ``<= tol`` (the rule of the public DLRT/TDLRT training codes and of the paper's
#: compression numbers); the total error is ``<= sqrt(d) tol``.
RULES = ("split", "per_mode")


class TuckerTensor:
    r"""A tensor in Tucker format :math:`C \times_{i} U_i` (paper Eq. (3)).

    Parameters
    ----------
    core : array, shape (r_0, ..., r_{d-1})
        The core tensor :math:`C`.
    factors : sequence of d arrays, ``factors[i]`` of shape (n_i, r_i)
        The factor matrices :math:`U_i` (same library, dtype and device as ``core``).
    orthonormal : bool, default False
        Declare that every factor has orthonormal columns; then :meth:`norm` reads the
        norm off the core and :func:`truncate` skips its QRs.  The declaration is checked
        (:math:`\|U_i^H U_i - I\|_F` within the dtype-aware tolerance of
        :func:`check_orthonormal`; cost :math:`O(\sum_i n_i r_i^2)` and one scalar
        transfer): a ``ValueError`` names the first factor that is not orthonormal.
        :func:`hosvd`, :func:`truncate` and :meth:`orthonormalize` build their results
        orthonormal by construction and skip the check.

    Notes
    -----
    Storage :math:`\prod_i r_i + \sum_i n_i r_i` numbers instead of :math:`\prod_i n_i`.
    Arithmetic is exact: ``a + b`` concatenates the factors and places the cores
    block-diagonally (ranks add), ``s * a`` scales the core.  Round with
    :func:`truncate`.
    """

    __slots__ = ("core", "factors", "orthonormal")

    def __init__(self, core: Array, factors: Sequence[Array], orthonormal: bool = False):
        xp = check_floating(core, "core")
        factors = list(factors)
        if core.ndim != len(factors):
            raise ValueError(
                f"factors must hold one matrix per mode of core ({core.ndim}); got {len(factors)}"
            )
        if core.ndim < 1:
            raise ValueError("core must have at least one mode")
        for i, u in enumerate(factors):
            check_floating(u, f"factors[{i}]")
            namespace(core, u)
            if u.ndim != 2 or u.shape[1] != core.shape[i]:
                raise ValueError(
                    f"factors[{i}] must have shape (n_{i}, {core.shape[i]}) to match core.shape"
                    f"[{i}]; got {tuple(u.shape)}"
                )
            if u.dtype != core.dtype:
                raise TypeError(
                    f"factors[{i}] has dtype {u.dtype} but core has {core.dtype}; they must match"
                )
        del xp
        self.core = core
        self.factors = factors
        self.orthonormal = False
        if orthonormal:
            check_orthonormal(factors, "factors")
            self.orthonormal = True

    @classmethod
    def _orthonormal(cls, core: Array, factors: Sequence[Array]) -> TuckerTensor:
        """A Tucker tensor whose factors are orthonormal by construction (QR, SVD, eigh).

        For the library's own producers: skips the check of the public constructor.
        """
        t = cls(core, factors)
        t.orthonormal = True
        return t

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape ``(n_0, ..., n_{d-1})`` of the full tensor."""
        return tuple(int(u.shape[0]) for u in self.factors)

    @property
    def rank(self) -> tuple[int, ...]:
        """Tucker rank ``(r_0, ..., r_{d-1})`` of this representation (the core's shape)."""
        return tuple(int(s) for s in self.core.shape)

    @property
    def ndim(self) -> int:
        """Order ``d`` of the tensor."""
        return self.core.ndim

    @property
    def dtype(self) -> Any:
        """Dtype of core and factors."""
        return self.core.dtype

    @property
    def xp(self) -> Any:
        """Array namespace of the core and factors."""
        return namespace(self.core)

    def __repr__(self) -> str:
        return (
            f"TuckerTensor(shape={self.shape}, rank={self.rank}, dtype={self.dtype}, "
            f"orthonormal={self.orthonormal})"
        )

    # ------------------------------------------------------------------ dense
    def full(self) -> Array:
        r"""The dense tensor :math:`C \times_i U_i` (Eq. (3)).

        Cost :math:`O(\sum_i n_i \prod_{j \le i} n_j \prod_{j > i} r_j)` with the greedy
        mode order of :func:`multi_mode_product`.
        """
        return multi_mode_product(self.core, self.factors)

    # ------------------------------------------------------------------ metric
    def inner(self, other: TuckerTensor | Array) -> Array:
        r"""Frobenius inner product :math:`\langle A, B\rangle = \sum \bar A\, B` (paper, Sec. 3).

        Parameters
        ----------
        other : TuckerTensor or dense array of the same shape

        Returns
        -------
        0-d array (complex for complex dtypes; linear in ``other``)

        Notes
        -----
        For a Tucker ``other`` this is
        :math:`\langle C_A, C_B \times_i (U_{A,i}^H U_{B,i})\rangle`, cost
        :math:`O(\sum_i n_i r_{A,i} r_{B,i} + \text{core contractions})`, never dense.
        """
        xp = self.xp
        if isinstance(other, TuckerTensor):
            if other.shape != self.shape:
                raise ValueError(f"other has shape {other.shape}; expected {self.shape}")
            grams = [ct(xp, ua) @ ub for ua, ub in zip(self.factors, other.factors, strict=True)]
            proj = multi_mode_product(other.core, grams)
        else:
            if tuple(other.shape) != self.shape:
                raise ValueError(f"other has shape {tuple(other.shape)}; expected {self.shape}")
            proj = multi_mode_product(other, self.factors, transpose=True)
        return xp.sum(conj(xp, self.core) * proj)

    def norm(self) -> Array:
        r"""Frobenius norm :math:`\|W\|`.

        With orthonormal factors (``self.orthonormal``) this is :math:`\|C\|`, cost
        :math:`O(\prod r_i)`.  Otherwise the factors are orthonormalised first
        (:meth:`orthonormalize`: QR :math:`U_i = Q_i R_i`, then
        :math:`\|C \times_i R_i\|`), cost :math:`O(\sum_i n_i r_i^2)` plus the core
        products.  Never forms the dense tensor.  Unlike
        :math:`\langle W, W\rangle^{1/2}` from the Gram matrices :math:`U_i^H U_i`,
        this stays accurate for a difference of nearby tensors (``(a - b).norm()``): the
        Gram route cancels to :math:`\sqrt{\varepsilon}\,\|a\|`, the QR route to
        :math:`\varepsilon\,\|a\|`.
        """
        if self.orthonormal:
            xp = self.xp
            return xp.linalg.vector_norm(xp.reshape(self.core, (-1,)))
        return self.orthonormalize().norm()

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other: TuckerTensor) -> TuckerTensor:
        if not isinstance(other, TuckerTensor):
            return NotImplemented
        if other.shape != self.shape:
            raise ValueError(f"cannot add shapes {self.shape} and {other.shape}")
        xp = namespace(self.core, other.core)
        ra, rb = self.rank, other.rank
        core = pad_core(self.core, [(0, b) for b in rb]) + pad_core(
            other.core, [(a, 0) for a in ra]
        )
        factors = [xp.concat([ua, ub], axis=1) for ua, ub in zip(self.factors, other.factors,
                                                                   strict=True)]
        return TuckerTensor(core, factors)

    def _same_basis(self, core: Array, factors: Sequence[Array]) -> TuckerTensor:
        """New core on this tensor's (possibly recast) factors: the flag carries over."""
        if self.orthonormal:
            return TuckerTensor._orthonormal(core, factors)
        return TuckerTensor(core, factors)

    def __neg__(self) -> TuckerTensor:
        return self._same_basis(-self.core, self.factors)

    def __sub__(self, other: TuckerTensor) -> TuckerTensor:
        if not isinstance(other, TuckerTensor):
            return NotImplemented
        return self + (-other)

    def _with_core(self, core: Array) -> TuckerTensor:
        """Same factors, new core; the factors follow a promoted core dtype (real * 1j)."""
        factors = self.factors
        if core.dtype != self.core.dtype:
            xp = self.xp
            factors = [xp.astype(u, core.dtype) for u in factors]
        return self._same_basis(core, factors)

    def __mul__(self, scalar: Any) -> TuckerTensor:
        if isinstance(scalar, TuckerTensor):
            return NotImplemented
        return self._with_core(self.core * scalar)

    __rmul__ = __mul__

    def __truediv__(self, scalar: Any) -> TuckerTensor:
        return self._with_core(self.core / scalar)

    # ------------------------------------------------------------------ structure
    def orthonormalize(self) -> TuckerTensor:
        r"""Equivalent Tucker tensor with orthonormal factors.

        QR of each factor, :math:`U_i = Q_i R_i`, and :math:`C \leftarrow C \times_i R_i`.
        The rank of mode i becomes ``min(n_i, r_i)``.  Cost :math:`O(\sum_i n_i r_i^2)`.
        """
        xp = self.xp
        qs, rs = zip(*(qr(xp, u) for u in self.factors), strict=True)
        return TuckerTensor._orthonormal(multi_mode_product(self.core, list(rs)), list(qs))

    def to_tensorly(self) -> Any:
        """Convert to ``tensorly.tucker_tensor.TuckerTensor`` (needs tensorly; not a dependency)."""
        try:
            from tensorly.tucker_tensor import TuckerTensor as TLTucker
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("to_tensorly needs tensorly: pip install tensorly") from exc
        return TLTucker((self.core, list(self.factors)))

    @classmethod
    def from_tensorly(cls, tucker: Any, orthonormal: bool = False) -> TuckerTensor:
        """Build from a tensorly Tucker tensor or a ``(core, factors)`` pair."""
        core, factors = tucker
        return cls(core, list(factors), orthonormal=orthonormal)


@dataclass(frozen=True)
class TruncationInfo:
    """What a truncation chose and how large its error can be.

    Attributes
    ----------
    rank : tuple of int
        Chosen Tucker rank.
    tails : tuple of float
        Per mode, the norm of the discarded singular values of the unfolding.
    error_bound : float
        :math:`(\\sum_i \\mathrm{tail}_i^2)^{1/2}`, an upper bound of the error
        (HOSVD bound, De Lathauwer et al. 2000, Property 10).
    tolerance : float or None
        The absolute tolerance ``tol`` the rule was applied with.
    rule : str
        ``"split"`` or ``"per_mode"`` (see :data:`RULES`).
    norm : float
        Norm of the tensor that was truncated.
    methods : tuple of str
        Per mode, ``"gram"`` or ``"svd"``: how its singular vectors were computed, or
        ``"identity"`` for a mode kept at full rank by an explicit ``rank`` with
        ``method="auto"`` (its basis is the identity: exact, no decomposition needed).
    """

    rank: tuple[int, ...]
    tails: tuple[float, ...]
    error_bound: float
    tolerance: float | None
    rule: str
    norm: float
    methods: tuple[str, ...] = field(default=())


def pad_core(core: Array, pads: Sequence[tuple[int, int]]) -> Array:
    """Zero-pad a tensor: ``pads[i] = (before, after)`` zeros in mode i.

    The augmented core of Algorithm 1, line 8, is the zero-padded core when the
    augmented basis keeps the old basis first (see
    :func:`tucker_dlra.steps.augment_basis`).  Cost: one copy per padded mode.
    """
    xp = namespace(core)
    for i, (before, after) in enumerate(pads):
        if before == 0 and after == 0:
            continue
        parts = []
        for n in (before, after):
            shape = list(core.shape)
            shape[i] = n
            parts.append(xp.zeros(tuple(shape), dtype=core.dtype, device=_device(core)))
        core = xp.concat([parts[0], core, parts[1]], axis=i)
    return core


def pad_rank(y: TuckerTensor, rank: RankSpec, seed: int = 0) -> TuckerTensor:
    r"""The same tensor represented at a larger Tucker rank: orthonormal completion + zero core.

    Each factor :math:`U_i \in \mathbb{K}^{n_i\times r_i^0}` is completed to
    :math:`[U_i, \tilde U_i]` with :math:`r_i - r_i^0` orthonormal columns orthogonal to
    :math:`U_i` (Gaussian columns from ``numpy.random.default_rng(seed)``, projected out of
    :math:`\mathrm{span}\,U_i` twice and orthonormalised by QR), and the core is
    zero-padded (:func:`pad_core`).  The result equals ``y`` exactly (up to rounding in the
    orthonormalisation of a non-orthonormal ``y``) but its core unfoldings are singular.

    This is the standard way to start a fixed-rank integrator (:func:`~tucker_dlra.bug`,
    :func:`~tucker_dlra.projector_splitting`) at rank ``rank`` from a lower-rank initial
    value.  The random completion makes the overlap matrices :math:`U_i^{1H}U_i^0` of the
    first step generically invertible.  The first step then has to find the missing
    directions from :math:`F(t_0, Y_0)` alone: its local error is :math:`O(h)` instead of
    :math:`O(h^2)` in the components that the start does not contain, and later steps carry
    this error along (a start-up error of size :math:`O(h)`, not amplified).  Integrators
    that cannot handle singular core unfoldings (:func:`~tucker_dlra.direct`: the
    pseudo-inverse of Eq. (8)) must not be started from a padded tensor.

    Parameters
    ----------
    y : TuckerTensor
    rank : int or sequence of int
        New rank per mode, :math:`r_i^0 \le r_i \le n_i` (an int applies to every mode).
    seed : int, default 0
        Seed of the random completion.

    Returns
    -------
    TuckerTensor with orthonormal factors and rank ``rank``.

    Notes
    -----
    Cost :math:`O(\sum_i n_i r_i^2)` plus the padded core :math:`O(\prod_i r_i)`.
    """
    import numpy as np  # the completion is drawn on the host so every backend gets the same

    if not isinstance(y, TuckerTensor):
        raise TypeError(f"y must be a TuckerTensor; got {type(y).__name__}")
    d = y.ndim
    if isinstance(rank, int) and not isinstance(rank, bool):
        rank = (int(rank),) * d
    try:
        rank = tuple(int(r) for r in rank)  # type: ignore[union-attr]
    except TypeError:
        raise TypeError(f"rank must be an int or a sequence of {d} ints; got {rank!r}") from None
    if len(rank) != d:
        raise ValueError(f"rank must have one entry per mode ({d}); got {rank}")
    y = y if y.orthonormal else y.orthonormalize()
    rng = np.random.default_rng(seed)
    xp = y.xp
    factors = []
    for i, (u, r) in enumerate(zip(y.factors, rank, strict=True)):
        n, r0 = (int(v) for v in u.shape)
        if not r0 <= r <= n:
            raise ValueError(f"rank[{i}] must be in [{r0}, {n}] (the current rank of mode {i} "
                             f".. its size; padding cannot lower a rank, use truncate); got {r}")
        if r == r0:
            factors.append(u)
            continue
        g = rng.standard_normal((n, r - r0))
        if is_complex(xp, y.core):
            g = g + 1j * rng.standard_normal((n, r - r0))
        g = xp.asarray(g, dtype=u.dtype, device=_device(u))
        for _ in range(2):  # Gram-Schmidt twice against span U_i
            g = g - u @ (ct(xp, u) @ g)
        q, _ = qr(xp, g)
        factors.append(xp.concat([u, q], axis=1))
    core = pad_core(y.core, [(0, r - r0) for r, r0 in zip(rank, y.rank, strict=True)])
    return TuckerTensor(core, factors, orthonormal=True)


def valid_rank(ranks: Sequence[int]) -> tuple[int, ...]:
    r"""Largest ranks :math:`\le` ``ranks`` with :math:`r_i \le \prod_{j \ne i} r_j` for all i.

    A core of shape ``ranks`` has unfoldings of rank at most :math:`\prod_{j\ne i} r_j`,
    so a larger :math:`r_i` is not a multilinear rank (the rank-adaptive
    tree-tensor integrator of Ceruti, Lubich & Sulz, SINUM 61, 2023, enforces the same cap).
    Truncating to the result is lossless.
    Cost :math:`O(d^2)` per sweep.
    """
    r = [int(v) for v in ranks]
    changed = True
    while changed:
        changed = False
        for i in range(len(r)):
            cap = math.prod(r[:i] + r[i + 1 :])
            if r[i] > cap:
                r[i], changed = cap, True
    return tuple(r)


def check_tucker_rank(ranks: Sequence[int], name: str = "rank", hint: str = "") -> tuple[int, ...]:
    r"""``ranks`` as a tuple if it is a Tucker rank (:func:`valid_rank` leaves it unchanged).

    The one place where the rule :math:`r_i \le \prod_{j \ne i} r_j` is checked: a
    ``ValueError`` names ``name``, the first offending mode, the product it exceeds and the
    largest valid rank below ``ranks``; ``hint`` (e.g. the remedy) is appended.  Cost
    :math:`O(d^2)`.
    """
    r = tuple(int(v) for v in ranks)
    v = valid_rank(r)
    if v != r:
        i = next(k for k, (a, b) in enumerate(zip(r, v, strict=True)) if a != b)
        others = math.prod(r[:i] + r[i + 1:])
        raise ValueError(f"{name} = {r} is not a Tucker rank: {name}[{i}] = {r[i]} exceeds the "
                         f"product {others} of the other ranks (largest valid: {v}){hint}")
    return r


def max_tucker_rank(shape: Sequence[int]) -> tuple[int, ...]:
    r"""The largest Tucker rank of a tensor of ``shape``: :math:`\min(n_i, \prod_{j\ne i} n_j)`.

    Cost :math:`O(d)`.
    """
    n = [int(s) for s in shape]
    total = math.prod(n)
    return tuple(min(s, total // s) if s else 0 for s in n)


def _device(x: Array) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


def _mode_svd(xp: Any, a: Array, method: str, need: str, thr2: float | None,
              rank: int | None) -> tuple[Array, Array, str]:
    """Left singular vectors and squared singular values (descending) of ``a``.

    ``method="auto"`` uses the eigen-decomposition of the Gram matrix
    :math:`A A^H` (:math:`m^2 n` flops, far cheaper than an SVD when
    :math:`m \\ll n`) and falls back to the SVD when the decision it has to make
    lies below the Gram matrix's resolution: eigenvalues carry an absolute
    error of order :math:`m\\,\\varepsilon\\,\\sigma_1^2`, so singular values below
    about :math:`\\sqrt{m\\varepsilon}\\,\\sigma_1` (1e-7 relative in float64,
    1e-3 in float32) are lost to the squared condition number.
    """
    m, n = a.shape
    if method == "gram" or (method == "auto" and m <= n):
        s2, u = eigh_descending(xp, a @ ct(xp, a))
        if method == "gram":
            return u, s2, "gram"
        eps = dtype_eps(xp, a.dtype)
        lam_max = float(s2[0]) if s2.shape[0] else 0.0
        noise2 = 100.0 * m * eps * lam_max
        ok = True
        if need == "tol":
            ok = thr2 is not None and thr2 >= noise2
        else:  # fixed rank: the first discarded value must be resolved, or be absent
            if rank is not None and rank < s2.shape[0]:
                ok = float(s2[rank]) >= noise2
        if ok:
            return u, s2, "gram"
    u, s = svd_left(xp, a)
    return u, s * s, "svd"


def _choose_ranks(
    x: Array,
    rank: RankSpec,
    tol: float | None,
    rule: str,
    max_rank: RankSpec,
    min_rank: RankSpec,
    method: str,
) -> tuple[list[Array], TruncationInfo]:
    """Per-mode bases and ranks of the (plain, non-sequential) truncated HOSVD of ``x``."""
    xp = namespace(x)
    d = x.ndim
    shape = tuple(int(s) for s in x.shape)
    upper = list(max_tucker_rank(shape))
    ranks = per_mode(rank, d, "rank", upper)
    if all(r is not None for r in ranks):
        fixed = [int(r) for r in ranks]  # type: ignore[arg-type]
        if tol is not None:
            raise ValueError("give at most one of rank and rtol/atol (a rank fixes every mode, "
                             "the tolerance would be ignored); use None entries in rank for the "
                             "modes the tolerance should choose")
        check_tucker_rank(fixed, "rank")
    rmax = per_mode(max_rank, d, "max_rank", upper, clamp=True)
    rmin = per_mode(min_rank, d, "min_rank", upper, clamp=True)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {rule!r}")
    if method not in ("auto", "gram", "svd"):
        raise ValueError(f"method must be 'auto', 'gram' or 'svd'; got {method!r}")
    for i in range(d):
        if rmin[i] is not None and rmax[i] is not None and rmin[i] > rmax[i]:
            raise ValueError(f"min_rank[{i}] = {rmin[i]} exceeds max_rank[{i}] = {rmax[i]}")
    mode_tol = None
    if tol is not None:
        mode_tol = tol / math.sqrt(d) if rule == "split" else tol
    bases, chosen, tails, methods = [], [], [], []
    for i in range(d):
        if ranks[i] is not None and method == "auto":
            r = ranks[i] if rmax[i] is None else min(ranks[i], rmax[i])
            r = max(r, rmin[i] if rmin[i] is not None else 1)
            if r == shape[i] == upper[i]:
                # full rank requested in this mode: any orthonormal basis is exact, so
                # keep the identity and skip the unfolding, its Gram matrix and the product
                bases.append(None)
                chosen.append(r)
                tails.append(0.0)
                methods.append("identity")
                continue
        a = unfold(x, i)
        need = "tol" if ranks[i] is None and mode_tol is not None else "rank"
        thr2 = None if mode_tol is None else mode_tol * mode_tol
        u, s2, how = _mode_svd(xp, a, method, need, thr2, ranks[i])
        k = int(s2.shape[0])
        # tail2[r] = sum_{j >= r} s2[j]: squared error of keeping r columns
        tail2 = xp.flip(xp.cumulative_sum(xp.flip(s2, axis=0)), axis=0)
        if ranks[i] is not None:
            r = ranks[i]
        elif mode_tol is not None:
            if how == "gram":
                eps = dtype_eps(xp, x.dtype)
                slack = 2.0 * a.shape[0] * eps * float(s2[0])
                r = int(xp.count_nonzero(tail2 > max(thr2 - slack, 0.0)))
            else:
                r = int(xp.count_nonzero(tail2 > thr2))
        else:
            r = k
        if rmax[i] is not None:
            r = min(r, rmax[i])
        r = max(r, rmin[i] if rmin[i] is not None else 1)
        r = min(r, k)
        bases.append(u[:, :r])
        chosen.append(r)
        tails.append(math.sqrt(max(float(tail2[r]), 0.0)) if r < k else 0.0)
        methods.append(how)
    info = TruncationInfo(
        rank=tuple(chosen),
        tails=tuple(tails),
        error_bound=math.sqrt(sum(t * t for t in tails)),
        tolerance=tol,
        rule=rule,
        norm=0.0,
        methods=tuple(methods),
    )
    return bases, info


def _fill_identity(x: Array, bases: list[Array | None]) -> list[Array]:
    """Replace the ``None`` (full-rank, identity) entries of ``bases`` by identity matrices."""
    xp = namespace(x)
    return [xp.eye(int(x.shape[i]), dtype=x.dtype, device=_device(x)) if b is None else b
            for i, b in enumerate(bases)]


def _finite_norm(xp: Any, x: Array, name: str) -> float:
    """Frobenius norm of ``x`` as a float (one scalar transfer); NaN/inf entries are an error."""
    norm = float(xp.linalg.vector_norm(xp.reshape(x, (-1,))))
    if not math.isfinite(norm):
        raise ValueError(f"{name} must have finite entries (no NaN or inf); its norm is {norm}")
    return norm


def _tolerance(rtol: Any, atol: Any, norm: Array | None) -> float | None:
    rtol = check_tolerance(rtol, "rtol")
    atol = check_tolerance(atol, "atol")
    if rtol is not None and atol is not None:
        raise ValueError("give at most one of rtol and atol")
    if rtol is not None:
        return rtol * float(norm)
    return atol


def hosvd(
    x: Array,
    rank: RankSpec = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_rank: RankSpec = None,
    min_rank: RankSpec = None,
    rule: str = "split",
    method: str = "auto",
    full_output: bool = False,
) -> TuckerTensor | tuple[TuckerTensor, TruncationInfo]:
    r"""Truncated higher-order SVD of a dense tensor (De Lathauwer et al. 2000).

    For each mode i, :math:`U_i` holds the leading left singular vectors of
    :math:`\mathrm{Mat}_i(x)`; the core is :math:`C = x \times_i U_i^H`.

    Parameters
    ----------
    x : array of order d >= 1, floating dtype
    rank : int or sequence of int/None, optional
        Fixed rank per mode (``None`` entries are chosen by the tolerance).
    rtol, atol : float, optional
        Relative (``tol = rtol * ||x||``) or absolute tolerance; at most one.
    max_rank, min_rank : int or sequence, optional
        Bounds applied after the tolerance rule (``min_rank`` defaults to 1).
    rule : {"split", "per_mode"}, default "split"
        ``"split"``: each mode discards singular values whose tail norm is
        :math:`\le tol/\sqrt d`, so that :math:`\|x - y\| \le tol` is guaranteed.
        ``"per_mode"``: tail :math:`\le tol` in every mode (bound :math:`\sqrt d\, tol`).
    method : {"auto", "gram", "svd"}, default "auto"
        How singular vectors are computed.  ``"gram"`` diagonalises
        :math:`\mathrm{Mat}_i \mathrm{Mat}_i^H` (fast; loses singular values below
        :math:`\sim\sqrt{m\varepsilon}\,\sigma_1`, the squared condition number);
        ``"auto"`` uses it and falls back to the SVD per mode where that loss could
        change the chosen rank or the kept subspace (always at zero tolerance).
    full_output : bool, default False
        Also return a :class:`TruncationInfo`.

    Returns
    -------
    TuckerTensor (orthonormal factors), and the info when ``full_output``.

    Notes
    -----
    The ranks are the smallest that the rule allows:
    :math:`r_i = \min\{r : (\sum_{j>r} \sigma_{i,j}^2)^{1/2} \le tol_i\}`.
    Error: :math:`\|x - y\|^2 \le \sum_i \mathrm{tail}_i^2` (so
    :math:`\le tol^2` under ``"split"``) and :math:`\|x-y\| \le \sqrt d\,\|x - x_{best}\|`
    (quasi-optimality).  Cost: :math:`\sum_i (n_i^2 N + n_i^3)` for the Gram route,
    :math:`N = \prod_j n_j`, plus the core projection.

    Examples
    --------
    >>> import numpy as np
    >>> from tucker_dlra import hosvd
    >>> x = np.random.default_rng(0).standard_normal((8, 9, 10))
    >>> t = hosvd(x, rank=(3, 4, 5))
    >>> t.rank
    (3, 4, 5)
    """
    check_floating(x, "x")
    if x.ndim < 1:
        raise ValueError("x must have at least one mode")
    xp = namespace(x)
    _check_nonempty(x.shape, "x")
    if _is_half(xp, x.dtype):  # factorise in float32, hand back the input's dtype
        res = hosvd(xp.astype(x, xp.float32), rank, rtol, atol, max_rank, min_rank, rule,
                    method, full_output)
        return _cast_result(xp, res, x.dtype)
    norm = _finite_norm(xp, x, "x")
    tol = _tolerance(rtol, atol, norm if rtol is not None else None)
    bases, info = _choose_ranks(x, rank, tol, rule, max_rank, min_rank, method)
    core = multi_mode_product(x, bases, transpose=True)
    t = TuckerTensor._orthonormal(core, _fill_identity(x, bases))
    if full_output:
        return t, _with_norm(info, float(norm))
    return t


def _is_half(xp: Any, dtype: Any) -> bool:
    """float16 / bfloat16: no linear algebra kernels (QR, eigh, SVD) in NumPy or torch."""
    return xp.isdtype(dtype, "real floating") and xp.finfo(dtype).bits == 16


def _cast_result(xp: Any, res: Any, dtype: Any) -> Any:
    """A float32 result of :func:`hosvd`/:func:`truncate` in the half dtype of the input.

    The factors stay orthonormal to the half precision's rounding (far inside the tolerance
    of :func:`check_orthonormal`).
    """
    t, info = res if isinstance(res, tuple) else (res, None)
    t = TuckerTensor._orthonormal(xp.astype(t.core, dtype), [xp.astype(u, dtype)
                                                               for u in t.factors])
    return (t, info) if info is not None else t


def _check_nonempty(shape: Sequence[int], name: str) -> None:
    if any(int(n) == 0 for n in shape):
        raise ValueError(f"{name} has an empty mode (shape {tuple(int(n) for n in shape)}); "
                         "every mode must have size >= 1")


def _with_norm(info: TruncationInfo, norm: float) -> TruncationInfo:
    return TruncationInfo(info.rank, info.tails, info.error_bound, info.tolerance, info.rule,
                          norm, info.methods)


def _check_not_above(rank: RankSpec, current: tuple[int, ...], shape: tuple[int, ...]) -> None:
    """``truncate`` cannot raise a rank: name the real limit (the current rank, not n_i)."""
    if rank is None:
        return
    vals = [rank] * len(current) if isinstance(rank, int) else list(rank)  # type: ignore
    if len(vals) != len(current):
        return  # per_mode reports the length error
    for i, (v, r) in enumerate(zip(vals, current, strict=True)):
        if isinstance(v, int) and not isinstance(v, bool) and r < v <= shape[i]:
            raise ValueError(
                f"rank[{i}] = {v} exceeds the current Tucker rank {r} of mode {i} (mode size "
                f"{shape[i]}): truncation can only lower a rank, so it must be in [1, {r}]; "
                f"represent the tensor at a larger rank with tucker_dlra.pad_rank "
                f"(zero-padded core, orthonormal completion of the factors)")


def truncate(
    t: TuckerTensor,
    rtol: float | None = None,
    atol: float | None = None,
    rank: RankSpec = None,
    max_rank: RankSpec = None,
    min_rank: RankSpec = None,
    rule: str = "split",
    method: str = "auto",
    full_output: bool = False,
) -> TuckerTensor | tuple[TuckerTensor, TruncationInfo]:
    r"""Round a Tucker tensor to the smallest ranks within a tolerance (Algorithm 1, l. 10-12).

    This is the paper's rank-adjustment step (Section 3.1): QR of the factors
    :math:`U_i = Q_i R_i`, truncated HOSVD of the small core
    :math:`C \times_i R_i = \hat C \times_i P_i`, and new factors :math:`Q_i P_i`.
    When the factors are already orthonormal (``t.orthonormal``), the QR is skipped.

    Parameters
    ----------
    t : TuckerTensor
    rtol, atol : float, optional
        Relative (to :math:`\|t\|`) or absolute tolerance, at most one.
    rank, max_rank, min_rank : int or sequence, optional
        As in :func:`hosvd`; ``rank`` fixes the ranks (no tolerance needed).
    rule : {"split", "per_mode"}, default "split"
        See :data:`RULES`.  ``"split"`` guarantees :math:`\|t - y\| \le tol`;
        ``"per_mode"`` is the rule behind the paper's compression figures (each
        mode's tail :math:`\le tol`, total :math:`\le \sqrt d\, tol`).
    method : {"auto", "gram", "svd"}
        See :func:`hosvd`.
    full_output : bool
        Also return a :class:`TruncationInfo` (ranks, tails, error bound).

    Returns
    -------
    TuckerTensor with orthonormal factors (and the info).

    Notes
    -----
    Chosen ranks: per mode the smallest :math:`r_i` with
    :math:`(\sum_{j>r_i}\sigma_{i,j}^2)^{1/2} \le tol_i` (``tol_i = tol/\sqrt d`` or ``tol``),
    clamped to ``[min_rank, max_rank]``.  With no tolerance and no rank the tensor
    is only re-orthonormalised and made of full multilinear rank.
    Cost: :math:`O(\sum_i n_i r_i^2)` for the QRs plus the HOSVD of the core,
    :math:`O(\sum_i r_i \prod_j r_j)` -- never the dense tensor.
    """
    if not isinstance(t, TuckerTensor):
        raise TypeError(f"t must be a TuckerTensor; got {type(t).__name__}")
    xp = t.xp
    _check_nonempty(t.shape, "t")
    _check_nonempty(t.rank, "t.core")
    if _is_half(xp, t.dtype):  # factorise in float32, hand back the input's dtype
        t32 = TuckerTensor(xp.astype(t.core, xp.float32),
                           [xp.astype(u, xp.float32) for u in t.factors])
        res = truncate(t32, rtol, atol, rank, max_rank, min_rank, rule, method, full_output)
        return _cast_result(xp, res, t.dtype)
    if t.orthonormal:
        qs, core = list(t.factors), t.core
    else:
        qs, rs = zip(*(qr(xp, u) for u in t.factors), strict=True)
        qs, core = list(qs), multi_mode_product(t.core, list(rs))
    norm = _finite_norm(xp, core, "t")
    tol = _tolerance(rtol, atol, norm if rtol is not None else None)
    _check_not_above(rank, t.rank, t.shape)
    bases, info = _choose_ranks(core, rank, tol, rule, max_rank, min_rank, method)
    new_core = multi_mode_product(core, bases, transpose=True)
    factors = [q if p is None else q @ p for q, p in zip(qs, bases, strict=True)]
    out = TuckerTensor._orthonormal(new_core, factors)
    if full_output:
        return out, _with_norm(info, float(norm))
    return out


def check_orthonormal(factors: Sequence[Array], name: str = "factors",
                      atol: float | None = None) -> None:
    r"""Raise ``ValueError`` unless every factor satisfies :math:`\|U^H U - I\|_F \le` atol.

    Default ``atol``: ``1e3 * r * sqrt(n) * eps`` of the factor's dtype (the rounding of a
    Householder QR is far below it; so is the drift of thousands of float32 training
    steps).  Cost :math:`O(n r^2)` per factor and one scalar transfer for all of them.
    """
    for i, dev, tol in orthonormality_defects(factors, atol):
        raise ValueError(
            f"{name}[{i}] must have orthonormal columns (||U^H U - I|| <= {tol:.2e}); "
            f"got deviation {dev:.2e}"
        )


def orthonormality_defects(factors: Sequence[Array],
                           atol: float | None = None) -> list[tuple[int, float, float]]:
    r"""The factors that fail :func:`check_orthonormal`, as ``(index, deviation, tolerance)``.

    ``deviation`` is :math:`\|U^H U - I\|_F`; ``tolerance`` as in :func:`check_orthonormal`.
    An empty list means all factors are orthonormal.  Cost :math:`O(\sum_i n_i r_i^2)` and one
    scalar transfer.
    """
    factors = list(factors)
    if not factors:
        return []
    xp = namespace(factors[0])
    devs, tols = [], []
    for u in factors:
        n, r = int(u.shape[0]), int(u.shape[1])
        eps = dtype_eps(xp, u.dtype)
        tols.append(atol if atol is not None else 1e3 * max(r, 1) * eps * max(math.sqrt(n), 1))
        g = ct(xp, u) @ u - xp.eye(r, dtype=u.dtype, device=_device(u))
        devs.append(xp.linalg.vector_norm(xp.reshape(g, (-1,))))
    host = _to_host(xp, devs)
    return [(i, dev, tol) for i, (dev, tol) in enumerate(zip(host, tols, strict=True))
            if not dev <= tol]


def _to_host(xp: Any, values: list[Array]) -> list[float]:
    """0-d arrays to Python floats with one device-to-host transfer (stacked first)."""
    if len(values) == 1 or len({v.dtype for v in values}) > 1:
        return [float(v) for v in values]
    stacked = xp.stack(values)
    if hasattr(stacked, "tolist"):  # NumPy, torch: one transfer
        return [float(v) for v in stacked.tolist()]
    return [float(stacked[i]) for i in range(len(values))]
