r"""Gradient clipping by norm that counts a Tucker layer as the equivalent dense layer.

``torch.nn.utils.clip_grad_norm_`` sees a Tucker layer's ``.grad``: with the kernel-only
backward of :class:`tucker_dlra.nn.TDLRT` those are the core gradient and the K-gradients
(Theorem 1), whose norm is not the norm of the kernel gradient :math:`G=\nabla_W\mathcal L`
a dense layer with the same kernel would contribute.  :func:`clip_grad_norm_` counts
:math:`\|G\|` instead and scales the Tucker layer's whole step, so a model clips as its dense
twin does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from . import distributed
from .layers import _TuckerLayer, is_tucker_layer, layer_of

__all__ = ["clip_grad_norm_"]


def _split(parameters: Any) -> tuple[list[_TuckerLayer], list[torch.Tensor]]:
    """Tucker layers (core and all factors given) and the other parameters."""
    if isinstance(parameters, nn.Module):
        layers = [m for m in parameters.modules() if is_tucker_layer(m)]
        params = list(parameters.parameters())
    else:
        params = [parameters] if torch.is_tensor(parameters) else list(parameters)
        ids = {id(p) for p in params}
        found = {id(m): m for m in (layer_of(p) for p in params) if m is not None}
        layers = [m for m in found.values()
                  if all(id(p) in ids for p in [m.core, *m.factors])]
        order = {id(p): k for k, p in enumerate(params)}
        layers.sort(key=lambda m: order[id(m.core)])
    layers = [m for m in layers if m.grad_full is not None]
    tucker = {id(p) for m in layers for p in [m.core, *m.factors]}
    return layers, [p for p in params if id(p) not in tucker and p.grad is not None]


def clip_grad_norm_(parameters: nn.Module | Iterable[torch.Tensor] | torch.Tensor,
                    max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> torch.Tensor:
    r"""Clip gradients by their total norm, a Tucker layer counted by its kernel gradient.

    As ``torch.nn.utils.clip_grad_norm_`` (same arguments, same clip coefficient
    :math:`\min(1, c/(\|g\|_p + 10^{-6}))`), except that a Tucker layer whose kernel gradient
    was captured (``grad_full``) contributes :math:`\|G\|_p` of its dense kernel gradient
    :math:`G = \nabla_W\mathcal L` -- exactly what the equivalent dense layer's
    ``weight.grad`` contributes -- and the coefficient scales its whole TDLRT step (its
    ``grad_full`` and its ``.grad`` alike).  Other parameters are treated as torch does.

    Under ``DistributedDataParallel`` a Tucker layer whose workers average projections of
    :math:`G` (not :math:`G` itself) cannot form the averaged :math:`\bar G`; it counts
    :math:`(\frac1w\sum_{\text{workers}}\|G_w\|_p^p)^{1/p}` (``max`` for
    :math:`p=\infty`) instead -- one all-reduce of one number -- an upper bound of
    :math:`\|\bar G\|_p` (equal when the workers' gradients agree), so it clips at least as
    much as dense DDP would.  Layers whose :math:`G` is averaged in backward (the dense
    fallback of :func:`tucker_dlra.nn.distributed.projected_bytes`) count it exactly.

    Parameters
    ----------
    parameters : torch.nn.Module, iterable of torch.Tensor, or torch.Tensor
        A model, or its parameters (Tucker layers are recognised when their core and all
        factors are among them).
    max_norm : float
        Largest total norm :math:`c` (> 0).
    norm_type : float
        :math:`p` of the norm (``float('inf')`` for the max-norm).
    error_if_nonfinite : bool
        Raise ``RuntimeError`` when the total norm is NaN or infinite (a host sync).

    Returns
    -------
    torch.Tensor
        The total norm before clipping (0-d).  Cost: one pass over every gradient, no host
        sync (unless ``error_if_nonfinite``).
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) \
            or not math.isfinite(max_norm) or max_norm <= 0:
        raise ValueError(f"max_norm must be a finite number > 0; got {max_norm!r}")
    p = float(norm_type)
    if not (p >= 1 or math.isinf(p)):
        raise ValueError(f"norm_type must be >= 1 or inf; got {norm_type!r}")
    layers, plain = _split(parameters)
    if not layers and not plain:
        return torch.tensor(0.0)
    dev = (layers[0].core if layers else plain[0]).device
    inf = math.isinf(p)

    def part(t: torch.Tensor) -> torch.Tensor:  # ||t||_p^p, or ||t||_inf
        n = torch.linalg.vector_norm(t.detach(), p).to(device=dev, dtype=torch.float64)
        return n if inf else n ** p

    local: dict[int, list[Any]] = {}  # process group -> per-worker parts to all-reduce
    exact = [part(p_.grad) for p_ in plain]
    for m in layers:
        g = m.grad_full.to(dtype=m.core.dtype)
        st = distributed._st(m)
        if distributed.is_distributed_layer(m) and st.get("synced") and not st.get("dense"):
            local.setdefault(id(st["dist"][0]), [st["dist"][0], []])[1].append(part(g))
        else:
            exact.append(part(g))
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    total = torch.stack(exact).max() if inf and exact else \
        (torch.stack(exact).sum() if exact else zero)
    for group, parts in local.values():
        import torch.distributed as dist

        v = torch.stack(parts).max() if inf else torch.stack(parts).sum()
        dist.all_reduce(v, op=dist.ReduceOp.MAX if inf else dist.ReduceOp.SUM, group=group)
        if inf:
            total = torch.maximum(total, v)
        else:
            total = total + v / dist.get_world_size(group)
    total = total if inf else total ** (1.0 / p)
    if error_if_nonfinite and not bool(torch.isfinite(total)):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is "
                           "non-finite, so it cannot be clipped (error_if_nonfinite=True)")
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for p_ in plain:
        p_.grad.mul_(coef.to(device=p_.grad.device, dtype=p_.grad.dtype))
    for m in layers:
        c = coef.to(device=m.core.device, dtype=m.core.dtype)
        m.grad_full = m.grad_full * c.to(m.grad_full.dtype)
        ps = [m.core, *m.factors]
        for q in ps:
            if q.grad is not None:
                q.grad.mul_(c)
        st = distributed._st(m)
        if st.get("ref") is not None:  # the scaled gradients are this backward's reference
            st["ref"] = [r * c for r in st["ref"]]
        if m.core.grad is not None:  # grad_full stays valid (see _sync_grad_full)
            m._grad_stamp = (id(m.core.grad), m.core.grad._version)
    return total.to(dtype=(layers[0].core if layers else plain[0]).dtype)
