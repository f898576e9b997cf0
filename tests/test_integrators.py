"""Tests of the DLRA integrators: exactness, invariants, rank adaptivity, inputs.

Reference values are dense computations (scipy ``expm``), the algorithms as published
(Ceruti & Lubich, BIT 62, 2022; Ceruti, Kusch & Lubich, BIT 62, 2022) and the paper's
Algorithm 1, and invariants (orthonormal factors, truncation
bounds, rank bounds).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg as sla
from hypothesis import given, settings
from hypothesis import strategies as st

from tucker_dlra import (
    IntegrationError,
    TuckerTensor,
    bug,
    direct,
    hosvd,
    integrate,
    midpoint_bug,
    pad_core,
    parallel_bug,
    ra_bug,
)
from tucker_dlra.integrators import METHODS, exact_substep, rk4_substep

# --------------------------------------------------------------------------- helpers


def gauss_substep(f, t0, y0, h, m=8):
    """Gauss-Legendre quadrature of y' = f(t) (exact substeps in data mode F = dA/dt)."""
    x, w = np.polynomial.legendre.leggauss(m)
    out = y0
    for xi, wi in zip(x, w, strict=True):
        out = out + (h / 2 * wi) * f(t0 + h / 2 * (xi + 1), y0)
    return out


class Trajectory:
    """A(t) = C(t) x_i exp(t W_i) U_i (W_i skew/anti-Hermitian), exactly of rank r; F = dA/dt."""

    def __init__(self, n, r, seed=0, dtype=np.float64):
        rng = np.random.default_rng(seed)
        cplx = np.dtype(dtype).kind == "c"

        def rnd(*shape):
            x = rng.standard_normal(shape)
            return x + 1j * rng.standard_normal(shape) if cplx else x

        self.us = [np.linalg.qr(rnd(ni, ri))[0] for ni, ri in zip(n, r, strict=True)]
        self.ws = []
        for ni in n:
            a = rnd(ni, ni)
            self.ws.append((a - a.conj().T) / 2)
        self.c0 = rnd(*r)
        self.c1 = 0.5 * rnd(*r)
        self.dtype = dtype

    def core(self, t):
        return self.c0 * math.exp(-t) + self.c1 * math.sin(t)

    def dcore(self, t):
        return -self.c0 * math.exp(-t) + self.c1 * math.cos(t)

    def dense(self, t):
        e = [sla.expm(t * w) @ u for w, u in zip(self.ws, self.us, strict=True)]
        return TuckerTensor(self.core(t).astype(self.dtype),
                            [x.astype(self.dtype) for x in e]).full()

    def dot(self, t):
        e = [sla.expm(t * w) @ u for w, u in zip(self.ws, self.us, strict=True)]
        out = TuckerTensor(self.dcore(t), e).full()
        for i in range(len(e)):
            f = list(e)
            f[i] = self.ws[i] @ e[i]
            out = out + TuckerTensor(self.core(t), f).full()
        return out.astype(self.dtype)

    def F(self, backend):
        def f(t, y):
            assert tuple(y.shape) == self.dense(0.0).shape
            return backend.asarray(self.dot(t))
        return f

    def y0(self, backend, rank=None):
        a = backend.asarray(self.dense(0.0))
        return hosvd(a, rank=rank if rank is not None else self.c0.shape)


class _NumpyBackend:
    def to_numpy(self, x):
        return np.asarray(x)


_NP = _NumpyBackend()


class _NumpyAsarray(_NumpyBackend):
    def asarray(self, x):
        return np.asarray(x)


def rel_err(backend, y, a):
    return float(np.linalg.norm(backend.to_numpy(y.full()) - a) / np.linalg.norm(a))


def orth_dev(backend, y):
    out = 0.0
    for u in y.factors:
        u = backend.to_numpy(u)
        out = max(out, float(np.linalg.norm(u.conj().T @ u - np.eye(u.shape[1]))))
    return out


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("method", ["bug", "ra_bug", "projector_splitting"])
def test_exact_low_rank_trajectory(backend, method):
    """Exactness (Ceruti & Lubich, BIT 62, 2022): BUG, augmented BUG (truncated to r) and projector
    splitting
    reproduce an exactly rank-r trajectory with F = dA/dt and exact substeps."""
    tr = Trajectory((8, 9, 10), (3, 4, 2), seed=1)
    res = integrate(tr.F(backend), tr.y0(backend), (0.0, 1.0), 0.125, method=method,
                    substep=gauss_substep, rank=tr.y0(backend).rank)
    assert res.nsteps == 8 and res.t[-1] == 1.0
    assert rel_err(backend, res.y[-1], tr.dense(1.0)) < 1e-12
    assert all(rk == (3, 4, 2) for rk in res.ranks)
    assert max(orth_dev(backend, y) for y in res.y) < 1e-12


