"""Tucker layers: forward paths against torch's dense convolution, gradient capture,
Theorem 1's K-gradient, rank specifications, conversions and bad input."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from tucker_dlra.nn import LowRankLinear, TuckerConv1d, TuckerConv2d, TuckerConv3d
from tucker_dlra.nn.layers import resolve_rank

from tucker_dlra import TuckerTensor, check_orthonormal, hosvd, k_core, k_gradient, k_tensor

# torch's own nn.ConvNd (the reference) warns about 'same' with even kernels
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

CLS = {1: TuckerConv1d, 2: TuckerConv2d, 3: TuckerConv3d}
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
D64 = torch.float64


@st.composite
def conv_configs(draw):
    n = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.sampled_from([1, 2]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 2))
    dilation = draw(st.integers(1, 2))
    pad_choices = [0, 1, 2, "valid"] + (["same"] if stride == 1 else [])
    padding = draw(st.sampled_from(pad_choices))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    bias = draw(st.booleans())
    frac = draw(st.sampled_from([None, 0.5, 1.0]))
    size = draw(st.integers(5, 7)) if n < 3 else 5
    return dict(n=n, groups=groups, cin=cin, cout=cout, k=k, stride=stride, dilation=dilation,
                padding=padding, padding_mode=mode, bias=bias, rank=frac, size=size)


def make_conv(cfg, **kw):
    torch.manual_seed(0)
    return CLS[cfg["n"]](cfg["cin"], cfg["cout"], cfg["k"], stride=cfg["stride"],
                         padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"],
                         bias=cfg["bias"], padding_mode=cfg["padding_mode"], rank=cfg["rank"],
                         dtype=D64, **kw)


def torch_reference(layer, x):
    """nn.ConvNd of torch with the rebuilt kernel (its own padding/'same' logic)."""
    dense_cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[layer._N - 1]
    ref = dense_cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                    layer.padding, layer.dilation, layer.groups, layer.bias is not None,
                    layer.padding_mode, dtype=D64)
    with torch.no_grad():
        ref.weight.copy_(layer.weight_full())
        if layer.bias is not None:
            ref.bias.copy_(layer.bias)
    return ref(x)


@settings(max_examples=40)
@given(conv_configs())
def test_forward_paths_equal_torch_conv(cfg):
    layer = make_conv(cfg)
    torch.manual_seed(1)
    x = torch.randn(2, cfg["cin"], *([cfg["size"]] * cfg["n"]), dtype=D64)
    ref = torch_reference(layer, x)
    for mode in ("dense", "factorized", "auto"):
        layer.forward_mode = mode
        y = layer(x)
        assert y.shape == ref.shape
        torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=20)
@given(conv_configs())
def test_captured_kernel_gradient_equals_autograd(cfg):
    """grad_full (both paths) equals dL/dW of torch's conv with the dense kernel."""
    layer = make_conv(cfg)
    torch.manual_seed(2)
    x = torch.randn(2, cfg["cin"], *([cfg["size"]] * cfg["n"]), dtype=D64)
    w = layer.weight_full().detach().requires_grad_(True)
    dense_cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[cfg["n"] - 1]
    ref = dense_cls(cfg["cin"], cfg["cout"], cfg["k"], cfg["stride"], cfg["padding"],
                    cfg["dilation"], cfg["groups"], False, cfg["padding_mode"], dtype=D64)
    pad_mode_fn = ref._conv_forward
    out = pad_mode_fn(x, w, None)
    target = torch.randn_like(out)
    (out * target).sum().backward()
    for mode in ("dense", "factorized"):
        layer.forward_mode = mode
        layer.grad_full = None
        y = layer(x)
        if layer.bias is not None:
            y = y - layer.bias.reshape(-1, *([1] * cfg["n"]))
        (y * target).sum().backward()
        torch.testing.assert_close(layer.grad_full, w.grad, rtol=1e-10, atol=1e-10)


def test_gradient_capture_accumulates_and_respects_modes():
    layer = TuckerConv2d(3, 4, 3, padding=1, rank=2, dtype=D64)
    x = torch.randn(2, 3, 6, 6, dtype=D64)
    layer(x).sum().backward()
    g1 = layer.grad_full.clone()
    layer(x).sum().backward()
    torch.testing.assert_close(layer.grad_full, 2 * g1)  # accumulates like .grad
    layer.grad_full = None
    layer.eval()
    layer(x).sum().backward()
    assert layer.grad_full is None  # no capture in eval mode
    layer.train()
    layer.capture_grad = False
    layer(x).sum().backward()
    assert layer.grad_full is None
    layer.capture_grad = True
    with torch.no_grad():
        layer(x)
    assert layer.grad_full is None


