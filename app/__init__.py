"""tucker_dlra.app: the training application (command line, training loop, datasets, models, plots).

Built on the library :mod:`tucker_dlra.nn` (Tucker layers, the TDLRT optimizer, conversion and
reports), which never imports it.  Layout: core :mod:`tucker_dlra` <- library
:mod:`tucker_dlra.nn` <- application :mod:`tucker_dlra.app`.
"""

from .datasets import DATASETS, ArrayDataset, DatasetError, load_dataset
from .models import MODELS, LeNet5, build_model
from .train import CheckpointError, TrainConfig, evaluate, load_checkpoint, train

__all__ = [
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
]