@pytest.mark.parametrize("method", ["bug", "ra_bug"])
def test_exact_low_rank_trajectory_complex(method):
    from conftest import Backend

    be = Backend("numpy")
    tr = Trajectory((6, 7, 5), (2, 3, 2), seed=2, dtype=np.complex128)
    res = integrate(tr.F(be), tr.y0(be), (0.0, 0.5), 0.1, method=method,
                    substep=gauss_substep, rank=tr.y0(be).rank)
    assert res.y[-1].dtype == np.complex128
    assert rel_err(be, res.y[-1], tr.dense(0.5)) < 1e-12
    assert max(orth_dev(be, y) for y in res.y) < 1e-12


def test_ra_bug_with_tolerance_exact_and_invariants(backend):
    """Every step: orthonormal factors, error bound <= tolerance, ranks in [min, max]."""
    tr = Trajectory((8, 9, 10), (3, 4, 2), seed=3)
    rtol = 1e-9
    seen = []

    def cb(t, y):
        seen.append(y)

    res = integrate(tr.F(backend), tr.y0(backend), (0.0, 0.5), 0.1, method="ra_bug",
                    rtol=rtol, max_rank=(5, 5, 5), min_rank=2, substep=gauss_substep,
                    callback=cb)
    assert len(seen) == res.nsteps == 5
    assert rel_err(backend, res.y[-1], tr.dense(0.5)) < 1e-10
    for info, y in zip(res.infos, res.y[1:], strict=True):
        tinfo = info.truncation
        assert tinfo.error_bound <= rtol * tinfo.norm * (1 + 1e-12)
        assert info.error_bound == tinfo.error_bound
        assert all(2 <= ri <= 5 for ri in y.rank)
        assert orth_dev(backend, y) < 1e-12
    assert res.ranks[-1] == (3, 4, 2)
    assert res.truncation_errors == [i.truncation.error_bound for i in res.infos]


def test_rule_per_mode_and_midpoint_tolerance():
    """rule="per_mode": every mode's tail <= tol (total <= sqrt(d) tol); "split" discards
    less.  midpoint_bug with a tolerance obeys the same bounds."""
    rng = np.random.default_rng(22)
    y0 = hosvd(rng.standard_normal((6, 7, 8)), rank=3)
    z = rng.standard_normal((6, 7, 8))
    F = lambda t, y: z - y  # noqa: E731
    tol = 0.05
    y_pm, i_pm = ra_bug(F, 0.0, y0, 0.2, atol=tol, rule="per_mode")
    y_sp, i_sp = ra_bug(F, 0.0, y0, 0.2, atol=tol, rule="split")
    assert all(t <= tol for t in i_pm.truncation.tails)
    assert i_pm.truncation.error_bound <= math.sqrt(3) * tol
    assert i_sp.truncation.error_bound <= tol
    assert all(a <= b for a, b in zip(y_pm.rank, y_sp.rank, strict=True))
    y_m, i_m = midpoint_bug(F, 0.0, y0, 0.2, atol=tol)
    assert i_m.truncation.error_bound <= tol
    y_c, i_c = midpoint_bug(F, 0.0, y0, 0.2, atol=tol, max_rank=2)  # the cap wins over tol
    assert y_c.rank == (2, 2, 2) and i_c.truncation.error_bound > tol
    assert orth_dev(_NP, y_m) < 1e-12


def test_parallel_bug_rejection_exact(backend):
    """With a tolerance and the rejection test, the parallel BUG is exact on rank-r data."""
    tr = Trajectory((8, 9, 10), (3, 4, 2), seed=4)
    res = integrate(tr.F(backend), tr.y0(backend), (0.0, 0.5), 0.1, method="parallel_bug",
                    atol=1e-8, substep=gauss_substep)
    assert rel_err(backend, res.y[-1], tr.dense(0.5)) < 1e-12
    assert res.ranks[-1] == (3, 4, 2)
    assert res.rejected >= 1  # the assembled core keeps all 2r columns: first attempt rejected
    for info in res.infos:
        assert info.truncation.error_bound <= 1e-8


