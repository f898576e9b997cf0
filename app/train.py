"""Training loop of the ``tucker-dlra`` application (paper Section 4 and Appendix A).

One function, :func:`train`, trains a model of :mod:`tucker_dlra.app.models` on a dataset of
:mod:`tucker_dlra.app.datasets` with one of the methods of the paper's Section 4:

``baseline``
    the dense network, SGD with momentum;
``tdlrt`` / ``tdlrt-parallel``
    convolutions (and optionally linear layers) in Tucker format trained by Algorithm 1 through the
    :class:`tucker_dlra.nn.TDLRT` optimizer (rank-adaptive BUG, or the parallel BUG), ranks
    truncated with tolerance ``tau`` after every step;
``vanilla-tucker`` / ``vanilla-cp`` / ``vanilla-matrix``
    fixed-rank factorised layers trained by SGD on their factors (the paper's "vanilla" baselines),
    ranks set by ``rank`` or ``rank_fraction`` (the paper's kappa).

Defaults follow Appendix A: SGD, learning rate 5e-2 divided by 10 when the validation loss
plateaus, Polyak momentum 0.1 (0.9 for batch-norm parameters), batch size 128.

Every epoch writes, into ``out``: ``metrics.csv`` and ``metrics.json`` (per-epoch losses,
accuracies, learning rate, compression, ranks; per-step rank history) and ``checkpoint.pt``
(model, optimizer, scheduler, RNG states, epoch, step, metrics), each atomically (temporary file
in the same folder, then ``os.replace``).  ``resume=True`` continues from ``checkpoint.pt``
exactly: the data order of every epoch is drawn from a generator seeded by ``(seed, epoch)`` and the
global RNG states are restored, so on CPU a resumed run ends with the same numbers as an
uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tucker_dlra.nn import distributed

from tucker_dlra._io import atomic_write_bytes, atomic_write_text

from .datasets import DATASETS, ArrayDataset, load_dataset
from .models import MODELS, build_model

__all__ = [
    "METHODS",
    "SCHEDULES",
    "TrainConfig",
    "CheckpointError",
    "TrainingError",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_training_model",
    "clean_stale_temporaries",
    "metadata_path",
    "evaluate",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
    "train",
    "tucker_layers",
]

METHODS = ("baseline", "tdlrt", "tdlrt-parallel", "vanilla-tucker", "vanilla-cp", "vanilla-matrix")
SCHEDULES = ("plateau", "cosine", "none")
CHECKPOINT = "checkpoint.pt"
#: 2: loads with ``torch.load(weights_only=True)`` (tensors and plain containers only).
CHECKPOINT_VERSION = 2
#: Files a run writes into its folder (their hidden temporary twins are cleaned up on resume).
RUN_FILES = (CHECKPOINT, "metrics.json", "metrics.csv", "report.txt")
#: Entries of a training checkpoint (``format == "train"``).
TRAIN_KEYS = ("version", "config", "shape", "num_classes", "epoch", "step", "elapsed", "model",
              "optimizer", "scheduler", "rng", "metrics")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became non-finite)."""


