"""Figures of a run: every (layer, mode) of the ranks panel distinguishable; many layers as a
heat map; the compression panel explains a negative start."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from tucker_dlra.app import plots  # noqa: E402


def record(n_layers, d=4, negative=True):
    names = [f"layer{i}" for i in range(n_layers)]
    full = [6, 4, 3, 3][:d]
    ranks = [{"step": s, "ranks": {n: [max(1, r - s) for r in full] for n in names},
              "eval_compression": -20.0 + 10 * s, "train_compression": -60.0 + 10 * s}
             for s in range(3)]
    rows = [{"epoch": 1, "step": 2, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5,
             "val_loss": 1.1, "val_acc": 0.5, "test_loss": 1.2, "test_acc": 0.4,
             "eval_compression": 0.0, "train_compression": -40.0, "eval_compression_all": 0.0,
             "train_compression_all": -10.0, "time": 1.0, "ranks": ranks[-1]["ranks"]}]
    return {"config": {"model": "m", "dataset": "d", "method": "tdlrt", "tau": 0.1},
            "epochs": rows, "ranks": ranks,
            "initial": {"eval_compression": -20.0 if negative else 5.0,
                        "train_compression": -60.0 if negative else 5.0},
            "summary": {"kernel_shapes": {n: full for n in names}, "test_acc": 0.4,
                        "eval_compression": 0.0, "train_compression": -40.0, "time": 1.0}}


def test_every_mode_of_every_layer_is_distinguishable():
    plt = plots._plt()
    fig, ax = plt.subplots()
    plots._draw_ranks(ax, record(3, d=4))
    lines = ax.get_lines()
    assert len(lines) == 3 * 4
    looks = {(ln.get_color(), str(ln.get_linestyle()), ln.get_marker(), ln.get_linewidth())
             for ln in lines}
    assert len(looks) == len(lines)  # no two (layer, mode) pairs drawn alike
    # modes of one layer differ in marker and in style, mode 4 included
    first = lines[:4]
    assert len({ln.get_marker() for ln in first}) == 4
    assert len({str(ln.get_linestyle()) for ln in first}) == 4
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "layer0 mode 4 (k2)" in labels
    plt.close(fig)


def test_many_layers_become_a_heat_map(tmp_path):
    plt = plots._plt()
    fig, ax = plt.subplots()
    plots._draw_ranks(ax, record(20))
    assert len(ax.get_images()) == 1 and ax.get_legend() is None
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "layer19"
    plt.close(fig)
    paths = plots.plot_run(record(20), tmp_path)
    assert all(p.stat().st_size > 5000 for p in paths)


@pytest.mark.parametrize("negative", [True, False])
def test_compression_panel_explains_a_negative_start(negative):
    plt = plots._plt()
    fig, ax = plt.subplots()
    plots._draw_compression(ax, record(2, negative=negative))
    texts = " ".join(t.get_text() for t in ax.texts)
    assert ("below 0 at the start: a full-rank Tucker" in texts) == negative
    plt.close(fig)
