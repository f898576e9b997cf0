r"""Helpers shared by the Tucker layers (:mod:`tucker_dlra.nn.layers`) and the baselines
(:mod:`tucker_dlra.nn.vanilla`): rank parsing, the multiply-accumulate model of a factorized
convolution, the 1x1 stage as a GEMM, the ``extra_repr`` of convolution options.

One implementation of each, so that a Tucker layer and its vanilla baseline count, parse and
print the same way; neither layer module imports the other.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tucker_dlra.tucker import check_tucker_rank, max_tucker_rank, valid_rank

__all__ = ["conv_macs", "conv_options_repr", "out_spatial", "pointwise", "resolve_ranks",
           "resolve_tucker_rank", "tucker_conv_macs"]


def tucker_conv_macs(c_out: int, c_in: int, groups: int, r0: int, r1: int, k: int,
                     positions_in: int, positions_out: int, fold_in: bool = False,
                     fold_out: bool = False) -> int:
    r"""Multiply-accumulates per sample of the factorized Tucker convolution (Section 2.1).

    Three stages: a 1x1 convolution with :math:`U_1^\top` (:math:`c_\text{in} \to r_1`,
    at ``positions_in`` input positions), the small convolution with
    :math:`C \times_{j \ge 2} U_j` (:math:`g` groups of :math:`r_1 \to r_0`, kernel size
    :math:`k = \prod_j k_j`, at ``positions_out`` positions), a 1x1 convolution with
    :math:`U_0` (:math:`r_0 \to c_\text{out}`):
    :math:`c_\text{in} r_1 P_\text{in} + g\, r_0 r_1 k P_\text{out} + c_\text{out} r_0
    P_\text{out}`.  ``fold_in`` folds :math:`U_1` into the small kernel (its input width
    becomes :math:`c_\text{in}/g` and the first stage disappears), ``fold_out`` likewise
    :math:`U_0`; both folded is the dense convolution.  The one cost model of a Tucker
    convolution, used by :func:`conv_macs` and by the layers' path choice.  Cost O(1).
    """
    a = c_in // groups if fold_in else r1
    b = c_out // groups if fold_out else r0
    cost = groups * b * a * k * positions_out
    cost += 0 if fold_in else c_in * r1 * positions_in
    cost += 0 if fold_out else c_out * r0 * positions_out
    return cost


def resolve_ranks(rank: Any, upper: Sequence[int], name: str = "rank",
                  sizes: Sequence[int] | None = None) -> tuple[int, ...]:
    r"""Turn a rank specification into one int per mode, each in ``[1, upper[i]]``.

    Parameters
    ----------
    rank : None, int, float in (0, 1], or sequence of int / float in (0, 1]
        ``None``: full rank ``upper``.  An int applies to every mode and is clipped to
        ``upper[i]`` (so ``rank=16`` keeps a 3x3 spatial mode at 3).  A float
        :math:`\kappa \in (0, 1]` gives :math:`\lceil \kappa\,s_i\rceil` clipped to
        ``upper[i]``, where :math:`s_i` is ``sizes[i]`` (default ``upper[i]``) (paper Section
        4.1, :math:`\hat r = \kappa r_{\max}`).  A sequence has one entry per mode: an int
        in ``[1, upper[i]]``, or a fraction :math:`\kappa_i \in (0, 1]` of that mode, read as
        above (e.g. ``(0.1, 0.1, 1.0, 1.0)`` compresses a conv kernel's channel modes only,
        the Tucker-2 format of Kim et al. 2016).
    upper : sequence of int
        Largest rank of each mode, :math:`r_{\max,i}`.
    sizes : sequence of int, optional
        What a fraction refers to (for Tucker ranks: the mode sizes :math:`n_i`, as the
        TDLRT layers do).

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError, TypeError
        Naming ``name`` and the accepted range.  Cost: O(d).
    """
    upper = [int(u) for u in upper]
    if rank is None:
        return tuple(upper)
    if isinstance(rank, bool):
        raise TypeError(f"{name} must be None, an int >= 1, a float in (0, 1] or a sequence of "
                        f"{len(upper)} ints; got {rank!r}")
    if isinstance(rank, numbers.Integral):
        if rank < 1:
            raise ValueError(f"{name} must be >= 1; got {rank}")
        return tuple(min(int(rank), u) for u in upper)
    base = upper if sizes is None else [int(x) for x in sizes]

    def of_fraction(k: float, u: int, b: int) -> int:  # ceil(kappa b), clipped to [1, u]
        return max(1, min(u, math.ceil(k * b - 1e-9)))

    if isinstance(rank, numbers.Real):
        k = float(rank)
        if not (0.0 < k <= 1.0):
            raise ValueError(f"a fractional {name} (kappa) must lie in (0, 1]; got {rank!r}")
        return tuple(of_fraction(k, u, b) for u, b in zip(upper, base, strict=True))
    try:
        vals = list(rank)
    except TypeError:
        raise TypeError(f"{name} must be None, an int >= 1, a float in (0, 1] or a sequence of "
                        f"{len(upper)} ints; got {rank!r}") from None
    if len(vals) != len(upper):
        raise ValueError(f"{name} must have one entry per mode ({len(upper)}); got {len(vals)}")
    out = []
    for i, (v, u) in enumerate(zip(vals, upper, strict=True)):
        if isinstance(v, numbers.Real) and not isinstance(v, (bool, numbers.Integral)):
            if not 0.0 < float(v) <= 1.0:
                raise ValueError(f"{name}[{i}] = {v!r}: a fraction of mode {i} must lie in "
                                 "(0, 1]")
            out.append(of_fraction(float(v), u, base[i]))
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}[{i}] must be an int in [1, {u}] or a fraction in (0, 1]; "
                            f"got {v!r}")
        if not 1 <= int(v) <= u:
            raise ValueError(f"{name}[{i}] = {v} must be in [1, {u}] "
                             f"(the largest rank of mode {i})")
        out.append(int(v))
    return tuple(out)


def _tucker_upper(shape: Sequence[int]) -> list[int]:
    return list(max_tucker_rank(shape))


def out_spatial(in_spatial: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                padding: Any, dilation: Sequence[int]) -> tuple[int, ...]:
    """Output spatial size of a convolution (the formula of ``nn.ConvNd``)."""
    if isinstance(padding, str):
        if padding == "same":
            return tuple(int(s) for s in in_spatial)
        padding = (0,) * len(kernel)
    return tuple(
        (int(n) + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(in_spatial, kernel, stride, padding, dilation, strict=True)
    )


def conv_macs(kind: str, kernel_shape: Sequence[int], ranks: Any, in_spatial: Sequence[int],
              out_spatial_size: Sequence[int], groups: int = 1) -> int:
    r"""Multiply-accumulates per sample of a (factorized) convolution or linear layer.

    Parameters
    ----------
    kind : {"dense", "tucker", "cp", "matrix"}
    kernel_shape : (n_out, n_in/groups, k_1, ..., k_N); ``(n_out, n_in)`` for linear layers
    ranks : Tucker ranks ``(r_0, ..., r_{d-1})``, CP rank ``R`` or matrix rank ``r``
    in_spatial, out_spatial_size : spatial sizes of input and output (``()`` for linear)
    groups : int

    Returns
    -------
    int

    Notes
    -----
    With :math:`P_\text{in}, P_\text{out}` the numbers of input/output positions and
    :math:`k = \prod_j k_j`:

    * dense: :math:`P_\text{out}\, n_0 n_1 k` (Eq. (1));
    * Tucker, the factorized path of Section 2.1 (1x1 conv with :math:`U_1^\top`,
      core conv with :math:`C \times_{j \ge 2} U_j`, 1x1 conv with :math:`U_0`; with g
      groups each group runs its own copy of the small convolutions):
      :math:`g P_\text{in} n_1 r_1 + g P_\text{out} r_0 r_1 k + P_\text{out} r_0 n_0`
      (:math:`n_1` = input channels per group);
      for a linear layer :math:`n_1 r_1 + r_1 r_0 + r_0 n_0`;
    * CP (1x1 in, depthwise spatial, 1x1 out):
      :math:`P_\text{in} n_1 R + P_\text{out} R k + P_\text{out} R n_0`;
    * matrix (:math:`r` filters of size :math:`n_1 k`, then a 1x1 conv):
      :math:`P_\text{out} r (n_1 k + n_0)`.

    The batch-independent cost of rebuilding small kernels is not included.
    A FLOP is counted as two multiply-accumulates by :mod:`tucker_dlra.nn.report`.
    """
    n = [int(s) for s in kernel_shape]
    k = math.prod(n[2:]) if len(n) > 2 else 1
    p_in = math.prod(in_spatial) if len(in_spatial) else 1
    p_out = math.prod(out_spatial_size) if len(out_spatial_size) else 1
    if kind == "dense":
        return p_out * n[0] * n[1] * k
    if kind == "tucker":
        r = [int(x) for x in ranks]
        if len(n) == 2:
            return n[1] * r[1] + r[1] * r[0] + r[0] * n[0]
        return tucker_conv_macs(n[0], n[1] * groups, groups, r[0], r[1], k, p_in, p_out)
    if kind == "cp":
        rr = int(ranks)
        return p_in * n[1] * groups * rr + p_out * rr * k + p_out * rr * n[0]
    if kind == "matrix":
        rr = int(ranks)
        if len(n) == 2:
            return rr * (n[0] + n[1])
        return p_out * rr * (n[1] * k + n[0])
    raise ValueError(f"kind must be 'dense', 'tucker', 'cp' or 'matrix'; got {kind!r}")


def conv_options_repr(m: nn.Module, dim: int) -> str:
    """The non-default ``nn.ConvNd`` options of a conv-like module, as ``extra_repr`` shows them."""
    s = ""
    if tuple(m.padding) != (0,) * dim:
        s += f", padding={m.padding}"
    if tuple(m.dilation) != (1,) * dim:
        s += f", dilation={m.dilation}"
    if m.groups != 1:
        s += f", groups={m.groups}"
    if m.bias is None:
        s += ", bias=False"
    if m.padding_mode != "zeros":
        s += f", padding_mode={m.padding_mode!r}"
    return s


def pointwise(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
              channels_last: bool = False) -> torch.Tensor:
    r"""1x1 convolution :math:`y_{n,:,\ell} = W x_{n,:,\ell} + b` as one batched GEMM.

    Parameters
    ----------
    x : tensor of shape ``(N, c_in, *spatial)`` (batched), any number of spatial dims
    w : tensor (c_out, c_in)
    bias : tensor (c_out,), optional
    channels_last : bool
        Return the result in channels-last memory layout (same shape and values): the
        GEMM :math:`(L, c_\text{in}) (c_\text{in}, c_\text{out})` per sample writes it
        directly, reading ``x`` in either layout without a copy.  Downstream ReLU,
        batch norm, pooling and convolutions then run their (on CPU much faster)
        channels-last kernels, e.g. 2x2 max-pooling of 128x20x24x24 floats: 0.9 ms instead
        of 8.4 ms (1 thread).

    Returns
    -------
    tensor (N, c_out, *spatial); the same values as ``F.convNd(x, w[..., None...], bias)``.
    Cost :math:`N c_\text{out} c_\text{in} L` multiply-adds, :math:`L = \prod` spatial.
    """
    n, c = x.shape[0], x.shape[1]
    if channels_last:
        spatial = tuple(x.shape[2:])
        xl = x.movedim(1, -1)
        a = (xl.reshape(n, -1, c) if xl.is_contiguous()
             else x.reshape(n, c, -1).transpose(1, 2))  # both views: no copy
        wb = w.t().expand(n, -1, -1)
        y = torch.bmm(a, wb) if bias is None else torch.baddbmm(bias.reshape(1, 1, -1), a, wb)
        return y.reshape((n,) + spatial + (w.shape[0],)).movedim(-1, 1)
    flat = x.reshape(n, c, -1)
    wb = w.expand(n, -1, -1)  # a stride-0 batch: no copy (torch.matmul would transpose x)
    if bias is None:
        y = torch.bmm(wb, flat)
    else:
        y = torch.baddbmm(bias.reshape(1, -1, 1), wb, flat)
    return y.reshape((n, w.shape[0]) + tuple(x.shape[2:]))


def resolve_tucker_rank(rank: Any, shape: Sequence[int], name: str = "rank",
                        max_rank: Sequence[int] | None = None) -> tuple[int, ...]:
    r"""Turn a rank specification into a valid Tucker rank of a kernel of ``shape``.

    Parameters
    ----------
    rank : None, int, float in (0, 1] or sequence of int / fraction
        Parsed by :func:`resolve_ranks` with the largest ranks
        :math:`\min(n_i, \prod_{j\ne i} n_j)` (a fraction refers to the mode sizes
        :math:`n_i`); ``None``: full rank (capped by ``max_rank``).
    shape : kernel shape :math:`(n_0, \dots, n_{d-1})`.
    max_rank : per-mode caps, optional.  An explicit sequence above a cap is an error; an
        int, a fraction or ``None`` is clipped to it.

    Returns
    -------
    tuple of int, a valid Tucker rank (:math:`r_i \le \prod_{j\ne i} r_j`): an explicit
    sequence that is not one is an error (:func:`tucker_dlra.tucker.check_tucker_rank`), an
    int or fraction is lowered to the largest valid rank below it
    (:func:`tucker_dlra.valid_rank`).  Cost :math:`O(d^2)`.
    """
    upper = list(max_tucker_rank(shape))
    cap = upper if max_rank is None else [min(u, int(m)) for u, m in zip(upper, max_rank,
                                                                        strict=True)]
    # an all-int sequence is taken as given; ints, fractions and mixed sequences of fractions
    # are lowered to a valid rank
    explicit = rank is not None and not isinstance(rank, numbers.Real) and all(
        isinstance(v, numbers.Integral) for v in rank)
    r = list(resolve_ranks(rank, upper, name, sizes=shape))
    if explicit:
        for i, (v, c) in enumerate(zip(r, cap, strict=True)):
            if v > c:
                raise ValueError(f"{name}[{i}] = {v} exceeds max_rank[{i}] = {c}")
        return check_tucker_rank(r, name)
    return valid_rank([min(v, c) for v, c in zip(r, cap, strict=True)])
