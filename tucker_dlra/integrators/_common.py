r"""Shared machinery of the DLRA integrators: substep solvers, F adapters, result types.

Every integrator of this package advances a Tucker tensor :math:`Y_0 = C^0 \times_i U_i^0`
(orthonormal factors) over one step :math:`[t_0, t_0 + h]` of the tensor ODE
:math:`\dot Y = F(t, Y)` by solving a few *small* ODEs (the K-, C-, S-substeps of
small ODEs of the BUG family).  This module provides

* :class:`IntegrationError` -- F returned a wrong shape or non-finite values;
* :class:`StepInfo` -- what one step did (F evaluations, truncation, rejections);
* the substep solvers ``"euler"``, ``"rk4"``, ``"exact"`` (or a user callable);
* :class:`_Context` -- one step's evaluator of F (counts evaluations, checks the
  output, and shares :math:`F(t_0, Y_0)` between all substeps that start at
  :math:`Y_0`, so that an explicit-Euler (SGD) step of the BUG family costs one
  evaluation of F, as in the paper's Algorithm 1);
* the substep right-hand sides in factor form (:func:`k_steps`, :func:`c_step`) built
  from :mod:`tucker_dlra.steps`, and the rank-adjustment helper :func:`adjust_rank`.
"""

from __future__ import annotations

import contextvars
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._validate import RankSpec, check_int, check_tolerance, per_mode
from ..backend import is_complex, namespace
from ..bug_step import KStart, Truncation, k_starts, truncate_many
from ..steps import c_gradient, k_gradient, k_tensor
from ..tucker import TruncationInfo, TuckerTensor, check_tucker_rank
from .expo import krylov_substep

__all__ = [
    "IntegrationError",
    "StepInfo",
    "SUBSTEPS",
    "euler_substep",
    "rk4_substep",
    "exact_substep",
    "krylov_substep",
]

Array = Any
State = Any  # an array or a tuple of arrays
Substep = Callable[[Callable[[float, State], State], float, State, float], State]

#: Names accepted by the ``substep`` argument of every integrator.
SUBSTEPS = ("euler", "rk4", "exact", "krylov")


class IntegrationError(ValueError):
    """A step failed: F misbehaved (wrong shape, dtype, non-finite values, wrong argument
    type) or the integration blew up (non-finite state, norm growth far beyond what F allows).

    Attributes
    ----------
    step : int
        Index of the step (0 for the first step of :func:`integrate`).
    t : float
        Time at which F was evaluated (or the step's start time).
    """

    def __init__(self, message: str, step: int, t: float):
        super().__init__(message)
        self.step = step
        self.t = t


@dataclass
class StepInfo:
    """What one integrator step did.

    Attributes
    ----------
    nfev : int
        Evaluations of F in this step (rejected attempts included).
    rank : tuple of int
        Tucker rank of the new approximation :math:`Y_1`.
    truncation : TruncationInfo or None
        Result of the rank-adjustment (Algorithm 1, lines 10-12) for the
        rank-adaptive integrators, ``None`` for the fixed-rank ones.
    rejected : int
        Rejected attempts (parallel BUG step-rejection test), else 0.
    t : float
        Start time :math:`t_0` of the step.
    h : float
        Step size.
    augmented_rank : tuple of int or None
        Rank of the augmented tensor before truncation (rank-adaptive methods).
    eta : float or None
        The parallel BUG's rejection indicator :math:`\\eta` of the accepted attempt.
    """

    nfev: int
    rank: tuple[int, ...]
    truncation: TruncationInfo | None = None
    rejected: int = 0
    t: float = 0.0
    h: float = 0.0
    augmented_rank: tuple[int, ...] | None = None
    eta: float | None = None

    @property
    def error_bound(self) -> float:
        """Truncation error bound of this step (0.0 when nothing was truncated)."""
        return 0.0 if self.truncation is None else float(self.truncation.error_bound)


# ---------------------------------------------------------------------------- state algebra
def _axpy(y: State, a: float, x: State) -> State:
    """``y + a * x`` for arrays or (nested) tuples of arrays."""
    if isinstance(y, tuple):
        return tuple(_axpy(yi, a, xi) for yi, xi in zip(y, x, strict=True))
    return y + a * x


def _lincomb(y: State, terms: Sequence[tuple[float, State]]) -> State:
    """``y + sum_k a_k x_k``."""
    if isinstance(y, tuple):
        return tuple(_lincomb(yi, [(a, x[i]) for a, x in terms]) for i, yi in enumerate(y))
    out = y
    for a, x in terms:
        out = out + a * x
    return out


