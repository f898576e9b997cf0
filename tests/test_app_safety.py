"""The command line never loses or misreads data: refused overwrites, checkpoint problems as
one-line errors (exit status 2), safe loading, ONNX export, temporary files, file modes."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

torch = pytest.importorskip("torch")

from tucker_dlra.app import cli  # noqa: E402
from tucker_dlra.app.train import CheckpointError, load_checkpoint  # noqa: E402

TINY = ["--train-limit", "300", "--test-limit", "100", "--batch-size", "64", "--threads", "1",
        "--no-progress", "--no-plots", "--quiet"]


def run_cli(args, capsys):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny TDLRT run (momentum 0.9: the checkpoint holds momentum buffers)."""
    out = tmp_path_factory.mktemp("safety") / "run"
    old = os.umask(0o022)
    try:
        code = cli.main([str(a) for a in ["train", "--max-steps", "3", "--epochs", "1", "--out",
                                          out, "--momentum", "0.9", *TINY]])
    finally:
        os.umask(old)
    assert code == 0
    return out


def one_line_error(code, out, err, *needles):
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_train_refuses_a_folder_holding_a_checkpoint(run, tmp_path, capsys):
    folder = tmp_path / "again"
    shutil.copytree(run, folder)
    before = (folder / "checkpoint.pt").read_bytes()
    code, out, err = run_cli(["train", "--max-steps", "2", "--epochs", "1", "--out", folder,
                              *TINY], capsys)
    one_line_error(code, out, err, "already exists", "--resume", "--overwrite")
    assert (folder / "checkpoint.pt").read_bytes() == before
    code, out, err = run_cli(["train", "--max-steps", "2", "--epochs", "1", "--out", folder,
                              "--overwrite", *TINY], capsys)
    assert code == 0, err
    assert load_checkpoint(folder / "checkpoint.pt")["step"] == 2


def test_resume_rejects_contradicting_flags(run, tmp_path, capsys):
    folder = tmp_path / "r"
    shutil.copytree(run, folder)
    code, out, err = run_cli(["train", "--resume", "--out", folder, "--lr", "0.3", "--tau",
                              "0.2", "--method", "baseline"], capsys)
    # --tau 0.2 agrees with the checkpoint: only the two contradicting flags are named
    one_line_error(code, out, err, "--lr 0.3 (checkpoint: 0.05)",
                   "--method baseline (checkpoint: tdlrt)")
    assert "--tau" not in err
    code, out, err = run_cli(["train", "--resume", "--overwrite", "--out", folder], capsys)
    one_line_error(code, out, err, "not both")


def test_resume_removes_the_temporary_file_of_a_killed_write(run, tmp_path, capsys):
    folder = tmp_path / "k"
    shutil.copytree(run, folder)
    stale = folder / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"torn")
    keep = folder / ".my-notes.tmp"
    keep.write_text("not ours")
    (folder / "plots").mkdir(exist_ok=True)
    stale_png = folder / "plots" / ".ranks.png.tmp.png"
    stale_png.write_bytes(b"torn")
    code, out, err = run_cli(["train", "--resume", "--out", folder, "--epochs", "1",
                              "--quiet"], capsys)
    assert code == 0, err
    assert not stale.exists() and not stale_png.exists() and keep.exists()


