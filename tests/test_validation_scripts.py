"""validation/paper_tables.py and validation/robustness_spectral.py on tiny budgets, and the
``tuckerize(init=...)`` pass-through they use (paper Section 4.3 spectral initialisation)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from tucker_dlra.app.models import build_model
from tucker_dlra.nn import tuckerize

from tucker_dlra import unfold

VALIDATION = Path(__file__).resolve().parent.parent / "validation"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_v_{name}", VALIDATION / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------ tuckerize(init=...)
def test_tuckerize_spectral_init():
    torch.manual_seed(0)
    dense = build_model("lenet5", 1, 10, (28, 28))
    torch.manual_seed(1)
    t = tuckerize(dense, rank=1.0, include=[nn.Conv2d], kind="tdlrt", init="spectral")
    hosvd = tuckerize(dense, rank=1.0, include=[nn.Conv2d], kind="tdlrt")
    conv = t.conv2
    assert conv.ranks == (50, 20, 5, 5) and conv.init == "spectral"
    # the dense weights are discarded: not the (exact, full-rank) HOSVD of the dense kernel
    w = conv.weight_full().detach()
    assert not torch.allclose(w, dense.conv2.weight, atol=1e-3)
    assert torch.allclose(hosvd.conv2.weight_full().detach(), dense.conv2.weight, atol=1e-5)
    # orthonormal factors, kernel norm of the default init: prod(n) / (3 fan_in)
    for u in conv.factors:
        eye = torch.eye(u.shape[1])
        assert torch.allclose(u.T @ u, eye, atol=1e-5)
    target = math.sqrt(50 * 20 * 25 / (3 * 20 * 25))
    assert float(torch.linalg.vector_norm(w)) == pytest.approx(target, rel=1e-5)
    # spectral: every unfolding's singular values spread over >= two powers of ten
    for i in range(4):
        s = torch.linalg.svdvals(unfold(conv.core.detach(), i))
        assert float(s[0] / s[-1]) > 100, (i, s)
    # the dense layers are untouched
    assert torch.equal(t.fc1.weight, dense.fc1.weight)


def test_tuckerize_init_errors():
    m = nn.Sequential(nn.Conv2d(3, 8, 3))
    with pytest.raises(ValueError, match="init must be None, 'kaiming' or 'spectral'"):
        tuckerize(m, init="xavier")
    with pytest.raises(ValueError, match="init applies to kind 'tdlrt' only"):
        tuckerize(m, rank=2, kind="vanilla-tucker", init="spectral")


# ------------------------------------------------------------------ paper_tables.py
def test_paper_tables_configurations_and_table(tmp_path):
    pt = _load("paper_tables")
    specs = pt.configurations(["mnist", "fashion-mnist"], ["baseline", "tdlrt", "vanilla-cp",
                                                           "vanilla-tucker", "vanilla-matrix"], [0])
    assert [s.row for s in specs if s.dataset == "mnist"] == [
        "baseline", "tdlrt-0.15", "tdlrt-0.2", "tdlrt-0.3", "vanilla-cp", "vanilla-tucker",
        "vanilla-matrix"]
    assert [s.row for s in specs if s.dataset == "fashion-mnist"][1] == "tdlrt-0.1"
    cp = next(s for s in specs if s.method == "vanilla-cp")
    assert cp.args == ("--rank", "2")
    # Fashion-MNIST's CP rank matches its own paper compression (Table 3: 96.81 %)
    assert next(s for s in specs if s.method == "vanilla-cp"
                and s.dataset == "fashion-mnist").args == ("--rank", "7")
    # the initial-rank option rows: same tau values, --rank-fraction 0.5, own row names
    half = pt.configurations(["mnist"], ["tdlrt-init0.5"], [0])
    assert [s.row for s in half] == ["tdlrt-0.15-init0.5", "tdlrt-0.2-init0.5",
                                     "tdlrt-0.3-init0.5"]
    assert half[1].args == ("--tau", "0.2", "--rank-fraction", "0.5")
    assert pt._label("tdlrt-0.2-init0.5") == "TDLRT τ = 0.2, initial rank n/2"
    # seed-major: every cell of seed 0 (both datasets) before seed 1
    two = pt.configurations(["mnist", "fashion-mnist"], ["baseline"], [0, 1])
    assert [(s.seed, s.dataset) for s in two] == [(0, "mnist"), (0, "fashion-mnist"),
                                                   (1, "mnist"), (1, "fashion-mnist")]
    with pytest.raises(ValueError, match="method must be one of"):
        pt.configurations(["mnist"], ["adam"], [0])
    fake = [dict(dataset="mnist", row="tdlrt-0.2", seed=s, epochs=3, steps=1266,
                 test_acc=acc, eval_compression=90.0, train_compression=70.0,
                 ranks={"conv1": [7, 1, 5, 5], "conv2": [8, 6, 5, 4]}, args=[])
            for s, acc in ((0, 98.0), (1, 99.0))]
    text = pt.write_table(tmp_path, fake).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| TDLRT τ = 0.2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"98.50 ± {math.sqrt(0.5):.2f} (n = 2)"  # mean ± sample std
    assert cells[4] == "(7,1,5,5) / (8,6,5,4)"
    assert cells[5:8] == ["97.80 ± 0.08", "96.13", "84.64"]  # the paper's Table 4
    assert cells[8].startswith("98.65 / 92.6, 5 ep.")  # the 5-epoch reference run
    assert "| Baseline | not run |" in text and "70 epochs" in text


def test_paper_tables_runs_and_skips(tmp_path, monkeypatch, capsys):
    pt = _load("paper_tables")
    argv = ["--data-dir", str(tmp_path), "--datasets", "mnist-subset", "--methods", "baseline",
            "--epochs", "1", "--out", str(tmp_path / "o"), "--",
            "--max-steps", "2", "--train-limit", "300", "--test-limit", "100"]
    assert pt.main(argv) == 0
    res = json.loads((tmp_path / "o/results/mnist-subset-baseline-seed0.json").read_text())
    assert res["steps"] == 2 and res["epochs"] == 1 and 0 <= res["test_acc"] <= 100
    assert res["command"].startswith("tucker-dlra train --model lenet5 --dataset mnist-subset")
    assert "--max-steps 2" in res["command"] and res["hardware"]["logical_cores"] >= 1
    assert len(res["per_epoch"]) == 1 and res["per_epoch"][0]["step"] == 2
    assert "| Baseline |" in (tmp_path / "o/table4.md").read_text()

    def boom(*a, **k):
        raise AssertionError("a finished configuration was run again")

    monkeypatch.setattr(subprocess, "run", boom)
    assert pt.main(argv) == 0
    assert "done (result exists), skipped" in capsys.readouterr().out


# ------------------------------------------------------------------ robustness_spectral.py
@pytest.mark.parametrize("decades", [3.0, 6.0])
def test_spectral_models_share_the_start(decades):
    rs = _load("robustness_spectral")
    models = rs.build_models(0, (1, 28, 28), 10, 1.0, None, decades)
    for name in ("conv1", "conv2"):
        a, b, c = (getattr(models[m], name) for m in ("tdlrt", "vanilla-tucker", "vanilla-cp"))
        wa = a.weight_full().detach()
        assert torch.allclose(wa, b.weight_full().detach(), atol=1e-6)
        assert float(torch.linalg.vector_norm(c.weight_full().detach())) == pytest.approx(
            float(torch.linalg.vector_norm(wa)), rel=1e-5)
        # CP term weights decay over three powers of ten (columns of A_1.. have unit norm)
        lam = torch.linalg.vector_norm(c.factors[0].detach(), dim=0)
        assert float(lam[0] / lam[-1]) == pytest.approx(10**decades, rel=1e-4)
        # the Tucker core's mode-0 spectrum spans at least about `decades` powers of ten
        sv = torch.linalg.svdvals(unfold(a.core.detach(), 0))
        assert float(sv[0] / sv[-1]) > 10 ** (decades - 1)
        assert torch.equal(a.bias, c.bias)
    assert torch.equal(models["tdlrt"].fc1.weight, models["vanilla-cp"].fc1.weight)


@pytest.mark.parametrize("decades", [3.0, None])
def test_balanced_split_keeps_the_kernels(decades):
    """``vanilla_split="balanced"``: same kernels and same TDLRT start as the core split, the
    spectrum moved into the vanilla factors (square roots for Tucker, fourth roots for CP)."""
    rs = _load("robustness_spectral")
    core = rs.build_models(0, (1, 28, 28), 10, 1.0, None, decades)
    bal = rs.build_models(0, (1, 28, 28), 10, 1.0, None, decades, "balanced")
    for name in ("conv1", "conv2"):
        t = getattr(core["tdlrt"], name)
        assert torch.equal(t.core, getattr(bal["tdlrt"], name).core)
        vt = getattr(bal["vanilla-tucker"], name)
        w = t.weight_full().detach()
        assert torch.allclose(vt.weight_full().detach(), w, atol=1e-6 * float(w.abs().max()))
        u0 = vt.factors[0].detach().double()
        span = 3.0 if decades is None else decades  # conv1 mode 0: 20 output channels
        n = torch.linalg.vector_norm(u0, dim=0)
        if name == "conv1" and decades is not None:
            assert float(n[0] / n[-1]) == pytest.approx(10 ** (span / 2), rel=1e-4)
        if decades is None:
            assert float(n[0] / n[1]) == pytest.approx(10 ** 0.5, rel=1e-4)
        cp = getattr(bal["vanilla-cp"], name)
        lam = [torch.linalg.vector_norm(a.detach().double(), dim=0) for a in cp.factors]
        for a in lam:
            assert float(a[0] / a[1]) == pytest.approx(
                float(lam[0][0] / lam[0][1]), rel=1e-4)  # the same root in every factor
        assert float(torch.linalg.vector_norm(cp.weight_full().detach())) == pytest.approx(
            float(torch.linalg.vector_norm(w)), rel=1e-5)
    with pytest.raises(ValueError, match="vanilla_split"):
        rs.build_models(0, (1, 28, 28), 10, 1.0, None, 3.0, "factors")


def test_robustness_spectral_tiny_run_resumes(tmp_path, monkeypatch):
    rs = _load("robustness_spectral")
    argv = ["--data-dir", str(tmp_path), "--dataset", "mnist-subset", "--seeds", "0",
            "--steps", "3", "--eval-every", "2", "--test-limit", "64", "--taus", "0", "0.2",
            "--out", str(tmp_path)]
    assert rs.main(argv) == 0
    data = json.loads((tmp_path / "robustness_spectral.json").read_text())
    assert set(data["runs"]) == {"tdlrt-0/seed0", "tdlrt-0.2/seed0", "vanilla-tucker/seed0",
                                 "vanilla-cp/seed0"}
    for rec in data["runs"].values():
        assert len(rec["loss"]) == 3 and rec["eval_step"] == [0, 2, 3]
        assert all(math.isfinite(x) for x in rec["loss"])
    # tau = 0 keeps the full rank; tau = 0.2 truncates the spectral start
    assert data["runs"]["tdlrt-0/seed0"]["ranks"][-1]["conv2"] == [50, 20, 5, 5]
    assert math.prod(data["runs"]["tdlrt-0.2/seed0"]["ranks"][-1]["conv2"]) < 50 * 20 * 25
    assert (tmp_path / "robustness_spectral.png").stat().st_size > 0

    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(rs, "run_one", boom)
    assert rs.main(argv) == 0
    # a new tolerance is added to the stored file; only its TDLRT run is trained
    ran = []

    def fake(method, model, *a, **k):
        ran.append((method, a[-2]))
        return data["runs"]["tdlrt-0/seed0"]

    monkeypatch.setattr(rs, "run_one", fake)
    argv_new_tau = ["--data-dir", str(tmp_path), "--dataset", "mnist-subset", "--seeds", "0",
                    "--steps", "3", "--eval-every", "2", "--test-limit", "64", "--taus", "0.1",
                    "--out", str(tmp_path)]
    assert rs.main(argv_new_tau) == 0
    assert ran == [("tdlrt", 0.1)]
    merged = json.loads((tmp_path / "robustness_spectral.json").read_text())
    assert merged["meta"]["taus"] == [0.0, 0.1, 0.2] and len(merged["runs"]) == 5
    assert "drift" in merged["runs"]["vanilla-tucker/seed0"]


def test_robustness_spectral_merge_meta():
    rs = _load("robustness_spectral")
    old = {"steps": 200, "lr": 0.05, "taus": [0.0, 0.2]}
    merged = rs.merge_meta(old, {"steps": 200, "lr": 0.05, "taus": [0.1, 0.2]})
    assert merged == {"steps": 200, "lr": 0.05, "taus": [0.0, 0.1, 0.2]}
    assert rs.merge_meta(old, {"steps": 600, "lr": 0.05, "taus": [0.0, 0.2]}) is None
    assert rs.merge_meta(old, {"steps": 200, "lr": 0.05, "taus": [0.0], "tag": "x"}) is None


def test_robustness_spectral_drift_follows_the_singular_values():
    """SGD on a vanilla Tucker conv from the spectral start moves a factor column in
    proportion to its core singular value (the paper's Section 4.3 argument); ``drift``
    reports it column by column, in the order of the singular values."""
    rs = _load("robustness_spectral")
    torch.manual_seed(0)
    models = rs.build_models(0, (1, 28, 28), 10, 1.0, None, 3.0)
    model = models["vanilla-tucker"]
    start = rs._snapshot(model)
    x = torch.randn(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
    d = rs.drift(start, rs._snapshot(model))
    cols = d["conv2"]["factor_cols"][0]  # output channels: sigma from 1 down to 1e-3
    assert len(cols) == 50 and d["conv2"]["core"] > 0 and d["conv2"]["kernel"] > 0
    assert cols[0] > 30 * cols[-1] > 0
    # a layer whose shapes changed (TDLRT after truncation) reports the kernel only
    end = rs._snapshot(model)
    end["conv1"]["core"] = end["conv1"]["core"][:3]
    assert set(rs.drift(start, end)["conv1"]) == {"kernel"}


def test_balanced_split_shares_the_tdlrt_runs(tmp_path, monkeypatch):
    """``--vanilla-split balanced`` trains only the vanilla methods where the core-split file
    already holds TDLRT's runs for the same settings (TDLRT's start is the same)."""
    rs = _load("robustness_spectral")
    ran = []

    def fake(method, model, *a, **k):
        ran.append(method)
        return {"loss": [1.0, 0.5], "eval_step": [0, 2], "test_acc": [0.1, 0.2],
                "ranks": [{"conv1": [20, 1, 5, 5], "conv2": [50, 20, 5, 5]}] * 2,
                "diverged_at": None, "ms_per_step": 1.0, "time_s": 0.0, "mark": method}

    monkeypatch.setattr(rs, "run_one", fake)
    argv = ["--data-dir", str(tmp_path), "--dataset", "mnist-subset", "--seeds", "0",
            "--steps", "2", "--test-limit", "64", "--taus", "0", "--out", str(tmp_path)]
    assert rs.main(argv) == 0 and ran == ["tdlrt", "vanilla-tucker", "vanilla-cp"]
    ran.clear()
    assert rs.main([*argv, "--vanilla-split", "balanced"]) == 0
    assert ran == ["vanilla-tucker", "vanilla-cp"]
    bal = json.loads((tmp_path / "robustness_spectral_bal.json").read_text())
    assert bal["meta"]["vanilla_split"] == "balanced"
    assert set(bal["runs"]) == {"tdlrt-0/seed0", "vanilla-tucker/seed0", "vanilla-cp/seed0"}
    # a core file with other settings shares nothing
    ran.clear()
    assert rs.main([*argv[:7], "3", *argv[8:], "--vanilla-split", "balanced", "--tag",
                    "s3"]) == 0
    assert ran == ["tdlrt", "vanilla-tucker", "vanilla-cp"]


def test_robustness_spectral_refuses_to_mix_settings(tmp_path, capsys):
    rs = _load("robustness_spectral")
    path = tmp_path / "robustness_spectral.json"
    stored = {"meta": {"dataset": "mnist-subset", "steps": 999}, "runs": {"x/seed0": {}}}
    path.write_text(json.dumps(stored))
    argv = ["--data-dir", str(tmp_path), "--dataset", "mnist-subset", "--seeds", "0",
            "--steps", "3", "--test-limit", "64", "--taus", "0", "--out", str(tmp_path)]
    assert rs.main(argv) == 2
    assert "--tag" in capsys.readouterr().err
    assert json.loads(path.read_text()) == stored  # nothing lost
    with pytest.raises(SystemExit) as e:
        rs.main([*argv, "--tag", "a/b"])
    assert e.value.code == 2


def test_paper_tables_fresh_vanilla_init(tmp_path, monkeypatch):
    """Vanilla runs start from the layers' own init (the kernel keeps the default variance),
    as the application does; the driver's "hosvd" rows start from the truncated decomposition
    of the random dense kernel, which keeps a few per cent of its norm."""
    import importlib

    from tucker_dlra.app.cli import main as cli_main

    pt = _load("paper_tables")
    T = importlib.import_module("tucker_dlra.app.train")
    monkeypatch.setattr(T, "build_training_model", T.build_training_model)  # restored after
    norms = {}
    for init in ("fresh", "hosvd"):  # fresh first: the hosvd entry patches the builder
        argv = ["train", "--dataset", "mnist-subset", "--method", "vanilla-cp", "--rank", "2",
                "--epochs", "1", "--max-steps", "1", "--train-limit", "200", "--test-limit",
                "50", "--out", str(tmp_path / init), "--quiet", "--no-plots", "--threads", "1"]
        rc = pt.train_with_hosvd_vanilla_init(argv) if init == "hosvd" else cli_main(argv)
        assert rc == 0
        model = T.model_from_checkpoint(T.load_checkpoint(tmp_path / init / "checkpoint.pt"))
        norms[init] = float(torch.linalg.vector_norm(model.conv2.weight_full().detach()))
    dense_norm = math.sqrt(50 * 20 * 25 / (3 * 20 * 25))  # PyTorch's default conv init
    assert norms["hosvd"] < 0.1 * dense_norm
    assert 0.3 * dense_norm < norms["fresh"] < 3 * dense_norm
    spec = pt.configurations(["mnist"], ["vanilla-cp"], [0], vanilla_init=("fresh", "hosvd"))
    assert [s.row for s in spec] == ["vanilla-cp", "vanilla-cp-hosvd"]
    cmds = [pt.command(s, tmp_path, "d", 1, 1, [], False) for s in spec]
    assert cmds[0][1:3] == ["-m", "tucker_dlra"] and pt.HOSVD_FLAG in cmds[1]