class CheckpointError(ValueError):
    """A file is not a readable tucker-dlra checkpoint."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in every checkpoint).

    See ``tucker-dlra train --help`` for the meaning of each field.
    """

    model: str = "lenet5"
    dataset: str = "mnist-subset"
    method: str = "tdlrt"
    tau: float = 0.2
    rule: str = "per_mode"
    epochs: int = 15
    lr: float = 0.05
    schedule: str = "plateau"
    patience: int = 2
    momentum: float = 0.1
    bn_momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    rank: int | None = None
    rank_fraction: float | None = None
    max_rank: int | None = None
    compress: str = "convs"
    val_fraction: float = 0.1
    train_limit: int | None = None
    test_limit: int | None = None
    max_steps: int | None = None
    threads: int | None = None
    out: str | None = None
    data_dir: str | None = None
    download: bool = False
    mirror: str | None = None
    quiet: bool = False
    progress: bool | None = None
    plots: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and its accepted range."""
        checks = [
            (self.model in MODELS, f"model must be one of {sorted(MODELS)}; got {self.model!r}"),
            (self.dataset in DATASETS,
             f"dataset must be one of {sorted(DATASETS)}; got {self.dataset!r}"),
            (self.method in METHODS, f"method must be one of {list(METHODS)}; got {self.method!r}"),
            (self.schedule in SCHEDULES,
             f"schedule must be one of {list(SCHEDULES)}; got {self.schedule!r}"),
            (self.rule in ("per_mode", "split"),
             f"rule must be 'per_mode' or 'split'; got {self.rule!r}"),
            (self.compress in ("convs", "all"),
             f"compress must be 'convs' or 'all'; got {self.compress!r}"),
            (math.isfinite(self.tau) and 0 <= self.tau < 1,
             f"tau must be in [0, 1); got {self.tau}"),
            (self.epochs >= 1, f"epochs must be >= 1; got {self.epochs}"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be > 0; got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1); got {self.momentum}"),
            (0 <= self.bn_momentum < 1, f"bn-momentum must be in [0, 1); got {self.bn_momentum}"),
            (self.weight_decay >= 0, f"weight-decay must be >= 0; got {self.weight_decay}"),
            (self.batch_size >= 1, f"batch-size must be >= 1; got {self.batch_size}"),
            (self.patience >= 0, f"patience must be >= 0; got {self.patience}"),
            (self.rank is None or self.rank >= 1, f"rank must be >= 1; got {self.rank}"),
            (self.rank_fraction is None or 0 < self.rank_fraction <= 1,
             f"rank-fraction must be in (0, 1]; got {self.rank_fraction}"),
            (self.rank is None or self.rank_fraction is None,
             "give either rank or rank-fraction, not both"),
            (self.max_rank is None or self.max_rank >= 1,
             f"max-rank must be >= 1; got {self.max_rank}"),
            (0 <= self.val_fraction < 1,
             f"val-fraction must be in [0, 1); got {self.val_fraction}"),
            (self.train_limit is None or self.train_limit >= 1,
             f"train-limit must be >= 1; got {self.train_limit}"),
            (self.test_limit is None or self.test_limit >= 1,
             f"test-limit must be >= 1; got {self.test_limit}"),
            (self.max_steps is None or self.max_steps >= 1,
             f"max-steps must be >= 1; got {self.max_steps}"),
            (self.threads is None or self.threads >= 1,
             f"threads must be >= 1; got {self.threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def default_out(self) -> str:
        """``runs/<model>-<dataset>-<method>[-tau<tau>]-seed<seed>``."""
        tau = f"-tau{self.tau:g}" if self.method.startswith("tdlrt") else ""
        return f"runs/{self.model}-{self.dataset}-{self.method}{tau}-seed{self.seed}"


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
        raise CheckpointError(f"{path} is not a readable checkpoint (loaded with "
                              f"weights_only=True: {_first_line(exc)})") from None
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


# ---------------------------------------------------------------------------------------------
# Model and optimizer
# ---------------------------------------------------------------------------------------------


def tucker_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers of ``model`` trained on the Tucker manifold (those with ``core`` and ``factors``
    and a ``ranks`` attribute), with their qualified names."""
    return [(name, m) for name, m in model.named_modules()
            if hasattr(m, "core") and hasattr(m, "factors") and hasattr(m, "ranks")]


def _conv_types() -> list[type]:
    return [nn.Conv1d, nn.Conv2d, nn.Conv3d]