def test_output_files_respect_the_umask(run):
    for name in ("checkpoint.pt", "metrics.json", "metrics.csv", "report.txt"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name


def test_empty_training_split_is_an_error(tmp_path, capsys):
    code, out, err = run_cli(["train", "--train-limit", "1", "--out", tmp_path / "e",
                              "--epochs", "1", "--no-plots", "--quiet"], capsys)
    one_line_error(code, out, err, "training split is empty")


def test_checkpoints_load_with_weights_only(run):
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["format"] == "train" and state["version"] == 2


@pytest.mark.parametrize("damage", ["missing-entry", "weights-vs-config", "not-a-checkpoint",
                                    "pickled-object", "truncated"])
@pytest.mark.parametrize("command", ["evaluate", "report", "export"])
def test_every_checkpoint_problem_is_one_line(run, tmp_path, capsys, damage, command):
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    bad = tmp_path / "bad.pt"
    if damage == "missing-entry":
        del state["model"]
        torch.save(state, bad)
        needle = "missing 'model'"
    elif damage == "weights-vs-config":
        state["config"]["model"] = "alexnet"
        torch.save(state, bad)
        needle = "weights do not match its configuration"
    elif damage == "not-a-checkpoint":
        torch.save([1, 2, 3], bad)
        needle = "not a tucker-dlra checkpoint"
    elif damage == "pickled-object":
        torch.save({"config": {"model": "lenet5"}, "model": {}, "x": CheckpointError("no")}, bad)
        needle = "older tucker-dlra or not a tucker-dlra file; a run can start afresh"
    else:
        bad.write_bytes((run / "checkpoint.pt").read_bytes()[:1000])
        needle = "not a readable checkpoint"
    args = [command, bad] + ([tmp_path / "out.pt"] if command == "export" else [])
    code, out, err = run_cli(args, capsys)
    one_line_error(code, out, err, str(bad), needle)


def test_export_never_overwrites_a_checkpoint(run, tmp_path, capsys):
    ckpt = run / "checkpoint.pt"
    before = ckpt.read_bytes()
    code, out, err = run_cli(["export", ckpt, ckpt], capsys)
    one_line_error(code, out, err, "training checkpoint")
    other = tmp_path / "copy.pt"
    shutil.copy(ckpt, other)
    code, out, err = run_cli(["export", ckpt, other], capsys)
    one_line_error(code, out, err, "training checkpoint")
    code, out, err = run_cli(["export", ckpt, tmp_path / "x" / "checkpoint.pt"], capsys)
    one_line_error(code, out, err, "training checkpoint")
    assert ckpt.read_bytes() == before and other.read_bytes() == before
    # an exported model is not a training checkpoint: it cannot be exported again
    dense = tmp_path / "dense.pt"
    assert run_cli(["export", ckpt, dense], capsys)[0] == 0
    code, out, err = run_cli(["export", dense, tmp_path / "again.pt"], capsys)
    one_line_error(code, out, err, "already an exported model")


def test_exported_state_dict_without_metadata_is_named(run, tmp_path, capsys):
    dense = tmp_path / "dense.pt"
    assert run_cli(["export", run / "checkpoint.pt", dense], capsys)[0] == 0
    (tmp_path / "dense.pt.json").unlink()
    code, out, err = run_cli(["evaluate", dense], capsys)
    one_line_error(code, out, err, "without its metadata file")


def test_report_counts_the_optimizer_state(run, capsys):
    code, out, err = run_cli(["report", run / "checkpoint.pt", "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)
    state = torch.load(run / "checkpoint.pt", weights_only=True)["optimizer"]["state"]
    want = sum(v.numel() * v.element_size() for s in state.values() for v in s.values()
               if torch.is_tensor(v) and v.dim() > 0)
    assert want > 0
    assert rep["totals"]["bytes_optimizer"] == want


def test_onnx_export_of_the_factorized_model_matches_torch(run, tmp_path, capsys):
    """The ONNX graph keeps the Tucker factors (fewer parameters than the dense model) and
    onnxruntime computes what torch computes, to 1e-5."""
    import onnx
    import onnxruntime as ort
    from tucker_dlra.app.cli import _load_model

    path = tmp_path / "m.onnx"
    code, out, err = run_cli(["export", run / "checkpoint.pt", path, "--format", "onnx"], capsys)
    assert code == 0, err
    import math

    from tucker_dlra.nn import to_dense

    graph = onnx.load(str(path)).graph
    stored = sum(math.prod(i.dims) for i in graph.initializer)
    _, model = _load_model(run / "checkpoint.pt")
    dense_params = sum(p.numel() for p in to_dense(model).parameters())
    assert stored < dense_params  # the convolutions stay factorized
    x = torch.randn(5, 1, 28, 28)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert abs(got - want).max() <= 1e-5 * max(1.0, abs(want).max())
    code, out, err = run_cli(["evaluate", path, "--json"], capsys)
    assert code == 0, err
    code2, out2, _ = run_cli(["evaluate", run / "checkpoint.pt", "--json"], capsys)
    assert json.loads(out)["accuracy"] == json.loads(out2)["accuracy"]


def test_every_option_has_help_text_and_shows_its_default(capsys):
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sp in sub.choices.items():
        fmt = sp._get_formatter()
        for a in sp._actions:
            if not a.option_strings or a.dest == "help":
                continue
            assert a.help, (name, a.option_strings)
            if not isinstance(a, argparse._StoreTrueAction):
                assert "[" in fmt._get_help_string(a), (name, a.option_strings)
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "learning rate [0.05]" in out and "[no limit]" in out
