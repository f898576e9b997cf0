r"""Fixed-rank and rank-adaptive BUG integrators (the paper's Algorithm 1).

* :func:`bug` -- the fixed-rank "unconventional" basis-update & Galerkin integrator
  (Ceruti & Lubich 2022, BIT 62:23-44; Tucker form of Ceruti, Lubich & Walach 2021,
  SINUM 59:289-314).
* :func:`ra_bug` -- the rank-adaptive BUG (Ceruti, Kusch & Lubich 2022, BIT 62:1149-1174),
  which is Algorithm 1 of Ceruti, Kusch & Lubich; both run
  :func:`tucker_dlra.bug_step.bug_step` with ODE substep solvers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._validate import RankSpec
from ..bug_step import bug_step
from ..tucker import TuckerTensor
from ._common import (
    StepInfo,
    check_fixed_rank,
    check_rank_args,
    check_time,
    check_y0,
    make_context,
    ode_solvers,
    truncation_spec,
)

__all__ = ["bug", "ra_bug"]

_COMMON_PARAMS = r"""
    F : callable
        Right-hand side ``F(t, y)``.  Default: ``y`` is a dense array and F returns a
        dense array of the same shape.  With ``structured=True``, ``y`` is a
        :class:`~tucker_dlra.TuckerTensor` and F returns a TuckerTensor or a dense
        array; the integrator itself then never forms a dense tensor.
    t0 : float
        Start time.
    y0 : TuckerTensor
        Start value; its factors are orthonormalised when ``y0.orthonormal`` is False.
    h : float
        Step size, > 0.
    substep : {"euler", "rk4", "exact"} or callable, default "rk4"
        Solver of the small substep ODEs: explicit Euler (what SGD is), classical RK4,
        the exponential of the (linear, autonomous) substep operator (see
        :func:`~tucker_dlra.integrators.exact_substep`), or a callable
        ``substep(f, t0, y0, h) -> y1`` for ``y' = f(t, y)``.
    substeps : int, default 1
        Number of substep-solver steps per substep ODE.
    structured : bool, default False
        Pass TuckerTensors to F (see ``F``).
    step_index : int, default 0
        Index of this step, used in error messages (set by :func:`integrate`)."""


def _setup(F: Callable, t0: Any, y0: Any, h: Any, substep: Any, substeps: int,
           structured: bool, step_index: int):
    t0, h = check_time(t0, h)
    y0 = check_y0(y0)
    ctx = make_context(F, y0, t0, h, structured, step_index, substep, substeps)
    return t0, y0, h, ctx


def bug(F: Callable, t0: float, y0: TuckerTensor, h: float, *, substep: Any = "rk4",
        substeps: int = 1, structured: bool = False, step_index: int = 0
        ) -> tuple[TuckerTensor, StepInfo]:
    r"""One step of the fixed-rank BUG integrator (Ceruti & Lubich 2022, Tucker form).

    Ceruti & Lubich 2022, BIT 62; Tucker and tree-tensor form: Ceruti, Lubich & Walach
    2021, SINUM 59.  Runs :func:`~tucker_dlra.bug_step.bug_step` (variant ``"bug"``):

    1. For every mode i, from the same start (Algorithm 1, lines 2-4; Theorem 1):
       :math:`\mathrm{Mat}_i(C^0)^H = Q_i S_i^H`, :math:`K_i(t_0) = U_i^0 S_i`,
       :math:`\dot K_i = \mathrm{Mat}_i(F(t, \mathrm{Ten}_i(K_i V_i^H)))V_i`
       (:func:`~tucker_dlra.steps.k_gradient`); then :math:`U_i^1 = \mathrm{orth}(K_i(t_1))`
       and :math:`M_i = U_i^{1H} U_i^0`.
    2. Galerkin C-step :math:`\dot C = F(t, C \times_i U_i^1) \times_i U_i^{1H}` from
       :math:`C^0 \times_i M_i` (:func:`~tucker_dlra.steps.galerkin_core`).

    This is the paper's Algorithm 1 with ``adaptive = False`` (lines 1-4, the
    non-augmented basis of lines 6/13, line 8 with :math:`U^{new}_i = U_i^1`, line 9).

    Parameters
    ----------%s

    Returns
    -------
    y1 : TuckerTensor
        :math:`C(t_1) \times_i U_i^1`, same rank as ``y0``, orthonormal factors.
    info : StepInfo

    Notes
    -----
    Exact for :math:`F = \dot A`, :math:`A(t)` of rank ``y0.rank`` and exact substeps
    (when the :math:`M_i` are invertible); robust error bound :math:`O(\delta+\varepsilon+h)`
    independent of small singular values.  Cost per step: :math:`d+1` substep ODEs, i.e.
    with ``rk4`` about :math:`4(d+1)` evaluations of F (one shared at :math:`Y_0`: with
    ``euler`` :math:`d` K-steps share one evaluation, total 2), plus
    :math:`O(\sum_i n_i r_i^2 + d\, r \prod_j r_j)` for the QRs and core products, plus for
    dense F the projections :math:`O(r \prod_j n_j)` per evaluation.
    """
    t0, y0, h, ctx = _setup(F, t0, y0, h, substep, substeps, structured, step_index)
    check_fixed_rank(y0, "bug")
    k_solve, c_solve = ode_solvers(ctx, y0)
    (parts,), _ = bug_step([y0], k_solve, c_solve, ["bug"], [None])
    y1 = parts.y1
    return y1, StepInfo(nfev=ctx.nfev, rank=y1.rank, t=t0, h=h)


if bug.__doc__:  # None under python -OO
    bug.__doc__ = bug.__doc__ % _COMMON_PARAMS


def ra_bug(F: Callable, t0: float, y0: TuckerTensor, h: float, *, substep: Any = "rk4",
           substeps: int = 1, structured: bool = False, rtol: float | None = None,
           atol: float | None = None, max_rank: RankSpec = None, min_rank: RankSpec = None,
           rule: str = "split", truncation_method: str = "auto", step_index: int = 0
           ) -> tuple[TuckerTensor, StepInfo]:
    r"""One step of the rank-adaptive BUG integrator: the paper's Algorithm 1.

    Ceruti, Kusch & Lubich 2022 (BIT 62:1149-1174); the
    paper's Algorithm 1 line by line:

    * lines 2-4 (K-steps, Theorem 1, Eqs. (9)-(10)): for every mode, from the same
      start, :math:`\mathrm{Mat}_i(C)^H = Q_iS_i^H`, :math:`K_i(t_0) = U_iS_i`,
      :math:`\dot K_i = \mathrm{Mat}_i(F(t, G_i\times_i K_i\times_{j\ne i}U_j))V_i`
      (:func:`~tucker_dlra.steps.k_core`, :func:`~tucker_dlra.steps.k_gradient`);
    * lines 5-7 (augmentation): :math:`[U_i \mid K_i(t_1)] = \hat U_i R_i` (Householder
      QR, :func:`~tucker_dlra.bug_step.augment`, at most :math:`2r_i` columns);
    * line 8: :math:`\tilde C = C \times_i \hat U_i^H U_i = C \times_i [R_i^{11}; 0]`,
      which represents :math:`Y_0` exactly;
    * line 9 (C-step): :math:`\dot C = F(t, C\times_i\hat U_i)\times_i \hat U_i^H`;
    * lines 10-12 (rank adjustment): truncated HOSVD of :math:`\tilde C(t_1)`
      (:func:`~tucker_dlra.bug_step.truncate_many`), :math:`U_i \leftarrow \hat U_i P_i`,
      re-rounded to a valid Tucker rank.

    Parameters
    ----------%s
    rtol : float, optional
        Relative truncation tolerance :math:`\tau`: discard at most
        :math:`\vartheta = \tau\|\tilde C(t_1)\|` (the paper's rounding task
        :math:`\|\tilde C - \hat C\| \le \tau\|\tilde C\|` under ``rule="split"``).
    atol : float, optional
        Absolute tolerance :math:`\vartheta` (the rank-adaptive BUG paper's convention).
        At most one of ``rtol``/``atol``.  With neither, the augmented solution is
        truncated back to ``y0.rank`` ("augmented BUG truncated to r").
    max_rank, min_rank : int or sequence of int, optional
        Bounds on the new ranks (applied after the tolerance rule).  In addition
        :math:`r_i \le \prod_{j\ne i} r_j` is enforced (a lossless re-rounding).
    rule : {"split", "per_mode"}, default "split"
        ``"split"``: guaranteed :math:`\|\hat Y_1 - Y_1\| \le \vartheta`;
        ``"per_mode"``: every mode's tail :math:`\le\vartheta` (the rule of the public
        DLRT/TDLRT codes; total :math:`\le\sqrt d\,\vartheta`).  See
        :data:`~tucker_dlra.RULES`.
    truncation_method : {"auto", "gram", "svd"}, default "auto"
        How the core's singular vectors are computed (see :func:`~tucker_dlra.hosvd`).

    Returns
    -------
    y1 : TuckerTensor
        Orthonormal factors, rank :math:`\le \min(2r_i, n_i)` per mode.
    info : StepInfo
        ``info.truncation`` holds the chosen ranks, per-mode tails and the error
        bound :math:`\|\hat Y_1 - Y_1\| \le` ``info.truncation.error_bound``;
        ``info.augmented_rank`` the rank before truncation.

    Notes
    -----
    Keeps the exactness and robustness of :func:`bug`; error bound
    :math:`c_0\delta + c_1\varepsilon + c_2h + c_3 n\vartheta`.  With ``euler``
    substeps the K-steps and the C-step all start at :math:`Y_0` and share one
    evaluation of F (one gradient per SGD step, as in the paper); with ``rk4``:
    :math:`3(d+1)+1` evaluations.  Cost per step besides F:
    :math:`O(\sum_i n_i r_i^2)` (QRs), :math:`O(d\,2^{d+1} r^{d+1})` for the HOSVD of
    the :math:`(2r)^d` core, plus for dense F :math:`O(r\prod_j n_j)` per evaluation.
    """
    t0, y0, h, ctx = _setup(F, t0, y0, h, substep, substeps, structured, step_index)
    check_rank_args(rtol, atol, rule)
    aug_rank = [min(2 * r, n) for r, n in zip(y0.rank, y0.shape, strict=True)]
    spec = truncation_spec(aug_rank, y0.rank, rtol, atol, max_rank, min_rank, rule,
                           truncation_method)
    k_solve, c_solve = ode_solvers(ctx, y0)
    (parts,), _ = bug_step([y0], k_solve, c_solve, ["ra_bug"], [spec])
    return parts.y1, StepInfo(nfev=ctx.nfev, rank=parts.y1.rank, truncation=parts.info, t=t0,
                              h=h, augmented_rank=parts.y_aug.rank)


if ra_bug.__doc__:
    ra_bug.__doc__ = ra_bug.__doc__ % _COMMON_PARAMS
