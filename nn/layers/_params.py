"""Rank and parameter handling of the Tucker layers: rank specifications, the weak link from a
core or factor Parameter to its layer (:func:`layer_of`), in-place replacement of a
Parameter's data (see :mod:`tucker_dlra.nn.layers`)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch

from tucker_dlra.tucker import max_tucker_rank

from .._conv import resolve_tucker_rank

RankArg = int | float | Sequence[int] | None


class _LayerRef:
    """Weak reference from a core or factor Parameter to its Tucker layer.

    Stored as ``param._tucker_layer`` by the layer itself; :class:`~tucker_dlra.nn.TDLRT` maps
    the Parameters it is given to their layers through it (no process-wide registry).  It
    pickles and deep-copies as a dead reference, so that a copied Parameter never points to
    the original layer; the copied layer re-tags its own Parameters (``__setstate__``,
    ``forward``).  Calling it returns the layer or ``None``.
    """

    __slots__ = ("_ref",)

    def __init__(self, layer: Any = None) -> None:
        self._ref = None if layer is None else weakref.ref(layer)

    def __call__(self) -> Any:
        return None if self._ref is None else self._ref()

    def __reduce__(self) -> tuple:
        return (_LayerRef, ())

    def __copy__(self) -> _LayerRef:
        return _LayerRef()

    def __deepcopy__(self, memo: dict) -> _LayerRef:
        return _LayerRef()


def layer_of(param: torch.Tensor) -> Any:
    """The Tucker layer whose core or factor ``param`` currently is, else ``None``."""
    ref = getattr(param, "_tucker_layer", None)
    layer = ref() if isinstance(ref, _LayerRef) else None
    if layer is None or not any(q is param for q in (layer.core, *layer.factors)):
        return None
    return layer



def _replace_data(p: torch.Tensor, new: torch.Tensor) -> None:
    """``p.data = new`` for a new shape, dropping autograd's cached gradient accumulator.

    Autograd caches one ``AccumulateGrad`` node per leaf with the leaf's shape, and
    ``set_data`` only renews it when dtype or device change; while an old graph (e.g. the
    previous ``loss``) is alive, the next backward would otherwise fail with a shape
    mismatch.  Passing through a placeholder of another dtype resets the cache.
    """
    p.grad = None
    other = torch.float32 if p.dtype != torch.float32 else torch.float64
    p.data = torch.empty(0, dtype=other, device=p.device)
    p.data = new


def _upper_ranks(shape: Sequence[int]) -> list[int]:
    return list(max_tucker_rank(shape))


def resolve_rank(rank: RankArg, shape: Sequence[int], name: str = "rank",
                 max_rank: Sequence[int] | None = None) -> tuple[int, ...]:
    """Turn a rank specification into one Tucker rank per mode.

    Parameters
    ----------
    rank : None, int, float in (0, 1] or sequence of int / fraction
        ``None``: full rank :math:`\\min(n_i, \\prod_{j\\ne i} n_j)` (capped by ``max_rank``);
        int: the same rank in every mode, clipped to each mode's size; float:
        ``ceil(rank * n_i)`` (at least 1) in each mode; sequence: one entry per mode, an int in
        ``[1, n_i]`` or a fraction of that mode (a clear ``ValueError`` otherwise).
    shape : kernel shape :math:`(n_0, \\dots, n_{d-1})`.

    Returns
    -------
    tuple of int, a valid Tucker rank (:math:`r_i \\le \\prod_{j\\ne i} r_j`).  The one rank
    parser of the layers and the baselines (``nn/_conv.py``).
    """
    return resolve_tucker_rank(rank, shape, name, max_rank)
