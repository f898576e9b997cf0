"""tuckerize / to_dense: conversion of arbitrary models to Tucker layers and back."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from tucker_dlra.app.models import LeNet5
from tucker_dlra.nn import (
    LowRankLinear,
    TuckerConv1d,
    TuckerConv2d,
    TuckerConv3d,
    VanillaCPConv,
    VanillaLowRankLinear,
    VanillaMatrixConv,
    VanillaTuckerConv,
    to_dense,
    tuckerize,
)

from tucker_dlra import hosvd

DT = torch.float64


def vgg_stack(width: int = 8) -> nn.Module:
    """A small VGG-style CIFAR stack: (conv-bn-relu) x2 - pool, twice, then a classifier."""
    w = width
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
                      nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
                      nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
                      nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
                      nn.MaxPool2d(2)),
        nn.Flatten(),
        nn.Linear(2 * w * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10),
    )


def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=DT))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=DT) + 0.5)


def _models():
    torch.manual_seed(0)
    lenet = LeNet5().to(DT).eval()
    vgg = vgg_stack().to(DT).eval()
    with torch.no_grad():
        _randomize_bn(vgg)
    return [(lenet, torch.randn(4, 1, 28, 28, dtype=DT)),
            (vgg, torch.randn(4, 3, 32, 32, dtype=DT))]


@pytest.mark.parametrize("kind", ["tdlrt", "vanilla-tucker", "vanilla-matrix"])
def test_lossless_round_trip_equals_the_original_model(kind):
    """to_dense(tuckerize(m, rtol=0)) computes the same function as m (float64)."""
    for model, x in _models():
        ref = model(x)
        rtol = 0.0 if kind != "vanilla-matrix" else None
        t = tuckerize(model, rtol=rtol, kind=kind)
        assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in t.modules())
        torch.testing.assert_close(t(x), ref, rtol=1e-9, atol=1e-9)
        d = to_dense(t)
        assert all(type(m) in (nn.Conv2d, nn.Linear) for m in d.modules()
                   if isinstance(m, (nn.Conv2d, nn.Linear)) or hasattr(m, "weight_full"))
        torch.testing.assert_close(d(x), ref, rtol=1e-9, atol=1e-9)
        for (n1, p1), (n2, p2) in zip(model.named_parameters(), d.named_parameters(),
                                      strict=True):
            assert n1 == n2
            torch.testing.assert_close(p1, p2, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rule,factor", [("split", 1.0), ("per_mode", None)])
def test_rtol_gives_the_hosvd_error_bound_on_each_weight(rule, factor):
    torch.manual_seed(1)
    model = vgg_stack().to(DT)
    for rtol in (0.1, 0.4):
        t = tuckerize(model, rtol=rtol, rule=rule)
        tmods = dict(t.named_modules())
        for name, m in model.named_modules():
            if not isinstance(m, (nn.Conv2d, nn.Linear)):
                continue
            tm = tmods[name]
            w = m.weight.detach()
            d = w.dim()
            err = float(torch.linalg.vector_norm(tm.weight_full().detach() - w))
            bound = rtol * float(torch.linalg.vector_norm(w)) * (
                factor if factor is not None else math.sqrt(d))
            assert err <= bound * (1 + 1e-10), name
            # the ranks are those of the core's truncated HOSVD with the same rule
            assert tm.ranks == hosvd(w, rtol=rtol, rule=rule).rank, name


def test_fixed_rank_is_the_truncated_hosvd():
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 10, 3, dtype=DT)
    for kind in ("tdlrt", "vanilla-tucker"):
        t = tuckerize(nn.Sequential(conv), rank=(5, 4, 2, 3), kind=kind)[0]
        ref = hosvd(conv.weight.detach(), rank=(5, 4, 2, 3)).full()
        torch.testing.assert_close(t.weight_full().detach(), ref)
    # an int is clipped per mode, a fraction is ceil(kappa n_i)
    assert tuckerize(conv, rank=4).ranks == (4, 4, 3, 3)
    assert tuckerize(conv, rank=0.5).ranks == (5, 3, 2, 2)
    assert tuckerize(conv, rank=0.5, kind="vanilla-tucker").ranks == (5, 3, 2, 2)
    assert tuckerize(conv, rank=0.5, kind="vanilla-cp").ranks == 5
    assert tuckerize(conv, rank=0.5, kind="vanilla-matrix").ranks == 5


def test_layer_types_per_kind_and_dimension():
    m = nn.ModuleDict({"c1": nn.Conv1d(2, 4, 3), "c2": nn.Conv2d(2, 4, 3),
                       "c3": nn.Conv3d(2, 4, 3), "fc": nn.Linear(5, 3)})
    t = tuckerize(m)
    assert isinstance(t["c1"], TuckerConv1d) and isinstance(t["c2"], TuckerConv2d)
    assert isinstance(t["c3"], TuckerConv3d) and isinstance(t["fc"], LowRankLinear)
    for kind, cls in (("vanilla-tucker", VanillaTuckerConv), ("vanilla-cp", VanillaCPConv),
                      ("vanilla-matrix", VanillaMatrixConv)):
        v = tuckerize(m, kind=kind, rank=2)
        for key, dim in (("c1", 1), ("c2", 2), ("c3", 3)):
            assert isinstance(v[key], cls) and v[key].dim == dim
        assert isinstance(v["fc"], VanillaLowRankLinear)
    x3 = torch.randn(2, 2, 5, 5, 5)
    torch.testing.assert_close(t["c3"](x3), m["c3"](x3), rtol=1e-4, atol=1e-5)


def test_include_exclude_by_name_pattern_and_type():
    model = vgg_stack()
    t = tuckerize(model, include="0.*")
    assert isinstance(t[0][0], TuckerConv2d) and isinstance(t[0][3], TuckerConv2d)
    assert type(t[1][0]) is nn.Conv2d and type(t[3]) is nn.Linear
    t = tuckerize(model, exclude=[nn.Linear, "1.3"])
    assert isinstance(t[1][0], TuckerConv2d) and type(t[1][3]) is nn.Conv2d
    assert type(t[3]) is nn.Linear and type(t[5]) is nn.Linear
    t = tuckerize(model, include=[nn.Linear])
    assert isinstance(t[3], LowRankLinear) and type(t[0][0]) is nn.Conv2d
    t = tuckerize(model, include=["*"], exclude="*")
    assert [type(a) for a in model.modules()] == [type(b) for b in t.modules()]


def test_copy_inplace_shared_modules_device_dtype_and_mode():
    shared = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(shared, nn.ReLU(), shared).to(DT)
    model[0].eval()
    out = tuckerize(model)
    assert type(model[0]) is nn.Conv2d  # the original is untouched
    assert out[0] is out[2]  # converted once, still shared
    assert out[0].core.dtype == DT and out[0].core.device.type == "cpu"
    assert not out[0].training
    x = torch.randn(1, 3, 6, 6, dtype=DT)
    torch.testing.assert_close(out(x), model(x))
    same = tuckerize(model, inplace=True)
    assert same is model and isinstance(model[0], TuckerConv2d)
    dense = to_dense(model)
    assert type(dense[0]) is nn.Conv2d and dense[0] is dense[2] and not dense[0].training
    assert isinstance(model[0], TuckerConv2d)  # to_dense copied
    to_dense(model, inplace=True)
    assert type(model[0]) is nn.Conv2d
    # a bare layer converts too
    single = tuckerize(nn.Linear(4, 3), rank=2)
    assert isinstance(single, LowRankLinear) and single.ranks == (2, 2)
    assert type(to_dense(single)) is nn.Linear


def test_float32_model_stays_float32_and_close():
    torch.manual_seed(3)
    model = LeNet5()
    x = torch.randn(2, 1, 28, 28)
    t = tuckerize(model, rtol=0.0)
    assert all(p.dtype == torch.float32 for p in t.parameters())
    torch.testing.assert_close(t(x), model(x), rtol=1e-4, atol=1e-4)


def test_bad_input_is_refused():
    model = vgg_stack()
    with pytest.raises(ValueError, match="kind"):
        tuckerize(model, kind="cp")
    with pytest.raises(ValueError, match="at most one"):
        tuckerize(model, rank=2, rtol=0.1)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rtol"):
            tuckerize(model, rtol=bad)
    with pytest.raises(TypeError, match="include"):
        tuckerize(model, include=[3])
    with pytest.raises(TypeError, match="exclude"):
        tuckerize(model, exclude=5)
    with pytest.raises(TypeError, match="model"):
        tuckerize("vgg")
    with pytest.raises(TypeError, match="model"):
        to_dense(None)
    with pytest.raises(ValueError, match="rule"):
        tuckerize(model, rtol=0.1, rule="global")
    with pytest.raises(ValueError, match="max_rank"):
        tuckerize(model, kind="vanilla-cp", rank=3, max_rank=4)
    with pytest.raises(ValueError, match="rtol"):
        tuckerize(model, kind="vanilla-cp", rtol=0.1)
    with pytest.raises(TypeError, match="one rank"):
        tuckerize(model, kind="vanilla-matrix", rank=(2, 2, 2, 2), exclude=nn.Linear)
    with pytest.raises(ValueError, match="rank"):
        tuckerize(model, rank=(50, 3, 3, 3), exclude=nn.Linear)
