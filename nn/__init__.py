"""tucker_dlra.nn: the PyTorch adapter (Tucker convolutions trained by Algorithm 1)."""

# C1: Tucker layers (layers); C2: conversion, compression reports and the paper's vanilla
# baselines of Sec. 4 (convert, report, vanilla).  Keep one sorted import block + __all__.
from .clip import clip_grad_norm_
from .convert import KINDS, to_dense, tuckerize
from .datasets import DATASETS, ArrayDataset, DatasetError, load_dataset
from .layers import LowRankLinear, TuckerConv1d, TuckerConv2d, TuckerConv3d, is_tucker_layer
from .models import MODELS, LeNet5, build_model
from .optim import TDLRT
from .report import (
    CompressionReport,
    LayerReport,
    MemoryReport,
    compression_report,
    memory_report,
    parameter_counts,
)
from .train import CheckpointError, TrainConfig, evaluate, load_checkpoint, train
from .vanilla import VanillaCPConv, VanillaLowRankLinear, VanillaMatrixConv, VanillaTuckerConv

__all__ = [
    # D: the training application (datasets, models, train)
    "DATASETS",
    "MODELS",
    "ArrayDataset",
    "CheckpointError",
    "DatasetError",
    "LeNet5",
    "TrainConfig",
    "build_model",
    "evaluate",
    "load_checkpoint",
    "load_dataset",
    "train",
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
