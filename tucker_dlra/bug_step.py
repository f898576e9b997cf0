r"""One step of the BUG family for many Tucker tensors at once (Algorithm 1 as a skeleton).

The integrators :func:`~tucker_dlra.integrators.bug`, :func:`~tucker_dlra.integrators.ra_bug`
and :func:`~tucker_dlra.integrators.parallel_bug` and the ``TDLRT`` optimizer of
:mod:`tucker_dlra.nn` all run the same sequence; :func:`bug_step` owns it and takes the
substep *solvers* as arguments (small ODE solves for the integrators, one descent step
with momentum/Adam for training):

1. K-phase (Algorithm 1, lines 2-4; Theorem 1): for every mode of every tensor the QR
   :math:`\mathrm{Mat}_i(C)^H = Q_i S_i^H`, :math:`K_i(t_0) = U_i S_i`, then the caller's
   ``k_solve`` gives :math:`K_i(t_1)`.  All modes start from the same point.
2. Augmentation (lines 5-7): :math:`[U_i \mid K_i] = \hat U_i R_i` (Householder QR).  The
   new basis is :math:`\hat U_i` itself; since :math:`U_i = \hat U_i[:, :r_i]\,R_i^{11}`,
   the Galerkin core (line 8) is the zero-padded :math:`C \times_i R_i^{11}`, exact in
   exact arithmetic.  (Fixed-rank BUG: :math:`U^1_i = \mathrm{orth}(K_i)`,
   :math:`\tilde C = C \times_i U_i^{1H} U_i`.)
3. C-step (line 9) by the caller's ``c_solve``.  Parallel BUG (Ceruti, Kusch, Lubich &
   Sulz): the C-step runs in the old bases and the augmented core is assembled block-wise.
4. Truncation (lines 10-12) of all augmented cores by :func:`truncate_many`: Gram matrices
   and eigendecompositions batched over equal shapes, ranks chosen on the device, read
   back to the host **once** for all tensors; then the lossless re-rounding to a valid
   Tucker rank (:func:`~tucker_dlra.tucker.valid_rank`) and the combined error bound.
5. Transport matrices of linear state between the old and the new coordinates
   (:func:`k_transport`, :func:`core_transport`).

Batching across tensors: QRs and eigendecompositions are batched over equal shapes; the
core-sized products (Galerkin cores, truncated cores, Gram matrices, transports of linear
state) of tensors of equal order, dtype and device run as one batched product over a
zero-padded stack (:func:`mode_products_many`) -- zero padding is exact for mode products,
so every tensor's result equals its own product up to rounding.  Stacks are built by one
gather from the sources' flattenings: transposes, sub-blocks and axis permutations of
arrays (and the pieces this module split off a stack earlier) are read through their
strides, with no array operation per matrix; with every mode multiplied, the products
run cyclically (contract the leading mode, append the new one last), one batched matrix
product per mode and no transposition of the stack.

Why the augmented basis is the QR factor and not ``[U, Q[:, r:]]``: keeping the old
factor literally first (as :func:`~tucker_dlra.steps.augment_basis` does) carries its
rounding errors from step to step, so :math:`\|U^H U - I\|` grows linearly with the number
of steps (float32: about 1e-4 after a few thousand steps, far sooner with TF32 matmuls).
The Householder factor is orthonormal to working precision at every step, so the drift
cannot accumulate; the price is :math:`d` products of the core with :math:`r_i\times r_i`
triangles, negligible next to the truncation.

References: Ceruti & Lubich, "An unconventional robust integrator for dynamical low-rank
approximation", BIT 62 (2022) 23-44; Ceruti, Kusch & Lubich, "A rank-adaptive robust
integrator for dynamical low-rank approximation", BIT 62 (2022) 1149-1174; Ceruti, Kusch,
Lubich & Sulz, "A parallel basis update and Galerkin integrator for tree tensor networks".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ._validate import per_mode
from .backend import bmm, conj, ct, dtype_eps, flat_concat, namespace, split_flat
from .tensor import multi_mode_product, unfold
from .tucker import RULES, TruncationInfo, TuckerTensor, pad_core, truncate, valid_rank

__all__ = [
    "KStart",
    "NonFiniteCore",
    "Truncation",
    "StepParts",
    "batched",
    "k_starts",
    "augment",
    "truncate_many",
    "k_transport",
    "core_transport",
    "k_transport_many",
    "core_transport_many",
    "k_state_transport_many",
    "core_state_transport_many",
    "mode_products_many",
    "bug_step",
    "bug_step_begin",
    "bug_step_end",
    "read_back",
    "truncate_prepare",
    "truncate_finish",
    "VARIANTS",
    "jacobi_eigh",
    "sync_free_eigh",
]

Array = Any

#: Variants of :func:`bug_step`: fixed-rank BUG, rank-adaptive BUG (Algorithm 1),
#: parallel BUG (augmented, C-step in the old bases).
VARIANTS = ("bug", "ra_bug", "parallel")


def _device(x: Array) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


def batched(fn: Callable[[Array], Any], mats: Sequence[Array]) -> list[tuple[Array, ...]]:
    """Apply a stack-aware ``fn`` to every array of ``mats``, one call per shape.

    Arrays of equal shape, dtype and device are stacked along a new leading axis and
    passed together (``fn`` must accept a stack and a single array, as
    ``linalg.qr``/``eigh`` do; an array alone in its group is passed as it is); the
    results are split again (one ``unstack`` per result).  Batched LAPACK/cuSOLVER calls
    loop over the same kernel, so the results equal the one-at-a-time ones.  Returns one
    tuple of outputs per input.  Cost: the sum of the individual costs; one library call
    per distinct shape.
    """
    groups: dict[tuple, list[int]] = {}
    for k, m in enumerate(mats):
        groups.setdefault((tuple(m.shape), str(m.dtype), str(_device(m))), []).append(k)
    out: list[Any] = [None] * len(mats)
    for idx in groups.values():
        if len(idx) == 1:  # no stack to build and split
            res = fn(mats[idx[0]])
            out[idx[0]] = tuple(res) if isinstance(res, tuple | list) else (res,)
            continue
        xp = namespace(mats[idx[0]])
        res = fn(xp.stack([mats[k] for k in idx]))
        res = tuple(res) if isinstance(res, tuple | list) else (res,)
        for k, items in zip(idx, zip(*(xp.unstack(r) for r in res), strict=True),
                            strict=True):
            out[k] = tuple(items)
    return out


# ------------------------------------------------------------------------------ stacking
# Core-sized products of many tensors are run as one batched product over a zero-padded
# stack: a mode product of zero-padded operands is the zero-padded product (the padded
# rows/columns only ever meet zeros), so every tensor's block of the result equals its own
# product to rounding.  Padding and unpadding are one gather each, with index arrays cached
# per shape set (rebuilt only when ranks change).
_GATHER_CACHE: dict[tuple, Any] = {}
_GATHER_CACHE_MAX = 256
#: Smallest group run as a zero-padded stack (smaller groups: one product per tensor).
_STACK_MIN = 2


def _cached(key: tuple, build: Callable[[], Any]) -> Any:
    hit = _GATHER_CACHE.get(key)
    if hit is None:
        if len(_GATHER_CACHE) >= _GATHER_CACHE_MAX:
            _GATHER_CACHE.pop(next(iter(_GATHER_CACHE)))
        hit = _GATHER_CACHE[key] = build()
    return hit


def _const(xp: Any, dev: Any, values: list, dtype: Any) -> Array:
    """A constant array built from host ``values``, cached (one transfer per distinct
    value set)."""
    def key(v: Any) -> Any:  # nested lists to tuples, without a call per scalar
        if not isinstance(v, list | tuple):
            return v
        if v and isinstance(v[0], list | tuple):
            return tuple(key(x) for x in v)
        return tuple(v)

    return _cached(("const", key(values), str(dtype), str(dev), xp.__name__),
                   lambda: xp.asarray(values, dtype=dtype, device=dev))


def _grid_index(shape: Sequence[int], strides: Sequence[int],
                valid: Sequence[int] | None = None, fill: int = 0) -> Any:
    """Flat positions ``sum_k c_k strides_k`` over the grid ``shape`` (C order, a host
    NumPy array); with ``valid``, positions with some ``c_k >= valid_k`` get ``fill``."""
    import numpy as np

    d = len(shape)
    pos = np.zeros(tuple(shape), dtype=np.int64)
    ok = np.ones(tuple(shape), dtype=bool)
    for k in range(d):
        c = np.arange(shape[k], dtype=np.int64).reshape(
            tuple(shape[k] if j == k else 1 for j in range(d)))
        pos = pos + c * strides[k]
        if valid is not None:
            ok = ok & (c < valid[k])
    if valid is not None:
        pos = np.where(ok, pos, fill)
    return pos.reshape(-1)


def _index_array(xp: Any, dev: Any, parts: list) -> Array:
    """Concatenated host index parts as one int64 array on ``dev`` (one transfer)."""
    import numpy as np

    return xp.asarray(np.concatenate(parts), dtype=xp.int64, device=dev)


def _strides(shape: Sequence[int]) -> list[int]:
    return [math.prod(shape[k + 1:]) for k in range(len(shape))]


class _View:
    """A strided block of the C-order flattening of ``src`` (element ``off + sum_k c_k
    strides_k`` at multi-index ``c``): transposes and sub-blocks of arrays, read by one
    gather (:func:`_gather`) without an array operation per block."""

    __slots__ = ("src", "off", "shape", "strides")

    def __init__(self, src: Array, off: int = 0, shape: Sequence[int] | None = None,
                 strides: Sequence[int] | None = None) -> None:
        self.src = src
        self.off = int(off)
        self.shape = tuple(int(s) for s in (src.shape if shape is None else shape))
        self.strides = tuple(_strides(self.shape) if strides is None else strides)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> Any:
        return self.src.dtype

    def mT(self) -> _View:  # noqa: N802 - as the array API's matrix transpose
        """The transpose of the last two axes."""
        return _View(self.src, self.off, (*self.shape[:-2], self.shape[-1], self.shape[-2]),
                     (*self.strides[:-2], self.strides[-1], self.strides[-2]))

    def block(self, lead: Sequence[int], sizes: Sequence[int]) -> _View:
        """``self[lead..., :sizes[0], :sizes[1], ...]``."""
        off = self.off + sum(int(c) * s for c, s in zip(lead, self.strides, strict=False))
        return _View(self.src, off, sizes, self.strides[len(lead):])


    def permute(self, order: Sequence[int]) -> _View:
        """Axis ``k`` of the result is axis ``order[k]`` of ``self``."""
        return _View(self.src, self.off, [self.shape[k] for k in order],
                     [self.strides[k] for k in order])

    def moveaxis(self, src: int, dst: int) -> _View:
        order = list(range(self.ndim))
        order.insert(dst % self.ndim, order.pop(src % self.ndim))
        return _View(self.src, self.off, [self.shape[k] for k in order],
                     [self.strides[k] for k in order])


# Arrays this module split off a stack (``unstack``, slices, axis moves: views of it) are
# remembered with their block of the stack, so that a later gather reads the stack once
# instead of flattening every block (one array operation, a copy when strided, each).
# Entries die with the array (weak reference; its id is reused only after that).
_ORIGIN: dict[int, tuple[Any, _View]] = {}


def _track(x: Array, view: _View) -> Array:
    """Record that ``x`` (a view of ``view.src``) holds the block ``view``; returns ``x``."""
    import weakref

    key = id(x)
    try:
        ref = weakref.ref(x, lambda _r, key=key: _ORIGIN.pop(key, None))
    except TypeError:  # pragma: no cover - arrays without weak references: not tracked
        return x
    _ORIGIN[key] = (ref, view)
    return x


def _unstack_tracked(xp: Any, stack: Array) -> list[Array]:
    """``xp.unstack(stack)``, every item tracked as its block of ``stack``."""
    shape = tuple(int(s) for s in stack.shape[1:])
    per = math.prod(shape)
    return [_track(x, _View(stack, j * per, shape)) for j, x in enumerate(xp.unstack(stack))]


def _as_view(x: Array | _View) -> _View:
    if isinstance(x, _View):
        return x
    hit = _ORIGIN.get(id(x))
    if hit is not None and hit[0]() is x:
        return hit[1]
    return _View(x)


def _shape(x: Array | _View) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _source(x: Array | _View) -> Array:
    return x.src if isinstance(x, _View) else x


def _source_id(x: Array, sid: dict[int, int], srcs: list[Array]) -> int:
    """Index of the source ``x`` in ``srcs`` (appended on first sight; ``sid`` maps ids)."""
    if id(x) not in sid:
        sid[id(x)] = len(srcs)
        srcs.append(x)
    return sid[id(x)]


def _offsets(sizes: Sequence[int]) -> list[int]:
    """Start of every source in the packed vector, then its length (prefix sums)."""
    offs = [0]
    for n in sizes:
        offs.append(offs[-1] + n)
    return offs


def _pack(xp: Any, srcs: Sequence[Array], zero: bool) -> Array:
    """The sources flattened and packed in one vector (:func:`flat_concat`); ``zero``: one
    trailing zero, the entry padded positions of a gather read."""
    if zero:
        srcs = [*srcs, xp.zeros((1,), dtype=srcs[0].dtype, device=_device(srcs[0]))]
    return flat_concat(xp, list(srcs))


def _gather(parts: Sequence[tuple[Sequence[Array | _View], Sequence[int]]],
            lead: bool = True) -> list[Array]:
    """Zero-padded stacks of blocks, all by one gather: ``parts[p] = (blocks, target)``
    gives an array of shape ``(len(blocks), *target)`` whose row ``k`` holds ``blocks[k]``
    (a :class:`_View` or an array of the same order as ``target``, no larger) in its
    leading corner and zeros elsewhere; the blocks of one part share dtype and device (one
    gather per dtype and device).  Each distinct source is flattened once.  Index arrays
    are cached per layout.  ``lead=False`` (parts of one block each): arrays of shape
    ``target``, without the leading axis."""
    fam: dict[tuple, list[int]] = {}
    for p, (blocks, _) in enumerate(parts):
        x = _as_view(blocks[0]).src
        fam.setdefault((str(x.dtype), str(_device(x))), []).append(p)
    if len(fam) > 1:  # one gather per dtype and device
        res: list[Any] = [None] * len(parts)
        for ps in fam.values():
            for p, r in zip(ps, _gather([parts[p] for p in ps], lead), strict=True):
                res[p] = r
        return res
    srcs: list[Array] = []
    sid: dict[int, int] = {}
    layout = []
    pad = False
    for blocks, target in parts:
        target = tuple(int(s) for s in target)
        for b in blocks:
            v = _as_view(b)
            if len(v.shape) != len(target):
                raise ValueError(f"block of shape {v.shape} does not fit target {target}")
            pad = pad or v.shape != target
            layout.append((_source_id(v.src, sid, srcs), v.off, v.shape, v.strides, target))
    xp = namespace(srcs[0])
    dev = _device(srcs[0])
    sizes = tuple(math.prod(tuple(int(s) for s in x.shape)) for x in srcs)

    def build() -> Array:
        offs = _offsets(sizes)
        pieces = []
        for s, off, shape, strides, target in layout:
            base = offs[s] + off
            pieces.append(_grid_index(target, strides, None if shape == target else shape,
                                      fill=offs[-1] - base) + base)
        return _index_array(xp, dev, pieces)

    idx = _cached(("gather", sizes, tuple(layout), pad, str(dev), xp.__name__), build)
    g = _pack(xp, srcs, pad)[idx]
    shapes = [(len(blocks), *target) if lead else tuple(target) for blocks, target in parts]
    shapes = [tuple(int(s) for s in shape) for shape in shapes]
    if len(parts) == 1:
        return [xp.reshape(g, shapes[0])]
    return split_flat(xp, g, shapes)


def _materialize(xs: Sequence[Array | _View]) -> list[Array]:
    """The blocks of ``xs`` as arrays (arrays pass through), by one gather."""
    todo = [k for k, x in enumerate(xs) if isinstance(x, _View)]
    out = list(xs)
    if todo:
        for k, a in zip(todo, _gather([([xs[k]], xs[k].shape) for k in todo], lead=False),
                        strict=True):
            out[k] = a
    return out


def _stack(xs: Sequence[Array | _View], target: Sequence[int]) -> Array:
    """``xs`` (arrays or :class:`_View` blocks of equal order, dtype and device)
    zero-padded to ``target`` and stacked: shape ``(len(xs), *target)``.  One
    ``stack`` when all are arrays of shape ``target``, else one gather."""
    target = tuple(int(s) for s in target)
    if all(not isinstance(x, _View) and _shape(x) == target for x in xs):
        return namespace(xs[0]).stack(list(xs))
    return _gather([([_as_view(x) for x in xs], target)])[0]


def _unstack(stack: Array, shapes: Sequence[Sequence[int]],
             out_shapes: Sequence[Sequence[int]] | None = None) -> list[Array]:
    """Inverse of :func:`_stack`: block ``shapes[t]`` of ``stack[t]``, zero-padded to
    ``out_shapes[t]`` (default ``shapes[t]``).  One gather."""
    xp = namespace(stack)
    dev = _device(stack)
    target = tuple(int(s) for s in stack.shape[1:])
    shapes = tuple(tuple(int(s) for s in s_) for s_ in shapes)
    outs = shapes if out_shapes is None else tuple(tuple(int(s) for s in o)
                                                   for o in out_shapes)
    per = math.prod(target)
    zero = per * len(shapes)

    def build() -> Array:
        parts = []
        for t, (s, o) in enumerate(zip(shapes, outs, strict=True)):
            valid = None if s == o else s
            parts.append(_grid_index(o, _strides(target), valid, fill=zero - t * per)
                         + t * per)
        return _index_array(xp, dev, parts)

    idx = _cached(("unstack", shapes, outs, target, str(dev), xp.__name__), build)
    flat = xp.reshape(stack, (-1,))
    if outs != shapes:
        flat = xp.concat([flat, xp.zeros((1,), dtype=stack.dtype, device=dev)])
    return split_flat(xp, flat[idx], list(outs))


def _stack_mode_product(x: Array, m: Array, mode: int) -> Array:
    """``x[t] x_mode m[t]`` for a stack ``x`` of shape (L, *T) and ``m`` of (L, p, T_mode)."""
    xp = namespace(x, m)
    shape = tuple(int(s) for s in x.shape)
    a, n, b = math.prod(shape[1:mode + 1]), shape[mode + 1], math.prod(shape[mode + 2:])
    p = int(m.shape[1])
    if b == 1:
        y = xp.matmul(xp.reshape(x, (shape[0], a, n)), xp.matrix_transpose(m))
    else:
        y = xp.matmul(m[:, None, :, :], xp.reshape(x, (shape[0], a, n, b)))
    return xp.reshape(y, (*shape[:mode + 1], p, *shape[mode + 2:]))


def _groups(arrs: Sequence[Array], extra_key: Callable[[int], Any] = lambda t: None
            ) -> list[list[int]]:
    groups: dict[tuple, list[int]] = {}
    for t, x in enumerate(arrs):
        groups.setdefault((x.ndim, str(x.dtype), str(_device(x)), extra_key(t)),
                          []).append(t)
    return list(groups.values())


def mode_products_many(xs: Sequence[Array], mats: Sequence[Sequence[Array | None]],
                       transpose: bool = False,
                       out_shapes: Sequence[Sequence[int]] | None = None) -> list[Array]:
    r""":math:`x_t \times_i M_{t,i}` (``None``: mode skipped) for every ``t``, batched.

    Tensors of equal order, dtype, device and pattern of skipped modes form one group;
    its tensors and matrices are zero-padded to common sizes and each mode product is one
    batched matrix product over the group (exact: padded entries only meet zeros).
    ``transpose``: multiply by :math:`M^H`.  ``out_shapes``: results zero-padded to these
    shapes.  Equal to :func:`~tucker_dlra.tensor.multi_mode_product` per tensor up to
    rounding.  Cost: the products at the group's padded sizes; a fixed number of array
    operations per group and mode (plus one reshape/slice per tensor).
    """
    return _mode_products_many(xs, mats, transpose, out_shapes)


def _mode_products_many(xs: Sequence[Array], mats: Sequence[Sequence[Array | _View | None]],
                        transpose: bool = False,
                        out_shapes: Sequence[Sequence[int]] | None = None,
                        square: bool = False, views: bool = False) -> list[Any]:
    """:func:`mode_products_many`; ``mats`` may hold :class:`_View` blocks; ``square``:
    with the elementwise squares of the matrices (squared once per stack); ``views``:
    results of stacked groups as :class:`_View` blocks of the stack (not split)."""
    out: list[Any] = [None] * len(xs)
    pattern = [tuple(m is None for m in ms) for ms in mats]
    for idx in _groups(xs, lambda t: pattern[t]):
        if len(idx) <= _STACK_MIN - 1:  # too few to amortise the stacking
            for t in idx:
                ms = _materialize(mats[t])
                if square:
                    ms = [None if m is None else m * m for m in ms]
                y = multi_mode_product(xs[t], ms, transpose=transpose)
                if out_shapes is not None and tuple(y.shape) != tuple(out_shapes[t]):
                    y = pad_core(y, [(0, int(o) - int(s))
                                     for s, o in zip(y.shape, out_shapes[t], strict=True)])
                out[t] = y
            continue
        xp = namespace(xs[idx[0]])
        d = xs[idx[0]].ndim
        cur = [list(int(s) for s in xs[t].shape) for t in idx]
        target = [max(c[k] for c in cur) for k in range(d)]
        # the tensors and every mode's matrices: one gather (transposes are strided
        # blocks of the same sources, no copy per matrix).  With every mode multiplied,
        # the products run cyclically (contract the leading mode, append the new one
        # last) and take the matrices as M^T.
        modes = [i for i in range(d) if mats[idx[0]][i] is not None]
        cyclic = len(modes) == d
        parts: list[tuple[list, list[int]]] = [([xs[t] for t in idx], target)]
        for i in modes:
            ms = [mats[t][i] for t in idx]
            if transpose != cyclic:
                ms = [_as_view(m).mT() for m in ms]
            rows = [_shape(m)[1 if cyclic else 0] for m in ms]
            parts.append((ms, [target[i], max(rows)] if cyclic else [max(rows), target[i]]))
            for c, p in zip(cur, rows, strict=True):
                c[i] = p
        if all(not isinstance(m, _View) for ms, _ in parts[1:] for m in ms) and \
                all(_shape(m) == tuple(tg) for ms, tg in parts[1:] for m in ms):
            stacks = [_stack(*parts[0])] + [xp.stack(ms) for ms, _ in parts[1:]]
        else:
            stacks = _gather(parts)
        if square:
            stacks = stacks[:1] + [st * st for st in stacks[1:]]
        x = stacks[0]
        if cyclic:
            n = len(idx)
            dims = list(target)
            for i, st in enumerate(stacks[1:]):
                rest = math.prod(dims[i + 1:]) * math.prod(int(s.shape[2])
                                                            for s in stacks[1:i + 1])
                x = bmm(xp, xp.matrix_transpose(xp.reshape(x, (n, dims[i], rest))),
                        conj(xp, st) if transpose else st)
            x = xp.reshape(x, (n, *(int(s.shape[2]) for s in stacks[1:])))
        else:
            for i, st in zip(modes, stacks[1:], strict=True):
                x = _stack_mode_product(x, conj(xp, st) if transpose else st, i)
        if views and out_shapes is None:
            tail = tuple(int(s_) for s_ in x.shape[1:])
            for pos, (t, c) in enumerate(zip(idx, cur, strict=True)):
                out[t] = _View(x, pos * math.prod(tail), c, _strides(tail))
            continue
        res = _unstack(x, cur, None if out_shapes is None else [out_shapes[t] for t in idx])
        for t, r in zip(idx, res, strict=True):
            out[t] = r
    return out


def _assemble(items: Sequence[tuple[Sequence[int], Sequence[tuple[Array | _View,
                                                                  Sequence[int]]]]]
              ) -> list[Array]:
    """Arrays of shapes ``items[k][0]`` assembled from non-overlapping blocks
    ``(block, offset)`` (zeros elsewhere), all by one gather (equal dtype and device)."""
    import numpy as np

    srcs: list[Array] = []
    sid: dict[int, int] = {}
    layout = []
    for shape, blocks in items:
        entry = []
        for b, off in blocks:
            v = _as_view(b)
            entry.append((_source_id(v.src, sid, srcs), v.off, v.shape, v.strides,
                          tuple(int(o) for o in off)))
        layout.append((tuple(int(s) for s in shape), tuple(entry)))
    xp = namespace(srcs[0])
    dev = _device(srcs[0])
    sizes = tuple(math.prod(tuple(int(s) for s in x.shape)) for x in srcs)

    def build() -> Array:
        offs = _offsets(sizes)
        pieces = []
        for shape, entry in layout:
            idx = np.full(shape, offs[-1], dtype=np.int64)
            for s, off, bshape, strides, at in entry:
                idx[tuple(slice(a, a + n) for a, n in zip(at, bshape, strict=True))] = (
                    _grid_index(bshape, strides) + offs[s] + off).reshape(bshape)
            pieces.append(idx.reshape(-1))
        return _index_array(xp, dev, pieces)

    idx = _cached(("assemble", sizes, tuple(layout), str(dev), xp.__name__), build)
    return split_flat(xp, _pack(xp, srcs, True)[idx], [shape for shape, _ in layout])


# ------------------------------------------------------------------------------ eigh
_EIGH_MODE = ["lapack"]


class sync_free_eigh:  # noqa: N801 - used as a context manager
    """Within this context the truncation's eigendecompositions use :func:`jacobi_eigh`
    (array operations only: no host synchronisation, fixed shapes -- capturable on an
    accelerator, where ``linalg.eigh`` checks its error code on the host)."""

    def __enter__(self) -> sync_free_eigh:
        self._old = _EIGH_MODE[0]
        _EIGH_MODE[0] = "jacobi"
        return self

    def __exit__(self, *exc: Any) -> None:
        _EIGH_MODE[0] = self._old


def _round_robin(n: int) -> list[tuple[list[int], list[int]]]:
    """The n-1 rounds of n/2 disjoint pairs covering every pair once (n even)."""
    others = list(range(1, n))
    rounds = []
    for _ in range(n - 1):
        order = [0] + others
        rounds.append(([min(order[k], order[n - 1 - k]) for k in range(n // 2)],
                       [max(order[k], order[n - 1 - k]) for k in range(n // 2)]))
        others = others[-1:] + others[:-1]
    return rounds


def jacobi_eigh(a: Array, sweeps: int = 16) -> tuple[Array, Array]:
    r"""Eigendecomposition of a stack of real symmetric matrices by cyclic Jacobi rotations.

    Parallel (round-robin) ordering: each of the :math:`n-1` rounds of a sweep applies
    :math:`n/2` disjoint rotations at once, :math:`A \leftarrow J^\top A J`,
    :math:`V \leftarrow V J`, each zeroing its :math:`a_{pq}` (the symmetric Schur
    decomposition; Golub & Van Loan, "Matrix Computations", 4th ed., 2013, Section 8.5,
    cyclic Jacobi with a parallel ordering); a fixed number of sweeps (no
    data-dependent stopping, so no host synchronisation; cyclic Jacobi converges
    quadratically for distinct eigenvalues, more slowly for clusters: with the default 16
    sweeps float64 reaches working precision up to :math:`n = 16` also for a spectrum of
    two 8-fold eigenvalues, measured).  Returns ``(w, v)`` like ``linalg.eigh``: ascending
    eigenvalues and orthonormal eigenvectors in the columns.  Cost
    :math:`O(\text{sweeps}\cdot n^4)` flops with dense rotation products (meant for small
    :math:`n` on accelerators) and
    :math:`O(\text{sweeps}\cdot n)` array operations.
    """
    xp = namespace(a)
    dev = _device(a)
    b, n = int(a.shape[0]), int(a.shape[-1])
    odd = n % 2 == 1
    if odd:  # one decoupled coordinate below every eigenvalue: never rotated, dropped below
        low = -(1.0 + xp.sum(xp.abs(a), axis=(1, 2)))
        a = xp.concat([xp.concat([a, xp.zeros((b, n, 1), dtype=a.dtype, device=dev)], axis=2),
                       xp.concat([xp.zeros((b, 1, n), dtype=a.dtype, device=dev),
                                  xp.reshape(low, (b, 1, 1))], axis=2)], axis=1)
        n += 1
    eye = xp.eye(n, dtype=a.dtype, device=dev)
    v = xp.broadcast_to(eye, (b, n, n))
    rounds = []
    for p, q in _round_robin(n):
        pm = xp.asarray([[1.0 if j == i else 0.0 for j in range(n)] for i in p], dtype=a.dtype,
                        device=dev)
        qm = xp.asarray([[1.0 if j == i else 0.0 for j in range(n)] for i in q], dtype=a.dtype,
                        device=dev)
        rounds.append((xp.asarray([i * n + i for i in p], dtype=xp.int64, device=dev),
                       xp.asarray([i * n + i for i in q], dtype=xp.int64, device=dev),
                       xp.asarray([i * n + j for i, j in zip(p, q, strict=True)],
                                  dtype=xp.int64, device=dev), pm, qm))
    for _ in range(sweeps):
        for ipp, iqq, ipq, pm, qm in rounds:
            flat = xp.reshape(a, (b, n * n))
            app, aqq, apq = (xp.take(flat, i, axis=1) for i in (ipp, iqq, ipq))
            zero = apq == 0
            tau = (aqq - app) / (2.0 * xp.where(zero, xp.ones_like(apq), apq))
            sgn = xp.where(tau >= 0, xp.ones_like(tau), -xp.ones_like(tau))
            t = sgn / (xp.abs(tau) + xp.sqrt(1.0 + tau * tau))
            t = xp.where(zero | ~xp.isfinite(t), xp.zeros_like(t), t)
            c = 1.0 / xp.sqrt(1.0 + t * t)
            s = t * c
            # J = I + P^T diag(c-1) P + Q^T diag(c-1) Q + P^T diag(s) Q - Q^T diag(s) P
            pt, qt = xp.matrix_transpose(pm), xp.matrix_transpose(qm)
            j = (eye + (pt * (c - 1.0)[:, None, :]) @ pm + (qt * (c - 1.0)[:, None, :]) @ qm
                 + (pt * s[:, None, :]) @ qm - (qt * s[:, None, :]) @ pm)
            a = xp.matrix_transpose(j) @ a @ j
            v = v @ j
    w = xp.sum(a * eye, axis=2)
    order = xp.argsort(w, axis=1)
    w = xp.take_along_axis(w, order, axis=1)
    v = xp.take_along_axis(v, xp.broadcast_to(order[:, None, :], v.shape), axis=2)
    if odd:
        w, v = w[:, 1:], v[:, :-1, 1:]
    return w, v


# ------------------------------------------------------------------------------ K-phase
@dataclass
class KStart:
    r"""Start of the K-steps of one tensor (Algorithm 1, line 2; Theorem 1).

    ``gs[i]`` is the frozen core :math:`G_i = \mathrm{Ten}_i(Q_i^H)`, ``ss[i]`` is
    :math:`S_i` and ``k0[i]`` is :math:`K_i(t_0) = U_i S_i`.
    """

    gs: list[Array]
    ss: list[Array]
    k0: list[Array]


def k_starts(ys: Sequence[TuckerTensor]) -> list[KStart]:
    r"""QR of every core unfolding of every tensor (Algorithm 1, line 2), batched.

    :math:`\mathrm{Mat}_i(C)^H = Q_i S_i^H`, :math:`G_i = \mathrm{Ten}_i(Q_i^H)`,
    :math:`K_i(t_0) = U_i S_i` (as :func:`~tucker_dlra.steps.k_core`, whose results these
    equal).  All unfoldings are read by one gather; one QR call per distinct unfolding
    shape, :math:`G_i` and :math:`S_i` split off its results.  Cost
    :math:`O(\sum_i r_i^2\prod_{j\ne i} r_j + n_i r_i^2)` per tensor.
    """
    out = [KStart([], [], []) for _ in ys]
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for t, y in enumerate(ys):
        shape = tuple(int(n) for n in y.core.shape)
        for i in range(y.ndim):
            rest = shape[:i] + shape[i + 1:]
            groups.setdefault((rest, shape[i], str(y.core.dtype), str(_device(y.core))),
                              []).append((t, i))
    if not groups:
        return out
    # Mat_i(C)^T of every mode of every core (strided blocks of the cores) gathered into
    # one stack per shape: shape (n_g, prod rest, r_i), one gather for all
    parts = []
    for (rest, r, _, _), members in groups.items():
        blocks = []
        for t, i in members:
            core = ys[t].core
            st = _strides(tuple(int(n) for n in core.shape))
            blocks.append(_View(core, 0, (*rest, r), (*st[:i], *st[i + 1:], st[i])))
        parts.append((blocks, (*rest, r)))
    xp = ys[0].xp
    mats = _gather(parts)
    for ((rest, r, _, _), members), a in zip(groups.items(), mats, strict=True):
        n_g = len(members)
        lead = (n_g,) if n_g > 1 else ()
        a = conj(xp, xp.reshape(a, (*lead, math.prod(rest), r)))  # Mat_i(C)^H
        q, rr = xp.linalg.qr(a, mode="reduced")
        # G_i = Ten_i(Q_i^H) and S_i = R_i^H for the whole stack, then split (Q^H: a
        # view, C-contiguous for LAPACK's column-major Q)
        kq = int(q.shape[-1])  # min(r_i, prod rest): Q_i's columns
        g = xp.reshape(ct(xp, q), (*lead, kq, *rest))
        ss = ct(xp, rr)
        per = math.prod(rest) * kq
        if n_g == 1:
            i = members[0][1]
            gs, ss = [_track(xp.moveaxis(g, 0, i), _View(g).moveaxis(0, i))], [ss]
        else:  # tracked: later gathers read the stacks, not every G_i
            gs = [_track(xp.moveaxis(gj, 0, i), _View(g, j * per, (kq, *rest)).moveaxis(0, i))
                  for j, (gj, (_, i)) in enumerate(zip(xp.unstack(g), members, strict=True))]
            ss = _unstack_tracked(xp, ss)
        for (t, i), gi, si in zip(members, gs, ss, strict=True):
            out[t].gs.append((i, gi))
            out[t].ss.append((i, si))
            out[t].k0.append((i, ys[t].factors[i] @ si))
    for st in out:  # into mode order
        st.gs, st.ss, st.k0 = ([x for _, x in sorted(lst, key=lambda p: p[0])]
                               for lst in (st.gs, st.ss, st.k0))
    return out


def augment(factors: Sequence[Sequence[Array]], ks: Sequence[Sequence[Array]]
            ) -> tuple[list[list[Array]], list[list[Array]]]:
    r"""Augmented bases :math:`\hat U_i` and triangles :math:`R^{11}_i` (Algorithm 1, l. 5-7).

    Householder QR :math:`[U_i \mid K_i] = \hat U_i R_i`, batched over equal shapes;
    :math:`\hat U_i` has :math:`\min(2 r_i, n_i)` orthonormal columns, its first
    :math:`r_i` span :math:`U_i` and :math:`U_i = \hat U_i[:, :r_i] R^{11}_i` with
    :math:`R^{11}_i = R_i[:r_i, :r_i]`, so :math:`\hat U_i^H U_i = [R^{11}_i; 0]`.  When
    :math:`K_i` lies in the span of :math:`U_i` the trailing columns are arbitrary
    orthonormal directions that truncation removes.  Cost :math:`O(n_i r_i^2)` per mode.
    """
    bases, tri, _ = _augment(factors, ks)
    return bases, [_materialize(tr) for tr in tri]


def _augment(factors: Sequence[Sequence[Array]], ks: Sequence[Sequence[Array]],
             new_coords: bool = False
             ) -> tuple[list[list[Array]], list[list[_View]], list[list[Any]]]:
    r""":func:`augment` with the triangles as blocks of the batched ``R`` (no array
    operation per triangle); ``[U | K]`` is concatenated once per stack.  With
    ``new_coords`` also :math:`\tilde U_i^H K_i` (:math:`\tilde U_i`: the new columns of
    :math:`\hat U_i`; ``None`` without new columns), batched per stack."""
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for t, (us, kk) in enumerate(zip(factors, ks, strict=True)):
        for i, (u, k) in enumerate(zip(us, kk, strict=True)):
            groups.setdefault((_shape(u), _shape(k), str(u.dtype), str(_device(u))),
                              []).append((t, i))
    bases: list[list[Any]] = [[None] * len(us) for us in factors]
    tri: list[list[Any]] = [[None] * len(us) for us in factors]
    wks: list[list[Any]] = [[None] * len(us) for us in factors]
    for (ushape, _, _, _), members in groups.items():
        us = [factors[t][i] for t, i in members]
        kk = [ks[t][i] for t, i in members]
        xp = namespace(us[0], kk[0])
        ri = ushape[1]
        # R^11 as blocks of R^T (a view, C-contiguous for LAPACK's column-major R)
        n_g = len(members)
        if n_g == 1:
            kst = kk[0]
            q, r = xp.linalg.qr(xp.concat([us[0], kst], axis=1), mode="reduced")
            qs, views = [q], [_View(xp.matrix_transpose(r)).block((), (ri, ri)).mT()]
        else:
            kst = xp.stack(kk)
            q, r = xp.linalg.qr(xp.concat([xp.stack(us), kst], axis=2), mode="reduced")
            qs = _unstack_tracked(xp, q)
            rv = _View(xp.matrix_transpose(r))
            views = [rv.block((j,), (ri, ri)).mT() for j in range(n_g)]
        m = int(q.shape[-1]) - ri
        ws: list[Any] = [None] * n_g
        if new_coords and m > 0:
            w = xp.matmul(ct(xp, q[..., ri:]), kst)  # (n_g,) m x r_i
            ws = [w] if n_g == 1 else [_View(w, j * m * ri, (m, ri)) for j in range(n_g)]
        for (t, i), qj, vj, wj in zip(members, qs, views, ws, strict=True):
            bases[t][i] = qj
            tri[t][i] = vj
            wks[t][i] = wj
    return bases, tri, wks


# ------------------------------------------------------------------------------ truncation
class NonFiniteCore(ValueError):
    """A core handed to :func:`truncate_many` has NaN or infinite entries."""


@dataclass(frozen=True)
class Truncation:
    """How one augmented core is truncated (Algorithm 1, lines 10-12).

    ``rtol``/``atol``: tolerance (at most one); with neither, ``rank`` (fixed ranks, may
    contain ``None`` = keep all).  ``max_rank``/``min_rank`` bound the result; ``rule``
    and ``method`` as in :func:`~tucker_dlra.truncate`.
    """

    rtol: float | None = None
    atol: float | None = None
    rank: Any = None
    max_rank: Any = None
    min_rank: Any = None
    rule: str = "split"
    method: str = "auto"


def truncate_many(items: Sequence[tuple[Array, Sequence[Array], Truncation]],
                  extra: Sequence[Array] = ()
                  ) -> tuple[list[tuple[TuckerTensor, TruncationInfo]], list[float]]:
    r"""Truncated HOSVD of many Tucker tensors with orthonormal factors, one host sync.

    Algorithm 1, lines 10-12 (the rank adjustment of Ceruti, Kusch & Lubich 2022) for every
    ``(core, factors, spec)`` of ``items``, with the semantics of
    :func:`~tucker_dlra.truncate` (``orthonormal=True``): per mode the Gram matrix
    :math:`\mathrm{Mat}_i(C)\mathrm{Mat}_i(C)^H`, its eigendecomposition (batched over all
    modes of all items, padded block-diagonally to power-of-two size classes; one class on
    an accelerator), the smallest rank whose discarded tail is within
    the mode's tolerance (on the device), clamped to the bounds.  All ranks, tails and
    norms -- and the arrays of ``extra`` -- are read back in one transfer.  Modes whose
    decision lies below the Gram matrix's resolution (``method="auto"``), and
    ``method="svd"``, are redone by :func:`~tucker_dlra.truncate`.  A rank that is not a
    valid Tucker rank is re-rounded losslessly to :func:`~tucker_dlra.tucker.valid_rank`
    and the error bounds combined (:math:`\sqrt{e_1^2 + e_2^2}` per mode tail).

    Returns the list of ``(TuckerTensor, TruncationInfo)`` and the read-back values of
    ``extra`` (flattened, as floats).  Cost per item :math:`O(\sum_i \hat r_i \prod_j
    \hat r_j + \hat r_i^3)` plus the core product; one device-to-host transfer in all.
    """
    plan = truncate_prepare(items, extra)
    return truncate_finish(plan, read_back(plan))


@dataclass
class TruncPlan:
    """Device half of :func:`truncate_many` (everything before the host read-back)."""

    items: list
    metas: list
    eig: dict
    offsets: list
    n_fixed: int
    vector: Any


def truncate_prepare(items: Sequence[tuple[Array, Sequence[Array], Truncation]],
                     extra: Sequence[Array] = ()) -> TruncPlan:
    """First half of :func:`truncate_many`: Gram matrices, batched ``eigh`` and the rank
    decisions on the device, gathered in one vector; no host synchronisation."""
    metas, grams, gwhere = [], [], []
    for t, (core, _factors, spec) in enumerate(items):
        xp = namespace(core)
        if spec.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}; got {spec.rule!r}")
        if spec.method not in ("auto", "gram", "svd"):
            raise ValueError(f"method must be 'auto', 'gram' or 'svd'; got {spec.method!r}")
        d = core.ndim
        shape = tuple(int(s) for s in core.shape)
        total = math.prod(shape)
        upper = [min(n, total // n) if n else 0 for n in shape]
        ranks = per_mode(spec.rank, d, "rank", upper)
        rmax = per_mode(spec.max_rank, d, "max_rank", upper, clamp=True)
        rmin = per_mode(spec.min_rank, d, "min_rank", upper, clamp=True)
        for i in range(d):
            if rmin[i] is not None and rmax[i] is not None and rmin[i] > rmax[i]:
                raise ValueError(f"min_rank[{i}] = {rmin[i]} exceeds max_rank[{i}] = {rmax[i]}")
        tol_kind = "rtol" if spec.rtol is not None else ("atol" if spec.atol is not None else None)
        modes = []
        for i in range(d):
            ident = False
            if ranks[i] is not None and spec.method == "auto":
                r = ranks[i] if rmax[i] is None else min(ranks[i], rmax[i])
                r = max(r, rmin[i] if rmin[i] is not None else 1)
                ident = r == shape[i] == upper[i]
            gi = None
            if not ident and spec.method != "svd":
                gi = len(grams)
                grams.append((shape[i], str(core.dtype), str(_device(core))))
                gwhere.append((t, i))
            modes.append({"ident": ident, "gram": gi})
        metas.append({"d": d, "shape": shape, "ranks": ranks, "rmax": rmax, "rmin": rmin,
                      "tol": tol_kind, "modes": modes})
    # device-side decisions, batched per Gram size: one row per (item, mode)
    buckets: dict[tuple, list[int]] = {}
    # on an accelerator every eigh call synchronises with the host (error check): one
    # size class per dtype there; on the CPU classes 4, 8, 16, ... (at most 8x the flops)
    big = max((n for n, _, dv in grams if dv != "cpu"), default=0)
    for gi, (n, dt, dv) in enumerate(grams):
        size = max(4, 1 << ((n if dv == "cpu" else big) - 1).bit_length())
        buckets.setdefault((size, dt, dv), []).append(gi)
    # Gram matrices Mat_i(C) Mat_i(C)^H and norms of all cores from zero-padded stacks of
    # cores of equal order, dtype and device (zero padding is exact for both)
    cores = [c for c, _, _ in items]
    gram_src: dict[tuple[int, int], tuple[Array, int]] = {}  # (item, mode) -> (stack, pos)
    norm_parts, norm_order = [], []
    gwhere_set = set(gwhere)
    for idx in _groups(cores) if cores else []:
        xp = namespace(cores[idx[0]])
        d = cores[idx[0]].ndim
        target = [max(int(cores[t].shape[k]) for t in idx) for k in range(d)]
        x = _stack([cores[t] for t in idx], target)
        n_g = len(idx)
        norm_parts.append(xp.astype(xp.linalg.vector_norm(xp.reshape(x, (n_g, -1)), axis=1),
                                    xp.float64))
        norm_order += idx
        for i in range(d):
            if not any((t, i) in gwhere_set for t in idx):
                continue
            a = xp.reshape(xp.moveaxis(x, i + 1, 1), (n_g, target[i], -1))
            gst = xp.matmul(a, ct(xp, a))
            for pos, t in enumerate(idx):
                if (t, i) in gwhere_set:
                    gram_src[(t, i)] = (gst, pos)
    flat: list[Array] = []
    if norm_parts:
        xpn = namespace(norm_parts[0])
        nv = norm_parts[0] if len(norm_parts) == 1 else xpn.concat(norm_parts)
        if norm_order != list(range(len(cores))):
            inv = [0] * len(cores)
            for k, t in enumerate(norm_order):
                inv[t] = k
            nv = xpn.take(nv, _const(xpn, _device(nv), inv, xpn.int64))
        flat.append(nv)
    eig: dict[int, tuple] = {}
    fams: dict[tuple, list] = {}  # (dtype, device) -> [(w, row, gram index, size)]
    for key, idx in buckets.items():
        size = key[0]
        sizes = [grams[gi][0] for gi in idx]
        # block-diagonal padding diag(G, -(1 + tr G) I): the padding's eigenvalues lie
        # below all of G's (G is positive semi-definite), so after the descending sort G's
        # eigenpairs come first, with eigenvectors supported on G's rows
        g = _gather_grams([gram_src[gwhere[gi]] for gi in idx], sizes, size)
        xp = namespace(g)
        dev = _device(g)
        # a diverged update would make eigh fail: zero non-finite entries (the read-back
        # norm reports them)
        g = xp.where(xp.isfinite(g), g, xp.zeros_like(g))
        if any(n < size for n in sizes):
            eye = _cached(("eye", size, str(g.dtype), str(dev), xp.__name__),
                          lambda xp=xp, n=size, dt=g.dtype, dev=dev:
                          xp.eye(n, dtype=dt, device=dev))
            trace = xp.sum(g * eye, axis=(1, 2))
            pad = _const(xp, dev, [[0.0] * n + [1.0] * (size - n) for n in sizes], g.dtype)
            g = g - eye[None, :, :] * (pad * (1.0 + trace[:, None]))[:, :, None]
        # ascending eigenpairs; the descending order is read through reversed strides
        # (V^T: C-contiguous for LAPACK's column-major V)
        w, v = jacobi_eigh(g) if _EIGH_MODE[0] == "jacobi" else xp.linalg.eigh(g)
        if not xp.isdtype(v.dtype, "complex floating"):
            # sign convention: every eigenvector's largest-magnitude entry positive.  The
            # solver's signs can flip under rounding-level changes of the Gram matrix
            # (another summation order, gradients averaged over workers); with the
            # convention the truncated factors and core follow the tensor continuously
            piv = xp.take_along_axis(v, xp.argmax(xp.abs(v), axis=1, keepdims=True), axis=1)
            v = v * (1.0 - 2.0 * xp.astype(piv < 0, v.dtype))
        vt = xp.matrix_transpose(v)
        fam = fams.setdefault((str(w.dtype), str(dev)), [])
        for row, gi in enumerate(idx):
            eig[gi] = [vt, row, sizes[row], None, len(fam)]
            fam.append((w, row, gi, size))
    # the rank decisions of all buckets of a dtype and device at once: eigenvalues in
    # descending order, zero-padded (zeros add nothing to the tails), one row per
    # (item, mode)
    for rows in fams.values():
        kmax = max(size for _, _, _, size in rows)
        w0 = rows[0][0]
        xp = namespace(w0)
        dev = _device(w0)
        w = _gather([([_View(wb, row * size + size - 1, (size,), (-1,))
                       for wb, row, _, size in rows], (kmax,))])[0]
        w = xp.where(w > 0, w, xp.zeros_like(w))
        eps = dtype_eps(xp, w.dtype)
        coef, add, need, fixed, rmax, rmin, msz, gram_only, item, k_rows = (
            [] for _ in range(10))
        for _, _, gi, _ in rows:
            t, i = gwhere[gi]
            n = grams[gi][0]
            m, spec = metas[t], items[t][2]
            scale = 1.0 / math.sqrt(m["d"]) if spec.rule == "split" else 1.0
            tol_row = m["ranks"][i] is None and m["tol"] is not None
            need.append(tol_row)
            coef.append(spec.rtol * scale if tol_row and m["tol"] == "rtol" else 0.0)
            add.append(float(spec.atol) * scale if tol_row and m["tol"] == "atol" else 0.0)
            fixed.append(n if m["ranks"][i] is None else int(m["ranks"][i]))
            rmax.append(n if m["rmax"][i] is None else int(m["rmax"][i]))
            rmin.append(1 if m["rmin"][i] is None else int(m["rmin"][i]))
            msz.append(float(m["shape"][i]))
            gram_only.append(spec.method == "gram")
            item.append(t)
            k_rows.append(n)

        def arr(vals: list, dt: Any, xp: Any = xp, dev: Any = dev) -> Array:
            return _const(xp, dev, vals, dt)

        k_rows_a = arr(k_rows, xp.int64)
        nvec = xp.astype(xp.take(_to_device(flat[0], dev), arr(item, xp.int64)), w.dtype)
        tol = nvec * arr(coef, w.dtype) + arr(add, w.dtype)
        thr2 = tol * tol
        lam0 = w[:, 0]
        msz_a = arr(msz, w.dtype)
        cut = thr2 - 2.0 * eps * msz_a * lam0
        cut = xp.where(cut > 0, cut, xp.zeros_like(cut))
        tail2 = xp.flip(xp.cumulative_sum(xp.flip(w, axis=1), axis=1), axis=1)
        r_tol = xp.sum(xp.astype(tail2 > cut[:, None], xp.int64), axis=1)
        fixed_a = arr(fixed, xp.int64)
        need_a = arr(need, xp.bool)
        r = xp.where(need_a, r_tol, fixed_a)
        r = xp.minimum(xp.maximum(xp.minimum(r, arr(rmax, xp.int64)), arr(rmin, xp.int64)),
                       k_rows_a)
        cols = arr([list(range(kmax))], xp.int64)
        tail_r = xp.sum(xp.where(cols == r[:, None], tail2, xp.zeros_like(tail2)), axis=1)
        noise2 = 100.0 * eps * msz_a * lam0
        w_fix = xp.sum(xp.where(cols == fixed_a[:, None], w, xp.zeros_like(w)), axis=1)
        ok = xp.where(need_a, thr2 >= noise2, (fixed_a >= k_rows_a) | (w_fix >= noise2))
        ok = ok | arr(gram_only, xp.bool)
        flat.append(xp.reshape(xp.astype(xp.stack([xp.astype(r, w.dtype), tail_r,
                                                   xp.astype(ok, w.dtype)]), xp.float64),
                               (-1,)))
        for _, _, gi, _ in rows:
            eig[gi][3] = len(flat) - 1
            eig[gi].append(len(rows))
    eig = {gi: tuple(e) for gi, e in eig.items()}
    n_fixed = len(flat)
    for e in extra:
        xe = namespace(e)
        flat.append(xp_flat64(xe, e))
    offsets, pos0 = [], 0
    for f in flat:
        offsets.append(pos0)
        pos0 += int(f.shape[0])
    vector = None
    if flat:
        xp0 = namespace(flat[0])
        vector = xp0.concat([_to_device(f, _device(flat[0])) for f in flat])
    return TruncPlan(list(items), metas, eig, offsets, n_fixed, vector)


def _gather_grams(srcs: Sequence[tuple[Array, int]], sizes: Sequence[int], size: int
                  ) -> Array:
    """The bucket ``(len(srcs), size, size)``: row ``k`` holds the leading
    ``sizes[k] x sizes[k]`` block of ``stack[pos]`` for ``(stack, pos) = srcs[k]``, zeros
    elsewhere.  One gather from the concatenated stacks."""
    import numpy as np

    stacks: list[Array] = []
    sid: dict[int, int] = {}
    rows = []
    for st, pos in srcs:
        rows.append((_source_id(st, sid, stacks), pos))
    xp = namespace(stacks[0])
    dev = _device(stacks[0])
    shapes = tuple(tuple(int(s) for s in st.shape) for st in stacks)

    def build() -> Array:
        offs = _offsets([math.prod(s) for s in shapes])
        parts = []
        for (s, pos), n in zip(rows, sizes, strict=True):
            r = shapes[s][1]
            parts.append(_grid_index((size, size), (r, 1), (n, n), fill=offs[-1] - offs[s]
                                     - pos * r * r) + offs[s] + pos * r * r)
        return xp.asarray(np.concatenate(parts), dtype=xp.int64, device=dev)

    idx = _cached(("grams", shapes, tuple(rows), tuple(sizes), size, str(dev), xp.__name__),
                  build)
    return xp.reshape(_pack(xp, stacks, True)[idx], (len(srcs), size, size))


def read_back(plan: TruncPlan) -> list[float]:
    """The step's one device-to-host transfer: ranks, tails, norms and extras."""
    if plan.vector is None:
        return []
    return _to_host(namespace(plan.vector), plan.vector)


