"""The matrix baselines :class:`VanillaMatrixConv` and :class:`VanillaLowRankLinear` (see
:mod:`tucker_dlra.nn.vanilla`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tucker_dlra import unfold

from .._conv import (
    conv_macs,
    resolve_ranks,
)
from ._common import (
    _orthonormal_init_,
    _VanillaConv,
)


class VanillaMatrixConv(_VanillaConv):
    r"""Conv whose matricized kernel is factorized: :math:`\mathrm{Mat}_0(W) = U V^\top`.

    The "Vanilla Matrix" baseline of the paper (Section 4, refs. [21, 31, 51, 22]): Eq. (2)'s
    matrix :math:`\widetilde W \in \mathbb R^{n_0 \times n_1 k}` of rank r, ``u`` of shape
    (n_0, r) and ``v`` of shape (n_1 k, r), trained by plain SGD.

    Parameters
    ----------
    rank : int or float in (0, 1]
        Matrix rank r; a fraction gives :math:`\lceil\kappa\,r_{\max}\rceil`,
        :math:`r_{\max} = \min(n_0, n_1 k)`.  Default: :math:`r_{\max}`.
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups
        As for :class:`VanillaTuckerConv`.
    bias, padding_mode, dim, forward_mode, device, dtype
        As for :class:`VanillaTuckerConv`.

    Notes
    -----
    Factorized forward: a conv with the r filters :math:`V^\top` (shape (r, n_1, k...)),
    then a 1x1 conv with U.  Storage :math:`r (n_0 + n_1 k)`.  Initialisation: random
    orthonormal U, Gaussian V scaled to PyTorch's default kernel variance.
    """

    factorization = "matrix"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", rank: Any = None, dim: int = 2,
                 forward_mode: str = "auto", device: Any = None, dtype: Any = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, dim, forward_mode, device, dtype)
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, numbers.Real)):
            raise TypeError(f"rank of a matrix layer must be an int >= 1 or a float in (0, 1]; "
                            f"got {rank!r}")
        cols = math.prod(self.kernel_shape[1:])
        (r,) = resolve_ranks(rank, [min(self.kernel_shape[0], cols)])
        factory = {"device": device, "dtype": dtype}
        self.u = nn.Parameter(torch.empty(self.kernel_shape[0], r, **factory))
        self.v = nn.Parameter(torch.empty(cols, r, **factory))
        self.reset_parameters()

    @property
    def ranks(self) -> int:
        """Matrix rank r."""
        return int(self.u.shape[1])

    def reset_parameters(self) -> None:
        """Orthonormal random U, Gaussian V with PyTorch's default kernel variance."""
        with torch.no_grad():
            _orthonormal_init_(self.u)
            std = self._target_std() * math.sqrt(self.kernel_shape[0] / self.ranks)
            self.v.normal_(0.0, std)
        self._reset_bias()

    def weight_full(self) -> torch.Tensor:
        r"""Dense kernel :math:`\mathrm{Ten}_0(U V^\top)`, differentiable."""
        return (self.u @ self.v.T).reshape(self.kernel_shape)

    def _factorized(self, x: torch.Tensor) -> torch.Tensor:
        filt = self.v.T.reshape((self.ranks,) + tuple(self.kernel_shape[1:]))
        y = self._spatial_conv(x, filt, None, 1)
        return self._pointwise(y, self.u, self.bias)

    def _macs(self, in_spatial: Sequence[int], out_sp: Sequence[int]) -> int:
        return conv_macs("matrix", self.kernel_shape, self.ranks, in_spatial, out_sp)

    @classmethod
    def from_conv(cls, conv: nn.Module, rank: Any = None, rtol: float | None = None,
                  forward_mode: str = "auto") -> VanillaMatrixConv:
        r"""Truncated SVD of :math:`\mathrm{Mat}_0(W)` (Eckart-Young best rank-r).

        ``U`` gets the left singular vectors, ``V`` the right ones times the singular
        values.  ``rtol`` (where ``rank`` is None) keeps the smallest r with
        :math:`\|W - \hat W\| \le \mathrm{rtol}\,\|W\|`.
        Cost: one SVD of an :math:`n_0 \times n_1 k` matrix.
        """
        cfg = cls._config_from(conv)
        mat = unfold(conv.weight.detach(), 0)
        if rank is None and rtol is not None:
            rank = _svd_rank(mat, rtol)
        layer = cls(**cfg, rank=rank, forward_mode=forward_mode)
        _svd_init(layer.u, layer.v, mat)
        layer._copy_bias(conv)
        layer.train(conv.training)
        return layer


