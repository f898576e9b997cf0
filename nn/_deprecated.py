"""Old import paths of the training application and of ``verify`` (deprecated, one release).

The training application moved from ``tucker_dlra.nn`` to :mod:`tucker_dlra.app` and the
NumPy-only theorem checks to :mod:`tucker_dlra.verify`.  ``import tucker_dlra.nn.train`` (and
``.cli``, ``.datasets``, ``.models``, ``.plots``, ``.verify``) still works through the finder
below: it emits a :class:`DeprecationWarning` and returns the new module itself, so every name,
private ones included, is the same object.  The application's names re-exported from
``tucker_dlra.nn`` (``TrainConfig``, ``train``, ...) are served by ``tucker_dlra.nn.__getattr__``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: old submodule of ``tucker_dlra.nn`` -> its new home
MOVED_MODULES: dict[str, str] = {
    "tucker_dlra.nn.cli": "tucker_dlra.app.cli",
    "tucker_dlra.nn.datasets": "tucker_dlra.app.datasets",
    "tucker_dlra.nn.models": "tucker_dlra.app.models",
    "tucker_dlra.nn.plots": "tucker_dlra.app.plots",
    "tucker_dlra.nn.train": "tucker_dlra.app.train",
    "tucker_dlra.nn.verify": "tucker_dlra.verify",
}

#: application names once re-exported from ``tucker_dlra.nn`` -> their new module
MOVED_NAMES: dict[str, str] = {
    name: "tucker_dlra.app"
    for name in ("DATASETS", "MODELS", "ArrayDataset", "CheckpointError", "DatasetError",
                 "LeNet5", "TrainConfig", "build_model", "evaluate", "load_checkpoint",
                 "load_dataset", "train")
}


def warn_moved(old: str, new: str) -> None:
    """Emit the :class:`DeprecationWarning` for ``old`` (now ``new``), at the caller's import."""
    warnings.warn(f"{old} moved to {new}; the old name will be removed in the next release",
                  DeprecationWarning, stacklevel=3)


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new}; the old path will be removed in the "
                      "next release", DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        # the new module is already executed; keep it under the old name too
        pass


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 (finder protocol)
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    """Put the finder of the old submodule paths on :data:`sys.meta_path` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
