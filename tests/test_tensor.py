"""Unfoldings and mode products against NumPy references (einsum), on every backend."""

from __future__ import annotations

import string

import numpy as np
import pytest
from algebra_helpers import DTYPES, close, shapes, unfold_np
from conftest import random_array
from hypothesis import given
from hypothesis import strategies as st

from tucker_dlra import fold, mode_product, multi_mode_product, unfold

dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**31 - 1)


@given(shape=shapes(min_order=1), dtype=dtypes, seed=seeds, data=st.data())
def test_fold_unfold_identity(backend, shape, dtype, seed, data):
    rng = np.random.default_rng(seed)
    x_np = random_array(rng, shape, dtype)
    x = backend.asarray(x_np)
    mode = data.draw(st.integers(-len(shape), len(shape) - 1))
    m = unfold(x, mode)
    # the documented convention: C-order reshape of moveaxis(x, mode, 0)
    np.testing.assert_array_equal(backend.to_numpy(m), unfold_np(x_np, mode % len(shape)))
    back = fold(m, mode, shape)
    assert back.dtype == x.dtype
    np.testing.assert_array_equal(backend.to_numpy(back), x_np)
    # and unfold o fold = identity on matrices
    np.testing.assert_array_equal(backend.to_numpy(unfold(fold(m, mode, shape), mode)),
                                  backend.to_numpy(m))


def _einsum_mode(x, mat, mode):
    letters = string.ascii_lowercase
    d = x.ndim
    src = letters[:d]
    out = src[:mode] + "z" + src[mode + 1 :]
    return np.einsum(f"z{src[mode]},{src}->{out}", mat, x)


@given(shape=shapes(min_order=1), dtype=dtypes, seed=seeds, data=st.data())
def test_mode_product_einsum(backend, shape, dtype, seed, data):
    rng = np.random.default_rng(seed)
    x_np = random_array(rng, shape, dtype)
    mode = data.draw(st.integers(0, len(shape) - 1))
    m = data.draw(st.integers(1, 6))
    mat_np = random_array(rng, (m, shape[mode]), dtype)
    y = mode_product(backend.asarray(x_np), backend.asarray(mat_np), mode)
    assert y.dtype == backend.asarray(x_np).dtype
    ref = _einsum_mode(x_np.astype(np.complex128), mat_np.astype(np.complex128), mode)
    assert tuple(y.shape) == ref.shape
    assert close(backend.to_numpy(y), ref, dtype)
    # transpose=True multiplies by the conjugate transpose
    mat2 = random_array(rng, (shape[mode], m), dtype)
    y2 = mode_product(backend.asarray(x_np), backend.asarray(mat2), mode, transpose=True)
    ref2 = _einsum_mode(x_np.astype(np.complex128), mat2.conj().T.astype(np.complex128), mode)
    assert close(backend.to_numpy(y2), ref2, dtype)
    # negative mode means the same axis
    y3 = mode_product(backend.asarray(x_np), backend.asarray(mat_np), mode - len(shape))
    assert close(backend.to_numpy(y3), ref, dtype)


@given(shape=shapes(), dtype=dtypes, seed=seeds, data=st.data(), transpose=st.booleans())
def test_multi_mode_product_einsum(backend, shape, dtype, seed, data, transpose):
    rng = np.random.default_rng(seed)
    d = len(shape)
    x_np = random_array(rng, shape, dtype)
    modes = data.draw(st.lists(st.integers(0, d - 1), unique=True, min_size=0, max_size=d))
    mats_np = []
    for mo in modes:
        m = data.draw(st.integers(1, 5))
        mats_np.append(random_array(rng, (shape[mo], m) if transpose else (m, shape[mo]), dtype))
    skip = data.draw(st.booleans())
    mats = [backend.asarray(a) for a in mats_np]
    if skip and modes:  # a None entry is skipped
        mats[0] = None
    y = multi_mode_product(backend.asarray(x_np), mats, modes, transpose=transpose)
    ref = x_np.astype(np.complex128)
    for k, (mo, a) in enumerate(zip(modes, mats_np, strict=True)):
        if skip and k == 0:
            continue
        ref = _einsum_mode(ref, a.conj().T if transpose else a, mo)
    assert tuple(y.shape) == ref.shape
    assert y.dtype == backend.asarray(x_np).dtype
    assert close(backend.to_numpy(y), ref, dtype)


def test_multi_mode_product_default_modes(backend):
    rng = np.random.default_rng(1)
    x = random_array(rng, (3, 4, 5), np.float64)
    mats = [random_array(rng, (2, n), np.float64) for n in x.shape]
    y = multi_mode_product(backend.asarray(x), [backend.asarray(a) for a in mats])
    ref = np.einsum("abc,ia,jb,kc->ijk", x, *mats)
    np.testing.assert_allclose(backend.to_numpy(y), ref, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32_torch():
    torch = pytest.importorskip("torch")
    x = torch.randn(3, 4, 5, dtype=torch.float32)
    a = torch.randn(2, 4, dtype=torch.float32)
    y = mode_product(x, a, 1)
    assert y.dtype == torch.float32 and y.device == x.device
    assert unfold(x, 2).dtype == torch.float32
    assert multi_mode_product(x, [a], [1]).dtype == torch.float32


def test_mode_product_real_times_complex_promotes(backend):
    rng = np.random.default_rng(0)
    x = random_array(rng, (3, 4), np.float64)
    a = random_array(rng, (2, 4), np.complex128)
    y = mode_product(backend.asarray(x), backend.asarray(a), 1)
    np.testing.assert_allclose(backend.to_numpy(y), x @ a.T, rtol=1e-12)


# ---------------------------------------------------------------- bad input
def test_bad_mode(backend):
    x = backend.asarray(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"mode must be in \[-3, 2\]"):
        unfold(x, 3)
    with pytest.raises(TypeError, match=r"mode must be an int"):
        unfold(x, 1.0)
    with pytest.raises(ValueError, match=r"mode must be in \[-3, 2\]"):
        mode_product(x, backend.asarray(np.zeros((2, 2))), -4)


def test_bad_fold_shape(backend):
    m = backend.asarray(np.zeros((3, 8)))
    with pytest.raises(ValueError, match=r"matrix must have shape \(3, 10\)"):
        fold(m, 1, (2, 3, 5))


def test_bad_mode_product_shapes(backend):
    x = backend.asarray(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"3 columns.*mode 2 of x has size 4"):
        mode_product(x, backend.asarray(np.zeros((5, 3))), 2)
    with pytest.raises(ValueError, match=r"matrix must be 2-d"):
        mode_product(x, backend.asarray(np.zeros(4)), 2)


def test_bad_multi_mode_product(backend):
    x = backend.asarray(np.zeros((2, 3, 4)))
    a = backend.asarray(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"modes must be distinct"):
        multi_mode_product(x, [a, a], [0, 0])
    with pytest.raises(ValueError, match=r"same length"):
        multi_mode_product(x, [a], [0, 1])
    with pytest.raises(TypeError, match=r"x must have a floating dtype"):
        multi_mode_product(backend.asarray(np.zeros((2, 3), dtype=np.int64)), [a], [0])


def test_integer_dtype_rejected(backend):
    x = backend.asarray(np.zeros((2, 3), dtype=np.int32))
    with pytest.raises(TypeError, match=r"floating dtype"):
        mode_product(x, backend.asarray(np.zeros((2, 2), dtype=np.int32)), 0)
