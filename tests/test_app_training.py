"""Application-level training: LeNet5 trained by TDLRT (Algorithm 1) on the embedded real MNIST
images learns (loss falls, accuracy far above chance) and compresses more for a larger tau."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tucker_dlra.app.train import TrainConfig, train  # noqa: E402


def _run(tau: float, tmp_path) -> dict:
    torch.set_num_threads(1)
    cfg = TrainConfig(method="tdlrt", tau=tau, epochs=4, batch_size=64, train_limit=3200,
                      val_fraction=0.0, test_limit=600, schedule="none", seed=1, quiet=True,
                      plots=False, device="cpu", out=str(tmp_path / f"tau{tau}"))
    return train(cfg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("training")
    return {tau: _run(tau, tmp) for tau in (0.1, 0.3)}


def test_loss_falls_and_model_learns(runs):
    for rec in runs.values():
        rows = rec["epochs"]
        assert rows[-1]["step"] == 200  # 4 epochs x 50 steps of 64 images
        losses = [r["train_loss"] for r in rows]
        assert losses[0] > losses[1] > losses[2] > losses[3]
        assert losses[-1] < 0.6  # chance level is ln(10) = 2.30
        assert rows[-1]["test_acc"] > 0.8  # 10 classes: chance is 0.1


def test_larger_tau_truncates_more(runs):
    def total_rank(rec, layer="conv2"):
        return sum(rec["summary"]["ranks"][layer])

    lo, hi = runs[0.1], runs[0.3]
    full = 50 + 20 + 5 + 5
    assert total_rank(hi) < total_rank(lo) <= full
    # (at tau = 0.1 the Tucker layers may still hold more numbers than dense ones: < 0 is right)
    assert hi["summary"]["eval_compression"] > lo["summary"]["eval_compression"] + 10
    assert hi["summary"]["eval_compression"] > 50
    # ranks only ever come from Algorithm 1's truncation: the history starts at full rank
    assert lo["ranks"][0]["ranks"]["conv2"] == [50, 20, 5, 5]
    assert hi["ranks"][-1]["ranks"]["conv2"] == hi["summary"]["ranks"]["conv2"]


def test_metrics_json_is_strict_and_redraws(runs, tmp_path):
    """No validation split: the missing validation numbers are null (strict JSON), and the
    figures can be redrawn from the file."""
    import json
    from pathlib import Path

    from tucker_dlra.app.plots import plot_run

    run = Path(runs[0.3]["summary"]["out"])

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    record = json.loads((run / "metrics.json").read_text(), parse_constant=no_nan)
    assert record["epochs"][0]["val_loss"] is None
    assert [r["test_acc"] for r in record["epochs"]] == [r["test_acc"]
                                                         for r in runs[0.3]["epochs"]]
    paths = plot_run(run, tmp_path)
    assert [p.name for p in paths] == ["curves.png", "ranks.png", "compression.png",
                                       "summary.png"]


@pytest.mark.parametrize("method", ["vanilla-tucker", "vanilla-cp", "vanilla-matrix"])
def test_vanilla_baselines_start_from_their_own_init_and_learn(method, tmp_path):
    """The fixed-rank baselines train from scratch: their kernels start at the variance of
    PyTorch's default init (not a few per cent of it, as a truncated HOSVD of a random
    kernel would give at the paper's ranks) and a short run leaves chance level."""
    from tucker_dlra.app.models import build_model
    from tucker_dlra.app.train import build_training_model

    torch.manual_seed(0)
    cfg = TrainConfig(method=method, rank_fraction=0.2, device="cpu")
    model = build_training_model(cfg, (1, 28, 28), 10)
    dense = build_model("lenet5", 1, 10, (28, 28))
    # E[w^2] of the dense default init (Kaiming-uniform, a = sqrt 5) is 1 / (3 fan_in); the
    # layer's init must match it in expectation: the mean of ||W||^2 / (numel / (3 fan_in))
    # over 300 draws within 4 standard errors of 1 (a factor 2 or a wrong fan-in fails)
    conv = model.conv2
    fan_in = dense.conv2.weight[0].numel()
    torch.testing.assert_close(dense.conv2.weight.detach().pow(2).mean() * 3 * fan_in,
                               torch.tensor(1.0), rtol=0.05, atol=0)
    draws = []
    for _ in range(300):
        conv.reset_parameters()
        w = conv.weight_full() if hasattr(conv, "weight_full") else conv.to_dense().weight
        draws.append(float(w.detach().pow(2).mean()) * 3 * fan_in)
    draws = torch.tensor(draws, dtype=torch.float64)
    se = float(draws.std()) / len(draws) ** 0.5
    assert se < 0.05  # resolution of the check
    assert abs(float(draws.mean()) - 1.0) <= 4 * se, (float(draws.mean()), se)
    torch.manual_seed(0)
    model = build_training_model(cfg, (1, 28, 28), 10)
    torch.set_num_threads(1)
    cfg = TrainConfig(method=method, rank_fraction=0.2, epochs=3, batch_size=64,
                      train_limit=1600, val_fraction=0.0, test_limit=400, schedule="none",
                      seed=1, quiet=True, plots=False, device="cpu", out=str(tmp_path / "run"))
    rec = train(cfg)
    assert rec["epochs"][-1]["test_acc"] > 0.7  # chance is 0.1