def truncate_finish(plan: TruncPlan, host: Sequence[float]
                    ) -> tuple[list[tuple[TuckerTensor, TruncationInfo]], list[float]]:
    """Second half of :func:`truncate_many`: bases and cores at the read-back ranks."""
    items, metas, eig, offsets, n_fixed = (plan.items, plan.metas, plan.eig, plan.offsets,
                                           plan.n_fixed)
    results: list[Any] = []
    todo = []  # (result slot, core, factors, bases, info) of the Gram route
    for t, (core, factors, spec) in enumerate(items):
        m = metas[t]
        norm = host[t]
        if not math.isfinite(norm):
            raise NonFiniteCore(f"t must have finite entries (no NaN or inf); its norm is {norm}")
        tol = (spec.rtol * norm if m["tol"] == "rtol"
               else (float(spec.atol) if m["tol"] == "atol" else None))
        chosen, tails, methods, bases, redo = [], [], [], [], False
        for i, md in enumerate(m["modes"]):
            if md["ident"]:
                chosen.append(m["shape"][i])
                tails.append(0.0)
                methods.append("identity")
                bases.append(None)
                continue
            if md["gram"] is None:
                redo = True
                continue
            vt, row, k, fpos, grow, nb = eig[md["gram"]]
            base = offsets[fpos]
            r, tail2, ok = (host[base + grow], host[base + nb + grow],
                            host[base + 2 * nb + grow])
            if spec.method == "auto" and not ok:
                redo = True
            r = int(r)
            chosen.append(r)
            tails.append(math.sqrt(max(tail2, 0.0)) if r < k else 0.0)
            methods.append("gram")
            # the leading k x r block of the eigenvectors in descending order: entry (a, c)
            # is V^T[row, size - 1 - c, a] of the ascending ones
            size = int(vt.shape[-1])
            bases.append(_View(vt, (row * size + size - 1) * size, (k, r), (1, -size)))
        if redo:  # below the Gram matrix's resolution, or method="svd": the SVD route
            results.append(_retruncate(TuckerTensor._orthonormal(core, factors), spec, tol))
            continue
        info = TruncationInfo(rank=tuple(chosen), tails=tuple(tails),
                              error_bound=math.sqrt(sum(x * x for x in tails)),
                              tolerance=tol, rule=spec.rule, norm=norm,
                              methods=tuple(methods))
        results.append(None)
        todo.append((len(results) - 1, core, factors, bases, info, spec.method))
    # the truncated cores C x_i V_i^H of all items: batched core products
    new_cores = _mode_products_many([c for _, c, _, _, _, _ in todo],
                                   [b for _, _, _, b, _, _ in todo], transpose=True)
    # the eigenvector blocks as arrays: one gather
    blocks = [b for _, _, _, bs, _, _ in todo for b in bs if b is not None]
    arrays = iter(_materialize(blocks) if blocks else [])
    for (slot, _, factors, bases, info, method), new_core in zip(todo, new_cores, strict=True):
        new_f = [u if b is None else u @ next(arrays) for u, b in zip(factors, bases,
                                                                      strict=True)]
        results[slot] = _rerounded(TuckerTensor._orthonormal(new_core, new_f), info, method)
    return results, list(host[offsets[n_fixed]:]) if len(offsets) > n_fixed else []