def test_parallel_and_midpoint_converge():
    """Fixed-rank parallel BUG (first order at least) and midpoint BUG (second order)
    approach the exact trajectory as h -> 0."""
    from conftest import Backend

    be = Backend("numpy")
    tr = Trajectory((8, 9, 10), (3, 4, 2), seed=5)
    a1 = tr.dense(0.5)
    for method, order in (("parallel_bug", 0.9), ("midpoint_bug", 1.8)):
        errs = [rel_err(be, integrate(tr.F(be), tr.y0(be), (0.0, 0.5), h, method=method,
                                      substep=gauss_substep, rank=tr.y0(be).rank).y[-1], a1)
                for h in (0.1, 0.05, 0.025)]
        slopes = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
        assert np.all(slopes > order), (method, errs)
        assert errs[-1] < 1e-2


def test_rk4_substeps_fourth_order_in_data_mode(backend):
    """With F = dA/dt on an exactly rank-r trajectory, the only error of the exact
    integrators is the substep quadrature: rk4 (Simpson) gives global order 4."""
    tr = Trajectory((8, 9, 10), (3, 4, 2), seed=6)
    for method in ("projector_splitting", "bug"):
        errs = [rel_err(backend, integrate(tr.F(backend), tr.y0(backend), (0.0, 0.2), h,
                                           method=method, substep="rk4").y[-1], tr.dense(0.2))
                for h in (0.04, 0.02)]
        assert 3.5 < math.log2(errs[0] / errs[1]) < 4.5, (method, errs)


# --------------------------------------------------------------------------- rank adaptivity


def test_ra_bug_overestimated_rank_settles():
    from conftest import Backend

    be = Backend("numpy")
    tr = Trajectory((8, 9, 10), (3, 4, 2), seed=7)
    y0 = tr.y0(be, rank=(6, 7, 5))  # exact rank (3, 4, 2): zero singular values padded in
    res = integrate(tr.F(be), y0, (0.0, 0.3), 0.1, method="ra_bug", rtol=1e-10,
                    substep=gauss_substep)
    assert y0.rank == (6, 7, 5)
    assert res.ranks[1:] == [(3, 4, 2)] * 3
    assert rel_err(be, res.y[-1], tr.dense(0.3)) < 1e-10


def test_ra_bug_grows_rank_from_one(backend):
    """Gradient flow F(Y) = B - Y (L = ||Y - B||^2 / 2, B of rank (3, 3, 3)) from the
    rank-1 truncation Y0 of B: the exact solution (1 - e^-t) B + e^-t Y0 has rank (3, 3, 3)
    for t > 0; ra_bug starting at rank 1 grows to exactly that rank and follows it."""
    rng = np.random.default_rng(8)
    b = hosvd(rng.standard_normal((8, 9, 10)), rank=3).full()
    bb = backend.asarray(b)
    y0 = hosvd(bb, rank=1)
    y0n = backend.to_numpy(y0.full())
    res = integrate(lambda t, y: bb - y, y0, (0.0, 2.0), 0.05, method="ra_bug", rtol=1e-8,
                    substep="rk4")
    assert res.ranks[0] == (1, 1, 1)
    assert res.ranks[-1] == (3, 3, 3)
    assert all(max(r) <= 3 for r in res.ranks)
    assert all(a <= b_ for r0, r1 in zip(res.ranks, res.ranks[1:], strict=False)
               for a, b_ in zip(r0, r1, strict=True))
    exact = (1 - math.exp(-2.0)) * b + math.exp(-2.0) * y0n
    # first-order error from the first steps, while the rank is still too small
    assert rel_err(backend, res.y[-1], exact) < 1e-2


def test_truncation_clamp_product_of_ranks():
    """r_i <= prod_{j != i} r_j after truncation (a Tucker rank cap: each unfolding's rank is
    bounded by the
    product of the other ranks)."""
    from conftest import Backend

    be = Backend("numpy")
    tr = Trajectory((8, 9, 10), (3, 4, 2), seed=9)
    y1, info = ra_bug(tr.F(be), 0.0, tr.y0(be), 0.1, atol=1e-12, max_rank=(4, 1, 4),
                      substep=gauss_substep)
    r = y1.rank
    assert r[1] == 1
    for i in range(3):
        assert r[i] <= math.prod(r[:i] + r[i + 1:])
    assert info.truncation.rank == r


# --------------------------------------------------------------------------- formulas


def _proj(q):
    return q @ q.conj().T


@settings(max_examples=15)
@given(d=st.integers(2, 4), data=st.data(), seed=st.integers(0, 2**16),
       cplx=st.booleans())
