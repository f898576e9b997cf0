"""The op/host-sync counter of tucker_dlra.nn._profiling and validation/bench_step_ops.py."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from tucker_dlra.nn._profiling import OpCounter, count_step

VALIDATION = Path(__file__).resolve().parent.parent / "validation"


def test_counter_counts_ops_and_every_kind_of_sync():
    x = torch.arange(6.0)
    original = torch.Tensor.tolist
    with OpCounter() as c:
        s = x.sum()  # 1 op
        s.item()  # scalar read
        bool(s > 0)  # gt + scalar read
        float(s)  # scalar read
        x.tolist()  # no dispatch on CPU; counted as a sync
        torch.nonzero(x)  # data-dependent output shape
    assert torch.Tensor.tolist is original  # restored
    assert c.by_name["aten.sum"] == 1 and c.by_name["aten.gt"] == 1
    assert c.by_name["aten._local_scalar_dense"] == 3
    assert dict(c.sync_by_kind) == {"scalar": 3, "tolist": 1, "data_dependent": 1}
    assert c.syncs == 5
    assert c.ops == 1 + 1 + 3 + 1
    d = c.to_dict(top=2)
    assert d["ops"] == c.ops and d["syncs"] == 5 and len(d["top_ops"]) == 2
    x.tolist()  # outside the counter: not counted
    assert c.syncs == 5


def test_count_step_of_a_dense_sgd_step_has_no_sync():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    c = count_step(opt)
    assert c.syncs == 0 and c.ops > 0
    assert model.weight.grad is not None


def test_bench_step_ops_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("_v_bench_step_ops",
                                                  VALIDATION / "bench_step_ops.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    out = tmp_path / "ops.json"
    rows = mod.main(["--models", "lenet5", "--batch", "2", "--steps", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["results"] == rows
    by = {r["variant"]: r for r in rows}
    assert set(by) == {"dense-sgd", "tdlrt-bug", "tdlrt-adam", "tdlrt-par"}
    assert by["dense-sgd"]["syncs"] == 0
    for v in ("tdlrt-bug", "tdlrt-adam", "tdlrt-par"):
        assert by[v]["tucker_layers"] == 2
        assert by[v]["conv_eval_compression"] >= 90.0
        assert by[v]["ops"] > by["dense-sgd"]["ops"]
        assert by[v]["syncs"] <= 1


# ------------------------------------------------------------------ validation/gpu_check.py
def _gpu_check():
    spec = importlib.util.spec_from_file_location("_v_gpu_check", VALIDATION / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_smoke_mode_runs_on_cpu(tmp_path):
    mod = _gpu_check()
    res = mod.main(["--smoke", "--device", "cpu", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["env"]["smoke"] and data["env"]["device"] == "cpu"
    (step,) = data["step"]
    assert step["model"] == "lenet5" and step["conv_eval_compression"] >= 90.0
    for k in ("dense-sgd", "tdlrt-bug"):
        assert step[k]["median_step_s"] > 0
        assert step[k]["memory_report"]["params"] > 0
    assert step["dense-sgd"]["optimizer_step_syncs"] == 0
    assert step["step_ratio"] == pytest.approx(
        step["tdlrt-bug"]["median_step_s"] / step["dense-sgd"]["median_step_s"])
    (inf,) = data["inference"]
    assert set(inf["speedup_vs_dense"]) == {"tdlrt-auto", "tdlrt-factorized"}
    assert inf["auto_vs_factorized_max_abs_diff"] < 1e-4  # both paths compute one function
    assert set(data["targets"]) == {"step", "inference", "all_pass"}
    assert res["targets"] == data["targets"]


def test_gpu_check_targets_and_bad_input(capsys):
    mod = _gpu_check()
    step = [{"model": "vgg16", "step_ratio": 1.2}, {"model": "lenet5", "step_ratio": 0.9}]
    infer = [{"model": "vgg16", "target": 0.9, "speedup_vs_dense": {"tdlrt-auto": 1.1}},
             {"model": "vgg16", "target": 0.95, "speedup_vs_dense": {"tdlrt-auto": 1.4}}]
    t = mod.targets(step, infer)
    assert t["step"]["vgg16"]["target_<=1.5x"] and not t["step"]["vgg16"]["stretch_<=1.0x"]
    assert t["step"]["lenet5"]["stretch_<=1.0x"]
    assert t["inference"]["vgg16@0.90"]["pass"]
    assert t["inference"]["vgg16@0.95"] == {"speedup": 1.4, "required": 1.5, "pass": False}
    assert not t["all_pass"]
    infer[1]["speedup_vs_dense"]["tdlrt-auto"] = 1.6
    assert mod.targets(step, infer)["all_pass"]
    with pytest.raises(SystemExit) as e:
        mod.main(["--smoke", "--compressions", "1.5"])
    assert e.value.code == 2
    assert "compressions must lie in (0, 1)" in capsys.readouterr().err
