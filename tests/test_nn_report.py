"""compression_report: the paper's compression rates (Sec. 2.1, 4.1), FLOPs and bytes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tucker_dlra.app.models import LeNet5
from tucker_dlra.nn import (
    TuckerConv2d,
    VanillaTuckerConv,
    compression_report,
    parameter_counts,
    tuckerize,
)
from tucker_dlra.nn.optim import TDLRT


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    return int(fc.get_total_flops())


def test_alexnet_layer_example_of_section_2_1():
    """Ranks [115, 57, 3, 3] of [384, 192, 3, 3]: 1.14e5 vs 6.63e5 numbers, 82.8 %."""
    c = parameter_counts((384, 192, 3, 3), (115, 57, 3, 3))
    assert c["dense"] == 663552 and c["eval"] == 114117
    assert round(100 * (1 - c["eval"] / c["dense"]), 1) == 82.8
    for layer in (TuckerConv2d(192, 384, 3, rank=(115, 57, 3, 3)),
                  VanillaTuckerConv(192, 384, 3, rank=(115, 57, 3, 3))):
        rep = compression_report(nn.Sequential(layer))
        (row,) = rep.layers
        assert row.params_dense == 663552 and row.params_eval == 114117
        assert round(row.eval_compression, 1) == 82.8
        assert round(rep.eval_compression_conv, 1) == 82.8


def test_train_counts_follow_algorithm_1():
    # r~ = min(2r, n) = (4, 4, 3, 3): core 144, bases 32+24+9+9, K_i 16+12+6+6
    c = parameter_counts((8, 6, 3, 3), (2, 2, 2, 2))
    assert c["train"] == 144 + 74 + 40
    f = parameter_counts((8, 6, 3, 3), (2, 2, 2, 2), adaptive=False)
    assert f["train"] == 16 + 2 * 40
    assert parameter_counts((8, 6, 3, 3), (2, 2, 2, 2), "vanilla-tucker")["train"] == 56
    assert parameter_counts((8, 6, 3, 3), 3, "cp") == {"dense": 432, "eval": 60, "train": 60}
    assert parameter_counts((8, 6, 3, 3), 3, "matrix")["eval"] == 3 * (8 + 54)
    assert parameter_counts((8, 6), None, "dense")["train"] == 48
    with pytest.raises(ValueError, match="kind"):
        parameter_counts((2, 2), 1, "tt")
    with pytest.raises(ValueError, match="one entry per mode"):
        parameter_counts((2, 2), (1,))


def test_rows_totals_and_training_counts_of_a_tucker_model():
    torch.manual_seed(0)
    model = tuckerize(LeNet5(), rank=(8, 1, 3, 3), exclude=nn.Linear)
    rep = compression_report(model)
    rows = {r.name: r for r in rep.layers}
    assert set(rows) == {"conv1", "conv2", "fc1", "fc2"}
    assert rows["conv1"].ranks == (8, 1, 3, 3) and rows["conv1"].kind == "tdlrt"
    assert rows["fc1"].kind == "dense" and rows["fc1"].eval_compression == 0.0
    c2 = parameter_counts((50, 20, 5, 5), (8, 1, 3, 3))
    assert rows["conv2"].params_train == c2["train"]
    conv_dense = 500 + 25000
    conv_eval = rows["conv1"].params_eval + rows["conv2"].params_eval
    assert rep.eval_compression_conv == pytest.approx(100 * (1 - conv_eval / conv_dense))
    all_dense = conv_dense + 800 * 500 + 500 * 10
    assert rep.eval_compression == pytest.approx(
        100 * (1 - (conv_eval + 800 * 500 + 500 * 10) / all_dense))
    fixed = compression_report(model, adaptive=False)
    assert fixed.layers[1].params_train == parameter_counts(
        (50, 20, 5, 5), (8, 1, 3, 3), adaptive=False)["train"]


def test_dense_flops_equal_torch_flop_counter():
    torch.manual_seed(1)
    model = LeNet5()
    rep = compression_report(model, input_shape=(1, 28, 28))
    assert rep.flops_dense == _flops(model, torch.zeros(1, 1, 28, 28))
    assert rep.layers[0].flops_dense == 2 * 24 * 24 * 20 * 25


@pytest.mark.parametrize("kind", ["tdlrt", "vanilla-tucker", "vanilla-cp", "vanilla-matrix"])
def test_factorized_flops_equal_the_executed_factorized_path(kind):
    """Per-sample FLOPs of the factorized path = FLOPs counted by torch (batch 2 - batch 1,
    which removes the batch-independent kernel reconstruction)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, stride=2), nn.Flatten(), nn.Linear(32 * 49, 10))
    t = tuckerize(model, rank=0.5, kind=kind, exclude=nn.Linear)
    for m in t.modules():
        if hasattr(m, "forward_mode"):
            m.forward_mode = "factorized"
    rep = compression_report(t, input_shape=(3, 16, 16))
    per_sample = _flops(t, torch.zeros(2, 3, 16, 16)) - _flops(t, torch.zeros(1, 3, 16, 16))
    assert rep.flops_factorized == per_sample
    assert rep.flops_dense == _flops(model, torch.zeros(1, 3, 16, 16))
    assert rep.flops_factorized < rep.flops_dense


