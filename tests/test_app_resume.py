"""``tucker-dlra train --resume``: a run killed mid-way and resumed ends with exactly the metrics
and weights of an uninterrupted run (CPU), and checkpoints are never torn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ARGS = ["train", "--method", "tdlrt", "--tau", "0.15", "--epochs", "3", "--train-limit", "900",
        "--test-limit", "200", "--batch-size", "100", "--threads", "1", "--seed", "3",
        "--momentum", "0.3", "--schedule", "cosine", "--no-plots", "--no-progress"]


def _cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "tucker_dlra", *ARGS, *extra]


def _rows(run: Path) -> list[dict]:
    rows = json.loads((run / "metrics.json").read_text())["epochs"]
    for r in rows:
        r.pop("time")
    return rows


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    ref = subprocess.Popen(_cmd("--out", str(full), "--quiet"), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_cmd("--out", str(killed), "--quiet"), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (killed / "checkpoint.pt").exists():  # written atomically at the end of epoch 1
        assert victim.poll() is None, victim.communicate()
        assert time.time() < deadline
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    state = torch.load(killed / "checkpoint.pt", weights_only=False)
    assert state["epoch"] < 3  # it really was interrupted before the end
    assert not list(killed.glob(".*.tmp"))  # no torn temporary files count as checkpoints

    resumed = subprocess.run([sys.executable, "-m", "tucker_dlra", "train", "--resume", "--out",
                              str(killed), "--threads", "1", "--no-progress"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {killed / 'checkpoint.pt'} at epoch {state['epoch']}" in resumed.stdout
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err

    a, b = _rows(full), _rows(killed)
    assert len(a) == len(b) == 3
    assert a == b  # losses, accuracies, lr, compression and ranks identical, epoch by epoch
    sa = torch.load(full / "checkpoint.pt", weights_only=False)
    sb = torch.load(killed / "checkpoint.pt", weights_only=False)
    assert sa["model"].keys() == sb["model"].keys()
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    ranks_a = json.loads((full / "metrics.json").read_text())["ranks"]
    ranks_b = json.loads((killed / "metrics.json").read_text())["ranks"]
    assert ranks_a == ranks_b
    # ranks really changed during the run, so the resume crossed rank changes
    assert ranks_a[0]["ranks"] != ranks_a[-1]["ranks"]
