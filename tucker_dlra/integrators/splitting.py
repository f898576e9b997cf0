r"""Tucker projector-splitting integrator (Lubich, Vandereycken & Walach, SINUM 56, 2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..backend import ct, qr
from ..steps import k_core, k_gradient, k_tensor
from ..tensor import mode_product
from ..tucker import TuckerTensor
from ._common import (
    StepInfo,
    c_step,
    check_fixed_rank,
    check_time,
    check_y0,
    make_context,
)

__all__ = ["projector_splitting"]


def projector_splitting(F: Callable, t0: float, y0: TuckerTensor, h: float, *,
                        substep: Any = "rk4", substeps: int = 1, structured: bool = False,
                        step_index: int = 0) -> tuple[TuckerTensor, StepInfo]:
    r"""One (Lie-Trotter) step of the Tucker projector-splitting integrator.

    Lubich, Vandereycken & Walach, "Time integration of rank-constrained Tucker tensors",
    SINUM 56 (2018) 1273-1290 (matrix case: Lubich & Oseledets, BIT 54, 2014).  For :math:`i = 1,
    \dots, d` in sequence, with the bases
    :math:`U_1^1, \dots, U_{i-1}^1, U_i^0, \dots, U_d^0` and the current core
    :math:`C^{(i-1)}` (:math:`C^{(0)} = C^0`):

    1. :math:`\mathrm{Mat}_i(C^{(i-1)})^H = Q_i S_i^H`; K-step
       :math:`\dot K = \mathrm{Mat}_i(F(t, G_i \times_i K \times_{j\ne i} U_j))V_i` from
       :math:`U_iS_i` (:func:`~tucker_dlra.steps.k_gradient`); QR
       :math:`K(t_1) = U_i^1 \hat S_i`.
    2. Backward S-step
       :math:`\dot S = -U_i^{1H}\mathrm{Mat}_i(F(t, G_i\times_i U_i^1 S \times_{j\ne i}U_j))V_i`
       from :math:`\hat S_i`; :math:`C^{(i)} = G_i \times_i S(t_1)`.

    Finally the forward C-step :math:`\dot C = F(t, C\times_j U_j^1)\times_j U_j^{1H}` from
    :math:`C^{(d)}`.  All substeps run over :math:`[t_0, t_1]`.

    Parameters
    ----------
    F, t0, y0, h, substep, substeps, structured, step_index
        As in :func:`bug`.

    Returns
    -------
    y1 : TuckerTensor (same rank, orthonormal factors)
    info : StepInfo

    Notes
    -----
    Exact for :math:`F = \dot A` with :math:`A(t)` of the same rank and exact substeps;
    robust to small singular values.  The backward S-step "is a potentially unstable
    substep for dissipative problems" (Ceruti & Lubich 2022).  Sequential: :math:`2d+1`
    substep ODEs per step (about :math:`4(2d+1)` evaluations of F with ``rk4``); cost besides
    F as :func:`bug`.
    """
    t0, h = check_time(t0, h)
    y0 = check_y0(y0)
    check_fixed_rank(y0, "projector_splitting")
    ctx = make_context(F, y0, t0, h, structured, step_index, substep, substeps)
    xp = y0.xp
    factors = list(y0.factors)
    core = y0.core
    for i in range(y0.ndim):
        g, s = k_core(core, i)
        fac = list(factors)
        k0 = fac[i] @ s
        f_k = ctx.rhs(
            lambda k, g=g, i=i, fac=fac: k_tensor(g, fac, k, i),
            lambda z, ya, g=g, i=i, fac=fac: k_gradient(z, g, fac, i),
            start=k0 if i == 0 else None,
        )
        k1 = ctx.solve(f_k, t0, k0, h)
        u1, s_hat = qr(xp, k1)
        fac[i] = u1
        f_s = ctx.rhs(
            lambda s_, g=g, i=i, u1=u1, fac=fac: k_tensor(g, fac, u1 @ s_, i),
            lambda z, ya, g=g, i=i, u1=u1, fac=fac: -(ct(xp, u1) @ k_gradient(z, g, fac, i)),
        )
        s1 = ctx.solve(f_s, t0, s_hat, h)
        core = mode_product(g, s1, i)
        factors = fac
    c1 = c_step(ctx, core, factors, starts_at_y0=False)
    y1 = TuckerTensor._orthonormal(c1, factors)
    return y1, StepInfo(nfev=ctx.nfev, rank=y1.rank, t=t0, h=h)