def _norm(y: State) -> float:
    if isinstance(y, tuple):
        return math.sqrt(sum(_norm(yi) ** 2 for yi in y))
    xp = namespace(y)
    return float(xp.linalg.vector_norm(xp.reshape(y, (-1,))))


# ---------------------------------------------------------------------------- substep solvers
def euler_substep(f: Callable[[float, State], State], t0: float, y0: State, h: float) -> State:
    r"""One explicit Euler step :math:`y_1 = y_0 + h f(t_0, y_0)` (what SGD is).

    One evaluation of ``f``; first order.
    """
    return _axpy(y0, h, f(t0, y0))


def rk4_substep(f: Callable[[float, State], State], t0: float, y0: State, h: float) -> State:
    r"""One step of the classical Runge-Kutta method of order 4.

    Four evaluations of ``f``; local error :math:`O(h^5)`.  The first stage is
    ``f(t0, y0)`` with the very object ``y0``, so that a cached :math:`F(t_0, Y_0)`
    is reused (see :class:`_Context`).
    """
    k1 = f(t0, y0)
    k2 = f(t0 + h / 2, _axpy(y0, h / 2, k1))
    k3 = f(t0 + h / 2, _axpy(y0, h / 2, k2))
    k4 = f(t0 + h, _axpy(y0, h, k3))
    return _lincomb(y0, [(h / 6, k1), (h / 3, k2), (h / 3, k3), (h / 6, k4)])


def exact_substep(f: Callable[[float, State], State], t0: float, y0: State, h: float,
                  *, max_terms: int = 60, power_iterations: int = 6) -> State:
    r"""Exact flow :math:`y_1 = e^{hL} y_0` of a *linear, autonomous* substep ODE :math:`y' = Ly`.

    For a linear F (e.g. :math:`F(Y) = \sum_i Y \times_i A_i`), each K-, C- or S-substep
    is a small linear ODE; this evaluates its exponential to working precision by the
    truncated Taylor series with sub-intervals (in the spirit of Al-Mohy & Higham 2011):
    :math:`\|L\|` is estimated by ``power_iterations`` steps of the power method from a
    deterministic rough probe vector (and from :math:`y_0`), the interval is split into
    :math:`s = \lceil h\,\|L\|_{est} \rceil` pieces so that :math:`\|hL/s\| \lesssim 1`
    (no cancellation in the series, also for stiff operators such as a discrete
    Laplacian), and each piece sums :math:`\sum_k (hL/s)^k y / k!` until a term drops
    below machine precision.

    ``f`` is evaluated at the midpoint :math:`t_0 + h/2` only; the result is exact only
    when ``f(t, y)`` is linear in ``y`` and independent of ``t`` (not checked: an affine
    or time-dependent F gives a wrong result).  Cost: ``power_iterations + 1`` plus about
    15-20 evaluations of ``f`` per sub-interval.
    """
    tm = t0 + h / 2
    ny = _norm(y0)
    if ny == 0.0:
        return y0
    first = f(tm, y0)
    est = _norm(first) / ny
    v = _probe(y0)
    for _ in range(power_iterations):
        nv = _norm(v)
        if nv == 0.0:
            break
        v = _scale(v, 1.0 / nv)
        v = f(tm, v)
        est = max(est, _norm(v))
    s = max(1, math.ceil(h * est))
    eps = _eps_of(y0)
    y = y0
    for sub in range(s):
        term = y
        total = y
        converged = False
        for k in range(1, max_terms + 1):
            ft = first if (sub == 0 and k == 1) else f(tm, term)
            term = _scale(ft, (h / s) / k)
            total = _axpy(total, 1.0, term)
            if _norm(term) <= eps * max(_norm(total), 1e-300):
                converged = True
                break
        if not converged:
            raise ValueError(
                "substep='exact' did not converge: the substep operator is not linear or its "
                "norm is underestimated; use substep='rk4' with more substeps"
            )
        y = total
    return y


def _probe(y: State) -> State:
    """A deterministic vector with energy in all directions (start of the power method)."""
    if isinstance(y, tuple):
        return tuple(_probe(yi) for yi in y)
    import array_api_compat

    xp = namespace(y)
    real = xp.float32 if y.dtype in (xp.float32, xp.complex64) else xp.float64
    size = math.prod(y.shape)
    idx = xp.arange(size, dtype=real, device=array_api_compat.device(y))
    v = xp.sin(idx * 12.9898 + 0.5) * 43758.5453
    v = v - xp.floor(v) - 0.5  # a classic hash: roughly uniform in [-0.5, 0.5)
    v = xp.reshape(v, tuple(y.shape))
    return xp.astype(v, y.dtype) if v.dtype != y.dtype else v