def test_unbatched_input_both_paths():
    layer = TuckerConv2d(2, 3, 3, rank=2, dtype=D64)
    x = torch.randn(2, 5, 5, dtype=D64)
    ref = F.conv2d(x.unsqueeze(0), layer.weight_full(), layer.bias).squeeze(0)
    for mode in ("dense", "factorized"):
        layer.forward_mode = mode
        layer.grad_full = None
        y = layer(x)
        torch.testing.assert_close(y, ref)
        y.sum().backward()
        assert layer.grad_full.shape == layer.kernel_shape


@pytest.mark.parametrize("mode", ["dense", "factorized"])
def test_low_rank_linear_equals_f_linear(mode):
    torch.manual_seed(0)
    layer = LowRankLinear(7, 5, rank=(3, 3), forward_mode=mode, dtype=D64)
    x = torch.randn(4, 3, 7, dtype=D64)
    w = layer.factors[0] @ layer.core @ layer.factors[1].T
    torch.testing.assert_close(layer(x), F.linear(x, w, layer.bias))
    wl = w.detach().requires_grad_(True)
    F.linear(x, wl).square().sum().backward()
    y = layer(x) - layer.bias
    y.square().sum().backward()
    torch.testing.assert_close(layer.grad_full, wl.grad)
    torch.testing.assert_close(layer.to_dense()(x), layer(x))


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("mode", ["dense", "factorized"])
def test_k_gradient_equals_theorem1_autograd(n, mode):
    """K-gradient from the captured G equals grad_K L(G_i x_i K x_{j!=i} U_j) (Theorem 1)."""
    torch.manual_seed(n)
    layer = CLS[n](4, 6, 3, padding=1, rank=(3, 2) + (2,) * n, forward_mode=mode, dtype=D64)
    x = torch.randn(3, 4, *([5] * n), dtype=D64)
    target = torch.randn(3, 6, *([5] * n), dtype=D64)
    loss_fn = lambda y: ((y - target) ** 2).sum()  # noqa: E731
    loss_fn(layer(x)).backward()
    g_full = layer.grad_full
    c = layer.core.detach()
    us = [u.detach() for u in layer.factors]
    for i in range(n + 2):
        g_i, s_i = k_core(c, i)
        k = (us[i] @ s_i).requires_grad_(True)
        w = k_tensor(g_i, us, k, i).full()
        torch.testing.assert_close(w, layer.weight_full().detach())  # same point
        y = CONV[n](x, w, layer.bias.detach(), 1, 1)
        (grad_k,) = torch.autograd.grad(loss_fn(y), k)
        torch.testing.assert_close(k_gradient(g_full, g_i, us, i), grad_k, rtol=1e-10,
                                   atol=1e-10)


def test_rank_specifications():
    shape = (8, 3, 3, 3)
    assert resolve_rank(None, shape) == (8, 3, 3, 3)
    assert resolve_rank(2, shape) == (2, 2, 2, 2)
    assert resolve_rank(5, shape) == (5, 3, 3, 3)  # an int is clipped per mode
    assert resolve_rank(0.5, shape) == (4, 2, 2, 2)
    assert resolve_rank((4, 1, 2, 2), shape) == (4, 1, 2, 2)
    assert resolve_rank(None, (6, 1, 5, 5)) == (6, 1, 5, 5)
    layer = TuckerConv2d(3, 8, 3, rank=0.5, max_rank=3)
    assert layer.ranks == (3, 2, 2, 2)
    assert layer.max_rank == (3, 3, 3, 3) and layer.min_rank == (1, 1, 1, 1)
    lin = LowRankLinear(10, 4)
    assert lin.ranks == (4, 4)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(rank=(9, 3, 3, 3)), ValueError, "rank"),
    (dict(rank=(8, 1, 1, 3)), ValueError, "not a Tucker rank"),
    (dict(rank=0.0), ValueError, "fraction"),
    (dict(rank=1.5), ValueError, "fraction"),
    (dict(rank=(2, 2)), ValueError, "one entry per mode"),
    (dict(rank=(4, 2, 2, 2), max_rank=3), ValueError, "max_rank"),
    (dict(min_rank=4, max_rank=2), ValueError, "min_rank"),
    (dict(padding="full"), ValueError, "padding"),
    (dict(padding="same", stride=2), ValueError, "strided"),
    (dict(padding_mode="mirror"), ValueError, "padding_mode"),
    (dict(groups=2), ValueError, "divisible"),
    (dict(init="xavier"), ValueError, "init"),
    (dict(forward_mode="fast"), ValueError, "forward_mode"),
    (dict(stride=0), ValueError, "stride"),
    (dict(dtype=torch.int64), TypeError, "floating"),
])
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        TuckerConv2d(3, 8, 3, **kwargs)


