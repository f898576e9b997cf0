"""Tangent-space projection P(W) of Eq. (7) at W in M_rho: linear, idempotent, self-adjoint,
exact on the tangent space (4), with a residual orthogonal to it; dense and Tucker Z agree."""

from __future__ import annotations

import numpy as np
import pytest
from algebra_helpers import DTYPES, einsum_full, eps_of, rtol_for, shapes, unfold_np
from conftest import random_array, random_orthonormal
from hypothesis import assume, given
from hypothesis import strategies as st

from tucker_dlra import TuckerTensor, tangent_components, tangent_project, valid_rank

seeds = st.integers(0, 2**31 - 1)


@st.composite
def manifold_case(draw):
    """A point W = C x_i U_i with orthonormal U_i and well-conditioned core unfoldings."""
    shape = draw(shapes(max_order=5))
    rank = [draw(st.integers(1, n)) for n in shape]
    rank = list(valid_rank(rank))  # full-rank core unfoldings: r_i <= prod_{j != i} r_j
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    return tuple(shape), tuple(rank), dtype, seed


def make_point(rng, shape, rank, dtype):
    core = random_array(rng, rank, dtype)
    for i in range(len(rank)):
        s = np.linalg.svd(unfold_np(core, i), compute_uv=False)
        assume(s[-1] > 1e-2 * s[0])  # stay away from the curvature singularity of M_rho
    factors = [random_orthonormal(rng, n, r, dtype) for n, r in zip(shape, rank, strict=True)]
    return core, factors


def random_tangent(rng, core, factors, dtype):
    """dC x_i U_i + sum_j C x_j dU_j x_{k != j} U_k with gauged dU_j (U_j^H dU_j = 0), Eq. (4)."""
    dc = random_array(rng, core.shape, dtype)
    z = einsum_full(dc, factors)
    for j, u in enumerate(factors):
        du = random_array(rng, u.shape, dtype)
        du = du - u @ (u.conj().T @ du)
        fs = list(factors)
        fs[j] = du
        z = z + einsum_full(core, fs)
    return z


def to_backend(backend, core, factors):
    return TuckerTensor(backend.asarray(core), [backend.asarray(u) for u in factors],
                        orthonormal=True)


def proj(backend, t, z):
    """Dense numpy P(W)[z] for a dense numpy z."""
    return backend.to_numpy(tangent_project(t, backend.asarray(z), dense=True))


def assert_close(a, b, dtype, scale):
    assert np.linalg.norm(np.asarray(a) - np.asarray(b)) <= 200 * rtol_for(dtype) * scale


@given(case=manifold_case(), data=st.data())
def test_projection_properties(backend, case, data):
    shape, rank, dtype, seed = case
    rng = np.random.default_rng(seed)
    core, factors = make_point(rng, shape, rank, dtype)
    t = to_backend(backend, core, factors)
    w = einsum_full(core, factors)
    z1 = random_array(rng, shape, dtype)
    z2 = random_array(rng, shape, dtype)
    scale = np.linalg.norm(z1) + np.linalg.norm(z2) + np.linalg.norm(w)
    p1, p2 = proj(backend, t, z1), proj(backend, t, z2)
    assert p1.dtype == z1.dtype
    # linear
    a, b = (1.5, -0.25) if dtype != np.complex128 else (1.5 + 0.5j, -0.25j)
    assert_close(proj(backend, t, a * z1 + b * z2), a * p1 + b * p2, dtype, 2 * scale)
    # idempotent (dense input and the Tucker output of rank <= 2r fed back)
    assert_close(proj(backend, t, p1), p1, dtype, scale)
    pt = tangent_project(t, backend.asarray(z1))
    assert isinstance(pt, TuckerTensor)
    assert all(q <= 2 * r for q, r in zip(pt.rank, rank, strict=True))
    assert_close(backend.to_numpy(tangent_project(t, pt, dense=True)), p1, dtype, scale)
    # self-adjoint: <P z1, z2> = <z1, P z2>
    assert abs(np.vdot(p1, z2) - np.vdot(z1, p2)) <= 200 * rtol_for(dtype) * scale**2
    # P(W)[W] = W
    assert_close(proj(backend, t, w), w, dtype, scale)
    # P(W)[Z] = Z for Z in the tangent space (4)
    zt = random_tangent(rng, core, factors, dtype)
    assert_close(proj(backend, t, zt), zt, dtype, np.linalg.norm(zt) * 10)
    # the residual is orthogonal to the tangent space
    res = z1 - p1
    for _ in range(2):
        tv = random_tangent(rng, core, factors, dtype)
        assert abs(np.vdot(tv, res)) <= 200 * rtol_for(dtype) * np.linalg.norm(tv) * scale
    # and P is the best approximation in the tangent space (Eq. (7)): || z - P z || <= || z - tv ||
    assert np.linalg.norm(res) <= np.linalg.norm(z1 - p1 - 0.1 * tv) * (1 + 10 * rtol_for(dtype))


