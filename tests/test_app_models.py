"""The paper's networks: shapes of the published layers, adaptation to the dataset, and
conversion by ``tuckerize`` (lossless at full rank) and back by ``to_dense``."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from tucker_dlra.app import MODELS, build_model  # noqa: E402
from tucker_dlra.nn import to_dense, tuckerize  # noqa: E402

CONVERT = {
    "vgg16": ["features.0", "features.3", "features.7"],
    "resnet18": ["conv1", "layers.2.conv1", "layers.2.shortcut.0"],  # stride-2 block + 1x1
}


def _kernels(model):
    return [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_published_layer_shapes():
    lenet = build_model("lenet5", 1, 10, (28, 28))
    assert _kernels(lenet) == [(20, 1, 5, 5), (50, 20, 5, 5)]
    assert (lenet.fc1.in_features, lenet.fc1.out_features, lenet.fc2.out_features) == (800, 500, 10)
    # paper Table 2: the AlexNet kernels of the DLRT/TDLRT CIFAR-10 experiments
    alex = build_model("alexnet", 3, 10, (32, 32))
    assert _kernels(alex) == [(64, 3, 3, 3), (192, 64, 3, 3), (384, 192, 3, 3),
                              (256, 384, 3, 3), (256, 256, 3, 3)]
    vgg = build_model("vgg16", 3, 10, (32, 32))
    assert [k[0] for k in _kernels(vgg)] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512,
                                             512, 512, 512]
    res = build_model("resnet18", 3, 10, (32, 32))
    assert len([k for k in _kernels(res) if k[2:] == (3, 3)]) == 17
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("lenet7")


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_adapts_to_dataset_and_converts_losslessly(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape[0], 7, shape[1:]).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        ref = model(x)
        assert ref.shape == (2, 7)
        # full rank: the same function.  The big networks convert a few layers of each kind
        # (HOSVDs of 512x512x3x3 kernels would dominate the test time)
        include = CONVERT.get(name, [nn.Conv2d])
        tucker = tuckerize(model, include=include).eval()
        n_conv = sum(isinstance(m, nn.Conv2d) for n, m in model.named_modules()
                     if include == [nn.Conv2d] or n in include)
        assert sum(hasattr(m, "core") for m in tucker.modules()) == n_conv
        out = tucker(x)
        dense = to_dense(tucker).eval()
        back = dense(x)
    scale = float(ref.abs().max())
    assert float((out - ref).abs().max()) <= 1e-4 * scale
    assert float((back - ref).abs().max()) <= 1e-4 * scale
    assert all(not hasattr(m, "core") for m in dense.modules())
