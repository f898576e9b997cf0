r"""Structured right-hand sides: sums of mode products and low-rank sources, in Tucker form.

Many tensor ODEs have a right-hand side of the form

.. math::
    F(t, Y) = \sum_k c_k\, Y \times_{i \in S_k} M_{k,i} \;+\; \sum_s g_s(t)\, B_s,

a sum of *mode products* (the Kronecker sum :math:`\sum_i Y \times_i A_i` of a discrete
Laplacian or of a separable Hamiltonian, plus products such as :math:`Y \times_1 V
\times_2 V` of a separable potential) and of low-rank *sources* :math:`B_s` (Tucker
tensors with scalar time profiles :math:`g_s`).  :class:`LinearOperator` applies such an F
to a :class:`~tucker_dlra.TuckerTensor` **without forming a dense tensor**, in the compact
block form that the integrators' ``structured=True`` mode expects: the mode-i factor of
the result is :math:`[U_i, M_{i,1}U_i, M_{i,2}U_i, \dots, \text{source factors}]` (one
block per *distinct* matrix acting on mode i) and the core holds :math:`c_k C` in the
block of term k.  For the Kronecker sum this is rank :math:`2r_i` per mode and a
:math:`(2r)^d` core with d nonzero blocks; writing the same F naively as a sum of
TuckerTensors with ``+`` concatenates the factors of every term (rank :math:`(d+1) r_i`
per mode, a :math:`((d+1)r)^d` core) and is several times slower
(``validation/bench_operator.py``).

Use it as ``integrate(op, y0, t_span, h, structured=True)``; the same object applied to
a dense array returns the dense result (``structured=False`` works too, at dense cost).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import array_api_compat

from .backend import namespace
from .tensor import multi_mode_product
from .tucker import TuckerTensor

__all__ = ["LinearOperator", "kronecker_sum"]

Array = Any
#: One term ``(coef, {mode: matrix})`` of :class:`LinearOperator`: ``coef * Y x_{i} M_i``.
Term = tuple[complex, Mapping[int, Any]]
#: A source: a TuckerTensor ``B`` (constant) or ``(g, B)`` with ``g(t)`` a scalar profile.
Source = TuckerTensor | tuple[Callable[[float], complex], TuckerTensor]


class LinearOperator:
    r""":math:`F(t, Y) = \sum_k c_k\, Y\times_{i\in S_k} M_{k,i} + \sum_s g_s(t) B_s`.

    Parameters
    ----------
    terms : sequence of ``(coef, {mode: matrix})``
        Each term multiplies Y by ``matrix`` in every listed mode (mode products
        :math:`Y\times_i M`, i.e. :math:`\mathrm{Mat}_i(Y) \mapsto M\,\mathrm{Mat}_i(Y)`)
        and scales by ``coef``.  An empty mapping is the identity term ``coef * Y``.
        Matrices are NumPy arrays or arrays of the state's library; the *same object*
        used in several terms is stored once per mode (one factor block).
    sources : sequence, optional
        Low-rank inhomogeneities: TuckerTensors :math:`B_s` (constant in time) or pairs
        ``(g, B_s)`` with a scalar profile ``g(t)``.
    shape : sequence of int, optional
        Tensor shape, checked against the matrices and the arguments.

    Notes
    -----
    Applied to a TuckerTensor of rank r (Tucker form, :meth:`apply_tucker`): cost
    :math:`O(\sum_i b_i\, n_i^2 r_i)` for the matrix products (:math:`b_i` distinct
    matrices on mode i; :math:`O(n_i r_i \cdot nnz)` in effect for banded matrices only
    if they are passed as such) plus the block core :math:`O(\prod_i (1+b_i) r_i)`.
    Applied to a dense array (:meth:`apply_dense`): :math:`O(\sum_k |S_k|\, n \prod_j n_j)`.
    The operator is *linear* (valid for the ``"exact"``/``"krylov"`` substeps) only
    without sources.
    """

    def __init__(self, terms: Sequence[Term], sources: Sequence[Source] = (),
                 shape: Sequence[int] | None = None):
        self.terms: list[tuple[complex, dict[int, Any]]] = []
        for k, term in enumerate(terms):
            try:
                coef, mats = term
            except (TypeError, ValueError):
                raise TypeError(f"terms[{k}] must be a pair (coef, {{mode: matrix}}); got "
                                f"{term!r}") from None
            if not isinstance(coef, numbers.Number) or isinstance(coef, bool):
                raise TypeError(f"terms[{k}]: coef must be a number; got {coef!r}")
            if not isinstance(mats, Mapping):
                raise TypeError(f"terms[{k}]: the matrices must be a mapping {{mode: matrix}}; "
                                f"got {type(mats).__name__}")
            for mode, m in mats.items():
                if isinstance(mode, bool) or not isinstance(mode, numbers.Integral) or mode < 0:
                    raise ValueError(f"terms[{k}]: modes must be ints >= 0; got {mode!r}")
                sh = getattr(m, "shape", None)
                if sh is None or len(sh) != 2 or sh[0] != sh[1]:
                    raise ValueError(f"terms[{k}]: the matrix of mode {mode} must be square; "
                                     f"got shape {sh}")
                if shape is not None and (mode >= len(shape) or sh[0] != shape[mode]):
                    raise ValueError(f"terms[{k}]: the matrix of mode {mode} has size "
                                     f"{sh[0]}, the tensor shape is {tuple(shape)}")
            self.terms.append((coef, dict(mats)))
        self.sources: list[tuple[Callable[[float], complex] | None, TuckerTensor]] = []
        for s, src in enumerate(sources):
            g, b = (None, src) if isinstance(src, TuckerTensor) else tuple(src)
            if not isinstance(b, TuckerTensor) or (g is not None and not callable(g)):
                raise TypeError(f"sources[{s}] must be a TuckerTensor or a pair (g(t), "
                                f"TuckerTensor); got {src!r}")
            if shape is not None and b.shape != tuple(shape):
                raise ValueError(f"sources[{s}] has shape {b.shape}; expected {tuple(shape)}")
            self.sources.append((g, b))
        self.shape = None if shape is None else tuple(int(n) for n in shape)
        self._cache: dict[tuple, list[list[Array]]] = {}
        self._src_cache: dict[tuple, list[tuple[Callable | None, TuckerTensor]]] = {}

    # ------------------------------------------------------------------ properties
    @property
    def linear(self) -> bool:
        """``True`` without sources (then F is linear and autonomous in Y)."""
        return not self.sources

    def __repr__(self) -> str:
        return f"LinearOperator({len(self.terms)} terms, {len(self.sources)} sources)"

    # ------------------------------------------------------------------ application
    def __call__(self, t: float, y: TuckerTensor | Array) -> TuckerTensor | Array:
        """``F(t, y)``: Tucker form for a TuckerTensor, dense for a dense array."""
        if isinstance(y, TuckerTensor):
            return self.apply_tucker(y, t)
        return self.apply_dense(y, t)

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if self.shape is not None and tuple(shape) != self.shape:
            raise ValueError(f"the argument has shape {tuple(shape)}; the operator acts on "
                             f"{self.shape}")
        for k, (_, mats) in enumerate(self.terms):
            for mode, m in mats.items():
                if mode >= len(shape) or m.shape[0] != shape[mode]:
                    raise ValueError(f"terms[{k}]: mode {mode} matrix of size {m.shape[0]} "
                                     f"does not match the argument's shape {tuple(shape)}")

    def _mats(self, like: Array) -> tuple[list[list[Array]], list[list[int]]]:
        """Per mode the distinct matrices (converted to ``like``'s library) and per term
        the block index of each mode (0 = the identity block)."""
        xp = namespace(like)
        dev = array_api_compat.device(like)
        key = (id(xp), str(like.dtype), str(dev))
        d = like.ndim
        per_mode: list[list[Any]] = [[] for _ in range(d)]
        idx: list[list[int]] = []
        for _, mats in self.terms:
            row = []
            for i in range(d):
                m = mats.get(i)
                if m is None:
                    row.append(0)
                    continue
                for j, known in enumerate(per_mode[i]):
                    if known is m:
                        row.append(j + 1)
                        break
                else:
                    per_mode[i].append(m)
                    row.append(len(per_mode[i]))
            idx.append(row)
        if key not in self._cache:
            self._cache[key] = [[_convert(xp, m, like.dtype, dev) for m in ms]
                                for ms in per_mode]
            self._src_cache[key] = [
                (g, TuckerTensor(_convert(xp, b.core, like.dtype, dev),
                                 [_convert(xp, u, like.dtype, dev) for u in b.factors],
                                 orthonormal=b.orthonormal))
                for g, b in self.sources]
        return self._cache[key], idx

    def _sources_like(self, like: Array) -> list[tuple[Callable | None, TuckerTensor]]:
        xp = namespace(like)
        key = (id(xp), str(like.dtype), str(array_api_compat.device(like)))
        if key not in self._src_cache:
            self._mats(like)
        return self._src_cache[key]

    def apply_dense(self, y: Array, t: float = 0.0) -> Array:
        r"""Dense :math:`F(t, Y)` (cost :math:`O(\sum_k |S_k| n \prod_j n_j)`)."""
        self._check_shape(tuple(y.shape))
        mats, idx = self._mats(y)
        out = None
        for (coef, _), row in zip(self.terms, idx, strict=True):
            modes = [i for i, j in enumerate(row) if j]
            v = multi_mode_product(y, [mats[i][row[i] - 1] for i in modes], modes=modes) \
                if modes else y
            v = v * coef if coef != 1 else v
            out = v if out is None else out + v
        for g, b in self._sources_like(y):
            v = b.full()
            v = v * g(t) if g is not None else v
            out = v if out is None else out + v
        if out is None:
            xp = namespace(y)
            out = xp.zeros_like(y)
        return out

    def apply_tucker(self, y: TuckerTensor, t: float = 0.0) -> TuckerTensor:
        r""":math:`F(t, Y)` as a TuckerTensor in compact block form (never dense).

        Mode-i factor :math:`[U_i, M_{i,1}U_i, \dots, M_{i,b_i}U_i, B_{1,i}, \dots]`;
        core: :math:`c_k C` in block :math:`(j_{k,1}, \dots, j_{k,d})` of term k
        (:math:`j_{k,i} = 0` where term k does not act on mode i), the source cores
        in their own diagonal blocks.  Cost: see the class notes.
        """
        self._check_shape(y.shape)
        xp = y.xp
        mats, idx = self._mats(y.core)
        d, r = y.ndim, y.rank
        src = self._sources_like(y.core)
        dtype = xp.result_type(y.core.dtype, *[m.dtype for ms in mats for m in ms],
                               *[b.dtype for _, b in src])
        if not xp.isdtype(dtype, "complex floating") and any(
                complex(c).imag != 0 for c, _ in self.terms):
            dtype = xp.result_type(dtype, xp.complex64)
        widths = [(1 + len(mats[i])) * r[i] + sum(b.rank[i] for _, b in src) for i in range(d)]
        core = xp.zeros(tuple(widths), dtype=dtype, device=array_api_compat.device(y.core))
        c = y.core if y.core.dtype == dtype else xp.astype(y.core, dtype)
        for (coef, _), row in zip(self.terms, idx, strict=True):
            sl = tuple(slice(j * r[i], (j + 1) * r[i]) for i, j in enumerate(row))
            core[sl] = core[sl] + (c * coef if coef != 1 else c)
        offs = [(1 + len(mats[i])) * r[i] for i in range(d)]
        for g, b in src:
            bc = b.core if g is None else b.core * g(t)
            bc = bc if bc.dtype == dtype else xp.astype(bc, dtype)
            sl = tuple(slice(o, o + rb) for o, rb in zip(offs, b.rank, strict=True))
            core[sl] = bc
            offs = [o + rb for o, rb in zip(offs, b.rank, strict=True)]
        factors = []
        for i in range(d):
            u = y.factors[i] if y.factors[i].dtype == dtype else xp.astype(y.factors[i], dtype)
            parts = [u] + [(m if m.dtype == dtype else xp.astype(m, dtype)) @ u
                           for m in mats[i]]
            parts += [b.factors[i] if b.factors[i].dtype == dtype
                      else xp.astype(b.factors[i], dtype) for _, b in src]
            factors.append(xp.concat(parts, axis=1) if len(parts) > 1 else parts[0])
        return TuckerTensor(core, factors)

    def dense_matrix(self, t: float = 0.0) -> Any:
        r"""The operator as a dense :math:`N\times N` NumPy matrix (C-order vectorisation),
        for tests and small reference computations; requires ``shape`` and no sources.
        Cost :math:`O(N^2)` memory."""
        import numpy as np

        if self.shape is None:
            raise ValueError("dense_matrix needs the operator's shape (pass shape=...)")
        if self.sources:
            raise ValueError("dense_matrix represents the linear part only; the operator "
                             "has sources (an affine F)")
        n = int(np.prod(self.shape))
        eye = np.eye(n).reshape((n, *self.shape))
        cols = [np.asarray(self.apply_dense(eye[k].astype(complex if self._complex()
                                                          else float), t)).reshape(-1)
                for k in range(n)]
        return np.stack(cols, axis=1)

    def _complex(self) -> bool:
        import numpy as np

        return any(isinstance(c, complex) for c, _ in self.terms) or any(
            np.iscomplexobj(np.asarray(m)) for _, ms in self.terms for m in ms.values())


def kronecker_sum(mats: Sequence[Any], coef: complex = 1.0,
                  sources: Sequence[Source] = ()) -> LinearOperator:
    r"""The Kronecker-sum operator :math:`F(Y) = c\sum_i Y \times_i A_i` (+ sources).

    E.g. a discrete Laplacian (:math:`A_i` = 1-D second differences) or the kinetic part
    of a Schrödinger operator (``coef = -1j``).  ``mats[i]`` is :math:`A_i`; ``None``
    skips mode i.  Returns a :class:`LinearOperator` whose Tucker form has rank
    :math:`2r_i` per mode and d nonzero core blocks.
    """
    shape = None
    if all(m is not None for m in mats):
        shape = [int(m.shape[0]) for m in mats]
    terms = [(coef, {i: m}) for i, m in enumerate(mats) if m is not None]
    return LinearOperator(terms, sources=sources, shape=shape)


def _convert(xp: Any, m: Any, dtype: Any, device: Any) -> Array:
    """``m`` in the state's library, dtype (complex kept when the state is real) and device."""
    try:
        same = namespace(m) is xp
    except TypeError:
        same = False
    if same:
        arr = m
    else:
        import numpy as np

        a = np.asarray(m)
        arr = xp.asarray(a, device=device)
    if xp.isdtype(arr.dtype, "complex floating") and not xp.isdtype(dtype, "complex floating"):
        return arr  # a complex operator on a real state: F is complex (the checks report it)
    return arr if arr.dtype == dtype else xp.astype(arr, dtype)
