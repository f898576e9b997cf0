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
          _tensor(rng, (4, 9, 3), (2, 3, 3), 0.1)]
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