def test_bad_forward_input():
    layer = TuckerConv2d(3, 4, 3)
    with pytest.raises(ValueError, match="input"):
        layer(torch.randn(3, 5))
    lin = LowRankLinear(5, 3)
    with pytest.raises(ValueError, match="in_features"):
        lin(torch.randn(2, 4))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_from_conv_and_to_dense(n):
    torch.manual_seed(0)
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[n - 1](4, 6, 3, padding=1, stride=1, bias=True,
                                                   dtype=D64)
    x = torch.randn(2, 4, *([5] * n), dtype=D64)
    exact = CLS[n].from_conv(conv)
    torch.testing.assert_close(exact(x), conv(x))
    torch.testing.assert_close(exact.to_dense()(x), conv(x))
    check_orthonormal(list(exact.tucker().factors))
    t, info = hosvd(conv.weight.detach(), rtol=0.3, rule="per_mode", full_output=True)
    approx = CLS[n].from_conv(conv, rtol=0.3)
    assert approx.ranks == info.rank
    err = torch.linalg.vector_norm(approx.weight_full() - conv.weight).detach()
    assert float(err) <= info.error_bound * (1 + 1e-9) + 1e-12
    fixed = CLS[n].from_conv(conv, rank=2)
    assert fixed.ranks == (2,) * (n + 2)
    with pytest.raises(TypeError, match="conv"):
        CLS[n].from_conv(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="at most one"):
        CLS[n].from_conv(conv, rank=2, rtol=0.1)


def test_from_linear_and_to_dense():
    torch.manual_seed(0)
    lin = nn.Linear(9, 6, dtype=D64)
    x = torch.randn(3, 9, dtype=D64)
    low = LowRankLinear.from_linear(lin)
    torch.testing.assert_close(low(x), lin(x))
    low3 = LowRankLinear.from_linear(lin, rank=3)
    s = torch.linalg.svdvals(lin.weight.detach())
    err = torch.linalg.vector_norm(low3.weight_full() - lin.weight)
    torch.testing.assert_close(err, torch.linalg.vector_norm(s[3:]))  # Eckart-Young
    torch.testing.assert_close(low3.to_dense()(x), low3(x))


def test_kaiming_init_matches_dense_default_variance():
    torch.manual_seed(0)
    layer = TuckerConv2d(16, 32, 3, rank=(8, 8, 3, 3))
    w = layer.weight_full().detach()
    expected = 1.0 / (3.0 * 16 * 9)  # Var of U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert math.isclose(float(w.square().mean()), expected, rel_tol=1e-6)
    check_orthonormal([f.detach() for f in layer.factors], atol=1e-5)


def test_spectral_init_decays_over_powers_of_ten():
    torch.manual_seed(0)
    layer = TuckerConv2d(16, 32, 3, init="spectral", dtype=D64)
    w = layer.weight_full().detach()
    s = torch.linalg.svdvals(w.reshape(32, -1))
    assert float(s[-1] / s[0]) < 1e-2  # at least two decades in the out-channel mode
    assert math.isclose(float(w.square().mean()), 1.0 / (3.0 * 16 * 9), rel_tol=1e-9)


def test_auto_mode_uses_flop_model_and_matches():
    torch.manual_seed(0)
    big = TuckerConv2d(64, 64, 3, padding=1, rank=(4, 4, 3, 3), dtype=D64)
    full = TuckerConv2d(64, 64, 3, padding=1, dtype=D64)
    x = torch.randn(1, 64, 8, 8, dtype=D64)
    assert big._choose(x) == "factorized"
    assert full._choose(x) == "dense"
    dense, fact = big.flops((64, 8, 8))
    assert dense == 64 * 64 * 9 * 64
    assert fact == 64 * 4 * 100 + 4 * 4 * 9 * 64 + 64 * 4 * 64
    big.forward_mode = "dense"
    yd = big(x)
    big.forward_mode = "auto"
    torch.testing.assert_close(big(x), yd)


def test_set_tucker_keeps_parameters_and_reallocates():
    torch.manual_seed(0)
    layer = TuckerConv2d(8, 16, 3, dtype=D64)
    ids = [id(layer.core)] + [id(f) for f in layer.factors]
    before = layer.parameter_bytes()
    t = hosvd(layer.weight_full().detach(), rank=(2, 2, 2, 2))
    layer.set_tucker(t)
    assert [id(layer.core)] + [id(f) for f in layer.factors] == ids
    assert layer.ranks == (2, 2, 2, 2)
    after = layer.parameter_bytes()
    assert after < before / 10
    torch.testing.assert_close(layer.weight_full(), t.full())
    with pytest.raises(ValueError, match="shape"):
        layer.set_tucker(hosvd(torch.randn(3, 3, 3, 3, dtype=D64), rank=1))


