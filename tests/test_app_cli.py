"""The ``tucker-dlra`` command line: tiny runs of every method, evaluate/report/export/plot,
verify, and bad arguments (one-line message, exit status 2, no traceback)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tucker_dlra.app import cli  # noqa: E402
from tucker_dlra.app.train import METHODS  # noqa: E402

TINY = ["--train-limit", "400", "--test-limit", "200", "--batch-size", "64", "--threads", "1",
        "--no-progress"]


def run_cli(args, capsys):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("method", METHODS)
def test_train_every_method_tiny(method, tmp_path, capsys):
    out = tmp_path / method
    code, stdout, err = run_cli(["train", "--method", method, "--max-steps", "3", "--out", out,
                                 "--epochs", "2", "--no-plots", "--tau", "0.3", *TINY], capsys)
    assert code == 0, err
    record = json.loads((out / "metrics.json").read_text())
    rows = record["epochs"]
    assert len(rows) == 1 and rows[0]["step"] == 3  # --max-steps stops inside the first epoch
    assert math.isfinite(rows[0]["train_loss"]) and 0 <= rows[0]["test_acc"] <= 1
    assert (out / "checkpoint.pt").is_file() and (out / "metrics.csv").is_file()
    assert "test accuracy" in stdout and "time" in stdout
    s = record["summary"]
    if method == "baseline":
        assert s["eval_compression"] == 0.0 and s["ranks"] == {}
    else:
        assert "conv compression" in stdout
        assert s["eval_compression"] > 0  # low-rank convolutions hold fewer parameters
        assert (out / "report.txt").read_text().count("conv") >= 2
    if method.startswith("tdlrt"):
        # started at full rank, truncated with tau = 0.3 after every step: ranks fell
        assert set(s["ranks"]) == {"conv1", "conv2"}
        assert sum(s["ranks"]["conv2"]) < 50 + 20 + 5 + 5


def test_evaluate_report_export_plot(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--max-steps", "6", "--out", run, "--epochs", "1",
                            "--tau", "0.3", "--no-plots", *TINY], capsys)
    assert code == 0, err
    assert not (run / "plots").exists()
    ckpt = run / "checkpoint.pt"
    code, out, _ = run_cli(["evaluate", ckpt, "--json"], capsys)
    assert code == 0
    ev = json.loads(out)
    assert ev["images"] == 2000  # the full embedded test set
    code, out, _ = run_cli(["report", ckpt], capsys)
    assert code == 0 and "conv1" in out and "conv2" in out and "eval compression" in out
    # the dense export computes the same function: same accuracy, same loss
    dense = tmp_path / "dense.pt"
    code, out, _ = run_cli(["export", ckpt, dense], capsys)
    assert code == 0 and dense.is_file()
    code, out, _ = run_cli(["evaluate", dense, "--json"], capsys)
    ev_dense = json.loads(out)
    assert ev_dense["accuracy"] == ev["accuracy"]
    assert abs(ev_dense["loss"] - ev["loss"]) <= 1e-4 * max(1.0, ev["loss"])
    # a plain state dict: the documented one-liner loads it into the dense model
    from tucker_dlra.app import build_model

    model = build_model("lenet5", 1, 10, (28, 28))
    model.load_state_dict(torch.load(dense, weights_only=True))
    assert json.loads((tmp_path / "dense.pt.json").read_text())["shape"] == [1, 28, 28]
    # torch.export program of the dense model (replaces the deprecated TorchScript export)
    pt2 = tmp_path / "dense.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        code, _, err = run_cli(["export", ckpt, pt2, "--format", "torch-export"], capsys)
    assert code == 0, err
    prog = torch.export.load(pt2).module()
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(prog(x), model.eval()(x), rtol=1e-5, atol=1e-5)
    code, out, _ = run_cli(["evaluate", pt2, "--json"], capsys)
    assert code == 0 and json.loads(out)["accuracy"] == ev["accuracy"]
    # the figures train writes by default, redrawn from metrics.json
    code, out, _ = run_cli(["plot", run], capsys)
    assert code == 0
    for name in ("curves", "ranks", "compression", "summary"):
        png = run / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_verify_quick(tmp_path, capsys):
    code, out, err = run_cli(["verify", "--quick", "--out", tmp_path], capsys)
    assert code == 0, out + err
    record = json.loads((tmp_path / "verify.json").read_text())
    names = {c["name"]: c for c in record["checks"]}
    assert set(names) == {"exactness", "robustness", "descent", "error-order",
                          "rank-adaptivity"}
    assert all(c["passed"] for c in names.values())
    assert 0.75 <= names["error-order"]["slope"] <= 1.4
    assert (tmp_path / "verify.png").stat().st_size > 10_000
    assert out.count("PASS") == 5


BAD = [
    (["train", "--model", "resnet50"], "invalid choice: 'resnet50'"),
    (["train", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["train", "--tau", "-0.1"], "tau must be a finite number >= 0"),
    (["train", "--tau", "nan"], "tau must be a finite number >= 0"),
    (["train", "--lr", "0"], "lr must be > 0"),
    (["train", "--epochs", "0"], "epochs must be >= 1"),
    (["train", "--rank", "4", "--rank-fraction", "0.5"], "not allowed with argument"),
    (["train", "--fixed-rank-epochs", "3", "--epochs", "3"],
     "fixed-rank-epochs must be in [0, epochs - 1] = [0, 2]; got 3"),
    (["train", "--fixed-rank-epochs", "-1"], "fixed-rank-epochs must be in [0, epochs - 1]"),
    (["train", "--method", "vanilla-cp", "--fixed-rank-epochs", "1"],
     "fixed-rank-epochs applies to the rank-adaptive methods"),
    (["train", "--rank-fraction", "0.5", "0.5", "1"], "one per mode of a 2-d convolution"),
    (["train", "--rank-fraction", "0.5", "0", "1", "1"], "rank-fraction must be in (0, 1]"),
    (["train", "--method", "vanilla-cp", "--rank-fraction", "0.1", "0.1", "1", "1"],
     "method 'vanilla-cp' takes one value"),
    (["train", "--compress", "all", "--rank-fraction", "0.1", "0.1", "1", "1"],
     "convolutions only"),
    (["train", "--dataset", "mnist", "--data-dir", "{tmp}/missing"], "does not exist"),
    (["train", "--dataset", "cifar10"], "needs --data-dir"),
    (["train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}"], "--download"),
    (["train", "--out", "{tmp}/file/run"], "cannot write to output folder"),
    (["train", "--device", "cuda:7"] if not torch.cuda.is_available() else
     ["train", "--device", "tpu"], "device"),
    (["evaluate", "{tmp}/none.pt"], "does not exist"),
    (["report", "{tmp}/file"], "not a readable checkpoint"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["train", "--resume", "--out", "{tmp}/empty"], "no checkpoint"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_arguments_one_line_exit_2(args, message, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] == "train":
        args += ["--max-steps", "1", "--no-plots", "--quiet", "--out", str(tmp_path / "run")] \
            if "--out" not in args else ["--max-steps", "1"]
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0] and "Traceback" not in err
    assert lines[0].startswith("tucker-dlra")


@pytest.mark.parametrize("method", ["tdlrt", "baseline"])
def test_diverging_run_exits_1_with_one_line(method, tmp_path, capsys):
    code, _, err = run_cli(["train", "--method", method, "--lr", "1000", "--max-steps", "40",
                            "--out", tmp_path, "--no-plots", "--quiet", *TINY], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "lower --lr" in lines[0] and "Traceback" not in err


def test_entry_point_subprocess_bad_model():
    """The real entry point (python -m tucker_dlra): status 2, one line, no traceback."""
    bad = subprocess.run([sys.executable, "-m", "tucker_dlra", "train", "--model", "nope"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "invalid choice: 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--tau" in out and "--resume" in out and "[15]" in out


def test_core_import_does_not_import_nn_or_torch():
    code = ("import sys, tucker_dlra, tucker_dlra.__main__; "
            "print('torch' in sys.modules, 'tucker_dlra.nn' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parent)
    assert res.stdout.split() == ["False", "False"], res.stderr


def test_per_mode_rank_fraction_trains_and_resumes(tmp_path, capsys):
    """Tucker-2 ranks (channel modes compressed, spatial modes whole) survive a resume."""
    out = tmp_path / "run"
    args = ["train", "--method", "vanilla-tucker", "--rank-fraction", "0.1", "0.1", "1", "1",
            "--epochs", "1", "--max-steps", "2", "--no-plots", "--quiet", "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["config"]["rank_fraction"] == [0.1, 0.1, 1.0, 1.0]
    assert rec["summary"]["ranks"] == {"conv1": [2, 1, 5, 5], "conv2": [5, 2, 5, 5]}
    # resumed with the same command line (as a driver repeats it): no contradiction
    code, _, err = run_cli([*args[:-6], "--epochs", "2", "--max-steps", "3", "--no-plots",
                            "--quiet", "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["summary"]["ranks"] == {"conv1": [2, 1, 5, 5], "conv2": [5, 2, 5, 5]}
    assert rec["config"]["rank_fraction"] == [0.1, 0.1, 1.0, 1.0]
    code, _, err = run_cli(["train", "--method", "vanilla-tucker", "--rank-fraction", "0.2",
                            "0.1", "1", "1", "--epochs", "3", "--no-plots", "--quiet", "--out",
                            str(out), "--resume"], capsys)
    assert code == 2 and "--rank-fraction 0.2 0.1 1 1 (checkpoint: 0.1 0.1 1 1)" in err


def test_resume_with_the_same_single_rank_fraction(tmp_path, capsys):
    """A run started with --rank-fraction 0.5 resumes with the same flag repeated."""
    out = tmp_path / "run"
    base = ["train", "--rank-fraction", "0.5", "--max-steps", "1", "--no-plots", "--quiet",
            "--out", str(out)]
    code, _, err = run_cli(base, capsys)
    assert code == 0, err
    code, _, err = run_cli([*base[:-2], "--max-steps", "2", "--out", str(out), "--resume"],
                           capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--rank-fraction", "0.25", "--no-plots", "--quiet",
                            "--out", str(out), "--resume"], capsys)
    assert code == 2 and "--rank-fraction 0.25 (checkpoint: 0.5)" in err
