"""tucker_dlra.nn.clip_grad_norm_: a Tucker layer is counted and clipped as the dense layer
with the same kernel (single process: exactly)."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn
from tucker_dlra.nn import TDLRT, TuckerConv2d, clip_grad_norm_

X = torch.randn(4, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def _model():
    torch.manual_seed(1)
    return nn.Sequential(TuckerConv2d(2, 4, 3, rank=(3, 2, 3, 3), dtype=torch.float64),
                         nn.Tanh(), nn.Flatten(), nn.Linear(64, 3, dtype=torch.float64))


def _loss(model):
    return model(X).square().mean() * 50.0


def _dense_twin(model):
    return nn.Sequential(model[0].to_dense(), nn.Tanh(), nn.Flatten(), copy.deepcopy(model[3]))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("param_grads", [False, True])
def test_clip_counts_and_scales_like_the_dense_model(norm_type, param_grads):
    model = _model()
    dense = _dense_twin(model)
    opt = TDLRT(model.parameters(), lr=0.3, tau=0.05)
    model[0].param_grads = param_grads
    _loss(model).backward()
    _loss(dense).backward()
    torch.testing.assert_close(model[0].grad_full, dense[0].weight.grad, rtol=1e-12, atol=1e-14)
    ref = copy.deepcopy(model)  # same gradients, stepped unclipped at lr * coef
    for p, q in zip(model[3].parameters(), ref[3].parameters(), strict=True):
        q.grad = p.grad.clone()
    dense_norm = torch.nn.utils.clip_grad_norm_(dense.parameters(), 0.01, norm_type)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no rescale warning: the library clip re-records
        norm = clip_grad_norm_(model, 0.01, norm_type)
        torch.testing.assert_close(norm, dense_norm, rtol=1e-12, atol=0)
        coef = 0.01 / (float(norm) + 1e-6)
        assert coef < 0.1  # the clip acts
        torch.testing.assert_close(model[3].weight.grad, dense[3].weight.grad, rtol=1e-12,
                                   atol=0)
        opt.step()
    ropt = TDLRT(ref.parameters(), lr=0.3 * coef, tau=0.05)
    ropt.step()
    torch.testing.assert_close(model[0].weight_full(), ref[0].weight_full(), rtol=1e-10,
                               atol=1e-13)
    torch.testing.assert_close(model[3].weight, ref[3].weight, rtol=1e-10, atol=1e-13)
    assert model[0].ranks == ref[0].ranks


def test_parameters_iterable_equals_module():
    a, b = _model(), _model()
    for m in (a, b):
        TDLRT(m.parameters(), lr=0.1)
        _loss(m).backward()
    n1 = clip_grad_norm_(a, 0.05)
    n2 = clip_grad_norm_(b.parameters(), 0.05)
    assert float(n1) == float(n2)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    torch.testing.assert_close(a[0].grad_full, b[0].grad_full, rtol=0, atol=0)


def test_torch_clip_warns_and_points_to_the_library_clip():
    from tucker_dlra.nn import distributed

    model = _model()
    opt = TDLRT(model.parameters(), lr=0.1)
    _loss(model).backward()
    distributed._WARNED[0] = False
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
    with pytest.warns(UserWarning, match=r"tucker_dlra\.nn\.clip_grad_norm_"):
        opt.step()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1", True])
def test_bad_max_norm(bad):
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_(_model(), bad)


def test_nonfinite_norm_raises_when_asked():
    model = _model()
    TDLRT(model.parameters(), lr=0.1)
    _loss(model).backward()
    model[0].grad_full = model[0].grad_full * float("nan")
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(model, 1.0, error_if_nonfinite=True)
