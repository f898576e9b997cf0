"""BUG / Algorithm 1 building blocks against explicit dense formulas (Kronecker products
are built here, in the tests only)."""

from __future__ import annotations

import itertools
import math
from functools import reduce

import numpy as np
import pytest
from algebra_helpers import DTYPES, einsum_full, eps_of, rtol_for, shapes, unfold_np
from conftest import random_array, random_orthonormal
from hypothesis import given
from hypothesis import strategies as st

from tucker_dlra import (
    TuckerTensor,
    augment_basis,
    c_gradient,
    core_qr,
    galerkin_core,
    k_core,
    k_gradient,
    k_tensor,
    pad_core,
    parallel_core,
    valid_rank,
)


@st.composite
def point_case(draw):
    shape = draw(shapes(max_order=4))
    d = len(shape)
    rank = [draw(st.integers(1, n)) for n in shape]
    rank = list(valid_rank(rank))  # full-rank core unfoldings: r_i <= prod_{j != i} r_j
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    mode = draw(st.integers(0, d - 1))
    return tuple(shape), tuple(rank), dtype, seed, mode


def V_matrix(factors, mode):
    """conj(U_{j_1} kron ... kron U_{j_{d-1}}), j ascending, j != mode: Mat_i(Z x_{j!=i} U_j^H)
    = Mat_i(Z) V with the library's C-order unfolding."""
    return reduce(np.kron, [u for j, u in enumerate(factors) if j != mode]).conj()


def tol(dtype, scale):
    return 100 * rtol_for(dtype) * max(scale, 1e-30)


