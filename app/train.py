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

The module keeps the loop and its phases; the configuration (``_config``), checkpoint files
(``_checkpoint``) and the model, optimizer and bookkeeping helpers (``_components``) live in
private sibling modules and are re-exported here (``tucker_dlra.app.train.X`` is the public
path).
"""

from __future__ import annotations

import dataclasses
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

from tucker_dlra._io import atomic_write_bytes, atomic_write_text, ensure_writable_dir

from ._checkpoint import (
    CHECKPOINT,
    CHECKPOINT_VERSION,
    RUN_FILES,
    TRAIN_KEYS,
    CheckpointError,
    _first_line,
    load_checkpoint,
    metadata_path,
    save_checkpoint,
)
from ._components import (  # noqa: F401 (_conv_types: used by validation/paper_tables.py)
    _conv_types,
    _epoch_generator,
    _rank_entry,
    _ranks_text,
    _rng_state,
    _set_rng_state,
    _split,
    _write_metrics,
    build_optimizer,
    build_scheduler,
    build_training_model,
    clean_stale_temporaries,
    compression,
    current_ranks,
    evaluate,
    resolve_device,
    tucker_layers,
)
from ._config import METHODS, SCHEDULES, TrainConfig, TrainingError
from .datasets import ArrayDataset, load_dataset
from .models import build_model

__all__ = [
    "METHODS",
    "SCHEDULES",
    "RUN_FILES",
    "TRAIN_KEYS",
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


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


# model_from_checkpoint lives beside the loop: it builds through this module's
# build_training_model, which a caller may replace (validation/paper_tables.py does).
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


@dataclass
class _Run:
    """The state one call of :func:`train` carries from phase to phase."""

    cfg: TrainConfig
    out: Path
    log: Callable[[str], None]
    device: torch.device
    launch: Any  # distributed.Launch | None
    main: bool
    train_set: ArrayDataset | None = None
    val_set: ArrayDataset | None = None
    test: ArrayDataset | None = None
    shape: tuple[int, int, int] = (0, 0, 0)
    num_classes: int = 0
    model: nn.Module | None = None
    step_model: nn.Module | None = None
    opt: Any = None
    sched: Any = None
    record: dict[str, Any] = field(default_factory=dict)
    start_epoch: int = 0
    step: int = 0
    elapsed: float = 0.0


def train(cfg: TrainConfig, resume: bool = False,
          log: Callable[[str], None] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.dataset`` by ``cfg.method``; write metrics, checkpoints, plots.

    One step is one forward/backward pass on a batch and one ``optimizer.step()``; for TDLRT that
    step is Algorithm 1 (K-steps, augmentation, C-step, truncation with ``tau``) for every Tucker
    layer.  Cost per step: the model's forward/backward pass plus, for TDLRT, the optimizer's
    rank-dependent work.

    The phases: the configuration (and the checkpoint to resume) are read, the output folder,
    device and data-parallel launch set up (:func:`_setup`), the data loaded and model, optimizer
    and scheduler built (:func:`_build`), their state restored from the checkpoint
    (:func:`_restore`), then every epoch is trained (:func:`_train_epoch`), evaluated and logged
    (:func:`_end_epoch`) and checkpointed (:func:`_checkpoint`), and the run summarised
    (:func:`_finish`).

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
    cfg, state = _read_config(cfg, out, resume, overwrite)
    run = _setup(cfg, out, log)
    _build(run)
    _restore(run, state)
    _log_start(run)
    steps_per_epoch = run.train_set.num_batches(cfg.batch_size)
    done = cfg.max_steps is not None and run.step >= cfg.max_steps
    for epoch in range(run.start_epoch, cfg.epochs):
        if done or _lr_below_stop(run):
            break
        t0 = time.perf_counter()
        _set_adaptive(run, epoch)
        loss_sum, correct, seen, done = _train_epoch(run, epoch, steps_per_epoch)
        _end_epoch(run, epoch, loss_sum, correct, seen, t0)
        if run.main:
            _checkpoint(run, epoch)
    return _finish(run)


def _set_adaptive(run: _Run, epoch: int) -> None:
    """TDLRT's rank adaptation is off (the fixed-rank BUG step) during the first
    ``fixed_rank_epochs`` epochs and on from then on; other optimizers are left alone."""
    if run.cfg.method.startswith("tdlrt"):
        for group in run.opt.param_groups:
            group["adaptive"] = epoch >= run.cfg.fixed_rank_epochs


def _lr_below_stop(run: _Run) -> bool:
    """Whether ``stop_lr`` ends the run: the schedule has lowered the learning rate below it."""
    stop = run.cfg.stop_lr
    return stop is not None and run.opt.param_groups[0]["lr"] < stop


def _read_config(cfg: TrainConfig, out: Path, resume: bool, overwrite: bool
                 ) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Refuse to replace an earlier run silently; on ``resume``, load the checkpoint and let its
    configuration win (but for the options a resumed run may change); validate."""
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
        for keep in ("epochs", "max_steps", "stop_lr", "threads", "data_dir", "mirror"):
            if getattr(cfg, keep) is not None:
                saved[keep] = getattr(cfg, keep)
        saved["out"] = str(out)
        cfg = TrainConfig(**saved)
    cfg.validate()
    return cfg, state