def test_state_dict_across_rank_changes():
    torch.manual_seed(0)
    a = TuckerConv2d(4, 6, 3, padding=1, rank=(5, 3, 3, 3), dtype=D64)
    a.set_tucker(hosvd(a.weight_full().detach(), rank=(2, 1, 2, 3)))
    b = TuckerConv2d(4, 6, 3, padding=1, rank=2, dtype=D64)
    b.load_state_dict(a.state_dict())
    assert b.ranks == (2, 1, 2, 3)
    x = torch.randn(2, 4, 5, 5, dtype=D64)
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    b(x).sum().backward()  # training still works after the resize
    assert b.core.grad.shape == (2, 1, 2, 3)
    bad = a.state_dict()
    bad["factors.0"] = torch.randn(6, 4, dtype=D64)
    with pytest.raises(RuntimeError, match="factors.0"):
        b.load_state_dict(bad)


def test_resize_with_live_old_graph():
    """Ranks change while the previous loss (graph) is still referenced: backward works."""
    layer = LowRankLinear(6, 5, rank=4, forward_mode="factorized", dtype=D64)
    x = torch.randn(3, 6, dtype=D64)
    loss = layer(x).sum()
    loss.backward()
    layer.set_tucker(hosvd(layer.weight_full().detach(), rank=(2, 2)))
    loss = layer(x).sum()  # the old `loss` was alive during this forward
    loss.backward()
    assert layer.factors[1].grad.shape == (6, 2)


def test_deepcopy_and_pickle():
    torch.manual_seed(0)
    layer = TuckerConv2d(3, 4, 3, rank=2, dtype=D64)
    x = torch.randn(1, 3, 5, 5, dtype=D64)
    twin = copy.deepcopy(layer)
    torch.testing.assert_close(twin(x), layer(x))
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    torch.testing.assert_close(loaded(x), layer(x))
    assert "ranks=(2, 2, 2, 2)" in repr(layer)


def test_tucker_view_is_orthonormal_tucker_tensor():
    layer = TuckerConv3d(2, 4, (3, 2, 2), rank=2, dtype=D64)
    t = layer.tucker()
    assert isinstance(t, TuckerTensor) and t.shape == layer.kernel_shape == (4, 2, 3, 2, 2)
    check_orthonormal(t.factors)
    torch.testing.assert_close(t.full(), layer.weight_full().detach())


@pytest.mark.parametrize("set_to_none", [True, False])
def test_grad_full_follows_zeroing_of_core_grad(set_to_none):
    """model.zero_grad() (not only TDLRT.zero_grad) resets the captured kernel gradient;
    gradient accumulation over two backward passes accumulates it like .grad."""
    torch.manual_seed(0)
    layer = TuckerConv2d(3, 4, 3, padding=1, rank=2, dtype=D64)
    x1, x2 = torch.randn(2, 3, 6, 6, dtype=D64), torch.randn(2, 3, 6, 6, dtype=D64)
    layer(x1).square().sum().backward()
    g1 = layer.grad_full.clone()
    layer.zero_grad(set_to_none=set_to_none)
    layer(x2).square().sum().backward()
    g2 = layer.grad_full.clone()
    w = layer.weight_full().detach().requires_grad_(True)
    F.conv2d(x2, w, layer.bias.detach(), 1, 1).square().sum().backward()
    torch.testing.assert_close(g2, w.grad)  # not g1 + g2
    layer(x1).square().sum().backward()  # accumulation without zeroing
    torch.testing.assert_close(layer.grad_full, g1 + g2)


@pytest.mark.parametrize("fold_in, fold_out", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("groups", [1, 2])
def test_every_factorized_variant_equals_dense(monkeypatch, fold_in, fold_out, groups):
    torch.manual_seed(0)
    layer = TuckerConv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=groups,
                         rank=(2, 2, 2, 3), forward_mode="factorized", dtype=D64)
    x = torch.randn(2, 4, 7, 7, dtype=D64)
    dense, fact, _, _ = layer._plan(x.shape[1:])
    monkeypatch.setattr(layer, "_plan", lambda shape: (dense, fact, fold_in, fold_out))
    torch.testing.assert_close(layer(x), torch_reference(layer, x), rtol=1e-12, atol=1e-12)