def test_ra_bug_euler_step_matches_algorithm_1(d, data, seed, cplx):
    """One Euler (SGD) step of Algorithm 1 equals the dense formula
    Y1 = P_hat (Y0 + h F(Y0)), P_hat = x_i U^_i U^_i^H,
    U^_i = orth[U_i | Mat_i(F(Y0)) V_i] -- and costs one evaluation of F
    (random orders, shapes, ranks, real and complex)."""
    n = [data.draw(st.integers(2, 7)) for _ in range(d)]
    r = [data.draw(st.integers(1, ni)) for ni in n]
    for i in range(d):  # a point of M_r: r_i <= prod_{j != i} r_j
        r[i] = min(r[i], math.prod(r[:i] + r[i + 1:]))
    rng = np.random.default_rng(seed)
    dt = np.complex128 if cplx else np.float64

    def rnd(shape):
        x = rng.standard_normal(shape)
        return (x + 1j * rng.standard_normal(shape) if cplx else x).astype(dt)

    y0 = TuckerTensor(rnd(r), [np.linalg.qr(rnd((ni, ri)))[0] for ni, ri in zip(n, r,
                                                                              strict=True)],
                      orthonormal=True)
    z = rnd(n)
    h = 0.1
    y1, info = ra_bug(lambda t, y: z, 0.0, y0, h, substep="euler", atol=0.0)
    assert info.nfev == 1
    expected = y0.full() + h * z
    for i in range(d):
        u = y0.factors[i]
        others = [y0.factors[j] for j in range(d) if j != i]
        kron = others[0]
        for o in others[1:]:
            kron = np.kron(kron, o)
        q, _ = np.linalg.qr(np.moveaxis(y0.core, i, 0).reshape(r[i], -1).conj().T)
        kdir = np.moveaxis(z, i, 0).reshape(n[i], -1) @ kron.conj() @ q
        uhat = np.linalg.qr(np.concatenate([u, kdir], axis=1))[0]
        expected = np.moveaxis(np.tensordot(_proj(uhat), expected, axes=([1], [i])), 0, i)
    assert np.linalg.norm(y1.full() - expected) < 1e-12 * max(np.linalg.norm(expected), 1)
    assert orth_dev(_NP, y1) < 1e-12
    for i, ri in enumerate(y1.rank):
        assert ri <= min(n[i], 2 * r[i]) and ri <= math.prod(y1.rank[:i] + y1.rank[i + 1:])


@settings(max_examples=10)
@given(d=st.integers(2, 4), data=st.data(), seed=st.integers(0, 2**16))
def test_bug_exact_random_shapes(d, data, seed):
    """Exactness of bug and ra_bug (data mode, exact substeps) for random shapes/ranks."""
    n = [data.draw(st.integers(3, 7)) for _ in range(d)]
    r = [data.draw(st.integers(1, ni - 1)) for ni in n]
    for i in range(d):
        r[i] = min(r[i], math.prod(r[:i] + r[i + 1:]))
    tr = Trajectory(tuple(n), tuple(r), seed=seed)
    be = _NP
    a1 = tr.dense(0.3)
    for step in (bug, ra_bug):
        y = tr.y0(_NumpyAsarray())
        for k in range(3):
            y, _ = step(tr.F(_NumpyAsarray()), 0.1 * k, y, 0.1, substep=gauss_substep)
        assert rel_err(be, y, a1) < 1e-11


def test_bug_euler_step_formula():
    """Fixed-rank BUG step with Euler substeps: U^1_i = orth(K_i(t1)), C-step from
    C0 x_i M_i (Ceruti & Lubich, BIT 62, 2022, Tucker form); F evaluated at Y0 (shared by the
    K-steps) and once more."""
    rng = np.random.default_rng(11)
    n, r = (5, 6, 7), (2, 2, 3)
    y0 = hosvd(rng.standard_normal(n), rank=r)
    a = rng.standard_normal(n)
    F = lambda t, y: a - y  # noqa: E731
    h = 0.05
    y1, info = bug(F, 0.0, y0, h, substep="euler")
    assert info.nfev == 2
    y0d = y0.full()
    z0 = F(0.0, y0d)
    us = []
    for i in range(3):
        others = [y0.factors[j] for j in range(3) if j != i]
        v = np.kron(others[0], others[1])
        q, st = np.linalg.qr(np.moveaxis(y0.core, i, 0).reshape(r[i], -1).T)
        k1 = y0.factors[i] @ st.T + h * np.moveaxis(z0, i, 0).reshape(n[i], -1) @ v @ q
        us.append(np.linalg.qr(k1)[0])
    c0 = np.einsum("abc,ia,jb,kc->ijk", y0.core, *[u.T @ u0 for u, u0 in
                                                   zip(us, y0.factors, strict=True)])
    ystart = np.einsum("abc,ia,jb,kc->ijk", c0, *us)
    c1 = c0 + h * np.einsum("abc,ai,bj,ck->ijk", F(0.0, ystart), *us)
    expected = np.einsum("abc,ia,jb,kc->ijk", c1, *us)
    assert np.linalg.norm(y1.full() - expected) < 1e-12 * np.linalg.norm(expected)


