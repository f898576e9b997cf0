"""The vanilla CP baseline :class:`VanillaCPConv` (see :mod:`tucker_dlra.nn.vanilla`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tucker_dlra import unfold

from .._conv import (
    conv_macs,
    resolve_ranks,
)
from ._common import (
    _VanillaConv,
)


class VanillaCPConv(_VanillaConv):
    r"""Fixed-rank CP convolution :math:`W = \sum_{\rho=1}^R \bigcirc_i a^{(i)}_\rho`.

    The "Vanilla CP" baseline of the paper (Section 4, refs. [29, 45, 1, 41]).
    ``factors[i]`` has shape :math:`(n_i, R)`; trained by plain SGD.

    Parameters
    ----------
    rank : int or float in (0, 1]
        CP rank R; a fraction :math:`\kappa` gives :math:`\lceil\kappa\, r_{\max}\rceil`
        with :math:`r_{\max} = \max(n_0, n_1)` (the larger channel count; the CP rank of a
        generic kernel is at least that).  Default: :math:`r_{\max}`.
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups
        As for :class:`VanillaTuckerConv`.
    bias, padding_mode, dim, forward_mode, device, dtype
        As for :class:`VanillaTuckerConv`.

    Notes
    -----
    Factorized forward (Lebedev et al. 2015): 1x1 conv with :math:`A_1^\top`, depthwise
    conv with the R rank-one spatial kernels :math:`\bigcirc_{i\ge2} a^{(i)}_\rho`,
    1x1 conv with :math:`A_0`.  Storage :math:`R \sum_i n_i`.  Initialisation: Gaussian
    factors scaled to PyTorch's default kernel variance.
    """

    factorization = "cp"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", rank: Any = None, dim: int = 2,
                 forward_mode: str = "auto", device: Any = None, dtype: Any = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, dim, forward_mode, device, dtype)
        rmax = max(self.kernel_shape[:2])
        if rank is None:
            cp_rank = rmax
        elif isinstance(rank, bool) or not isinstance(rank, numbers.Real):
            raise TypeError(f"rank of a CP layer must be an int >= 1 or a float in (0, 1]; "
                            f"got {rank!r}")
        elif isinstance(rank, numbers.Integral):
            if rank < 1:
                raise ValueError(f"rank must be an int >= 1; got {rank}")
            cp_rank = int(rank)  # a CP rank may exceed every mode size
        else:
            (cp_rank,) = resolve_ranks(float(rank), [rmax])
        factory = {"device": device, "dtype": dtype}
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.empty(n, cp_rank, **factory)) for n in self.kernel_shape]
        )
        self.reset_parameters()

    @property
    def ranks(self) -> int:
        """CP rank R."""
        return int(self.factors[0].shape[1])

    def reset_parameters(self) -> None:
        """Gaussian factors; the dense kernel gets PyTorch's default variance."""
        with torch.no_grad():
            for u in self.factors:
                u.normal_(0.0, 1.0)
            self.factors[0].mul_(self._target_std() / math.sqrt(self.ranks))
        self._reset_bias()

    def _spatial_kernel(self) -> torch.Tensor:
        """The R rank-one spatial kernels, shape (R, k_1, ..., k_N)."""
        ker = None
        for u in list(self.factors)[2:]:
            t = u.T  # (R, k)
            ker = t if ker is None else ker.unsqueeze(-1) * t.reshape(
                (t.shape[0],) + (1,) * (ker.dim() - 1) + (t.shape[1],))
        return ker

    def weight_full(self) -> torch.Tensor:
        r"""Dense kernel :math:`\sum_\rho \bigcirc_i a^{(i)}_\rho`, differentiable."""
        a0, a1 = self.factors[0], self.factors[1]
        sp = self._spatial_kernel()  # (R, k...)
        w = torch.einsum("or,ir,rk->oik", a0, a1, sp.reshape(sp.shape[0], -1))
        return w.reshape(self.kernel_shape)

    def _factorized(self, x: torch.Tensor) -> torch.Tensor:
        a0, a1 = self.factors[0], self.factors[1]
        y = self._pointwise(x, a1.T)
        sp = self._spatial_kernel().unsqueeze(1)  # (R, 1, k...)
        y = self._spatial_conv(y, sp, None, self.ranks)
        return self._pointwise(y, a0, self.bias)

    def _macs(self, in_spatial: Sequence[int], out_sp: Sequence[int]) -> int:
        return conv_macs("cp", self.kernel_shape, self.ranks, in_spatial, out_sp)

    @classmethod
    def from_conv(cls, conv: nn.Module, rank: Any = None,
                  forward_mode: str = "auto") -> VanillaCPConv:
        r"""CP layer initialised from a dense conv without ALS.

        Each factor :math:`A_i` holds the leading left singular vectors of
        :math:`\mathrm{Mat}_i(W)` (repeated cyclically when :math:`R > n_i`), and the
        weights :math:`\lambda` of the rank-one terms solve the linear least-squares
        problem :math:`\min_\lambda \|W - \sum_\rho \lambda_\rho \bigcirc_i a^{(i)}_\rho\|`
        (normal equations with the Hadamard product of the Gram matrices
        :math:`A_i^\top A_i`); :math:`\lambda` is absorbed into :math:`A_0`.  This is
        exact for rank-one kernels and a reasonable start otherwise.
        Cost: d SVDs of the unfoldings plus :math:`O(R \prod_i n_i + R^3)`.
        """
        cfg = cls._config_from(conv)
        layer = cls(**cfg, rank=rank, forward_mode=forward_mode)
        w = conv.weight.detach()
        rr = layer.ranks
        with torch.no_grad():
            facs = []
            for i in range(w.dim()):
                u, _, _ = torch.linalg.svd(unfold(w, i), full_matrices=False)
                idx = torch.arange(rr, device=w.device) % u.shape[1]
                facs.append(u[:, idx])
            gram = torch.ones(rr, rr, dtype=w.dtype, device=w.device)
            for a in facs:
                gram = gram * (a.T @ a)
            # b_rho = W x_0 a0_rho x_1 a1_rho ... (rank-wise contraction, no Khatri-Rao)
            proj = (facs[0].T @ w.reshape(w.shape[0], -1)).reshape((rr,) + tuple(w.shape[1:]))
            for a in facs[1:]:
                proj = torch.einsum("rn...,nr->r...", proj, a)
            b = proj
            lam = torch.linalg.lstsq(gram, b.unsqueeze(1)).solution.squeeze(1)
            layer.factors[0].copy_(facs[0] * lam)
            for p, a in zip(list(layer.factors)[1:], facs[1:], strict=True):
                p.copy_(a)
        layer._copy_bias(conv)
        layer.train(conv.training)
        return layer


# ---------------------------------------------------------------------------- matrix
