"""PNG figures of a training run (matplotlib, Agg backend; no display needed).

Every function takes the run record that :func:`tucker_dlra.app.train.train` returns and writes
to ``metrics.json``, so the figures of a finished run can be redrawn with
``tucker-dlra plot RUN_DIR``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["plot_compression", "plot_curves", "plot_ranks", "plot_run", "plot_summary"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _title(record: dict[str, Any]) -> str:
    c = record["config"]
    tau = f", tau = {c['tau']:g}" if c["method"].startswith("tdlrt") else ""
    return f"{c['model']} on {c['dataset']}, {c['method']}{tau}"


def _num(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _finite(values: list[float]) -> bool:
    return any(v is not None and math.isfinite(v) for v in values)


def _draw_curves(ax_loss, ax_acc, record: dict[str, Any]) -> None:
    rows = record["epochs"]
    ep = [r["epoch"] for r in rows]
    for key, label, style in (("train", "train", "-o"), ("val", "validation", "-s"),
                              ("test", "test", "-^")):
        loss = [_num(r[f"{key}_loss"]) for r in rows]
        acc = [100 * _num(r[f"{key}_acc"]) for r in rows]
        if _finite(loss):
            ax_loss.plot(ep, loss, style, ms=3, label=label)
            ax_acc.plot(ep, acc, style, ms=3, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_yscale("log")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy [%]")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)


def _rank_series(record: dict[str, Any]) -> dict[str, tuple[list[int], list[list[int]]]]:
    series: dict[str, tuple[list[int], list[list[int]]]] = {}
    for entry in record["ranks"]:
        for name, r in entry["ranks"].items():
            steps, ranks = series.setdefault(name, ([], []))
            steps.append(entry["step"])
            ranks.append(r)
    return series


#: Above this many low-rank layers the ranks are drawn as a layer x mode heat map.
MAX_RANK_LINES_LAYERS = 4
_MODE_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"),
                ((0, (1, 3)), "P")]


def _mode_names(d: int) -> list[str]:
    """Names of a kernel's modes: (out, in) for a matrix, (out, in, k1, ...) for a conv."""
    return ["out", "in"] + [f"k{i}" for i in range(1, d - 1)]