def _scale(x: State, a: float) -> State:
    if isinstance(x, tuple):
        return tuple(_scale(xi, a) for xi in x)
    return a * x


def _eps_of(y: State) -> float:
    from ..backend import dtype_eps

    a = y[0] if isinstance(y, tuple) else y
    xp = namespace(a)
    return dtype_eps(xp, a.dtype)


_SOLVERS: dict[str, Substep] = {
    "euler": euler_substep,
    "rk4": rk4_substep,
    "exact": exact_substep,
    "krylov": krylov_substep,
}


def resolve_substep(substep: str | Substep, substeps: int) -> Substep:
    """Return a solver ``solve(f, t0, y0, h)`` applying ``substeps`` steps of ``substep``."""
    if callable(substep):
        base = substep
    elif isinstance(substep, str) and substep in _SOLVERS:
        base = _SOLVERS[substep]
    else:
        raise ValueError(
            f"substep must be one of {SUBSTEPS} or a callable substep(f, t0, y0, h) -> y1; "
            f"got {substep!r}"
        )
    n = check_int(substeps, "substeps", low=1)
    if n == 1:
        return base

    def solve(f: Callable, t0: float, y0: State, h: float) -> State:
        y = y0
        dt = h / n
        for k in range(n):
            y = base(f, t0 + k * dt, y, dt)
        return y

    return solve


# ---------------------------------------------------------------------------- checks
def check_time(t0: Any, h: Any) -> tuple[float, float]:
    """Validate the start time and the step size of one step."""
    if isinstance(t0, bool) or not isinstance(t0, numbers.Real) or not math.isfinite(t0):
        raise ValueError(f"t0 must be a finite real number; got {t0!r}")
    if isinstance(h, bool) or not isinstance(h, numbers.Real) or not math.isfinite(h) or h <= 0:
        raise ValueError(f"h must be a finite real number > 0; got {h!r}")
    return float(t0), float(h)


def check_y0(y0: Any) -> TuckerTensor:
    """Return ``y0`` with orthonormal factors (orthonormalised when not flagged)."""
    if not isinstance(y0, TuckerTensor):
        raise TypeError(
            f"y0 must be a TuckerTensor (e.g. from tucker_dlra.hosvd); got {type(y0).__name__}"
        )
    if not y0.orthonormal:
        y0 = y0.orthonormalize()
    return y0


def check_fixed_rank(y0: TuckerTensor, method: str) -> None:
    """A fixed-rank method needs :math:`r_i \\le \\prod_{j \\ne i} r_j` (a point of M_r)."""
    check_tucker_rank(y0.rank, "y0.rank",
                      f"; y0 is not on a manifold of fixed Tucker rank, which {method} needs "
                      f"(round y0 with tucker_dlra.truncate first)")


# ---------------------------------------------------------------------------- F adapter
@dataclass
class StepProbe:
    r"""What the first evaluation of F in a step saw (recorded for :func:`integrate`).

    ``growth_rate`` is :math:`\mathrm{Re}\langle Y, F(t, Y)\rangle / \|Y\|^2`, the rate
    :math:`\tfrac{d}{dt}\log\|Y\|` that F allows at the evaluated point, and
    ``stiffness`` is :math:`\|F(t, Y)\| / \|Y\|` (a lower bound of the Lipschitz constant
    of a linear F).  Both are ``nan`` when :math:`Y = 0`.
    """

    norm_y: float
    norm_f: float
    growth_rate: float
    stiffness: float


#: Set by :func:`integrate` to a list: every step context appends its :class:`StepProbe`.
_PROBES: contextvars.ContextVar[list | None] = contextvars.ContextVar("_PROBES", default=None)

#: Attributes of a TuckerTensor that an F written for ``structured=True`` typically touches.
_TUCKER_ATTRS = ("core", "factors", "rank", "xp", "full", "orthonormal", "inner", "norm")