def xp_flat64(xp: Any, a: Array) -> Array:
    """``a`` flattened to float64 (for the joint host read-back)."""
    return xp.astype(xp.reshape(a, (-1,)), xp.float64)


def _to_device(x: Array, device: Any) -> Array:
    """``x`` on ``device`` (no copy when it is there already)."""
    import array_api_compat

    return x if _device(x) == device else array_api_compat.to_device(x, device)


def _to_host(xp: Any, v: Array) -> list[float]:
    """One device-to-host transfer of a 1-d array."""
    tolist = getattr(v, "tolist", None)
    if tolist is not None:
        return [float(x) for x in tolist()]
    return [float(x) for x in v]  # pragma: no cover - other array libraries


def _retruncate(y: TuckerTensor, spec: Truncation, tol: float | None
                ) -> tuple[TuckerTensor, TruncationInfo]:
    kw: dict[str, Any] = {"max_rank": spec.max_rank, "min_rank": spec.min_rank,
                          "rule": spec.rule, "method": spec.method, "full_output": True}
    if spec.rtol is not None:
        kw["rtol"] = spec.rtol
    elif spec.atol is not None:
        kw["atol"] = spec.atol
    else:
        kw["rank"] = spec.rank
    y1, info = truncate(y, **kw)
    return _rerounded(y1, info, spec.method)


