r"""Tangent space of the manifold of fixed Tucker rank (paper Eqs. (4) and (7)).

At :math:`W = C \times_i U_i \in \mathcal M_\rho` (orthonormal :math:`U_i`, full-rank
unfoldings of :math:`C`), every tangent vector is
:math:`\delta C \times_i U_i + \sum_j C \times_j \delta U_j \times_{k \ne j} U_k`
with :math:`U_j^H \delta U_j = 0` (Eq. (4)).  The orthogonal projection (7) is
(Koch & Lubich 2010, Thm. 2.1; the paper's Eq. (8) with :math:`-\nabla\mathcal L` as Z)

.. math::
   \delta C = Z \times_i U_i^H, \qquad
   \delta U_j = (I - U_j U_j^H)\,\mathrm{Mat}_j(Z \times_{k\neq j} U_k^H)\,
                \mathrm{Mat}_j(C)^{\dagger}.
"""

from __future__ import annotations

from typing import Any

from .backend import ct, namespace
from .tensor import multi_mode_product, unfold
from .tucker import TuckerTensor, check_orthonormal, pad_core

__all__ = ["tangent_project", "tangent_components"]

Array = Any


def _partial_projection(z: TuckerTensor | Array, factors: list[Array], mode: int) -> Array:
    """:math:`Z \\times_{k \\ne i} U_k^H` without forming a dense Z when Z is Tucker."""
    others = [None if k == mode else u for k, u in enumerate(factors)]
    if isinstance(z, TuckerTensor):
        xp = namespace(z.core)
        mats = [z.factors[k] if k == mode else ct(xp, u) @ z.factors[k]
                for k, u in enumerate(factors)]
        return multi_mode_product(z.core, mats)
    return multi_mode_product(z, others, transpose=True)


def tangent_components(t: TuckerTensor, z: TuckerTensor | Array,
                       check: bool = True) -> tuple[Array, list[Array]]:
    r"""The components :math:`(\delta C, \delta U_1, \dots, \delta U_d)` of :math:`P(W)[Z]`.

    Parameters
    ----------
    t : TuckerTensor
        The point :math:`W = C \times_i U_i`; factors must be orthonormal.
    z : TuckerTensor or dense array with ``z.shape == t.shape``
    check : bool, default True
        Verify the orthonormality of ``t.factors`` (cost :math:`O(\sum n_i r_i^2)`).

    Returns
    -------
    dC : array of shape ``t.rank``
    dU : list of arrays, ``dU[i]`` of shape (n_i, r_i), with :math:`U_i^H \delta U_i = 0`

    Notes
    -----
    Implements the gauged factor equations (8) of the paper (right-hand sides with
    :math:`Z` in place of :math:`-\nabla_W\mathcal L`).  Cost for dense Z:
    :math:`O(d\, r \prod_i n_i)`; for Tucker Z of rank s: :math:`O(\sum_i n_i r_i s_i)`
    plus core contractions.  The pseudo-inverse makes this map ill-conditioned when
    :math:`\mathrm{Mat}_i(C)` has small singular values -- the stiffness that the
    BUG integrators avoid.
    """
    if not isinstance(t, TuckerTensor):
        raise TypeError(f"t must be a TuckerTensor; got {type(t).__name__}")
    zshape = z.shape if isinstance(z, TuckerTensor) else tuple(z.shape)
    if tuple(zshape) != t.shape:
        raise ValueError(f"z must have the shape of t, {t.shape}; got {tuple(zshape)}")
    if check:
        check_orthonormal(t.factors, "t.factors")
    xp = t.xp
    c = t.core
    du = []
    dc = None
    for i, u in enumerate(t.factors):
        zi = _partial_projection(z, t.factors, i)  # n_i x r_others
        if dc is None:
            dc = multi_mode_product(zi, [u], modes=[i], transpose=True)
        a = unfold(zi, i)
        a = a - u @ (ct(xp, u) @ a)
        du.append(a @ xp.linalg.pinv(unfold(c, i)))
    return dc, du


def tangent_project(t: TuckerTensor, z: TuckerTensor | Array, dense: bool = False,
                    check: bool = True) -> TuckerTensor | Array:
    r"""Orthogonal projection :math:`P(W)[Z]` onto the tangent space (4) at W = ``t`` (Eq. (7)).

    Parameters
    ----------
    t : TuckerTensor
        Point on :math:`\mathcal M_\rho` with orthonormal factors and full-rank core
        unfoldings.
    z : TuckerTensor or dense array of shape ``t.shape``
    dense : bool, default False
        Return the dense projection instead of a TuckerTensor.
    check : bool, default True
        Verify that ``t``'s factors are orthonormal.

    Returns
    -------
    TuckerTensor of rank :math:`\le 2r` (factors :math:`[U_i, \delta U_i]`; core with
    the block :math:`\delta C` in the corner and :math:`C` in each block that is
    "new" in exactly one mode), or a dense array.

    Notes
    -----
    :math:`P(W)[Z] = \delta C \times_i U_i + \sum_j C \times_j \delta U_j \times_{k\ne j} U_k`
    with the components of :func:`tangent_components`.  :math:`P(W)` is linear,
    idempotent and self-adjoint; :math:`P(W)[W] = W`.  Cost as in
    :func:`tangent_components`, plus :math:`O(d\, 2^d \prod r_i)` for the core.
    """
    dc, du = tangent_components(t, z, check=check)
    xp = t.xp
    r = t.rank
    d = t.ndim
    core = pad_core(dc, [(0, ri) for ri in r])
    for i in range(d):
        core = core + pad_core(t.core, [(ri, 0) if k == i else (0, ri) for k, ri in enumerate(r)])
    factors = [xp.concat([u, v], axis=1) for u, v in zip(t.factors, du, strict=True)]
    out = TuckerTensor(core, factors)
    return out.full() if dense else out
