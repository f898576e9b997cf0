r"""Theorem 2 diagnostics: the constants of the descent bound along a reference path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._validate import check_int
from ..tucker import TuckerTensor
from ._base import (
    Problem,
    _ns,
)


def _rk4_path(f: Callable, y: Any, t0: float, h: float, n: int) -> list:
    dt = h / n
    path = [y]
    for k in range(n):
        t = t0 + k * dt
        k1 = f(t, y)
        k2 = f(t + dt / 2, y + (dt / 2) * k1)
        k3 = f(t + dt / 2, y + (dt / 2) * k2)
        k4 = f(t + dt, y + dt * k3)
        y = y + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        path.append(y)
    return path


def descent_bound(problem: Problem, t0: float, y0: TuckerTensor, h: float,
                  y1: TuckerTensor, substeps: int = 16, samples: int = 11) -> dict[str, float]:
    r"""The quantities of Theorem 2 (Appendix C) for one step :math:`W_0 \to W_1` of Algorithm 1.

    Re-derives the step's augmented bases :math:`\hat U_i = \mathrm{orth}[U_i \mid K_i(h)]`
    (K-steps of Eq. (9) with ``substeps`` RK4 steps) and the Galerkin trajectory
    :math:`\hat W(t) = \hat C(t)\times_i \hat U_i` on :math:`[t_0, t_0+h]` from the
    building blocks of :mod:`tucker_dlra.steps` (independently of the integrators), then

    * :math:`\alpha = \min_t \|\nabla L(\hat W(t)) \times_i \hat U_i^\top\|^2` over the
      RK4 nodes of the Galerkin trajectory (for the linear gradient flows of
      :func:`gradient_flow` this norm decreases monotonically, so the minimum is attained
      at the last node and is exact);
    * :math:`\beta = \max_{s\in[0,1]} \|\nabla L(s W_1 + (1-s)\hat W(t_1))\|` over
      ``samples`` points (exact for affine gradients: the norm is convex in s);
    * :math:`\tau = \|\hat W(t_1) - W_1\|`, the truncation error actually made.

    Theorem 2 then states ``loss1 <= loss0 - alpha*h + beta*tau`` (and
    ``loss_hat <= loss0 - alpha*h`` for the Galerkin step alone, Eq. (14)).

    Parameters
    ----------
    problem : Problem
        A gradient flow (``problem.grad`` and ``problem.loss`` set), e.g.
        :func:`gradient_flow`.
    t0, y0, h : the step (start time, start value :math:`W_0`, step size :math:`\lambda`)
    y1 : TuckerTensor
        The result :math:`W_1` of the step (e.g. from ``ra_bug``).
    substeps : int
        RK4 steps for the K- and C-substeps (use the integrator's value).

    Returns
    -------
    dict with ``alpha, beta, tau, loss0, loss1, loss_hat, bound`` (the right-hand side
    :math:`L(W_0) - \alpha h + \beta\tau`) and ``galerkin_bound``
    (:math:`L(W_0) - \alpha h`).  Dense computations: for small problems.
    """
    from ..steps import augment_basis, c_gradient, galerkin_core, k_core, k_gradient, k_tensor

    if problem.grad is None or problem.loss is None:
        raise ValueError("problem must be a gradient flow (problem.grad and problem.loss set)")
    substeps = check_int(substeps, "substeps", 1)
    y0 = y0 if y0.orthonormal else y0.orthonormalize()
    F = problem.F
    uhat = []
    for i in range(y0.ndim):
        g, s = k_core(y0.core, i)

        def fk(t: float, k: Any, g: Any = g, i: int = i) -> Any:
            return k_gradient(F(t, k_tensor(g, y0.factors, k, i).full()), g, y0.factors, i)

        k1 = _rk4_path(fk, y0.factors[i] @ s, t0, h, substeps)[-1]
        uhat.append(augment_basis(y0.factors[i], k1))
    c0 = galerkin_core(y0.core, y0.factors, uhat)

    def fc(t: float, c: Any) -> Any:
        return c_gradient(F(t, TuckerTensor(c, uhat).full()), uhat)

    path = [TuckerTensor(c, uhat).full() for c in _rk4_path(fc, c0, t0, h, substeps)]
    xp = _ns(path[0])

    def nrm(x: Any) -> float:
        return float(xp.linalg.vector_norm(xp.reshape(x, (-1,))))

    alpha = min(nrm(c_gradient(problem.grad(w), uhat)) ** 2 for w in path)
    w1 = y1.full()
    w_hat = path[-1]
    beta = max(nrm(problem.grad(s * w1 + (1 - s) * w_hat)) for s in np.linspace(0, 1, samples))
    tau = nrm(w1 - w_hat)
    loss0 = problem.loss(y0)
    return dict(alpha=alpha, beta=beta, tau=tau, loss0=loss0, loss1=problem.loss(y1),
                loss_hat=problem.loss(w_hat), bound=loss0 - alpha * h + beta * tau,
                galerkin_bound=loss0 - alpha * h)
