"""The configuration of a training run of the ``tucker-dlra`` application: :class:`TrainConfig`
and the names it accepts (re-exported by :mod:`tucker_dlra.app.train`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .datasets import DATASETS
from .models import MODELS

METHODS = ("baseline", "tdlrt", "tdlrt-parallel", "vanilla-tucker", "vanilla-cp", "vanilla-matrix")
SCHEDULES = ("plateau", "cosine", "none")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became non-finite)."""



def rank_fraction_value(v: Any) -> float | tuple[float, ...] | None:
    """The stored form of a rank fraction: one fraction per kernel mode arrives as a list (CLI,
    JSON) and is kept as a tuple; a single one is kappa, a float."""
    if isinstance(v, (list, tuple)):
        fr = tuple(float(x) for x in v)
        return fr[0] if len(fr) == 1 else fr
    return v


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
    rank_fraction: float | tuple[float, ...] | None = None
    max_rank: int | None = None
    fixed_rank_epochs: int = 0
    compress: str = "convs"
    val_fraction: float = 0.1
    train_limit: int | None = None
    test_limit: int | None = None
    max_steps: int | None = None
    stop_lr: float | None = None
    threads: int | None = None
    out: str | None = None
    data_dir: str | None = None
    download: bool = False
    mirror: str | None = None
    quiet: bool = False
    progress: bool | None = None
    plots: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rank_fraction = rank_fraction_value(self.rank_fraction)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and its accepted range."""
        per_mode = isinstance(self.rank_fraction, tuple)
        fractions = (self.rank_fraction if per_mode else () if self.rank_fraction is None
                     else (self.rank_fraction,))
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
            (all(0 < f <= 1 for f in fractions),
             f"rank-fraction must be in (0, 1]; got {self.rank_fraction}"),
            (not per_mode or len(fractions) == 4,
             "rank-fraction takes one value, or one per mode of a 2-d convolution kernel (4: "
             f"out, in, height, width); got {len(fractions)}"),
            (not per_mode or self.method in ("tdlrt", "tdlrt-parallel", "vanilla-tucker"),
             "a per-mode rank-fraction applies to Tucker ranks (methods tdlrt, "
             f"tdlrt-parallel, vanilla-tucker); method {self.method!r} takes one value"),
            (not per_mode or self.compress == "convs",
             "a per-mode rank-fraction applies to the convolutions only (compress 'convs')"),
            (self.rank is None or self.rank_fraction is None,
             "give either rank or rank-fraction, not both"),
            (0 <= self.fixed_rank_epochs < self.epochs,
             f"fixed-rank-epochs must be in [0, epochs - 1] = [0, {self.epochs - 1}]; got "
             f"{self.fixed_rank_epochs}"),
            (self.fixed_rank_epochs == 0 or self.method.startswith("tdlrt"),
             "fixed-rank-epochs applies to the rank-adaptive methods (tdlrt, tdlrt-parallel); "
             f"method {self.method!r} trains at fixed ranks throughout"),
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
            (self.stop_lr is None or (math.isfinite(self.stop_lr) and self.stop_lr > 0),
             f"stop-lr must be > 0; got {self.stop_lr}"),
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