def _rerounded(y1: TuckerTensor, info: TruncationInfo, method: str
               ) -> tuple[TuckerTensor, TruncationInfo]:
    r"""Lossless re-rounding to a valid Tucker rank, error bounds combined per mode."""
    r = valid_rank(y1.rank)
    if r == y1.rank:
        return y1, info
    y2, info2 = truncate(y1, rank=r, method=method, full_output=True)
    tails = tuple(math.hypot(a, b) for a, b in zip(info.tails, info2.tails, strict=True))
    return y2, TruncationInfo(rank=info2.rank, tails=tails,
                              error_bound=info.error_bound + info2.error_bound,
                              tolerance=info.tolerance, rule=info.rule, norm=info.norm,
                              methods=info.methods)


# ------------------------------------------------------------------------------ transport
def k_transport(g_old: Array, g_new: Array, a: Sequence[Array], mode: int) -> Array:
    r"""Transport matrix :math:`B_i` of K-coordinates (momentum) between two points.

    A K-step state :math:`M` (an :math:`n_i\times r_i` matrix in the coordinates of
    :math:`W = G_i \times_i K \times_{j\ne i} U_j`) embedded as the ambient tensor
    :math:`G_i\times_i M\times_{j\ne i}U_j` and projected onto the new coordinates
    (:func:`~tucker_dlra.steps.k_gradient` at the new point) is :math:`M B_i` with
    :math:`B_i = \mathrm{Mat}_i(G_i \times_{j\ne i} A_j)\,\mathrm{Mat}_i(G_i')^H`,
    :math:`A_j = U_j'^H U_j`.  Cost :math:`O(\sum_{j \ne i} r_j' \prod_k r_k)`.
    """
    xp = namespace(g_old)
    mats = [None if j == mode else aj for j, aj in enumerate(a)]
    return unfold(multi_mode_product(g_old, mats), mode) @ ct(xp, unfold(g_new, mode))


