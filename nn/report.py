r"""Compression reports: ranks, parameters, compression rates, FLOPs and bytes per layer.

The compression rates are those of the paper (Section 4.1, Tables 1-5, following DLRT,
Schotthoefer et al. 2022).  For a layer with dense kernel shape :math:`(n_1,\dots,n_d)`
(d = 4 for a 2-d convolution, d = 2 for a linear layer) held in Tucker form with ranks
:math:`(r_1,\dots,r_d)` (the bias is not counted; it is never compressed):

.. math::

    P_\text{dense} = \prod_i n_i, \qquad
    P_\text{eval} = \prod_i r_i + \sum_i n_i r_i \quad\text{(core + factors, Eq. (3))},

    P_\text{train} = \prod_i \tilde r_i + \sum_i n_i \tilde r_i + \sum_i n_i r_i,
    \qquad \tilde r_i = \min(2 r_i, n_i),

    \text{eval compression} = 1 - P_\text{eval}/P_\text{dense}, \qquad
    \text{train compression} = 1 - P_\text{train}/P_\text{dense}.

:math:`P_\text{train}` counts what one step of the rank-adaptive Algorithm 1 holds at its
peak: the augmented bases :math:`\hat U_i \in \mathbb R^{n_i \times \tilde r_i}` (lines 5-7,
at most :math:`n_i` columns), the augmented core
:math:`\tilde C \in \mathbb R^{\tilde r_1 \times \dots \times \tilde r_d}` (line 8-9) and the
K-step variables :math:`K_i \in \mathbb R^{n_i \times r_i}` (lines 2-4).  For the fixed-rank
integrator (``adaptive=False``) :math:`\tilde r_i = r_i`.  The paper's AlexNet example
(Section 2.1: ranks [115, 57, 3, 3] of [384, 192, 3, 3]) gives
:math:`P_\text{eval} = 114{,}117` of :math:`663{,}552`, i.e. 82.8 % eval compression.
For the vanilla baselines (Section 4) :math:`P_\text{train} = P_\text{eval}` = the numbers
of the factorization (CP: :math:`R\sum_i n_i`; matrix: :math:`r(n_1 + \prod_{i\ge2} n_i)`);
for dense layers both equal :math:`P_\text{dense}`.  Gradients and optimizer state are not
part of these counts; they appear in the measured bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .vanilla import (
    VanillaCPConv,
    VanillaLowRankLinear,
    VanillaMatrixConv,
    VanillaTuckerConv,
    _VanillaConv,
    conv_macs,
)

__all__ = ["CompressionReport", "LayerReport", "MemoryReport", "compression_report",
           "memory_report", "parameter_counts"]

_DENSE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def parameter_counts(shape: Sequence[int], ranks: Any = None, kind: str = "tucker",
                     adaptive: bool = True) -> dict[str, int]:
    r"""Dense, inference and training parameter counts of one kernel (module docstring).

    Parameters
    ----------
    shape : sequence of int
        Dense kernel shape :math:`(n_1, \dots, n_d)`.
    ranks : Tucker ranks (tuple), CP rank or matrix rank (int), or None for ``"dense"``
    kind : {"tucker", "vanilla-tucker", "cp", "matrix", "dense"}
        ``"tucker"`` is a TDLRT layer (training counts of Algorithm 1);
        ``"vanilla-tucker"`` the same format trained by plain SGD (train = eval).
    adaptive : bool, default True
        TDLRT with basis augmentation (:math:`\tilde r_i = \min(2r_i, n_i)`) or the
        fixed-rank integrator (:math:`\tilde r_i = r_i`).

    Returns
    -------
    dict with ``dense``, ``eval``, ``train`` (numbers of scalars).

    Examples
    --------
    >>> c = parameter_counts((384, 192, 3, 3), (115, 57, 3, 3))
    >>> c["dense"], c["eval"], round(100 * (1 - c["eval"] / c["dense"]), 1)
    (663552, 114117, 82.8)
    """
    n = [int(s) for s in shape]
    dense = math.prod(n)
    if kind == "dense":
        return {"dense": dense, "eval": dense, "train": dense}
    if kind in ("tucker", "vanilla-tucker"):
        r = [int(x) for x in ranks]
        if len(r) != len(n):
            raise ValueError(f"ranks must have one entry per mode ({len(n)}); got {len(r)}")
        ev = math.prod(r) + sum(a * b for a, b in zip(n, r, strict=True))
        if kind == "vanilla-tucker":
            return {"dense": dense, "eval": ev, "train": ev}
        rt = [min(2 * b, a) for a, b in zip(n, r, strict=True)] if adaptive else r
        tr = math.prod(rt) + sum(a * b for a, b in zip(n, rt, strict=True)) + sum(
            a * b for a, b in zip(n, r, strict=True))
        return {"dense": dense, "eval": ev, "train": tr}
    if kind == "cp":
        ev = int(ranks) * sum(n)
        return {"dense": dense, "eval": ev, "train": ev}
    if kind == "matrix":
        ev = int(ranks) * (n[0] + math.prod(n[1:]))
        return {"dense": dense, "eval": ev, "train": ev}
    raise ValueError(f"kind must be 'tucker', 'vanilla-tucker', 'cp', 'matrix' or 'dense'; "
                     f"got {kind!r}")


@dataclass
class LayerReport:
    """One row of a :class:`CompressionReport` (see the module docstring for formulas).

    ``kind``: ``"tdlrt"``, ``"vanilla-tucker"``, ``"vanilla-cp"``, ``"vanilla-matrix"`` or
    ``"dense"``; ``layer``: ``"conv"`` or ``"linear"``; compression rates in percent;
    FLOPs (= 2 multiply-accumulates, per sample, bias excluded) are None without an input
    size; bytes are the storage actually allocated for the layer's parameters (bias
    included) and for its optimizer state.
    """

    name: str
    kind: str
    layer: str
    shape: tuple[int, ...]
    ranks: Any
    params_dense: int
    params_eval: int
    params_train: int
    eval_compression: float
    train_compression: float
    flops_dense: int | None = None
    flops_factorized: int | None = None
    bytes_params: int = 0
    bytes_optimizer: int = 0


@dataclass
class CompressionReport:
    """Per-layer rows and totals of :func:`compression_report`.

    Attributes
    ----------
    layers : list of LayerReport
    eval_compression, train_compression : float
        :math:`1 - \\sum P_\\text{eval} / \\sum P_\\text{dense}` (resp. train) in percent over
        all conv and linear layers (dense ones count with no compression).
    eval_compression_conv, train_compression_conv : float
        The same over the convolutions only (the paper's "convolutions compression rate",
        Tables 3-4).
    flops_dense, flops_factorized : int or None
        Sums over the layers, per sample.
    bytes_params : int
        Bytes of the storage of all parameters of the model.
    bytes_optimizer : int
        Bytes of all tensors in the optimizer state (0 without an optimizer).
    """

    layers: list[LayerReport] = field(default_factory=list)
    eval_compression: float = 0.0
    train_compression: float = 0.0
    eval_compression_conv: float = 0.0
    train_compression_conv: float = 0.0
    flops_dense: int | None = None
    flops_factorized: int | None = None
    bytes_params: int = 0
    bytes_optimizer: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable) with ``layers`` and ``totals``."""
        rows = []
        for r in self.layers:
            d = asdict(r)
            d["shape"] = list(r.shape)
            d["ranks"] = list(r.ranks) if isinstance(r.ranks, tuple) else r.ranks
            rows.append(d)
        totals = {k: v for k, v in asdict(self).items() if k != "layers"}
        return {"layers": rows, "totals": totals}

    def __str__(self) -> str:
        head = ("layer", "kind", "shape", "ranks", "dense", "eval", "train", "eval%",
                "train%", "MFLOP dense", "MFLOP fact.", "param B", "optim B")
        rows = []
        for r in self.layers:
            rk = ("x".join(map(str, r.ranks)) if isinstance(r.ranks, tuple)
                  else "-" if r.ranks is None else str(r.ranks))
            rows.append((r.name or "<model>", r.kind, "x".join(map(str, r.shape)), rk,
                         str(r.params_dense), str(r.params_eval), str(r.params_train),
                         f"{r.eval_compression:.2f}", f"{r.train_compression:.2f}",
                         _mflop(r.flops_dense), _mflop(r.flops_factorized),
                         str(r.bytes_params), str(r.bytes_optimizer)))
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
                  for i, h in enumerate(head)]
        line = lambda cells: "  ".join(c.rjust(w) if i >= 4 else c.ljust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths,
                                                                      strict=True)))
        out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
        out.append("")
        out.append(f"eval compression  {self.eval_compression:6.2f} % (all layers), "
                   f"{self.eval_compression_conv:6.2f} % (convolutions)")
        out.append(f"train compression {self.train_compression:6.2f} % (all layers), "
                   f"{self.train_compression_conv:6.2f} % (convolutions)")
        if self.flops_dense is not None:
            ratio = self.flops_dense / max(self.flops_factorized or 1, 1)
            out.append(f"FLOPs per sample  {_mflop(self.flops_dense)} M dense, "
                       f"{_mflop(self.flops_factorized)} M factorized ({ratio:.2f}x fewer)")
        out.append(f"bytes             {self.bytes_params} parameters, "
                   f"{self.bytes_optimizer} optimizer state")
        return "\n".join(out)


