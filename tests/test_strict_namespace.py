"""The core's main functions on ``array_api_strict`` arrays: nothing NumPy- or torch-specific
may slip through (array API standard only), and the results match the NumPy backend."""

from __future__ import annotations

import numpy as np
import pytest
from algebra_helpers import einsum_full
from conftest import random_array, random_orthonormal

import tucker_dlra as td


@pytest.fixture(params=[np.float64, np.complex128, np.float32], ids=lambda d: np.dtype(d).name)
def dtype(request):
    return request.param


def test_strict_tensor_ops(strict_backend, dtype):
    b = strict_backend
    rng = np.random.default_rng(0)
    x_np = random_array(rng, (3, 4, 5), dtype)
    x = b.asarray(x_np)
    m = td.unfold(x, 1)
    assert type(m).__module__.startswith("array_api_strict")
    np.testing.assert_array_equal(b.to_numpy(td.fold(m, 1, (3, 4, 5))), x_np)
    a_np = random_array(rng, (2, 4), dtype)
    y = td.mode_product(x, b.asarray(a_np), 1)
    np.testing.assert_allclose(b.to_numpy(y), np.einsum("kb,abc->akc", a_np, x_np), rtol=1e-4,
                               atol=1e-5)
    mats = [b.asarray(random_array(rng, (n, 2), dtype)) for n in (3, 4, 5)]
    z = td.multi_mode_product(x, mats, transpose=True)
    assert tuple(z.shape) == (2, 2, 2)


def test_strict_hosvd_truncate(strict_backend, dtype):
    b = strict_backend
    rng = np.random.default_rng(1)
    core = random_array(rng, (2, 3, 2), dtype)
    fs = [random_orthonormal(rng, n, r, dtype) for n, r in ((5, 2), (6, 3), (4, 2))]
    x_np = einsum_full(core, fs).astype(dtype) + 1e-3 * random_array(rng, (5, 6, 4), dtype)
    x = b.asarray(x_np)
    tol = 1e-3 if dtype == np.float32 else 1e-8
    for method in ("auto", "gram", "svd"):
        t, info = td.hosvd(x, rtol=0.05, method=method, full_output=True)
        assert type(t.core).__module__.startswith("array_api_strict")
        assert t.rank == (2, 3, 2)
        err = np.linalg.norm(b.to_numpy(t.full()) - x_np)
        assert err <= 0.05 * np.linalg.norm(x_np)
        ref = td.hosvd(x_np, rtol=0.05, method=method)
        np.testing.assert_allclose(b.to_numpy(t.full()), ref.full(), atol=tol)
    t = td.hosvd(x, rank=(2, 2, 2))
    s = t + t * 0.5 - t / 4.0
    assert s.rank == (6, 6, 6)
    r, info = td.truncate(s, rtol=1e-6, full_output=True)
    assert r.rank == (2, 2, 2)
    np.testing.assert_allclose(b.to_numpy(r.full()), 1.25 * b.to_numpy(t.full()), atol=tol)
    o = s.orthonormalize()
    np.testing.assert_allclose(float(b.to_numpy(o.norm())), float(b.to_numpy(s.norm())),
                               rtol=1e-4)
    np.testing.assert_allclose(complex(b.to_numpy(s.inner(x))),
                               np.vdot(b.to_numpy(s.full()), x_np), rtol=1e-4)
    td.check_orthonormal(r.factors)


def test_strict_tangent_and_steps(strict_backend, dtype):
    b = strict_backend
    rng = np.random.default_rng(2)
    core = random_array(rng, (2, 3, 2), dtype)
    fs = [random_orthonormal(rng, n, r, dtype) for n, r in ((5, 2), (6, 3), (4, 2))]
    t = td.TuckerTensor(b.asarray(core), [b.asarray(u) for u in fs], orthonormal=True)
    z_np = random_array(rng, (5, 6, 4), dtype)
    z = b.asarray(z_np)
    p = td.tangent_project(t, z)
    tol = 1e-3 if dtype == np.float32 else 1e-9
    ref = td.tangent_project(td.TuckerTensor(core, fs, orthonormal=True), z_np, dense=True)
    np.testing.assert_allclose(b.to_numpy(p.full()), ref, atol=tol)
    pp = td.tangent_project(t, p, dense=True)
    np.testing.assert_allclose(b.to_numpy(pp), ref, atol=tol)
    g, s = td.k_core(t.core, 0)
    k = td.k_gradient(z, g, t.factors, 0)
    uh = td.augment_basis(t.factors[0], k)
    np.testing.assert_array_equal(b.to_numpy(uh[:, :2]), fs[0])
    new = [uh] + list(t.factors[1:])
    gc = td.galerkin_core(t.core, t.factors, new)
    assert tuple(gc.shape) == (4, 3, 2)
    cg = td.c_gradient(z, t.factors)
    assert tuple(cg.shape) == (2, 3, 2)
    kt = td.k_tensor(g, t.factors, t.factors[0] @ s, 0)
    np.testing.assert_allclose(b.to_numpy(kt.full()), b.to_numpy(t.full()), atol=tol)
    pc = td.parallel_core(t.core, [td.k_core(t.core, i)[0] for i in range(3)],
                          [k, td.k_gradient(z, td.k_core(t.core, 1)[0], t.factors, 1),
                           td.k_gradient(z, td.k_core(t.core, 2)[0], t.factors, 2)],
                          [uh[:, 2:], t.factors[1][:, :0], t.factors[2][:, :0]])
    assert tuple(pc.shape) == (4, 3, 2)