def core_transport(m: Array, a: Sequence[Array], square: bool = False) -> Array:
    r"""Core state in new coordinates: :math:`M \times_j A_j` (:math:`A_j = U_j'^H U_j`).

    Equals :func:`~tucker_dlra.steps.c_gradient` of the ambient tensor
    :math:`M \times_j U_j` at the new bases.  ``square``: with the elementwise squares
    :math:`A_j \circ A_j` (transport of a second moment).  Cost: the core products.
    """
    return multi_mode_product(m, [x * x for x in a] if square else list(a))


def k_transport_many(g_olds: Sequence[Sequence[Array]], g_news: Sequence[Sequence[Array]],
                     a: Sequence[Sequence[Array]]) -> list[list[Array]]:
    r"""All transport matrices :math:`B_{t,i}` of :func:`k_transport`, batched.

    ``g_olds[t][i]``/``g_news[t][i]``: the frozen cores :math:`G_i` of tensor ``t`` at the
    old and the new point; ``a[t][j]`` = :math:`U_j'^H U_j`.  Returns
    ``[[k_transport(g_olds[t][i], g_news[t][i], a[t], i) for i] for t]`` up to rounding:
    tensors of equal order, dtype and device are zero-padded to common sizes (one gather
    for all modes), and per mode the :math:`d-1` core products (cyclic: the old cores are
    read with mode :math:`i` last, so that it ends first) and the final unfolding product
    are one batched product each (zero padding is exact for these products).  Cost: the
    products at the padded sizes; a fixed number of array operations per group and mode,
    plus two per result (one gather splits them all).
    """
    out: list[list[Any]] = [[None] * len(gs) for gs in g_olds]
    firsts = [gs[0] for gs in g_olds]
    for idx in _groups(firsts):
        if len(idx) <= _STACK_MIN - 1:  # too few to amortise the stacking
            for t in idx:
                out[t] = [k_transport(g_olds[t][i], g_news[t][i], a[t], i)
                          for i in range(len(g_olds[t]))]
            continue
        xp = namespace(firsts[idx[0]])
        d = firsts[idx[0]].ndim
        n = len(idx)
        to = [max(_shape(g_olds[t][0])[k] for t in idx) for k in range(d)]
        tn = [max(_shape(g_news[t][0])[k] for t in idx) for k in range(d)]
        # one gather: A_j^T stacks; per mode i the old cores with mode i last (axes
        # i+1, ..., i-1, i) and the new ones with mode i first (axes i, i+1, ..., i-1)
        parts: list[tuple[list, list[int]]] = [
            ([_as_view(a[t][j]).mT() for t in idx], [to[j], tn[j]]) for j in range(d)]
        for i in range(d):
            lo = [(i + 1 + k) % d for k in range(d)]
            ln = [(i + k) % d for k in range(d)]
            parts.append(([_as_view(g_olds[t][i]).permute(lo) for t in idx], [to[k] for k in lo]))
            parts.append(([_as_view(g_news[t][i]).permute(ln) for t in idx], [tn[k] for k in ln]))
        stacks = _gather(parts)
        blocks = []
        for i in range(d):
            p, q = stacks[d + 2 * i], stacks[d + 2 * i + 1]
            lo = [(i + 1 + k) % d for k in range(d)]
            done: list[int] = []
            # cyclic products over the modes j != i (contract the leading mode, append the
            # new one last): the layout ends as (i, i+1, ..., i-1), that of q
            for s_, j in enumerate(lo[:-1]):
                rest = math.prod(to[k] for k in lo[s_ + 1:]) * math.prod(done)
                p = bmm(xp, xp.matrix_transpose(xp.reshape(p, (n, to[j], rest))),
                        stacks[j])
                done.append(tn[j])
            pm = xp.reshape(p, (n, to[i], math.prod(done)))
            qm = xp.reshape(q, (n, tn[i], math.prod(done)))
            b = bmm(xp, pm, ct(xp, qm))
            for pos, t in enumerate(idx):
                blocks.append(_View(b, pos * to[i] * tn[i],
                                    (_shape(g_olds[t][i])[i], _shape(g_news[t][i])[i]),
                                    (tn[i], 1)))
        res = iter(_materialize(blocks))
        for i in range(d):
            for t in idx:
                out[t][i] = next(res)
    return out