@given(case=manifold_case(), data=st.data())
def test_dense_and_tucker_z_agree(backend, case, data):
    shape, rank, dtype, seed = case
    rng = np.random.default_rng(seed)
    core, factors = make_point(rng, shape, rank, dtype)
    t = to_backend(backend, core, factors)
    srank = tuple(data.draw(st.integers(1, n)) for n in shape)
    zc = random_array(rng, srank, dtype)
    zf = [random_array(rng, (n, s), dtype) for n, s in zip(shape, srank, strict=True)]
    z = TuckerTensor(backend.asarray(zc), [backend.asarray(u) for u in zf])
    zd = einsum_full(zc, zf)
    pd = proj(backend, t, zd)
    pt = backend.to_numpy(tangent_project(t, z, dense=True))
    assert_close(pt, pd, dtype, np.linalg.norm(zd))
    dc, du = tangent_components(t, z)
    dc2, du2 = tangent_components(t, backend.asarray(zd))
    assert_close(backend.to_numpy(dc), backend.to_numpy(dc2), dtype, np.linalg.norm(zd))
    for i, (a, b) in enumerate(zip(du, du2, strict=True)):
        a_np = backend.to_numpy(a)
        assert_close(a_np, backend.to_numpy(b), dtype, np.linalg.norm(zd) * 100)
        # gauge condition U_i^H dU_i = 0
        assert np.linalg.norm(factors[i].conj().T @ a_np) <= (
            1e3 * eps_of(dtype) * (1 + np.linalg.norm(a_np)))
    # dC is the projection z x_i U_i^H (Eq. (8), core equation)
    ref = zd.astype(np.complex128)
    for i, u in enumerate(factors):
        ref = np.moveaxis(np.tensordot(u.conj().T, ref, axes=(1, i)), 0, i)
    assert_close(backend.to_numpy(dc), ref, dtype, np.linalg.norm(zd))


def test_projection_matches_eq8_components_matrix_case(backend):
    """d = 2: P(W)[Z] = U U^H Z + Z V V^H - U U^H Z V V^H (the matrix tangent projection)."""
    rng = np.random.default_rng(0)
    core = random_array(rng, (3, 3), np.float64)  # matrix manifold: both ranks equal
    u = random_orthonormal(rng, 7, 3, np.float64)
    v = random_orthonormal(rng, 8, 3, np.float64)
    z = random_array(rng, (7, 8), np.float64)
    t = to_backend(backend, core, [u, v])
    pu, pv = u @ u.T, v @ v.T
    ref = pu @ z + z @ pv - pu @ z @ pv
    np.testing.assert_allclose(proj(backend, t, z), ref, atol=1e-12)


def test_keeps_torch_float32():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    core = torch.from_numpy(random_array(rng, (2, 3, 2), np.float32))
    fs = [torch.from_numpy(random_orthonormal(rng, n, r, np.float32))
          for n, r in ((4, 2), (5, 3), (3, 2))]
    t = TuckerTensor(core, fs, orthonormal=True)
    out = tangent_project(t, torch.randn(4, 5, 3))
    assert out.core.dtype == torch.float32 and all(f.dtype == torch.float32 for f in out.factors)


def test_rejects_non_orthonormal_and_bad_shape(backend):
    rng = np.random.default_rng(2)
    core = random_array(rng, (2, 2), np.float64)
    u = random_array(rng, (4, 2), np.float64)  # not orthonormal
    v = random_orthonormal(rng, 5, 2, np.float64)
    t = TuckerTensor(backend.asarray(core), [backend.asarray(u), backend.asarray(v)])
    z = backend.asarray(random_array(rng, (4, 5), np.float64))
    with pytest.raises(ValueError, match=r"t\.factors\[0\] must have orthonormal columns"):
        tangent_project(t, z)
    t2 = to_backend(backend, core, [random_orthonormal(rng, 4, 2, np.float64), v])
    with pytest.raises(ValueError, match=r"z must have the shape of t, \(4, 5\)"):
        tangent_project(t2, backend.asarray(np.zeros((5, 4))))
    with pytest.raises(TypeError, match=r"t must be a TuckerTensor"):
        tangent_project(backend.asarray(np.zeros((4, 5))), z)
