"""The synthetic problems know their solutions: F = dY/dt, structured F = dense F, references.

Checks every constructor of :mod:`tucker_dlra.problems` against finite differences of its
own ``solution``, the structured right-hand side against the dense one, the initial
value against the solution at t = 0, the known best-approximation errors quoted on the theory page,
the invariants of the Schrödinger reference, the gradient of the least-squares loss
against torch autograd, and the argument checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tucker_dlra.problems as P
from tucker_dlra import TuckerTensor, check_orthonormal, hosvd


def _np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _rel(a, b):
    a, b = _np(a), _np(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


SMALL = {
    "a": lambda **kw: P.low_rank_trajectory((5, 6, 7), (2, 3, 2), seed=1, **kw),
    "b": lambda **kw: P.low_rank_trajectory((6, 6, 6), 3, sigma_min=1e-8, eps=1e-3, seed=1,
                                            **kw),
    "grow": lambda **kw: P.low_rank_trajectory((6, 6, 6), 3, initial_rank=1, relax=2.0, seed=1,
                                               **kw),
    "grad": lambda **kw: P.gradient_flow((5, 6, 7), 2, eps=1e-2, seed=1, **kw),
    "grad0": lambda **kw: P.gradient_flow((5, 6, 7), 2, seed=1, **kw),
    "heat": lambda **kw: P.heat((6, 7, 8), 2, seed=1, **kw),
    "T1": lambda **kw: P.matrix_tiny_singular_values(20, 4, seed=1, **kw),
    "T4a": lambda **kw: P.tucker_tiny_singular_values(8, 3, seed=1, **kw),
    "T2": lambda **kw: P.schrodinger(16, 4, seed=1, **kw),
}
EXACT_Y0 = {"a", "grow", "grad", "grad0", "heat"}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_rhs_is_time_derivative_of_solution(name, backend):
    p = SMALL[name](backend=backend.name, device=backend.device)
    assert isinstance(p.y0, TuckerTensor) and p.y0.orthonormal
    check_orthonormal(p.y0.factors)
    assert p.y0.rank == (p.rank if name != "grow" else (1, 1, 1))
    t, dt = 0.37, 1e-5
    y = p.solution(t)
    fd = (_np(p.solution(t + dt)) - _np(p.solution(t - dt))) / (2 * dt)
    f = p.F(t, y)
    assert type(f) is type(y) and tuple(f.shape) == tuple(y.shape)
    assert _rel(f, fd) <= 1e-7
    # structured F on a Tucker representation of the same point
    ft = p.F_tucker(t, hosvd(y))
    ft = ft.full() if isinstance(ft, TuckerTensor) else ft
    assert _rel(ft, f) <= 1e-12
    if name in EXACT_Y0:
        assert _rel(p.y0.full(), p.solution(0.0)) <= 1e-13
    else:  # the truncation of Y(0) to the problem's rank: its error is the best one at t=0
        assert p.error(p.y0, 0.0) <= 1.0001 * math.sqrt(len(p.rank)) * max(
            p.best_error(0.0), 1e-300) + 1e-14


def test_structured_rhs_never_dense():
    """Structured F of the linear problems takes and returns TuckerTensors (rank 2r)."""
    p = P.heat((30, 31, 32), 3, seed=0)
    f = p.F_tucker(0.0, p.y0)
    assert isinstance(f, TuckerTensor) and f.rank == (6, 6, 6)
    p = P.gradient_flow((10, 10, 10), 2, seed=0)
    assert isinstance(p.F_tucker(0.0, p.y0), TuckerTensor)
    p = P.low_rank_trajectory((10, 10, 10), 3, seed=0)
    assert isinstance(p.F_tucker(0.5, p.y0), TuckerTensor)


@settings(max_examples=10)
@given(st.integers(2, 4), st.integers(0, 2**16), st.data())
def test_low_rank_trajectory_has_its_rank(d, seed, data):
    shape = tuple(data.draw(st.integers(3, 6)) for _ in range(d))
    rank = tuple(data.draw(st.integers(1, n - 1)) for n in shape)
    if any(r * r > math.prod(rank) for r in rank):
        rank = (min(rank),) * d
    p = P.low_rank_trajectory(shape, rank, seed=seed)
    a = _np(p.solution(0.8))
    for i, r in enumerate(rank):
        s = np.linalg.svd(np.moveaxis(a, i, 0).reshape(shape[i], -1), compute_uv=False)
        assert s[r - 1] > 1e-8 * s[0]
        assert s[r:].sum() <= 1e-12 * s[0] if r < len(s) else True
    assert p.best_error(0.8) == 0.0


def test_known_best_errors():
    """Matrix problem: e 2^-r / sqrt 3 = 9.81e-2, 6.13e-3, 2.39e-5; its Tucker analogue:
    0.196, 0.0245, 1.53e-3 (theory page, standard test problems)."""
    for r, ref in ((4, 9.81e-2), (8, 6.13e-3), (16, 2.39e-5)):
        assert P.matrix_tiny_singular_values(100, r).best_error(1.0) == pytest.approx(ref, rel=2e-3)
    for r, ref in ((3, 0.196), (6, 0.0245), (10, 1.53e-3)):
        p = P.tucker_tiny_singular_values(20, r)
        assert p.best_error(1.0) == pytest.approx(ref, rel=3e-3)
    # and they are the truncation errors of the exact solutions
    p = P.matrix_tiny_singular_values(30, 5)
    s = np.linalg.svd(_np(p.solution(1.0)), compute_uv=False)
    assert p.best_error(1.0) == pytest.approx(np.linalg.norm(s[5:]), rel=1e-9)
    p = P.tucker_tiny_singular_values(10, 4)
    t = hosvd(_np(p.solution(1.0)), rank=4)
    assert p.best_error(1.0) == pytest.approx(_rel(t.full(), p.solution(1.0)) *
                                              np.linalg.norm(_np(p.solution(1.0))), rel=1e-8)


def test_schrodinger_reference_conserves_norm_and_energy():
    p = P.schrodinger(40, 6, seed=2)
    y0 = p.solution(0.0)
    assert np.linalg.norm(_np(y0)) == pytest.approx(1.0, abs=1e-14)
    assert p.energy(y0) == pytest.approx(p.meta["energy0"], rel=1e-13)
    for t in (0.3, 1.0):
        y = p.solution(t)
        assert np.linalg.norm(_np(y)) == pytest.approx(1.0, abs=1e-12)
        assert p.energy(y) == pytest.approx(p.meta["energy0"], rel=1e-11)
    # the Tucker energy equals the dense one
    assert p.energy(p.y0) == pytest.approx(p.energy(p.y0.full()), rel=1e-12)
    # the reference agrees with the exact solution when V_cos is dropped (Kronecker sum)
    lam, q = np.linalg.eigh(p.terms[0][1][0])
    e = (q * np.exp(-1j * 0.5 * lam)) @ q.T
    op = lambda y: -1j * (p.terms[0][1][0] @ y + y @ p.terms[1][1][1].T)
    y1 = P.expm_multiply_taylor(op, _np(y0), 0.5, 4.0)
    assert _rel(y1, e @ _np(y0) @ e.T) <= 1e-13


def test_gradient_flow_gradient_loss_and_minimiser():
    torch = pytest.importorskip("torch")
    p = P.gradient_flow((4, 5, 6), 2, eps=0.05, seed=3, backend="torch")
    w = torch.randn(4, 5, 6, dtype=torch.float64, requires_grad=True)
    # the loss as a torch function of w, built from the problem's own loss on a perturbation
    base = p.loss(w.detach())
    g = p.grad(w.detach())
    d = torch.randn(4, 5, 6, dtype=torch.float64)
    h = 1e-6
    fd = (p.loss(w.detach() + h * d) - p.loss(w.detach() - h * d)) / (2 * h)
    assert fd == pytest.approx(float(torch.sum(g * d)), rel=1e-7)
    assert base >= p.meta["L_min"]
    # the structured gradient and loss agree with the dense ones
    y = hosvd(w.detach(), rank=(3, 3, 3))
    gt = p.grad_tucker(y)
    gt = gt.full() if isinstance(gt, TuckerTensor) else gt
    assert _rel(gt, p.grad(y.full())) <= 1e-12
    assert p.loss(y) == pytest.approx(p.loss(y.full()), rel=1e-12)
    # the flow converges to the minimiser: gradient ~ 0 and loss = L_min for large t
    w_end = p.solution(60.0)
    assert float(torch.linalg.vector_norm(p.grad(w_end))) <= 1e-10
    assert p.loss(w_end) == pytest.approx(p.meta["L_min"], rel=1e-9, abs=1e-14)
    # and the loss decreases monotonically along the exact flow
    losses = [p.loss(p.solution(t)) for t in np.linspace(0, 2, 9)]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))


def test_gradient_flow_noise_free_flow_rank():
    p = P.gradient_flow((10, 10, 10), 2, seed=0)
    w = _np(p.solution(0.7))
    for i in range(3):
        s = np.linalg.svd(np.moveaxis(w, i, 0).reshape(10, -1), compute_uv=False)
        assert s[6:].max() <= 1e-12 * s[0]  # flow rank <= 3r = 6
    assert p.meta["flow_rank"] == [6, 6, 6]


def test_pad_rank_and_quadrature_substep():
    p = P.low_rank_trajectory((6, 7, 8), 2, seed=0)
    y = P.pad_rank(p.y0, (4, 3, 5), seed=2)
    assert y.rank == (4, 3, 5)
    check_orthonormal(y.factors, atol=1e-13)
    assert _rel(y.full(), p.y0.full()) <= 1e-15
    with pytest.raises(ValueError, match="rank"):
        P.pad_rank(p.y0, 1)
    # Gauss quadrature integrates polynomials of degree <= 15 exactly
    f = lambda t, y: np.array([t**15, 3 * t**2])
    y1 = P.quadrature_substep(f, 0.5, np.array([1.0, 0.0]), 0.7)
    assert y1 == pytest.approx([1.0 + (1.2**16 - 0.5**16) / 16, 1.2**3 - 0.5**3], rel=1e-14)


def test_backends_and_dtypes():
    torch = pytest.importorskip("torch")
    p = P.heat((5, 5, 5), 2, backend="torch", dtype="float32")
    assert p.y0.core.dtype == torch.float32 and isinstance(p.solution(0.1), torch.Tensor)
    assert p.F(0.0, p.y0.full()).dtype == torch.float32
    q = P.heat((5, 5, 5), 2, backend="numpy")
    assert _rel(p.solution(0.3), q.solution(0.3)) <= 1e-6  # same seed, same problem
    s = P.schrodinger(10, 2, backend="torch", dtype=torch.float64)
    assert s.y0.core.dtype == torch.complex128


@pytest.mark.parametrize("call, match", [
    (lambda: P.low_rank_trajectory(backend="jax"), "backend"),
    (lambda: P.low_rank_trajectory((4, 4), 5), "rank"),
    (lambda: P.low_rank_trajectory((4, 4, 4), (3, 1, 1)), "rank"),
    (lambda: P.low_rank_trajectory(sigma_min=2.0), "sigma_min"),
    (lambda: P.low_rank_trajectory(eps=-1.0), "eps"),
    (lambda: P.low_rank_trajectory(seed=-1), "seed"),
    (lambda: P.low_rank_trajectory(dtype="int32"), "dtype"),
    (lambda: P.gradient_flow(decay=1.5), "decay"),
    (lambda: P.schrodinger(10, 11), "rank"),
    (lambda: P.heat(kappa=float("nan")), "kappa"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_schrodinger_reference_against_scipy_expm():
    """The Taylor reference of T2 (with the non-Kronecker term V Y V) equals scipy's expm."""
    from scipy.linalg import expm

    p = P.schrodinger(12, 3, seed=4)
    n = 12
    d = p.terms[0][1][0]
    v = p.terms[2][1][0]
    eye = np.eye(n)
    # row-major vec: vec(D Y) = (D kron I) vec Y, vec(Y D^T) = (I kron D) vec Y
    op = -1j * (np.kron(d, eye) + np.kron(eye, d) + np.kron(v, v))
    y0 = _np(p.solution(0.0)).ravel()
    ref = (expm(0.8 * op) @ y0).reshape(n, n)
    assert _rel(p.solution(0.8), ref) <= 1e-12
