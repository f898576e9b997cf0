"""The batched step pieces of :mod:`tucker_dlra.bug_step` against the one-at-a-time core
functions: :func:`truncate_many` = :func:`truncate`, :func:`k_starts` = ``k_core``."""

from __future__ import annotations

import numpy as np
import pytest

from tucker_dlra import TuckerTensor, k_core, truncate
from tucker_dlra.bug_step import Truncation, augment, k_starts, truncate_many


def _orth(rng, n, r):
    q, _ = np.linalg.qr(rng.standard_normal((n, r)))
    return q


def _tensor(rng, shape, rank, decay):
    core = rng.standard_normal(rank) * np.exp(-decay * np.arange(rank[0]))[:, None, None]
    return TuckerTensor(core, [_orth(rng, n, r) for n, r in zip(shape, rank, strict=True)],
                        orthonormal=True)


SPECS = [Truncation(rtol=0.1, rule="split"), Truncation(rtol=0.05, rule="per_mode"),
         Truncation(atol=0.5), Truncation(rank=[3, 2, 4]),
         Truncation(rtol=0.2, max_rank=[3, None, 2], min_rank=[2, 2, 1]),
         Truncation(rtol=1e-9), Truncation(rtol=0.1, method="gram")]


@pytest.mark.parametrize("seed", [0, 1])
def test_truncate_many_equals_truncate(seed):
    """Mixed core sizes in one call (several padded size classes) give what truncate gives
    tensor by tensor: ranks, tails, error bound and the tensor itself."""
    rng = np.random.default_rng(seed)
    shapes = [((9, 8, 7), (6, 5, 4)), ((12, 6, 9), (8, 6, 5)), ((5, 5, 5), (5, 3, 5))]
    items, refs = [], []
    for k, spec in enumerate(SPECS):
        shape, rank = shapes[k % len(shapes)]
        y = _tensor(rng, shape, rank, decay=0.4 + 0.1 * k)
        kw = {f: getattr(spec, f) for f in ("rtol", "atol", "rank", "max_rank", "min_rank")
              if getattr(spec, f) is not None}
        refs.append(truncate(y, rule=spec.rule, method=spec.method, full_output=True, **kw))
        items.append((y.core, y.factors, spec))
    flag = np.array([1.0, 0.0])
    got, extra = truncate_many(items, [flag])
    assert extra == [1.0, 0.0]
    for (y1, info), (r1, rinfo) in zip(got, refs, strict=True):
        assert y1.rank == r1.rank
        np.testing.assert_allclose(info.tails, rinfo.tails, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(info.error_bound, rinfo.error_bound, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(y1.full(), r1.full(), rtol=1e-9, atol=1e-10)
        for u in y1.factors:
            np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-12)


def test_truncate_many_rejects_nonfinite_cores():
    rng = np.random.default_rng(3)
    y = _tensor(rng, (5, 4, 3), (3, 2, 3), 0.1)
    core = y.core.copy()
    core[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        truncate_many([(core, y.factors, Truncation(rtol=0.1))])


def test_k_starts_and_augment_equal_the_single_mode_functions():
    rng = np.random.default_rng(4)
    ys = [_tensor(rng, (7, 6, 5), (3, 2, 3), 0.2), _tensor(rng, (7, 6, 5), (3, 2, 3), 0.3),
          _tensor(rng, (4, 9, 3), (2, 3, 3), 0.1),
          # rank 3 > 2 in mode 1: Q_1 has fewer columns than r_1
          TuckerTensor(rng.standard_normal((2, 3)), [_orth(rng, 5, 2), _orth(rng, 6, 3)],
                       orthonormal=True)]
    starts = k_starts(ys)
    for y, st in zip(ys, starts, strict=True):
        for i in range(y.ndim):
            g, s = k_core(y.core, i)
            np.testing.assert_array_equal(st.gs[i], g)
            np.testing.assert_array_equal(st.ss[i], s)
            np.testing.assert_allclose(st.k0[i], y.factors[i] @ s, rtol=1e-14)
    ks = [[rng.standard_normal(u.shape) for u in y.factors] for y in ys]
    bases, tri = augment([y.factors for y in ys], ks)
    for y, kk, b, t in zip(ys, ks, bases, tri, strict=True):
        for u, k, q, r in zip(y.factors, kk, b, t, strict=True):
            assert q.shape == (u.shape[0], min(2 * u.shape[1], u.shape[0]))
            np.testing.assert_allclose(q.T @ q, np.eye(q.shape[1]), atol=1e-13)
            np.testing.assert_allclose(q[:, :u.shape[1]] @ r, u, atol=1e-13)  # U = Q R11
            # K lies in the span of the augmented basis
            np.testing.assert_allclose(q @ (q.T @ k), k, atol=1e-12)


def _rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("stack_min", [1, 3])
def test_mode_products_many_equal_per_tensor_products(stack_min, monkeypatch):
    """Zero-padded stacked products = multi_mode_product tensor by tensor (mixed shapes,
    orders, dtypes, skipped modes, transposes and zero-padded outputs)."""
    import tucker_dlra.bug_step as bs
    from tucker_dlra.tensor import multi_mode_product

    monkeypatch.setattr(bs, "_STACK_MIN", stack_min)
    rng = np.random.default_rng(0)
    xs = [_rand(rng, (4, 5, 3)), _rand(rng, (2, 6, 3)), _rand(rng, (3, 3, 2)),
          _rand(rng, (5, 2)), _rand(rng, (3, 4, 2), np.float32), _rand(rng, (2, 2, 2))]
    pats = [(6, None, 2), (3, None, 4), (1, None, 2), (2, 3), (3, 5, 1), (2, 2, 2)]
    for transpose in (False, True):
        mats = [[None if m is None else (_rand(rng, (x.shape[i], m), x.dtype) if transpose
                                         else _rand(rng, (m, x.shape[i]), x.dtype))
                 for i, m in enumerate(p)] for x, p in zip(xs, pats, strict=True)]
        ref = [multi_mode_product(x, m, transpose=transpose) for x, m in zip(xs, mats,
                                                                             strict=True)]
        got = bs.mode_products_many(xs, mats, transpose=transpose)
        for g, r in zip(got, ref, strict=True):
            assert g.shape == r.shape and g.dtype == r.dtype
            np.testing.assert_allclose(g, r, rtol=1e-5 if r.dtype == np.float32 else 1e-12,
                                       atol=1e-5 if r.dtype == np.float32 else 1e-12)
        outs = [tuple(s + k for k, s in enumerate(r.shape)) for r in ref]
        padded = bs.mode_products_many(xs, mats, transpose=transpose, out_shapes=outs)
        for g, r in zip(padded, ref, strict=True):
            block = g[tuple(slice(0, s) for s in r.shape)]
            np.testing.assert_allclose(block, r, rtol=1e-5, atol=1e-5)
            assert float(np.abs(g).sum()) == pytest.approx(float(np.abs(block).sum()))


@pytest.mark.parametrize("stack_min", [1, 3])
def test_k_transport_many_equals_k_transport(stack_min, monkeypatch):
    """Batched transport matrices B_{t,i} = k_transport per tensor and mode, for tensors of
    different shapes and ranks (old and new ranks differ)."""
    import tucker_dlra.bug_step as bs

    monkeypatch.setattr(bs, "_STACK_MIN", stack_min)
    rng = np.random.default_rng(1)
    olds = [(3, 2, 3), (4, 3, 2), (2, 2, 3)]
    news = [(2, 2, 3), (4, 4, 2), (3, 2, 2)]
    g_o, g_n, a = [], [], []
    for ro, rn in zip(olds, news, strict=True):
        co, cn = _rand(rng, ro), _rand(rng, rn)
        g_o.append([k_core(co, i)[0] for i in range(3)])
        g_n.append([k_core(cn, i)[0] for i in range(3)])
        a.append([_rand(rng, (rn[j], ro[j])) for j in range(3)])
    got = bs.k_transport_many(g_o, g_n, a)
    for t in range(3):
        for i in range(3):
            ref = bs.k_transport(g_o[t][i], g_n[t][i], a[t], i)
            assert got[t][i].shape == ref.shape == (olds[t][i], news[t][i])
            np.testing.assert_allclose(got[t][i], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stack_min", [1, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_state_transports_equal_their_formulas(stack_min, dtype, monkeypatch):
    """Batched optimizer-state transports, tensors of different shapes (padding inside the
    batch), against the formulas written out per tensor: K-states M B and
    M (B o B) + (1 - min(1, colsum(B o B))) mean(M); core states M x_j A_j and
    M x_j (A_j o A_j) + (1 - min(1, 1 x_j (A_j o A_j))) mean(M).  Results own memory."""
    import tucker_dlra.bug_step as bs

    monkeypatch.setattr(bs, "_STACK_MIN", stack_min)
    rng = np.random.default_rng(3)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    ms = [rng.random((5, 2)), rng.random((3, 4)), rng.random((6, 3))]
    bmats = [rng.standard_normal((2, 3)) * 0.4, rng.standard_normal((4, 2)),
             np.eye(3, 4)]  # the last one: one new coordinate reached by nothing
    ms, bmats = [m.astype(dtype) for m in ms], [b.astype(dtype) for b in bmats]
    lin = bs.k_state_transport_many(ms, bmats)
    sq = bs.k_state_transport_many(ms, bmats, square=True)
    for m, b, got_l, got_s in zip(ms, bmats, lin, sq, strict=True):
        np.testing.assert_allclose(got_l, m @ b, rtol=tol, atol=tol)
        bb = b * b
        ref = m @ bb + (1.0 - np.minimum(1.0, bb.sum(axis=0))) * m.mean()
        assert got_s.shape == ref.shape and got_s.dtype == m.dtype
        np.testing.assert_allclose(got_s, ref, rtol=tol, atol=tol)
        assert got_s.base is None or got_s.base.size == got_s.size  # no view of the batch
    np.testing.assert_allclose(sq[2][:, 3], np.full(6, ms[2].mean()), rtol=tol)
    cores = [rng.random((2, 3, 2)).astype(dtype), rng.random((3, 2, 2)).astype(dtype)]
    a = [[rng.standard_normal((3, 2)), np.eye(3), np.eye(3, 2)],
         [rng.standard_normal((3, 3)), rng.standard_normal((2, 2)), np.eye(2)]]
    a = [[x.astype(dtype) for x in aa] for aa in a]
    got_l = bs.core_state_transport_many(cores, a)
    got_s = bs.core_state_transport_many(cores, a, square=True)
    for m, aa, gl, gs in zip(cores, a, got_l, got_s, strict=True):
        np.testing.assert_allclose(gl, np.einsum("abc,ia,jb,kc->ijk", m, *aa), rtol=tol,
                                   atol=tol)
        sq_a = [x * x for x in aa]
        w = np.einsum("i,j,k->ijk", *[x.sum(axis=1) for x in sq_a])
        ref = np.einsum("abc,ia,jb,kc->ijk", m, *sq_a) + np.clip(1 - w, 0, None) * m.mean()
        np.testing.assert_allclose(gs, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("n", [2, 3, 4, 7, 16])
def test_jacobi_eigh_matches_lapack(n):
    """The sync-free Jacobi eigensolver = linalg.eigh on small symmetric matrices (PSD
    Gram matrices, indefinite, and with repeated eigenvalues); no host sync."""
    torch = pytest.importorskip("torch")
    from tucker_dlra.nn._profiling import OpCounter

    from tucker_dlra.bug_step import jacobi_eigh

    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, n + 1, generator=g, dtype=torch.float64)
    sym = torch.randn(2, n, n, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    rep = q @ torch.diag(torch.tensor([1.0] * (n // 2) + [3.0] * (n - n // 2),
                                      dtype=torch.float64)) @ q.T
    a = torch.cat([x @ x.mT, sym + sym.mT, rep[None]])
    with OpCounter() as c:
        w, v = jacobi_eigh(a)
    assert c.syncs == 0
    wr, _ = torch.linalg.eigh(a)
    scale = a.abs().amax(dim=(1, 2))[:, None]
    assert torch.all((w - wr).abs() <= 1e-12 * scale)
    eye = torch.eye(n, dtype=a.dtype)
    torch.testing.assert_close(v.mT @ v, eye.expand_as(a), rtol=0, atol=1e-12)
    tol = 1e-13 * n * float(a.abs().max())
    torch.testing.assert_close(v @ torch.diag_embed(w) @ v.mT, a, rtol=0, atol=tol)


def test_truncate_many_with_sync_free_eigh_equals_default():
    """truncate_many with the Jacobi eigensolver gives the ranks and tensors of the
    default (LAPACK) route."""
    torch = pytest.importorskip("torch")
    from tucker_dlra.bug_step import sync_free_eigh

    g = torch.Generator().manual_seed(0)
    items = []
    for shape in [(4, 3, 3), (6, 5, 2), (3, 3)]:
        core = torch.randn(*shape, generator=g, dtype=torch.float64)
        core = core * torch.logspace(0, -6, shape[0], dtype=torch.float64).reshape(
            -1, *([1] * (len(shape) - 1)))
        fs = [torch.linalg.qr(torch.randn(n + 2, n, generator=g, dtype=torch.float64))[0]
              for n in shape]
        items.append((core, fs, Truncation(rtol=1e-3)))
    ref, _ = truncate_many(items)
    with sync_free_eigh():
        got, _ = truncate_many(items)
    for (y, info), (y_r, info_r) in zip(got, ref, strict=True):
        assert info.rank == info_r.rank
        torch.testing.assert_close(y.full(), y_r.full(), rtol=1e-9, atol=1e-12)


@pytest.mark.cuda
def test_jacobi_eigh_does_not_synchronise_on_cuda():
    import torch

    from tucker_dlra.bug_step import jacobi_eigh

    x = torch.randn(4, 8, 9, device="cuda", dtype=torch.float64)
    a = x @ x.mT
    jacobi_eigh(a)  # warm-up (allocations, constants)
    torch.cuda.set_sync_debug_mode("error")
    try:
        w, _ = jacobi_eigh(a)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(w.cpu(), torch.linalg.eigh(a.cpu())[0], rtol=0, atol=1e-10)


def test_parallel_augmented_core_equals_parallel_core():
    """The batched block assembly of the parallel BUG's augmented core (bug_step) equals
    steps.parallel_core applied tensor by tensor (mixed shapes, one mode without new
    directions)."""
    from tucker_dlra.bug_step import bug_step
    from tucker_dlra.steps import parallel_core
    from tucker_dlra.tensor import multi_mode_product

    rng = np.random.default_rng(7)
    ys = [_tensor(rng, (7, 6, 3), (3, 2, 3), 0.2), _tensor(rng, (7, 6, 5), (3, 2, 3), 0.3),
          _tensor(rng, (8, 5, 4), (4, 3, 2), 0.1), _tensor(rng, (7, 6, 5), (3, 2, 3), 0.5)]
    ks = [[rng.standard_normal(u.shape) for u in y.factors] for y in ys]
    steps = [rng.standard_normal(y.core.shape) for y in ys]

    def c_solve(cores0, bases, at_y0):
        return [c + s for c, s in zip(cores0, steps, strict=True)]

    parts, _ = bug_step(ys, lambda starts: ks, c_solve, ["parallel"] * len(ys),
                        [None] * len(ys))
    for y, k, st, p in zip(ys, ks, steps, parts, strict=True):
        bases, tri = augment([y.factors], [k])
        bases, tri = bases[0], tri[0]
        cbar = multi_mode_product(y.core + st, tri)
        gq = [multi_mode_product(g, [None if j == i else r for j, r in enumerate(tri)])
              for i, g in enumerate(p.start.gs)]
        ref = parallel_core(cbar, gq, k, [b[:, u.shape[1]:] for b, u in zip(bases, y.factors,
                                                                          strict=True)])
        assert p.y1.core.shape == ref.shape
        np.testing.assert_allclose(p.y1.core, ref, rtol=1e-12, atol=1e-12)
        for b, q in zip(p.y1.factors, bases, strict=True):
            np.testing.assert_allclose(b, q, atol=1e-14)


def test_truncate_many_eigenvector_sign_convention():
    """With identity factors the truncated factors are the Gram eigenvectors themselves:
    each column's largest-magnitude entry is positive (a convention that rounding-level
    changes of the core cannot flip), and the result is the truncation."""
    rng = np.random.default_rng(11)
    items = []
    for shape in [(6, 5, 4), (8, 3, 5), (6, 5, 4)]:
        core = rng.standard_normal(shape) * np.exp(-0.5 * np.arange(shape[0]))[:, None, None]
        items.append((core, [np.eye(n) for n in shape], Truncation(rtol=0.05)))
    got, _ = truncate_many(items)
    for (core, _, spec), (y1, _) in zip(items, got, strict=True):
        for u in y1.factors:
            piv = u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])]
            assert np.all(piv > 0)
        ref = truncate(TuckerTensor(core, [np.eye(n) for n in core.shape], orthonormal=True),
                       rtol=spec.rtol)
        np.testing.assert_allclose(y1.full(), ref.full(), rtol=1e-9, atol=1e-10)