def _setup(cfg: TrainConfig, out: Path, log: Callable[[str], None]) -> _Run:
    """Threads, device, the data-parallel launch (under torchrun; rank 0 writes and logs), the
    output folder (writable, stale temporaries removed)."""
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
        ensure_writable_dir(out)
        for p in clean_stale_temporaries(out):
            log(f"removed {p} (left by an interrupted write)")
    return _Run(cfg=cfg, out=out, log=log, device=device, launch=launch, main=main)


def _build(run: _Run) -> None:
    """Load the data (train/validation split, test subset) and seed the RNGs, then build the
    model (weights from the seed)."""
    cfg = run.cfg
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
    run.train_set, run.val_set, run.test = train_set, val_set, test
    run.shape, run.num_classes = train_set.image_shape, train_set.num_classes

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)  # noqa: NPY002 - for user code using the global RNG
    random.seed(cfg.seed)
    run.model = build_training_model(cfg, run.shape, run.num_classes)
    run.record = {"config": dataclasses.asdict(cfg), "shape": list(run.shape),
                  "epochs": [], "ranks": [], "summary": {}}


def _restore(run: _Run, state: dict[str, Any] | None) -> None:
    """Weights onto the device, optimizer and scheduler built (and the model wrapped for data
    parallelism); with a checkpoint, every state restored from it (weights, optimizer,
    scheduler, metrics, epoch/step/time, RNG states), else the initial rank entry recorded."""
    cfg, model, record, out = run.cfg, run.model, run.record, run.out
    if state is not None:
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{out / CHECKPOINT}: the weights do not match its "
                                  f"configuration: {_first_line(exc)}") from None
    model.to(run.device)
    run.opt = build_optimizer(model, cfg)
    run.sched = build_scheduler(run.opt, cfg)
    device = run.device
    run.step_model = model if run.launch is None else nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    if state is not None:
        try:
            run.opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{out / CHECKPOINT}: the optimizer state does not match the "
                                  f"model: {_first_line(exc)}") from None
        if run.sched is not None and state.get("scheduler") is not None:
            run.sched.load_state_dict(state["scheduler"])
        record["epochs"], record["ranks"] = state["metrics"]["epochs"], state["metrics"]["ranks"]
        record["initial"] = state["metrics"].get("initial", {})
        run.start_epoch, run.step, run.elapsed = state["epoch"], state["step"], state["elapsed"]
        _set_rng_state(state["rng"])
        run.log(f"resumed {out / CHECKPOINT} at epoch {run.start_epoch}, step {run.step}")
    else:
        record["ranks"].append(_rank_entry(model, 0, cfg))
        comp0 = compression(model, run.shape) if cfg.method != "baseline" else None
        record["initial"] = {"eval_compression": comp0["eval"] if comp0 else 0.0,
                             "train_compression": comp0["train"] if comp0 else 0.0}