def build_training_model(cfg: TrainConfig, shape: tuple[int, int, int],
                         num_classes: int) -> nn.Module:
    """Dense model of ``cfg.model`` converted for ``cfg.method`` with ``tuckerize``.

    ``baseline`` keeps the dense model.  The other methods replace the convolutions (and with
    ``compress="all"`` also the linear layers; the paper compresses convolutions only, Section
    4.3) by :func:`tucker_dlra.nn.tuckerize`; TDLRT layers start at full rank unless ``rank`` or
    ``rank_fraction`` is given and are then truncated by the optimizer.
    """
    model = build_model(cfg.model, shape[0], num_classes, shape[1:])
    if cfg.method == "baseline":
        return model
    from tucker_dlra.nn.convert import tuckerize

    kind = "tdlrt" if cfg.method.startswith("tdlrt") else cfg.method
    include = None if cfg.compress == "all" else _conv_types()
    rank: int | float | None = cfg.rank if cfg.rank is not None else cfg.rank_fraction
    if rank is None and kind != "tdlrt":
        rank = 0.5  # vanilla baselines need a fixed rank; the paper's kappa
    model = tuckerize(model, rank=rank, include=include, kind=kind, max_rank=cfg.max_rank)
    if kind != "tdlrt":
        # training from scratch: the vanilla layers start from their own initialisation
        # (kernel variance of PyTorch's default), not from a truncated HOSVD of a random
        # dense kernel, which keeps a few per cent of its norm at these ranks and stalls SGD
        for m in model.modules():
            if m.__class__.__name__.startswith("Vanilla"):
                m.reset_parameters()
    return model


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Batch-norm parameters get ``bn_momentum`` (paper Appendix A), the others ``momentum``."""
    bn_ids = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              for p in m.parameters()}
    bn = [p for p in model.parameters() if id(p) in bn_ids]
    other = [p for p in model.parameters() if id(p) not in bn_ids]
    groups = [{"params": other, "momentum": cfg.momentum}]
    if bn:
        groups.append({"params": bn, "momentum": cfg.bn_momentum})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``TDLRT`` (Algorithm 1) for the ``tdlrt*`` methods, ``torch.optim.SGD`` otherwise."""
    groups = _param_groups(model, cfg)
    if cfg.method.startswith("tdlrt"):
        from tucker_dlra.nn.optim import TDLRT

        integrator = "parallel" if cfg.method == "tdlrt-parallel" else "bug"
        return TDLRT(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                     tau=cfg.tau, integrator=integrator, rule=cfg.rule, max_rank=cfg.max_rank)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    """ReduceLROnPlateau (factor 10, paper Appendix A), cosine annealing over the epochs or None."""
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1,
                                                          patience=cfg.patience)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    return None