def _mflop(x: int | None) -> str:
    return "-" if x is None else f"{x / 1e6:.3f}"


def _is_tdlrt(m: nn.Module) -> bool:
    return (not isinstance(m, (_VanillaConv, VanillaLowRankLinear))
            and hasattr(m, "core") and hasattr(m, "factors") and hasattr(m, "kernel_shape"))


def _classify(m: nn.Module) -> str | None:
    if _is_tdlrt(m):
        return "tdlrt"
    if isinstance(m, VanillaTuckerConv):
        return "vanilla-tucker"
    if isinstance(m, VanillaCPConv):
        return "vanilla-cp"
    if isinstance(m, (VanillaMatrixConv, VanillaLowRankLinear)):
        return "vanilla-matrix"
    if isinstance(m, _DENSE):
        return "dense"
    return None


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the storages behind the tensors in ``obj`` (each storage counted once).

    ``untyped_storage().nbytes()`` is what is really allocated: a tensor that is a slice
    of a larger buffer (e.g. factors kept at a maximum rank) counts with the whole buffer.
    """
    seen: set[tuple[Any, int]] = set()
    total = 0
    for t in _tensors(obj):
        st = t.untyped_storage()
        key = (t.device, st.data_ptr())
        if key in seen and st.data_ptr() != 0:
            continue
        seen.add(key)
        total += st.nbytes()
    return total


def _record_shapes(model: nn.Module, mods: dict[str, nn.Module],
                   example: torch.Tensor) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Input/output spatial sizes of each layer in one no-grad eval-mode forward pass."""
    seen: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    handles = []
    for name, m in mods.items():
        def hook(mod, inp, out, name=name):
            if name not in seen:
                seen[name] = (tuple(inp[0].shape), tuple(out.shape))
        handles.append(m.register_forward_hook(hook))
    modes = {n: m.training for n, m in model.named_modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        for n, m in model.named_modules():
            m.training = modes.get(n, m.training)
    return seen


def compression_report(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    example_input: torch.Tensor | None = None,
    adaptive: bool | None = None,
) -> CompressionReport:
    r"""Per-layer ranks, parameters, compression rates, FLOPs and bytes of a model.

    Parameters
    ----------
    model : nn.Module
        Any model; its TDLRT Tucker layers, vanilla baselines and dense Conv/Linear layers
        are reported (other modules only count in ``bytes_params``).
    input_shape : sequence of int, optional
        Shape of one input sample without the batch dimension, e.g. ``(1, 28, 28)``:
        enables the FLOP counts (one no-grad forward pass in eval mode with a zero batch
        of one, train/eval modes restored afterwards).
    optimizer : torch.optim.Optimizer, optional
        Its state tensors are added to the bytes (per layer: state of the layer's
        parameters; total: all state tensors).
    example_input : torch.Tensor, optional
        A batch to run instead of zeros of ``input_shape`` (for models with other inputs).
    adaptive : bool, optional
        Training counts for the rank-adaptive (True) or fixed-rank (False) integrator;
        default: the optimizer's ``adaptive`` setting if it has one, else True.

    Returns
    -------
    CompressionReport
        ``str(report)`` is a table; ``report.to_dict()`` is JSON-ready.

    Notes
    -----
    Formulas: module docstring (paper Section 4.1 and Section 2.1's 82.8 % AlexNet
    example).  FLOPs: two per multiply-accumulate (as ``torch.utils.flop_counter``
    counts them) -- dense convolution (Eq. (1)) versus the factorized path of Section 2.1
    (1x1 conv on the unpadded input, core conv, 1x1 conv; CP: 1x1, depthwise, 1x1;
    matrix: r filters then 1x1), by :func:`tucker_dlra.nn.vanilla.conv_macs`.  These are
    the counts of each path whichever path a layer's ``forward_mode`` picks.  Cost: one forward
    pass when ``input_shape``/``example_input`` is given, otherwise :math:`O(\#\text{layers})`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer; got "
                        f"{type(optimizer).__name__}")
    if adaptive is None:
        adaptive = bool(optimizer.defaults.get("adaptive", True)) if optimizer else True
    mods: dict[str, nn.Module] = {}
    kinds: dict[str, str] = {}
    seen_ids: set[int] = set()
    for name, m in model.named_modules():
        k = _classify(m)
        if k is None or id(m) in seen_ids:
            continue
        seen_ids.add(id(m))
        mods[name], kinds[name] = m, k
    shapes = {}
    if example_input is None and input_shape is not None:
        try:
            dims = tuple(int(s) for s in input_shape)
        except TypeError:
            raise TypeError(f"input_shape must be a sequence of ints; got {input_shape!r}") \
                from None
        if not dims or min(dims) < 1:
            raise ValueError(f"input_shape must hold positive sizes (no batch dimension); "
                             f"got {input_shape!r}")
        ref = next(iter(model.parameters()), None)
        example_input = torch.zeros((1,) + dims, dtype=ref.dtype if ref is not None else None,
                                    device=ref.device if ref is not None else None)
    if example_input is not None:
        try:
            shapes = _record_shapes(model, mods, example_input)
        except (RuntimeError, ValueError, TypeError) as exc:
            what = (f"input_shape {tuple(example_input.shape[1:])}" if input_shape is not None
                    else f"example_input of shape {tuple(example_input.shape)}")
            first = " ".join(str(exc).split())[:300]
            raise ValueError(f"{what} does not fit the model: its forward pass fails ({first})"
                             ) from None
    state = optimizer.state if optimizer is not None else {}
    rows = []
    for name, m in mods.items():
        kind = kinds[name]
        if kind == "tdlrt":
            shape = tuple(int(s) for s in m.kernel_shape)
            ranks = tuple(int(s) for s in m.core.shape)
            counts = parameter_counts(shape, ranks, "tucker", adaptive)
            fkind = "tucker"
        elif kind == "vanilla-tucker":
            shape, ranks = tuple(m.kernel_shape), tuple(m.ranks)
            counts = parameter_counts(shape, ranks, "vanilla-tucker")
            fkind = "tucker"
        elif kind == "vanilla-cp":
            shape, ranks = tuple(m.kernel_shape), m.ranks
            counts = parameter_counts(shape, ranks, "cp")
            fkind = "cp"
        elif kind == "vanilla-matrix":
            shape, ranks = tuple(m.kernel_shape), m.ranks
            counts = parameter_counts(shape, ranks, "matrix")
            fkind = "matrix"
        else:
            shape, ranks = tuple(int(s) for s in m.weight.shape), None
            counts = parameter_counts(shape, None, "dense")
            fkind = "dense"
        layer = "linear" if len(shape) == 2 else "conv"
        fd = ff = None
        if name in shapes:
            (ishape, oshape) = shapes[name]
            nsp = len(shape) - 2
            in_sp = ishape[len(ishape) - nsp:] if nsp else ()
            out_sp = oshape[len(oshape) - nsp:] if nsp else ()
            groups = int(getattr(m, "groups", 1))
            batch_rest = math.prod(ishape[1:-1]) if layer == "linear" and len(ishape) > 2 else 1
            fd = 2 * batch_rest * conv_macs("dense", shape, None, in_sp, out_sp, groups)
            ff = fd if fkind == "dense" else 2 * batch_rest * conv_macs(
                fkind, shape, ranks, in_sp, out_sp, groups)
        params = list(m.parameters())
        rows.append(LayerReport(
            name=name, kind=kind, layer=layer, shape=shape, ranks=ranks,
            params_dense=counts["dense"], params_eval=counts["eval"],
            params_train=counts["train"],
            eval_compression=100.0 * (1.0 - counts["eval"] / counts["dense"]),
            train_compression=100.0 * (1.0 - counts["train"] / counts["dense"]),
            flops_dense=fd, flops_factorized=ff,
            bytes_params=_tensor_bytes(params),
            bytes_optimizer=_tensor_bytes([state[p] for p in params if p in state]),
        ))
    rep = CompressionReport(layers=rows)
    for suffix, sel in (("", rows), ("_conv", [r for r in rows if r.layer == "conv"])):
        dense = sum(r.params_dense for r in sel)
        setattr(rep, "eval_compression" + suffix,
                100.0 * (1 - sum(r.params_eval for r in sel) / dense) if dense else 0.0)
        setattr(rep, "train_compression" + suffix,
                100.0 * (1 - sum(r.params_train for r in sel) / dense) if dense else 0.0)
    if shapes:
        rep.flops_dense = sum(r.flops_dense or 0 for r in rows)
        rep.flops_factorized = sum(r.flops_factorized or 0 for r in rows)
    rep.bytes_params = _tensor_bytes(list(model.parameters()))
    rep.bytes_optimizer = _tensor_bytes(dict(state)) if optimizer is not None else 0
    return rep


# ---------------------------------------------------------------------------- memory
_MEM_FIELDS = ("params", "optimizer_state", "gradients", "step_workspace")


@dataclass
class MemoryReport:
    r"""Bytes of a model + optimizer, beside the same model dense (:func:`memory_report`).

    All attributes are byte counts, except ``layers``.

    Attributes
    ----------
    params, optimizer_state :
        Measured: storages of the parameters and of the optimizer's state tensors.
    gradients :
        Held between ``backward`` and ``step`` (from shapes): per Tucker layer the dense
        kernel gradient :math:`\prod_i n_i` (``grad_full``) and ``core.grad``
        :math:`\prod_i r_i` (plus the factors' :math:`\sum_i n_i r_i` when
        ``param_grads`` is on); every other parameter its ``.grad``.
    step_workspace :
        Transient tensors of one Algorithm 1 step (from shapes): per Tucker layer the
        augmented bases :math:`\sum_i n_i \tilde r_i`, the augmented core
        :math:`\prod_i \tilde r_i` and the K-step variables :math:`\sum_i n_i r_i`, with
        :math:`\tilde r_i = \min(2 r_i, n_i)` (:math:`r_i` without augmentation) -- the
        :math:`P_\text{train}` of :func:`parameter_counts`.
    step_transient : gradients + step_workspace.
    total : params + optimizer_state + step_transient.
    dense_params, dense_optimizer_state, dense_gradients, dense_total :
        The dense model (every Tucker layer replaced by its full kernel): parameters, one
        parameter-sized state buffer per momentum / Adam moment of the optimizer's
        groups, and ``.grad`` of every parameter (no workspace).
    layers : list of dict
        Per Tucker layer: name, ranks and the four estimated/measured byte counts.
    """

    params: int = 0
    optimizer_state: int = 0
    gradients: int = 0
    step_workspace: int = 0
    dense_params: int = 0
    dense_optimizer_state: int = 0
    dense_gradients: int = 0
    layers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def step_transient(self) -> int:
        return self.gradients + self.step_workspace

    @property
    def total(self) -> int:
        return self.params + self.optimizer_state + self.step_transient

    @property
    def dense_total(self) -> int:
        return self.dense_params + self.dense_optimizer_state + self.dense_gradients

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (totals, dense equivalents and per-layer rows)."""
        d = {k: v for k, v in asdict(self).items() if k != "layers"}
        d.update(step_transient=self.step_transient, total=self.total,
                 dense_total=self.dense_total, layers=[dict(r) for r in self.layers])
        return d

    def __str__(self) -> str:
        rows = [("parameters", self.params, self.dense_params),
                ("optimizer state", self.optimizer_state, self.dense_optimizer_state),
                ("gradients", self.gradients, self.dense_gradients),
                ("step workspace", self.step_workspace, 0),
                ("total", self.total, self.dense_total)]
        out = [f"{'bytes':16s} {'model':>14s} {'dense':>14s} {'ratio':>7s}"]
        for name, a, b in rows:
            ratio = f"{a / b:7.3f}" if b else "      -"
            out.append(f"{name:16s} {a:14d} {b:14d} {ratio}")
        return "\n".join(out)


def _state_buffers(group: dict) -> int:
    """Parameter-sized state tensors per parameter of a dense step with this group's rule:
    2 for Adam (first and second moments), 1 for SGD with momentum, else 0."""
    if group.get("descent") == "adam" or ("betas" in group and "momentum" not in group):
        return 2
    return 1 if group.get("momentum", 0) else 0


def memory_report(model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                  adaptive: bool | None = None) -> MemoryReport:
    r"""Parameter, optimizer-state, gradient and step-workspace bytes, beside dense.

    Parameters
    ----------
    model : nn.Module
    optimizer : torch.optim.Optimizer, optional
        Its state is measured; its groups give the dense optimizer state (one buffer per
        momentum or Adam moment) and, for :class:`~tucker_dlra.nn.TDLRT`, ``adaptive``.
    adaptive : bool, optional
        Augmented (True, default) or fixed-rank (False) step workspace; default from the
        optimizer's group of each layer's core.

    Returns
    -------
    MemoryReport
        See its attributes for what is measured and what is estimated from shapes.

    Notes
    -----
    Element sizes are those of each parameter's dtype.  Parameters (and their state)
    outside ``optimizer`` get no dense state buffers.  Peak device memory of a real step
    also holds the activations of forward/backward and allocator slack: measure it with
    ``torch.cuda.max_memory_allocated``.  Cost: :math:`O(\#	ext{parameters})`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer; got "
                        f"{type(optimizer).__name__}")
    groups = {}
    if optimizer is not None:
        for g in optimizer.param_groups:
            for p in g["params"]:
                groups[id(p)] = g
    rep = MemoryReport()
    rep.params = _tensor_bytes(list(model.parameters()))
    rep.optimizer_state = _tensor_bytes(dict(optimizer.state)) if optimizer is not None else 0
    done: set[int] = set()
    for name, m in model.named_modules():
        if not _is_tdlrt(m) or id(m.core) in done:
            continue
        done.add(id(m.core))
        item = m.core.element_size()
        n = [int(s) for s in m.kernel_shape]
        r = [int(s) for s in m.core.shape]
        group = groups.get(id(m.core), {})
        adapt = adaptive if adaptive is not None else bool(group.get("adaptive", True))
        dense_numel = math.prod(n)
        grads = dense_numel + math.prod(r)
        if getattr(m, "param_grads", True):
            grads += sum(a * b for a, b in zip(n, r, strict=True))
        work = parameter_counts(n, r, "tucker", adapt)["train"]
        extra = [p for p in m.parameters() if p is not m.core and
                 all(p is not f for f in m.factors)]  # bias
        extra_numel = sum(p.numel() for p in extra)
        bufs = _state_buffers(group) if group else 0
        row = {"name": name, "ranks": r, "params": _tensor_bytes(list(m.parameters())),
               "gradients": (grads + extra_numel) * item, "step_workspace": work * item,
               "dense_params": (dense_numel + extra_numel) * item}
        row["dense_optimizer_state"] = bufs * row["dense_params"]
        rep.layers.append(row)
        rep.gradients += row["gradients"]
        rep.step_workspace += row["step_workspace"]
        rep.dense_params += row["dense_params"]
        rep.dense_optimizer_state += row["dense_optimizer_state"]
        done.update(id(p) for p in m.parameters())
    for p in model.parameters():
        if id(p) in done:
            continue
        done.add(id(p))
        b = p.numel() * p.element_size()
        rep.gradients += b
        rep.dense_params += b
        g = groups.get(id(p))
        rep.dense_optimizer_state += (_state_buffers(g) if g else 0) * b
    rep.dense_gradients = rep.dense_params
    return rep
