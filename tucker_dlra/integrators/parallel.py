r"""Parallel rank-adaptive BUG (Ceruti, Kusch, Lubich & Sulz) with step rejection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._validate import RankSpec, per_mode
from ..bug_step import bug_step
from ..steps import c_gradient
from ..tucker import TuckerTensor
from ._common import (
    StepInfo,
    check_rank_args,
    check_time,
    check_y0,
    make_context,
    ode_solvers,
    truncation_spec,
)

__all__ = ["parallel_bug"]


def _eta(xp: Any, p: Any, r: list[int]) -> float:
    """Norm of the blocks of ``p`` (in bases [U_i, U~_i]) that are new in >= 2 modes."""
    q = p * 1  # copy
    d = len(r)
    for i in range(-1, d):  # the (old, ..., old) block and the blocks new in mode i only
        sl = tuple(slice(r[j], None) if j == i else slice(0, r[j]) for j in range(d))
        q[sl] = 0
    return float(xp.linalg.vector_norm(xp.reshape(q, (-1,))))


def parallel_bug(F: Callable, t0: float, y0: TuckerTensor, h: float, *, substep: Any = "rk4",
                 substeps: int = 1, structured: bool = False, rtol: float | None = None,
                 atol: float | None = None, max_rank: RankSpec = None,
                 min_rank: RankSpec = None, rule: str = "split", rejection: bool = True,
                 c_eta: float = 1.0, truncation_method: str = "auto", step_index: int = 0
                 ) -> tuple[TuckerTensor, StepInfo]:
    r"""One step of the parallel rank-adaptive BUG integrator, with step rejection.

    Ceruti, Kusch & Lubich, "A parallel rank-adaptive integrator for dynamical low-rank
    approximation" (SISC 2024); Tucker/TTN form by Ceruti, Kusch, Lubich & Sulz
    ("A parallel basis update and Galerkin integrator for tree tensor networks").  Each
    attempt is :func:`~tucker_dlra.bug_step.bug_step` (variant ``"parallel"``); all
    substeps start from the **old** bases:

    1. K-steps as in :func:`ra_bug` (Algorithm 1, lines 2-4), new directions
       :math:`\tilde U_i` = trailing columns of the Householder QR of
       :math:`[U_i^0, K_i(t_1)]` (:func:`~tucker_dlra.bug_step.augment`).
    2. Galerkin step in the old bases: :math:`\bar C(t_1)` from :math:`C^0`.
    3. Augmented core :math:`\hat C` assembled block-wise
       (:func:`~tucker_dlra.steps.parallel_core`): :math:`\bar C(t_1)` in the (old, ..., old)
       block, :math:`G_i \times_i \tilde U_i^H K_i(t_1)` in the block new only in mode i,
       zero elsewhere.
    4. Truncation as in :func:`ra_bug` (Algorithm 1, lines 10-12).

    Step rejection (the authors' code ``SolveParallelRejection``, Solver.jl of the
    SISC paper's repository): the attempt is rejected when a mode keeps all its augmented
    columns, or when the dropped part of the step,
    :math:`\eta = \|(F(t_0, Y_0) \times_i \hat U_i^H)|_{\ge 2\ \text{new modes}}\|` (matrix
    case :math:`\|\tilde U^H F(Y_0) \tilde V\|`), exceeds
    :math:`c_\eta\,\vartheta/h` with :math:`\vartheta` = ``atol`` or
    ``rtol`` :math:`\cdot\|\hat C\|`.  On rejection :math:`Y_0` is re-expressed in the
    augmented bases (rank :math:`\hat r`) and the step is repeated; rejection stops when no
    mode can grow any more (``max_rank`` or :math:`n_i` reached).  Without it (or with
    fixed-rank truncation) the rank can collapse at small h.

    Parameters
    ----------
    F, t0, y0, h, substep, substeps, structured
        As in :func:`ra_bug`.
    rtol, atol, max_rank, min_rank, rule, truncation_method, step_index
        As in :func:`ra_bug`.
    rejection : bool, default True
        Apply the rejection test (only when ``rtol`` or ``atol`` is given).
    c_eta : float, default 1.0
        Constant of the rejection test (the authors use 1 for the plane source, 10 for TTN
        Ising runs).

    Returns
    -------
    y1 : TuckerTensor
    info : StepInfo
        ``info.rejected`` counts rejected attempts, ``info.eta`` is :math:`\eta`.

    Notes
    -----
    First-order robust error bound :math:`c_0\delta + c_1\varepsilon + c_2h + c_3n\vartheta`.
    The :math:`d` K-steps and the C-step are independent (parallel).  With ``euler``
    substeps they all start at :math:`Y_0` and share **one** evaluation of F, which is
    also reused for :math:`\eta` and for repeated attempts.  Cost besides F: as
    :func:`ra_bug`, plus :math:`O(2^d r^{d}\cdot 2r)` for the projection of
    :math:`F(t_0,Y_0)` used by :math:`\eta` (for dense F: :math:`O(r\prod_j n_j)`).
    """
    t0, h = check_time(t0, h)
    y = check_y0(y0)
    check_rank_args(rtol, atol, rule)
    ctx = make_context(F, y, t0, h, structured, step_index, substep, substeps)
    xp = y.xp
    tol_given = rtol is not None or atol is not None
    caps = per_mode(max_rank, y.ndim, "max_rank", list(y.shape), clamp=True)
    caps = [n if c is None else min(c, n) for c, n in zip(caps, y.shape, strict=True)]
    base_rank = y.rank
    rejected = 0
    while True:
        r = list(y.rank)
        aug_rank = [min(2 * ri, n) for ri, n in zip(r, y.shape, strict=True)]
        spec = truncation_spec(aug_rank, base_rank, rtol, atol, max_rank, min_rank, rule,
                               truncation_method)
        k_solve, c_solve = ode_solvers(ctx, y)
        (parts,), _ = bug_step([y], k_solve, c_solve, ["parallel"], [spec])
        uhat, m, y_aug = parts.aug_bases, parts.new_dirs, parts.y_aug
        chat, y1, tinfo = y_aug.core, parts.y1, parts.info
        eta = None
        if rejection and tol_given:
            grow = [m[i] > 0 and r[i] < caps[i] for i in range(y.ndim)]
            if any(grow):
                full = any(grow[i] and tinfo.rank[i] == r[i] + m[i] for i in range(y.ndim))
                p = c_gradient(ctx.z0(y), uhat)
                eta = _eta(xp, p, r)
                theta = atol if atol is not None else rtol * float(
                    xp.linalg.vector_norm(xp.reshape(chat, (-1,))))
                bound = c_eta * max(theta, 1e-300) / h
                if full or eta > bound:
                    rejected += 1
                    y = parts.y0_aug  # Y0 in the augmented bases
                    continue
        break
    return y1, StepInfo(nfev=ctx.nfev, rank=y1.rank, truncation=tinfo, rejected=rejected, t=t0,
                        h=h, augmented_rank=y_aug.rank, eta=eta)
