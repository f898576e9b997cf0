r"""The paper's "vanilla" low-rank baselines (Section 4): fixed-rank factorized layers.

Each layer is parametrized by a fixed-rank factorization of its kernel and trained by
plain (stochastic) gradient descent on the factors -- an ordinary ``torch.optim.SGD``
over ``model.parameters()``; the factors are *not* kept orthonormal and no rank
adaptation happens.  These are the three parametrizations compared in Figure 1 and
Tables 1, 3 and 4 of the paper:

* :class:`VanillaTuckerConv` -- Tucker format :math:`W = C \times_{i} U_i` (Eq. (3));
* :class:`VanillaCPConv` -- canonical polyadic (CP) format
  :math:`W = \sum_{\rho=1}^R a^{(0)}_\rho \circ a^{(1)}_\rho \circ \dots \circ a^{(d-1)}_\rho`;
* :class:`VanillaMatrixConv` -- matrix factorization of the matricized kernel,
  :math:`\mathrm{Mat}_0(W) = U V^\top` (Eq. (2));
* :class:`VanillaLowRankLinear` -- a low-rank linear layer :math:`W = U V^\top`.

Ranks are given as an int, a tuple (Tucker) or a fraction :math:`\kappa \in (0, 1]`
giving :math:`\hat r = \lceil \kappa\, r_{\max} \rceil` as in Section 4.1.  Every layer
accepts the full ``nn.ConvNd`` configuration (stride, padding incl. ``'same'``,
dilation, groups, bias, padding_mode) of its dense counterpart, can be built from a
trained dense layer (``from_conv`` / ``from_linear``) and exported back
(:meth:`to_dense`).  The forward pass either rebuilds the dense kernel and runs one
convolution (``"dense"``) or runs a sequence of cheap convolutions (``"factorized"``):
the two give the same result up to rounding; ``"auto"`` picks the cheaper one by the
multiply-accumulate counts of :func:`conv_macs`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tucker_dlra import TuckerTensor, hosvd, multi_mode_product, pad_core, unfold, valid_rank

from ._conv import (  # noqa: F401 (re-exported: the names' old home)
    _tucker_upper,
    conv_macs,
    conv_options_repr,
    out_spatial,
    pointwise,
    resolve_ranks,
)

_out_spatial = out_spatial

__all__ = [
    "VanillaTuckerConv",
    "VanillaCPConv",
    "VanillaMatrixConv",
    "VanillaLowRankLinear",
    "conv_macs",
    "pointwise",
    "resolve_ranks",
    "VANILLA_KINDS",
]

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


# ---------------------------------------------------------------------------- Tucker
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
    rank : None, int, float in (0, 1] or tuple of d ints
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