@given(case=point_case())
def test_core_qr_and_k_core(backend, case):
    shape, rank, dtype, seed, mode = case
    rng = np.random.default_rng(seed)
    core = random_array(rng, rank, dtype)
    factors = [random_orthonormal(rng, n, r, dtype) for n, r in zip(shape, rank, strict=True)]
    q, s = core_qr(backend.asarray(core), mode)
    q, s = backend.to_numpy(q), backend.to_numpy(s)
    assert q.shape == (math.prod(rank) // rank[mode], rank[mode]) and s.shape == (rank[mode],) * 2
    assert q.dtype == core.dtype
    np.testing.assert_allclose(q.conj().T @ q, np.eye(rank[mode]), atol=tol(dtype, 1))
    # Mat_i(C) = S Q^H  (Theorem 1: Mat_i(C)^H = Q S^H)
    err = np.linalg.norm(s @ q.conj().T - unfold_np(core, mode))
    assert err <= tol(dtype, np.linalg.norm(core))
    # S is lower triangular (transpose of the R factor)
    assert np.allclose(np.triu(s, 1), 0)
    g, s2 = k_core(backend.asarray(core), mode)
    g = backend.to_numpy(g)
    assert g.shape == core.shape
    np.testing.assert_allclose(unfold_np(g, mode), q.conj().T, atol=tol(dtype, 1))
    # W = G x_i (U_i S) x_{j != i} U_j  (start of the K-step)
    fs = list(factors)
    fs[mode] = factors[mode] @ s
    w = einsum_full(core, factors)
    assert np.linalg.norm(einsum_full(g, fs) - w) <= tol(dtype, np.linalg.norm(w))
    kt = k_tensor(backend.asarray(g), [backend.asarray(u) for u in factors],
                  backend.asarray(fs[mode]), mode)
    assert isinstance(kt, TuckerTensor)
    assert np.linalg.norm(backend.to_numpy(kt.full()) - w) <= tol(dtype, np.linalg.norm(w))


@given(case=point_case(), tucker_grad=st.booleans())
def test_k_gradient_is_mat_z_times_v(backend, case, tucker_grad):
    shape, rank, dtype, seed, mode = case
    rng = np.random.default_rng(seed)
    core = random_array(rng, rank, dtype)
    factors = [random_orthonormal(rng, n, r, dtype) for n, r in zip(shape, rank, strict=True)]
    g, _ = k_core(backend.asarray(core), mode)
    q = backend.to_numpy(core_qr(backend.asarray(core), mode)[0])
    if tucker_grad:
        srank = tuple(max(1, n - 1) for n in shape)
        zc = random_array(rng, srank, dtype)
        zf = [random_array(rng, (n, s), dtype) for n, s in zip(shape, srank, strict=True)]
        z_np = einsum_full(zc, zf)
        z = TuckerTensor(backend.asarray(zc), [backend.asarray(u) for u in zf])
    else:
        z_np = random_array(rng, shape, dtype)
        z = backend.asarray(z_np)
    out = backend.to_numpy(k_gradient(z, g, [backend.asarray(u) for u in factors], mode))
    ref = unfold_np(z_np, mode) @ V_matrix(factors, mode) @ q  # Mat_i(Z) V_i, V_i = conj(kron) Q_i
    assert out.shape == (shape[mode], rank[mode])
    assert np.linalg.norm(out - ref) <= tol(dtype, np.linalg.norm(z_np))
    # c_gradient: Z x_i U_i^H
    cg = backend.to_numpy(c_gradient(z, [backend.asarray(u) for u in factors]))
    ref_c = z_np.astype(np.complex128)
    for i, u in enumerate(factors):
        ref_c = np.moveaxis(np.tensordot(u.conj().T, ref_c, axes=(1, i)), 0, i)
    assert np.linalg.norm(cg - ref_c) <= tol(dtype, np.linalg.norm(z_np))


def test_k_gradient_is_gradient_of_loss(backend):
    """Theorem 1: for L(W) = 1/2 ||W - A||^2, grad_K L(G x_i K x_{j!=i} U_j) = k_gradient(W - A).
    Checked by central differences in random directions (float64)."""
    rng = np.random.default_rng(7)
    shape, rank, mode = (5, 4, 6), (2, 3, 3), 1
    core = random_array(rng, rank, np.float64)
    factors = [random_orthonormal(rng, n, r, np.float64) for n, r in zip(shape, rank, strict=True)]
    a = random_array(rng, shape, np.float64)
    g, s = k_core(backend.asarray(core), mode)
    g_np, s_np = backend.to_numpy(g), backend.to_numpy(s)
    k0 = factors[mode] @ s_np

    def loss(k):
        fs = list(factors)
        fs[mode] = k
        return 0.5 * np.linalg.norm(einsum_full(g_np, fs) - a) ** 2

    w = einsum_full(core, factors)
    grad = backend.to_numpy(k_gradient(backend.asarray(w - a), g,
                                       [backend.asarray(u) for u in factors], mode))
    for _ in range(3):
        e = rng.standard_normal(k0.shape)
        h = 1e-5
        fd = (loss(k0 + h * e) - loss(k0 - h * e)) / (2 * h)
        assert abs(fd - np.sum(grad * e)) <= 1e-6 * (1 + abs(fd))


@given(n=st.integers(1, 12), r=st.integers(1, 6), kcols=st.integers(1, 6),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31 - 1), in_span=st.booleans())
def test_augment_basis(backend, n, r, kcols, dtype, seed, in_span):
    r = min(r, n)
    rng = np.random.default_rng(seed)
    u = random_orthonormal(rng, n, r, dtype)
    k = (u @ random_array(rng, (r, kcols), dtype)) if in_span else random_array(rng, (n, kcols),
                                                                                   dtype)
    uh = backend.to_numpy(augment_basis(backend.asarray(u), backend.asarray(k)))
    assert uh.dtype == u.dtype
    assert uh.shape == (n, min(r + kcols, n))
    np.testing.assert_array_equal(uh[:, :r], u)  # U kept first, exactly
    np.testing.assert_allclose(uh.conj().T @ uh, np.eye(uh.shape[1]),
                               atol=100 * eps_of(dtype) * n)
    # span [U, K] is contained in span(U_hat)
    assert np.linalg.norm(k - uh @ (uh.conj().T @ k)) <= tol(dtype, np.linalg.norm(k))


