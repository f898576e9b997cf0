r"""Unfoldings and mode products (the paper's Mat_i, Ten_i and :math:`\times_i`).

Convention (used everywhere in the library)
-------------------------------------------
Modes are numbered from 0 in code (the paper numbers them from 1).  The mode-``i``
unfolding is the C-order reshape

.. math:: \mathrm{Mat}_i(X) = \texttt{moveaxis}(X, i, 0).\texttt{reshape}(n_i, -1),

so its columns run over the remaining modes in increasing order, the last index
fastest.  With this convention, for :math:`X = C \times_{j} U_j`,

.. math:: \mathrm{Mat}_i(X) = U_i\, \mathrm{Mat}_i(C)\, (U_{j_1} \otimes \cdots \otimes
          U_{j_{d-1}})^{\top}, \qquad j_1 < \dots < j_{d-1},\ j_k \neq i,

which is the paper's :math:`\mathrm{Mat}_i(W) = U_i S_i V_i^\top` (Section 2.1).
:func:`fold` is :math:`\mathrm{Ten}_i`, the inverse of :func:`unfold`.
The Kronecker product is never formed: every product with :math:`V_i` is a
sequence of mode products.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .backend import check_floating, conj, ct, namespace

__all__ = ["unfold", "fold", "mode_product", "multi_mode_product"]

Array = Any


def _check_mode(mode: int, ndim: int, name: str = "mode") -> int:
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"{name} must be an int in [-{ndim}, {ndim - 1}]; got {mode!r}")
    if not -ndim <= mode < ndim:
        raise ValueError(f"{name} must be in [-{ndim}, {ndim - 1}] for a tensor of order {ndim}; "
                         f"got {mode}")
    return mode % ndim


def unfold(x: Array, mode: int) -> Array:
    r"""Mode-``mode`` unfolding :math:`\mathrm{Mat}_i(x)` (paper, Section 2.1).

    Parameters
    ----------
    x : array, shape (n_0, ..., n_{d-1})
        Tensor of order ``d >= 1``.
    mode : int
        Mode ``i`` in ``[-d, d-1]``.

    Returns
    -------
    array, shape (n_i, prod_{j != i} n_j)
        The C-order unfolding (see the module docstring for the convention).

    Notes
    -----
    Cost: one copy of ``x`` (a view when ``mode == 0``).
    """
    xp = namespace(x)
    mode = _check_mode(mode, x.ndim)
    n = x.shape[mode]
    if mode != 0:
        x = xp.moveaxis(x, mode, 0)
    return xp.reshape(x, (n, math.prod(x.shape[1:])))


def fold(matrix: Array, mode: int, shape: Sequence[int]) -> Array:
    r"""Inverse of :func:`unfold`: the paper's tensorisation :math:`\mathrm{Ten}_i`.

    Parameters
    ----------
    matrix : array, shape (shape[mode], prod_{j != mode} shape[j])
        A mode-``mode`` unfolding.
    mode : int
        The mode the matrix was unfolded along.
    shape : sequence of int
        Shape of the tensor to rebuild.

    Returns
    -------
    array of shape ``shape`` with ``unfold(fold(m, i, shape), i) == m``.

    Notes
    -----
    Cost: one copy of the data.
    """
    xp = namespace(matrix)
    shape = tuple(int(s) for s in shape)
    mode = _check_mode(mode, len(shape))
    rest = shape[:mode] + shape[mode + 1 :]
    expected = (shape[mode], math.prod(rest))
    if matrix.ndim != 2 or tuple(matrix.shape) != expected:
        raise ValueError(
            f"matrix must have shape {expected} to fold along mode {mode} into {shape}; "
            f"got {tuple(matrix.shape)}"
        )
    x = xp.reshape(matrix, (shape[mode],) + rest)
    return x if mode == 0 else xp.moveaxis(x, 0, mode)


def mode_product(x: Array, matrix: Array, mode: int, transpose: bool = False) -> Array:
    r"""Mode product :math:`x \times_i M`, i.e. :math:`\mathrm{Mat}_i(y) = M\,\mathrm{Mat}_i(x)`.

    Parameters
    ----------
    x : array, shape (n_0, ..., n_{d-1})
    matrix : array, shape (m, n_i) (or (n_i, m) with ``transpose=True``)
    mode : int
    transpose : bool, default False
        Multiply by the conjugate transpose :math:`M^H` instead of ``M``
        (projection onto a basis: :math:`x \times_i U^H`).

    Returns
    -------
    array, shape (n_0, ..., m, ..., n_{d-1})

    Notes
    -----
    Eq. (3) of the paper applies this once per mode.  Cost
    :math:`O(m \prod_j n_j)` flops via one ``tensordot``; no Kronecker product.
    """
    check_floating(x, "x")
    check_floating(matrix, "matrix")
    xp = namespace(x, matrix)
    mode = _check_mode(mode, x.ndim)
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-d; got shape {tuple(matrix.shape)}")
    if transpose:
        matrix = ct(xp, matrix)
    if matrix.shape[1] != x.shape[mode]:
        raise ValueError(
            f"matrix has {matrix.shape[1]} columns{' (after transpose)' if transpose else ''} "
            f"but mode {mode} of x has size {x.shape[mode]}; they must be equal"
        )
    if x.dtype != matrix.dtype:
        dt = xp.result_type(x, matrix)
        x, matrix = xp.astype(x, dt), xp.astype(matrix, dt)
    if mode == x.ndim - 1:
        return x @ xp.matrix_transpose(matrix) if x.ndim > 1 else matrix @ x
    if mode == 0:  # Mat_0 is a view: one matrix product, no transposition of x
        rest = tuple(x.shape[1:])
        y = matrix @ xp.reshape(x, (x.shape[0], math.prod(rest)))
        return xp.reshape(y, (matrix.shape[0], *rest))
    y = xp.tensordot(matrix, x, axes=([1], [mode]))
    return y if mode == 0 else xp.moveaxis(y, 0, mode)


def multi_mode_product(
    x: Array,
    matrices: Sequence[Array | None],
    modes: Sequence[int] | None = None,
    transpose: bool = False,
) -> Array:
    r"""Products :math:`x \times_{i \in \text{modes}} M_i` in every listed mode.

    Parameters
    ----------
    x : array of order d
    matrices : sequence of arrays (``None`` entries are skipped)
        One matrix per entry of ``modes``.
    modes : sequence of int, optional
        Modes to multiply; default ``range(len(matrices))``.
    transpose : bool, default False
        Use the conjugate transposes :math:`M_i^H` (e.g. the core
        :math:`C = W \times_i U_i^H` of a Tucker projection).

    Returns
    -------
    array

    Notes
    -----
    Mode products in distinct modes commute; they are applied in the order
    that shrinks the intermediate tensor fastest, so the cost is that of the
    cheapest sequence of :func:`mode_product` calls of this greedy rule.  When that order
    is :math:`0, 1, \dots, d-1` with every mode multiplied, the products contract the
    leading mode and append the new one last (:math:`d` matrix products, no transposition
    of the tensor; same flops).
    This is the Tucker reconstruction :math:`C \times_{i=1}^d U_i` of Eq. (3).
    """
    if modes is None:
        modes = range(len(matrices))
    modes = list(modes)
    if len(modes) != len(matrices):
        raise ValueError(
            f"matrices and modes must have the same length; got {len(matrices)} and {len(modes)}"
        )
    check_floating(x, "x")
    pairs = []
    seen = set()
    for m, mat in zip(modes, matrices, strict=True):
        if mat is None:
            continue
        m = _check_mode(m, x.ndim, "modes")
        if m in seen:
            raise ValueError(f"modes must be distinct; mode {m} appears twice")
        seen.add(m)
        rows, cols = (mat.shape[1], mat.shape[0]) if transpose else (mat.shape[0], mat.shape[1])
        pairs.append((rows / max(cols, 1), m, mat))
    pairs.sort(key=lambda p: p[0])  # shrinking products first
    if [m for _, m, _ in pairs] == list(range(x.ndim)) and x.ndim > 1 and all(
            mat.ndim == 2 and mat.dtype == x.dtype for _, _, mat in pairs):
        return _cyclic_products(x, [mat for _, _, mat in pairs], transpose)
    for _, m, mat in pairs:
        x = mode_product(x, mat, m, transpose=transpose)
    return x


def _cyclic_products(x: Array, mats: Sequence[Array], transpose: bool) -> Array:
    r""":math:`x \times_0 M_0 \cdots \times_{d-1} M_{d-1}` by :math:`d` matrix products
    that each contract the leading mode and append the new one last (after :math:`d`
    products the modes are back in order): no transposition of the tensor, a few array
    operations per mode."""
    xp = namespace(x)
    shape = [int(s) for s in x.shape]
    y = x
    for i, mat in enumerate(mats):
        cols = int(mat.shape[0]) if transpose else int(mat.shape[1])
        if cols != shape[i]:
            raise ValueError(
                f"matrix has {cols} columns{' (after transpose)' if transpose else ''} but "
                f"mode {i} of x has size {shape[i]}; they must be equal")
        mt = conj(xp, mat) if transpose else xp.matrix_transpose(mat)  # M^T
        rest = math.prod(shape[i + 1:]) * math.prod(int(m.shape[1] if transpose else
                                                        m.shape[0]) for m in mats[:i])
        y = xp.matrix_transpose(xp.reshape(y, (shape[i], rest))) @ mt
    out = [int(m.shape[1] if transpose else m.shape[0]) for m in mats]
    return xp.reshape(y, tuple(out))
