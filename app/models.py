"""The networks of the paper's experiments (Section 4, Appendix A), with dense layers.

Every model is built from plain ``nn.Conv2d`` / ``nn.Linear`` layers, so
:func:`tucker_dlra.nn.tuckerize` converts it to Tucker convolutions (and low-rank linear
layers) and :func:`tucker_dlra.nn.to_dense` converts it back; the number of input channels, the
image size and the number of classes adapt to the dataset.

- :class:`LeNet5`: conv 20 (5x5) - pool - conv 50 (5x5) - pool - fc 500 - fc 10, ReLU (the
  LeNet5 of the DLRT/TDLRT MNIST experiments, paper Tables 3-4 and Figure 2).
- :func:`alexnet`: the CIFAR-10 AlexNet of the DLRT/TDLRT papers, five 3x3 convolutions with
  64-192-384-256-256 channels (the Tucker ranks of paper Table 2), batch normalisation, and a
  4096-4096 classifier with dropout.
- :func:`vgg16`: the CIFAR-10 VGG16 (13 3x3 convolutions with batch normalisation, five max-pools)
  with a 512-512 classifier.
- :func:`resnet18`: the CIFAR ResNet-18 (3x3 stem without max-pool, four stages of two basic
  blocks).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["MODELS", "LeNet5", "alexnet", "build_model", "resnet18", "vgg16"]


def _flat_features(features: nn.Module, shape: tuple[int, int, int]) -> int:
    """Number of features after ``features`` for one input of ``shape`` (a dry run)."""
    with torch.no_grad():
        out = features(torch.zeros(1, *shape))
    n = int(out.numel())
    if n == 0:
        raise ValueError(f"input shape {shape} is too small for this network")
    return n


class LeNet5(nn.Module):
    """LeNet5 of the paper's MNIST experiments: conv 20, conv 50 (5x5), fc 500, fc 10.

    Parameters
    ----------
    in_channels, num_classes : int
    image_size : (height, width)
        28x28 for MNIST (800 features after the convolutions), 32x32 for CIFAR-10 (1250).

    Notes
    -----
    Layer names ``conv1``, ``conv2``, ``fc1``, ``fc2``.  Dense parameters: 431,080 for MNIST,
    of which 25,570 in the convolutions (25,500 kernel entries).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 image_size: tuple[int, int] = (28, 28)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        feats = _flat_features(self._features, (in_channels, *image_size))
        self.fc1 = nn.Linear(feats, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        return self.pool(self.act(self.conv2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self._features(x), 1)
        return self.fc2(self.act(self.fc1(x)))


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class _Classifier(nn.Module):
    def __init__(self, features: nn.Module, classifier: nn.Module):
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def alexnet(in_channels: int = 3, num_classes: int = 10,
            image_size: tuple[int, int] = (32, 32)) -> nn.Module:
    """CIFAR-10 AlexNet of the DLRT/TDLRT papers (paper Table 2 lists its kernel shapes).

    Convolutions (3x3, padding 1): 64 (stride 2), 192, 384, 256, 256, each followed by batch
    normalisation and ReLU; max-pools after the first, second and fifth; classifier
    dropout - 4096 - dropout - 4096 - classes.  Max-pools use ``ceil_mode`` so that 28x28 inputs
    also work.  About 23 M dense parameters on CIFAR-10, 2.3 M of them in the convolutions.
    """
    pool = lambda: nn.MaxPool2d(2, ceil_mode=True)
    features = nn.Sequential(
        *_conv_bn(in_channels, 64, stride=2), pool(),
        *_conv_bn(64, 192), pool(),
        *_conv_bn(192, 384),
        *_conv_bn(384, 256),
        *_conv_bn(256, 256), pool(),
    )
    feats = _flat_features(features.eval(), (in_channels, *image_size))
    classifier = nn.Sequential(
        nn.Dropout(), nn.Linear(feats, 4096), nn.ReLU(inplace=True),
        nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )
    return _Classifier(features.train(), classifier)


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16(in_channels: int = 3, num_classes: int = 10,
          image_size: tuple[int, int] = (32, 32)) -> nn.Module:
    """CIFAR-10 VGG16: 13 3x3 convolutions with batch normalisation and ReLU, five max-pools,
    classifier 512 - ReLU - classes.  About 15 M dense parameters, 14.7 M in the convolutions.
    """
    layers: list[nn.Module] = []
    cin = in_channels
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        else:
            layers += _conv_bn(cin, int(v))
            cin = int(v)
    features = nn.Sequential(*layers)
    feats = _flat_features(features.eval(), (in_channels, *image_size))
    classifier = nn.Sequential(nn.Linear(feats, 512), nn.ReLU(inplace=True),
                               nn.Linear(512, num_classes))
    return _Classifier(features.train(), classifier)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN layers and an identity (or 1x1 conv) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stem (64), stages 64-128-256-512 of two basic blocks, global average
    pooling, linear classifier.  About 11.2 M dense parameters."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        blocks: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


def resnet18(in_channels: int = 3, num_classes: int = 10,
             image_size: tuple[int, int] = (32, 32)) -> nn.Module:
    """CIFAR ResNet-18 (see :class:`ResNet18`); any image size of at least 8x8 works."""
    if min(image_size) < 8:
        raise ValueError(f"image_size must be at least 8x8 for resnet18; got {image_size}")
    return ResNet18(in_channels, num_classes)


def _lenet5(in_channels: int = 1, num_classes: int = 10,
            image_size: tuple[int, int] = (28, 28)) -> nn.Module:
    return LeNet5(in_channels, num_classes, image_size)


#: Model constructors by name; each takes ``(in_channels, num_classes, image_size)``.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": _lenet5,
    "alexnet": alexnet,
    "vgg16": vgg16,
    "resnet18": resnet18,
}


def build_model(name: str, in_channels: int = 1, num_classes: int = 10,
                image_size: tuple[int, int] = (28, 28)) -> nn.Module:
    """Build a dense model of :data:`MODELS` for images of shape ``(in_channels, *image_size)``.

    Raises
    ------
    ValueError
        For an unknown ``name`` or non-positive sizes.
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}; got {name!r}")
    if in_channels < 1 or num_classes < 2 or min(image_size) < 1:
        raise ValueError(f"need in_channels >= 1, num_classes >= 2 and a positive image size; got "
                         f"{in_channels}, {num_classes}, {image_size}")
    return MODELS[name](in_channels=in_channels, num_classes=num_classes,
                        image_size=tuple(image_size))
