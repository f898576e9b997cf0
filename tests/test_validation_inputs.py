"""Bad input to the core raises ValueError/TypeError naming the argument and accepted range."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import random_array, random_orthonormal

from tucker_dlra import (
    TuckerTensor,
    check_orthonormal,
    hosvd,
    tangent_components,
    tangent_project,
    truncate,
)


@pytest.fixture
def x(backend):
    return backend.asarray(random_array(np.random.default_rng(0), (4, 5, 6), np.float64))


@pytest.fixture
def t(backend, x):
    return hosvd(x, rank=(2, 3, 3))


@pytest.mark.parametrize("fn", ["hosvd", "truncate"])
@pytest.mark.parametrize("name", ["rtol", "atol"])
@pytest.mark.parametrize("value", [-0.1, math.nan, math.inf])
def test_bad_tolerance_value(x, t, fn, name, value):
    f, arg = (hosvd, x) if fn == "hosvd" else (truncate, t)
    with pytest.raises(ValueError, match=rf"{name} must be a finite real number >= 0; got"):
        f(arg, **{name: value})


@pytest.mark.parametrize("value", ["0.1", [0.1], True])
def test_bad_tolerance_type(x, value):
    with pytest.raises(TypeError, match=r"rtol must be a real number >= 0"):
        hosvd(x, rtol=value)


def test_both_tolerances(x, t):
    with pytest.raises(ValueError, match=r"at most one of rtol and atol"):
        hosvd(x, rtol=0.1, atol=0.1)
    with pytest.raises(ValueError, match=r"at most one of rtol and atol"):
        truncate(t, rtol=0.1, atol=0.1)


def test_rank_larger_than_dimension(x, t):
    with pytest.raises(ValueError, match=r"rank\[0\] = 5 exceeds the largest possible rank 4 "
                                         r"of mode 0.*\[1, 4\]"):
        hosvd(x, rank=(5, 2, 2))
    with pytest.raises(ValueError, match=r"rank\[1\] = 4 exceeds .* rank 3 of mode 1.*\[1, 3\]"):
        truncate(t, rank=(1, 4, 1))  # the core of t has shape (2, 3, 3)
    # an int rank applies to every mode and must fit all of them
    with pytest.raises(ValueError, match=r"rank\[0\] = 5 exceeds"):
        hosvd(x, rank=5)


def test_rank_product_bound(backend):
    # mode 0 of a (6, 2) tensor has rank <= min(6, 2) = 2
    y = backend.asarray(np.ones((6, 2)))
    with pytest.raises(ValueError, match=r"rank\[0\] = 3 exceeds the largest possible rank 2"):
        hosvd(y, rank=(3, 2))


def test_bad_rank_spec(x):
    with pytest.raises(ValueError, match=r"rank must have one entry per mode \(3\); got 2"):
        hosvd(x, rank=(2, 2))
    with pytest.raises(ValueError, match=r"rank\[1\] must be in \[1, 5\]; got 0"):
        hosvd(x, rank=(2, 0, 2))
    with pytest.raises(TypeError, match=r"rank\[0\] must be an int"):
        hosvd(x, rank=(2.5, 2, 2))
    with pytest.raises(TypeError, match=r"rank must be an int or a sequence of 3 ints"):
        hosvd(x, rank=object())
    with pytest.raises(ValueError, match=r"max_rank must be >= 1; got 0"):
        hosvd(x, rtol=0.1, max_rank=0)
    with pytest.raises(ValueError, match=r"min_rank\[0\] = 3 exceeds max_rank\[0\] = 2"):
        hosvd(x, rtol=0.1, max_rank=2, min_rank=3)


def test_bad_rule_and_method(x, t):
    with pytest.raises(ValueError, match=r"rule must be one of \('split', 'per_mode'\)"):
        hosvd(x, rtol=0.1, rule="global")
    with pytest.raises(ValueError, match=r"method must be 'auto', 'gram' or 'svd'"):
        truncate(t, rtol=0.1, method="eig")


def test_integer_dtype(backend):
    xi = backend.asarray(np.arange(24).reshape(2, 3, 4))
    with pytest.raises(TypeError, match=r"x must have a floating dtype"):
        hosvd(xi, rank=1)
    with pytest.raises(TypeError, match=r"core must have a floating dtype"):
        TuckerTensor(xi, [backend.asarray(np.eye(n)) for n in (2, 3, 4)])
    with pytest.raises(TypeError, match=r"x must be a NumPy array, a torch.Tensor"):
        hosvd([[1.0, 2.0]], rank=1)


def test_tucker_tensor_mismatch(backend):
    rng = np.random.default_rng(1)
    core = backend.asarray(random_array(rng, (2, 3), np.float64))
    u = backend.asarray(random_array(rng, (4, 2), np.float64))
    with pytest.raises(ValueError, match=r"factors must hold one matrix per mode of core \(2\)"):
        TuckerTensor(core, [u])
    with pytest.raises(ValueError, match=r"factors\[1\] must have shape \(n_1, 3\)"):
        TuckerTensor(core, [u, backend.asarray(random_array(rng, (5, 2), np.float64))])
    with pytest.raises(TypeError, match=r"factors\[1\] has dtype .* but core has"):
        TuckerTensor(core, [u, backend.asarray(random_array(rng, (5, 3), np.float32))])
    a = TuckerTensor(core, [u, backend.asarray(random_array(rng, (5, 3), np.float64))])
    b = TuckerTensor(core, [u, backend.asarray(random_array(rng, (6, 3), np.float64))])
    with pytest.raises(ValueError, match=r"cannot add shapes \(4, 5\) and \(4, 6\)"):
        a + b
    with pytest.raises(ValueError, match=r"other has shape \(4, 6\); expected \(4, 5\)"):
        a.inner(b)
    with pytest.raises(ValueError, match=r"other has shape \(5, 4\); expected \(4, 5\)"):
        a.inner(backend.asarray(np.zeros((5, 4))))
    with pytest.raises(TypeError, match=r"t must be a TuckerTensor"):
        truncate(backend.asarray(np.zeros((4, 5))), rtol=0.1)


def test_non_orthonormal_factors(backend):
    rng = np.random.default_rng(2)
    core = backend.asarray(random_array(rng, (2, 2), np.float64))
    good = random_orthonormal(rng, 5, 2, np.float64)
    bad = 1.01 * random_orthonormal(rng, 4, 2, np.float64)
    t = TuckerTensor(core, [backend.asarray(good), backend.asarray(bad)])
    z = backend.asarray(np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"t\.factors\[1\] must have orthonormal columns "
                                         r"\(\|\|U\^H U - I\|\| <= .*got deviation"):
        tangent_project(t, z)
    with pytest.raises(ValueError, match=r"t\.factors\[1\] must have orthonormal columns"):
        tangent_components(t, z)
    with pytest.raises(ValueError, match=r"factors\[1\] must have orthonormal columns"):
        check_orthonormal(t.factors)
    check_orthonormal([backend.asarray(good)])  # passes silently


def test_non_finite_data(backend):
    bad = np.ones((3, 4))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x must have finite entries \(no NaN or inf\)"):
        hosvd(backend.asarray(bad), rtol=0.1)
    inf = np.ones((3, 4))
    inf[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"x must have finite entries"):
        hosvd(backend.asarray(inf), rank=1)
    t = TuckerTensor(backend.asarray(bad), [backend.asarray(np.eye(n)) for n in (3, 4)])
    with pytest.raises(ValueError, match=r"t must have finite entries"):
        truncate(t, atol=0.1)


def test_rank_given_as_a_string_is_a_type_error(x, t):
    with pytest.raises(TypeError, match="rank must be an int or a sequence of 3 ints; got the str"):
        hosvd(x, rank="3")
    with pytest.raises(TypeError, match="rank must be an int or a sequence"):
        truncate(t, rank="2")


def test_rank_that_is_not_a_tucker_rank_is_refused(x, t):
    """r_i > prod_{j != i} r_j cannot be a multilinear rank: refused, naming the valid one."""
    with pytest.raises(ValueError, match=r"not a Tucker rank: rank\[2\] = 4 exceeds the product "
                       r"2.*valid: \(1, 2, 2\)"):
        hosvd(x, rank=(1, 2, 4))
    with pytest.raises(ValueError, match="not a Tucker rank"):
        truncate(t, rank=(2, 1, 3))
    assert hosvd(x, rank=(1, 2, 2)).rank == (1, 2, 2)


@pytest.mark.parametrize("tol", ["rtol", "atol"])
def test_fixed_rank_and_tolerance_together_are_refused(x, t, tol):
    with pytest.raises(ValueError, match="give at most one of rank and rtol/atol"):
        hosvd(x, rank=(2, 2, 2), **{tol: 0.1})
    with pytest.raises(ValueError, match="give at most one of rank and rtol/atol"):
        truncate(t, rank=2, **{tol: 0.1})
    # None entries leave those modes to the tolerance: allowed
    assert hosvd(x, rank=(2, None, None), **{tol: 0.0}).rank[0] == 2


def test_empty_tensors_are_a_clear_error(backend):
    x = backend.asarray(np.zeros((0, 3, 2)))
    with pytest.raises(ValueError, match=r"x has an empty mode \(shape \(0, 3, 2\)\)"):
        hosvd(x)
    t = TuckerTensor(backend.asarray(np.zeros((1, 1))), [backend.asarray(np.zeros((0, 1))),
                                                          backend.asarray(np.ones((2, 1)))])
    with pytest.raises(ValueError, match="t has an empty mode"):
        truncate(t)


def test_half_precision_is_factorised_in_float32():
    """float16 (NumPy, torch) and bfloat16 (torch): hosvd and truncate return the input's
    dtype, orthonormal to its rounding, and agree with the float32 computation."""
    torch = pytest.importorskip("torch")
    x32 = random_array(np.random.default_rng(2), (5, 6, 7), np.float32)
    cases = [(x32.astype(np.float16), np.float16),
             (torch.from_numpy(x32).to(torch.float16), torch.float16),
             (torch.from_numpy(x32).to(torch.bfloat16), torch.bfloat16)]
    for xh, dt in cases:
        y = hosvd(xh, rank=(3, 3, 4))
        assert y.dtype == dt and y.orthonormal
        check_orthonormal(y.factors)
        ref = hosvd(x32, rank=(3, 3, 4)).full()
        full = y.full()
        full = np.asarray(full.float()) if hasattr(full, "float") else full.astype(np.float32)
        assert np.linalg.norm(full - ref) <= 3e-2 * np.linalg.norm(ref)
        z, info = truncate(y, rank=(2, 2, 2), full_output=True)
        assert z.dtype == dt and z.rank == (2, 2, 2) and info.rank == (2, 2, 2)