def _probe_of(arg: Any, z: Any, xp: Any) -> StepProbe:
    """Norms and Rayleigh quotient of one evaluation (cheap: no dense tensor is formed)."""
    if isinstance(arg, TuckerTensor):
        ny = float(arg.norm())
        if isinstance(z, TuckerTensor):
            nf = float(z.norm())
        else:
            nf = float(xp.linalg.vector_norm(xp.reshape(z, (-1,))))
        ip = complex(arg.inner(z))
    else:
        ny = float(xp.linalg.vector_norm(xp.reshape(arg, (-1,))))
        if isinstance(z, TuckerTensor):
            nf = float(z.norm())
            ip = complex(z.inner(arg))
            ip = ip.conjugate()
        else:
            nf = float(xp.linalg.vector_norm(xp.reshape(z, (-1,))))
            ip = complex(xp.sum(xp.conj(arg) * z) if is_complex(xp, arg) or is_complex(xp, z)
                         else xp.sum(arg * z))
    if not ny > 0.0 or not math.isfinite(ny):
        return StepProbe(ny, nf, math.nan, math.nan)
    return StepProbe(ny, nf, ip.real / ny**2, nf / ny)


class _Context:
    """One step's access to F: counting, output checks, sharing F(t0, Y0).

    Parameters
    ----------
    F : callable
        ``F(t, y)``; ``y`` is dense (``structured=False``) or a TuckerTensor.
    y0 : TuckerTensor
        Start of the step (defines shape, dtype, namespace).
    structured : bool
    step : int
        Step index, for error messages.
    """

    def __init__(self, F: Callable, y0: TuckerTensor, t0: float, h: float, structured: bool,
                 step: int, solve: Substep):
        if not callable(F):
            raise TypeError(f"F must be callable F(t, y); got {type(F).__name__}")
        self.F = F
        self.shape = y0.shape
        self.dtype = y0.dtype
        self.xp = y0.xp
        self.complex = is_complex(self.xp, y0.core)
        self.structured = bool(structured)
        self.step = int(step)
        self.t0 = t0
        self.h = h
        self.solve = solve
        self.nfev = 0
        self._z0: Any = None
        self.like = y0.core
        self._y0 = y0  # its norm is computed only to diagnose a failure (no host sync)

    # -- evaluation -------------------------------------------------------------
    def __call__(self, t: float, y: TuckerTensor) -> Any:
        arg = y if self.structured else y.full()
        try:
            z = self.F(t, arg)
        except AttributeError as exc:
            if self.structured or not any(f"'{a}'" in str(exc) for a in _TUCKER_ATTRS):
                raise
            raise self._fail(
                f"raised AttributeError ({exc}): F reads TuckerTensor attributes but, with "
                f"structured=False, receives the dense tensor (a {type(arg).__name__}); pass "
                f"structured=True to give F the TuckerTensor", t) from exc
        self.nfev += 1
        z = self._check(z, t, arg)
        if self.nfev == 1:
            probes = _PROBES.get()
            if probes is not None:
                probes.append(_probe_of(arg, z, self.xp))
        return z

    def z0(self, y: TuckerTensor) -> Any:
        """:math:`F(t_0, Y_0)`, evaluated once per step (``y`` must represent Y0)."""
        if self._z0 is None:
            self._z0 = self(self.t0, y)
        return self._z0

    def _nonfinite(self, t: float, arg: Any) -> IntegrationError:
        """Tell a blow-up of the integrator (state already huge or non-finite) from a bad F."""
        if arg is not None:
            parts = [arg.core, *arg.factors] if isinstance(arg, TuckerTensor) else [arg]
            xp = self.xp
            if not all(bool(xp.all(xp.isfinite(p))) for p in parts):
                return IntegrationError(
                    f"the integrator's state became non-finite inside step {self.step} "
                    f"(t = {t:.10g}) before F was evaluated: the method or its substep solver "
                    f"is unstable at this step size (not a fault of F); reduce h, increase "
                    f"substeps, or use substep='exact' for a linear F", self.step, t)
            n_arg = (float(arg.norm()) if isinstance(arg, TuckerTensor)
                     else float(xp.linalg.vector_norm(xp.reshape(arg, (-1,)))))
            norm0 = float(self._y0.norm())
            if norm0 > 0 and n_arg > 1e8 * norm0:
                return IntegrationError(
                    f"F returned non-finite values at step {self.step} (t = {t:.10g}) because "
                    f"the integrator's state blew up inside the step (norm {n_arg:.3g}, "
                    f"{n_arg / norm0:.3g} times the step's start value): the method or "
                    f"its substep solver is unstable at this step size; reduce h, increase "
                    f"substeps, or use substep='exact' for a linear F", self.step, t)
        return self._fail("returned non-finite values (inf or nan) at a finite argument", t)

    def _fail(self, what: str, t: float) -> IntegrationError:
        return IntegrationError(f"F {what} at step {self.step} (t = {t:.10g})", self.step, t)

    def _check(self, z: Any, t: float, arg: Any = None) -> Any:
        xp = self.xp
        if isinstance(z, TuckerTensor):
            if z.shape != self.shape:
                raise self._fail(f"returned a TuckerTensor of shape {z.shape}; expected "
                                 f"{self.shape}", t)
            parts = [z.core, *z.factors]
        else:
            shape = getattr(z, "shape", None)
            if shape is None:
                raise self._fail(f"returned {type(z).__name__}; expected an array of shape "
                                 f"{self.shape} or a TuckerTensor", t)
            if tuple(shape) != self.shape:
                raise self._fail(f"returned shape {tuple(shape)}; expected {self.shape}", t)
            try:
                namespace(z, self.like)
            except TypeError:
                raise self._fail(f"returned a {type(z).__name__}, not an array of the state's "
                                 f"library", t) from None
            parts = [z]
        fixed = []
        for p in parts:
            if is_complex(xp, p) and not self.complex:
                raise self._fail(f"returned complex values (dtype {p.dtype}) for a real state "
                                 f"({self.dtype}); start from a complex y0", t)
            if p.dtype != self.dtype:
                p = xp.astype(p, self.dtype)
            fixed.append(p)
        for p in fixed:
            if not bool(xp.all(xp.isfinite(p))):
                raise self._nonfinite(t, arg)
        if isinstance(z, TuckerTensor):
            if z.orthonormal:  # same bases as z (checked or built orthonormal)
                return TuckerTensor._orthonormal(fixed[0], fixed[1:])
            return TuckerTensor(fixed[0], fixed[1:])
        return fixed[0]

    # -- substep right-hand sides ---------------------------------------------------
    def rhs(self, arg: Callable[[State], TuckerTensor], proj: Callable[[Any, TuckerTensor], State],
            start: State | None = None) -> Callable[[float, State], State]:
        """Right-hand side ``f(t, s) = proj(F(t, arg(s)), arg(s))`` of a small substep ODE.

        When ``f`` is called at ``t0`` with the very object ``start`` (which must
        represent :math:`Y_0`), the cached :math:`F(t_0, Y_0)` is used.
        """

        def f(t: float, s: State) -> State:
            ya = arg(s)
            if start is not None and s is start and t == self.t0:
                z = self.z0(ya)
            else:
                z = self(t, ya)
            return proj(z, ya)

        return f


