r"""Direct ("vanilla") integration of the factor equations (8) -- the unstable baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..manifold import tangent_components
from ..tucker import TuckerTensor
from ._common import StepInfo, check_fixed_rank, check_time, check_y0, make_context

__all__ = ["direct"]


def direct(F: Callable, t0: float, y0: TuckerTensor, h: float, *, substep: Any = "rk4",
           substeps: int = 1, structured: bool = False, step_index: int = 0
           ) -> tuple[TuckerTensor, StepInfo]:
    r"""One explicit step of the projected factor equations (8) with the pseudoinverse.

    The paper's Eq. (8) (Koch & Lubich 2010, Thm. 2.1 for Tucker; with :math:`Z = F(t, Y)`
    in place of :math:`-\nabla_W\mathcal L`):

    .. math::
       \dot C = Z \times_j U_j^H, \qquad
       \dot U_i = (I - U_iU_i^H)\,\mathrm{Mat}_i(Z \times_{j\ne i} U_j^H)\,
                  \mathrm{Mat}_i(C)^\dagger,

    integrated for the state :math:`(C, U_1, \dots, U_d)` with the substep solver
    (``"euler"``, ``"rk4"`` or a callable on tuples of arrays; ``"exact"``/``"krylov"`` are refused:
    the system is nonlinear), right-hand side :func:`~tucker_dlra.tangent_components`.
    At the end of the step the factors are re-orthonormalised by QR (a retraction;
    the gauge :math:`U_i^H\dot U_i = 0` keeps them orthonormal only to :math:`O(h^2)`).

    This is the baseline whose failure the paper is about (Section 3): the
    pseudoinverse makes the system stiff when :math:`\mathrm{Mat}_i(C)` has small singular
    values, so explicit steps need :math:`h \lesssim \sigma_{\min}` (Lubich & Oseledets
    2014; Kieri, Lubich & Walach 2016).

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
    Cost per evaluation: F, the projections :math:`O(d\,r\prod_j n_j)` (dense Z) and
    :math:`d` pseudoinverses of :math:`r_i \times \prod_{j\ne i}r_j` matrices.  With
    ``rk4``: 4 evaluations of F per step.
    """
    if isinstance(substep, str) and substep in ("exact", "krylov"):
        raise ValueError(f"substep={substep!r} needs a linear substep ODE; the factor equations "
                         f"(8) are nonlinear: use 'euler', 'rk4' or a callable")
    t0, h = check_time(t0, h)
    y0 = check_y0(y0)
    check_fixed_rank(y0, "direct")
    ctx = make_context(F, y0, t0, h, structured, step_index, substep, substeps)
    state0 = (y0.core, *y0.factors)

    def arg(s: tuple) -> TuckerTensor:
        return TuckerTensor(s[0], list(s[1:]))

    def proj(z: Any, ya: TuckerTensor) -> tuple:
        dc, du = tangent_components(ya, z, check=False)
        return (dc, *du)

    f = ctx.rhs(arg, proj, start=state0)
    s1 = ctx.solve(f, t0, state0, h)
    y1 = TuckerTensor(s1[0], list(s1[1:])).orthonormalize()
    return y1, StepInfo(nfev=ctx.nfev, rank=y1.rank, t=t0, h=h)
