"""Checkpoints of the training application: atomic saving, safe loading, the files of a run
(re-exported by :mod:`tucker_dlra.app.train`)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from tucker_dlra._io import atomic_write_bytes

CHECKPOINT = "checkpoint.pt"
#: 2: loads with ``torch.load(weights_only=True)`` (tensors and plain containers only).
CHECKPOINT_VERSION = 2
#: Files a run writes into its folder (their hidden temporary twins are cleaned up on resume).
RUN_FILES = (CHECKPOINT, "metrics.json", "metrics.csv", "report.txt")
#: Entries of a training checkpoint (``format == "train"``).
TRAIN_KEYS = ("version", "config", "shape", "num_classes", "epoch", "step", "elapsed", "model",
              "optimizer", "scheduler", "rng", "metrics")


class CheckpointError(ValueError):
    """A file is not a readable tucker-dlra checkpoint."""


# ---------------------------------------------------------------------------------------------
# Atomic files
# ---------------------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (a crash never leaves a torn checkpoint).

    ``state`` must hold tensors and plain containers only, so that it loads with
    ``torch.load(path, weights_only=True)``.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def metadata_path(path: str | os.PathLike) -> Path:
    """The JSON file beside an exported model: ``<path>.json`` (config, input shape, classes)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(lines[:3])[:400] or type(exc).__name__


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint or an exported state dict onto the CPU, safely.

    The file is read with ``torch.load(path, weights_only=True)``: tensors and plain containers
    only, no arbitrary object is unpickled.  Two formats are accepted:

    * a training checkpoint written by :func:`train` (``format == "train"``; entries
      :data:`TRAIN_KEYS`);
    * a plain model state dict written by ``tucker-dlra export`` with its metadata in the
      JSON file :func:`metadata_path` beside it; returned as ``{"format": "dense", "config",
      "shape", "num_classes", "model"}``.

    Parameters
    ----------
    path : path of the ``.pt`` file.

    Returns
    -------
    dict with at least ``format``, ``config``, ``shape``, ``num_classes`` and ``model``.

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointError
        The file (or its metadata) is unreadable, is not a tucker-dlra checkpoint, or lacks an
        entry; the message names the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        why = _first_line(exc)
        if "Weights only load failed" in why:  # torch's paragraph: say what it means here
            why = ("it holds objects a weights-only load refuses: a checkpoint of an older "
                   "tucker-dlra or not a tucker-dlra file; a run can start afresh with "
                   "train --overwrite, a trusted file be read with torch.load(path, "
                   "weights_only=False)")
        raise CheckpointError(f"{path} is not a readable checkpoint (loaded with "
                              f"weights_only=True: {why})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a tucker-dlra checkpoint (holds a "
                              f"{type(state).__name__}, not a dict)")
    if state and all(torch.is_tensor(v) for v in state.values()):  # exported state dict
        meta = metadata_path(path)
        if not meta.is_file():
            raise CheckpointError(f"{path} is a plain state dict without its metadata file "
                                  f"{meta} (written by tucker-dlra export)")
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{meta} is not readable JSON ({_first_line(exc)})") from None
        if not isinstance(info, dict):
            raise CheckpointError(f"{meta} is not tucker-dlra export metadata")
        state = {**info, "format": "dense", "model": state}
        path = meta
    fmt = state.get("format", "train")
    need = TRAIN_KEYS if fmt == "train" else ("config", "shape", "num_classes", "model")
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a complete tucker-dlra checkpoint: missing "
                              f"{', '.join(repr(k) for k in missing)}")
    if not isinstance(state["config"], dict) or "model" not in state["config"]:
        raise CheckpointError(f"{path}: entry 'config' is not a training configuration")
    return state
