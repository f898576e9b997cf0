r"""The driver :func:`integrate`: many steps of one integrator, with a result record."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._validate import RankSpec
from ..tucker import TuckerTensor
from ._common import IntegrationError, StepInfo, check_y0
from .bug import bug, ra_bug

__all__ = ["integrate", "IntegrationResult", "METHODS"]


def _methods() -> dict[str, Callable]:
    out: dict[str, Callable] = {"bug": bug, "ra_bug": ra_bug}
    from .direct import direct
    from .midpoint import midpoint_bug
    from .parallel import parallel_bug
    from .splitting import projector_splitting

    out.update(parallel_bug=parallel_bug, projector_splitting=projector_splitting,
               midpoint_bug=midpoint_bug, direct=direct)
    return out


#: Names accepted by ``integrate(method=...)``.
METHODS = ("bug", "ra_bug", "parallel_bug", "projector_splitting", "midpoint_bug", "direct")
#: Methods that truncate (accept ``rtol``, ``atol``, ``max_rank``, ``min_rank``, ``rule``).
ADAPTIVE = ("ra_bug", "parallel_bug", "midpoint_bug")


@dataclass
class IntegrationResult:
    """Trajectory and counters of :func:`integrate`.

    Attributes
    ----------
    t : list of float
        Times :math:`t_0, t_1, \\dots` (the last one is ``t_span[1]`` unless stopped).
    y : list of TuckerTensor
        Approximations at ``t`` (``y[0]`` is the, possibly orthonormalised, start value).
    ranks : list of tuple of int
        Tucker rank of each ``y[k]``.
    nfev : int
        Total evaluations of F.
    truncation_errors : list of float
        Per step, the truncation error bound (0.0 for fixed-rank methods).
    nsteps : int
        Accepted steps.
    rejected : int
        Rejected attempts (parallel BUG rejection test).
    message : str
        How the integration ended.
    infos : list of StepInfo
        Per step details.
    """

    t: list[float] = field(default_factory=list)
    y: list[TuckerTensor] = field(default_factory=list)
    ranks: list[tuple[int, ...]] = field(default_factory=list)
    nfev: int = 0
    truncation_errors: list[float] = field(default_factory=list)
    nsteps: int = 0
    rejected: int = 0
    message: str = ""
    infos: list[StepInfo] = field(default_factory=list)

    @property
    def y_final(self) -> TuckerTensor:
        """The last approximation ``y[-1]``."""
        return self.y[-1]


def _check_t_span(t_span: Any) -> tuple[float, float]:
    try:
        vals = list(t_span)
    except TypeError:
        raise ValueError(f"t_span must be a pair (t0, t_end) with t_end > t0; got {t_span!r}"
                         ) from None
    if len(vals) != 2 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                 and math.isfinite(v) for v in vals):
        raise ValueError(f"t_span must be a pair (t0, t_end) of finite reals with t_end > t0; "
                         f"got {t_span!r}")
    a, b = float(vals[0]), float(vals[1])
    if not b > a:
        raise ValueError(f"t_span must satisfy t_end > t0 (an empty or reversed interval is "
                         f"not integrated); got {t_span!r}")
    return a, b


def integrate(F: Callable, y0: TuckerTensor, t_span: Sequence[float], h: float,
              method: str = "ra_bug", rtol: float | None = None, atol: float | None = None,
              substep: Any = "rk4", substeps: int = 1,
              callback: Callable[[float, TuckerTensor], Any] | None = None,
              structured: bool = False, max_rank: RankSpec = None,
              min_rank: RankSpec = None, rule: str = "split", keep: bool = True,
              **opts: Any) -> IntegrationResult:
    r"""Integrate :math:`\dot Y = F(t, Y)` on the low-Tucker-rank manifold over ``t_span``.

    Constant steps of size ``h`` from ``t_span[0]``; the last step is shortened so that
    the integration ends exactly at ``t_span[1]``.

    Parameters
    ----------
    F : callable
        ``F(t, y)``, dense in / dense out, or TuckerTensor in with ``structured=True``
        (see :func:`ra_bug`).
    y0 : TuckerTensor
        Start value (orthonormalised when not flagged orthonormal).
    t_span : (float, float)
        ``(t0, t_end)`` with ``t_end > t0``.
    h : float
        Step size, > 0.
    method : str, default "ra_bug"
        One of :data:`METHODS`: ``"bug"`` (Ceruti & Lubich 2022), ``"ra_bug"`` (Ceruti,
        Kusch & Lubich 2022; the paper's Algorithm 1), ``"parallel_bug"`` (Ceruti, Kusch,
        Lubich & Sulz), ``"projector_splitting"`` (Lubich, Vandereycken & Walach 2018),
        ``"midpoint_bug"`` (Ceruti, Einkemmer, Kusch & Lubich 2024), ``"direct"``
        (explicit integration of the factor equations (8)).
    rtol, atol, max_rank, min_rank, rule
        Rank adjustment of the rank-adaptive methods (:data:`ADAPTIVE`); see
        :func:`ra_bug`.  Passing them to a fixed-rank method raises ``ValueError``.
    substep, substeps, structured
        See :func:`ra_bug`.
    callback : callable, optional
        ``callback(t, y)`` after each step; returning ``True`` stops the integration.
    keep : bool, default True
        Keep every step's TuckerTensor in ``result.y``; with False only the first and the
        last are kept (``t`` and ``ranks`` still hold every step).
    **opts
        Method-specific options, e.g. ``rejection``/``c_eta`` of :func:`parallel_bug`.

    Returns
    -------
    IntegrationResult

    Raises
    ------
    ValueError
        Bad ``h``, ``t_span``, ``method``, ``substep``; :class:`IntegrationError` (a
        ``ValueError``) when F returns a wrong shape or non-finite values, naming the
        step index and the time.

    Notes
    -----
    Cost: ``ceil((t_end - t0)/h)`` steps of the chosen method (see its docstring).
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if isinstance(h, bool) or not isinstance(h, numbers.Real) or not math.isfinite(h) or h <= 0:
        raise ValueError(f"h must be a finite real number > 0; got {h!r}")
    t0, tend = _check_t_span(t_span)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable callback(t, y) or None; got {callback!r}")
    step_fn = _methods()[method]
    kwargs: dict[str, Any] = dict(substep=substep, substeps=substeps, structured=structured)
    if method in ADAPTIVE:
        kwargs.update(rtol=rtol, atol=atol, max_rank=max_rank, min_rank=min_rank, rule=rule)
    else:
        for name, val in (("rtol", rtol), ("atol", atol), ("max_rank", max_rank),
                          ("min_rank", min_rank)):
            if val is not None:
                raise ValueError(f"{name} is only accepted by the rank-adaptive methods "
                                 f"{ADAPTIVE}; method {method!r} keeps the rank fixed")
    kwargs.update(opts)
    y = check_y0(y0)
    h = float(h)
    n = max(1, math.ceil((tend - t0) / h - 1e-9))
    res = IntegrationResult(t=[t0], y=[y], ranks=[y.rank])
    res.message = f"reached t_end = {tend:g} in {n} steps"
    for k in range(n):
        tk = t0 + k * h
        hk = (tend - tk) if k == n - 1 else h
        y, info = step_fn(F, tk, y, hk, step_index=k, **kwargs)
        xp = y.xp
        if not bool(xp.all(xp.isfinite(y.core))):
            raise IntegrationError(f"the step produced non-finite values at step {k} "
                                   f"(t = {tk:.10g} -> {tk + hk:.10g}); reduce h", k, tk)
        t_new = tend if k == n - 1 else t0 + (k + 1) * h
        res.t.append(t_new)
        if keep or k == n - 1:
            res.y.append(y)
        res.ranks.append(y.rank)
        res.nfev += info.nfev
        res.truncation_errors.append(info.error_bound)
        res.rejected += info.rejected
        res.nsteps += 1
        res.infos.append(info)
        if callback is not None and callback(t_new, y) is True:
            res.message = f"stopped by callback at t = {t_new:g} after {k + 1} steps"
            if not keep and res.y[-1] is not y:
                res.y.append(y)
            break
    return res