@given(case=point_case(), extra=st.integers(0, 3))
def test_galerkin_core_is_padded_core(backend, case, extra):
    """Algorithm 1, line 8: with U first in U_hat, C x_i (U_hat^H U) is the zero-padded core
    and represents the same tensor."""
    shape, rank, dtype, seed, _ = case
    rng = np.random.default_rng(seed)
    core = random_array(rng, rank, dtype)
    factors = [random_orthonormal(rng, n, r, dtype) for n, r in zip(shape, rank, strict=True)]
    new = [augment_basis(backend.asarray(u),
                         backend.asarray(random_array(rng, (u.shape[0], extra + 1), dtype)))
           for u in factors]
    gc = galerkin_core(backend.asarray(core), [backend.asarray(u) for u in factors], new)
    pads = [(0, int(un.shape[1]) - r) for un, r in zip(new, rank, strict=True)]
    padded = backend.to_numpy(pad_core(backend.asarray(core), pads))
    assert np.linalg.norm(backend.to_numpy(gc) - padded) <= tol(dtype, np.linalg.norm(core))
    w = einsum_full(core, factors)
    w2 = einsum_full(backend.to_numpy(gc), [backend.to_numpy(u) for u in new])
    assert np.linalg.norm(w2 - w) <= tol(dtype, np.linalg.norm(w))


@given(case=point_case(), data=st.data())
def test_parallel_core_blocks(backend, case, data):
    shape, rank, dtype, seed, _ = case
    rng = np.random.default_rng(seed)
    d = len(shape)
    core = random_array(rng, rank, dtype)
    factors = [random_orthonormal(rng, n, r, dtype) for n, r in zip(shape, rank, strict=True)]
    c_bar = random_array(rng, rank, dtype)
    gs = [k_core(backend.asarray(core), i)[0] for i in range(d)]
    k_new = [random_array(rng, (n, r), dtype) for n, r in zip(shape, rank, strict=True)]
    dirs = []
    for i, u in enumerate(factors):
        m = data.draw(st.integers(0, shape[i] - rank[i]))
        uh = backend.to_numpy(augment_basis(backend.asarray(u), backend.asarray(
            random_array(rng, (shape[i], m), dtype))))
        dirs.append(uh[:, rank[i]:rank[i] + m])
    out = backend.to_numpy(parallel_core(backend.asarray(c_bar), gs,
                                         [backend.asarray(k) for k in k_new],
                                         [backend.asarray(v) for v in dirs]))
    m = [v.shape[1] for v in dirs]
    assert out.shape == tuple(r + mi for r, mi in zip(rank, m, strict=True))
    scale = np.linalg.norm(c_bar) + sum(np.linalg.norm(k) for k in k_new)
    for new_modes in itertools.product([False, True], repeat=d):
        if any(nm and mi == 0 for nm, mi in zip(new_modes, m, strict=True)):
            continue
        idx = tuple(slice(r, None) if nm else slice(0, r)
                    for nm, r in zip(new_modes, rank, strict=True))
        block = out[idx]
        if sum(new_modes) == 0:
            ref = c_bar
        elif sum(new_modes) == 1:
            i = new_modes.index(True)
            g = backend.to_numpy(gs[i])
            mat = dirs[i].conj().T @ k_new[i]  # U_tilde^H K_i(t1)
            ref = np.moveaxis(np.tensordot(mat, g, axes=(1, i)), 0, i)
            # = Ten_i(U_tilde^H K Q^H)
            q = backend.to_numpy(core_qr(backend.asarray(core), i)[0])
            shp = list(rank)
            shp[i] = m[i]
            alt = np.moveaxis((mat @ q.conj().T).reshape([m[i]] + [rank[j] for j in range(d)
                                                                  if j != i]), 0, i)
            assert np.linalg.norm(ref - alt) <= tol(dtype, scale)
        else:
            ref = np.zeros(block.shape)
        assert np.linalg.norm(block - ref) <= tol(dtype, scale)


def test_steps_keep_torch_float32():
    torch = pytest.importorskip("torch")
    core = torch.randn(2, 3, 2)
    u = [torch.linalg.qr(torch.randn(n, r))[0] for n, r in ((4, 2), (5, 3), (3, 2))]
    g, s = k_core(core, 1)
    kg = k_gradient(torch.randn(4, 5, 3), g, u, 1)
    uh = augment_basis(u[1], kg)
    assert g.dtype == s.dtype == kg.dtype == uh.dtype == torch.float32
    assert galerkin_core(core, u, [uh if i == 1 else f for i, f in enumerate(u)]).dtype == (
        torch.float32)
