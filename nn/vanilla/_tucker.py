"""The vanilla Tucker baseline :class:`VanillaTuckerConv` (see :mod:`tucker_dlra.nn.vanilla`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tucker_dlra import TuckerTensor, hosvd, multi_mode_product, valid_rank

from .._conv import (
    _tucker_upper,
    conv_macs,
    resolve_ranks,
)
from ._common import (
    _orthonormal_init_,
    _pad_tucker,
    _VanillaConv,
)


class VanillaTuckerConv(_VanillaConv):
    r"""Fixed-rank Tucker convolution :math:`W = C \times_{i} U_i` trained by plain SGD.

    The "Vanilla Tucker" baseline of the paper (Section 4, refs. [28, 24]): core ``core``
    (shape = ranks) and factors ``factors[i]`` of shape :math:`(n_i, r_i)` are ordinary
    parameters; nothing keeps the factors orthonormal and the ranks never change.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding
        As for ``nn.ConvNd``.
    dilation, groups, bias, padding_mode
        As for ``nn.ConvNd``.
    rank : None, int, float in (0, 1] or tuple of d ints / fractions
        Tucker rank of the kernel (d = dim + 2 modes: out, in/groups, spatial...), see
        :func:`resolve_ranks`; :math:`r_{\max,i} = \min(n_i, \prod_{j\ne i} n_j)`, and a
        fraction :math:`\kappa` means :math:`\lceil\kappa n_i\rceil` (as for the TDLRT
        layers).
    dim : {1, 2, 3}
    forward_mode : {"auto", "dense", "factorized"}
        ``"factorized"`` is Section 2.1's
        :math:`W * Z = C \times_{2,3,4} [(U_2 \otimes U_3 \otimes U_4) * Z] \times_1 U_1`
        as 1x1 conv with :math:`U_1^\top` -> conv with :math:`C \times_{j\ge2} U_j` ->
        1x1 conv with :math:`U_0` (needs ``groups=1``).

    Notes
    -----
    Initialisation: orthonormal random factors and a Gaussian core scaled so that the
    dense kernel has the variance of PyTorch's default conv initialisation.
    Storage :math:`\prod_i r_i + \sum_i n_i r_i` numbers.  Forward cost: see
    :func:`conv_macs`.
    """

    factorization = "tucker"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", rank: Any = None, dim: int = 2,
                 forward_mode: str = "auto", device: Any = None, dtype: Any = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, dim, forward_mode, device, dtype)
        ranks = resolve_ranks(rank, _tucker_upper(self.kernel_shape), sizes=self.kernel_shape)
        factory = {"device": device, "dtype": dtype}
        self.core = nn.Parameter(torch.empty(ranks, **factory))
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.empty(n, r, **factory)) for n, r in zip(self.kernel_shape, ranks,
                                                                        strict=True)]
        )
        self.reset_parameters()

    @property
    def ranks(self) -> tuple[int, ...]:
        """Tucker rank (the core's shape)."""
        return tuple(self.core.shape)

    def reset_parameters(self) -> None:
        """Random orthonormal factors, Kaiming-scaled Gaussian core, default bias."""
        with torch.no_grad():
            for u in self.factors:
                _orthonormal_init_(u)
            scale = math.sqrt(math.prod(self.kernel_shape) / math.prod(self.ranks))
            self.core.normal_(0.0, self._target_std() * scale)
        self._reset_bias()

    def tucker(self) -> TuckerTensor:
        """The kernel as a core ``TuckerTensor`` (detached)."""
        return TuckerTensor(self.core.detach(), [u.detach() for u in self.factors])

    def weight_full(self) -> torch.Tensor:
        r"""Dense kernel :math:`C \times_i U_i` (Eq. (3)), differentiable."""
        return multi_mode_product(self.core, list(self.factors))

    def _factorized(self, x: torch.Tensor) -> torch.Tensor:
        u = list(self.factors)
        spatial = multi_mode_product(self.core, [None, None] + u[2:])
        y = self._pointwise(x, u[1].T)
        y = self._spatial_conv(y, spatial, None, 1)
        return self._pointwise(y, u[0], self.bias)

    def _macs(self, in_spatial: Sequence[int], out_sp: Sequence[int]) -> int:
        return conv_macs("tucker", self.kernel_shape, self.ranks, in_spatial, out_sp)

    @classmethod
    def from_conv(cls, conv: nn.Module, rank: Any = None, rtol: float | None = None,
                  forward_mode: str = "auto") -> VanillaTuckerConv:
        r"""Truncated HOSVD of a dense conv's kernel (:func:`tucker_dlra.hosvd`).

        ``rank`` as in :func:`resolve_ranks`; ``rtol`` (used where ``rank`` is None)
        truncates with the HOSVD bound :math:`\|W - \hat W\| \le \mathrm{rtol}\,\|W\|`.
        Cost: one HOSVD of the kernel, :math:`O(\sum_i n_i \prod_j n_j)`.
        """
        cfg = cls._config_from(conv)
        w = conv.weight.detach()
        fixed = None if rank is None and rtol is not None else resolve_ranks(
            rank, _tucker_upper(w.shape), sizes=w.shape)
        if fixed is not None and valid_rank(fixed) != tuple(fixed):
            # a core larger than any multilinear rank (r_i > prod_{j != i} r_j; the paper's
            # kappa can ask for it): the HOSVD at the largest valid rank, padded with zero
            # core slices and orthonormal complement columns -- the same kernel
            t = _pad_tucker(hosvd(w, rank=valid_rank(fixed)), fixed)
        else:
            t = hosvd(w, rank=fixed, rtol=rtol if fixed is None else None)
        layer = cls(**cfg, rank=t.rank, forward_mode=forward_mode)
        with torch.no_grad():
            layer.core.copy_(t.core)
            for p, u in zip(layer.factors, t.factors, strict=True):
                p.copy_(u)
        layer._copy_bias(conv)
        layer.train(conv.training)
        return layer


# ---------------------------------------------------------------------------- CP