def model_from_checkpoint(state: dict[str, Any], source: str | os.PathLike = "checkpoint"
                          ) -> nn.Module:
    """Rebuild the model stored in a checkpoint (training or exported) on the CPU, in eval mode.

    Raises
    ------
    CheckpointError
        The configuration does not describe a model, or the weights do not fit the model it
        describes; the message names ``source`` (the file) and the problem.
    """
    try:
        cfg = TrainConfig(**{k: v for k, v in state["config"].items()
                             if k in {f.name for f in dataclasses.fields(TrainConfig)}})
        cfg.validate()
        shape = tuple(int(n) for n in state["shape"])
        if state.get("format") == "dense":
            model = build_model(cfg.model, shape[0], state["num_classes"], shape[1:])
        else:
            torch.manual_seed(cfg.seed)
            model = build_training_model(cfg, shape, state["num_classes"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{source}: its configuration does not describe a model "
                              f"({_first_line(exc)})") from None
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        kind = "an exported dense model" if state.get("format") == "dense" else (
            f"{cfg.model} trained with {cfg.method}")
        raise CheckpointError(f"{source}: the weights do not match its configuration "
                              f"({kind}): {_first_line(exc)}") from None
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Evaluation and bookkeeping
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: nn.Module, data: ArrayDataset, batch_size: int = 512,
             device: torch.device | str = "cpu") -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (in [0, 1]) of ``model`` on ``data`` (eval mode).

    Cost: one forward pass over ``data``.
    """
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for x, y in data.batches(batch_size, device=device):
        out = model(x)
        total_loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
    model.train(was_training)
    n = max(len(data), 1)
    return total_loss / n, correct / n


def current_ranks(model: nn.Module) -> dict[str, list[int]]:
    """Current Tucker ranks of every Tucker layer, by layer name."""
    return {name: [int(r) for r in m.ranks] for name, m in tucker_layers(model)}


def compression(model: nn.Module, shape: tuple[int, int, int]) -> dict[str, Any]:
    """Eval/train compression of ``model`` (in %) from :func:`tucker_dlra.nn.compression_report`.

    Returns ``{"eval", "train", "eval_all", "train_all", "report"}`` (percent; the first two over
    the convolutions as in the paper's tables, the ``*_all`` ones over all layers; ``report`` is
    the printed table).
    """
    from tucker_dlra.nn.report import compression_report

    rep = compression_report(model, input_shape=shape)
    return {
        "eval": float(rep.eval_compression_conv),
        "train": float(rep.train_compression_conv),
        "eval_all": float(rep.eval_compression),
        "train_all": float(rep.train_compression),
        "report": str(rep),
    }


def _rank_entry(model: nn.Module, step: int, cfg: TrainConfig,
                ranks: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """One point of the rank history: ranks per layer and the compression rates at ``step``
    (parameter counts only, no forward pass)."""
    entry: dict[str, Any] = {"step": step, "ranks": current_ranks(model) if ranks is None
                             else ranks}
    if cfg.method != "baseline":
        from tucker_dlra.nn.report import compression_report

        rep = compression_report(model)
        entry.update(eval_compression=float(rep.eval_compression_conv),
                     train_compression=float(rep.train_compression_conv),
                     eval_compression_all=float(rep.eval_compression),
                     train_compression_all=float(rep.train_compression))
    return entry


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                   float(gauss)]  # plain containers and a tensor: weights_only loads it
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state,
             "python": list(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss,  # noqa: NPY002
                         gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _split(train: ArrayDataset, cfg: TrainConfig) -> tuple[ArrayDataset, ArrayDataset | None]:
    n = len(train)
    if cfg.train_limit is not None:
        n = min(n, cfg.train_limit)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed + 7919))
    n_val = int(round(cfg.val_fraction * n))
    if cfg.val_fraction > 0 and n_val == 0:
        n_val = 1
    val = train.subset(order[:n_val]) if n_val else None
    return train.subset(order[n_val:n]), val


def _ranks_text(ranks: dict[str, list[int]]) -> str:
    if not ranks:
        return ""
    if len(ranks) <= 3:
        return " ".join(f"{k}:{','.join(map(str, v))}" for k, v in ranks.items())
    return f"{len(ranks)} layers"


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None, so that metrics.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _write_metrics(out: Path, record: dict[str, Any]) -> None:
    atomic_write_text(out / "metrics.json",
                      json.dumps(_json_safe(record), indent=1, allow_nan=False))
    rows = record["epochs"]
    if not rows:
        return
    cols = [k for k in rows[0] if k != "ranks"] + ["ranks"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        w.writerow([json.dumps(r[c]) if c == "ranks" else r[c] for c in cols])
    atomic_write_text(out / "metrics.csv", buf.getvalue())


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {name!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


def clean_stale_temporaries(out: str | os.PathLike) -> list[Path]:
    """Delete the hidden temporary files (``.<name>.<random>.tmp``) that a run killed during an
    atomic write leaves in its folder (names of :data:`RUN_FILES`, and the figures' temporary
    files in ``plots/``); return the deleted paths."""
    out = Path(out)
    gone = []
    for p in out.glob(".*.tmp") if out.is_dir() else ():
        if p.is_file() and p.name.startswith(tuple(f".{n}." for n in RUN_FILES)):
            p.unlink()
            gone.append(p)
    plots = out / "plots"
    for p in plots.glob(".*.png.tmp.png") if plots.is_dir() else ():  # see plots._save
        if p.is_file():
            p.unlink()
            gone.append(p)
    return gone


def train(cfg: TrainConfig, resume: bool = False,
          log: Callable[[str], None] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.dataset`` by ``cfg.method``; write metrics, checkpoints, plots.

    One step is one forward/backward pass on a batch and one ``optimizer.step()``; for TDLRT that
    step is Algorithm 1 (K-steps, augmentation, C-step, truncation with ``tau``) for every Tucker
    layer.  Cost per step: the model's forward/backward pass plus, for TDLRT, the optimizer's
    rank-dependent work.

    Parameters
    ----------
    cfg : TrainConfig
    resume : bool
        Continue from ``<out>/checkpoint.pt`` (its configuration wins; ``epochs`` and
        ``max_steps`` may be raised to train longer).
    log : callable, optional
        Receives the text lines (default: print to stdout unless ``cfg.quiet``).
    overwrite : bool
        Allow a fresh run into a folder that already holds ``checkpoint.pt`` (it is replaced
        at the end of the first epoch).  Without it (and without ``resume``) that is a
        ``FileExistsError``: an earlier run is never replaced silently.

    Returns
    -------
    dict
        The content of ``metrics.json``: ``config``, ``epochs`` (one row per epoch), ``ranks``
        (per-step rank history), ``summary`` (final test accuracy, compression, ranks, time).
    """
    if log is None:
        log = (lambda s: None) if cfg.quiet else (lambda s: print(s, flush=True))
    out = Path(cfg.out or cfg.default_out())
    state = None
    if not resume and not overwrite and (out / CHECKPOINT).exists():
        raise FileExistsError(f"{out / CHECKPOINT} already exists (an earlier run): add --resume "
                              "to continue it, --overwrite to replace it, or choose another --out")
    if resume:
        path = out / CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        state = load_checkpoint(path)
        saved = dict(state["config"])
        for keep in ("quiet", "progress", "plots", "device", "download"):
            saved[keep] = getattr(cfg, keep)
        for keep in ("epochs", "max_steps", "threads", "data_dir", "mirror"):
            if getattr(cfg, keep) is not None:
                saved[keep] = getattr(cfg, keep)
        saved["out"] = str(out)
        cfg = TrainConfig(**saved)
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    launch = distributed.launch_from_env(device)  # torchrun: data parallel, rank 0 writes
    main = launch is None or launch.main
    if launch is not None:
        device = launch.device
        if not main:
            log = lambda s: None  # noqa: E731
    out.mkdir(parents=True, exist_ok=True)
    if main:
        (out / ".write-test").write_text("ok")
        (out / ".write-test").unlink()
        for p in clean_stale_temporaries(out):
            log(f"removed {p} (left by an interrupted write)")

    train_full, test = load_dataset(cfg.dataset, cfg.data_dir, cfg.download,
                                    mirrors=[cfg.mirror] if cfg.mirror else None,
                                    progress=not cfg.quiet)
    train_set, val_set = _split(train_full, cfg)
    if len(train_set) == 0:
        used = min(len(train_full), cfg.train_limit or len(train_full))
        held = len(val_set) if val_set else 0
        raise ValueError(f"the training split is empty ({used} images, {held} held out for "
                         f"validation by val-fraction {cfg.val_fraction:g}): raise "
                         "train-limit or lower val-fraction")
    if cfg.test_limit is not None:
        test = test.subset(slice(0, cfg.test_limit))
    shape, num_classes = train_set.image_shape, train_set.num_classes

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)  # noqa: NPY002 - for user code using the global RNG
    random.seed(cfg.seed)
    model = build_training_model(cfg, shape, num_classes)
    record: dict[str, Any] = {"config": dataclasses.asdict(cfg), "shape": list(shape),
                              "epochs": [], "ranks": [], "summary": {}}
    start_epoch, step, elapsed = 0, 0, 0.0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{out / CHECKPOINT}: the weights do not match its "
                                  f"configuration: {_first_line(exc)}") from None
    model.to(device)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    step_model = model if launch is None else nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    if state is not None:
        try:
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{out / CHECKPOINT}: the optimizer state does not match the "
                                  f"model: {_first_line(exc)}") from None
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        record["epochs"], record["ranks"] = state["metrics"]["epochs"], state["metrics"]["ranks"]
        record["initial"] = state["metrics"].get("initial", {})
        start_epoch, step, elapsed = state["epoch"], state["step"], state["elapsed"]
        _set_rng_state(state["rng"])
        log(f"resumed {out / CHECKPOINT} at epoch {start_epoch}, step {step}")
    else:
        record["ranks"].append(_rank_entry(model, 0, cfg))
        comp0 = compression(model, shape) if cfg.method != "baseline" else None
        record["initial"] = {"eval_compression": comp0["eval"] if comp0 else 0.0,
                             "train_compression": comp0["train"] if comp0 else 0.0}

    steps_per_epoch = train_set.num_batches(cfg.batch_size)
    log_every = max(1, steps_per_epoch // 20)
    show_bar = main and (not cfg.quiet) and (cfg.progress if cfg.progress is not None
                                             else sys.stderr.isatty())
    log(f"training {cfg.model} on {cfg.dataset} ({len(train_set)} train / "
        f"{len(val_set) if val_set else 0} val / {len(test)} test images) with {cfg.method}"
        + (f" (tau={cfg.tau:g}, {cfg.rule} rule)" if cfg.method.startswith("tdlrt") else "")
        + f" on {device}; output in {out}"
        + (f"; data parallel on {launch.world} workers: per-worker batch "
           + (f"{cfg.batch_size // launch.world}" if cfg.batch_size % launch.world == 0 else
              f"{cfg.batch_size // launch.world}-{cfg.batch_size // launch.world + 1}")
           + f", global batch {cfg.batch_size}" if launch is not None else ""))
    done = cfg.max_steps is not None and step >= cfg.max_steps
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if done:
            break
        t0 = time.perf_counter()
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        from tqdm.auto import tqdm

        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not show_bar, leave=True, dynamic_ncols=True, file=sys.stderr)
        for x, y in train_set.batches(cfg.batch_size, shuffle=True,
                                      generator=_epoch_generator(cfg.seed, epoch), device=device):
            if launch is not None:  # this worker's share; DDP averages the gradients
                x, y, factor = distributed.local_part(x, y, launch)
            out_logits = step_model(x)
            loss = F.cross_entropy(out_logits, y)
            if launch is not None:
                loss = F.cross_entropy(out_logits, y, reduction="sum") * factor
            if not distributed.all_true(bool(torch.isfinite(loss)), launch, device):
                bar.close()
                raise TrainingError(f"the loss became {loss.item()} at step {step + 1} (epoch "
                                    f"{epoch + 1}); lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            try:
                opt.step()
            except FloatingPointError as exc:  # TDLRT refuses non-finite updates
                bar.close()
                raise TrainingError(f"step {step + 1} (epoch {epoch + 1}): {exc}; lower --lr; "
                                    "the last checkpoint is intact") from None
            step += 1
            loss_sum += float(loss.detach()) * (len(y) if launch is None else 1 / factor)
            correct += int((out_logits.argmax(1) == y).sum())
            seen += len(y)
            ranks = current_ranks(model)
            if step % log_every == 0 and ranks != record["ranks"][-1]["ranks"]:
                record["ranks"].append(_rank_entry(model, step, cfg, ranks))
            bar.set_postfix_str(f"loss {loss_sum / seen:.4f} acc {100 * correct / seen:.2f}% "
                                + _ranks_text(ranks), refresh=False)
            bar.update(1)
            if cfg.max_steps is not None and step >= cfg.max_steps:
                done = True
                break
        bar.close()
        loss_sum, correct, seen = distributed.all_sum([loss_sum, correct, seen], launch, device)
        ranks = current_ranks(model)
        if record["ranks"][-1]["step"] != step:
            record["ranks"].append(_rank_entry(model, step, cfg, ranks))
        val_loss, val_acc = evaluate(model, val_set, device=device) if val_set else (math.nan,) * 2
        test_loss, test_acc = evaluate(model, test, device=device)
        comp = compression(model, shape) if cfg.method != "baseline" else None
        lr_now = opt.param_groups[0]["lr"]
        train_loss = loss_sum / max(seen, 1)
        if sched is not None:
            if cfg.schedule == "plateau":
                sched.step(val_loss if val_set else train_loss)
            else:
                sched.step()
        elapsed += time.perf_counter() - t0
        row = {
            "epoch": epoch + 1, "step": step, "lr": lr_now,
            "train_loss": train_loss, "train_acc": correct / max(seen, 1),
            "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
            "eval_compression": comp["eval"] if comp else 0.0,
            "train_compression": comp["train"] if comp else 0.0,
            "eval_compression_all": comp["eval_all"] if comp else 0.0,
            "train_compression_all": comp["train_all"] if comp else 0.0,
            "time": elapsed, "ranks": ranks,
        }
        record["epochs"].append(row)
        log(f"epoch {epoch + 1}/{cfg.epochs}  step {step}  lr {lr_now:.3g}  train loss "
            f"{train_loss:.4f} acc {100 * row['train_acc']:.2f}%  test loss {test_loss:.4f} acc "
            f"{100 * test_acc:.2f}%"
            + (f"  conv compression eval {row['eval_compression']:.1f}% train "
               f"{row['train_compression']:.1f}%" if comp else "")
            + (f"  {_ranks_text(ranks)}" if ranks and len(ranks) <= 3 else "")
            + f"  (cumulative {elapsed:.1f} s)")
        record["summary"] = _summary(cfg, record, model, comp, elapsed, step, len(train_set))
        if not main:
            continue
        _write_metrics(out, record)
        save_checkpoint(out / CHECKPOINT, {
            "version": CHECKPOINT_VERSION, "format": "train", "config": dataclasses.asdict(cfg),
            "shape": list(shape), "num_classes": num_classes, "epoch": epoch + 1, "step": step,
            "elapsed": elapsed, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None, "rng": _rng_state(),
            "metrics": {"epochs": record["epochs"], "ranks": record["ranks"],
                        "initial": record.get("initial", {})},
        })
    if record["epochs"] and not record["summary"]:  # resumed a run that had already finished
        comp = compression(model, shape) if cfg.method != "baseline" else None
        record["summary"] = _summary(cfg, record, model, comp, elapsed, step, len(train_set))
    distributed.finish(launch)
    if not main:
        return record
    if cfg.plots and record["epochs"]:
        from .plots import plot_run

        record["summary"]["plots"] = [str(p) for p in plot_run(record, out / "plots")]
        _write_metrics(out, record)
    record["summary"]["out"] = str(out)
    if comp := (record["summary"].get("report")):
        atomic_write_text(out / "report.txt", comp + "\n")
    return record


def _summary(cfg: TrainConfig, record: dict[str, Any], model: nn.Module,
             comp: dict[str, Any] | None, elapsed: float, step: int, n_train: int) -> dict:
    last = record["epochs"][-1]
    kernel_shapes = {name: list(m.kernel_shape) for name, m in tucker_layers(model)
                     if hasattr(m, "kernel_shape")}
    return {
        "test_acc": last["test_acc"], "test_loss": last["test_loss"],
        "eval_compression": last["eval_compression"],
        "train_compression": last["train_compression"],
        "eval_compression_all": last["eval_compression_all"],
        "train_compression_all": last["train_compression_all"],
        "ranks": last["ranks"], "kernel_shapes": kernel_shapes,
        "time": elapsed, "steps": step, "epochs": last["epoch"], "train_images": n_train,
        "report": comp["report"] if comp else None,
    }


def format_summary(record: dict[str, Any]) -> str:
    """Human-readable end-of-run summary: accuracy, compression, ranks per layer, time."""
    cfg, s = record["config"], record["summary"]
    lines = [f"== {cfg['model']} on {cfg['dataset']}, method {cfg['method']}"
             + (f" (tau = {cfg['tau']:g})" if cfg["method"].startswith("tdlrt") else "") + " =="]
    lines.append(f"test accuracy       {100 * s['test_acc']:.2f} %  (loss {s['test_loss']:.4f})")
    if cfg["method"] != "baseline":
        lines.append(f"conv compression    eval {s['eval_compression']:.2f} %   train "
                     f"{s['train_compression']:.2f} %")
        lines.append(f"all layers          eval {s['eval_compression_all']:.2f} %   train "
                     f"{s['train_compression_all']:.2f} %")
    if s["ranks"]:
        lines.append("ranks per layer")
        width = max(len(k) for k in s["ranks"])
        for name, r in s["ranks"].items():
            full = s["kernel_shapes"].get(name)
            lines.append(f"  {name:<{width}}  ({', '.join(map(str, r))})"
                         + (f"  of ({', '.join(map(str, full))})" if full else ""))
    ms = 1000 * s["time"] / max(s["steps"], 1)
    lines.append(f"time                {s['time']:.1f} s  ({s['epochs']} epochs, {s['steps']} "
                 f"steps of batch {cfg['batch_size']}, {ms:.0f} ms/step incl. evaluation)")
    if "out" in s:
        lines.append(f"outputs             {s['out']}/ (metrics.csv, metrics.json, "
                     "checkpoint.pt" + (", report.txt" if s.get("report") else "")
                     + (", plots/" if s.get("plots") else "") + ")")
    return "\n".join(lines)
