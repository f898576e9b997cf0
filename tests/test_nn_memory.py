"""memory_report: byte counts of a tiny model against hand-computed values."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from tucker_dlra.nn import TDLRT, TuckerConv2d, memory_report

F32 = 4  # bytes


def _model() -> nn.Sequential:
    # kernel (4, 2, 3, 3) at ranks (2, 2, 2, 2): 72 kernel entries, core 16,
    # factors 4*2 + 2*2 + 3*2 + 3*2 = 24, bias 4; linear 16 -> 3: 48 + 3
    torch.manual_seed(0)
    conv = TuckerConv2d(2, 4, 3, rank=(2, 2, 2, 2), max_rank=(2, 2, 2, 2))
    return nn.Sequential(conv, nn.Flatten(), nn.Linear(16, 3))


def _step(model, opt):
    x, y = torch.randn(5, 2, 4, 4), torch.randint(0, 3, (5,))
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def test_memory_report_tdlrt_momentum_by_hand():
    model = _model()
    opt = TDLRT(model.parameters(), lr=0.01, momentum=0.9, tau=0.0)
    rep = memory_report(model, opt)
    assert rep.params == (16 + 24 + 4 + 51) * F32 == 380
    assert rep.optimizer_state == 0  # no step yet
    # kernel-only backward (TDLRT): grad_full 72 + core.grad 16 + bias 4; linear 51
    assert rep.gradients == (72 + 16 + 4 + 51) * F32
    # augmented ranks min(2r, n) = (4, 2, 3, 3): core 72, bases 16 + 4 + 9 + 9, K 24
    assert rep.step_workspace == (72 + 38 + 24) * F32
    assert rep.step_transient == rep.gradients + rep.step_workspace
    assert rep.dense_params == (72 + 4 + 51) * F32 == 508
    assert rep.dense_optimizer_state == 508  # one momentum buffer
    assert rep.dense_gradients == 508
    assert rep.dense_total == 3 * 508
    _step(model, opt)
    rep = memory_report(model, opt)
    # momentum buffers of parameter shape: factors, core, bias, linear
    assert rep.optimizer_state == (24 + 16 + 4 + 51) * F32
    assert rep.total == 380 + 380 + (143 + 134) * F32
    assert [r["name"] for r in rep.layers] == ["0"] and rep.layers[0]["ranks"] == [2, 2, 2, 2]
    assert rep.layers[0]["params"] == 44 * F32
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["total"] == rep.total and d["dense_total"] == rep.dense_total
    assert "optimizer state" in str(rep)


def test_memory_report_variants_by_hand():
    model = _model()
    # no optimizer: plain autograd gradients of core and factors too, no dense state
    rep = memory_report(model)
    assert rep.gradients == (72 + 16 + 24 + 4 + 51) * F32
    assert rep.dense_optimizer_state == 0 and rep.optimizer_state == 0
    # fixed-rank step: no augmentation, core 16 + bases 24 + K 24
    assert memory_report(model, adaptive=False).step_workspace == (16 + 24 + 24) * F32
    # Adam: two moments per dense parameter
    opt = TDLRT(model.parameters(), lr=0.01, descent="adam", adaptive=False)
    rep = memory_report(model, opt)
    assert rep.dense_optimizer_state == 2 * 508
    assert rep.step_workspace == (16 + 24 + 24) * F32  # the group's adaptive=False
    # float64 doubles everything
    rep64 = memory_report(_model().double())
    assert rep64.params == 2 * 380 and rep64.dense_params == 2 * 508


def test_memory_report_dense_model_equals_its_dense_equivalent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _step(model, opt)
    rep = memory_report(model, opt)
    assert rep.params == rep.dense_params == (72 + 4 + 51) * F32
    assert rep.optimizer_state == rep.dense_optimizer_state
    assert rep.gradients == rep.dense_gradients and rep.step_workspace == 0
    assert rep.total == rep.dense_total
    adam = torch.optim.Adam(model.parameters())
    assert memory_report(model, adam).dense_optimizer_state == 2 * rep.dense_params


def test_memory_report_errors():
    with pytest.raises(TypeError, match="model"):
        memory_report("not a model")
    with pytest.raises(TypeError, match="optimizer"):
        memory_report(nn.Linear(2, 2), optimizer=object())
