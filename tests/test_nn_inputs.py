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
