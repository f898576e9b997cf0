r"""The contract between :func:`~tucker_dlra.integrators.integrate` and a one-step method.

As :class:`scipy.integrate.OdeSolver` is to :func:`scipy.integrate.solve_ivp`: a
:class:`Stepper` subclass states the method's name, whether it adjusts the rank, and its
:meth:`Stepper.step`; the driver ``integrate`` runs any of them, built-in or user-written,
with the same step-size grid, output times, checks (finite values, blow-up), callback and
:class:`~tucker_dlra.integrators.IntegrationResult`.  The built-in methods are registered as
such classes (``STEPPERS``); ``integrate(method="bug")`` and ``integrate(method=BUG)``
are the same.

Options: ``integrate`` passes ``substep``, ``substeps``, ``structured`` and ``step_index`` to
every stepper; the rank-adjustment options ``rtol``, ``atol``, ``max_rank``, ``min_rank``,
``rule`` only to one with ``adaptive = True``; further keyword options (e.g. ``rejection``
of the parallel BUG) only if :meth:`Stepper.step` names them (or takes ``**options``).  An
option the method does not use is a ``ValueError`` naming the option and the method, never
silently dropped.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from ..tucker import TuckerTensor
from ._common import StepInfo

__all__ = ["Stepper", "STEPPERS", "BUG", "RankAdaptiveBUG", "ParallelBUG", "ProjectorSplitting",
           "MidpointBUG", "Direct", "resolve_stepper", "DRIVER_OPTIONS", "RANK_OPTIONS"]

#: Options ``integrate`` passes to every stepper.
DRIVER_OPTIONS = ("substep", "substeps", "structured", "step_index")
#: Options of the rank adjustment, passed only to a stepper with ``adaptive = True``.
RANK_OPTIONS = ("rtol", "atol", "max_rank", "min_rank", "rule")


class Stepper:
    r"""Base class of the one-step methods run by :func:`~tucker_dlra.integrators.integrate`.

    Subclass it, set the class attributes and implement :meth:`step`; pass the class (or an
    instance) as ``integrate(..., method=MyStepper)``.

    Attributes
    ----------
    name : str
        Name used in messages and results (the ``method=`` string of the built-ins).
    adaptive : bool
        ``True`` if the method adjusts the rank after each step (Algorithm 1, lines 10-12):
        it then receives ``rtol``, ``atol``, ``max_rank``, ``min_rank`` and ``rule``;
        ``False`` (fixed rank): passing any of them to ``integrate`` is an error.
    """

    name: ClassVar[str] = "stepper"
    adaptive: ClassVar[bool] = False

    def step(self, F: Callable, t0: float, y0: TuckerTensor, h: float, *,
             substep: Any = "rk4", substeps: int = 1, structured: bool = False,
             step_index: int | None = None, **options: Any) -> tuple[TuckerTensor, StepInfo]:
        r"""Advance :math:`\dot Y = F(t, Y)` by one step from ``(t0, y0)`` to ``t0 + h``.

        Parameters
        ----------
        F : callable
            ``F(t, y)``: dense in / dense out, or TuckerTensor in with ``structured=True``.
        t0, h : float
            Start time and step size (> 0; the driver shortens the last step).
        y0 : TuckerTensor
            Current approximation, with orthonormal factors.
        substep, substeps : solver of the substep problems and its number of steps
            (see :func:`~tucker_dlra.integrators.ra_bug`); a method may ignore them.
        structured : bool
            How ``F`` is called (see above).
        step_index : int or None
            Index of the step (for error messages).
        **options
            The rank-adjustment options (adaptive methods) and the method's own options.

        Returns
        -------
        y1 : TuckerTensor
            The approximation at ``t0 + h``.
        info : StepInfo
            At least ``nfev`` (evaluations of F) and ``rank`` (of ``y1``);
            ``truncation``/``rejected`` where they apply.
        """
        raise NotImplementedError(f"{type(self).__name__}.step is not implemented")

    @classmethod
    def accepted_options(cls) -> tuple[str, ...] | None:
        """Keyword options of :meth:`step` beyond ``DRIVER_OPTIONS``; ``None`` when it
        takes ``**options`` (then every option is passed on).  Cost: one signature lookup."""
        fn = getattr(cls, "_function", None) or cls.step
        params = list(inspect.signature(fn).parameters.values())
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
                     and p.name not in DRIVER_OPTIONS)


class _FunctionStepper(Stepper):
    """A built-in method: :meth:`step` calls the module-level function ``_function``."""

    _function: ClassVar[Callable | None] = None

    def step(self, F: Callable, t0: float, y0: TuckerTensor, h: float, *,
             substep: Any = "rk4", substeps: int = 1, structured: bool = False,
             step_index: int | None = None, **options: Any) -> tuple[TuckerTensor, StepInfo]:
        fn = type(self)._function
        return fn(F, t0, y0, h, substep=substep, substeps=substeps, structured=structured,
                  step_index=step_index, **options)


def _builtin(name: str, adaptive: bool, module: str, attr: str, doc: str) -> type[Stepper]:
    import importlib

    fn = getattr(importlib.import_module(f"tucker_dlra.integrators.{module}"), attr)
    cls = type(doc.split(":")[0], (_FunctionStepper,), {
        "name": name, "adaptive": adaptive, "_function": staticmethod(fn),
        "__doc__": f"{doc}\n\n    The stepper of ``method={name!r}``; its ``step`` calls "
                   f":func:`~tucker_dlra.integrators.{attr}`.",
        "__module__": __name__,
    })
    cls.__qualname__ = cls.__name__
    return cls


BUG = _builtin("bug", False, "bug", "bug",
               "BUG: the fixed-rank BUG integrator (Ceruti & Lubich, BIT 62, 2022).")
RankAdaptiveBUG = _builtin(
    "ra_bug", True, "bug", "ra_bug",
    "RankAdaptiveBUG: the rank-adaptive BUG (Ceruti, Kusch & Lubich, BIT 62, 2022), the "
    "paper's Algorithm 1.")
ParallelBUG = _builtin(
    "parallel_bug", True, "parallel", "parallel_bug",
    "ParallelBUG: the parallel rank-adaptive BUG with step rejection (Ceruti, Kusch, Lubich & "
    "Sulz).")
ProjectorSplitting = _builtin(
    "projector_splitting", False, "splitting", "projector_splitting",
    "ProjectorSplitting: the Tucker projector-splitting integrator (Lubich, Vandereycken & "
    "Walach, SINUM 56, 2018).")
MidpointBUG = _builtin(
    "midpoint_bug", True, "midpoint", "midpoint_bug",
    "MidpointBUG: the second-order midpoint BUG (Ceruti, Einkemmer, Kusch & Lubich, BIT 64, "
    "2024).")
Direct = _builtin("direct", False, "direct", "direct",
                  "Direct: explicit integration of the factor equations (8) (the baseline).")

#: The built-in steppers by ``method=`` name.
STEPPERS: dict[str, type[Stepper]] = {
    c.name: c for c in (BUG, RankAdaptiveBUG, ParallelBUG, ProjectorSplitting, MidpointBUG,
                        Direct)
}


def resolve_stepper(method: Any) -> Stepper:
    """A :class:`Stepper` instance for ``method``: a name of ``STEPPERS``, a Stepper
    subclass or a Stepper instance (a clear ``ValueError``/``TypeError`` otherwise)."""
    if isinstance(method, str):
        if method not in STEPPERS:
            raise ValueError(f"method must be one of {tuple(STEPPERS)} or a Stepper subclass; "
                             f"got {method!r}")
        return STEPPERS[method]()
    if isinstance(method, type) and issubclass(method, Stepper):
        return method()
    if isinstance(method, Stepper):
        return method
    raise TypeError(f"method must be one of {tuple(STEPPERS)}, a subclass of "
                    f"tucker_dlra.integrators.Stepper or an instance of one; got {method!r}")
