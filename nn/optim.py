r"""The TDLRT optimizer: Algorithm 1 of the paper as a ``torch.optim.Optimizer``.

Orchestration only: the structure of the step (K-phase, augmentation, Galerkin core,
C-step, truncation, re-rounding, error bound, transport maps) is
:func:`tucker_dlra.bug_step.bug_step` -- the same code the integrators ``bug``, ``ra_bug``
and ``parallel_bug`` run -- called once for all Tucker layers with one descent step as
substep solver (K-gradients of Theorem 1 by :func:`~tucker_dlra.steps.k_gradients`,
computed by the layers' kernel-only backward, :mod:`tucker_dlra.nn.distributed`;
C-gradients by :func:`~tucker_dlra.steps.c_gradient`).  This module keeps the torch
concerns: param groups, the descent rule (SGD/Adam, :meth:`TDLRT._descend`), the atomic
commit and the optimizer state.  Updates run under ``torch.no_grad()``;
parameters keep their identity (``copy_`` when the shape is unchanged, ``p.data = new``
when ranks change) and all state lives in ``self.state[p]`` with the parameter's shape,
so ``state_dict``/``load_state_dict`` work unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from tucker_dlra import RULES, TuckerTensor, c_gradient
from tucker_dlra._validate import check_tolerance
from tucker_dlra.bug_step import (
    NonFiniteCore,
    Truncation,
    bug_step_begin,
    bug_step_end,
    core_state_transport_many,
    k_starts,
    k_state_transport_many,
    k_transport_many,
    read_back,
    sync_free_eigh,
)
from tucker_dlra.tucker import max_tucker_rank

from . import distributed
from .layers import _STEP_GENERATION, _TuckerLayer, layer_of
from .layers._base import set_tucker_many

__all__ = ["TDLRT"]

_MOMENT_KEYS = ("momentum_buffer", "exp_avg")  # linear states: transported by projection
_SQ_KEYS = ("exp_avg_sq",)  # second moments: transported by squared transport matrices


def _check_group(group: dict) -> None:
    def real(name: str, low: float, high: float | None = None, low_open: bool = False,
             high_open: bool = False) -> float:
        v = group[name]
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must be a real number; got {v!r}")
        v = float(v)
        bad = (math.isnan(v) or math.isinf(v) or v < low or (low_open and v == low)
               or (high is not None and (v > high or (high_open and v == high))))
        if bad:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            raise ValueError(f"{name} must lie in {lo}{low}, {high if high is not None else 'inf'}"
                             f"{hi}; got {group[name]!r}")
        return v

    real("lr", 0.0)
    mu = real("momentum", 0.0, 1.0, high_open=True)
    damp = real("dampening", 0.0, 1.0)
    real("weight_decay", 0.0)
    real("eps", 0.0, low_open=True)
    if not isinstance(group["nesterov"], bool):
        raise TypeError(f"nesterov must be a bool; got {group['nesterov']!r}")
    if group["nesterov"] and (mu <= 0 or damp != 0):
        raise ValueError("nesterov momentum requires momentum > 0 and dampening = 0")
    if check_tolerance(group["tau"], "tau") is not None and group["tau"] >= 1:
        raise ValueError(f"tau must be in [0, 1) (relative tolerance); got {group['tau']!r}")
    if group["tau"] is None:
        raise TypeError("tau must be a real number >= 0; got None")
    if not isinstance(group["adaptive"], bool):
        raise TypeError(f"adaptive must be a bool; got {group['adaptive']!r}")
    if group["integrator"] not in ("bug", "parallel"):
        raise ValueError(f"integrator must be 'bug' or 'parallel'; got {group['integrator']!r}")
    if group["rule"] not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {group['rule']!r}")
    if group["descent"] not in ("sgd", "adam"):
        raise ValueError(f"descent must be 'sgd' or 'adam'; got {group['descent']!r}")
    betas = group["betas"]
    try:
        b1, b2 = (float(b) for b in betas)
    except (TypeError, ValueError):
        raise TypeError(f"betas must be a pair of floats in [0, 1); got {betas!r}") from None
    for name, b in (("betas[0]", b1), ("betas[1]", b2)):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"{name} must lie in [0, 1); got {b}")
    for name in ("max_rank", "min_rank"):
        v = group[name]
        if v is None:
            continue
        vals = [v] if isinstance(v, numbers.Integral) else list(v)
        for x in vals:
            if x is not None and (isinstance(x, bool) or not isinstance(x, numbers.Integral)
                                  or x < 1):
                raise ValueError(f"{name} must be None, an int >= 1 or a tuple of them; got {v!r}")


def _fit(bounds: list[int], shape: Any) -> list[int]:
    """Clip per-mode rank bounds to the largest ranks of a core of ``shape`` (the augmented
    core has min(2 r_i, n_i) <= n_i rows per mode, so a layer bound n_i may exceed it)."""
    return [min(int(b), u) for b, u in zip(bounds, max_tucker_rank(shape), strict=True)]


class _NonFiniteUpdate(Exception):
    """Internal: an intermediate of the step is not finite (nothing has been written)."""


class _NonFiniteGradient(Exception):
    """Internal: a gradient the step consumes is not finite (nothing has been written)."""


def _finite_flag(tensors: Iterable[torch.Tensor]) -> torch.Tensor | None:
    """0-d bool tensor: all entries of all ``tensors`` are finite (no host sync).

    ``_foreach_mul(ts, 0)`` (NaN exactly where an entry is NaN or infinite) and
    ``_foreach_max`` (NaN propagates), then one reduction: a handful of ATen ops whatever
    the number of tensors, and no overflow for large finite values.  ``None`` for an
    empty list.
    """
    ts = [torch.view_as_real(t) if t.is_complex() else t for t in tensors if t.numel()]
    if not ts:
        return None
    dev = ts[0].device
    # x * 0 is 0 for finite x and NaN for NaN and +-inf; the max propagates NaN
    maxima = torch._foreach_max(torch._foreach_mul(ts, 0.0))
    if any(n.device != dev for n in maxima):  # pragma: no cover - mixed devices
        maxima = [n.to(dev) for n in maxima]
    dt = torch.promote_types(maxima[0].dtype, torch.float32)
    return torch.isfinite(torch.stack([n.to(dt) for n in maxima]
                                      if any(n.dtype != dt for n in maxima) else maxima)).all()


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """All entries finite; one host sync (see :func:`_finite_flag`)."""
    flag = _finite_flag(tensors)
    return True if flag is None else bool(flag)


def _matmuls(a: list[torch.Tensor], b: list[torch.Tensor], transpose_a: bool = False
             ) -> list[torch.Tensor]:
    """``a[k] @ b[k]`` (``a[k].mT @ b[k]`` with ``transpose_a``) for every ``k``: pairs of
    equal shapes, dtype and device run as one batched product (the many small transport
    matrices of a step: a few operations per shape instead of one or two per pair)."""
    groups: dict[tuple, list[int]] = {}
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        groups.setdefault((x.shape, y.shape, x.dtype, y.dtype, x.device), []).append(k)
    out: list[Any] = [None] * len(a)
    for idx in groups.values():
        if len(idx) < 3:
            for k in idx:
                out[k] = (a[k].mT if transpose_a else a[k]) @ b[k]
            continue
        x = torch.stack([a[k] for k in idx])
        res = torch.bmm(x.mT if transpose_a else x, torch.stack([b[k] for k in idx]))
        for k, r in zip(idx, res.unbind(0), strict=True):
            out[k] = r
    return out


def _matmuls_nested(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]],
                    transpose_a: bool = False) -> list[list[torch.Tensor]]:
    """:func:`_matmuls` over lists of lists (one list per layer), same nesting out."""
    flat = _matmuls([x for xs in a for x in xs], [y for ys in b for y in ys], transpose_a)
    out, pos = [], 0
    for xs in a:
        out.append(flat[pos:pos + len(xs)])
        pos += len(xs)
    return out


def _group_key(group: dict) -> tuple:
    """The options of a param group (not its parameters), as a hashable key."""
    return tuple(sorted((k, repr(v)) for k, v in group.items()
                        if k not in ("params", "param_names")))


def _flatten(obj: Any, leaves: list[torch.Tensor]) -> Any:
    """Structure of ``obj`` with its tensors replaced by indices into ``leaves``.

    Handles lists, tuples, dicts, dataclasses and :class:`tucker_dlra.TuckerTensor`;
    anything else is a constant of the structure.
    """
    if torch.is_tensor(obj):
        leaves.append(obj)
        return ("T", len(leaves) - 1)
    if isinstance(obj, TuckerTensor):
        return ("TT", _flatten(obj.core, leaves), _flatten(obj.factors, leaves),
                obj.orthonormal)
    if isinstance(obj, list | tuple):
        return ("L" if isinstance(obj, list) else "U", [_flatten(x, leaves) for x in obj])
    if isinstance(obj, dict):
        return ("D", [(k, _flatten(v, leaves)) for k, v in obj.items()])
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return ("DC", type(obj), [(f.name, _flatten(getattr(obj, f.name), leaves))
                                  for f in dataclasses.fields(obj)])
    return ("C", obj)


def _unflatten(spec: Any, leaves: list[torch.Tensor]) -> Any:
    """Inverse of :func:`_flatten` with new ``leaves``."""
    kind = spec[0]
    if kind == "T":
        return leaves[spec[1]]
    if kind == "TT":
        core, factors = _unflatten(spec[1], leaves), _unflatten(spec[2], leaves)
        # the flag was checked when the traced tensor was built: trusted path (no sync)
        return TuckerTensor._orthonormal(core, factors) if spec[3] else TuckerTensor(core, factors)
    if kind == "L":
        return [_unflatten(x, leaves) for x in spec[1]]
    if kind == "U":
        return tuple(_unflatten(x, leaves) for x in spec[1])
    if kind == "D":
        return {k: _unflatten(v, leaves) for k, v in spec[1]}
    if kind == "DC":
        return spec[1](**{k: _unflatten(v, leaves) for k, v in spec[2]})
    return spec[1]


class TDLRT(Optimizer):
    r"""Rank-adaptive dynamical low-rank training of Tucker layers (paper Algorithm 1).

    ``loss.backward(); opt.step()`` performs, for every Tucker layer whose core and
    factors are among ``params``, one complete step of Algorithm 1 from the single
    gradient :math:`G = \nabla_W \mathcal L(W_0)` captured in the backward pass
    (``layer.grad_full``), and the same descent rule on all other parameters.

    Parameters
    ----------
    params : iterable of Parameters or param groups
        Usually ``model.parameters()``.  A Tucker layer's K-steps use the options of the
        groups holding its factors, its C-step and rank options those of its core's group.
    lr : float >= 0
        Learning rate :math:`\lambda` of every substep (one descent step per substep).
    momentum, dampening, nesterov, weight_decay :
        As ``torch.optim.SGD``.  Weight decay adds :math:`\mathrm{wd}\,W` to :math:`G`,
        i.e. :math:`\mathrm{wd}\,K_i` to the K-gradient and :math:`\mathrm{wd}\,\tilde C`
        to the C-gradient.
    tau : float >= 0
        Relative truncation tolerance :math:`\tau` (Algorithm 1, line 10), applied as
        ``truncate(..., rtol=tau, rule=rule)``.
    adaptive : bool
        ``True``: Algorithm 1 with augmentation and truncation.  ``False``: the
        fixed-rank BUG (:math:`U_i \leftarrow \mathrm{orth}(K_i(\lambda))`, Galerkin core
        :math:`\tilde C = C \times_i U_i^{new\top}U_i`).  Its C-step needs
        :math:`\nabla_W\mathcal L` at :math:`\tilde C \times_i U^{new}_i \ne W_0`: with
        ``step(closure)`` the closure is called a second time at that point (exact
        fixed-rank BUG, Algorithm 1 line 9); without a closure the C-gradient is
        :math:`G \times_i U_i^{new\top}` from the single backward pass, i.e. evaluated at
        :math:`W_0` (a difference of :math:`O(\lambda)` in the gradient,
        :math:`O(\lambda^2)` in the step).
    integrator : {"bug", "parallel"}
        ``"bug"``: Algorithm 1.  ``"parallel"``: the parallel BUG (Ceruti, Kusch, Lubich &
        Sulz): the C-step runs in the old bases with the same :math:`G`, the augmented core
        is assembled by :func:`tucker_dlra.parallel_core`; with ``adaptive=False`` it is
        truncated back to the current ranks.  There is no step rejection (a training step
        is never repeated), unlike ``tucker_dlra.integrators.parallel_bug``'s default.
    rule : {"per_mode", "split"}
        Truncation rule (:data:`tucker_dlra.RULES`); ``"per_mode"`` (default) discards a tail
        :math:`\le\tau\|\hat C\|` in each mode, ``"split"`` guarantees
        :math:`\|\hat C - C'\| \le \tau\|\hat C\|`.
    max_rank, min_rank : int or tuple, optional
        Rank bounds, combined with each layer's own ``max_rank``/``min_rank`` (the
        tighter wins).  An int applies to every mode (clipped to the mode's size); a
        tuple applies to the layers whose kernel order equals its length.
    descent : {"sgd", "adam"}
        The descent rule of every substep and of the other parameters.
    betas, eps : Adam's coefficients.
    nonfinite : {"raise", "skip"}
        What a step does when a captured kernel gradient or a parameter gradient is not
        finite (or the update would not be): raise ``FloatingPointError`` or skip the step
        with a warning.  Either way the model and the optimizer state are left untouched
        (the step computes every update, Tucker layers and plain parameters, before it
        writes any).
    capture : {"auto", True, False}
        Fixed-shape fast path: the device half of the step (everything before the one
        read-back of the ranks) is traced into a graph of ATen operations per shape key
        (ranks, dtypes, state layout, group options) and replayed while the key repeats;
        a rank change runs eagerly (tracing anew).  ``"auto"``: on when every gradient is
        on a CUDA device.  Not used with Adam (its bias corrections change every step) or
        a closure.  ``opt.capture_stats`` counts traces and replays.

    Notes
    -----
    **One pass suffices**: after augmentation the first :math:`r_i` columns of
    :math:`\hat U_i` span :math:`U_i` (:math:`U_i = \hat U_i[:, :r_i] R^{11}_i`), so
    :math:`\tilde C \times_i \hat U_i = W_0` and the C-gradient at the start of the
    C-step is :math:`G \times_i \hat U_i^\top` (``c_gradient(G, U_hat)``).

    **Batched step.**  All Tucker layers go through one
    :func:`tucker_dlra.bug_step.bug_step`: the QRs of the core unfoldings and of
    :math:`[U_i \mid K_i]` and the eigendecompositions of the truncation are batched
    over equal sizes, the ranks of all layers are decided on the device and read back
    once, together with the finiteness of the gradients and of every new tensor; the
    descent rule runs as ``torch._foreach_*`` calls per param group.  Non-finite
    gradients flow through the step harmlessly (QR propagates NaN; the Gram matrices are
    cleaned before ``eigh``) and are reported by that one read-back.

    **K-start cache.**  The QRs of the core unfoldings at the committed point (Algorithm 1,
    line 2), computed anyway for the momentum transport, are kept and reused by the next
    step's K-phase when the layer's values are provably unchanged: the key holds each core
    and factor's identity, storage, version counter (every in-place write outside
    ``.data``), shape, dtype and device, the layer's value generation (bumped by
    ``clear_kernel_cache``, which ``set_tucker``, ``load_state_dict``,
    ``reset_parameters``, ``.to()`` and the first DDP forward call) and the global
    ``torch.optim`` step counter (a step of any other optimizer in between invalidates it);
    :meth:`load_state_dict` drops the cache.  **One unsupported case**, shared with the
    layers' kernel cache: a write into a core or factor through ``p.data`` (which bypasses
    the version counter) must be followed by ``layer.clear_kernel_cache()``, else the next
    forward and step use the old values.

    **Optimizer state and vector transport.**  For factor :math:`U_i` the state holds
    the moments of the K-gradient, an :math:`n_i\times r_i` matrix :math:`M` in the
    coordinates :math:`K_i` of :math:`W = G_i \times_i K_i \times_{j\ne i} U_j`; for the
    core, moments of the C-gradient (shape of the core).  Whenever bases or ranks change
    the linear moments (momentum buffer, Adam's first moment) are transported by
    embedding them as ambient Tucker tensors and projecting onto the new coordinates with
    the core's own gradient maps: :math:`M \mapsto` ``k_gradient(TuckerTensor(G_i,
    [U_j, M]), G_i', U', i)`` :math:`= M B_i` and :math:`M_C \mapsto` ``c_gradient(
    TuckerTensor(M_C, U), U')`` :math:`= M_C \times_j (U_j'^\top U_j)`.  With bases and
    ranks unchanged this is the identity; augmentation zero-pads.  Adam's second moment
    :math:`v` (elementwise, non-negative) is transported by the elementwise squares of
    the same matrices, :math:`v \mapsto v\,(B_i\circ B_i)` and
    :math:`v \times_j (A_j \circ A_j)`: exact for the permutations and sign flips that
    truncation mostly produces, and in general the variance of the transported gradient
    when the old coordinates are uncorrelated.  New directions start with a zero first
    moment, and with Adam's second moment set to the mean of the old one (the weight of
    the old coordinates in a new coordinate, :math:`w = 1 \times_j (A_j\circ A_j)`, is 0
    there, and :math:`v \mapsto v + (1 - w)\,\overline{v}_{old}`): a zero second moment
    would make the first step in a new direction
    :math:`\lambda(1-\beta_1)/\sqrt{1-\beta_2} \approx 3.2\lambda` per entry whatever its
    gradient, a kick that a relative truncation keeps whenever it exceeds
    :math:`\tau\|C\|` -- measured on a regression with a Tucker-rank (4, 3, 2, 2)
    teacher (lr 0.01, tau 0.05, 2,000 steps), zero-filled Adam stalls at loss 0.12 with ranks
    (14, 8, 3, 3), the mean fill reaches the teacher's ranks at loss below 1e-20
    (``validation/adam_truncation.py``).

    **Memory.**  Between ``backward`` and ``step`` each Tucker layer holds its dense
    kernel gradient (``grad_full``, as a dense model holds ``weight.grad``); during the
    step, per layer, the augmented factors (:math:`n_i \times 2r_i`) and core
    (:math:`\prod 2r_i`) exist transiently.  Parameters and state are reallocated at the
    new ranks (no padding to a maximum rank), so their memory falls when ranks shrink.

    **Data parallelism.**  A step consumes, per layer, only projections of :math:`G`
    that are linear in it (K-gradients, C-gradient), so averaging them over workers gives
    exactly the single-process step.  Under plain ``DistributedDataParallel`` this happens
    automatically (:mod:`tucker_dlra.nn.distributed`, docs page "Distributed training"): the
    optimizer switches its layers to the kernel-only backward (``layer.param_grads =
    False``), whose ``factors[i].grad`` is the K-gradient :math:`\nabla_{K_i}\mathcal L` and
    ``core.grad`` :math:`G\times_i U_i^\top`, averaged at the end of backward; the K-steps
    start from them, the C-gradient in the augmented bases is averaged inside the step's
    C-solver, and the new ranks are checked across workers before anything is written.
    Gradients rescaled since backward by a common factor (``clip_grad_norm_``,
    ``GradScaler.unscale_``) scale the whole Tucker step (detected on the device, read back
    with the ranks); :func:`tucker_dlra.nn.clip_grad_norm_` counts a Tucker layer by
    :math:`\|G\|` as the equivalent dense layer.  :meth:`TDLRT._kernel_gradients` reads every
    :math:`G`; a subclass that overrides it gets its K-gradients computed from what it
    returns.

    Examples
    --------
    >>> import torch
    >>> from tucker_dlra.nn import TuckerConv2d, TDLRT
    >>> layer = TuckerConv2d(3, 8, 3, rank=4)
    >>> opt = TDLRT(layer.parameters(), lr=0.1, tau=0.1)
    >>> layer(torch.randn(2, 3, 8, 8)).square().mean().backward()
    >>> opt.step()
    >>> len(layer.ranks)
    4
    >>> sorted(opt.last_step_info[0])
    ['error_bound', 'ranks', 'tails']

    ``opt.last_step_info`` maps each Tucker layer (its name when the optimizer was built
    from ``model.named_parameters()``, else its index in parameter order) to its new
    ``ranks``, the truncation's per-mode ``tails`` and ``error_bound``.
    """

    def __init__(self, params: Any, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, tau: float = 0.1,
                 adaptive: bool = True, integrator: str = "bug", rule: str = "per_mode",
                 max_rank: Any = None, min_rank: Any = None, descent: str = "sgd",
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 nonfinite: str = "raise", capture: Any = "auto") -> None:
        if nonfinite not in ("raise", "skip"):
            raise ValueError(f"nonfinite must be 'raise' or 'skip'; got {nonfinite!r}")
        if capture not in ("auto", True, False) or isinstance(capture, int) and not \
                isinstance(capture, bool):
            raise ValueError(f"capture must be 'auto', True or False; got {capture!r}")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay, tau=tau, adaptive=adaptive,
                        integrator=integrator, rule=rule, max_rank=max_rank, min_rank=min_rank,
                        descent=descent, betas=tuple(betas) if betas is not None else betas,
                        eps=eps)
        _check_group(defaults)
        super().__init__(params, defaults)
        distributed.check_not_sharded([p for g in self.param_groups for p in g["params"]])
        self.nonfinite = nonfinite
        self.capture = capture
        self.capture_stats = {"traces": 0, "replays": 0}
        self.last_step_info: dict[Any, dict] = {}
        self.skipped_steps = 0
        self._kernel_only_backward()

    def _kernel_only_backward(self) -> None:
        """Switch this optimizer's Tucker layers to ``param_grads = False``.

        Algorithm 1 reads only :math:`G` (``grad_full``), so backward need not compute the
        factors' gradients (see :mod:`tucker_dlra.nn.layers`, "Kernel-only backward");
        set ``layer.param_grads = True`` again for plain autograd gradients.
        """
        for layer in self._layers(self._index()):
            layer.param_grads = False

    def __getstate__(self) -> dict:
        """Pickling: ``Optimizer``'s state plus the ``nonfinite`` policy."""
        state = super().__getstate__()
        state["nonfinite"] = self.nonfinite
        state["capture"] = self.capture
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickling (``Optimizer.__getstate__`` keeps only defaults, state and groups)."""
        super().__setstate__(state)
        self.__dict__.setdefault("nonfinite", "raise")
        self.__dict__.setdefault("capture", "auto")
        self.__dict__.setdefault("capture_stats", {"traces": 0, "replays": 0})
        self.__dict__.setdefault("last_step_info", {})
        self.__dict__.setdefault("skipped_steps", 0)

    def add_param_group(self, param_group: dict) -> None:
        """As ``torch.optim.Optimizer.add_param_group``, validating the group's options."""
        super().add_param_group(param_group)
        _check_group(self.param_groups[-1])
        if hasattr(self, "skipped_steps"):  # after __init__: new layers may be complete now
            self._kernel_only_backward()

    # ------------------------------------------------------------------ bookkeeping
    def _index(self) -> dict[int, tuple[torch.Tensor, dict]]:
        return {id(p): (p, g) for g in self.param_groups for p in g["params"]}

    def _layers(self, index: dict) -> list[_TuckerLayer]:
        """Tucker layers whose parameters are all in this optimizer, in parameter order."""
        by_core = {}
        # each core/factor Parameter points to its layer (layers.layer_of), no registry
        seen = {id(layer.core): layer for layer in (layer_of(p) for p, _ in index.values())
                if layer is not None}
        for layer in seen.values():
            params = [layer.core, *layer.factors]
            present = [id(p) in index for p in params]
            if not any(present):
                continue
            if not all(present):
                raise ValueError(
                    f"TDLRT needs the core and all factors of a Tucker layer ({layer!r:.60}) in "
                    "its params; only some of them were given")
            by_core[id(layer.core)] = layer
        order = [id(p) for g in self.param_groups for p in g["params"]]
        return [by_core[i] for i in order if i in by_core]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As ``Optimizer.zero_grad``; also clears the layers' captured ``grad_full``."""
        super().zero_grad(set_to_none=set_to_none)
        for layer in self._layers(self._index()):
            layer.grad_full = None

    # ------------------------------------------------------------------ descent rule
    @staticmethod
    def _descend(xs: list[torch.Tensor], gs: list[torch.Tensor], states: list[dict],
                 groups: list[dict]) -> tuple[list[torch.Tensor], list[dict]]:
        r"""One descent step :math:`x - \lambda\,d(g)` on many tensors (functional).

        The single descent rule of the optimizer, for the K-steps (Algorithm 1, line 4),
        the C-step (line 9) and every other parameter: SGD with momentum, dampening,
        Nesterov and L2 weight decay, or Adam -- the formulas of ``torch.optim.SGD`` /
        ``torch.optim.Adam``.  Returns the new values and the new states; nothing is
        mutated.  Tensors sharing a param group are updated by ``torch._foreach_*`` calls
        (a fixed number of kernels per group).  Cost :math:`O(\text{numel})`.
        """
        n = len(xs)
        out_x: list[Any] = [None] * n
        out_s: list[Any] = [None] * n
        buckets: dict[int, list[int]] = {}
        for k, grp in enumerate(groups):
            buckets.setdefault(id(grp), []).append(k)
        for idx in buckets.values():
            group = groups[idx[0]]
            x = [xs[k] for k in idx]
            g = [gs[k] for k in idx]
            st = [states[k] for k in idx]
            lr, wd = group["lr"], group["weight_decay"]
            if wd:
                g = torch._foreach_add(g, x, alpha=wd)
            if group["descent"] == "adam":
                b1, b2 = group["betas"]
                steps = [int(s.get("step", 0)) + 1 for s in st]
                m = [s["exp_avg"] if "exp_avg" in s else torch.zeros_like(gi)
                     for s, gi in zip(st, g, strict=True)]
                v = [s["exp_avg_sq"] if "exp_avg_sq" in s else torch.zeros_like(gi)
                     for s, gi in zip(st, g, strict=True)]
                m = torch._foreach_lerp(m, g, 1 - b1)
                v = torch._foreach_mul(v, b2)
                torch._foreach_addcmul_(v, g, g, value=1 - b2)
                denom = torch._foreach_sqrt(v)
                torch._foreach_div_(denom, [math.sqrt(1 - b2 ** t) for t in steps])
                torch._foreach_add_(denom, group["eps"])
                new = torch._foreach_addcdiv(x, m, denom,
                                             [-lr / (1 - b1 ** t) for t in steps])
                new_st = [{**s, "step": t, "exp_avg": mi, "exp_avg_sq": vi}
                          for s, t, mi, vi in zip(st, steps, m, v, strict=True)]
            else:
                mu = group["momentum"]
                if mu:
                    old = [s.get("momentum_buffer") for s in st]
                    have = [k for k, b in enumerate(old) if b is not None]
                    buf = [None if b is not None else gi.clone() for b, gi in zip(old, g,
                                                                                   strict=True)]
                    if have:
                        kept = torch._foreach_mul([old[k] for k in have], mu)
                        torch._foreach_add_(kept, [g[k] for k in have],
                                            alpha=1 - group["dampening"])
                        for k, b in zip(have, kept, strict=True):
                            buf[k] = b
                    d = torch._foreach_add(g, buf, alpha=mu) if group["nesterov"] else buf
                    new_st = [{**s, "momentum_buffer": b} for s, b in zip(st, buf, strict=True)]
                else:
                    d = g
                    new_st = [dict(s) for s in st]
                new = torch._foreach_add(x, d, alpha=-lr)
            for j, k in enumerate(idx):
                out_x[k], out_s[k] = new[j], new_st[j]
        return out_x, out_s

    @staticmethod
    def _check_state(state: dict, p: torch.Tensor, what: str) -> None:
        for k in _MOMENT_KEYS + _SQ_KEYS:
            v = state.get(k)
            if v is not None and tuple(v.shape) != tuple(p.shape):
                raise ValueError(
                    f"optimizer state {k!r} of {what} has shape {tuple(v.shape)} but the "
                    f"parameter has {tuple(p.shape)}: load the model's state_dict before the "
                    "optimizer's (Tucker layers resize on load)")

    # ------------------------------------------------------------------ K-start cache
    @staticmethod
    def _signature(layer: _TuckerLayer) -> tuple:
        """Identity of a layer's current values: its value generation (bumped by
        ``clear_kernel_cache``, which ``set_tucker``, ``load_state_dict``,
        ``reset_parameters`` and ``.to()`` call) and the identity, storage, version counter,
        shape, dtype and device of the core and every factor (in-place writes outside
        ``.data`` bump the version; the cache entry holds the storages, so an address cannot
        be reused while it lives)."""
        return (layer.__dict__.get("_value_generation", 0),) + tuple(
            (id(p), p.untyped_storage().data_ptr(), p.storage_offset(), p._version,
             tuple(p.shape), p.dtype, p.device) for p in (layer.core, *layer.factors))

    def _remember_start(self, layer: _TuckerLayer, start: Any) -> None:
        """Keep the K-start computed at the committed point (for the momentum transport)
        for the next step's K-phase, keyed by the parameters' signature and the optimizer
        step generation this step ends (:data:`tucker_dlra.nn.layers._STEP_GENERATION`, which
        every ``torch.optim`` step bumps: a step of any other optimizer in between, whatever
        way it writes, invalidates the entry)."""
        cache = self.__dict__.setdefault("_start_cache", {})
        if start is None:
            cache.pop(id(layer.core), None)
        else:
            cache[id(layer.core)] = ((_STEP_GENERATION[0] + 1,) + self._signature(layer), start,
                                     tuple(p.untyped_storage()
                                           for p in (layer.core, *layer.factors)))

    def _cached_start(self, layer: _TuckerLayer) -> Any:
        """The cached K-start of ``layer`` if its parameters are unchanged since, else None."""
        hit = self.__dict__.get("_start_cache", {}).get(id(layer.core))
        if hit is None or hit[0] != (_STEP_GENERATION[0],) + self._signature(layer):
            return None
        return hit[1]

    def load_state_dict(self, state_dict: dict) -> None:
        """:meth:`torch.optim.Optimizer.load_state_dict`; also drops the K-start cache."""
        self.__dict__.pop("_start_cache", None)
        super().load_state_dict(state_dict)

    # ------------------------------------------------------------------ transports
    @staticmethod
    def _transport_states(states: list[dict], mats: list, many: Callable) -> list[dict]:
        """Optimizer states into new coordinates, each state key of all tensors in one call
        of ``many`` (linear keys, then second moments with ``square=True``)."""
        outs = [dict(s) for s in states]
        for keys, square in ((_MOMENT_KEYS, False), (_SQ_KEYS, True)):
            for k in keys:
                have = [t for t, s in enumerate(outs) if k in s]
                if have:
                    moved = many([outs[t][k] for t in have], [mats[t] for t in have],
                                 square=square)
                    for t, m in zip(have, moved, strict=True):
                        outs[t][k] = m
        return outs

    @classmethod
    def _transport_ks(cls, states: list[dict], bs: list[torch.Tensor]) -> list[dict]:
        """K-step states into new coordinates
        (:func:`tucker_dlra.bug_step.k_state_transport_many`: :math:`M B`, squared
        transport with the old mean in new coordinates for second moments)."""
        return cls._transport_states(states, bs, k_state_transport_many)

    @classmethod
    def _transport_cores(cls, states: list[dict], a: list[list[torch.Tensor]]) -> list[dict]:
        """Core states into new coordinates, all layers batched
        (:func:`tucker_dlra.bug_step.core_state_transport_many`)."""
        return cls._transport_states(states, a, core_state_transport_many)

    # ------------------------------------------------------------------ Algorithm 1
    @staticmethod
    def _group_bound(spec: Any, d: int, upper: list[int]) -> list[int | None]:
        """An optimizer-wide rank bound for a layer of order d, clipped to its mode sizes.

        An int applies to every mode of every layer; a tuple only to the layers whose
        kernel order equals its length (use param groups for per-layer bounds).
        """
        if spec is None:
            return [None] * d
        vals = [int(spec)] * d if isinstance(spec, numbers.Integral) else list(spec)
        if len(vals) != d:
            return [None] * d
        return [None if v is None else min(int(v), u) for v, u in zip(vals, upper, strict=True)]

    def _bounds(self, layer: _TuckerLayer, group: dict) -> tuple[list[int], list[int]]:
        d, shape = layer.order, layer.kernel_shape
        upper = list(max_tucker_rank(shape))
        gmax = self._group_bound(group["max_rank"], d, upper)
        gmin = self._group_bound(group["min_rank"], d, upper)
        mx = [a if b is None else min(a, b) for a, b in zip(layer.max_rank, gmax, strict=True)]
        mn = [a if b is None else max(a, b) for a, b in zip(layer.min_rank, gmin, strict=True)]
        return mx, [min(a, b) for a, b in zip(mn, mx, strict=True)]

    def _kernel_gradients(self, layers: list[_TuckerLayer]) -> list[torch.Tensor]:
        r"""The dense kernel gradients :math:`G = \nabla_W\mathcal L` the step consumes.

        The single place where the step reads ``layer.grad_full`` (cast to the core's
        dtype and device), before any other computation: a data-parallel wrapper
        all-reduces these tensors here (every quantity of the step is linear in G).
        """
        return [layer.grad_full.to(dtype=layer.core.dtype, device=layer.core.device)
                for layer in layers]

    def _variant(self, group: dict) -> str:
        if group["integrator"] == "parallel":
            return "parallel"
        return "ra_bug" if group["adaptive"] else "bug"

    def _truncation(self, layer: _TuckerLayer, group: dict) -> Truncation | None:
        """Algorithm 1, lines 10-12 for this layer: ``rtol=tau`` with the rank bounds."""
        core = layer.core
        if group["integrator"] == "bug" and not group["adaptive"]:
            return None
        if not group["adaptive"]:  # parallel, fixed rank: back to the current ranks
            return Truncation(rank=list(core.shape), rule=group["rule"])
        aug = [min(2 * int(r), n) for r, n in zip(core.shape, layer.kernel_shape, strict=True)]
        mx, mn = self._bounds(layer, group)
        return Truncation(rtol=float(group["tau"]), rule=group["rule"],
                          max_rank=_fit(mx, aug), min_rank=_fit(mn, aug))

    def _compute(self, active: list[_TuckerLayer], grads: list[torch.Tensor],
                 plain: list[tuple[torch.Tensor, dict]], index: dict,
                 closure: Callable[[], Any] | None, layers: list[_TuckerLayer],
                 tgrads: tuple[list, Any]) -> dict:
        """Every update of the step (nothing written): Algorithm 1 for all Tucker layers by
        :func:`tucker_dlra.bug_step.bug_step` with the descent rule as substep solver, and
        the descent rule on the plain parameters; one host read-back for all ranks, the
        finiteness of every new tensor and the rescale flags of ``tgrads``
        (:func:`tucker_dlra.nn.distributed.step_gradients`: per layer the K-gradients, the
        C-gradient in the old bases and the factor the gradients were rescaled by)."""
        fac_p = [list(layer.factors) for layer in active]
        core_p = [layer.core for layer in active]
        cgroups = [index[id(p)][1] for p in core_p]
        for layer, fs in zip(active, fac_p, strict=True):
            for p in fs:
                self._check_state(self.state[p], p, "a Tucker factor")
            self._check_state(self.state[layer.core], layer.core, "a Tucker core")
        tg, rflags = tgrads
        # the parameters themselves (the step runs under no_grad and never writes its
        # inputs): no detach operation per tensor
        inputs = {"ys": [TuckerTensor._orthonormal(layer.core, list(layer.factors))
                         for layer in active], "grads": list(grads),
                  "kg": [list(t[0]) for t in tg], "cg0": [t[1] for t in tg],
                  "scale": [t[2] for t in tg], "rflags": [] if rflags is None else [rflags],
                  "kst": [[self.state[p] for p in fs] for fs in fac_p],
                  "cst": [self.state[p] for p in core_p],
                  "px": [p for p, _ in plain], "pg": [p.grad for p, _ in plain],
                  "pst": [self.state[p] for p, _ in plain],
                  "starts": [self._cached_start(layer) for layer in active]}
        cfg = {"variants": [self._variant(g) for g in cgroups],
               "truncs": [self._truncation(layer, g)
                          for layer, g in zip(active, cgroups, strict=True)],
               "fgroups": [[index[id(p)][1] for p in fs] for fs in fac_p],
               "cgroups": cgroups, "pgroups": [g for _, g in plain],
               "dist": distributed.any_distributed(active)}
        if closure is None and self._use_capture(inputs, cfg):
            out = self._captured(inputs, cfg)
        else:
            out = self._phase_a(inputs, cfg, closure, active, layers, index)
        # the host sync: ranks, tails, norms, finiteness of the gradients and the update
        tplan = out["plan"].tplan
        host = read_back(tplan)
        flags = host[tplan.offsets[tplan.n_fixed]:] if len(tplan.offsets) > tplan.n_fixed \
            else []
        if flags and flags[1] != 1.0:
            raise _NonFiniteGradient
        distributed.rescale_verdict(flags[2:])  # clip_grad_value_ raises here
        if flags and flags[0] != 1.0:
            raise _NonFiniteUpdate
        try:
            parts, _ = bug_step_end(out["plan"], host)
        except NonFiniteCore:
            raise _NonFiniteUpdate from None
        ys, kept = inputs["ys"], out["kept"]
        plain_new, plain_st = out["plain"]
        # transport of the linear state into the coordinates of the new point
        need_k = [t for t in range(len(ys))
                  if any(any(k in s for k in _MOMENT_KEYS + _SQ_KEYS)
                         for s in kept["kstates"][t])]
        news = k_starts([parts[t].y1 for t in need_k]) if need_k else []
        kstates = kept["kstates"]
        cstates = list(kept["cstates"])
        bs = k_transport_many(
            [parts[t].start.gs for t in need_k], [ns.gs for ns in news],
            _matmuls_nested([list(parts[t].y1.factors) for t in need_k],
                            [list(ys[t].factors) for t in need_k], transpose_a=True))
        slots = [(t, i) for t in need_k for i in range(ys[t].ndim)]
        moved = self._transport_ks([kstates[t][i] for t, i in slots],
                                   [bi for b in bs for bi in b])  # the same order
        for (t, i), st in zip(slots, moved, strict=True):
            kstates[t][i] = st
        need_c = [t for t in range(len(parts))
                  if any(k in cstates[t] for k in _MOMENT_KEYS + _SQ_KEYS)]
        for t, st in zip(need_c, self._transport_cores(
                [cstates[t] for t in need_c],
                _matmuls_nested([list(parts[t].y1.factors) for t in need_c],
                                [list(kept["bases"][t]) for t in need_c], transpose_a=True)),
                strict=True):
            cstates[t] = st
        return {"parts": parts, "kstates": kstates, "cstates": cstates,
                "plain": (plain_new, plain_st),
                "starts": dict(zip(need_k, news, strict=True))}

    def _phase_a(self, inputs: dict, cfg: dict, closure: Callable[[], Any] | None = None,
                 active: list | None = None, layers: list | None = None,
                 index: dict | None = None) -> dict:
        """Device half of the step (no host sync; a pure function of ``inputs`` without a
        closure): :func:`tucker_dlra.bug_step.bug_step_begin` with the descent rule as
        substep solver (Algorithm 1, lines 1-9 and the device part of 10-12), the descent
        rule on the plain parameters and the finiteness flag of every new tensor."""
        ys, grads = inputs["ys"], inputs["grads"]
        variants, cgroups = cfg["variants"], cfg["cgroups"]
        kept: dict[str, Any] = {}

        def k_solve(starts: list) -> list[list[torch.Tensor]]:
            # Algorithm 1, lines 3-4: one descent step on every K_i along the Theorem 1
            # gradients the kernel-only backward computed (averaged over workers under DDP)
            kgrads = inputs["kg"]
            flat = [(t, i) for t, y in enumerate(ys) for i in range(y.ndim)]
            new, st = self._descend(
                [starts[t].k0[i] for t, i in flat], [kgrads[t][i] for t, i in flat],
                [inputs["kst"][t][i] for t, i in flat], [cfg["fgroups"][t][i] for t, i in flat])
            ks = [[None] * y.ndim for y in ys]
            kept["kstates"] = [[None] * y.ndim for y in ys]
            for (t, i), k, s in zip(flat, new, st, strict=True):
                ks[t][i], kept["kstates"][t][i] = k, s
            return ks

        def c_solve(cores0: list, bases: list, at_y0: list) -> list[torch.Tensor]:
            # Algorithm 1, line 9: one descent step on the Galerkin core
            gz = list(grads)
            two = [t for t, v in enumerate(variants) if v == "bug" and closure is not None]
            if two:
                g2 = self._second_pass(closure, [active[t] for t in two],
                                       [cores0[t] for t in two], [bases[t] for t in two],
                                       layers, index)
                for t, g in zip(two, g2, strict=True):
                    gz[t] = g
            cstates = list(inputs["cst"])
            move = [t for t, (y, st) in enumerate(zip(ys, cstates, strict=True))
                    if bases[t] is not y.factors
                    and any(k in st for k in _MOMENT_KEYS + _SQ_KEYS)]
            for t, st in zip(move, self._transport_cores(
                    [cstates[t] for t in move],
                    _matmuls_nested([list(bases[t]) for t in move],
                                    [list(ys[t].factors) for t in move], transpose_a=True)),
                    strict=True):
                cstates[t] = st
            # line 9: G in the new bases, scaled like the .grad it came with (clipping);
            # the parallel BUG's C-gradient is the backward's core gradient (old bases)
            cgrads = [inputs["cg0"][t] if v == "parallel" else
                      c_gradient(gz[t], bases[t]) * (1.0 if t in two else inputs["scale"][t])
                      for t, v in enumerate(variants)]
            if cfg.get("dist") and active is not None:  # DDP: one all-reduce
                ts = [t for t, v in enumerate(variants) if v != "parallel"]
                red = distributed.reduce_c_gradients([active[t] for t in ts],
                                                     [cgrads[t] for t in ts])
                for t, c in zip(ts, red, strict=True):
                    cgrads[t] = c
            new, st = self._descend(list(cores0), cgrads, cstates, cgroups)
            kept["cstates"], kept["bases"] = st, bases
            return new

        plain_new, plain_st = self._descend(
            inputs["px"], inputs["pg"], inputs["pst"], cfg["pgroups"]) \
            if inputs["px"] else ([], [])

        def extra(parts: list) -> list[torch.Tensor]:
            ts = [k for pt in parts for k in pt.ks] + [pt.y1.core for pt in parts]
            ts += [v for st in kept["cstates"] for v in st.values() if torch.is_tensor(v)]
            ts += plain_new + [v for st in plain_st for v in st.values() if torch.is_tensor(v)]
            u = _finite_flag(ts)
            g = _finite_flag(list(grads) + list(inputs["pg"]) + inputs["cg0"]
                             + [k for kg in inputs["kg"] for k in kg])
            if u is None and g is None:
                return []
            one = torch.ones((), dtype=torch.bool, device=(u if u is not None else g).device)
            return [torch.cat([torch.stack([one if u is None else u, one if g is None else g]),
                               *[f.to(one.device) for f in inputs["rflags"]]])]

        plan = bug_step_begin(ys, k_solve, c_solve, variants, cfg["truncs"], extra,
                              starts=inputs.get("starts"))
        return {"plan": plan, "kept": kept, "plain": (plain_new, plain_st)}

    # ------------------------------------------------------------------ capture
    def _use_capture(self, inputs: dict, cfg: dict) -> bool:
        """Whether this step runs through the shape-keyed captured path."""
        if self.capture is False or cfg["dist"]:
            return False  # under DDP the step all-reduces: not traced
        groups = cfg["cgroups"] + cfg["pgroups"] + [g for gs in cfg["fgroups"] for g in gs]
        if any(g["descent"] == "adam" for g in groups):
            return False  # Adam's bias corrections change every step: nothing repeats
        if self.capture == "auto":
            ts = inputs["grads"] + inputs["px"]
            return bool(ts) and all(t.is_cuda for t in ts)
        return True

    def _captured(self, inputs: dict, cfg: dict) -> dict:
        """:meth:`_phase_a` through a cache of traced ATen graphs keyed by shapes and options.

        The first step with given shapes (ranks), dtypes, devices, state layout and group
        options traces :meth:`_phase_a` into an FX graph of ATen operations
        (``make_fx``); later steps with the same key replay that graph -- no Python, no
        re-dispatch of the core's small-tensor code.  A rank change gives a new key: the
        step runs the trace again (eager) and caches it (at most 8 entries).  On CUDA
        (:meth:`_sync_free_eigh`) the truncation's eigendecompositions are traced as
        :func:`tucker_dlra.bug_step.jacobi_eigh` (array operations only), so the replayed
        graph has no host synchronisation (``linalg.eigh`` checks its error code on the
        host); the step's one read-back follows it.
        """
        from torch.fx.experimental.proxy_tensor import make_fx

        leaves: list[torch.Tensor] = []
        spec = _flatten(inputs, leaves)
        jacobi = self._sync_free_eigh(leaves)
        key = (jacobi, repr(spec),
               tuple((tuple(t.shape), t.dtype, str(t.device)) for t in leaves),
               repr((cfg["variants"], cfg["truncs"]))
               + repr([_group_key(g) for g in cfg["cgroups"] + cfg["pgroups"]
                       + [g for gs in cfg["fgroups"] for g in gs]]))
        cache = self.__dict__.setdefault("_capture_cache", {})
        entry = cache.get(key)
        if entry is None:
            holder: dict[str, Any] = {}

            def fn(*flat: torch.Tensor) -> list[torch.Tensor]:
                out = self._phase_a(_unflatten(spec, list(flat)), cfg)
                outs: list[torch.Tensor] = []
                holder["spec"] = _flatten(out, outs)
                return outs

            with sync_free_eigh() if jacobi else contextlib.nullcontext():
                gm = make_fx(fn)(*leaves)
            entry = {"gm": gm, "spec": holder["spec"]}
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            cache[key] = entry
            self.capture_stats["traces"] += 1
        else:
            self.capture_stats["replays"] += 1
        outs = entry["gm"](*leaves)
        return _unflatten(entry["spec"], list(outs))

    @staticmethod
    def _sync_free_eigh(leaves: list[torch.Tensor]) -> bool:
        """Whether the captured step uses the sync-free Jacobi eigh: all its tensors on CUDA
        (on the CPU LAPACK's eigh needs no device synchronisation)."""
        return bool(leaves) and all(t.is_cuda for t in leaves)

    def _second_pass(self, closure: Callable[[], Any], layers2: list[_TuckerLayer],
                     cores0: list, bases: list, layers: list[_TuckerLayer],
                     index: dict) -> list[torch.Tensor]:
        r"""Fixed-rank BUG with a closure: :math:`\nabla_W\mathcal L` at the Galerkin point.

        Temporarily sets each such layer to :math:`C \times_i (U^{new\top}_i U_i) \times_i
        U^{new}_i`, re-evaluates ``closure`` and reads the layers' new ``grad_full``; then
        restores every parameter, gradient and captured ``grad_full`` (nothing else moves).
        """
        originals = [(layer, TuckerTensor._orthonormal(layer.core.detach().clone(),
                                                       [u.detach().clone() for u in layer.factors]))
                     for layer in layers2]
        grads = {id(p): p.grad for p, _ in index.values()}
        fulls = {id(layer): layer.grad_full for layer in layers}
        try:
            for layer, c0, b in zip(layers2, cores0, bases, strict=True):
                layer.set_tucker(TuckerTensor._orthonormal(c0, b))  # b: orthonormal bases
            with torch.enable_grad():
                loss = closure()
            out = []
            for layer in layers2:
                g = layer.grad_full
                if g is None:
                    raise RuntimeError("TDLRT.step(closure): the closure must run forward and "
                                       "backward (its second call gave no kernel gradient)")
                out.append(g.to(dtype=layer.core.dtype))
            if (loss is not None and not _all_finite([torch.as_tensor(loss)])) \
                    or not _all_finite(out):
                raise _NonFiniteUpdate
            return out
        finally:
            for layer, t in originals:
                layer.set_tucker(t)
            for p, _ in index.values():
                p.grad = grads[id(p)]
            for layer in layers:
                layer.grad_full = fulls[id(layer)]

    # ------------------------------------------------------------------ the step
    def _nonfinite(self, msg: str) -> None:
        if self.nonfinite == "skip":
            self.skipped_steps += 1
            warnings.warn(msg + " Step skipped.", RuntimeWarning, stacklevel=3)
            return
        raise FloatingPointError(msg)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of Algorithm 1 for every Tucker layer, the descent rule for the rest.

        All Tucker layers are processed together (:func:`tucker_dlra.bug_step.bug_step`:
        the small QRs and eigendecompositions batched over equal shapes, the ranks of all
        layers decided on the device); every update -- Tucker and plain parameters -- is
        computed before any is written.  One host synchronisation reads back the ranks of
        all layers together with the finiteness of the gradients and of the update (plus
        one per SVD fallback or re-rounding, rare, the closure's loss, and on CUDA the
        error check of each batched ``eigh``; under DDP the fingerprint before the C-gradient
        all-reduce and the cross-worker consistency check: :mod:`tucker_dlra.nn.distributed`).

        Parameters
        ----------
        closure : callable, optional
            Zeroes the gradients, re-evaluates the model, calls ``backward`` and returns
            the loss (run with grad enabled before the step, as in ``torch.optim``).  Layers
            in groups with ``adaptive=False`` (fixed-rank BUG) then get a second call at
            their Galerkin point for an exact C-step; all other parameters use the first.

        Returns
        -------
        The closure's loss, or None.

        Raises
        ------
        FloatingPointError
            Non-finite loss, gradient or update (``nonfinite="raise"``); nothing changed.
        RuntimeError
            A Tucker layer has core/factor gradients but no captured ``grad_full`` (its
            forward ran in eval mode or with ``capture_grad=False``).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            if loss is not None and not _all_finite([torch.as_tensor(loss)]):
                self._nonfinite("TDLRT.step: the closure returned a non-finite loss; the model "
                                "and the optimizer state were left untouched.")
                return loss
        index = self._index()
        layers = self._layers(index)
        tucker_ids = {id(p) for layer in layers for p in [layer.core, *layer.factors]}
        active = []
        for layer in layers:
            if layer.grad_full is None:
                if any(p.grad is not None for p in [layer.core, *layer.factors]):
                    raise RuntimeError(
                        f"Tucker layer {layer!r:.60} has gradients on its core/factors but no "
                        "captured kernel gradient (grad_full): run its forward in training "
                        "mode (layer.train(), capture_grad=True) before backward")
                continue
            if tuple(layer.grad_full.shape) != layer.kernel_shape:
                raise RuntimeError(f"grad_full has shape {tuple(layer.grad_full.shape)}; expected "
                                   f"{layer.kernel_shape}")
            active.append(layer)
        plain = [(p, g) for p, g in index.values()
                 if id(p) not in tucker_ids and p.grad is not None]
        grads = self._kernel_gradients(active)
        # K-gradients and core gradients from the kernel-only backward (averaged over the
        # workers under DDP; from G when this hook is overridden), with the rescale factor
        fresh = type(self)._kernel_gradients is not TDLRT._kernel_gradients
        tgrads = distributed.step_gradients(active, grads, fresh)
        try:  # compute every update first (one host sync), then commit: atomic step
            res = self._compute(active, grads, plain, index, closure, layers, tgrads)
        except _NonFiniteGradient:
            self._nonfinite("TDLRT.step: non-finite gradient (NaN or inf, e.g. from a non-finite "
                            "loss); the model and the optimizer state were left untouched.")
            return loss
        except _NonFiniteUpdate:
            self._nonfinite("TDLRT.step: the update is not finite (learning rate too large?); "
                            "the model and the optimizer state were left untouched.")
            return loss
        distributed.check_consistent(active, [pt.y1 for pt in res["parts"]])  # DDP workers
        names = {}  # layer names when the optimizer was given model.named_parameters()
        for g in self.param_groups:
            for p, name in zip(g["params"], g.get("param_names") or [], strict=False):
                if name.endswith("core"):
                    names[id(p)] = name[: -len("core")].rstrip(".") or "core"
        info_all = {}
        set_tucker_many(active, [pt.y1 for pt in res["parts"]])
        for k, (layer, pt) in enumerate(zip(active, res["parts"], strict=True)):
            self._remember_start(layer, res["starts"].get(k))
            for p, st in zip(layer.factors, res["kstates"][k], strict=True):
                self.state[p] = st
            self.state[layer.core] = res["cstates"][k]
            info = pt.info
            info_all[names.get(id(layer.core), k)] = {
                "ranks": layer.ranks,
                "error_bound": 0.0 if info is None else info.error_bound,
                "tails": () if info is None else info.tails,
            }
        new_x, new_st = res["plain"]
        if new_x:
            torch._foreach_copy_([p for p, _ in plain], new_x)
        for (p, _), st in zip(plain, new_st, strict=True):
            self.state[p] = st
        self.last_step_info = info_all
        return loss