def test_parallel_bug_euler_one_evaluation():
    rng = np.random.default_rng(12)
    y0 = hosvd(rng.standard_normal((5, 6, 7)), rank=2)
    z = rng.standard_normal((5, 6, 7))
    _, info = parallel_bug(lambda t, y: z, 0.0, y0, 0.1, substep="euler", rtol=1e-3)
    assert info.nfev == 1
    _, info = parallel_bug(lambda t, y: z, 0.0, y0, 0.1, substep="euler")
    assert info.nfev == 1 and info.rejected == 0


def test_substep_solvers_against_expm():
    """'exact' is exp(hL) y0 to working precision; rk4 has local error O(h^5)."""
    rng = np.random.default_rng(13)
    L = rng.standard_normal((6, 6))
    y0 = rng.standard_normal((6, 2))
    f = lambda t, y: L @ y  # noqa: E731
    for h in (0.1, 1.0, 3.0):
        ref = sla.expm(h * L) @ y0
        assert np.linalg.norm(exact_substep(f, 0.0, y0, h) - ref) < 1e-12 * np.linalg.norm(ref)
    # stiff: discrete Laplacian (norm ~ 4e3) on a smooth start, h * norm up to 200
    m = 30
    lap = (np.diag(-2.0 * np.ones(m)) + np.diag(np.ones(m - 1), 1)
           + np.diag(np.ones(m - 1), -1)) * (m + 1) ** 2
    x = np.arange(1, m + 1) / (m + 1)
    ys = np.stack([np.sin(np.pi * x), np.sin(2 * np.pi * x)], axis=1)
    for h in (0.01, 0.05):
        ref = sla.expm(h * lap) @ ys
        got = exact_substep(lambda t, y: lap @ y, 0.0, ys, h)
        assert np.linalg.norm(got - ref) < 1e-12 * np.linalg.norm(ref)
    e1 = np.linalg.norm(rk4_substep(f, 0.0, y0, 0.02) - sla.expm(0.02 * L) @ y0)
    e2 = np.linalg.norm(rk4_substep(f, 0.0, y0, 0.01) - sla.expm(0.01 * L) @ y0)
    assert 4.5 < math.log2(e1 / e2) < 5.5


def _tucker_sum_operator(mats):
    """Structured F(Y) = sum_i Y x_i A_i as a TuckerTensor of rank 2r, never dense:
    factors [U_j, A_j U_j], core C in the blocks that are "new" in exactly one mode."""

    def F(t, y):
        if not isinstance(y, TuckerTensor):
            raise AssertionError(f"dense input {type(y).__name__} given to a structured F")
        xp = y.xp
        r = y.rank
        d = y.ndim
        core = None
        for i in range(d):
            block = pad_core(y.core, [(ri, 0) if j == i else (0, ri) for j, ri in enumerate(r)])
            core = block if core is None else core + block
        factors = [xp.concat([u, a @ u], axis=1) for u, a in zip(y.factors, mats, strict=True)]
        return TuckerTensor(core, factors)

    return F


def test_exact_substep_schrodinger_norm_conservation():
    """Complex linear F = -i sum_i Y x_i H_i (H_i Hermitian): with 'exact' substeps the
    augmented Galerkin step is unitary, so |‖Y_n‖ - ‖Y_0‖| <= sum of truncation bounds
    (rank-adaptive BUG norm property, Ceruti, Kusch & Lubich, BIT 62, 2022)."""
    rng = np.random.default_rng(14)
    n = (8, 8, 8)
    hs = []
    for ni in n:
        a = rng.standard_normal((ni, ni)) + 1j * rng.standard_normal((ni, ni))
        hs.append(-1j * (a + a.conj().T) / 4)
    F_struct = _tucker_sum_operator(hs)
    y0 = hosvd(rng.standard_normal(n) + 1j * rng.standard_normal(n), rank=2)
    res = integrate(F_struct, y0, (0.0, 0.3), 0.1, method="ra_bug", atol=1e-8,
                    substep="exact", structured=True)
    drift = abs(float(res.y[-1].norm()) - float(y0.norm()))
    assert drift <= sum(res.truncation_errors) + 1e-12
    # same step, dense F: the structured and dense paths agree
    dense_F = lambda t, y: sum(  # noqa: E731
        np.moveaxis(np.tensordot(a, y, axes=([1], [i])), 0, i) for i, a in enumerate(hs))
    y1s, _ = ra_bug(F_struct, 0.0, y0, 0.1, atol=1e-8, substep="exact", structured=True)
    y1d, _ = ra_bug(dense_F, 0.0, y0, 0.1, atol=1e-8, substep="exact")
    assert np.linalg.norm(y1s.full() - y1d.full()) < 1e-12
    # 'exact' solves the same substep ODEs as many small rk4 steps
    y1r, _ = ra_bug(dense_F, 0.0, y0, 0.1, atol=1e-8, substep="rk4", substeps=20)
    assert np.linalg.norm(y1d.full() - y1r.full()) < 3e-8  # two truncations of 1e-8