def core_transport_many(ms: Sequence[Array], a: Sequence[Sequence[Array]],
                        square: bool = False) -> list[Array]:
    """:func:`core_transport` for many core states at once (:func:`mode_products_many`).

    The results own their memory (they are kept as optimizer state: no view may pin the
    batch's buffer)."""
    out = _mode_products_many(ms, [list(aa) for aa in a], square=square)
    return [namespace(x).asarray(x, copy=True) for x in out]


def _mean_fill(moved: Array, weight: Array, old_mean: Array) -> Array:
    """``moved + (1 - min(1, weight)) * old_mean``: the part of a new coordinate that the
    old ones do not reach gets the old state's mean (second moments stay positive and of
    the old scale in new directions)."""
    xp = namespace(moved)
    return moved + xp.clip(1.0 - weight, 0.0, None) * old_mean


def k_state_transport_many(ms: Sequence[Array], bs: Sequence[Array],
                           square: bool = False) -> list[Array]:
    r"""K-step optimizer states in the coordinates of the new point, all at once.

    Linear states (momentum, first moments): :math:`M_t B_t` with the transport matrices
    :math:`B_t` of :func:`k_transport`.  Second moments (``square``):
    :math:`M_t (B_t\circ B_t) + (1 - \min(1, \mathbf 1^	op (B_t\circ B_t)))\,
    \overline{M_t}`, the squared transport of Adam's elementwise second moment, where a
    new coordinate that the old ones reach with total weight :math:`w < 1` gets the
    remaining :math:`1-w` of the old mean :math:`\overline{M_t}` (a direction new to the
    basis is not taken as one of zero curvature, which would make Adam's first step
    along it of size :math:`\eta/\epsilon`).

    Linear states: one matrix product each.  Second moments of equal dtype and device: one
    zero-padded batched product for all of them (padding is exact: padded rows and columns
    are dropped, the means count the true entries only), one copy per result.  The results
    own their memory (they are kept as optimizer state).  Cost: :math:`O(\sum_t n_t p_t q_t)`.
    """
    if not square:
        return [m @ b for m, b in zip(ms, bs, strict=True)]
    out: list[Any] = [None] * len(ms)
    for idx in _groups(ms):
        xp = namespace(ms[idx[0]])
        if len(idx) <= _STACK_MIN - 1:
            for t in idx:
                bb = bs[t] * bs[t]
                out[t] = _mean_fill(ms[t] @ bb, xp.sum(bb, axis=0), xp.mean(ms[t]))
            continue
        shapes_m = [_shape(ms[t]) for t in idx]
        shapes_b = [_shape(bs[t]) for t in idx]
        n, p, q = (max(s[0] for s in shapes_m), max(s[1] for s in shapes_m),
                   max(s[1] for s in shapes_b))
        m_st, b_st = _gather([([ms[t] for t in idx], (n, p)), ([bs[t] for t in idx], (p, q))])
        bb = b_st * b_st
        dev = _device(m_st)
        counts = _const(xp, dev, [float(a * b) for a, b in shapes_m], m_st.dtype)
        mean = xp.reshape(xp.sum(xp.reshape(m_st, (len(idx), n * p)), axis=1) / counts,
                          (len(idx), 1, 1))
        moved = _mean_fill(bmm(xp, m_st, bb), xp.sum(bb, axis=1, keepdims=True), mean)
        res = _unstack(moved, [(a, c) for (a, _), (_, c) in zip(shapes_m, shapes_b,
                                                                  strict=True)])
        for t, r in zip(idx, res, strict=True):
            out[t] = xp.asarray(r, copy=True)
    return out


