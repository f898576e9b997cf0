"""The paper's vanilla baselines (Section 4): fixed-rank Tucker, CP and matrix layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from tucker_dlra.nn.vanilla import (
    VanillaCPConv,
    VanillaLowRankLinear,
    VanillaMatrixConv,
    VanillaTuckerConv,
    conv_macs,
    pointwise,
    resolve_ranks,
)

from tucker_dlra import hosvd

CONV_CLASSES = (VanillaTuckerConv, VanillaCPConv, VanillaMatrixConv)
DT = torch.float64


@st.composite
def conv_configs(draw):
    dim = draw(st.sampled_from([1, 2, 2, 3]))
    cin = draw(st.integers(1, 5))
    cout = draw(st.integers(1, 5))
    k = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 2))
    dilation = draw(st.integers(1, 2))
    pad = draw(st.sampled_from([0, 1, 2, "same"])) if stride == 1 else draw(st.integers(0, 2))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    bias = draw(st.booleans())
    size = draw(st.integers(dilation * (k - 1) + 3, 8))
    cls = draw(st.sampled_from(CONV_CLASSES))
    frac = draw(st.sampled_from([None, 0.5, 1]))
    return dict(dim=dim, cin=cin, cout=cout, k=k, stride=stride, dilation=dilation, pad=pad,
                mode=mode, bias=bias, size=size, cls=cls, frac=frac)


@given(conv_configs())
def test_dense_and_factorized_paths_equal_the_rebuilt_kernel_conv(cfg):
    """Both forward paths equal F.convNd with the rebuilt kernel (any conv options)."""
    torch.manual_seed(0)
    layer = cfg["cls"](cfg["cin"], cfg["cout"], cfg["k"], stride=cfg["stride"],
                       padding=cfg["pad"], dilation=cfg["dilation"], bias=cfg["bias"],
                       padding_mode=cfg["mode"], rank=cfg["frac"], dim=cfg["dim"], dtype=DT)
    x = torch.randn((2, cfg["cin"]) + (cfg["size"],) * cfg["dim"], dtype=DT)
    ref = nn.modules.conv.__dict__[f"Conv{cfg['dim']}d"](
        cfg["cin"], cfg["cout"], cfg["k"], stride=cfg["stride"], padding=cfg["pad"],
        dilation=cfg["dilation"], bias=cfg["bias"], padding_mode=cfg["mode"], dtype=DT)
    with torch.no_grad():
        ref.weight.copy_(layer.weight_full())
        if cfg["bias"]:
            ref.bias.copy_(layer.bias)
    expected = ref(x)
    for mode in ("dense", "factorized", "auto"):
        layer.forward_mode = mode
        torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer.to_dense()(x), expected, rtol=1e-10, atol=1e-10)


def test_grouped_conv_dense_path_and_factorized_refusal():
    torch.manual_seed(1)
    for cls in CONV_CLASSES:
        layer = cls(4, 6, 3, padding=1, groups=2, dtype=DT)
        assert layer.kernel_shape == (6, 2, 3, 3)
        x = torch.randn(2, 4, 7, 7, dtype=DT)
        expected = F.conv2d(x, layer.weight_full(), layer.bias, padding=1, groups=2)
        torch.testing.assert_close(layer(x), expected)
        layer.forward_mode = "factorized"
        with pytest.raises(ValueError, match="groups=1"):
            layer(x)


def test_full_rank_tucker_and_matrix_reproduce_the_conv():
    torch.manual_seed(2)
    conv = nn.Conv2d(5, 7, 3, stride=2, padding=1, dtype=DT)
    x = torch.randn(3, 5, 9, 9, dtype=DT)
    for cls in (VanillaTuckerConv, VanillaMatrixConv):
        layer = cls.from_conv(conv)
        torch.testing.assert_close(layer.weight_full(), conv.weight, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-10, atol=1e-10)


def test_tucker_from_conv_is_the_hosvd_and_obeys_the_bound():
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 8, 3, dtype=DT)
    w = conv.weight.detach()
    layer = VanillaTuckerConv.from_conv(conv, rank=(4, 3, 2, 2))
    ref = hosvd(w, rank=(4, 3, 2, 2)).full()
    torch.testing.assert_close(layer.weight_full(), ref)
    for rtol in (0.05, 0.3, 0.6):
        layer = VanillaTuckerConv.from_conv(conv, rtol=rtol)
        err = torch.linalg.vector_norm(layer.weight_full() - w)
        assert err <= rtol * torch.linalg.vector_norm(w) * (1 + 1e-12)
        assert layer.ranks == hosvd(w, rtol=rtol).rank  # smallest ranks of the HOSVD rule
    assert VanillaTuckerConv.from_conv(conv, rtol=0.6).ranks < (8, 6, 3, 3)


def test_matrix_from_conv_is_the_best_rank_r_approximation():
    torch.manual_seed(4)
    conv = nn.Conv2d(6, 9, 3, dtype=DT)
    w = conv.weight.detach().numpy().reshape(9, -1)
    s = np.linalg.svd(w, compute_uv=False)
    for r in (1, 3, 7):
        layer = VanillaMatrixConv.from_conv(conv, rank=r)
        err = np.linalg.norm(layer.weight_full().detach().numpy().reshape(9, -1) - w)
        assert err == pytest.approx(np.sqrt(np.sum(s[r:] ** 2)), rel=1e-10, abs=1e-12)
    layer = VanillaMatrixConv.from_conv(conv, rtol=0.5)
    tails = [np.sqrt(np.sum(s[r:] ** 2)) for r in range(len(s) + 1)]
    expected = min(r for r in range(1, len(s) + 1) if tails[r] <= 0.5 * np.linalg.norm(s))
    assert layer.ranks == expected


def test_cp_from_conv_exact_for_rank_one_and_least_squares_otherwise():
    rng = np.random.default_rng(5)
    vecs = [rng.standard_normal(n) for n in (4, 3, 3, 3)]
    w = torch.from_numpy(np.einsum("a,b,c,d->abcd", *vecs))
    conv = nn.Conv2d(3, 4, 3, bias=False, dtype=DT)
    with torch.no_grad():
        conv.weight.copy_(w)
    layer = VanillaCPConv.from_conv(conv, rank=1)
    torch.testing.assert_close(layer.weight_full(), w, rtol=1e-10, atol=1e-12)
    # generic kernel: the weights lambda solve a least-squares problem, so scaling them
    # (another feasible point) never reduces the error, and the error is below ||W||
    conv2 = nn.Conv2d(5, 6, 3, dtype=DT)
    lay = VanillaCPConv.from_conv(conv2, rank=6)
    w2 = conv2.weight.detach()
    base = torch.linalg.vector_norm(lay.weight_full() - w2)
    assert base < torch.linalg.vector_norm(w2)
    for scale in (0.9, 1.1):
        with torch.no_grad():
            lay.factors[0].mul_(scale)
        assert torch.linalg.vector_norm(lay.weight_full() - w2) >= base - 1e-12
        with torch.no_grad():
            lay.factors[0].div_(scale)


def test_parameter_counts_and_ranks():
    t = VanillaTuckerConv(20, 50, 5, rank=0.1)
    assert t.ranks == (5, 2, 1, 1)  # ceil(0.1 n_i)
    assert t.num_parameters() == 5 * 2 + 50 * 5 + 20 * 2 + 5 + 5
    cp = VanillaCPConv(20, 50, 5, rank=0.1)
    assert cp.ranks == 5  # ceil(0.1 * max(50, 20))
    assert cp.num_parameters() == 5 * (50 + 20 + 5 + 5)
    mat = VanillaMatrixConv(20, 50, 5, rank=0.1)
    assert mat.ranks == 5  # ceil(0.1 * min(50, 500))
    assert mat.num_parameters() == 5 * (50 + 500)
    assert VanillaTuckerConv(3, 16, 3, rank=8).ranks == (8, 3, 3, 3)  # an int is clipped
    assert VanillaCPConv(3, 4, 3, rank=20).ranks == 20  # a CP rank may exceed the modes
    lin = VanillaLowRankLinear(30, 10, rank=0.25)
    assert lin.ranks == 3 and lin.num_parameters() == 3 * 40
    assert resolve_ranks(None, (4, 5)) == (4, 5)


@pytest.mark.parametrize("cls", CONV_CLASSES)
def test_default_init_matches_pytorch_conv_variance(cls):
    torch.manual_seed(6)
    layer = cls(64, 64, 3, dtype=DT)
    std = float(layer.weight_full().detach().std())
    target = 1.0 / math.sqrt(3 * 64 * 9)  # kaiming_uniform(a=sqrt 5) of nn.Conv2d
    assert 0.75 * target < std < 1.25 * target


def test_linear_forward_from_linear_and_rtol():
    torch.manual_seed(7)
    lin = nn.Linear(12, 9, dtype=DT)
    x = torch.randn(4, 3, 12, dtype=DT)
    full = VanillaLowRankLinear.from_linear(lin)
    torch.testing.assert_close(full(x), lin(x))
    torch.testing.assert_close(full.to_dense()(x), lin(x))
    low = VanillaLowRankLinear.from_linear(lin, rtol=0.4)
    w = lin.weight.detach()
    assert torch.linalg.vector_norm(low.weight_full() - w) <= 0.4 * torch.linalg.vector_norm(w)
    assert low.ranks < 9
    torch.testing.assert_close(low(x), F.linear(x, low.weight_full(), lin.bias))


@pytest.mark.parametrize("cls", CONV_CLASSES + (VanillaLowRankLinear,))
def test_plain_sgd_on_the_factors_reduces_the_loss(cls):
    """Vanilla training = torch.optim.SGD on every factor; all factors get gradients."""
    torch.manual_seed(8)
    if cls is VanillaLowRankLinear:
        layer, target = cls(10, 6, rank=3), nn.Linear(10, 6)
        x = torch.randn(64, 10)
    else:
        layer, target = cls(3, 6, 3, padding=1, rank=0.5), nn.Conv2d(3, 6, 3, padding=1)
        x = torch.randn(16, 3, 8, 8)
    y = target(x).detach()
    opt = torch.optim.SGD(layer.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.mse_loss(layer(x), y)
        loss.backward()
        losses.append(float(loss.detach()))
        if len(losses) == 1:
            for name, p in layer.named_parameters():
                assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
        opt.step()
    assert losses[-1] < 0.5 * losses[0]


def test_conv_macs_formulas():
    # LeNet5 conv2 on a 12x12 input: 8x8 outputs
    assert conv_macs("dense", (50, 20, 5, 5), None, (12, 12), (8, 8)) == 64 * 50 * 20 * 25
    assert conv_macs("tucker", (50, 20, 5, 5), (8, 6, 5, 4), (12, 12), (8, 8)) == (
        144 * 20 * 6 + 64 * 8 * 6 * 25 + 64 * 8 * 50)
    assert conv_macs("cp", (50, 20, 5, 5), 7, (12, 12), (8, 8)) == (
        144 * 20 * 7 + 64 * 7 * 25 + 64 * 7 * 50)
    assert conv_macs("matrix", (50, 20, 5, 5), 7, (12, 12), (8, 8)) == 64 * 7 * (500 + 50)
    assert conv_macs("tucker", (10, 30), (3, 4), (), ()) == 30 * 4 + 4 * 3 + 3 * 10
    with pytest.raises(ValueError, match="kind"):
        conv_macs("foo", (1, 1), None, (), ())


def test_bad_input_is_refused_with_clear_errors():
    with pytest.raises(ValueError, match="rank"):
        VanillaTuckerConv(3, 4, 3, rank=0)
    with pytest.raises(ValueError, match=r"rank\[1\]"):
        VanillaTuckerConv(3, 4, 3, rank=(2, 5, 3, 3))
    with pytest.raises(ValueError, match="kappa"):
        VanillaTuckerConv(3, 4, 3, rank=1.5)
    with pytest.raises(ValueError, match="one entry per mode"):
        VanillaTuckerConv(3, 4, 3, rank=(2, 2))
    with pytest.raises(TypeError, match="CP"):
        VanillaCPConv(3, 4, 3, rank=(2, 2, 2, 2))
    with pytest.raises(TypeError, match="matrix"):
        VanillaMatrixConv(3, 4, 3, rank="2")
    with pytest.raises(ValueError, match="forward_mode"):
        VanillaTuckerConv(3, 4, 3, forward_mode="fast")
    with pytest.raises(ValueError, match="dim"):
        VanillaTuckerConv(3, 4, 3, dim=4)
    with pytest.raises(ValueError, match="groups"):
        VanillaMatrixConv(3, 4, 3, groups=2)  # nn.Conv2d's own check
    with pytest.raises(TypeError, match="nn.Conv"):
        VanillaTuckerConv.from_conv(nn.Linear(3, 4))
    with pytest.raises(TypeError, match="nn.Linear"):
        VanillaLowRankLinear.from_linear(nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="rtol"):
        VanillaLowRankLinear.from_linear(nn.Linear(3, 4), rtol=float("nan"))
    with pytest.raises(ValueError, match="in_features"):
        VanillaLowRankLinear(0, 3)


def test_pointwise_gemm_equals_1x1_conv_and_unbatched_input():
    torch.manual_seed(9)
    for dim in (1, 2, 3):
        x = torch.randn((3, 5) + (4,) * dim, dtype=DT)
        w, b = torch.randn(7, 5, dtype=DT), torch.randn(7, dtype=DT)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dim]
        ref = conv(x, w.reshape((7, 5) + (1,) * dim), b)
        torch.testing.assert_close(pointwise(x, w, b), ref)
        torch.testing.assert_close(pointwise(x, w), ref - b.reshape((7,) + (1,) * dim))
    layer = VanillaTuckerConv(5, 7, 3, padding=1, rank=3, forward_mode="factorized", dtype=DT)
    x = torch.randn(5, 6, 6, dtype=DT)
    torch.testing.assert_close(layer(x), layer(x.unsqueeze(0)).squeeze(0))
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight_full(), layer.bias, padding=1))
