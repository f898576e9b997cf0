"""Tests of the driver ``integrate`` as a numerical analyst uses it: safe defaults, blow-up
detection, messages that name the cause, solve_ivp conventions (t_eval, status, nfev), the
``rank=`` start (pad_rank), the tolerance per unit time, structured operators and the
exponential / scipy substeps.

References are dense computations (scipy ``expm``/``solve_ivp``), exact solutions, and
invariants.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg as sla
from scipy.integrate import solve_ivp

from tucker_dlra import (
    IntegrationError,
    TuckerTensor,
    hosvd,
    integrate,
    pad_rank,
    truncate,
)
from tucker_dlra.integrators import krylov_substep
from tucker_dlra.operators import LinearOperator, kronecker_sum
from tucker_dlra.problems import quadrature_substep, schrodinger

# --------------------------------------------------------------------------- helpers


def _skew(rng, n, scale=1.0):
    a = rng.standard_normal((n, n))
    return scale * (a - a.T) / 2


def _orth(rng, n, r):
    return np.linalg.qr(rng.standard_normal((n, r)))[0]


def _mode(y, m, i):
    return np.moveaxis(np.tensordot(m, y, axes=([1], [i])), 0, i)


def _kron_problem(n=8, r=2, d=3, seed=0, scale=1.0):
    """F(Y) = sum_i Y x_i W_i (W_i skew): exact solution Y0 x_i expm(t W_i), rank r."""
    rng = np.random.default_rng(seed)
    ws = [_skew(rng, n, scale) for _ in range(d)]
    y0 = TuckerTensor(rng.standard_normal((r,) * d), [_orth(rng, n, r) for _ in range(d)],
                      orthonormal=True)

    def F(t, y):
        out = 0 * y
        for i, w in enumerate(ws):
            out = out + _mode(y, w, i)
        return out

    def exact(t):
        return TuckerTensor(y0.core, [sla.expm(t * w) @ u for w, u in
                                      zip(ws, y0.factors, strict=True)]).full()

    return ws, y0, F, exact


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --------------------------------------------------------------------------- safe defaults


def test_adaptive_method_without_tolerance_warns_and_says_what_it_does():
    _, y0, F, _ = _kron_problem()
    with pytest.warns(UserWarning, match=r"truncates back to y0.rank = \(2, 2, 2\).*rank never "
                                         r"changes.*rtol= or atol="):
        res = integrate(F, y0, (0, 0.2), 0.1)
    assert all(r == (2, 2, 2) for r in res.ranks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # stating the choice silences it
        integrate(F, y0, (0, 0.2), 0.1, rank=2)
        integrate(F, y0, (0, 0.2), 0.1, rtol=1e-8)
        integrate(F, y0, (0, 0.2), 0.1, method="bug")


def test_unstable_rk4_substep_raises_with_step_time_and_cause():
    # ||W_i|| ~ 30: h = 0.2 puts rk4 far outside its stability region; the exact flow is
    # norm-conserving (skew W_i), so any growth is the method's.
    _, y0, F, _ = _kron_problem(n=10, scale=6.0)
    with pytest.raises(IntegrationError, match=r"blow-up at step \d+ \(t = .*rk4 unstable at "
                                               r"h\*\|\|F\(Y\)\|\|/\|\|Y\|\| = .*"
                                               r"substep='exact' or 'krylov'") as ei:
        integrate(F, y0, (0, 5), 0.2, method="bug", substep="rk4")
    assert ei.value.step >= 0 and ei.value.t == pytest.approx(0.2 * ei.value.step)
    # the same with ra_bug: without the check the ranks inflate to the mode sizes
    with pytest.raises(IntegrationError, match="blow-up"):
        integrate(F, y0, (0, 5), 0.2, method="ra_bug", rtol=1e-10, substep="rk4")
    # on_error="return": solve_ivp's status -1 with the message and the trajectory so far
    res = integrate(F, y0, (0, 5), 0.2, method="bug", on_error="return")
    assert res.status == -1 and not res.success and "blow-up" in res.message
    assert 1 <= res.nsteps < 25 and len(res.t) == res.nsteps + 1
    # a stable step size passes, and the exact substep is fine at the large h
    integrate(F, y0, (0, 1), 0.01, method="bug", substep="rk4")
    integrate(F, y0, (0, 1), 0.2, method="bug", substep="krylov")


def test_growth_that_F_allows_is_not_a_blow_up():
    # F(Y) = 2Y + skew: ||Y(t)|| = e^{2t} ||Y0||, a factor e^10 over [0, 5]
    ws, y0, F0, _ = _kron_problem()

    def F(t, y):
        return 2.0 * y + F0(t, y)

    res = integrate(F, y0, (0, 5), 0.05, method="ra_bug", rank=2, substep="rk4")
    assert res.status == 0 and res.success
    assert float(res.y[-1].norm()) == pytest.approx(np.exp(10) * float(y0.norm()), rel=1e-2)


def test_nonfinite_message_tells_integrator_from_F():
    _, y0, F, _ = _kron_problem()

    def nan_F(t, y):  # F itself returns nan at a finite argument
        return np.full(y.shape, np.nan)

    with pytest.raises(IntegrationError, match="F returned non-finite.*at a finite argument"):
        integrate(nan_F, y0, (0, 1), 0.1, method="bug")

    def inf_substep(f, t0, y, h):  # the integrator's own state becomes non-finite
        return f(t0, y * np.inf)

    with pytest.raises(IntegrationError, match=r"state became non-finite inside step 0.*not a "
                                               r"fault of F"), np.errstate(all="ignore"):
        integrate(F, y0, (0, 1), 0.1, method="bug", substep=inf_substep)


def test_direct_on_singular_core_does_not_advise_reducing_h():
    rng = np.random.default_rng(0)
    core = np.zeros((3, 3, 3))
    core[0, 0, 0], core[1, 1, 0], core[2, 2, 0] = 1.0, 0.5, 0.3  # mode-3 unfolding rank 1
    y0 = TuckerTensor(core, [_orth(rng, 10, 3) for _ in range(3)], orthonormal=True)
    ws = [_skew(rng, 10) for _ in range(3)]

    def F(t, y):
        return sum(_mode(y, w, i) for i, w in enumerate(ws))

    for h in (0.1, 1e-3):  # no step size helps
        with pytest.raises(IntegrationError, match=r"singular.*reducing h cannot cure.*BUG") as ei:
            integrate(F, y0, (0, 0.2), h, method="direct")
        assert "reduce h" not in str(ei.value)
    # a BUG method integrates the same start without complaint
    integrate(F, y0, (0, 0.2), 0.1, method="bug")


def test_forgotten_structured_true_is_named():
    p = schrodinger(n=12, rank=3)
    with pytest.raises(IntegrationError, match=r"structured=True") as ei:
        integrate(p.F_tucker, p.y0, (0, 0.1), 0.05, method="bug")
    assert isinstance(ei.value.__cause__, AttributeError)
    integrate(p.F_tucker, p.y0, (0, 0.1), 0.05, method="bug", structured=True)


def test_rank_limit_message_names_the_current_rank():
    rng = np.random.default_rng(1)
    y = TuckerTensor(rng.standard_normal((3, 3, 3)), [_orth(rng, 20, 3) for _ in range(3)])
    with pytest.raises(ValueError, match=r"current Tucker rank 3 .*mode size 20.*pad_rank"):
        truncate(y, rank=(6, 3, 3))


# --------------------------------------------------------------------------- solve_ivp conventions


def test_t_eval_against_solve_ivp_and_exact_solution():
    ws, y0, F, exact = _kron_problem(n=6, r=2, seed=3)
    t_eval = [0.0, 0.013, 0.25, 0.5, 0.77, 1.0]  # off the step grid on purpose
    res = integrate(F, y0, (0, 1), 0.05, method="ra_bug", rtol=1e-12, substep="krylov",
                    t_eval=t_eval)
    assert res.t == t_eval and len(res.y) == len(t_eval) and len(res.ranks) == len(t_eval)
    assert res.status == 0 and res.success and "reached" in res.message
    assert res.nfev == sum(info.nfev for info in res.infos) > 0
    # solve_ivp on the vectorised linear ODE, same output times
    shape = y0.shape
    sol = solve_ivp(lambda t, v: F(t, v.reshape(shape)).ravel(), (0, 1), y0.full().ravel(),
                    t_eval=t_eval, rtol=1e-11, atol=1e-13, method="DOP853")
    for k, t in enumerate(t_eval):
        ref = exact(t)
        assert _rel(sol.y[:, k].reshape(shape), ref) < 1e-8
        assert _rel(res.y[k].full(), ref) < 1e-3, t
        assert _rel(res.y[k].full(), sol.y[:, k].reshape(shape)) < 1e-3, t
    # the steps end exactly at the requested times (no interpolation)
    ends = [info.t + info.h for info in res.infos]
    for t in t_eval[1:]:
        assert min(abs(e - t) for e in ends) < 1e-14


def test_t_eval_exact_in_data_mode_and_bad_t_eval():
    """F = dA/dt with A(t) of rank r: BUG with exact substeps reproduces A at every t_eval."""
    rng = np.random.default_rng(4)
    n, r = 7, 2
    ws = [_skew(rng, n) for _ in range(3)]
    us = [_orth(rng, n, r) for _ in range(3)]
    c0, c1 = rng.standard_normal((r,) * 3), rng.standard_normal((r,) * 3)

    def A(t):
        return TuckerTensor(c0 + t * c1, [sla.expm(t * w) @ u for w, u in zip(ws, us,
                                                                              strict=True)])

    def dA(t, y):
        e = [sla.expm(t * w) @ u for w, u in zip(ws, us, strict=True)]
        out = TuckerTensor(c1, e).full()
        for i, w in enumerate(ws):
            f = list(e)
            f[i] = w @ e[i]
            out = out + TuckerTensor(c0 + t * c1, f).full()
        return out

    t_eval = [0.1234, 0.5, 0.9]
    res = integrate(dA, A(0.0), (0, 1), 0.1, method="bug", substep=quadrature_substep,
                    t_eval=t_eval)
    for t, y in zip(res.t, res.y, strict=True):
        assert _rel(y.full(), A(t).full()) < 1e-11
    for bad in ([0.5, 0.2], [1.5], [], [-0.1]):
        with pytest.raises(ValueError, match="t_eval"):
            integrate(dA, A(0.0), (0, 1), 0.1, method="bug", t_eval=bad)


def test_status_callback_and_bad_options():
    _, y0, F, _ = _kron_problem()
    res = integrate(F, y0, (0, 1), 0.1, method="bug", callback=lambda t, y: t > 0.25)
    assert res.status == 1 and res.success and res.nsteps == 3
    with pytest.raises(ValueError, match="on_error"):
        integrate(F, y0, (0, 1), 0.1, method="bug", on_error="ignore")
    with pytest.raises(ValueError, match="blowup_factor"):
        integrate(F, y0, (0, 1), 0.1, method="bug", blowup_factor=0.5)
    with pytest.raises(ValueError, match="tol_per_unit_time"):
        integrate(F, y0, (0, 1), 0.1, method="bug", tol_per_unit_time=True)
    with pytest.raises(ValueError, match="rank"):
        integrate(F, y0, (0, 1), 0.1, method="bug", rank=(9, 2, 2))  # > mode size 8
    with pytest.raises(ValueError, match="not a Tucker rank"):
        integrate(F, y0, (0, 1), 0.1, method="bug", rank=(6, 2, 2))  # 6 > 2 * 2


# --------------------------------------------------------------------------- rank= (padding)


def test_pad_rank_is_the_same_tensor():
    rng = np.random.default_rng(5)
    for cplx in (False, True):
        core = rng.standard_normal((2, 1, 3)) + (1j * rng.standard_normal((2, 1, 3))
                                                 if cplx else 0)
        y = TuckerTensor(core, [rng.standard_normal((n, r)) + 0 * core.flat[0] for n, r in
                                zip((6, 5, 7), (2, 1, 3), strict=True)])
        z = pad_rank(y, (4, 3, 3))
        assert z.rank == (4, 3, 3) and z.orthonormal
        for u in z.factors:
            assert np.allclose(u.conj().T @ u, np.eye(u.shape[1]), atol=1e-13)
        assert _rel(z.full(), y.full()) < 1e-14
        assert np.iscomplexobj(z.factors[0]) == cplx
    with pytest.raises(ValueError, match=r"rank\[0\].*padding cannot lower"):
        pad_rank(z, (2, 3, 3))


def test_rank_padding_start_integrates_exactly_on_the_manifold():
    """A(t) = (C0 + t C1) x_i e^{tW_i} U_i with C0 of rank (1,1,1): A(0) has rank 1 but
    A(t) rank (3,3,3) for t > 0.  BUG from y0 = A(0) stays rank 1 (O(1) error); with
    rank=3 (zero-padded start) it is exact, as the exactness theorem of the fixed-rank BUG
    promises for F = dA/dt."""
    rng = np.random.default_rng(6)
    n, r = 8, 3
    ws = [_skew(rng, n) for _ in range(3)]
    us = [_orth(rng, n, r) for _ in range(3)]
    c0 = np.zeros((r,) * 3)
    c0[0, 0, 0] = 1.0
    c1 = rng.standard_normal((r,) * 3)

    def factors(t):
        return [sla.expm(t * w) @ u for w, u in zip(ws, us, strict=True)]

    def A(t):
        return TuckerTensor(c0 + t * c1, factors(t)).full()

    def dA(t, y):
        e = factors(t)
        out = TuckerTensor(c1, e).full()
        for i, w in enumerate(ws):
            f = list(e)
            f[i] = w @ e[i]
            out = out + TuckerTensor(c0 + t * c1, f).full()
        return out

    y0 = TuckerTensor(np.ones((1, 1, 1)), [u[:, :1] for u in us], orthonormal=True)
    assert _rel(y0.full(), A(0.0)) < 1e-15
    low = integrate(dA, y0, (0, 0.5), 0.1, method="bug", substep=quadrature_substep)
    assert low.ranks[-1] == (1, 1, 1) and _rel(low.y[-1].full(), A(0.5)) > 0.1
    for method in ("bug", "projector_splitting"):
        res = integrate(dA, y0, (0, 0.5), 0.1, method=method, substep=quadrature_substep,
                        rank=3)
        assert res.ranks[0] == (3, 3, 3)
        assert _rel(res.y[0].full(), A(0.0)) < 1e-14  # padding is exact
        assert _rel(res.y[-1].full(), A(0.5)) < 1e-10, method


# --------------------------------------------------------------------------- tolerance per time


def test_tolerance_per_unit_time_removes_the_theta_over_h_growth():
    """Absolute tolerance per step: the accumulated truncation n*theta = T*theta/h makes the
    error *grow* as h shrinks; theta = tol*h keeps it bounded (and here lets it fall)."""
    p = schrodinger(n=40, rank=4)
    t_end = 0.5
    ref = p.solution(t_end)

    def err(h, **kw):
        res = integrate(p.F_tucker, p.y0, (0, t_end), h, method="ra_bug", structured=True,
                        **kw)
        return _rel(res.y[-1].full(), ref), res

    e_big, _ = err(0.05, atol=3e-4)
    e_small, _ = err(0.005, atol=3e-4)
    assert e_small > 3 * e_big  # the theta/h term of the error bound (2.8e-3 -> 1.2e-2)
    u_big, res = err(0.05, atol=1e-3, tol_per_unit_time=True)
    u_small, _ = err(0.005, atol=1e-3, tol_per_unit_time=True)
    assert u_small < u_big / 3 and u_small < e_small / 10  # 1.9e-3 -> 2.5e-4
    # each step used theta_k = tol * h_k
    assert all(info.truncation.tolerance == pytest.approx(1e-3 * info.h) for info in res.infos)


# --------------------------------------------------------------------------- operators


def test_linear_operator_equals_dense_and_has_compact_blocks():
    rng = np.random.default_rng(7)
    shape, r = (5, 6, 7), (2, 3, 2)
    a = [rng.standard_normal((n, n)) for n in shape]
    v = rng.standard_normal((5, 5))
    src = TuckerTensor(rng.standard_normal((1, 2, 1)),
                       [rng.standard_normal((n, q)) for n, q in zip(shape, (1, 2, 1),
                                                                    strict=True)])
    op = LinearOperator([(1.0, {0: a[0]}), (2.0, {1: a[1]}), (-1j, {2: a[2]}),
                         (0.5, {0: v, 2: a[2]}), (3.0, {})],
                        sources=[(np.cos, src)], shape=shape)
    y = TuckerTensor(rng.standard_normal(r), [_orth(rng, n, q) for n, q in zip(shape, r,
                                                                               strict=True)])
    yd = y.full()
    # dense reference written out independently
    ref = (_mode(yd, a[0], 0) + 2 * _mode(yd, a[1], 1) - 1j * _mode(yd, a[2], 2)
           + 0.5 * _mode(_mode(yd, v, 0), a[2], 2) + 3 * yd + np.cos(0.3) * src.full())
    zt = op(0.3, y)
    assert isinstance(zt, TuckerTensor)
    # blocks: mode 0 has [U, A0 U, V U] + source, mode 1 [U, A1 U] + source, mode 2 [U, A2 U]
    assert zt.rank == (3 * 2 + 1, 2 * 3 + 2, 2 * 2 + 1)
    assert _rel(zt.full(), ref) < 1e-14
    assert _rel(op(0.3, yd), ref) < 1e-14
    assert not op.linear
    # the Kronecker sum: rank 2r per mode, d nonzero blocks; matches the dense matrix
    ks = kronecker_sum([m for m in a], coef=-1j)
    z = ks(0.0, y)
    assert z.rank == tuple(2 * q for q in r) and ks.linear
    mat = ks.dense_matrix()
    assert _rel(z.full().ravel(), mat @ yd.ravel()) < 1e-14
    with pytest.raises(ValueError, match="square"):
        LinearOperator([(1.0, {0: np.ones((2, 3))})])
    with pytest.raises(ValueError, match="shape"):
        ks(0.0, np.zeros((5, 6, 8)))


def test_linear_operator_drives_structured_integration_like_dense():
    rng = np.random.default_rng(8)
    n, r = 10, 3
    mats = [_skew(rng, n) for _ in range(3)]
    op = kronecker_sum(mats)
    y0 = TuckerTensor(rng.standard_normal((r,) * 3), [_orth(rng, n, r) for _ in range(3)],
                      orthonormal=True)
    a = integrate(op, y0, (0, 0.3), 0.1, method="ra_bug", rtol=1e-10, structured=True)
    b = integrate(op, y0, (0, 0.3), 0.1, method="ra_bug", rtol=1e-10)  # dense path
    assert _rel(a.y[-1].full(), b.y[-1].full()) < 1e-10
    torch = pytest.importorskip("torch")
    yt = TuckerTensor(torch.tensor(y0.core), [torch.tensor(u) for u in y0.factors])
    c = integrate(op, yt, (0, 0.3), 0.1, method="ra_bug", rtol=1e-10, structured=True)
    assert _rel(c.y[-1].full().numpy(), a.y[-1].full()) < 1e-10


# --------------------------------------------------------------------------- substeps


def test_krylov_substep_against_expm():
    rng = np.random.default_rng(9)
    a = _skew(rng, 60, 3.0) - 0.3 * np.eye(60)
    y0 = rng.standard_normal((60, 4)) + 1j * rng.standard_normal((60, 4))
    for h in (1e-3, 0.4, 3.0):
        out = krylov_substep(lambda t, y: a @ y, 0.0, y0, h)
        assert _rel(out, sla.expm(h * a) @ y0) < 1e-12, h
    # tuple state (real), invariant subspace (happy breakdown): exact
    b = np.diag(np.arange(1.0, 4.0))
    st = (np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0]))
    out = krylov_substep(lambda t, s: (b @ s[0], b @ s[1]), 0.0, st, 0.5)
    assert np.allclose(out[0], [np.exp(0.5), 0, 0], atol=1e-14)
    assert np.allclose(out[1], [0, 2 * np.exp(1.0), 0], atol=1e-14)
    # inside the integrators: same result as the Taylor "exact" substep, fewer F calls
    _, y, F, _ = _kron_problem(n=10, seed=2, scale=3.0)
    e = integrate(F, y, (0, 0.3), 0.1, method="bug", substep="exact")
    k = integrate(F, y, (0, 0.3), 0.1, method="bug", substep="krylov")
    assert _rel(k.y[-1].full(), e.y[-1].full()) < 1e-11 and k.nfev < e.nfev
    with pytest.raises(ValueError, match="krylov"):
        integrate(F, y, (0, 0.3), 0.1, method="direct", substep="krylov")


def test_hosvd_helper_still_importable():  # the core API used by the docs examples
    x = np.random.default_rng(0).standard_normal((4, 4, 4))
    assert hosvd(x, rank=2).rank == (2, 2, 2)


# --------------------------------------------------------------------------- parallel BUG


def test_parallel_bug_fixed_rank_is_first_order_within_the_published_bound():
    """Truncated to a fixed rank, the parallel BUG drops the blocks new in two or more modes
    (an O(h^2) local error): its global error is best + O(h), the first-order robust bound
    c0 delta + c1 eps + c2 h of Ceruti, Kusch & Lubich (SISC 2024), so its ratio to the best
    rank-r error tends to 1 as h -> 0 (while at a fixed moderate h it can be many times the
    best error when that is small).  Its norm is not conserved: the added blocks grow it by
    O(h) on a norm-conserving problem."""
    from tucker_dlra.problems import tucker_tiny_singular_values

    p = tucker_tiny_singular_values(rank=6)
    ref, best = p.solution(1.0), p.best_error(1.0)
    excess, ratio = [], []
    hs = (0.1, 0.05, 0.025)
    for h in hs:
        y = integrate(p.F, p.y0, (0, 1), h, method="parallel_bug", rank=6).y[-1]
        err = float(np.linalg.norm(y.full() - ref))
        excess.append(err - best)
        ratio.append(err / best)
    assert all(e > 0 for e in excess)
    assert all(e / h < 1.5 for e, h in zip(excess, hs, strict=True)), excess  # best + c2 h
    assert all(0.3 < b / a < 0.7 for a, b in zip(excess[:-1], excess[1:], strict=True)), excess
    assert ratio[0] > 4 and ratio[-1] < 2.5, ratio
    # norm drift on the norm-conserving Schroedinger equation: O(h), not conserved
    q = schrodinger(n=30, rank=4)
    drift = []
    for h in (0.1, 0.05):
        y = integrate(q.F_tucker, q.y0, (0, 0.5), h, method="parallel_bug", rank=4,
                      structured=True).y[-1]
        drift.append(float(y.norm()) - 1.0)
    assert drift[0] > drift[1] > 0 and 0.3 < drift[1] / drift[0] < 0.7, drift
    # with a tolerance (rejection on) it is as accurate as the rank-adaptive BUG
    e_par = integrate(q.F_tucker, q.y0, (0, 0.5), 0.05, method="parallel_bug", atol=1e-6,
                      structured=True)
    e_ra = integrate(q.F_tucker, q.y0, (0, 0.5), 0.05, method="ra_bug", atol=1e-6,
                     structured=True)
    sol = q.solution(0.5)
    assert _rel(e_par.y[-1].full(), sol) < 2 * _rel(e_ra.y[-1].full(), sol)


def test_documented_solve_ivp_substep_recipe():
    """The recipe shown in the integration guide (docs/examples/solve_ivp_substep.py)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "examples" / "solve_ivp_substep.py"
    spec = importlib.util.spec_from_file_location("_solve_ivp_recipe", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sub = mod.solve_ivp_substep()
    # linear F: the same as the exponential substep
    _, y0, F, _ = _kron_problem(n=6, seed=11)
    a = integrate(F, y0, (0, 0.2), 0.1, method="bug", substep=sub)
    b = integrate(F, y0, (0, 0.2), 0.1, method="bug", substep="krylov")
    assert _rel(a.y[-1].full(), b.y[-1].full()) < 1e-8
    # nonlinear F, complex state, and the tuple state of 'direct'
    q = schrodinger(n=12, rank=3)

    def G(t, y):
        return q.F(t, y) - 0.5j * np.abs(y) ** 2 * y

    c = integrate(G, q.y0, (0, 0.2), 0.1, method="ra_bug", rank=3, substep=sub)
    d = integrate(G, q.y0, (0, 0.2), 0.1, method="ra_bug", rank=3, substep="rk4", substeps=40)
    assert _rel(c.y[-1].full(), d.y[-1].full()) < 1e-8
    e = integrate(G, q.y0, (0, 0.2), 0.1, method="direct", substep=sub)
    assert _rel(e.y[-1].full(), c.y[-1].full()) < 0.05


def test_structured_integrate_with_checks_never_forms_a_dense_tensor(monkeypatch):
    """The blow-up probe and the result bookkeeping keep the structured path dense-free."""
    rng = np.random.default_rng(12)
    op = kronecker_sum([_skew(rng, 30) for _ in range(3)], coef=1.0)
    y0 = TuckerTensor(rng.standard_normal((3, 3, 3)), [_orth(rng, 30, 3) for _ in range(3)],
                      orthonormal=True)

    def no_full(self):
        raise AssertionError("a dense tensor was formed")

    monkeypatch.setattr(TuckerTensor, "full", no_full)
    res = integrate(op, y0, (0, 0.2), 0.05, method="ra_bug", rtol=1e-8, structured=True,
                    t_eval=[0.07, 0.2], substep="krylov")
    assert res.success and res.t == [0.07, 0.2]
