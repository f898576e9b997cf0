"""tucker_dlra.nn: the PyTorch adapter (Tucker convolutions trained by Algorithm 1)."""

from .convert import KINDS, to_dense, tuckerize  # noqa: E402  (C2: conversion)
from .report import (  # noqa: E402  (C2: compression reports)
    CompressionReport,
    LayerReport,
    compression_report,
    parameter_counts,
)
from .vanilla import (  # noqa: E402  (C2: the paper's vanilla baselines, Sec. 4)
    VanillaCPConv,
    VanillaLowRankLinear,
    VanillaMatrixConv,
    VanillaTuckerConv,
)