def test_stop_lr_ends_the_run_once_the_schedule_passes_it(tmp_path):
    """``stop_lr``: no epoch is trained at a learning rate below it, the run ends at the first
    epoch whose schedule step goes below it (cosine over 6 epochs: 0.05, 0.047, 0.0375, then
    0.025 < 0.03), the stop is recorded, and resuming the stopped run trains nothing more."""
    torch.set_num_threads(1)
    out = tmp_path / "stop"
    cfg = TrainConfig(method="tdlrt", epochs=6, lr=0.05, schedule="cosine", stop_lr=0.03,
                      batch_size=64, train_limit=256, val_fraction=0.0, test_limit=64, seed=2,
                      quiet=True, plots=False, device="cpu", out=str(out))
    rec = train(cfg)
    lrs = [r["lr"] for r in rec["epochs"]]
    assert len(lrs) == 3 and min(lrs) >= 0.03
    assert "below stop-lr 0.03" in rec["summary"]["stopped"]
    import json

    assert json.loads((out / "metrics.json").read_text())["summary"]["stopped"]
    again = train(TrainConfig(out=str(out), quiet=True, plots=False, device="cpu",
                              epochs=None), resume=True)  # type: ignore[arg-type]
    assert len(again["epochs"]) == 3
    # without stop_lr the same run trains all its epochs
    full = train(TrainConfig(**{**cfg.__dict__, "stop_lr": None, "out": str(tmp_path / "all")}))
    assert [r["lr"] for r in full["epochs"]][:3] == lrs and len(full["epochs"]) == 6


def test_fixed_rank_epochs_hold_the_ranks_then_truncate(tmp_path):
    """``fixed_rank_epochs=1``: every step of the first epoch is the fixed-rank BUG (the ranks
    stay at the initial half rank), truncation with a coarse tau starts with the second epoch;
    a run interrupted after the first epoch resumes with adaptation on, step for step as the
    uninterrupted run; without the option the ranks drop within the first epoch."""
    torch.set_num_threads(1)
    common = dict(method="tdlrt", tau=0.3, rank_fraction=0.5, batch_size=64, train_limit=640,
                  val_fraction=0.0, test_limit=64, schedule="none", seed=3, quiet=True,
                  plots=False, device="cpu")
    rec = train(TrainConfig(epochs=2, fixed_rank_epochs=1, out=str(tmp_path / "fixed"),
                            **common))
    start = rec["ranks"][0]["ranks"]
    assert rec["epochs"][0]["step"] == 10
    assert all(r["ranks"] == start for r in rec["ranks"] if r["step"] <= 10)
    assert rec["epochs"][0]["ranks"] == start
    assert rec["epochs"][1]["ranks"] != start  # tau = 0.3 truncates once allowed
    plain = train(TrainConfig(epochs=1, out=str(tmp_path / "plain"), **common))
    assert plain["epochs"][0]["ranks"] != start
    # interrupted after the fixed-rank epoch, resumed: adaptation switches on at epoch 2
    part = train(TrainConfig(epochs=2, fixed_rank_epochs=1, max_steps=10,
                             out=str(tmp_path / "part"), **common))
    assert len(part["epochs"]) == 1
    again = train(TrainConfig(out=str(tmp_path / "part"), quiet=True, plots=False,
                              device="cpu", epochs=2, max_steps=20), resume=True)
    assert again["epochs"][1]["ranks"] == rec["epochs"][1]["ranks"]
    assert again["epochs"][1]["test_acc"] == pytest.approx(rec["epochs"][1]["test_acc"])