# --------------------------------------------------------------------------- structure


def test_structured_step_never_dense(monkeypatch, backend):
    """A ra_bug step on a 64^4 problem at rank 8 with a TuckerTensor-only operator
    never forms a dense 64^4 array: full() is disabled, F refuses dense input and (NumPy)
    the peak traced memory stays far below one dense tensor (128 MiB)."""
    import tracemalloc

    rng = np.random.default_rng(15)
    n, r = 64, 8
    mats = []
    for _ in range(4):
        a = rng.standard_normal((n, n)) / n
        mats.append(a - a.T)
    F = _tucker_sum_operator([backend.asarray(a) for a in mats])
    core = rng.standard_normal((r,) * 4)
    factors = [np.linalg.qr(rng.standard_normal((n, r)))[0] for _ in range(4)]
    y0 = TuckerTensor(backend.asarray(core), [backend.asarray(u) for u in factors],
                      orthonormal=True)

    def no_full(self):
        raise AssertionError("a dense tensor was formed")

    monkeypatch.setattr(TuckerTensor, "full", no_full)
    tracemalloc.start()
    y1, info = ra_bug(F, 0.0, y0, 0.01, rtol=1e-8, structured=True, substep="rk4")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if backend.name == "numpy":
        assert peak < 64 * 2**20  # one dense 64^4 float64 array alone is 128 MiB
    assert info.augmented_rank == (16, 16, 16, 16)
    assert all(ri <= 16 for ri in y1.rank)
    assert orth_dev(backend, y1) < 1e-12
    # the step is accurate: the exact solution Y0 x_i exp(h A_i) has rank 8; compared
    # through Tucker arithmetic (still no dense tensor)
    ref_fs = [backend.asarray(sla.expm(0.01 * a) @ u) for a, u in zip(mats, factors,
                                                                       strict=True)]
    ref = TuckerTensor(y0.core, ref_fs)
    diff = y1 - ref
    # error = what the truncation discarded (its bound) + the step's integration error
    # (measured 6.9e-10 relative; the QR-based norm of the difference resolves it)
    assert float(diff.norm()) <= info.error_bound + 5e-9 * float(ref.norm())
    assert info.error_bound <= 1e-8 * float(ref.norm())

    def bad(t, y):
        out = F(t, y)
        return TuckerTensor(out.core * float("nan"), out.factors)

    with pytest.raises(IntegrationError, match=r"non-finite.*step 4 \(t = 0\)"):
        ra_bug(bad, 0.0, y0, 0.01, structured=True, step_index=4)


def test_structured_matches_dense_all_methods():
    rng = np.random.default_rng(16)
    n = (6, 7, 5)
    mats = [rng.standard_normal((ni, ni)) / 4 for ni in n]
    Fs = _tucker_sum_operator(mats)
    Fd = lambda t, y: sum(  # noqa: E731
        np.moveaxis(np.tensordot(a, y, axes=([1], [i])), 0, i) for i, a in enumerate(mats))
    y0 = hosvd(rng.standard_normal(n), rank=2)
    for method in METHODS:
        kw = {"rtol": 1e-6} if method in ("ra_bug", "parallel_bug", "midpoint_bug") else {}
        a = integrate(Fs, y0, (0, 0.2), 0.1, method=method, structured=True, **kw)
        b = integrate(Fd, y0, (0, 0.2), 0.1, method=method, **kw)
        assert np.linalg.norm(a.y[-1].full() - b.y[-1].full()) < 1e-12, method
        assert a.nfev == b.nfev


