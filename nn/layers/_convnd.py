"""The Tucker convolutions :class:`TuckerConv1d`, :class:`TuckerConv2d`, :class:`TuckerConv3d`
(see :mod:`tucker_dlra.nn.layers`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tucker_dlra import multi_mode_product

from .._conv import conv_options_repr, pointwise, tucker_conv_macs
from ._base import _from_dense, _TuckerLayer
from ._params import RankArg
from ._paths import FACTORIZED_MIN_FLOPS


def _same_layout(x: torch.Tensor, gy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and output gradient of a 2-d weight-gradient convolution in one memory layout:
    when exactly one of them is channels-last, the other is copied to channels-last (on
    CPU oneDNN's weight gradient runs up to 3x faster with both channels-last than with
    mixed layouts, e.g. 128x3x32x32 -> 32 channels: 3 ms instead of 9 ms, 1 thread)."""
    if x.dim() != 4:
        return x, gy
    cl = torch.channels_last
    xc, gc = x.is_contiguous(memory_format=cl), gy.is_contiguous(memory_format=cl)
    if xc == gc:
        return x, gy
    return (x.contiguous(memory_format=cl), gy) if gc else (x, gy.contiguous(memory_format=cl))


class _TuckerConvNd(_TuckerLayer):
    r"""N-d convolution whose kernel is a Tucker tensor (paper Section 2.1, Eq. (3)).

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
    padding_mode :
        As ``torch.nn.ConvNd`` (padding ``'same'``/``'valid'``/int/tuple; padding_mode
        ``'zeros'``, ``'reflect'``, ``'replicate'``, ``'circular'``).  With groups the
        kernel still has shape (out, in/groups, k_1, ..., k_N) and one Tucker factor per
        mode (the in/groups factor is shared by all groups).
    rank : None, int, float in (0, 1] or tuple of d = N + 2 ints / fractions
        Initial Tucker rank (see :func:`resolve_rank`); ``None`` is the full rank.
    max_rank, min_rank : int or tuple, optional
        Bounds the optimizer's rank adaptation respects.
    init : {"kaiming", "spectral"}
        See :meth:`reset_parameters`.
    forward_mode : {"auto", "dense", "factorized"}
        ``"dense"``: rebuild :math:`W` and run one ``F.convNd``, cost
        :math:`B\,n_0 (n_1) \prod k \prod L_{out}`.  ``"factorized"``: 1x1 convolution with
        :math:`U_1^\top` (in -> r_1 channels per group), spatial convolution with the small
        kernel :math:`C \times_{2..} U_{2..}` (r_1 -> r_0 per group), 1x1 convolution with
        :math:`U_0`; multiply-adds per sample
        :math:`n_{in} r_1 \prod L_{in} + g\, r_0 r_1 \prod k \prod L_{out}
        + n_{out} r_0 \prod L_{out}`.
        ``"auto"`` takes the factorized path when its count is below
        :data:`FACTORIZED_FLOP_RATIO` times the dense one (forward + backward counts in
        training; :data:`KERNEL_ONLY_FLOP_RATIO` with the kernel-only backward) and the
        dense count is at least :data:`FACTORIZED_MIN_FLOPS` (see
        :meth:`flops`, :meth:`_plan`: the cheapest of three variants, with the 1x1
        convolution of :math:`U_1^\top` and/or of :math:`U_0` folded into the small kernel).
        On CUDA, a forward without autograd graph (``torch.no_grad``) instead takes the
        path measured faster for its configuration and input shape (:class:`PathSelector`,
        module docstring).  ``"dense"`` without a graph reuses the cached kernel
        (:meth:`cached_weight`): one convolution, as ``nn.ConvNd``.
    device, dtype : as for torch modules.

    Notes
    -----
    Both paths compute the same function (checked against ``F.convNd`` with the rebuilt
    kernel).  The kernel gradient capture for the optimizer is described in the module
    docstring.  The bias is added by the last stage (no extra pass over the output).
    Without a graph (``torch.no_grad``, inference), and in training on the device types of
    :data:`TRAIN_CHANNELS_LAST` (default: CPU), the 2-d factorized path returns its
    output in channels-last memory format (same shape and values; the following ReLU,
    batch-norm and pooling then run their faster channels-last kernels, and so does the
    weight-gradient convolution that captures :math:`G`).
    """

    _N = 2
    _min_flops = FACTORIZED_MIN_FLOPS

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | str | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", rank: RankArg = None, max_rank: Any = None,
                 min_rank: Any = None, init: str = "kaiming", forward_mode: str = "auto",
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        n = self._N
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must "
                             f"be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = self._tuple(kernel_size, "kernel_size", 1)
        self.stride = self._tuple(stride, "stride", 1)
        self.dilation = self._tuple(dilation, "dilation", 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid', an int or a tuple of {n} ints; "
                                 f"got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding: str | tuple[int, ...] = padding
        else:
            self.padding = self._tuple(padding, "padding", 0)
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError("padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular'; "
                             f"got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.forward_mode = self._check_mode(forward_mode)
        kshape = (out_channels, in_channels // groups, *self.kernel_size)
        self._init_tucker(kshape, rank, max_rank, min_rank, init,
                          (in_channels // groups) * math.prod(self.kernel_size), device, dtype)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, device=self.core.device,
                                                 dtype=self.core.dtype))
        else:
            self.register_parameter("bias", None)
        # (left, right) padding per spatial dim, as nn.ConvNd resolves it
        if self.padding == "valid":
            pads = [(0, 0)] * n
        elif self.padding == "same":
            pads = []
            for k, dl in zip(self.kernel_size, self.dilation, strict=True):
                total = dl * (k - 1)
                pads.append((total // 2, total - total // 2))
        else:
            pads = [(p, p) for p in self.padding]
        self._pads = pads
        self.reset_parameters()

    def _tuple(self, v: Any, name: str, low: int) -> tuple[int, ...]:
        n = self._N
        vals = [v] * n if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v
        try:
            vals = list(vals)
        except TypeError:
            raise TypeError(f"{name} must be an int or a tuple of {n} ints; got {v!r}") from None
        if len(vals) != n or any(isinstance(a, bool) or not isinstance(a, numbers.Integral)
                                 or a < low for a in vals):
            raise ValueError(f"{name} must be an int >= {low} or a tuple of {n} such ints; "
                             f"got {v!r}")
        return tuple(int(a) for a in vals)

    # ------------------------------------------------------------------ helpers
    def _conv(self) -> Any:
        return (F.conv1d, F.conv2d, F.conv3d)[self._N - 1]

    def _conv_weight_grad(self) -> Any:
        return (torch.nn.grad.conv1d_weight, torch.nn.grad.conv2d_weight,
                torch.nn.grad.conv3d_weight)[self._N - 1]

    def _prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Apply explicit padding (non-zero modes, asymmetric 'same'); return conv padding."""
        sym = all(a == b for a, b in self._pads)
        if self.padding_mode == "zeros" and sym:
            return x, tuple(a for a, _ in self._pads)
        flat = []
        for a, b in reversed(self._pads):
            flat += [a, b]
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, flat, mode=mode), (0,) * self._N

    def _out_size(self, spatial: Sequence[int]) -> list[int]:
        out = []
        for L, (a, b), k, s, dl in zip(spatial, self._pads, self.kernel_size, self.stride,
                                       self.dilation, strict=True):
            out.append(max((L + a + b - dl * (k - 1) - 1) // s + 1, 0))
        return out

    def _plan(self, input_shape: Sequence[int]) -> tuple[int, int, bool, bool]:
        """Multiply-adds per sample of the dense and the cheapest factorized variant.

        Variants: the 1x1 convolution with :math:`U_1^\top` may be folded into the small
        kernel (``fold_in``: kernel :math:`C\times_1 U_1 \times_{2..} U_{2..}`), and so may
        the 1x1 convolution with :math:`U_0` (``fold_out``); both folded is the dense path.
        """
        spatial = list(input_shape)[-self._N:]
        lin = math.prod(L + a + b for L, (a, b) in zip(spatial, self._pads, strict=True))
        lout = math.prod(self._out_size(spatial))
        k = math.prod(self.kernel_size)
        g = self.groups
        cin_g = self.in_channels // g
        r0, r1 = self.ranks[0], self.ranks[1]
        dense = self.out_channels * cin_g * k * lout
        best = None
        for fold_in, fold_out in ((False, False), (True, False), (False, True)):
            cost = tucker_conv_macs(self.out_channels, self.in_channels, g, r0, r1, k, lin, lout,
                                    fold_in, fold_out)
            if best is None or cost < best[0]:
                best = (cost, fold_in, fold_out)
        return dense, best[0], best[1], best[2]

    def flops(self, input_shape: Sequence[int]) -> tuple[int, int]:
        """Multiply-adds per sample (dense, factorized) for an input of shape (C, L_1..L_N).

        The factorized count is that of the cheapest variant of the three-stage product
        (see :meth:`_plan`); biases and the small kernel's assembly are not counted.
        """
        dense, fact, _, _ = self._plan(input_shape)
        return dense, fact

    def _factorized(self, x: torch.Tensor, pad: tuple[int, ...], detached: bool = False,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
        """The three-stage product (see :meth:`_plan`); ``bias`` is added by the last stage
        (``baddbmm`` / the convolution's bias: no extra pass over the output)."""
        conv = self._conv()
        g, n = self.groups, self._N
        ones = (1,) * n
        _, _, fold_in, fold_out = self._plan(tuple(x.shape[1:]))
        core, factors = self._params(detached)
        u0, u1 = factors[0], factors[1]
        r0, r1 = u0.shape[1], u1.shape[1]
        mats = [u0 if fold_out else None, u1 if fold_in else None, *factors[2:]]
        small = multi_mode_product(core, mats)  # (c_out, c_in, k...)
        # 2-d: the 1x1 stages write channels-last outputs (see pointwise; the downstream
        # pooling/BN/ReLU run 2-9x faster); in training on the devices of
        # TRAIN_CHANNELS_LAST (read from the package at each call, like the FLOP ratios)
        from . import TRAIN_CHANNELS_LAST

        training = torch.is_grad_enabled()
        cl = n == 2 and (not training or x.device.type in TRAIN_CHANNELS_LAST)
        if not fold_in:
            if g == 1 and x.dim() == n + 2:  # 1x1 conv as one batched GEMM (C2: faster
                # in training the first stage keeps the input's layout, so that dL/dx has
                # it too (a channels-last gradient into contiguous pooling or ReLU
                # upstream costs a copy per tensor)
                x = pointwise(x, u1.t(), channels_last=cl and (
                    not training or x.is_contiguous(memory_format=torch.channels_last)))
            else:
                w1 = u1.t().repeat(g, 1).reshape(g * r1, u1.shape[0], *ones)
                x = conv(x, w1, None, 1, 0, 1, g)
        if not fold_out and g > 1:
            small = small.repeat(g, *([1] * (n + 1)))
        y = conv(x, small, bias if fold_out else None, self.stride, pad, self.dilation, g)
        if not fold_out:
            if g == 1 and y.dim() == n + 2:
                y = pointwise(y, u0, bias, channels_last=cl)
            else:
                y = conv(y, u0.reshape(self.out_channels, r0, *ones), bias, 1, 0, 1, g)
        return y

    def _config(self) -> tuple:
        return (self.stride, tuple(self._pads), self.dilation, self.groups, self.padding_mode)

    def _run_prepared(self, xin: torch.Tensor, pad: tuple[int, ...], path: str) -> torch.Tensor:
        """Graph-free forward on the padded input: the cached kernel's one convolution
        (``"dense"``) or the three-stage product (``"factorized"``)."""
        if path == "dense":
            return self._conv()(xin, self.cached_weight(), self.bias, self.stride, pad,
                                self.dilation, self.groups)
        return self._factorized(xin, pad, bias=self.bias)

    def _run_path(self, x: torch.Tensor, path: str) -> torch.Tensor:
        xin, pad = self._prepare(x)
        return self._run_prepared(xin, pad, path)

    def _factorized_grad_of(self, xin: torch.Tensor, pad: tuple[int, ...]) -> Any:
        """``gy -> G``: the dense kernel gradient from the output gradient (one
        ``torch.nn.grad.conv{N}d_weight``, as the dense backward computes it)."""
        xd = xin.detach()
        wgrad = self._conv_weight_grad()
        shape = self.kernel_shape
        unbatched = xd.dim() == self._N + 1

        def grad_of(gy: torch.Tensor) -> torch.Tensor:
            xx, gg = (xd.unsqueeze(0), gy.unsqueeze(0)) if unbatched else (xd, gy)
            xx, gg = _same_layout(xx, gg)
            return wgrad(xx, shape, gg, self.stride, pad, self.dilation, self.groups)

        return grad_of

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x``; the path is ``self.forward_mode`` (``"auto"``: measured on CUDA
        without a graph, else the FLOP model)."""
        self._tag_params()
        self._sync_grad_full()
        if x.dim() not in (self._N + 1, self._N + 2):
            raise ValueError(f"{type(self).__name__} expects a {self._N + 1}-d or {self._N + 2}-d "
                             f"input; got shape {tuple(x.shape)}")
        cin = x.shape[-self._N - 1]
        if cin != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects in_channels = {self.in_channels} "
                             f"input channels (dimension {x.dim() - self._N - 1}); got {cin} "
                             f"in an input of shape {tuple(x.shape)}")
        self._check_input_dtype(x)
        path = self._choose(x)
        xin, pad = self._prepare(x)
        capture = self._capturing()
        bias = self.bias
        if capture and self._kernel_only():  # backward computes dL/dx and G only
            if path == "dense":
                w = self._tap(self.cached_weight(), lambda gw: gw)
                y = self._conv()(xin, w, bias, self.stride, pad, self.dilation, self.groups)
            else:  # the tap sees dL/dy (the bias does not change it)
                y = self._tap(self._factorized(xin, pad, detached=True, bias=bias),
                              self._factorized_grad_of(xin, pad))
        elif not capture and self._graph_free():
            y = self._run_prepared(xin, pad, path)
        elif path == "dense":
            w = self.weight_full()
            if capture and w.requires_grad:
                w.register_hook(self._kernel_hook)
            y = self._conv()(xin, w, bias, self.stride, pad, self.dilation, self.groups)
        else:
            y = self._factorized(xin, pad, bias=bias)
            if capture and y.requires_grad:
                grad_of = self._factorized_grad_of(xin, pad)

                def hook(gy: torch.Tensor) -> None:  # stores G, leaves dL/dy unchanged
                    self._store_grad(grad_of(gy))

                y.register_hook(hook)
        return y

    # ------------------------------------------------------------------ conversion
    def _dense_cls(self) -> type:
        return (nn.Conv1d, nn.Conv2d, nn.Conv3d)[self._N - 1]

    @torch.no_grad()
    def to_dense(self) -> nn.Module:
        """A plain ``nn.ConvNd`` computing the same function (kernel :math:`C\\times_i U_i`)."""
        conv = self._dense_cls()(
            self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
            padding=self.padding, dilation=self.dilation, groups=self.groups,
            bias=self.bias is not None, padding_mode=self.padding_mode,
            device=self.core.device, dtype=self.core.dtype)
        conv.weight.copy_(self.weight_full())
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        return conv

    @classmethod
    def from_conv(cls, conv: nn.Module, rank: RankArg = None, rtol: float | None = None,
                  max_rank: Any = None, min_rank: Any = None, init: str = "kaiming",
                  forward_mode: str = "auto", rule: str = "per_mode") -> _TuckerConvNd:
        """Tucker layer from a trained ``nn.ConvNd`` by truncated HOSVD of its weight.

        ``rank`` (spec as in :func:`resolve_rank`) or ``rtol`` (relative tolerance, per
        :func:`tucker_dlra.hosvd` with ``rule``; default the per-mode rule, the rule of the paper's
        compression numbers); neither: exact (full rank).  Cost: one HOSVD of the kernel.
        """
        dense_cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[cls._N - 1]
        if not isinstance(conv, dense_cls):
            raise TypeError(f"conv must be a torch.nn.{dense_cls.__name__}; got "
                            f"{type(conv).__name__}")
        if rank is not None and rtol is not None:
            raise ValueError("give at most one of rank and rtol")
        w = conv.weight.detach()
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                    conv.padding_mode, rank=None, max_rank=max_rank, min_rank=min_rank,
                    init=init, forward_mode=forward_mode, device=w.device, dtype=w.dtype)
        _from_dense(layer, w, conv.bias, rank, rtol, rule)
        return layer

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, ranks={self.ranks}"
                + conv_options_repr(self, self._N) + f", forward_mode={self.forward_mode!r}")


class TuckerConv1d(_TuckerConvNd):
    """1-d Tucker convolution (kernel of order 3); interface of ``nn.Conv1d``, see the base."""

    _N = 1


class TuckerConv2d(_TuckerConvNd):
    """2-d Tucker convolution (kernel of order 4, the paper's case); see :class:`_TuckerConvNd`."""

    _N = 2


class TuckerConv3d(_TuckerConvNd):
    """3-d Tucker convolution (kernel of order 5); interface of ``nn.Conv3d``, see the base."""

    _N = 3
