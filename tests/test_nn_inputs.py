"""Bad input to the PyTorch adapter: clear errors naming the layer's expectation."""

from __future__ import annotations

import pytest
import torch
from tucker_dlra.nn import TDLRT, LowRankLinear, TuckerConv1d, TuckerConv2d, compression_report


@pytest.mark.parametrize("cls, shape", [(TuckerConv2d, (2, 5, 6, 6)), (TuckerConv2d, (5, 6, 6)),
                                        (TuckerConv1d, (2, 5, 9))])
def test_wrong_input_channels_name_in_channels(cls, shape):
    layer = cls(3, 4, 3)
    with pytest.raises(ValueError, match=rf"{cls.__name__} expects in_channels = 3 input "
                       r"channels.*got 5"):
        layer(torch.randn(shape))


def test_wrong_input_dtype_names_the_layer_dtype():
    conv, lin = TuckerConv2d(3, 4, 3), LowRankLinear(3, 4)
    with pytest.raises(TypeError, match=r"TuckerConv2d has dtype torch.float32; got an input of "
                       r"dtype torch.float64"):
        conv(torch.randn(1, 3, 5, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"LowRankLinear has dtype torch.float32"):
        lin(torch.randn(2, 3, dtype=torch.float64))


def test_autocast_inputs_are_left_to_autocast():
    net = torch.nn.Sequential(TuckerConv2d(3, 4, 3), TuckerConv2d(4, 4, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(torch.randn(1, 3, 8, 8))
    assert y.shape == (1, 4, 4, 4)


def test_compression_report_with_a_wrong_input_shape():
    net = torch.nn.Sequential(TuckerConv2d(3, 4, 3), torch.nn.Flatten(), LowRankLinear(16, 2))
    assert compression_report(net, input_shape=(3, 4, 4)).layers
    with pytest.raises(ValueError, match=r"input_shape \(2, 4, 4\) does not fit the model.*"
                       r"in_channels = 3"):
        compression_report(net, input_shape=(2, 4, 4))
    with pytest.raises(ValueError, match=r"input_shape \(3, 5, 5\) does not fit the model"):
        compression_report(net, input_shape=(3, 5, 5))


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_tdlrt_tau_must_be_below_one(tau):
    """tau is a relative tolerance in [0, 1), as the command line says."""
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\)"):
        TDLRT(TuckerConv2d(3, 4, 3).parameters(), lr=0.1, tau=tau)


def test_vanilla_tucker_from_conv_with_a_core_larger_than_a_tucker_rank():
    """kappa = 0.5 of a (20, 1, 5, 5) kernel asks for ranks (10, 1, 3, 3), not a multilinear
    rank (10 > 1 * 3 * 3): the layer keeps that core, holding the HOSVD at (9, 1, 3, 3)."""
    from tucker_dlra.nn import VanillaTuckerConv

    from tucker_dlra import hosvd

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 20, 5, dtype=torch.float64)
    layer = VanillaTuckerConv.from_conv(conv, rank=0.5)
    assert tuple(layer.core.shape) == (10, 1, 3, 3)
    want = hosvd(conv.weight.detach(), rank=(9, 1, 3, 3)).full()
    x = torch.randn(2, 1, 9, 9, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(x, want, conv.bias)
    torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-10)