# --------------------------------------------------------------------------- convergence


def test_orders_on_linear_problem_with_tiny_singular_values():
    """Linear F(Y) = Y + sum_i Y x_i W_i (Tucker tiny-singular-value problem) from Y0 with
    superdiagonal core
    (1, 1e-4, 1e-8): the exact solution e^t Y0 x_i exp(t W_i) stays of rank 3, but the
    Galerkin steps are not exact for a linear F.  With exact substeps the fixed-rank BUG
    converges with order 1 and the midpoint BUG with order 2, undisturbed by
    sigma_min = 1e-8, while the direct integration of (8) blows up (pseudoinverse)."""
    rng = np.random.default_rng(17)
    n, d, r = 24, 3, 3
    core = np.zeros((r,) * d)
    for j in range(r):
        core[j, j, j] = 1e-4 ** j
    ws = []
    for _ in range(d):
        a = rng.standard_normal((n, n))
        ws.append((a - a.T) / 2)

    def F(t, y):
        out = y
        for i, w in enumerate(ws):
            out = out + np.moveaxis(np.tensordot(w, y, axes=([1], [i])), 0, i)
        return out

    y0 = TuckerTensor(core, [np.eye(n)[:, :r] for _ in range(d)], orthonormal=True)
    exact = math.exp(0.3) * TuckerTensor(core, [sla.expm(0.3 * w) @ u for w, u in
                                                zip(ws, y0.factors, strict=True)]).full()

    def errors(method):
        out = []
        for h in (0.06, 0.03, 0.015):
            y = integrate(F, y0, (0.0, 0.3), h, method=method, substep="exact", rank=y0.rank).y[-1]
            out.append(np.linalg.norm(y.full() - exact) / np.linalg.norm(exact))
        return np.array(out)

    e_bug, e_mid = errors("bug"), errors("midpoint_bug")
    s_bug, s_mid = np.log2(e_bug[:-1] / e_bug[1:]), np.log2(e_mid[:-1] / e_mid[1:])
    assert np.all((s_bug > 0.8) & (s_bug < 1.2)), (e_bug, s_bug)
    assert np.all((s_mid > 1.8) & (s_mid < 2.3)), (e_mid, s_mid)
    # the rank-adaptive BUG truncated to r is far more accurate on the same problem
    y = integrate(F, y0, (0.0, 0.3), 0.06, method="ra_bug", substep="exact", rank=y0.rank).y[-1]
    assert np.linalg.norm(y.full() - exact) / np.linalg.norm(exact) < e_bug[0] / 5
    with pytest.raises(IntegrationError, match=r"blow-up at step 0 .*stiff.*BUG method"), \
            np.errstate(all="ignore"):
        integrate(F, y0, (0.0, 0.3), 0.06, method="direct", substep="rk4")


# --------------------------------------------------------------------------- backends/dtypes


def test_float32_torch_or_numpy(backend):
    tr = Trajectory((8, 9, 10), (3, 4, 2), seed=18, dtype=np.float32)
    y0 = tr.y0(backend)
    for method in METHODS:
        kw = {"rtol": 1e-5} if method in ("ra_bug", "parallel_bug", "midpoint_bug") else {}
        res = integrate(tr.F(backend), y0, (0.0, 0.1), 0.05, method=method,
                        substep="rk4", **kw)
        y = res.y[-1]
        assert y.dtype == y0.dtype and type(y.core) is type(y0.core)
        assert rel_err(backend, y, tr.dense(0.1)) < 2e-2, method
        assert orth_dev(backend, y) < 1e-5


def test_array_api_strict_namespace(strict_backend):
    """Nothing backend-specific: all methods run on the array_api_strict namespace."""
    tr = Trajectory((6, 7, 5), (2, 3, 2), seed=23)
    for method in METHODS:
        kw = {"atol": 1e-9} if method in ("ra_bug", "parallel_bug", "midpoint_bug") else {}
        res = integrate(tr.F(strict_backend), tr.y0(strict_backend), (0.0, 0.1), 0.05,
                        method=method, substep="rk4", **kw)
        assert rel_err(strict_backend, res.y[-1], tr.dense(0.1)) < 1e-5, method


def test_non_orthonormal_y0_is_orthonormalized():
    tr = Trajectory((6, 7, 8), (2, 2, 2), seed=19)
    from conftest import Backend

    be = Backend("numpy")
    y0 = tr.y0(be)
    skewed = TuckerTensor(y0.core / 2.0, [u * 2.0 ** (1 / 3) for u in y0.factors])
    y1, _ = bug(tr.F(be), 0.0, skewed, 0.1, substep=gauss_substep)
    assert np.linalg.norm(y1.full() - tr.dense(0.1)) < 1e-12 * np.linalg.norm(tr.dense(0.1))


