"""Model, optimizer, evaluation and bookkeeping helpers of the training loop (re-exported by
:mod:`tucker_dlra.app.train`)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tucker_dlra._io import atomic_write_text

from ._checkpoint import RUN_FILES
from ._config import TrainConfig
from .datasets import ArrayDataset
from .models import build_model

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
    rank: int | float | tuple[float, ...] | None = (cfg.rank if cfg.rank is not None
                                                    else cfg.rank_fraction)
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