def make_context(F: Callable, y0: TuckerTensor, t0: float, h: float, structured: bool,
                 step: int, substep: Any, substeps: int) -> _Context:
    solve = resolve_substep(substep, substeps)
    return _Context(F, y0, t0, h, structured, step, solve)


# ---------------------------------------------------------------------------- factor substeps
def k_steps(ctx: _Context, y: TuckerTensor, t0: float | None = None, h: float | None = None,
            start: KStart | None = None) -> tuple[list[Array], list[Array]]:
    r"""All K-steps from the same start (Algorithm 1, lines 2-4; Theorem 1).

    For each mode i: :math:`G_i, S_i` from ``start`` (by default
    :func:`~tucker_dlra.bug_step.k_starts`), :math:`K_i(t_0) = U_i S_i`, and
    :math:`\dot K_i = \mathrm{Mat}_i(F(t, G_i \times_i K_i \times_{j\ne i} U_j))V_i`
    (:func:`~tucker_dlra.steps.k_gradient`) integrated over the step by the context's
    substep solver.  Returns ``([K_i(t_1)], [G_i])``.  Cost: :math:`d` substep ODEs.
    """
    t0 = ctx.t0 if t0 is None else t0
    h = ctx.h if h is None else h
    if start is None:
        start = k_starts([y])[0]
    ks = []
    shares = t0 == ctx.t0
    for i in range(y.ndim):
        g, k0 = start.gs[i], start.k0[i]
        f = ctx.rhs(
            lambda k, g=g, i=i: k_tensor(g, y.factors, k, i),
            lambda z, ya, g=g, i=i: k_gradient(z, g, y.factors, i),
            start=k0 if shares else None,
        )
        ks.append(ctx.solve(f, t0, k0, h))
    return ks, list(start.gs)


