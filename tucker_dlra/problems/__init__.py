r"""Synthetic tensor ODEs with exact or reference solutions (the standard test problems of the
DLRA literature, with their reference numbers on the theory page: :ref:`test-problems`).

Every constructor returns a :class:`Problem`: a Tucker initial value ``y0``, the
right-hand side ``F(t, y)`` on dense arrays, a structured ``F_tucker(t, y)`` that
takes a :class:`~tucker_dlra.TuckerTensor` and returns a TuckerTensor (or a dense
array where the problem has a full-rank part), the exact or reference solution
``solution(t)`` (dense) and, where known, the error of the best approximation of
that solution at the problem's rank.

All random data are drawn on the host with NumPy (``numpy.random.default_rng(seed)``,
float64/complex128) and then moved to the requested array library, dtype and device,
so the same seed gives the same problem on every backend.

Constructors:

* :func:`low_rank_trajectory` -- problem (a), :math:`A(t) = C(t)\times_i e^{tW_i}U_i` with
  F = dA/dt; with ``sigma_min``/``eps`` problem (b): a core whose singular values span
  many decades plus an :math:`\varepsilon` perturbation (Koch & Lubich, SIMAX 31, 2010;
  Kieri, Lubich & Walach, SINUM 54, 2016);
* :func:`gradient_flow` -- problem (c), :math:`\dot W = -\nabla L(W)` with
  :math:`L(W) = \tfrac12\|\mathcal A(W)-B\|^2` (the paper's Eq. (5)), exact solution;
* :func:`schrodinger` -- problem (d), discrete Schrödinger equation (Ceruti, Kusch &
  Lubich, BIT 62, 2022, Sec. 6.1);
* :func:`heat` -- problem (d), heat equation, exact solution;
* :func:`matrix_tiny_singular_values` -- problem (e): a matrix with singular values :math:`2^{-j}`;
* :func:`tucker_tiny_singular_values` -- problem (e): its Tucker analogue.

Helpers: :func:`descent_bound` (the constants of Theorem 2), :func:`pad_rank`,
:func:`quadrature_substep`, :func:`apply_linear`, :func:`apply_linear_tucker`,
:func:`expm_multiply_taylor`.

The core never imports torch at module level; ``backend="torch"`` imports it lazily.

Layout (import everything from ``tucker_dlra.problems``): ``_base`` (:class:`Problem`, backend
target, NumPy helpers), ``linear`` (linear right-hand sides and their exponential),
``quadrature`` (the exact substep for data-driven F), ``trajectories`` (a)-(c), ``pde`` (d),
``tiny_singular_values`` (e), ``diagnostics`` (Theorem 2 constants).
"""

from ..tucker import pad_rank
from ._base import LinearTerm, Problem
from .diagnostics import descent_bound
from .linear import apply_linear, apply_linear_tucker, expm_multiply_taylor
from .pde import heat, schrodinger
from .quadrature import quadrature_substep
from .tiny_singular_values import matrix_tiny_singular_values, tucker_tiny_singular_values
from .trajectories import gradient_flow, low_rank_trajectory

__all__ = [
    "Problem",
    "LinearTerm",
    "low_rank_trajectory",
    "gradient_flow",
    "schrodinger",
    "heat",
    "matrix_tiny_singular_values",
    "tucker_tiny_singular_values",
    "apply_linear",
    "apply_linear_tucker",
    "expm_multiply_taylor",
    "pad_rank",
    "quadrature_substep",
    "descent_bound",
]
