"""Correctness of the performance paths of the Tucker layers and of TDLRT (not timings).

* kernel-only backward (``layer.param_grads = False``, set by TDLRT): same captured kernel
  gradient, same input gradient, exact core gradient, no factor gradients; the TDLRT step is
  unchanged by it;
* fused bias and channels-last 1x1 stages (``pointwise(..., channels_last=True)``): the same
  values and gradients as the dense convolution, for either input layout, in eval and in
  training (``TRAIN_CHANNELS_LAST``);
* the weight-gradient convolution that captures G on inputs of mixed memory layouts.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from tucker_dlra.nn import TDLRT, LowRankLinear, TuckerConv1d, TuckerConv2d
from tucker_dlra.nn.vanilla import pointwise

from tucker_dlra import hosvd, k_core, k_gradient

D64 = torch.float64


def _convs():
    torch.manual_seed(0)
    return [
        (TuckerConv2d(4, 6, 3, padding=1, rank=(3, 2, 2, 3), dtype=D64), (2, 4, 7, 7)),
        (TuckerConv2d(4, 6, 3, stride=2, groups=2, rank=(2, 2, 3, 2), dtype=D64), (2, 4, 7, 7)),
        (TuckerConv1d(3, 5, 3, padding="same", padding_mode="reflect", rank=2, dtype=D64),
         (3, 8)),  # unbatched
        (LowRankLinear(7, 5, rank=3, dtype=D64), (4, 7)),
    ]


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("mode", ["dense", "factorized"])
@pytest.mark.parametrize("x_grad", [True, False])
def test_kernel_only_backward_gives_same_gradients(case, mode, x_grad):
    layer, shape = _convs()[case]
    layer.forward_mode = mode
    x0 = torch.randn(*shape, dtype=D64)
    target = torch.randn_like(layer(x0))
    out = {}
    for kernel_only in (False, True):
        layer.zero_grad()
        layer.grad_full = None
        layer.param_grads = not kernel_only
        x = x0.clone().requires_grad_(x_grad)
        y = layer(x)
        ((y - target) ** 2).sum().backward()
        out[kernel_only] = (layer.grad_full.clone(), layer.core.grad.clone(),
                            None if x.grad is None else x.grad.clone(),
                            [f.grad for f in layer.factors], layer.bias.grad.clone(),
                            y.detach())
    ref, new = out[False], out[True]
    torch.testing.assert_close(new[5], ref[5], rtol=1e-12, atol=1e-12)  # same forward
    with torch.no_grad():  # ... and the same function as the rebuilt dense kernel + bias
        w = layer.weight_full()
        if isinstance(layer, LowRankLinear):
            dense = F.linear(x0, w, layer.bias)
        else:
            dense = layer.to_dense()(x0)
    torch.testing.assert_close(new[5], dense, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(new[0], ref[0], rtol=1e-10, atol=1e-12)  # G
    torch.testing.assert_close(new[1], ref[1], rtol=1e-10, atol=1e-12)  # exact dL/dC
    if x_grad:
        torch.testing.assert_close(new[2], ref[2], rtol=1e-10, atol=1e-12)
    else:
        assert new[2] is None
    torch.testing.assert_close(new[4], ref[4])
    assert all(g is not None for g in ref[3])
    # the factors carry the K-step gradients of Theorem 1 instead of dL/dU_i
    us = [f.detach() for f in layer.factors]
    for i, g in enumerate(new[3]):
        expect = k_gradient(new[0], k_core(layer.core.detach(), i)[0], us, i)
        torch.testing.assert_close(g, expect, rtol=1e-10, atol=1e-12)


def test_kernel_only_accumulates_and_follows_zero_grad():
    torch.manual_seed(1)
    layer = TuckerConv2d(3, 4, 3, padding=1, rank=2, dtype=D64)
    layer.param_grads = False
    x1, x2 = torch.randn(2, 3, 6, 6, dtype=D64), torch.randn(2, 3, 6, 6, dtype=D64)
    for mode in ("dense", "factorized"):
        layer.forward_mode = mode
        layer.zero_grad()
        layer.grad_full = None
        layer(x1).square().sum().backward()
        g1 = layer.grad_full.clone()
        layer.zero_grad(set_to_none=False)
        layer(x2).square().sum().backward()
        g2 = layer.grad_full.clone()
        w = layer.weight_full().detach().requires_grad_(True)
        F.conv2d(x2, w, layer.bias.detach(), 1, 1).square().sum().backward()
        torch.testing.assert_close(g2, w.grad)  # reset by zero_grad, not g1 + g2
        layer(x1).square().sum().backward()
        torch.testing.assert_close(layer.grad_full, g1 + g2)


def _model():
    torch.manual_seed(3)
    return nn.Sequential(TuckerConv2d(2, 6, 3, padding=1, rank=(3, 2, 3, 3), dtype=D64),
                         nn.ReLU(), TuckerConv2d(6, 8, 3, rank=(4, 3, 2, 3), dtype=D64),
                         nn.Flatten(), LowRankLinear(8 * 4 * 4, 3, rank=2, dtype=D64))


@pytest.mark.parametrize("integrator", ["bug", "parallel"])
@pytest.mark.parametrize("mode", ["dense", "factorized", "auto"])
def test_tdlrt_switches_to_kernel_only_and_step_is_unchanged(integrator, mode):
    """TDLRT sets param_grads=False; the captured G and the step equal those with plain
    autograd gradients (one step from the same point: rounding is not amplified)."""
    x = torch.randn(5, 2, 6, 6, dtype=D64)
    y = torch.randint(0, 3, (5,))
    a, b = _model(), _model()
    opt_a = TDLRT(a.parameters(), lr=0.2, momentum=0.9, tau=0.05, integrator=integrator)
    opt_b = TDLRT(b.parameters(), lr=0.2, momentum=0.9, tau=0.05, integrator=integrator)
    layers_a = [m for m in a if hasattr(m, "param_grads")]
    layers_b = [m for m in b if hasattr(m, "param_grads")]
    assert all(m.param_grads is False for m in layers_a)
    for m in layers_b:
        m.param_grads = True  # plain autograd gradients: the reference
    for m in layers_a + layers_b:
        m.forward_mode = mode
    for model, opt in ((a, opt_a), (b, opt_b)):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
    for la, lb in zip(layers_a, layers_b, strict=True):
        torch.testing.assert_close(la.grad_full, lb.grad_full, rtol=1e-10, atol=1e-13)
        lb.grad_full = la.grad_full.clone()  # the same G: the step must then be the same
    opt_a.step()
    opt_b.step()
    for la, lb in zip(layers_a, layers_b, strict=True):
        assert la.ranks == lb.ranks
        torch.testing.assert_close(la.weight_full(), lb.weight_full(), rtol=1e-12, atol=1e-13)


def test_kernel_only_after_resize():
    """set_tucker with new ranks, then a kernel-only backward: core gradient has the new shape."""
    torch.manual_seed(4)
    layer = TuckerConv2d(3, 4, 3, rank=3, forward_mode="factorized", dtype=D64)
    layer.param_grads = False
    x = torch.randn(2, 3, 5, 5, dtype=D64)
    layer(x).sum().backward()
    layer.set_tucker(hosvd(layer.weight_full().detach(), rank=(2, 2, 2, 2)))
    layer(x).sum().backward()
    assert layer.core.grad.shape == (2, 2, 2, 2)
    w = layer.weight_full().detach().requires_grad_(True)
    F.conv2d(x, w, layer.bias.detach()).sum().backward()
    torch.testing.assert_close(layer.grad_full, w.grad)
    assert copy.deepcopy(layer).param_grads is False


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("in_layout", ["contiguous", "channels_last"])
def test_pointwise_channels_last_equals_conv(bias, in_layout):
    torch.manual_seed(5)
    x = torch.randn(3, 4, 5, 6, dtype=D64)
    if in_layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(7, 4, dtype=D64)
    b = torch.randn(7, dtype=D64) if bias else None
    y = pointwise(x, w, b, channels_last=True)
    assert y.shape == (3, 7, 5, 6)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, F.conv2d(x, w[:, :, None, None], b), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, pointwise(x, w, b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("train_cl", [("cpu",), ()], ids=["train_cl", "train_nchw"])
@pytest.mark.parametrize("in_layout", ["contiguous", "channels_last"])
def test_factorized_conv2d_layouts_train_and_eval(in_layout, train_cl, monkeypatch):
    """The 2-d factorized path (channels-last 1x1 stages) equals the dense conv in values and
    gradients, for either input layout, in eval and in (kernel-only) training, with the
    training output channels-last (``TRAIN_CHANNELS_LAST`` holds the device) or not; the
    captured G mixes layouts where the input is contiguous and the output gradient is not."""
    import tucker_dlra.nn.layers as layers

    monkeypatch.setattr(layers, "TRAIN_CHANNELS_LAST", train_cl)
    torch.manual_seed(6)
    layer = TuckerConv2d(5, 6, 3, padding=1, rank=(3, 2, 3, 3), forward_mode="factorized",
                         dtype=D64)
    x0 = torch.randn(2, 5, 7, 7, dtype=D64)
    if in_layout == "channels_last":
        x0 = x0.contiguous(memory_format=torch.channels_last)
    ref_conv = layer.to_dense()
    x_ref = x0.clone().requires_grad_(True)
    y_ref = ref_conv(x_ref)
    target = torch.randn_like(y_ref)
    ((y_ref - target) ** 2).sum().backward()
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x0), y_ref.detach(), rtol=1e-12, atol=1e-12)
    layer.train()
    for param_grads in (True, False):
        layer.zero_grad()
        layer.param_grads = param_grads
        x = x0.clone().requires_grad_(True)
        y = layer(x)
        assert y.is_contiguous(memory_format=torch.channels_last) == bool(train_cl)
        ((y - target) ** 2).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(layer.grad_full, ref_conv.weight.grad, rtol=1e-10,
                                   atol=1e-12)
        torch.testing.assert_close(layer.bias.grad, ref_conv.bias.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape, ranks", [((5, 4), (3, 3)), ((5, 4, 3), (2, 3, 2)),
                                          ((6, 5, 3, 3), (3, 2, 3, 2)),
                                          ((4, 3, 3, 2, 3), (2, 2, 3, 2, 2))])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_k_gradients_equal_per_mode_k_gradient(shape, ranks, lib):
    """steps.k_gradients (shared leave-one-out contractions, used by TDLRT) = k_gradient
    mode by mode (Theorem 1 right-hand sides)."""
    import numpy as np

    from tucker_dlra.steps import k_core, k_gradient, k_gradients

    rng = np.random.default_rng(7)
    z = rng.standard_normal(shape)
    core = rng.standard_normal(ranks)
    us = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in zip(shape, ranks, strict=True)]
    if lib == "torch":
        z, core, us = torch.from_numpy(z), torch.from_numpy(core), [torch.from_numpy(u)
                                                                     for u in us]
    gs = [k_core(core, i)[0] for i in range(len(shape))]
    got = k_gradients(z, gs, us)
    for i in range(len(shape)):
        want = k_gradient(z, gs[i], us, i)
        assert tuple(got[i].shape) == (shape[i], ranks[i])
        np.testing.assert_allclose(np.asarray(got[i]), np.asarray(want), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="one entry per mode"):
        k_gradients(z, gs[:-1], us)


def test_all_finite_detects_nan_and_infinities_in_any_tensor():
    """TDLRT's finiteness check (aminmax reduction, small tensors concatenated)."""
    from tucker_dlra.nn.optim import _all_finite

    torch.manual_seed(8)
    ts = [torch.randn(300, 300), torch.randn(3, 4, dtype=D64),
          torch.randn(5, dtype=torch.complex64), torch.empty(0)]
    assert _all_finite(ts) and _all_finite([])
    for k in range(3):
        for bad in (float("nan"), float("inf"), -float("inf")):
            u = [t.clone() for t in ts]
            u[k].reshape(-1)[3] = bad
            assert not _all_finite(u), (k, bad)


