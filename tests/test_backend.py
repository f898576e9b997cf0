"""Backend helpers that pack and unpack many arrays: exact round trips on every path (torch's
one-operation kernels and the generic fallback), and their deterministic operation counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tucker_dlra.backend import flat_concat, namespace, split_flat

torch = pytest.importorskip("torch")
from tucker_dlra.nn._profiling import OpCounter  # noqa: E402

shapes_st = st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple),
                     min_size=1, max_size=6)


def _reference(arrays):
    return np.concatenate([np.asarray(a).reshape(-1) for a in arrays])


@settings(max_examples=40, deadline=None)
@given(shapes=shapes_st, transpose=st.booleans())
def test_flat_concat_and_split_flat_round_trip(shapes, transpose):
    g = torch.Generator().manual_seed(len(shapes))
    arrays = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    if transpose:  # non-contiguous inputs are flattened in their logical (C) order
        arrays = [a.mT if a.ndim > 1 else a for a in arrays]
    xp = namespace(arrays[0])
    flat = flat_concat(xp, arrays)
    np.testing.assert_array_equal(flat.numpy(), _reference([a.numpy() for a in arrays]))
    back = split_flat(xp, flat, [tuple(a.shape) for a in arrays])
    for a, b in zip(arrays, back, strict=True):
        assert b.shape == a.shape
        assert torch.equal(a, b)
        assert b.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()  # views


def test_split_flat_honours_offset_and_a_sliced_flat():
    base = torch.arange(20.0)
    flat = base[3:]  # a view with a storage offset
    a, b = split_flat(namespace(flat), flat, [(2, 3), (4,)], offset=1)
    assert torch.equal(a, torch.arange(4.0, 10.0).reshape(2, 3))
    assert torch.equal(b, torch.arange(10.0, 14.0))


@pytest.mark.parametrize("case", ["0d", "empty", "mixed_dtype", "grad"])
def test_flat_concat_falls_back_where_the_kernel_cannot(case):
    arrays = [torch.randn(2, 3), torch.randn(4)]
    if case == "0d":
        arrays.append(torch.tensor(5.0))
    elif case == "empty":
        arrays.append(torch.zeros(0, 3))
    elif case == "mixed_dtype":
        arrays.append(torch.randn(2, dtype=torch.float64))
    else:
        arrays = [a.requires_grad_() for a in arrays]
    xp = namespace(arrays[0])
    if case == "mixed_dtype":  # concat promotes, like the fallback always did
        flat = flat_concat(xp, arrays)
        assert flat.dtype == torch.float64
    else:
        flat = flat_concat(xp, arrays)
    np.testing.assert_array_equal(flat.detach().numpy(),
                                  _reference([a.detach().double().numpy() for a in arrays])
                                  .astype(flat.detach().numpy().dtype))
    if case == "grad":  # the fallback keeps autograd: d(sum w * flat)/da = w
        w = torch.arange(float(flat.numel()))
        (w * flat).sum().backward()
        assert torch.equal(arrays[0].grad.reshape(-1), w[:6])
        assert torch.equal(arrays[1].grad, w[6:])


def test_numpy_arrays_take_the_generic_path():
    arrays = [np.arange(6.0).reshape(2, 3), np.arange(3.0), np.float64(7.0) * np.ones(())]
    xp = namespace(arrays[0])
    flat = flat_concat(xp, arrays)
    np.testing.assert_array_equal(flat, _reference(arrays))
    back = split_flat(xp, flat, [(2, 3), (3,), ()])
    for a, b in zip(arrays, back, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pack_and_unpack_cost_one_operation_and_one_per_block():
    """Deterministic cost: packing n tensors is one kernel (plus a flat view), unpacking
    one strided view per block, where flatten+concat and slice+reshape take n+1 and 2n."""
    arrays = [torch.randn(3, 4), torch.randn(2, 2, 3), torch.randn(5), torch.randn(3, 3).mT]
    xp = namespace(arrays[0])
    with OpCounter() as c:
        flat = flat_concat(xp, arrays)
    assert c.ops == 2, c.by_name
    with OpCounter() as c:
        split_flat(xp, flat, [tuple(a.shape) for a in arrays])
    assert c.ops == len(arrays), c.by_name
    assert flat.numel() == sum(math.prod(a.shape) for a in arrays)
