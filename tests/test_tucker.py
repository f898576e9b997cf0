"""TuckerTensor algebra, HOSVD and truncation against dense NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from algebra_helpers import (
    DTYPES,
    close,
    einsum_full,
    eps_of,
    random_tucker_np,
    rtol_for,
    shapes,
    tails,
    tucker_case,
    unfold_np,
    unfolding_sv,
)
from conftest import random_array, random_orthonormal
from hypothesis import given
from hypothesis import strategies as st

from tucker_dlra import (
    TuckerTensor,
    check_orthonormal,
    hosvd,
    pad_core,
    truncate,
    valid_rank,
)

seeds = st.integers(0, 2**31 - 1)


def make_tucker(backend, core, factors, orthonormal=False):
    return TuckerTensor(backend.asarray(core), [backend.asarray(u) for u in factors],
                        orthonormal=orthonormal)


def dense(backend, t):
    return backend.to_numpy(t.full())


def assert_orthonormal_np(factors, dtype):
    for u in factors:
        g = u.conj().T @ u
        assert np.linalg.norm(g - np.eye(u.shape[1])) <= 100 * eps_of(dtype) * max(u.shape)


def decaying_tensor(rng, shape, dtype, decay=0.5):
    """Random tensor with geometrically decaying multilinear spectrum (realistic rounding input)."""
    core = random_array(rng, shape, dtype)
    for i, n in enumerate(shape):
        w = decay ** np.arange(n)
        core = core * w.reshape([-1 if k == i else 1 for k in range(len(shape))])
    factors = [random_orthonormal(rng, n, n, dtype) for n in shape]
    return einsum_full(core, factors).astype(dtype)


# ---------------------------------------------------------------- TuckerTensor basics
@given(case=tucker_case(), ortho=st.booleans())
def test_full_properties_einsum(backend, case, ortho):
    shape, rank, dtype, seed = case
    rng = np.random.default_rng(seed)
    core, factors = random_tucker_np(rng, shape, rank, dtype, orthonormal=ortho)
    t = make_tucker(backend, core, factors)
    assert t.shape == shape and t.rank == rank and t.ndim == len(shape)
    assert t.dtype == backend.asarray(core).dtype
    full = t.full()
    assert full.dtype == t.dtype
    assert close(backend.to_numpy(full), einsum_full(core.astype(np.complex128), factors), dtype)


@given(case=tucker_case(), data=st.data())
def test_inner_norm_arithmetic_dense(backend, case, data):
    shape, rank, dtype, seed = case
    rng = np.random.default_rng(seed)
    rank_b = tuple(data.draw(st.integers(1, r)) for r in rank)
    ca, fa = random_tucker_np(rng, shape, rank, dtype, orthonormal=False)
    cb, fb = random_tucker_np(rng, shape, rank_b, dtype, orthonormal=True)
    a, b = make_tucker(backend, ca, fa), make_tucker(backend, cb, fb, orthonormal=True)
    da, db = einsum_full(ca, fa), einsum_full(cb, fb)
    scale = np.linalg.norm(da) * np.linalg.norm(db)
    ref = np.vdot(da, db)  # conjugates the first argument
    assert abs(complex(backend.to_numpy(a.inner(b))) - ref) <= 10 * rtol_for(dtype) * scale
    # dense other
    assert abs(complex(backend.to_numpy(a.inner(backend.asarray(db)))) - ref) <= (
        10 * rtol_for(dtype) * scale)
    # norms, with and without the orthonormal shortcut
    for t, dt in ((a, da), (b, db)):
        nd = np.linalg.norm(dt)
        assert abs(float(t.norm()) - nd) <= 10 * rtol_for(dtype) * nd
    # exact arithmetic: ranks add, values match
    s = a + b
    assert s.rank == tuple(x + y for x, y in zip(rank, rank_b, strict=True))
    assert close(dense(backend, s), da + db, dtype, scale=np.linalg.norm(da) + np.linalg.norm(db))
    assert close(dense(backend, a - b), da - db, dtype,
                 scale=np.linalg.norm(da) + np.linalg.norm(db))
    assert close(dense(backend, -b), -db, dtype)
    alpha = 2.5 if dtype != np.complex128 else 1.5 - 0.5j
    assert close(dense(backend, alpha * a), alpha * da, dtype)
    assert close(dense(backend, a * alpha), alpha * da, dtype)
    assert close(dense(backend, a / 4.0), da / 4.0, dtype)
    assert (b * 3.0).orthonormal and not s.orthonormal


@given(case=tucker_case())
def test_orthonormalize(backend, case):
    shape, rank, dtype, seed = case
    rng = np.random.default_rng(seed)
    core, factors = random_tucker_np(rng, shape, rank, dtype, orthonormal=False)
    t = make_tucker(backend, core, factors)
    o = t.orthonormalize()
    assert o.orthonormal and o.dtype == t.dtype
    assert o.rank == tuple(min(n, r) for n, r in zip(shape, rank, strict=True))
    assert_orthonormal_np([backend.to_numpy(u) for u in o.factors], dtype)
    check_orthonormal(o.factors)
    ref = einsum_full(core, factors)
    assert close(dense(backend, o), ref, dtype)
    assert abs(float(o.norm()) - np.linalg.norm(ref)) <= 10 * rtol_for(dtype) * np.linalg.norm(ref)


def test_pad_core(backend):
    c = np.arange(6.0).reshape(2, 3)
    p = backend.to_numpy(pad_core(backend.asarray(c), [(1, 0), (0, 2)]))
    ref = np.zeros((3, 5))
    ref[1:, :3] = c
    np.testing.assert_array_equal(p, ref)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_tensorly_round_trip(backend, dtype):
    import tensorly as tl  # installed by .ci/run (test extra); not a dependency of the library

    rng = np.random.default_rng(3)
    core, factors = random_tucker_np(rng, (4, 5, 6), (2, 3, 4), dtype)
    t = make_tucker(backend, core, factors, orthonormal=True)
    tl_backend = "pytorch" if backend.name == "torch" else "numpy"
    with tl.backend_context(tl_backend):
        tlt = t.to_tensorly()
        full_tl = tl.tucker_to_tensor(tlt)
        np.testing.assert_allclose(backend.to_numpy(full_tl), einsum_full(core, factors),
                                   rtol=1e-12, atol=1e-12)
        back = TuckerTensor.from_tensorly(tlt, orthonormal=True)
        assert back.rank == t.rank and back.dtype == t.dtype
        np.testing.assert_allclose(dense(backend, back), dense(backend, t), rtol=1e-12, atol=1e-12)
        # and a tensorly decomposition comes in as a TuckerTensor
        x = backend.asarray(einsum_full(core, factors))
        dec = tl.decomposition.tucker(x, rank=[2, 3, 4], init="svd", n_iter_max=0)
        ours = TuckerTensor.from_tensorly(dec)
        np.testing.assert_allclose(dense(backend, ours), einsum_full(core, factors),
                                   rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- HOSVD
@given(shape=shapes(), dtype=st.sampled_from(DTYPES), seed=seeds,
       frac=st.floats(0.0, 0.9), use_atol=st.booleans())
def test_hosvd_error_bound(backend, shape, dtype, seed, frac, use_atol):
    rng = np.random.default_rng(seed)
    x_np = decaying_tensor(rng, shape, dtype)
    nrm = np.linalg.norm(x_np)
    kw = {"atol": frac * nrm} if use_atol else {"rtol": frac}
    y, info = hosvd(backend.asarray(x_np), full_output=True, **kw)
    tol = frac * nrm
    err = np.linalg.norm(dense(backend, y) - x_np)
    slack = 50 * eps_of(dtype) * nrm * max(shape)
    assert err <= tol + slack
    assert info.error_bound >= err - slack
    assert info.error_bound <= tol + slack
    assert abs(info.norm - nrm) <= 10 * rtol_for(dtype) * nrm
    assert y.orthonormal and y.dtype == backend.asarray(x_np).dtype
    assert_orthonormal_np([backend.to_numpy(u) for u in y.factors], dtype)


@given(case=tucker_case(), seed2=seeds)
def test_hosvd_fixed_rank_quasi_optimal(backend, case, seed2):
    shape, rank, dtype, seed = case
    rank = valid_rank(rank)  # a fixed hosvd rank must be a multilinear rank
    rng = np.random.default_rng(seed)
    x_np = decaying_tensor(rng, shape, dtype, decay=0.7)
    y, info = hosvd(backend.asarray(x_np), rank=rank, full_output=True)
    assert y.rank == rank == info.rank
    err = np.linalg.norm(dense(backend, y) - x_np)
    sv = unfolding_sv(x_np)
    best = [tails(s)[r] for s, r in zip(sv, rank, strict=True)]  # best rank-r_i error of Mat_i
    d = len(shape)
    slack = 50 * eps_of(dtype) * np.linalg.norm(x_np) * max(shape)
    # HOSVD bound and quasi-optimality (De Lathauwer et al. 2000): any rank-r tensor z has
    # ||x - z|| >= max_i best_i, and ||x - y||^2 <= sum_i best_i^2 <= d max_i best_i^2
    assert err <= math.sqrt(sum(b * b for b in best)) + slack
    assert err <= math.sqrt(d) * max(best) + slack
    assert info.error_bound >= err - slack
    # the core is the projection x x_i U_i^H
    fs = [backend.to_numpy(u) for u in y.factors]
    ref_core = x_np.astype(np.complex128)
    for i, u in enumerate(fs):
        ref_core = np.moveaxis(np.tensordot(u.conj().T, ref_core, axes=(1, i)), 0, i)
    assert close(backend.to_numpy(y.core), ref_core, dtype, scale=np.linalg.norm(x_np))


@given(shape=shapes(), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_hosvd_zero_tolerance_exact(backend, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x_np = random_array(rng, shape, dtype)
    for kw in ({"atol": 0.0}, {"rtol": 0.0}, {}):
        y = hosvd(backend.asarray(x_np), **kw)
        assert close(dense(backend, y), x_np, dtype)
        assert_orthonormal_np([backend.to_numpy(u) for u in y.factors], dtype)


def test_hosvd_keeps_torch_float32():
    torch = pytest.importorskip("torch")
    x = torch.randn(6, 7, 3, dtype=torch.float32)
    y, info = hosvd(x, rtol=0.3, full_output=True)
    assert y.core.dtype == torch.float32 and all(u.dtype == torch.float32 for u in y.factors)
    assert y.core.device == x.device
    z = truncate(y + y, rtol=0.1)
    assert z.core.dtype == torch.float32
    assert float(torch.linalg.vector_norm(z.full() - 2 * y.full())) <= 0.1 * 2 * float(y.norm())


# ---------------------------------------------------------------- truncation rule
def _check_smallest(chosen, sv_list, mode_tol, nrm, dtype, rmin=None, rmax=None):
    """The chosen rank per mode is the smallest r with tail_i(r) <= mode_tol."""
    d = len(sv_list)
    for i in range(d):
        t = tails(sv_list[i])
        r = chosen[i]
        m = len(sv_list[i])
        slack2 = 20 * (m + 1) * eps_of(dtype) * nrm**2  # squared-singular-value resolution
        lo = 1 if rmin is None else rmin[i]
        hi = m if rmax is None else rmax[i]
        if r < hi:  # not clamped from above: the rule holds at r
            assert t[r] ** 2 <= mode_tol**2 + slack2, (i, r, t, mode_tol)
        if r > lo:  # and one rank lower violates it
            assert t[r - 1] ** 2 > mode_tol**2 - slack2, (i, r, t, mode_tol)


@given(shape=shapes(), dtype=st.sampled_from(DTYPES), seed=seeds, frac=st.floats(0.0, 0.8),
       rule=st.sampled_from(["split", "per_mode"]), extra=st.integers(0, 3))
def test_truncate_smallest_ranks(backend, shape, dtype, seed, frac, rule, extra):
    rng = np.random.default_rng(seed)
    d = len(shape)
    # an orthonormal-or-not Tucker input of rank above the target (a sum of two tensors)
    x1 = decaying_tensor(rng, shape, dtype)
    y1 = hosvd(backend.asarray(x1))
    core2, f2 = random_tucker_np(rng, shape, tuple(min(n, 1 + extra) for n in shape), dtype,
                                 orthonormal=False)
    t = y1 + make_tucker(backend, 0.1 * core2, f2)
    t_np = dense(backend, t)
    nrm = np.linalg.norm(t_np)
    out, info = truncate(t, rtol=frac, rule=rule, full_output=True)
    assert out.rank == info.rank and info.rule == rule
    assert abs(info.tolerance - frac * nrm) <= 10 * rtol_for(dtype) * nrm
    mode_tol = frac * nrm / math.sqrt(d) if rule == "split" else frac * nrm
    sv = unfolding_sv(t_np)
    _check_smallest(info.rank, sv, mode_tol, nrm, dtype)
    err = np.linalg.norm(dense(backend, out) - t_np)
    slack = 50 * eps_of(dtype) * nrm * max(shape)
    bound = frac * nrm * (1.0 if rule == "split" else math.sqrt(d))
    assert err <= bound + slack
    assert err <= info.error_bound + slack
    assert out.orthonormal
    assert_orthonormal_np([backend.to_numpy(u) for u in out.factors], dtype)


@given(shape=shapes(), dtype=st.sampled_from(DTYPES), seed=seeds, frac=st.floats(0.0, 0.6),
       data=st.data())
def test_truncate_rank_bounds(backend, shape, dtype, seed, frac, data):
    rng = np.random.default_rng(seed)
    x = decaying_tensor(rng, shape, dtype)
    t = hosvd(backend.asarray(x))
    total = math.prod(shape)
    upper = [min(n, total // n) for n in shape]
    rmax = [data.draw(st.integers(1, u)) for u in upper]
    rmin = [data.draw(st.integers(1, m)) for m in rmax]
    out, info = truncate(t, atol=frac * np.linalg.norm(x), max_rank=rmax, min_rank=rmin,
                         full_output=True)
    assert all(lo <= r <= hi for lo, r, hi in zip(rmin, out.rank, rmax, strict=True))
    _check_smallest(info.rank, unfolding_sv(x), frac * np.linalg.norm(x) / math.sqrt(len(shape)),
                    np.linalg.norm(x), dtype, rmin=rmin, rmax=rmax)
    err = np.linalg.norm(dense(backend, out) - x)
    assert err <= info.error_bound + 50 * eps_of(dtype) * np.linalg.norm(x) * max(shape)
    # a fixed rank is obeyed exactly
    fixed = valid_rank(rmax)
    assert truncate(t, rank=fixed).rank == fixed


@given(case=tucker_case())
def test_truncate_zero_tolerance_exact(backend, case):
    shape, rank, dtype, seed = case
    rng = np.random.default_rng(seed)
    core, factors = random_tucker_np(rng, shape, rank, dtype, orthonormal=False)
    t = make_tucker(backend, core, factors)
    ref = einsum_full(core, factors)
    for kw in ({"atol": 0.0}, {"rtol": 0.0}, {}):
        out = truncate(t, **kw)
        assert close(dense(backend, out), ref, dtype)
        assert all(r <= q for r, q in zip(out.rank, t.rank, strict=True))


def test_truncate_recovers_exact_rank(backend):
    """A rank-(2,3,2) tensor written with redundant rank (sum of copies) rounds back to (2,3,2)."""
    rng = np.random.default_rng(5)
    core, factors = random_tucker_np(rng, (5, 6, 7), (2, 3, 2), np.float64)
    t = make_tucker(backend, core, factors)
    s = t + t + 0.5 * t
    out = truncate(s, rtol=1e-10)
    assert out.rank == (2, 3, 2)
    np.testing.assert_allclose(dense(backend, out), 2.5 * einsum_full(core, factors), atol=1e-12)


# ---------------------------------------------------------------- gram vs svd
@given(shape=shapes(), dtype=st.sampled_from(DTYPES), seed=seeds, data=st.data())
def test_gram_and_svd_agree_when_well_resolved(backend, shape, dtype, seed, data):
    rng = np.random.default_rng(seed)
    x = decaying_tensor(rng, shape, dtype, decay=0.6)
    total = math.prod(shape)
    rank = valid_rank([data.draw(st.integers(1, min(n, total // n))) for n in shape])
    yg, ig = hosvd(backend.asarray(x), rank=rank, method="gram", full_output=True)
    ys, is_ = hosvd(backend.asarray(x), rank=rank, method="svd", full_output=True)
    assert set(ig.methods) <= {"gram"} and set(is_.methods) == {"svd"}
    eg = np.linalg.norm(dense(backend, yg) - x)
    es = np.linalg.norm(dense(backend, ys) - x)
    nrm = np.linalg.norm(x)
    # the Gram route resolves singular values down to ~sqrt(m eps) sigma_1
    res = math.sqrt(20 * max(shape) * eps_of(dtype)) * nrm
    assert abs(eg - es) <= res
    for a, b in zip(ig.tails, is_.tails, strict=True):
        assert abs(a - b) <= res


def _graded_tensor(n=20, d=3, low=1e-12, seed=0):
    """sum_k sigma_k u_k (x) v_k (x) w_k with orthonormal vectors: every unfolding has
    singular values exactly sigma = logspace(0, log10(low), n)."""
    rng = np.random.default_rng(seed)
    sig = np.logspace(0, np.log10(low), n)
    us = [random_orthonormal(rng, n, n, np.float64) for _ in range(d)]
    return np.einsum("k,ik,jk,lk->ijl", sig, *us), sig


def test_auto_falls_back_to_svd_below_gram_resolution(backend):
    """Documented claim: the Gram route loses singular values below ~sqrt(m eps) sigma_1
    (1e-7 relative in float64); ``auto`` then uses the SVD and stays exact."""
    x, sig = _graded_tensor()
    nrm = np.linalg.norm(x)
    t = tails(sig)
    for rtol in (1e-9, 1e-11):
        ya, ia = hosvd(backend.asarray(x), rtol=rtol, method="auto", full_output=True)
        assert set(ia.methods) == {"svd"}
        r_exp = int(np.argmax(t <= rtol * nrm / math.sqrt(3)))  # smallest r with tail <= tol/sqrt d
        assert ia.rank == (r_exp,) * 3
        err_a = np.linalg.norm(dense(backend, ya) - x)
        assert err_a <= rtol * nrm
        # the plain Gram route cannot meet such a tolerance: this is why auto falls back
        yg, ig = hosvd(backend.asarray(x), rtol=rtol, method="gram", full_output=True)
        assert np.linalg.norm(dense(backend, yg) - x) > rtol * nrm
    # fixed rank whose first discarded value (1.4e-10) is below the Gram resolution
    ya, ia = hosvd(backend.asarray(x), rank=15, method="auto", full_output=True)
    assert set(ia.methods) == {"svd"}
    assert np.linalg.norm(dense(backend, ya) - x) <= t[15] * (1 + 1e-4)
    # well above the resolution, auto keeps the fast Gram route with optimal accuracy
    yg, ig = hosvd(backend.asarray(x), rtol=1e-3, method="auto", full_output=True)
    assert set(ig.methods) == {"gram"}
    ys = hosvd(backend.asarray(x), rank=ig.rank, method="svd")
    np.testing.assert_allclose(np.linalg.norm(dense(backend, yg) - x),
                               np.linalg.norm(dense(backend, ys) - x), rtol=1e-6)


def test_hosvd_order_one_and_tiny(backend):
    x = backend.asarray(np.array([3.0, 4.0]))
    y = hosvd(x)
    np.testing.assert_allclose(backend.to_numpy(y.full()), [3.0, 4.0], atol=1e-14)
    z = hosvd(backend.asarray(np.zeros((3, 4))), rtol=0.1)
    assert z.rank == (1, 1)
    np.testing.assert_array_equal(dense(backend, z), np.zeros((3, 4)))


def test_hosvd_unfolding_convention(backend):
    """The factors span the column spaces of the documented unfoldings."""
    rng = np.random.default_rng(2)
    x = random_array(rng, (4, 5, 6), np.float64)
    y = hosvd(backend.asarray(x), rank=(2, 3, 4))
    for i, u in enumerate(y.factors):
        u = backend.to_numpy(u)
        lead = np.linalg.svd(unfold_np(x, i))[0][:, : u.shape[1]]
        np.testing.assert_allclose(u @ u.T, lead @ lead.T, atol=1e-10)


def test_scalar_promotes_real_to_complex(backend):
    """1j * (real Tucker tensor) is a complex Tucker tensor (factors follow the core dtype)."""
    rng = np.random.default_rng(4)
    core, factors = random_tucker_np(rng, (3, 4, 5), (2, 2, 3), np.float64)
    t = make_tucker(backend, core, factors, orthonormal=True)
    ref = einsum_full(core, factors)
    for out, val in ((1j * t, 1j * ref), (t * (2 - 1j), (2 - 1j) * ref), (t / 1j, ref / 1j)):
        assert out.dtype == out.factors[0].dtype == backend.asarray(np.zeros(1, complex)).dtype
        assert out.orthonormal
        np.testing.assert_allclose(dense(backend, out), val, atol=1e-12)
    s = t + make_tucker(backend, core.astype(np.float32), [f.astype(np.float32) for f in factors])
    np.testing.assert_allclose(dense(backend, s), 2 * ref, atol=1e-5)


def test_valid_rank_caps_each_mode_by_the_product_of_the_others():
    import math

    from tucker_dlra import valid_rank

    assert valid_rank((4, 1, 1)) == (1, 1, 1)
    assert valid_rank((5, 2, 2)) == (4, 2, 2)
    assert valid_rank((3, 3, 3)) == (3, 3, 3)
    for r in [(7, 2, 3), (9, 1, 4, 2), (6, 6, 1)]:
        v = valid_rank(r)
        assert all(a <= b for a, b in zip(v, r, strict=True))
        assert all(v[i] <= math.prod(v[:i] + v[i + 1 :]) for i in range(len(v)))


def test_full_rank_modes_use_the_identity_basis_and_change_nothing(backend):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 10, 3, 3))
    xa = backend.asarray(x)
    ya, ia = hosvd(xa, rank=(4, 5, 3, 3), full_output=True)
    ys, _ = hosvd(xa, rank=(4, 5, 3, 3), method="svd", full_output=True)
    assert ia.methods[2:] == ("identity", "identity") and ia.rank == (4, 5, 3, 3)
    np.testing.assert_allclose(backend.to_numpy(ya.factors[2]), np.eye(3), atol=0)
    np.testing.assert_allclose(backend.to_numpy(ya.full()), backend.to_numpy(ys.full()),
                               atol=1e-12)
    assert ya.core.dtype == xa.dtype


def test_norm_of_a_difference_is_accurate_below_sqrt_eps(backend):
    """(a - b).norm() must not cancel like sqrt(<a,a> + <b,b> - 2<a,b>) does."""
    rng = np.random.default_rng(7)
    core = rng.standard_normal((3, 4, 2))
    fs = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in [(20, 3), (15, 4), (9, 2)]]
    a = TuckerTensor(backend.asarray(core), [backend.asarray(u) for u in fs])
    delta = 1e-11
    b = TuckerTensor(backend.asarray(core + delta * np.ones_like(core)),
                     [backend.asarray(u) for u in fs])
    exact = delta * np.sqrt(core.size)
    got = float((b - a).norm())
    assert abs(got - exact) <= 1e-3 * exact


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_orthonormal_flag_is_checked_where_data_enters(dtype):
    """``orthonormal=True`` with a factor that is not orthonormal is refused (it gave a wrong
    ``norm()`` and ``truncate`` passed the false flag on); rounding-level deviations pass."""
    rng = np.random.default_rng(0)
    core = rng.standard_normal((2, 3, 2)).astype(dtype)
    good = [random_orthonormal(rng, n, r, dtype) for n, r in ((4, 2), (5, 3), (3, 2))]
    t = TuckerTensor(core, good, orthonormal=True)
    np.testing.assert_allclose(float(t.norm()), np.linalg.norm(t.full()), rtol=1e-5)
    bad = list(good)
    bad[1] = 2.0 * good[1]
    with pytest.raises(ValueError, match=r"factors\[1\] must have orthonormal columns"):
        TuckerTensor(core, bad, orthonormal=True)
    # an unflagged tensor with the same factors: norm and truncate are right, result flagged
    u = TuckerTensor(core, bad)
    np.testing.assert_allclose(float(u.norm()), np.linalg.norm(u.full()), rtol=1e-5)
    y = truncate(u)
    assert y.orthonormal
    check_orthonormal(y.factors)
    np.testing.assert_allclose(float(y.norm()), np.linalg.norm(u.full()), rtol=1e-5)
    # rounding-level drift of the dtype is accepted
    eps = np.finfo(np.float32 if dtype in (np.float32,) else np.float64).eps
    drift = [g + 10 * eps * rng.standard_normal(g.shape).astype(dtype) for g in good]
    assert TuckerTensor(core, drift, orthonormal=True).orthonormal


def test_arithmetic_keeps_the_flag_only_on_the_same_bases():
    rng = np.random.default_rng(1)
    core = rng.standard_normal((2, 2))
    fs = [random_orthonormal(rng, 4, 2, np.float64) for _ in range(2)]
    t = TuckerTensor(core, fs, orthonormal=True)
    assert (-t).orthonormal and (2.0 * t).orthonormal and (t / 3.0).orthonormal
    assert not (t + t).orthonormal