def ode_solvers(ctx: _Context, y: TuckerTensor) -> tuple[Callable, Callable]:
    """The ``k_solve``/``c_solve`` arguments of :func:`~tucker_dlra.bug_step.bug_step` for
    one tensor ``y``: the substep ODEs solved by the context's substep solver."""

    def k_solve(starts: Sequence[KStart]) -> list[list[Array]]:
        return [k_steps(ctx, y, start=starts[0])[0]]

    def c_solve(cores: Sequence[Array], bases: Sequence[Sequence[Array]],
                at_y0: Sequence[bool]) -> list[Array]:
        return [c_step(ctx, cores[0], bases[0], starts_at_y0=at_y0[0])]

    return k_solve, c_solve


def c_step(ctx: _Context, core0: Array, factors: Sequence[Array], starts_at_y0: bool,
           t0: float | None = None, h: float | None = None) -> Array:
    r"""Galerkin (C-) step :math:`\dot C = F(t, C \times_i U_i) \times_i U_i^H` (Eq. (9)/(10)).

    ``starts_at_y0``: ``core0`` in ``factors`` represents :math:`Y_0` exactly (augmented
    or old bases), so :math:`F(t_0, Y_0)` is shared with the K-steps.
    """
    t0 = ctx.t0 if t0 is None else t0
    h = ctx.h if h is None else h
    factors = list(factors)
    f = ctx.rhs(
        lambda c: TuckerTensor._orthonormal(c, factors),
        lambda z, ya: c_gradient(z, factors),
        start=core0 if (starts_at_y0 and t0 == ctx.t0) else None,
    )
    return ctx.solve(f, t0, core0, h)


# ---------------------------------------------------------------------------- rank adjustment
def check_rank_args(rtol: Any, atol: Any, rule: str) -> None:
    from ..tucker import RULES

    check_tolerance(rtol, "rtol")
    check_tolerance(atol, "atol")
    if rtol is not None and atol is not None:
        raise ValueError("give at most one of rtol and atol")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {rule!r}")


def _clip_bounds(spec: RankSpec, upper: list[int], name: str) -> RankSpec:
    """Validate a rank bound and clip it to what the augmented core can hold this step."""
    if spec is None:
        return None
    big = [2**62] * len(upper)
    vals = per_mode(spec, len(upper), name, big, low=1)
    return [None if v is None else min(v, u) for v, u in zip(vals, upper, strict=True)]


def truncation_spec(aug_rank: Sequence[int], base_rank: Sequence[int], rtol: float | None,
                    atol: float | None, max_rank: RankSpec, min_rank: RankSpec, rule: str,
                    method: str = "auto") -> Truncation:
    r"""The rank-adjustment rule of the BUG integrators for an augmented core of ``aug_rank``.

    Relative tolerance ``rtol`` (:math:`\vartheta = \tau\|\hat C\|`, the rounding task
    :math:`\|\tilde C - \hat C\| \le \tau\|\tilde C\|`) or absolute ``atol``; with
    neither, truncation to ``base_rank`` (the rank before augmentation).  ``max_rank`` and
    ``min_rank`` are validated and clipped to what the augmented core can hold.
    """
    ra = [int(r) for r in aug_rank]
    total = math.prod(ra)
    upper = [min(r, total // r) if r else 0 for r in ra]
    max_rank = _clip_bounds(max_rank, upper, "max_rank")
    min_rank = _clip_bounds(min_rank, upper, "min_rank")
    if rtol is None and atol is None:
        rank = [min(int(r), u) for r, u in zip(base_rank, upper, strict=True)]
        return Truncation(rank=rank, max_rank=max_rank, min_rank=min_rank, rule=rule,
                          method=method)
    return Truncation(rtol=rtol, atol=atol, max_rank=max_rank, min_rank=min_rank, rule=rule,
                      method=method)


def adjust_rank(y_aug: TuckerTensor, base_rank: Sequence[int], rtol: float | None,
                atol: float | None, max_rank: RankSpec, min_rank: RankSpec, rule: str,
                method: str = "auto") -> tuple[TuckerTensor, TruncationInfo]:
    r"""Rank-adjustment step (Algorithm 1, lines 10-12; Ceruti, Kusch & Lubich 2022).

    Truncated HOSVD of the augmented core (:func:`~tucker_dlra.bug_step.truncate_many`)
    with the rule of :func:`truncation_spec`, then the lossless re-rounding to a valid
    Tucker rank :math:`r_i \le \prod_{j\ne i} r_j` with the error bounds combined.
    """
    spec = truncation_spec(y_aug.rank, base_rank, rtol, atol, max_rank, min_rank, rule, method)
    (out,), _ = truncate_many([(y_aug.core, y_aug.factors, spec)])
    return out