def test_direct_matches_bug_when_well_conditioned():
    """Away from small singular values the factor equations (8) and BUG agree to O(h)."""
    tr = Trajectory((6, 7, 8), (2, 2, 2), seed=20)
    from conftest import Backend

    be = Backend("numpy")
    y1, info = direct(tr.F(be), 0.0, tr.y0(be), 0.01, substep="rk4")
    assert info.nfev == 4
    assert np.linalg.norm(y1.full() - tr.dense(0.01)) < 1e-8
    with pytest.raises(ValueError, match="substep"):
        direct(tr.F(be), 0.0, tr.y0(be), 0.01, substep="exact")


# --------------------------------------------------------------------------- bad input


def _simple():
    rng = np.random.default_rng(21)
    y0 = hosvd(rng.standard_normal((4, 5, 6)), rank=2)
    return y0, (lambda t, y: -y)


@pytest.mark.parametrize("h", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_h(h):
    y0, F = _simple()
    with pytest.raises(ValueError, match="h must"):
        integrate(F, y0, (0, 1), h)
    with pytest.raises(ValueError, match="h must"):
        ra_bug(F, 0.0, y0, h)


@pytest.mark.parametrize("span", [(), (0.0,), (1.0, 1.0), (1.0, 0.0), (0, 1, 2), None])
def test_bad_t_span(span):
    y0, F = _simple()
    with pytest.raises(ValueError, match="t_span"):
        integrate(F, y0, span, 0.1)


def test_bad_method_and_substep():
    y0, F = _simple()
    with pytest.raises(ValueError, match="method"):
        integrate(F, y0, (0, 1), 0.1, method="rk45")
    with pytest.raises(ValueError, match="substep"):
        integrate(F, y0, (0, 1), 0.1, substep="rk2", rank=y0.rank)
    with pytest.raises(ValueError, match="substep"):
        bug(F, 0.0, y0, 0.1, substep=None)
    with pytest.raises(ValueError, match="substeps"):
        ra_bug(F, 0.0, y0, 0.1, substeps=0)
    with pytest.raises(ValueError, match="rtol"):
        integrate(F, y0, (0, 1), 0.1, method="bug", rtol=1e-3)
    with pytest.raises(ValueError, match="rule"):
        ra_bug(F, 0.0, y0, 0.1, rtol=1e-3, rule="bogus")
    with pytest.raises(ValueError, match="at most one"):
        ra_bug(F, 0.0, y0, 0.1, rtol=1e-3, atol=1e-3)
    with pytest.raises(TypeError, match="y0"):
        integrate(F, y0.full(), (0, 1), 0.1)


def test_bad_F_output_names_step_and_time():
    y0, _ = _simple()

    def wrong_shape(t, y):
        return y[:2]

    with pytest.raises(IntegrationError, match=r"step 0 \(t = 0\)") as ei:
        integrate(wrong_shape, y0, (0, 1), 0.1, rank=y0.rank)
    assert ei.value.step == 0 and "shape" in str(ei.value)

    def nan_later(t, y):
        return -y if t < 0.19 else np.full(y.shape, np.nan)

    for method in METHODS:
        with pytest.raises(IntegrationError, match=r"non-finite.*step 2 \(t = 0\.2") as ei:
            integrate(nan_later, y0, (0, 1), 0.1, method=method, substep="euler", rank=y0.rank)
        assert ei.value.step == 2 and abs(ei.value.t - 0.2) < 1e-12

    def complex_out(t, y):
        return y * 1j

    with pytest.raises(IntegrationError, match="complex"):
        bug(complex_out, 0.0, y0, 0.1)


def test_callback_stops_and_counters():
    y0, F = _simple()
    res = integrate(F, y0, (0, 1), 0.1, method="ra_bug", rtol=1e-6, substep="euler",
                    callback=lambda t, y: t >= 0.3 - 1e-12)
    assert res.nsteps == 3 and len(res.y) == 4 and len(res.t) == 4
    assert "callback" in res.message
    assert res.nfev == 3  # one F evaluation per Euler step of Algorithm 1
    # last step shortened to hit t_end exactly
    res = integrate(F, y0, (0, 0.25), 0.1, method="bug", substep="rk4")
    assert res.t == [0.0, 0.1, 0.2, 0.25] and res.nfev == 3 * (1 + 3 * 3 + 4)