def test_bytes_follow_the_current_ranks_and_optimizer_state():
    torch.manual_seed(3)
    # start below half rank: the augmented core is then smaller than the kernel
    model = tuckerize(LeNet5(), rank=(10, 1, 4, 4), exclude=nn.Linear)
    opt = TDLRT(model.parameters(), lr=0.05, momentum=0.9, tau=0.3)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    before = compression_report(model, optimizer=opt)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad()
    rep = compression_report(model, optimizer=opt)
    for row in rep.layers:
        layer = model.get_submodule(row.name)
        numel = sum(p.numel() for p in layer.parameters())
        assert row.bytes_params == 4 * numel  # really reallocated at the current ranks
        if row.kind == "tdlrt":
            n, r = row.shape, row.ranks
            assert numel == math.prod(r) + sum(a * b for a, b in zip(n, r, strict=True)) + n[0]
        state = sum(v.numel() * v.element_size() for p in layer.parameters()
                    for v in opt.state[p].values() if torch.is_tensor(v))
        assert row.bytes_optimizer == state
    conv2 = next(r for r in rep.layers if r.name == "conv2")
    conv2_before = next(r for r in before.layers if r.name == "conv2")
    assert conv2.ranks != conv2_before.ranks and conv2.bytes_params < conv2_before.bytes_params
    assert rep.bytes_params == 4 * sum(p.numel() for p in model.parameters())
    assert rep.bytes_optimizer > 0 and before.bytes_optimizer == 0


def test_table_dict_and_no_side_effects():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 36, 10))
    model = tuckerize(model, rank=0.5, kind="vanilla-cp")
    model.train()
    mean = model[1].running_mean.clone()
    rep = compression_report(model, input_shape=(3, 8, 8))
    assert model.training and model[1].training
    torch.testing.assert_close(model[1].running_mean, mean)
    text = str(rep)
    for token in ("vanilla-cp", "vanilla-matrix", "eval compression", "train compression",
                  "FLOPs per sample", "bytes"):
        assert token in text
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["totals"]["eval_compression"] == pytest.approx(rep.eval_compression)
    assert [r["name"] for r in d["layers"]] == ["0", "4"]
    assert d["layers"][0]["ranks"] == 4 and d["layers"][1]["ranks"] == 5


def test_bad_input_is_refused():
    model = LeNet5()
    with pytest.raises(TypeError, match="model"):
        compression_report([model])
    with pytest.raises(ValueError, match="input_shape"):
        compression_report(model, input_shape=(0, 28, 28))
    with pytest.raises(TypeError, match="input_shape"):
        compression_report(model, input_shape=5)
    with pytest.raises(TypeError, match="optimizer"):
        compression_report(model, optimizer="sgd")
