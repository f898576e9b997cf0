r"""The exact-substep solver for data-driven problems (:math:`F` independent of :math:`Y`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

_GAUSS = np.polynomial.legendre.leggauss(8)


def quadrature_substep(f: Callable[[float, Any], Any], t0: float, y0: Any, h: float) -> Any:
    r"""Substep solver for right-hand sides that do not depend on the state: Gauss quadrature.

    For the data-mode problems :math:`F(t, Y) = \dot A(t)` (:func:`low_rank_trajectory`)
    every substep ODE of the BUG integrators is :math:`\dot y = f(t)`, so
    :math:`y_1 = y_0 + \int_{t_0}^{t_0+h} f`; an 8-point Gauss-Legendre rule (order 16)
    computes it to rounding for smooth :math:`A` -- exact substeps: the
    integrator error is then the DLRA error alone.  Pass it as ``substep=`` to any integrator.
    Wrong (silently) for an F that depends on Y.  Cost: 8 evaluations of ``f``.
    """
    nodes, weights = _GAUSS
    acc = None
    for x, w in zip(nodes, weights, strict=True):
        v = f(t0 + 0.5 * h * (1.0 + float(x)), y0)
        if isinstance(v, tuple):
            v = tuple(vi * (0.5 * h * float(w)) for vi in v)
            acc = v if acc is None else tuple(a + b for a, b in zip(acc, v, strict=True))
        else:
            v = v * (0.5 * h * float(w))
            acc = v if acc is None else acc + v
    if isinstance(y0, tuple):
        return tuple(a + b for a, b in zip(y0, acc, strict=True))
    return y0 + acc
