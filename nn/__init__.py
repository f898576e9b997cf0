"""tucker_dlra.nn: the PyTorch adapter (Tucker convolutions trained by Algorithm 1).

The library: layers, the TDLRT optimizer, conversion, reports and the paper's baselines.  The
training application built on it (command line, training loop, datasets, models, plots) is
:mod:`tucker_dlra.app`; this package never imports it.  The application's names once
re-exported here (``TrainConfig``, ``train``, ``load_dataset``, ...) and the old submodule
paths (``tucker_dlra.nn.train``, ``.cli``, ``.datasets``, ``.models``, ``.plots``,
``.verify``) still resolve for one release, with a :class:`DeprecationWarning`.
"""

from typing import Any as _Any

from . import _deprecated

# C1: Tucker layers (layers); C2: conversion, compression reports and the paper's vanilla
# baselines of Sec. 4 (convert, report, vanilla).  Keep one sorted import block + __all__.
from .clip import clip_grad_norm_
from .convert import KINDS, to_dense, tuckerize
from .layers import LowRankLinear, TuckerConv1d, TuckerConv2d, TuckerConv3d, is_tucker_layer
from .optim import TDLRT
from .report import (
    CompressionReport,
    LayerReport,
    MemoryReport,
    compression_report,
    memory_report,
    parameter_counts,
)
from .vanilla import VanillaCPConv, VanillaLowRankLinear, VanillaMatrixConv, VanillaTuckerConv

__all__ = [
    "KINDS",
    "CompressionReport",
    "LayerReport",
    "LowRankLinear",
    "MemoryReport",
    "TDLRT",
    "TuckerConv1d",
    "TuckerConv2d",
    "TuckerConv3d",
    "VanillaCPConv",
    "VanillaLowRankLinear",
    "VanillaMatrixConv",
    "VanillaTuckerConv",
    "clip_grad_norm_",
    "compression_report",
    "is_tucker_layer",
    "memory_report",
    "parameter_counts",
    "to_dense",
    "tuckerize",
]

_deprecated.install()


def __getattr__(name: str) -> _Any:
    """Deprecated application names (moved to :mod:`tucker_dlra.app`) and old submodules."""
    import importlib

    new = _deprecated.MOVED_NAMES.get(name)
    if new is not None:
        _deprecated.warn_moved(f"tucker_dlra.nn.{name}", f"{new}.{name}")
        return getattr(importlib.import_module(new), name)
    if f"{__name__}.{name}" in _deprecated.MOVED_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
