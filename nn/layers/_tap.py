"""The kernel-gradient tap of the Tucker layers' backward (see :mod:`tucker_dlra.nn.layers`,
"Dense kernel gradient" and "Kernel-only backward")."""

from __future__ import annotations

from typing import Any

import torch

from ..distributed import accumulate


class _KernelTap(torch.autograd.Function):
    r"""Identity on a tensor of the forward, with the kernel-gradient capture in backward.

    Inputs ``(t, core, layer, grad_of)``: ``grad_of(grad_t)`` gives the dense kernel gradient
    :math:`G` (``grad_t`` itself on the dense path, a weight-gradient convolution on the
    factorized one); it is stored in ``layer.grad_full`` and core and factors receive
    :math:`\nabla_C\mathcal L` and the K-gradients (``distributed.accumulate``).  The core
    input makes the tap part of the graph even when ``t`` does not require grad (first
    layer, detached kernel).
    """

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, core: torch.Tensor, layer: Any,
                grad_of: Any) -> torch.Tensor:
        ctx.layer, ctx.grad_of = layer, grad_of
        return t.view_as(t)

    @staticmethod
    def backward(ctx: Any, gt: torch.Tensor) -> tuple:
        layer = ctx.layer
        g = ctx.grad_of(gt)
        layer._store_grad(g)
        # core.grad and the factors' K-gradients are set by distributed.accumulate (averaged
        # over the workers at the end of backward under DDP), not through autograd
        accumulate(layer, g)
        return (gt if ctx.needs_input_grad[0] else None), None, None, None