def _log_start(run: _Run) -> None:
    """The one line that opens a run: model, data sizes, method, device, output folder, and the
    per-worker batch of a data-parallel run."""
    cfg, launch = run.cfg, run.launch
    run.log(f"training {cfg.model} on {cfg.dataset} ({len(run.train_set)} train / "
            f"{len(run.val_set) if run.val_set else 0} val / {len(run.test)} test images) with "
            f"{cfg.method}"
            + (f" (tau={cfg.tau:g}, {cfg.rule} rule)" if cfg.method.startswith("tdlrt") else "")
            + f" on {run.device}; output in {run.out}"
            + (f"; data parallel on {launch.world} workers: per-worker batch "
               + (f"{cfg.batch_size // launch.world}" if cfg.batch_size % launch.world == 0 else
                  f"{cfg.batch_size // launch.world}-{cfg.batch_size // launch.world + 1}")
               + f", global batch {cfg.batch_size}" if launch is not None else ""))


def _train_epoch(run: _Run, epoch: int, steps_per_epoch: int
                 ) -> tuple[float, int, int, bool]:
    """Train one epoch (each step: forward, finite-loss check on every worker, backward,
    ``optimizer.step()``, rank history every ``steps_per_epoch // 20`` steps); return this
    worker's loss sum, correct count, images seen and whether ``max_steps`` was reached."""
    cfg, launch, device, model, opt = run.cfg, run.launch, run.device, run.model, run.opt
    record = run.record
    log_every = max(1, steps_per_epoch // 20)
    show_bar = run.main and (not cfg.quiet) and (cfg.progress if cfg.progress is not None
                                                 else sys.stderr.isatty())
    model.train()
    loss_sum, correct, seen, done = 0.0, 0, 0, False
    from tqdm.auto import tqdm

    bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not show_bar, leave=True, dynamic_ncols=True, file=sys.stderr)
    for x, y in run.train_set.batches(cfg.batch_size, shuffle=True,
                                      generator=_epoch_generator(cfg.seed, epoch), device=device):
        if launch is not None:  # this worker's share; DDP averages the gradients
            x, y, factor = distributed.local_part(x, y, launch)
        out_logits = run.step_model(x)
        loss = F.cross_entropy(out_logits, y)
        if launch is not None:
            loss = F.cross_entropy(out_logits, y, reduction="sum") * factor
        if not distributed.all_true(bool(torch.isfinite(loss)), launch, device):
            bar.close()
            raise TrainingError(f"the loss became {loss.item()} at step {run.step + 1} (epoch "
                                f"{epoch + 1}); lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        try:
            opt.step()
        except FloatingPointError as exc:  # TDLRT refuses non-finite updates
            bar.close()
            raise TrainingError(f"step {run.step + 1} (epoch {epoch + 1}): {exc}; lower --lr; "
                                "the last checkpoint is intact") from None
        run.step += 1
        loss_sum += float(loss.detach()) * (len(y) if launch is None else 1 / factor)
        correct += int((out_logits.argmax(1) == y).sum())
        seen += len(y)
        ranks = current_ranks(model)
        if run.step % log_every == 0 and ranks != record["ranks"][-1]["ranks"]:
            record["ranks"].append(_rank_entry(model, run.step, cfg, ranks))
        bar.set_postfix_str(f"loss {loss_sum / seen:.4f} acc {100 * correct / seen:.2f}% "
                            + _ranks_text(ranks), refresh=False)
        bar.update(1)
        if cfg.max_steps is not None and run.step >= cfg.max_steps:
            done = True
            break
    bar.close()
    return loss_sum, correct, seen, done


def _end_epoch(run: _Run, epoch: int, loss_sum: float, correct: int, seen: int,
               t0: float) -> None:
    """Sum the training figures over the workers, evaluate on the validation and test sets, step
    the scheduler, append the epoch's row to the record, log it and update the summary."""
    cfg, model, record, device = run.cfg, run.model, run.record, run.device
    step = run.step
    loss_sum, correct, seen = distributed.all_sum([loss_sum, correct, seen], run.launch, device)
    ranks = current_ranks(model)
    if record["ranks"][-1]["step"] != step:
        record["ranks"].append(_rank_entry(model, step, cfg, ranks))
    val_set = run.val_set
    val_loss, val_acc = evaluate(model, val_set, device=device) if val_set else (math.nan,) * 2
    test_loss, test_acc = evaluate(model, run.test, device=device)
    comp = compression(model, run.shape) if cfg.method != "baseline" else None
    lr_now = run.opt.param_groups[0]["lr"]
    train_loss = loss_sum / max(seen, 1)
    if run.sched is not None:
        if cfg.schedule == "plateau":
            run.sched.step(val_loss if val_set else train_loss)
        else:
            run.sched.step()
    run.elapsed += time.perf_counter() - t0
    elapsed = run.elapsed
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
    run.log(f"epoch {epoch + 1}/{cfg.epochs}  step {step}  lr {lr_now:.3g}  train loss "
            f"{train_loss:.4f} acc {100 * row['train_acc']:.2f}%  test loss {test_loss:.4f} acc "
            f"{100 * test_acc:.2f}%"
            + (f"  conv compression eval {row['eval_compression']:.1f}% train "
               f"{row['train_compression']:.1f}%" if comp else "")
            + (f"  {_ranks_text(ranks)}" if ranks and len(ranks) <= 3 else "")
            + f"  (cumulative {elapsed:.1f} s)")
    record["summary"] = _summary(cfg, record, model, comp, elapsed, step, len(run.train_set))


def _checkpoint(run: _Run, epoch: int) -> None:
    """Write ``metrics.json``/``metrics.csv`` and ``checkpoint.pt`` (atomically) after an epoch;
    rank 0 only."""
    record, cfg = run.record, run.cfg
    _write_metrics(run.out, record)
    save_checkpoint(run.out / CHECKPOINT, {
        "version": CHECKPOINT_VERSION, "format": "train", "config": dataclasses.asdict(cfg),
        "shape": list(run.shape), "num_classes": run.num_classes, "epoch": epoch + 1,
        "step": run.step, "elapsed": run.elapsed, "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict() if run.sched is not None else None,
        "rng": _rng_state(),
        "metrics": {"epochs": record["epochs"], "ranks": record["ranks"],
                    "initial": record.get("initial", {})},
    })


def _finish(run: _Run) -> dict[str, Any]:
    """Close the data-parallel group; on rank 0 draw the figures, write the report and return
    the record with its summary."""
    cfg, record, out = run.cfg, run.record, run.out
    if record["epochs"] and not record["summary"]:  # resumed a run that had already finished
        comp = compression(run.model, run.shape) if cfg.method != "baseline" else None
        record["summary"] = _summary(cfg, record, run.model, comp, run.elapsed, run.step,
                                     len(run.train_set))
    distributed.finish(run.launch)
    if not run.main:
        return record
    if record["epochs"] and _lr_below_stop(run) and record["epochs"][-1]["epoch"] < cfg.epochs:
        record["summary"]["stopped"] = (f"learning rate {run.opt.param_groups[0]['lr']:.3g} "
                                        f"below stop-lr {cfg.stop_lr:g}")
        _write_metrics(out, record)
    if cfg.plots and record["epochs"]:
        from .plots import plot_run

        record["summary"]["plots"] = [str(p) for p in plot_run(record, out / "plots")]
        _write_metrics(out, record)
    record["summary"]["out"] = str(out)
    if report := (record["summary"].get("report")):
        atomic_write_text(out / "report.txt", report + "\n")
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
    if s.get("stopped"):
        lines.append(f"stopped early       {s['stopped']} (of {cfg['epochs']} epochs)")
    if "out" in s:
        lines.append(f"outputs             {s['out']}/ (metrics.csv, metrics.json, "
                     "checkpoint.pt" + (", report.txt" if s.get("report") else "")
                     + (", plots/" if s.get("plots") else "") + ")")
    return "\n".join(lines)
