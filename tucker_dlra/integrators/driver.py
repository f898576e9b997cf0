r"""The driver :func:`integrate`: many steps of one integrator, with a result record."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._validate import RankSpec, per_mode
from ..tucker import TuckerTensor, check_tucker_rank, pad_rank, truncate, valid_rank
from ._common import _PROBES, IntegrationError, StepInfo, StepProbe, check_y0
from .base import RANK_OPTIONS, STEPPERS, Stepper, resolve_stepper

__all__ = ["integrate", "IntegrationResult", "METHODS"]

#: Names accepted by ``integrate(method=...)`` (besides a
#: :class:`~tucker_dlra.integrators.Stepper` subclass).
METHODS = tuple(STEPPERS)
#: Methods that truncate (accept ``rtol``, ``atol``, ``max_rank``, ``min_rank``, ``rule``).
ADAPTIVE = tuple(name for name, cls in STEPPERS.items() if cls.adaptive)


@dataclass
class IntegrationResult:
    """Trajectory and counters of :func:`integrate` (field names follow ``scipy.integrate``).

    Attributes
    ----------
    t : list of float
        Output times: every step's end time :math:`t_0, t_1, \\dots` (the last one is
        ``t_span[1]`` unless stopped), or the requested ``t_eval``.
    y : list of TuckerTensor
        Approximations at ``t`` (``y[0]`` is the, possibly orthonormalised or padded, start
        value when ``t[0] = t_span[0]``).
    ranks : list of tuple of int
        Tucker rank of each ``y[k]``.
    nfev : int
        Total evaluations of F (rejected attempts included).
    truncation_errors : list of float
        Per step, the truncation error bound (0.0 for fixed-rank methods).
    nsteps : int
        Accepted steps.
    rejected : int
        Rejected attempts (parallel BUG rejection test).
    status : int
        ``0``: reached ``t_span[1]``; ``1``: stopped by the callback; ``-1``: failed (only
        with ``on_error="return"``; otherwise :class:`IntegrationError` is raised).
    message : str
        How the integration ended (the error message when ``status == -1``).
    infos : list of StepInfo
        Per step details (start time, step size, rank, F evaluations, truncation).
    """

    t: list[float] = field(default_factory=list)
    y: list[TuckerTensor] = field(default_factory=list)
    ranks: list[tuple[int, ...]] = field(default_factory=list)
    nfev: int = 0
    truncation_errors: list[float] = field(default_factory=list)
    nsteps: int = 0
    rejected: int = 0
    status: int = 0
    message: str = ""
    infos: list[StepInfo] = field(default_factory=list)

    @property
    def success(self) -> bool:
        """``True`` when ``status >= 0`` (the end time was reached or the callback stopped)."""
        return self.status >= 0

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


def _check_t_eval(t_eval: Any, t0: float, tend: float) -> list[float] | None:
    if t_eval is None:
        return None
    try:
        vals = [float(v) for v in t_eval]
    except (TypeError, ValueError):
        raise ValueError(f"t_eval must be a sequence of real times in t_span; got {t_eval!r}"
                         ) from None
    if not vals:
        raise ValueError("t_eval must contain at least one time")
    for a, b in zip(vals[:-1], vals[1:], strict=True):
        if not b > a:
            raise ValueError(f"t_eval must be strictly increasing; got {a!r} before {b!r}")
    if not all(math.isfinite(v) and t0 <= v <= tend for v in vals):
        raise ValueError(f"t_eval must lie in t_span = [{t0:g}, {tend:g}]; got {vals[0]:g} .. "
                         f"{vals[-1]:g}")
    return vals


def _grid(t0: float, tend: float, h: float, t_eval: list[float] | None) -> list[float]:
    """Step end times: the uniform grid ``t0 + k h`` plus the requested output times.

    A requested time within ``1e-9 h`` of a grid time replaces that grid time (no tiny
    step); otherwise the step across it is split in two.
    """
    n = max(1, math.ceil((tend - t0) / h - 1e-9))
    pts = [t0 + k * h for k in range(1, n)] + [tend]
    if not t_eval:
        return pts
    snap = 1e-9 * h
    out = sorted(set(pts) | {v for v in t_eval if v > t0})
    merged: list[float] = []
    wanted = set(t_eval)
    for v in out:
        if merged and v - merged[-1] <= snap:
            if v in wanted or v == tend:  # keep the requested (or final) time
                merged[-1] = v
            continue
        merged.append(v)
    return merged


def _prepare_y0(y: TuckerTensor, rank: RankSpec, method: str, seed: int) -> TuckerTensor:
    """Bring ``y0`` to the requested rank: truncate modes above it, pad modes below it."""
    target = per_mode(rank, y.ndim, "rank", list(y.shape))
    target = [r0 if v is None else v for v, r0 in zip(target, y.rank, strict=True)]
    check_tucker_rank(target, "rank")
    low = [min(a, b) for a, b in zip(target, y.rank, strict=True)]
    if tuple(low) != y.rank:
        y = truncate(y, rank=valid_rank(low))
    if tuple(target) != y.rank:
        if method == "direct":
            raise ValueError("rank= above y0's rank pads y0 with a zero core block, whose "
                             "singular core unfoldings the 'direct' integrator (the "
                             "pseudo-inverse of Eq. (8)) cannot handle; use a BUG method")
        y = pad_rank(y, target, seed=seed)
    return y


def _core_conditioning(y: TuckerTensor) -> float:
    """Smallest ratio sigma_min / sigma_max over the core unfoldings of ``y``."""
    from ..tensor import unfold

    xp = y.xp
    worst = 1.0
    for i in range(y.ndim):
        s = xp.linalg.svdvals(unfold(y.core, i))
        top, low = float(xp.max(s)), float(xp.min(s))
        worst = min(worst, low / top if top > 0 else 0.0)
    return worst


_STABLE = {"rk4": 2.8, "euler": 1.0}  # |h lambda| up to which these explicit solvers are safe


def _likely_cause(method: str, substep: Any, substeps: int, h: float,
                  probe: StepProbe | None, y_start: TuckerTensor) -> str:
    """A sentence naming the probable cause of a blow-up and its remedy."""
    hs = h / max(int(substeps), 1)
    if method == "direct":
        try:
            cond = _core_conditioning(y_start)
        except Exception:  # pragma: no cover - diagnosis only
            cond = math.nan
        if cond < 1e-8:
            return (f"the core unfoldings are (numerically) singular at the step's start "
                    f"(smallest sigma_min/sigma_max = {cond:.2g}): the pseudo-inverse of the "
                    f"factor equations (8) amplifies rounding errors, which reducing h cannot "
                    f"cure; use a BUG method (bug, ra_bug, projector_splitting)")
        if math.isfinite(cond):
            return (f"the factor equations (8) are stiff (smallest core singular value ratio "
                    f"{cond:.2g}): explicit steps need h below the smallest singular value; "
                    f"reduce h or use a BUG method (bug, ra_bug), which is robust to it")
    if isinstance(substep, str) and substep in _STABLE and probe is not None \
            and math.isfinite(probe.stiffness):
        z = hs * probe.stiffness
        return (f"{substep} unstable at h*||F(Y)||/||Y|| = {z:.3g} per substep solver step "
                f"(explicit {substep} is stable only up to about {_STABLE[substep]:g}, and "
                f"||F(Y)||/||Y|| underestimates the operator norm): reduce h, increase "
                f"substeps, or use substep='exact' or 'krylov' for a linear F")
    return (f"the {method} step is unstable at h = {h:g} with substep={substep!r}: reduce h "
            f"or increase substeps")


def integrate(F: Callable, y0: TuckerTensor, t_span: Sequence[float], h: float,
              method: str | type[Stepper] | Stepper = "ra_bug", rtol: float | None = None,
              atol: float | None = None,
              substep: Any = "rk4", substeps: int = 1,
              callback: Callable[[float, TuckerTensor], Any] | None = None,
              structured: bool = False, max_rank: RankSpec = None,
              min_rank: RankSpec = None, rule: str | None = None, keep: bool = True,
              t_eval: Sequence[float] | None = None, rank: RankSpec = None,
              tol_per_unit_time: bool = False, blowup_factor: float | None = 100.0,
              on_error: str = "raise", pad_seed: int = 0,
              **opts: Any) -> IntegrationResult:
    r"""Integrate :math:`\dot Y = F(t, Y)` on the low-Tucker-rank manifold over ``t_span``.

    Constant steps of size ``h`` from ``t_span[0]``; the last step is shortened so that
    the integration ends exactly at ``t_span[1]``, and a step that crosses a requested
    output time (``t_eval``) is split there, so that the solution is computed *at* those
    times (by the integrator itself, not interpolated).

    Parameters
    ----------
    F : callable
        ``F(t, y)``, dense in / dense out, or TuckerTensor in with ``structured=True``
        (see :func:`ra_bug` and :class:`~tucker_dlra.operators.LinearOperator`).
    y0 : TuckerTensor
        Start value (orthonormalised when not flagged orthonormal).
    t_span : (float, float)
        ``(t0, t_end)`` with ``t_end > t0``.
    h : float
        Step size, > 0.
    method : str, Stepper subclass or Stepper, default "ra_bug"
        One of :data:`METHODS`: ``"bug"`` (Ceruti & Lubich 2022), ``"ra_bug"`` (Ceruti,
        Kusch & Lubich 2022; the paper's Algorithm 1), ``"parallel_bug"`` (Ceruti, Kusch,
        Lubich & Sulz), ``"projector_splitting"`` (Lubich, Vandereycken & Walach 2018),
        ``"midpoint_bug"`` (Ceruti, Einkemmer, Kusch & Lubich 2024), ``"direct"``
        (explicit integration of the factor equations (8)); or a
        :class:`~tucker_dlra.integrators.Stepper` (the contract every method fulfils: a
        user's own integrator runs through this driver the same way).
    rtol, atol, max_rank, min_rank, rule
        Rank adjustment of the rank-adaptive methods (:data:`ADAPTIVE`; ``rule`` defaults
        to ``"split"``); see :func:`ra_bug`.  Passing any of them to a fixed-rank method
        raises ``ValueError`` naming the option and the method.
        A rank-adaptive method **without** ``rtol``/``atol`` truncates back to a fixed
        rank after every step (``rank``, else ``y0.rank``): it never changes the rank.
        That is a useful fixed-rank integrator (the augmented BUG truncated to r), but
        since the name promises rank adaptivity, ``integrate`` warns
        (``UserWarning``) unless ``rank=`` states the fixed rank explicitly.
    substep, substeps, structured
        See :func:`ra_bug`.  ``substep`` is one of :data:`~tucker_dlra.integrators.SUBSTEPS`
        (``"euler"``, ``"rk4"``, ``"exact"``, ``"krylov"``; the last two need a linear,
        autonomous F, see :func:`~tucker_dlra.integrators.krylov_substep`) or a callable
        ``substep(f, t0, y0, h) -> y1``.
    callback : callable, optional
        ``callback(t, y)`` after each step; returning ``True`` stops the integration.
    keep : bool, default True
        Keep every step's TuckerTensor in ``result.y``; with False only the first and the
        last are kept (``t`` and ``ranks`` still hold every step).  Ignored with ``t_eval``.
    t_eval : sequence of float, optional
        Increasing output times in ``t_span`` (``scipy.integrate.solve_ivp``'s convention):
        ``result.t``/``y``/``ranks`` then hold the solution at exactly these times; the
        per-step record stays in ``result.infos``.  Each time is reached by a (possibly
        shortened) step; a requested time within ``1e-9 h`` of a grid time replaces it.
    rank : int or sequence of int, optional
        Working rank.  Modes of ``y0`` of lower rank are zero-padded with an orthonormal
        completion of the factors (:func:`~tucker_dlra.pad_rank`, the same tensor), modes
        of higher rank are truncated (HOSVD).  For the fixed-rank methods this is the
        rank of the whole integration; for the rank-adaptive ones without a tolerance the
        rank they truncate back to; with a tolerance the starting rank.  From a lower-rank
        start the first step finds the new directions from :math:`F(t_0, Y_0)` only: an
        :math:`O(h)` start-up error, carried along (not amplified) by later steps.
    tol_per_unit_time : bool, default False
        Scale the truncation tolerance with the step: step k uses
        :math:`\vartheta_k = \mathrm{tol}\cdot h_k` (``atol``/``rtol`` become rates per
        unit time).  The error bounds of the rank-adaptive BUG contain
        :math:`c_3 n \vartheta = c_3 T\vartheta/h`: with a fixed tolerance per step a
        *smaller* h makes the accumulated truncation error *larger*.  With
        :math:`\vartheta = \mathrm{tol}\,h` that term is :math:`c_3 T\,\mathrm{tol}`,
        independent of h, at the price of larger ranks at small h (each step may discard
        less).  First order needs :math:`\mathrm{tol} = O(h)`.
    blowup_factor : float or None, default 100
        Stop with :class:`IntegrationError` when the norm has grown by more than this
        factor beyond the growth that F allows along the computed trajectory (the sum of
        :math:`h\max(0, \mathrm{Re}\langle Y_k, F(t_k, Y_k)\rangle/\|Y_k\|^2)`, the
        exact :math:`\frac{d}{dt}\log\|Y\|`, measured at the first F evaluation of each
        step), or as soon as the state is not finite.  ``None`` disables the norm test.
    on_error : {"raise", "return"}, default "raise"
        On :class:`IntegrationError` raise it, or return the trajectory so far with
        ``status = -1`` and the error text in ``message`` (``solve_ivp``'s convention).
    pad_seed : int, default 0
        Seed of the orthonormal completion used by ``rank=``.
    **opts
        Method-specific options, e.g. ``rejection``/``c_eta`` of :func:`parallel_bug`.  An
        option the method does not take is a ``ValueError`` naming it and the method.

    Returns
    -------
    IntegrationResult
        With ``status``, ``success``, ``message`` and ``nfev`` as in ``solve_ivp``.

    Raises
    ------
    ValueError
        Bad ``h``, ``t_span``, ``t_eval``, ``rank``, ``method``, ``substep``;
        :class:`IntegrationError` (a ``ValueError``) when F returns a wrong shape or
        non-finite values, or the integration blows up, naming the step index, the time and
        the likely cause.

    Warns
    -----
    UserWarning
        A rank-adaptive method without ``rtol``/``atol`` and without ``rank``.

    Notes
    -----
    Cost: ``ceil((t_end - t0)/h)`` steps of the chosen method (see its docstring), plus one
    step per ``t_eval`` time off the grid; the blow-up test costs two norms and one inner
    product per step (no extra evaluation of F).
    """
    stepper = resolve_stepper(method)
    method = stepper.name  # the name, in messages
    adaptive = stepper.adaptive
    if isinstance(h, bool) or not isinstance(h, numbers.Real) or not math.isfinite(h) or h <= 0:
        raise ValueError(f"h must be a finite real number > 0; got {h!r}")
    t0, tend = _check_t_span(t_span)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable callback(t, y) or None; got {callback!r}")
    if on_error not in ("raise", "return"):
        raise ValueError(f"on_error must be 'raise' or 'return'; got {on_error!r}")
    if blowup_factor is not None and (isinstance(blowup_factor, bool) or not isinstance(
            blowup_factor, numbers.Real) or not blowup_factor > 1):
        raise ValueError(f"blowup_factor must be a real number > 1 or None; got "
                         f"{blowup_factor!r}")
    evals = _check_t_eval(t_eval, t0, tend)
    y = check_y0(y0)  # before any warning about y0
    kwargs: dict[str, Any] = dict(substep=substep, substeps=substeps, structured=structured)
    tol_given = rtol is not None or atol is not None
    if adaptive:
        kwargs.update(rtol=rtol, atol=atol, max_rank=max_rank, min_rank=min_rank,
                      rule="split" if rule is None else rule)
        if not tol_given and rank is None:
            warnings.warn(
                f"integrate(method={method!r}) without rtol or atol truncates back to "
                f"y0.rank = {y.rank} after every step, so the rank never "
                f"changes; pass rtol= or atol= for rank adaptivity, or rank= to state the "
                f"fixed rank (this silences the warning)", UserWarning, stacklevel=2)
    else:
        for name, val in (("rtol", rtol), ("atol", atol), ("max_rank", max_rank),
                          ("min_rank", min_rank), ("rule", rule)):
            if val is not None:
                raise ValueError(f"{name} is only accepted by the rank-adaptive methods "
                                 f"{ADAPTIVE}; method {method!r} keeps the rank fixed (use "
                                 f"rank= to choose it)")
        if tol_per_unit_time:
            raise ValueError(f"tol_per_unit_time needs a rank-adaptive method {ADAPTIVE} with "
                             f"rtol or atol; method {method!r} does not truncate")
    if tol_per_unit_time and not tol_given:
        raise ValueError("tol_per_unit_time=True needs rtol or atol (the rate per unit time)")
    accepted = type(stepper).accepted_options()
    for name in opts:
        if name in RANK_OPTIONS or (accepted is not None and name not in accepted):
            known = ", ".join(o for o in (accepted or ()) if o not in RANK_OPTIONS) or "none"
            raise ValueError(f"option {name!r} is not used by method {method!r} (its own "
                             f"options: {known})")
    kwargs.update(opts)
    if rank is not None:
        y = _prepare_y0(y, rank, method, pad_seed)
    h = float(h)
    ends = _grid(t0, tend, h, evals)
    res = IntegrationResult()
    want = set(evals) if evals is not None else None

    def record(t: float, yv: TuckerTensor, last: bool) -> None:
        if want is not None:
            if t in want:
                res.t.append(t)
                res.y.append(yv)
                res.ranks.append(yv.rank)
            return
        res.t.append(t)
        if keep or last or not res.y:
            res.y.append(yv)
        res.ranks.append(yv.rank)

    record(t0, y, False)
    res.message = f"reached t_end = {tend:g} in {len(ends)} steps"
    excess = 0.0  # log of the norm growth beyond what F allows, accumulated
    tk = t0
    probes: list[StepProbe] = []
    token = _PROBES.set(probes)
    try:
        for k, t_new in enumerate(ends):
            hk = t_new - tk
            step_kwargs = kwargs
            if tol_per_unit_time:
                step_kwargs = dict(kwargs, rtol=None if rtol is None else rtol * hk,
                                   atol=None if atol is None else atol * hk)
            del probes[:]
            y_prev = y
            out = stepper.step(F, tk, y, hk, step_index=k, **step_kwargs)
            if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], TuckerTensor)
                    and isinstance(out[1], StepInfo)):
                raise TypeError(f"{type(stepper).__name__}.step must return (TuckerTensor, "
                                f"StepInfo); got {type(out).__name__}")
            y, info = out
            probe = probes[0] if probes else None
            xp = y.xp
            if not bool(xp.all(xp.isfinite(y.core))) or not all(
                    bool(xp.all(xp.isfinite(u))) for u in y.factors):
                raise IntegrationError(
                    f"{method} produced non-finite values at step {k} (t = {tk:.10g} -> "
                    f"{t_new:.10g}) although F returned finite values: "
                    f"{_likely_cause(method, substep, substeps, hk, probe, y_prev)}", k, tk)
            if blowup_factor is not None and probe is not None \
                    and math.isfinite(probe.growth_rate):
                n0, n1 = float(y_prev.norm()), float(y.norm())
                if n0 > 0 and n1 > 0:
                    allowed = max(probe.growth_rate, 0.0) * hk
                    excess = max(0.0, excess + math.log(n1 / n0) - allowed)
                    if excess > math.log(blowup_factor):
                        full = [r >= n for r, n in zip(y.rank, y.shape, strict=True)]
                        ranks = (f"; the ranks {y.rank} have grown to the mode sizes "
                                 f"{y.shape}" if adaptive and sum(full) >= 1
                                 else "")
                        raise IntegrationError(
                            f"blow-up at step {k} (t = {tk:.10g} -> {t_new:.10g}): the norm "
                            f"grew to {n1:.3g}, {math.exp(excess):.3g} times more than F "
                            f"allows (Re<Y, F(Y)>/||Y||^2 = {probe.growth_rate:.3g}){ranks}; "
                            f"likely cause: "
                            f"{_likely_cause(method, substep, substeps, hk, probe, y_prev)}",
                            k, tk)
            res.nfev += info.nfev
            res.truncation_errors.append(info.error_bound)
            res.rejected += info.rejected
            res.nsteps += 1
            res.infos.append(info)
            last = k == len(ends) - 1
            record(t_new, y, last)
            tk = t_new
            if callback is not None and callback(t_new, y) is True and not last:
                res.status = 1
                res.message = f"stopped by callback at t = {t_new:g} after {k + 1} steps"
                if want is None and not keep and res.y[-1] is not y:
                    res.y.append(y)
                break
    except IntegrationError as exc:
        if on_error == "raise":
            raise
        res.status = -1
        res.message = str(exc)
    finally:
        _PROBES.reset(token)
    return res