def _svd_rank(mat: torch.Tensor, rtol: float) -> int:
    """Smallest r with ||mat - best rank-r|| <= rtol ||mat|| (Eckart-Young)."""
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 <= rtol < math.inf:
        raise ValueError(f"rtol must be a finite real number >= 0; got {rtol!r}")
    s = torch.linalg.svdvals(mat.detach())
    tail2 = torch.flip(torch.cumsum(torch.flip(s * s, [0]), 0), [0])  # tail2[r] = sum_{j>=r}
    thr2 = (rtol * float(torch.linalg.vector_norm(s))) ** 2
    return max(1, int((tail2 > thr2).sum()))


def _svd_init(u_param: nn.Parameter, v_param: nn.Parameter, mat: torch.Tensor) -> None:
    r = u_param.shape[1]
    with torch.no_grad():
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        u_param.copy_(u[:, :r])
        v_param.copy_(vh[:r].T * s[:r])


# ---------------------------------------------------------------------------- linear
class VanillaLowRankLinear(nn.Module):
    r"""Low-rank linear layer :math:`y = x V U^\top + b` (:math:`W = U V^\top`), plain SGD.

    Parameters
    ----------
    in_features, out_features, bias
        As for ``nn.Linear``.
    rank : None, int or float in (0, 1]
        Rank r; fraction: :math:`\lceil\kappa \min(n_\text{out}, n_\text{in})\rceil`.

    Notes
    -----
    Storage :math:`r(n_\text{out} + n_\text{in})`; forward cost :math:`r(n_\text{in} +
    n_\text{out})` per sample, through the two thin factors (never the dense matrix).
    Initialisation: orthonormal U, Gaussian V giving PyTorch's default weight variance.
    """

    factorization = "matrix"

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rank: Any = None, device: Any = None, dtype: Any = None):
        super().__init__()
        for name, val in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(val, bool) or not isinstance(val, numbers.Integral) or val < 1:
                raise ValueError(f"{name} must be an int >= 1; got {val!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, numbers.Real)):
            raise TypeError(f"rank must be an int >= 1 or a float in (0, 1]; got {rank!r}")
        self.in_features, self.out_features = in_features, out_features
        self.kernel_shape = (out_features, in_features)
        (r,) = resolve_ranks(rank, [min(in_features, out_features)])
        factory = {"device": device, "dtype": dtype}
        self.u = nn.Parameter(torch.empty(out_features, r, **factory))
        self.v = nn.Parameter(torch.empty(in_features, r, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    @property
    def ranks(self) -> int:
        """Rank r."""
        return int(self.u.shape[1])

    def reset_parameters(self) -> None:
        """Orthonormal U, Gaussian V; bias as ``nn.Linear``."""
        with torch.no_grad():
            _orthonormal_init_(self.u)
            std = math.sqrt(self.out_features / (3.0 * self.in_features * self.ranks))
            self.v.normal_(0.0, std)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                self.bias.uniform_(-bound, bound)

    def weight_full(self) -> torch.Tensor:
        """Dense weight :math:`U V^\\top`, differentiable."""
        return self.u @ self.v.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`x V U^\\top + b` through the thin factors."""
        return F.linear(F.linear(x, self.v.T), self.u, self.bias)

    def num_parameters(self) -> int:
        """Numbers stored for the weight (bias not counted)."""
        return self.u.numel() + self.v.numel()

    def to_dense(self) -> nn.Linear:
        """Plain ``nn.Linear`` with weight :math:`U V^\\top`."""
        w = self.weight_full().detach()
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=w.device, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            if self.bias is not None:
                lin.bias.copy_(self.bias.detach())
        lin.train(self.training)
        return lin

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.ranks}, bias={self.bias is not None}")

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: Any = None,
                    rtol: float | None = None) -> VanillaLowRankLinear:
        """Truncated SVD of a trained ``nn.Linear`` weight (best rank-r).

        ``rtol`` (where ``rank`` is None) keeps the smallest r with
        ``||W - W_r|| <= rtol ||W||``.  Cost: one SVD.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear; got {type(linear).__name__}")
        w = linear.weight.detach()
        if rank is None and rtol is not None:
            rank = _svd_rank(w, rtol)
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    rank=rank, device=w.device, dtype=w.dtype)
        _svd_init(layer.u, layer.v, w)
        if layer.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias.detach())
        layer.train(linear.training)
        return layer
