"""Shared machinery of the vanilla baselines: the base class of the factorized convolutions and
its helpers (see :mod:`tucker_dlra.nn.vanilla`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tucker_dlra import TuckerTensor, pad_core

from .._conv import (
    conv_macs,
    conv_options_repr,
    out_spatial,
    pointwise,
)

_out_spatial = out_spatial

#: ``tuckerize(kind=...)`` names of the vanilla baselines.
VANILLA_KINDS = ("vanilla-tucker", "vanilla-cp", "vanilla-matrix")

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_FORWARD_MODES = ("auto", "dense", "factorized")


# ---------------------------------------------------------------------------- helpers
def _pad_tucker(t: TuckerTensor, ranks: Sequence[int]) -> TuckerTensor:
    r"""``t`` with ranks raised to ``ranks``: zero core slices and orthonormal complement columns
    (deterministic), so the tensor is unchanged.  Cost :math:`O(\sum_i n_i r_i^2)`."""
    g = torch.Generator(device="cpu").manual_seed(0)
    factors = []
    for u, r in zip(t.factors, ranks, strict=True):
        k = int(r) - int(u.shape[1])
        if k > 0:
            x = torch.randn(int(u.shape[0]), k, generator=g, dtype=u.dtype).to(u.device)
            x = x - u @ (u.T @ x)
            u = torch.cat([u, torch.linalg.qr(x)[0]], dim=1)
        factors.append(u)
    core = pad_core(t.core, [(0, int(r) - int(c)) for r, c in zip(ranks, t.core.shape,
                                                                  strict=True)])
    return TuckerTensor(core, factors, orthonormal=True)


def _orthonormal_init_(u: torch.Tensor) -> None:
    """Fill ``u`` (n x r, n >= r) in place with random orthonormal columns (QR of a Gaussian)."""
    q, _ = torch.linalg.qr(torch.randn(u.shape, dtype=u.dtype, device=u.device))
    u.copy_(q)


def _check_forward_mode(mode: str) -> str:
    if mode not in _FORWARD_MODES:
        raise ValueError(f"forward_mode must be one of {_FORWARD_MODES}; got {mode!r}")
    return mode


# ---------------------------------------------------------------------------- conv base
class _VanillaConv(nn.Module):
    """Common configuration, forward logic and export of the vanilla factorized convs.

    The convolution options are validated and normalised by building the equivalent
    ``nn.ConvNd`` on the ``meta`` device (no memory), so they mean exactly what they
    mean for PyTorch's layers.
    """

    factorization = "none"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", dim: int = 2, forward_mode: str = "auto",
                 device: Any = None, dtype: Any = None):
        super().__init__()
        if dim not in _CONV:
            raise ValueError(f"dim must be 1, 2 or 3; got {dim!r}")
        ref = _CONV[dim](in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=False,
                         padding_mode=padding_mode, device="meta")
        self.dim = dim
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = tuple(ref.kernel_size)
        self.stride, self.padding = tuple(ref.stride), ref.padding
        self.dilation, self.groups = tuple(ref.dilation), groups
        self.padding_mode = padding_mode
        self._reversed_padding_repeated_twice = list(ref._reversed_padding_repeated_twice)
        self.kernel_shape = (out_channels, in_channels // groups) + self.kernel_size
        self.forward_mode = _check_forward_mode(forward_mode)
        factory = {"device": device, "dtype": dtype}
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None

    # -- to be provided by subclasses
    def weight_full(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _factorized(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _macs(self, in_spatial: Sequence[int], out_sp: Sequence[int]) -> int:  # pragma: no cover
        raise NotImplementedError

    # -- shared machinery
    def _reset_bias(self) -> None:
        if self.bias is not None:
            fan_in = math.prod(self.kernel_shape[1:])
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            with torch.no_grad():
                self.bias.uniform_(-bound, bound)

    def _target_std(self) -> float:
        """Std of the kernel entries of PyTorch's default conv init (kaiming_uniform, a=sqrt 5)."""
        fan_in = math.prod(self.kernel_shape[1:])
        return 1.0 / math.sqrt(3.0 * fan_in)

    def _spatial_conv(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None,
                      groups: int) -> torch.Tensor:
        conv = _CONV_FN[self.dim]
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv(x, w, bias, self.stride, 0, self.dilation, groups)
        return conv(x, w, bias, self.stride, self.padding, self.dilation, groups)

    def _pointwise(self, x: torch.Tensor, w: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
        """1x1 convolution with the matrix ``w`` of shape (c_out, c_in), as a batched GEMM.

        ``w @ x.reshape(N, c_in, L)`` (bias fused by ``baddbmm``): on CPU this is several
        times faster than ``F.convNd`` with a 1x1 kernel, whose oneDNN path is slow for few
        channels (``validation/bench_factorized_conv.py``).
        """
        return pointwise(x, w, bias)

    def path(self, in_spatial: Sequence[int]) -> str:
        """``"dense"`` or ``"factorized"``: the path ``forward`` takes for this input size."""
        if self.forward_mode != "auto":
            return self.forward_mode
        if self.groups != 1:
            return "dense"
        out_sp = _out_spatial(in_spatial, self.kernel_size, self.stride, self.padding,
                             self.dilation)
        dense = conv_macs("dense", self.kernel_shape, None, in_spatial, out_sp)
        return "factorized" if self._macs(in_spatial, out_sp) < dense else "dense"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolution with the factorized kernel (result equals ``F.convNd`` with
        :meth:`weight_full`); path chosen by :meth:`path`.  Unbatched inputs are accepted
        as by ``nn.ConvNd``."""
        mode = self.path(tuple(x.shape[-self.dim:]))
        if mode == "factorized":
            if self.groups != 1:
                raise ValueError("forward_mode='factorized' needs groups=1; use 'dense' or 'auto'")
            if x.dim() == self.dim + 1:
                return self._factorized(x.unsqueeze(0)).squeeze(0)
            return self._factorized(x)
        return self._spatial_conv(x, self.weight_full(), self.bias, self.groups)

    def to_dense(self) -> nn.Module:
        """Plain ``nn.ConvNd`` with the rebuilt kernel (same function, same device/dtype)."""
        w = self.weight_full().detach()
        conv = _CONV[self.dim](self.in_channels, self.out_channels, self.kernel_size,
                               stride=self.stride, padding=self.padding, dilation=self.dilation,
                               groups=self.groups, bias=self.bias is not None,
                               padding_mode=self.padding_mode, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            conv.weight.copy_(w)
            if self.bias is not None:
                conv.bias.copy_(self.bias.detach())
        conv.train(self.training)
        return conv

    def num_parameters(self) -> int:
        """Numbers stored for the kernel (core/factors; the bias is not counted)."""
        return sum(p.numel() for n, p in self.named_parameters() if n != "bias")

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, {self.factorization}_rank={self.ranks}"
                + conv_options_repr(self, self.dim))

    @classmethod
    def _config_from(cls, conv: nn.Module) -> dict:
        if not isinstance(conv, tuple(_CONV.values())):
            raise TypeError(f"conv must be an nn.Conv1d/2d/3d; got {type(conv).__name__}")
        return dict(in_channels=conv.in_channels, out_channels=conv.out_channels,
                    kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                    padding_mode=conv.padding_mode, dim=len(conv.kernel_size),
                    device=conv.weight.device, dtype=conv.weight.dtype)

    def _copy_bias(self, conv: nn.Module) -> None:
        if self.bias is not None:
            with torch.no_grad():
                self.bias.copy_(conv.bias.detach())