def core_state_transport_many(ms: Sequence[Array], a: Sequence[Sequence[Array]],
                              square: bool = False) -> list[Array]:
    r"""Core optimizer states in the coordinates of the new point, all at once.

    Linear states: :func:`core_transport` (:math:`M \times_j A_j`).  Second moments
    (``square``): :math:`M \times_j (A_j\circ A_j)` plus, per entry, the old mean times
    the weight :math:`1 - \min(1, w)` that the old coordinates do not reach, :math:`w =
    \mathbf 1 \times_j (A_j\circ A_j) = \bigotimes_j (A_j\circ A_j)\mathbf 1` (as
    :func:`k_state_transport_many`).  Batched by :func:`core_transport_many`; second
    moments of equal order, dtype and device in one zero-padded stack (products, weights,
    means and fill on the stack: padding is exact, the means count true entries only).
    The results own their memory.
    """
    if not square:
        return core_transport_many(ms, a)
    out: list[Any] = [None] * len(ms)
    for idx in _groups(ms):
        xp = namespace(ms[idx[0]])
        views = _mode_products_many([ms[t] for t in idx], [list(a[t]) for t in idx],
                                    square=True, views=True)
        moved = views[0].src if isinstance(views[0], _View) else None
        if moved is None or any(not isinstance(v, _View) or v.src is not moved
                                for v in views):  # not stacked: one tensor at a time
            for t in idx:
                sq = [x * x for x in a[t]]
                w = multi_mode_product(xp.ones_like(ms[t]), sq)
                out[t] = _mean_fill(multi_mode_product(ms[t], sq), w, xp.mean(ms[t]))
            continue
        n, d = len(idx), ms[idx[0]].ndim  # moved: (n, *tail), every result a block of it
        tail = [int(x) for x in moved.shape[1:]]
        olds = [_shape(ms[t]) for t in idx]
        omax = [max(o[j] for o in olds) for j in range(d)]
        stacks = _gather([([a[t][j] for t in idx], (tail[j], omax[j])) for j in range(d)]
                         + [([ms[t] for t in idx], omax)])
        w = None
        for j in range(d):  # w = outer product of the row sums of A_j o A_j
            s_j = xp.reshape(xp.sum(stacks[j] * stacks[j], axis=2),
                             tuple(n if k == 0 else tail[j] if k == j + 1 else 1
                                   for k in range(d + 1)))
            w = s_j if w is None else w * s_j
        counts = _const(xp, _device(moved), [float(math.prod(o)) for o in olds], moved.dtype)
        mean = xp.reshape(xp.sum(xp.reshape(stacks[d], (n, -1)), axis=1) / counts,
                          (n,) + (1,) * d)
        res = _unstack(_mean_fill(moved, w, mean), [v.shape for v in views])
        for t, r in zip(idx, res, strict=True):
            out[t] = xp.asarray(r, copy=True)
    return out