@pytest.mark.parametrize("layouts", [("nchw", "cl"), ("cl", "nchw"), ("cl", "cl"),
                                     ("nchw", "nchw")])
def test_captured_kernel_gradient_with_mixed_layouts(layouts):
    """G from input and output gradient of any pair of memory layouts equals the dense
    weight gradient; where exactly one is channels-last, both reach the weight-gradient
    convolution channels-last."""
    from tucker_dlra.nn.layers._convnd import _same_layout

    torch.manual_seed(7)
    cl = torch.channels_last

    def lay(t, kind):
        return t.contiguous(memory_format=cl) if kind == "cl" else t.contiguous()

    x = lay(torch.randn(3, 4, 6, 6, dtype=D64), layouts[0])
    gy = lay(torch.randn(3, 5, 6, 6, dtype=D64), layouts[1])
    xx, gg = _same_layout(x, gy)
    if layouts[0] != layouts[1]:
        assert xx.is_contiguous(memory_format=cl) and gg.is_contiguous(memory_format=cl)
    else:
        assert xx is x and gg is gy
    w = torch.randn(5, 4, 3, 3, dtype=D64, requires_grad=True)
    F.conv2d(x, w, padding=1).backward(gy)
    got = torch.nn.grad.conv2d_weight(xx, w.shape, gg, 1, 1)
    torch.testing.assert_close(got, w.grad, rtol=1e-12, atol=1e-12)