def _draw_ranks(ax, record: dict[str, Any]) -> bool:
    """Rank of every mode of every layer over the steps, each (layer, mode) distinguishable.

    Up to :data:`MAX_RANK_LINES_LAYERS` layers: one step line per (layer, mode); the colour
    names the layer, line style and marker the mode, and the line width falls with the mode so
    that modes of equal rank stay visible one on top of the other.  More layers (e.g. ResNet18):
    a layer x mode heat map of the final ranks (:func:`_draw_rank_map`).  Several layers are
    drawn a few per cent apart (on the log axis) so that equal ranks do not hide each other.
    """
    series = _rank_series(record)
    if not series:
        ax.text(0.5, 0.5, "no low-rank layers", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return False
    if len(series) > MAX_RANK_LINES_LAYERS:
        _draw_rank_map(ax, record, series)
        return True
    colors = _plt().rcParams["axes.prop_cycle"].by_key()["color"]
    last_step = record["epochs"][-1]["step"] if record["epochs"] else 0
    n_layers = len(series)
    for li, (name, (steps, ranks)) in enumerate(series.items()):
        xs = steps + ([last_step] if steps[-1] < last_step else [])
        d = len(ranks[0])
        names = _mode_names(d)
        # layers of equal rank would hide each other: shift each by a few % (log axis)
        shift = 2.0 ** (0.06 * (li - (n_layers - 1) / 2))
        for mode in range(d):
            ys = [r[mode] for r in ranks] + ([ranks[-1][mode]] if steps[-1] < last_step else [])
            ys = [y * shift for y in ys]
            ls, marker = _MODE_STYLES[mode % len(_MODE_STYLES)]
            ax.step(xs, ys, where="post", color=colors[li % len(colors)], ls=ls,
                    lw=1.0 + 0.9 * (d - 1 - mode), alpha=0.85, marker=marker, ms=4,
                    markevery=max(1, len(xs) // 8),
                    label=f"{name} mode {mode + 1} ({names[mode]})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("Tucker rank" + (" (layers shifted slightly apart)" if n_layers > 1 else ""))
    ax.set_yscale("log", base=2)
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.yaxis.set_major_locator(LogLocator(base=2))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2 if len(series) > 1 else 1, handlelength=3.5)
    return True


def _draw_rank_map(ax, record: dict[str, Any],
                   series: dict[str, tuple[list[int], list[list[int]]]]) -> None:
    """Heat map: one row per layer, one column per mode, colour = final rank / mode size
    (from the run's kernel shapes, else / initial rank), each cell labelled ``rank``."""
    import numpy as np

    names = list(series)
    d = max(len(r[-1]) for _, r in series.values())
    shapes = record.get("summary", {}).get("kernel_shapes", {})
    frac = np.full((len(names), d), np.nan)
    for i, name in enumerate(names):
        first, last = series[name][1][0], series[name][1][-1]
        full = shapes.get(name) or first
        for j, r in enumerate(last):
            frac[i, j] = r / max(full[j], 1)
    im = ax.imshow(frac, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    for i, name in enumerate(names):
        for j, r in enumerate(series[name][1][-1]):
            ax.text(j, i, str(r), ha="center", va="center", fontsize=6,
                    color="white" if frac[i, j] < 0.6 else "black")
    ax.set_xticks(range(d), [f"{j + 1} ({n})" for j, n in enumerate(_mode_names(d))],
                  fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_xlabel("mode")
    ax.set_title("final Tucker ranks (colour: rank / mode size)", fontsize=8)
    _plt().colorbar(im, ax=ax, fraction=0.046, pad=0.02)


def _draw_compression(ax, record: dict[str, Any]) -> None:
    rows = record["epochs"]
    init = record.get("initial", {})
    steps = [0] + [r["step"] for r in rows]
    for key, label, style in (("eval_compression", "eval (convs)", "-o"),
                              ("train_compression", "train (convs)", "-s"),
                              ("eval_compression_all", "eval (all layers)", ":o"),
                              ("train_compression_all", "train (all layers)", ":s")):
        vals = [init.get(key, rows[0][key] if rows else 0.0)] + [r[key] for r in rows]
        hist = [(e["step"], e[key]) for e in record.get("ranks", []) if key in e]
        if hist:  # step-resolved from the rank history, epoch ends marked
            last = steps[-1]
            xs = [h[0] for h in hist] + ([last] if hist[-1][0] < last else [])
            ys = [h[1] for h in hist] + ([hist[-1][1]] if hist[-1][0] < last else [])
            line = ax.step(xs, ys, where="post", ls=style[0] if style[0] == ":" else "-",
                           label=label)[0]
            ax.plot(steps[1:], vals[1:], style[-1], ms=3, color=line.get_color())
        elif _finite(vals):
            ax.plot(steps, vals, style, ms=3, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("compression [%]")
    ax.set_ylim(min(-5, ax.get_ylim()[0]), 100)
    ax.axhline(0.0, color="0.4", lw=0.8)
    start = [init.get(k) for k in ("eval_compression", "train_compression")]
    if any(v is not None and v < 0 for v in start):
        ax.text(0.02, 0.97, "below 0 at the start: a full-rank Tucker\nkernel (core + factors) "
                "holds more\nnumbers than the dense kernel, until\ntruncation shrinks the "
                "ranks", transform=ax.transAxes, fontsize=6.5, va="top",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    _plt().close(fig)
    return path


def plot_curves(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Loss (log scale) and accuracy per epoch for the training, validation and test sets."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    _draw_curves(a, b, record)
    fig.suptitle(_title(record))
    return _save(fig, Path(path))


def plot_ranks(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Tucker rank of every mode of every low-rank layer over the optimizer steps (a layer x mode
    heat map of the final ranks for more than :data:`MAX_RANK_LINES_LAYERS` layers)."""
    plt = _plt()
    n = len(_rank_series(record))
    fig, ax = plt.subplots(figsize=(7, 4 if n <= MAX_RANK_LINES_LAYERS else 1.5 + 0.22 * n))
    _draw_ranks(ax, record)
    ax.set_title(_title(record))
    return _save(fig, Path(path))


def plot_compression(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Eval and train compression (paper Section 4.1) at the start and after every epoch."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    _draw_compression(ax, record)
    ax.set_title(_title(record))
    return _save(fig, Path(path))


def plot_summary(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """One 2x2 figure: loss, accuracy, ranks and compression, with the final numbers as title."""
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    _draw_curves(axes[0, 0], axes[0, 1], record)
    _draw_ranks(axes[1, 0], record)
    _draw_compression(axes[1, 1], record)
    s = record.get("summary", {})
    extra = ""
    if s:
        extra = f"\ntest accuracy {100 * s['test_acc']:.2f} %"
        if record["config"]["method"] != "baseline":
            extra += (f", conv compression eval {s['eval_compression']:.1f} % / train "
                      f"{s['train_compression']:.1f} %")
        extra += f", {s['time']:.0f} s in total"
    fig.suptitle(_title(record) + extra)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_run(record: dict[str, Any] | str | os.PathLike, folder: str | os.PathLike) -> list[Path]:
    """Write ``curves.png``, ``ranks.png``, ``compression.png`` and ``summary.png`` to ``folder``.

    ``record`` is a run record or the path of a run folder / its ``metrics.json``.
    """
    if not isinstance(record, dict):
        p = Path(record)
        record = json.loads((p / "metrics.json" if p.is_dir() else p).read_text())
    folder = Path(folder)
    return [
        plot_curves(record, folder / "curves.png"),
        plot_ranks(record, folder / "ranks.png"),
        plot_compression(record, folder / "compression.png"),
        plot_summary(record, folder / "summary.png"),
    ]
