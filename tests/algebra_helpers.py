"""Helpers shared by the core-algebra tests (strategies, tolerances, dense references)."""

from __future__ import annotations

import math
import string

import numpy as np
from conftest import random_array, random_orthonormal
from hypothesis import strategies as st

DTYPES = (np.float32, np.float64, np.complex128)


def rtol_for(dtype) -> float:
    """Relative tolerance for comparisons of a computation in ``dtype`` against float64."""
    return 5e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-10


def eps_of(dtype) -> float:
    dtype = np.dtype(dtype)
    return float(np.finfo(np.float32 if dtype in (np.float32, np.complex64) else np.float64).eps)


@st.composite
def shapes(draw, min_order: int = 2, max_order: int = 5) -> tuple[int, ...]:
    """Tensor shapes of order 2..5 (at most ~1000 entries)."""
    d = draw(st.integers(min_order, max_order))
    top = {1: 12, 2: 12, 3: 8, 4: 5, 5: 4}[d]
    return tuple(draw(st.integers(1, top)) for _ in range(d))


@st.composite
def tucker_case(draw, max_order: int = 5):
    """(shape, rank, dtype, seed) with 1 <= rank_i <= min(n_i, prod others)."""
    shape = draw(shapes(max_order=max_order))
    total = math.prod(shape)
    rank = tuple(draw(st.integers(1, min(n, total // n))) for n in shape)
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    return shape, rank, dtype, seed


def einsum_full(core: np.ndarray, factors: list[np.ndarray]) -> np.ndarray:
    """Dense Tucker reconstruction C x_i U_i via one einsum (reference)."""
    d = core.ndim
    letters = string.ascii_lowercase
    small = letters[:d]
    big = letters[d : 2 * d]
    spec = small + "," + ",".join(big[i] + small[i] for i in range(d)) + "->" + big
    return np.einsum(spec, core, *factors)


def random_tucker_np(rng: np.random.Generator, shape, rank, dtype, orthonormal=True):
    """A random Tucker tensor as numpy (core, factors)."""
    core = random_array(rng, rank, dtype)
    if orthonormal:
        factors = [random_orthonormal(rng, n, r, dtype) for n, r in zip(shape, rank, strict=True)]
    else:
        factors = [random_array(rng, (n, r), dtype) for n, r in zip(shape, rank, strict=True)]
    return core, factors


def unfold_np(x: np.ndarray, i: int) -> np.ndarray:
    """Reference unfolding (C order, the library's documented convention)."""
    return np.moveaxis(x, i, 0).reshape(x.shape[i], -1)


def unfolding_sv(x: np.ndarray) -> list[np.ndarray]:
    """Singular values (float64 dense SVD) of every unfolding of ``x``."""
    x = np.asarray(x, dtype=np.complex128 if np.iscomplexobj(x) else np.float64)
    return [np.linalg.svd(unfold_np(x, i), compute_uv=False) for i in range(x.ndim)]


def tails(s: np.ndarray) -> np.ndarray:
    """tails[r] = ||s[r:]||, for r = 0..len(s)."""
    s2 = np.asarray(s, dtype=np.float64) ** 2
    t2 = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])
    return np.sqrt(np.maximum(t2, 0.0))


def close(a, b, dtype, scale: float | None = None) -> bool:
    """Relative comparison in the norm of ``b`` (or ``scale``)."""
    a = np.asarray(a)
    b = np.asarray(b)
    ref = np.linalg.norm(b) if scale is None else scale
    return bool(np.linalg.norm(a - b) <= rtol_for(dtype) * max(ref, 1e-30) * 10)