# ------------------------------------------------------------------------------ the step
@dataclass
class StepParts:
    """Everything one :func:`bug_step` produced for one tensor.

    ``y1``: the new tensor; ``info``: its truncation (``None`` for the fixed-rank BUG);
    ``start``: the :class:`KStart`; ``ks``: :math:`K_i(t_1)`; ``bases``: the bases of the
    C-step (augmented, new fixed-rank, or old for the parallel BUG); ``aug_bases``: the
    augmented bases (``None`` for the fixed-rank BUG); ``y0_aug``: :math:`Y_0` in the
    augmented bases; ``y_aug``: the augmented result before truncation; ``new_dirs``: the
    number of new directions per mode.
    """

    y1: TuckerTensor
    info: TruncationInfo | None
    start: KStart
    ks: list[Array]
    bases: list[Array]
    aug_bases: list[Array] | None = None
    y0_aug: TuckerTensor | None = None
    y_aug: TuckerTensor | None = None
    new_dirs: list[int] = field(default_factory=list)


KSolve = Callable[[Sequence[KStart]], Sequence[Sequence[Array]]]
CSolve = Callable[[Sequence[Array], Sequence[Sequence[Array]], Sequence[bool]],
                  Sequence[Array]]


def bug_step(ys: Sequence[TuckerTensor], k_solve: KSolve, c_solve: CSolve,
             variants: Sequence[str], truncations: Sequence[Truncation | None],
             extra: Callable[[list[StepParts]], Sequence[Array]] | None = None,
             ) -> tuple[list[StepParts], list[float]]:
    r"""One step of the BUG family for every tensor of ``ys`` (Algorithm 1), batched.

    Parameters
    ----------
    ys : sequence of TuckerTensor
        The current points :math:`Y_0 = C \times_i U_i` (orthonormal factors).
    k_solve : callable ``k_solve(starts) -> ks``
        Given a :class:`KStart` per tensor, returns per tensor the list of
        :math:`K_i(t_1)` (Algorithm 1, lines 3-4): an ODE solve of
        :math:`\dot K_i = \mathrm{Mat}_i(F(\ldots))V_i` for the integrators, one descent
        step for training.
    c_solve : callable ``c_solve(cores0, bases, at_y0) -> cores1``
        Galerkin step (line 9) from ``cores0`` in ``bases``; ``at_y0[t]`` tells whether
        ``cores0[t]`` in ``bases[t]`` represents :math:`Y_0` exactly.
    variants : sequence of {"bug", "ra_bug", "parallel"}
        Per tensor: fixed-rank BUG, rank-adaptive BUG, parallel BUG.
    truncations : sequence of Truncation or None
        Per tensor, how the augmented core is truncated (None: fixed-rank BUG, no
        truncation).
    extra : callable, optional
        ``extra(parts) -> arrays`` read back to the host in the same transfer as the
        ranks (e.g. finiteness flags); ``parts[t].y1`` is then still the untruncated
        augmented tensor.

    Returns
    -------
    (list of StepParts, list of float)
        The per-tensor results and the read-back values of ``extra``.

    Notes
    -----
    Cost besides the solvers: the batched QRs :math:`O(\sum_i n_i r_i^2)`, the core
    products and the truncation (:func:`truncate_many`), per tensor; one host
    synchronisation for all tensors (plus one per re-rounding or SVD fallback, rare).
    """
    plan = bug_step_begin(ys, k_solve, c_solve, variants, truncations, extra)
    return bug_step_end(plan, read_back(plan.tplan))


def bug_step_begin(ys: Sequence[TuckerTensor], k_solve: KSolve, c_solve: CSolve,
                   variants: Sequence[str], truncations: Sequence[Truncation | None],
                   extra: Callable[[list[StepParts]], Sequence[Array]] | None = None,
                   starts: Sequence[KStart | None] | None = None) -> StepPlan:
    """Device half of :func:`bug_step` (same arguments): everything up to the host
    read-back, with no host synchronisation -- a fixed-shape computation when the ranks
    do not change, which a caller may capture and replay.

    ``starts``: optional :class:`KStart` per tensor already known for ``ys[t]`` (e.g. from
    the previous step's :func:`k_starts` at its new point); ``None`` entries are computed.
    """
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}; got {v!r}")
    given = list(starts) if starts is not None else [None] * len(ys)
    if len(given) != len(ys):
        raise ValueError(f"starts must have one entry per tensor ({len(ys)}); got {len(given)}")
    missing = [t for t, s in enumerate(given) if s is None]
    computed = k_starts([ys[t] for t in missing]) if missing else []
    for t, s in zip(missing, computed, strict=True):
        given[t] = s
    starts = given
    ks = [list(k) for k in k_solve(starts)]
    # bases of the C-step: augmented (ra_bug), orth(K) (bug), old (parallel)
    aug_idx = [t for t, v in enumerate(variants) if v != "bug"]
    fix_idx = [t for t, v in enumerate(variants) if v == "bug"]
    aug_b, tri, wks = _augment([ys[t].factors for t in aug_idx], [ks[t] for t in aug_idx],
                               new_coords=any(variants[t] == "parallel" for t in aug_idx))
    aug = dict(zip(aug_idx, zip(aug_b, tri, wks, strict=True), strict=True))
    orth = batched(lambda a: namespace(a).linalg.qr(a, mode="reduced"),
                   [k for t in fix_idx for k in ks[t]])
    fixed: dict[int, list[Array]] = {}
    pos = 0
    for t in fix_idx:
        fixed[t] = [q for q, _ in orth[pos:pos + ys[t].ndim]]
        pos += ys[t].ndim
    cores0, bases, at_y0 = [], [], []
    y0_aug: dict[int, TuckerTensor] = {}
    # Galerkin cores C x_i [R^11_i; 0] of all augmented tensors: batched core products
    padded = dict(zip(aug_idx, _mode_products_many(
        [ys[t].core for t in aug_idx], [aug[t][1] for t in aug_idx],
        out_shapes=[[int(b.shape[1]) for b in aug[t][0]] for t in aug_idx]), strict=True))
    for t, (y, v) in enumerate(zip(ys, variants, strict=True)):
        if v == "bug":
            xp = y.xp
            b = fixed[t]
            cores0.append(multi_mode_product(y.core, [ct(xp, un) @ uo for uo, un
                                                      in zip(y.factors, b, strict=True)]))
            bases.append(b)
            at_y0.append(False)
            continue
        b = aug[t][0]
        y0_aug[t] = TuckerTensor._orthonormal(padded[t], b)
        if v == "ra_bug":
            cores0.append(y0_aug[t].core)
            bases.append(b)
        else:
            cores0.append(y.core)
            bases.append(y.factors)
        at_y0.append(True)
    cores1 = list(c_solve(cores0, bases, at_y0))
    # parallel BUG (Ceruti, Kusch, Lubich & Sulz; :func:`~tucker_dlra.steps.parallel_core`)
    # in the coordinates of Q_i = U_i (R^11_i)^{-1}: the block (old, ..., old) is
    # C-bar x_j R^11_j, the block new only in mode i is G_i x_{j != i} R^11_j x_i
    # (U~_i^H K_i(t_1)), the others zero -- all products batched, the augmented cores
    # assembled by one gather
    par = [t for t in aug_idx if variants[t] == "parallel"]
    chats: dict[int, Array] = {}
    if par:
        gitems = [(t, i) for t in par for i in range(ys[t].ndim) if aug[t][2][i] is not None]
        prods = _mode_products_many(
            [cores1[t] for t in par] + [starts[t].gs[i] for t, i in gitems],
            [list(aug[t][1]) for t in par]
            + [[aug[t][2][i] if j == i else tj for j, tj in enumerate(aug[t][1])]
               for t, i in gitems], views=True)
        blocks: dict[int, list] = {t: [(prods[k], (0,) * ys[t].ndim)]
                                   for k, t in enumerate(par)}
        for (t, i), blk in zip(gitems, prods[len(par):], strict=True):
            blocks[t].append((blk, tuple(int(ys[t].core.shape[i]) if j == i else 0
                                         for j in range(ys[t].ndim))))
        fam: dict[tuple, list[int]] = {}
        for t in par:
            fam.setdefault((str(cores1[t].dtype), str(_device(cores1[t]))), []).append(t)
        for ts in fam.values():
            for t, c in zip(ts, _assemble([([int(b.shape[1]) for b in aug[t][0]], blocks[t])
                                           for t in ts]), strict=True):
                chats[t] = c
    parts: list[StepParts] = []
    for t, (y, v) in enumerate(zip(ys, variants, strict=True)):
        if v == "bug":
            y1 = TuckerTensor._orthonormal(cores1[t], bases[t])
            parts.append(StepParts(y1, None, starts[t], ks[t], bases[t]))
            continue
        b = aug[t][0]
        new = [bi.shape[1] - ui.shape[1] for bi, ui in zip(b, y.factors, strict=True)]
        if v == "ra_bug":
            chat = cores1[t]
        else:
            chat = chats[t]
        y_aug = TuckerTensor._orthonormal(chat, b)
        parts.append(StepParts(y_aug, None, starts[t], ks[t], bases[t], b, y0_aug[t], y_aug,
                               new))
    extras = list(extra(parts)) if extra is not None else []
    trunc_idx = [t for t, s in enumerate(truncations) if s is not None and variants[t] != "bug"]
    tplan = truncate_prepare([(parts[t].y1.core, parts[t].y1.factors, truncations[t])
                              for t in trunc_idx], extras)
    return StepPlan(parts, trunc_idx, tplan)


@dataclass
class StepPlan:
    """Device half of :func:`bug_step`: the untruncated parts and the truncation plan."""

    parts: list[StepParts]
    trunc_idx: list[int]
    tplan: TruncPlan


def bug_step_end(plan: StepPlan, host: Sequence[float]) -> tuple[list[StepParts], list[float]]:
    """Host half of :func:`bug_step`: truncation at the read-back ranks (lines 10-12)."""
    res, extras = truncate_finish(plan.tplan, host)
    parts = list(plan.parts)
    for t, (y1, info) in zip(plan.trunc_idx, res, strict=True):
        parts[t] = replace(parts[t], y1=y1, info=info)
    return parts, extras

