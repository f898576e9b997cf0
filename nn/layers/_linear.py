"""The low-rank linear layer :class:`LowRankLinear` (see :mod:`tucker_dlra.nn.layers`)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._base import _from_dense, _TuckerLayer
from ._params import RankArg


class LowRankLinear(_TuckerLayer):
    r"""Linear layer with weight :math:`W = U_0 C U_1^\top` (matrix DLRT, the d = 2 case).

    Parameters
    ----------
    in_features, out_features, bias : as ``nn.Linear``.
    rank, max_rank, min_rank, init, device, dtype : as :class:`TuckerConv2d`
        (``rank`` is an int, a pair, a fraction or None).
    forward_mode : {"auto", "dense", "factorized"}
        ``"factorized"`` computes :math:`((x U_1) C^\top) U_0^\top`, cost
        :math:`n_{in} r_1 + r_0 r_1 + n_{out} r_0` per sample instead of
        :math:`n_{in} n_{out}`; ``"auto"``: the FLOP rule (:data:`FACTORIZED_FLOP_RATIO`),
        or on CUDA without a graph the path measured faster (:class:`PathSelector`).

    Notes
    -----
    ``core`` is a general (not diagonal) :math:`r_0\times r_1` matrix; training with
    :class:`TDLRT` is the rank-adaptive matrix DLRT step.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rank: RankArg = None, max_rank: Any = None, min_rank: Any = None,
                 init: str = "kaiming", forward_mode: str = "auto", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.forward_mode = self._check_mode(forward_mode)
        self._init_tucker((out_features, in_features), rank, max_rank, min_rank, init,
                          in_features, device, dtype)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, device=self.core.device,
                                                 dtype=self.core.dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def flops(self, input_shape: Sequence[int] = ()) -> tuple[int, int]:
        """Multiply-adds per sample (dense, factorized)."""
        r0, r1 = self.ranks
        return (self.in_features * self.out_features,
                self.in_features * r1 + r0 * r1 + self.out_features * r0)

    def _run_path(self, x: torch.Tensor, path: str) -> torch.Tensor:
        """Graph-free forward: ``F.linear`` with the cached kernel, or the three products."""
        if path == "dense":
            return F.linear(x, self.cached_weight(), self.bias)
        u0, u1 = self.factors[0], self.factors[1]
        return F.linear((x @ u1) @ self.core.t(), u0, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, W, bias)`` by the chosen path (``"auto"``: measured on CUDA without
        a graph, else the FLOP model)."""
        self._tag_params()
        self._sync_grad_full()
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input's last dimension must be in_features = {self.in_features}; "
                             f"got shape {tuple(x.shape)}")
        self._check_input_dtype(x)
        path = self._choose(x)
        capture = self._capturing()
        if capture and self._kernel_only():  # backward computes dL/dx and G only
            if path == "dense":
                y = F.linear(x, self._tap(self.cached_weight(), lambda gw: gw), self.bias)
            else:
                core, (u0, u1) = self._params(True)
                xd = x.detach()

                def grad_of(gy: torch.Tensor, xd=xd) -> torch.Tensor:
                    return (gy.reshape(-1, self.out_features).t()
                            @ xd.reshape(-1, self.in_features))

                y = self._tap(F.linear((x @ u1) @ core.t(), u0, self.bias), grad_of)
        elif not capture and self._graph_free():
            y = self._run_path(x, path)
        elif path == "dense":
            w = self.weight_full()
            if capture and w.requires_grad:
                w.register_hook(self._kernel_hook)
            y = F.linear(x, w, self.bias)
        else:
            u0, u1 = self.factors[0], self.factors[1]
            y = F.linear((x @ u1) @ self.core.t(), u0, self.bias)
            if capture and y.requires_grad:
                xd = x.detach()

                def hook(gy: torch.Tensor, xd=xd) -> None:
                    self._store_grad(gy.reshape(-1, self.out_features).t()
                                     @ xd.reshape(-1, self.in_features))

                y.register_hook(hook)
        return y

    @torch.no_grad()
    def to_dense(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight :math:`U_0 C U_1^\\top`."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.core.device, dtype=self.core.dtype)
        lin.weight.copy_(self.weight_full())
        if self.bias is not None:
            lin.bias.copy_(self.bias)
        return lin

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: RankArg = None, rtol: float | None = None,
                    max_rank: Any = None, min_rank: Any = None, init: str = "kaiming",
                    forward_mode: str = "auto", rule: str = "per_mode") -> LowRankLinear:
        """Low-rank layer from a trained ``nn.Linear`` by truncated SVD (HOSVD, d = 2)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear; got {type(linear).__name__}")
        if rank is not None and rtol is not None:
            raise ValueError("give at most one of rank and rtol")
        w = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, rank=None,
                    max_rank=max_rank, min_rank=min_rank, init=init, forward_mode=forward_mode,
                    device=w.device, dtype=w.dtype)
        _from_dense(layer, w, linear.bias, rank, rtol, rule)
        return layer

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"ranks={self.ranks}, bias={self.bias is not None}, "
                f"forward_mode={self.forward_mode!r}")
