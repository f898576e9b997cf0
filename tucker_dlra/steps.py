r"""Building blocks shared by the BUG integrators and the TDLRT optimizer.

These are the named substeps of Algorithm 1 (and of the whole BUG family of
Ceruti & Lubich, BIT 62, 2022, in the Tucker form of Ceruti, Lubich & Walach,
SINUM 59, 2021): the QR of the core unfolding that defines the :math:`K`-step, the :math:`K`-step
right-hand side of Theorem 1, the basis
augmentation, and the augmented (Galerkin) starting core.  Both
:mod:`tucker_dlra.integrators` and :mod:`tucker_dlra.nn` call them, so the
mathematics lives in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .backend import ct, namespace, qr
from .tensor import fold, mode_product, multi_mode_product, unfold
from .tucker import TuckerTensor, pad_core

__all__ = [
    "core_qr",
    "k_core",
    "k_tensor",
    "k_gradient",
    "k_gradients",
    "augment_basis",
    "galerkin_core",
    "c_gradient",
    "parallel_core",
]

Array = Any


def core_qr(core: Array, mode: int) -> tuple[Array, Array]:
    r"""QR of the transposed core unfolding: :math:`\mathrm{Mat}_i(C)^H = Q_i S_i^H`.

    Algorithm 1, line 2 (Theorem 1).  Returns ``(Q, S)`` with ``Q`` of shape
    :math:`(\prod_{j\ne i} r_j, r_i)` with orthonormal columns and ``S`` of shape
    :math:`(r_i, r_i)`, so that :math:`\mathrm{Mat}_i(C) = S_i Q_i^H` and
    :math:`K_i = U_i S_i` spans the range of :math:`U_i` (when :math:`S_i` is
    invertible).  Cost :math:`O(r_i^2 \prod_{j\ne i} r_j)`.
    """
    xp = namespace(core)
    q, r = qr(xp, ct(xp, unfold(core, mode)))
    return q, ct(xp, r)


def k_core(core: Array, mode: int) -> tuple[Array, Array]:
    r"""The frozen core :math:`G_i = \mathrm{Ten}_i(Q_i^H)` and :math:`S_i` of Theorem 1.

    With it, :math:`\mathrm{Ten}_i(K_i V_i^H) = G_i \times_i K_i \times_{j\ne i} U_j`
    (the argument of the loss in Eq. (9)), and :math:`W = G_i \times_i (U_i S_i)
    \times_{j \ne i} U_j` at the start of the K-step.  Cost as :func:`core_qr`.
    """
    q, s = core_qr(core, mode)
    xp = namespace(core)
    shape = list(core.shape)
    shape[mode] = q.shape[1]
    return fold(ct(xp, q), mode, shape), s


def k_tensor(g: Array, factors: Sequence[Array], k: Array, mode: int) -> TuckerTensor:
    r""":math:`Y(K) = G_i \times_i K \times_{j \ne i} U_j` as a TuckerTensor (Eq. (9))."""
    fs = list(factors)
    fs[mode] = k
    return TuckerTensor(g, fs)


def k_gradient(grad: Array | TuckerTensor, g: Array, factors: Sequence[Array],
               mode: int) -> Array:
    r"""K-step right-hand side :math:`\mathrm{Mat}_i(Z)\,V_i` (Theorem 1, Eq. (9)).

    Parameters
    ----------
    grad : dense array or TuckerTensor, shape of the full tensor
        :math:`Z` = :math:`\nabla_W\mathcal L` (or any :math:`F(t, Y)`).
    g : array
        The frozen core :math:`G_i` from :func:`k_core`.
    factors : sequence of arrays
        The current factors :math:`U_j` (``factors[mode]`` is not used).
    mode : int

    Returns
    -------
    array of shape (n_i, r_i):
    :math:`\mathrm{Mat}_i(Z \times_{j\ne i} U_j^H)\,\mathrm{Mat}_i(G_i)^H`, which equals
    :math:`\nabla_{K_i}\mathcal L(G_i \times_i K_i \times_{j\ne i}U_j)` when
    ``grad`` is :math:`\nabla_W\mathcal L` (Theorem 1).  No Kronecker product, no
    pseudo-inverse.  Cost :math:`O(\sum_{j\ne i} r_j \prod n)` for dense ``grad``.
    """
    xp = namespace(g)
    if isinstance(grad, TuckerTensor):
        mats = [grad.factors[j] if j == mode else ct(xp, u) @ grad.factors[j]
                for j, u in enumerate(factors)]
        proj = multi_mode_product(grad.core, mats)
    else:
        mats = [None if j == mode else u for j, u in enumerate(factors)]
        proj = multi_mode_product(grad, mats, transpose=True)
    return unfold(proj, mode) @ ct(xp, unfold(g, mode))


def k_gradients(grad: Array, gs: Sequence[Array], factors: Sequence[Array]) -> list[Array]:
    r"""All :math:`d` K-step right-hand sides of Theorem 1 at once (dense ``grad``).

    Returns ``[k_gradient(grad, gs[i], factors, i) for i in range(d)]`` (Algorithm 1, lines
    1-4, which start every K-step from the same point), but the :math:`d` leave-one-out
    projections :math:`Z \times_{j\ne i} U_j^H` share their partial products: the modes
    are split in two halves, each half's projection of ``grad`` serves every mode of the
    other half, recursively -- :math:`O(d \log d)` mode products instead of
    :math:`d(d-1)`, and two (instead of :math:`d`) on the full-size ``grad``.  Equal to the
    per-mode results up to rounding (the order of the sums differs).

    Parameters
    ----------
    grad : dense array of the full tensor's shape (:math:`Z = \nabla_W\mathcal L`).
    gs : sequence of arrays, the frozen cores :math:`G_i` from :func:`k_core`.
    factors : sequence of arrays, the current factors :math:`U_j`.

    Returns
    -------
    list of arrays of shapes (n_i, r_i).
    """
    xp = namespace(grad)
    d = len(factors)
    if len(gs) != d or grad.ndim != d:
        raise ValueError(f"grad (order {grad.ndim}), gs ({len(gs)}) and factors ({d}) must "
                         "have one entry per mode")
    proj: dict[int, Array] = {}

    def leave_one_out(t: Array, modes: list[int]) -> None:
        if len(modes) == 1:
            proj[modes[0]] = t
            return
        half = len(modes) // 2
        left, right = modes[:half], modes[half:]
        leave_one_out(multi_mode_product(t, [factors[j] for j in right], right,
                                         transpose=True), left)
        leave_one_out(multi_mode_product(t, [factors[j] for j in left], left,
                                         transpose=True), right)

    leave_one_out(grad, list(range(d)))
    return [unfold(proj[i], i) @ ct(xp, unfold(gs[i], i)) for i in range(d)]


def augment_basis(u: Array, k: Array) -> Array:
    r"""Orthonormal basis :math:`\hat U = \mathrm{orth}[U \mid K]` with ``U`` first.

    Algorithm 1, lines 5-7 (basis augmentation).  QR of :math:`[U, K]`; the first
    :math:`r` columns are then overwritten by :math:`U` itself (they equal
    :math:`U\,\mathrm{diag}(\pm 1)` anyway), so that :math:`\hat U^H U = [I; 0]`
    exactly and the augmented core is the zero-padded core.  The result has
    :math:`\min(2r, n)` columns; when K lies in span U the extra columns are
    arbitrary orthonormal directions, which truncation removes.
    Cost :math:`O(n r^2)`.
    """
    xp = namespace(u, k)
    q, _ = qr(xp, xp.concat([u, k], axis=1))
    r = u.shape[1]
    return xp.concat([u, q[:, r:]], axis=1)


def galerkin_core(core: Array, old: Sequence[Array], new: Sequence[Array]) -> Array:
    r"""Starting core of the Galerkin (C-) step: :math:`C \times_i (\hat U_i^H U_i)`.

    Algorithm 1, line 8 (:math:`\widetilde C`).  Represents the same tensor in the
    new bases when :math:`\mathrm{span}\,U_i \subset \mathrm{span}\,\hat U_i`.
    Cost :math:`O(\sum_i n_i \hat r_i r_i)` plus the core products.
    """
    xp = namespace(core)
    mats = [ct(xp, un) @ uo for uo, un in zip(old, new, strict=True)]
    return multi_mode_product(core, mats)


def c_gradient(grad: Array | TuckerTensor, factors: Sequence[Array]) -> Array:
    r"""C-step right-hand side :math:`Z \times_i U_i^H` (Eq. (9), second equation).

    For :math:`Z = \nabla_W\mathcal L(C \times_i U_i)` this is
    :math:`\nabla_C \mathcal L`.  Cost :math:`O(r \prod n)` for dense Z,
    :math:`O(\sum_i n_i r_i s_i)` plus core products for Tucker Z.
    """
    if isinstance(grad, TuckerTensor):
        xp = namespace(grad.core)
        mats = [ct(xp, u) @ v for u, v in zip(factors, grad.factors, strict=True)]
        return multi_mode_product(grad.core, mats)
    return multi_mode_product(grad, list(factors), transpose=True)


def parallel_core(c_bar: Array, gs: Sequence[Array], k_new: Sequence[Array],
                  new_dirs: Sequence[Array]) -> Array:
    r"""Block-assembled augmented core of the parallel BUG, step 3 (Ceruti, Kusch, Lubich
    & Sulz, "A parallel basis update and Galerkin integrator for tree tensor networks", 2024).

    Parameters
    ----------
    c_bar : array of shape (r_0, ..., r_{d-1})
        :math:`\bar C(t_1)`, the C-step result in the old bases.
    gs : sequence of arrays
        :math:`G_i = \mathrm{Ten}_i(Q_i^H)` from :func:`k_core` at the start of the step.
    k_new : sequence of arrays
        :math:`K_i(t_1)`, each of shape (n_i, r_i).
    new_dirs : sequence of arrays
        :math:`\tilde U_i` of shape (n_i, m_i): the new directions, orthogonal to
        :math:`U_i^0` (the trailing columns of :func:`augment_basis`).

    Returns
    -------
    array
        Of shape :math:`(r_0 + m_0, \dots, r_{d-1} + m_{d-1})`.  The (old, ..., old)
        block is :math:`\bar C`, the block new only in mode i is
        :math:`\mathrm{Ten}_i(\tilde U_i^H K_i(t_1) Q_i^H) = G_i \times_i (\tilde U_i^H
        K_i(t_1))`, blocks new in two or more modes are zero (Ceruti, Kusch, Lubich &
        Sulz), in the basis :math:`[U_i^0, \tilde U_i]`.

    Notes
    -----
    Cost :math:`O(\sum_i n_i m_i r_i + \sum_i m_i \prod_j r_j)`.
    """
    xp = namespace(c_bar)
    r = [int(s) for s in c_bar.shape]
    m = [int(u.shape[1]) for u in new_dirs]
    core = pad_core(c_bar, [(0, mi) for mi in m])
    for i, (g, k, u) in enumerate(zip(gs, k_new, new_dirs, strict=True)):
        if m[i] == 0:
            continue
        block = mode_product(g, ct(xp, u) @ k, i)
        pads = [(r[j], 0) if j == i else (0, m[j]) for j in range(len(r))]
        core = core + pad_core(block, pads)
    return core
