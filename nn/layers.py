r"""Tucker convolutions and low-rank linear layers (paper Sections 2.1, 3 and 3.1).

A Tucker layer stores its kernel :math:`W = C \times_{i} U_i` (Eq. (3)) as the core
``layer.core`` (shape = ranks) and factors ``layer.factors[i]`` of shape
:math:`(n_i, r_i)` with orthonormal columns.  For an N-d convolution the kernel has
order :math:`d = N + 2` with modes (out channels, in channels / groups, k_1, ..., k_N);
for :class:`LowRankLinear` it is the matrix :math:`U_0 C U_1^\top` of shape (out, in).

The layers hold no tensor math of their own: the dense kernel is
:meth:`tucker_dlra.TuckerTensor.full`, conversions use :func:`tucker_dlra.hosvd`, and
the training step (:class:`tucker_dlra.nn.TDLRT`) calls :mod:`tucker_dlra.steps`.

Dense kernel gradient
---------------------
The optimizer needs :math:`G = \nabla_W \mathcal L` of the last backward pass (Algorithm
1 only ever evaluates gradients at the current point :math:`W_0`).  In training mode
(``layer.training``, grad mode on, ``layer.capture_grad``) the forward registers a hook
that stores it in ``layer.grad_full`` (accumulated over several backward passes, like
``.grad``; cleared by ``TDLRT.step``/``TDLRT.zero_grad``, and at the next forward
whenever the core's ``.grad`` was zeroed or replaced, e.g. by ``model.zero_grad()``):

* dense path: a hook on the rebuilt kernel ``W`` receives :math:`G` directly;
* factorized path: a hook on the convolution output receives :math:`\partial\mathcal L /
  \partial y` and computes :math:`G` with ``torch.nn.grad.conv{N}d_weight`` (the same
  kernel the dense backward uses; cost equal to one dense weight-gradient convolution).

Memory held between ``backward`` and ``step``: one dense kernel gradient per Tucker
layer (:math:`\prod_i n_i` numbers, as much as a dense model's ``weight.grad``); the
gradients of core and factors that autograd also produces are small.

Kernel-only backward (``layer.param_grads = False``)
------------------------------------------------------
:class:`tucker_dlra.nn.TDLRT` only reads ``grad_full``, so it switches its layers to
``param_grads = False``: in training mode the forward then uses core and factors detached
from autograd (the dense path builds :math:`W` without a graph; the factorized path runs its
three stages on detached factors), and backward computes only :math:`\partial\mathcal L /
\partial x` and the captured :math:`G` -- not the gradients of the factors (on the
factorized path these are extra GEMMs / weight-gradient convolutions of the size of the
forward stages).  Instead the backward of each layer sets ``core.grad`` to the exact
:math:`\nabla_C\mathcal L = G \times_i U_i^\top` and ``factors[i].grad`` to the K-step
gradient :math:`\nabla_{K_i}\mathcal L` of Theorem 1 (not :math:`\partial\mathcal L /
\partial U_i`): the gradients Algorithm 1 steps along, computed from :math:`G` by
:func:`tucker_dlra.c_gradient` and :func:`tucker_dlra.steps.k_gradients` (cost
:math:`O(r\prod_i n_i)`, work the step no longer does).  They accumulate over backward passes,
are zeroed as usual, and under ``DistributedDataParallel`` are averaged over the workers at
the end of backward (:mod:`tucker_dlra.nn.distributed`).  Set
``layer.param_grads = True`` (the default of a new layer) for plain autograd gradients of
core and factors, e.g. to train them with a Euclidean optimizer or to check Theorem 1.

Kernel cache
------------
Whenever the dense kernel is built without an autograd graph (inference under
``torch.no_grad``/``torch.inference_mode``, and the kernel-only training forward), the layer
keeps :math:`W = C\times_i U_i` and reuses it until core or factors change
(:meth:`_TuckerLayer.cached_weight`): consecutive inference forwards then cost one dense
convolution, as for ``nn.ConvNd``, instead of one kernel rebuild
(:math:`O(\sum_i r_i\prod_{j\le i} n_j\prod_{j>i} r_j)`) plus the convolution.  The cache
key holds the parameters' identity, storage address, shape, dtype, device and autograd
version counter (bumped by every in-place change made outside ``.data``), a process-wide
counter bumped after every ``torch.optim`` step, and the inference-mode flag; ``set_tucker``,
``load_state_dict``, ``reset_parameters`` and ``.to()`` clear it.  It holds
:math:`\prod_i n_i` numbers per layer (a dense model's weight); ``layer.cache_kernel =
False`` turns it off.  Writes through ``p.data`` bypass the version counter: call
:meth:`_TuckerLayer.clear_kernel_cache` after such a write.

Measured path choice (CUDA)
---------------------------
On the devices of :data:`PATH_SELECTOR` (CUDA by default), ``forward_mode="auto"`` picks
the dense or the factorized path by timing both once per (layer configuration, ranks, input
shape and strides, dtype, device), like cuDNN's benchmark mode: a warm-up call of each, then
a few interleaved timed calls (CUDA events), the smaller median wins and is kept for the
process (:class:`PathSelector`).  Forwards without a graph (``torch.no_grad``) time the
forward alone; training forwards with gradient capture time forward + backward (kernel
gradient, and the input gradient when the input requires it) on a private copy of the layer,
keyed also by the backward variant.  Elsewhere (CPU; forwards with a graph but no capture)
the FLOP rule below decides.
"""

from __future__ import annotations

import copy
import math
import numbers
import statistics
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from tucker_dlra import TuckerTensor, hosvd, multi_mode_product
from tucker_dlra._validate import per_mode
from tucker_dlra.backend import namespace, qr
from tucker_dlra.tucker import max_tucker_rank, orthonormality_defects

from ._conv import conv_options_repr, pointwise, resolve_tucker_rank, tucker_conv_macs
from .distributed import accumulate, attach

__all__ = [
    "TuckerConv1d",
    "TuckerConv2d",
    "TuckerConv3d",
    "LowRankLinear",
    "is_tucker_layer",
    "layer_of",
    "FACTORIZED_FLOP_RATIO",
    "FACTORIZED_MIN_FLOPS",
    "KERNEL_ONLY_FLOP_RATIO",
    "PATH_SELECTOR",
    "PathSelector",
]

#: ``forward_mode="auto"`` takes the factorized path when its multiply-add count per
#: sample is below this fraction of the dense convolution's (the factorized path runs up
#: to three convolutions instead of one, so it needs a clear FLOP advantage to be faster).
#: In training mode with gradient capture the counts compared are forward + backward:
#: :math:`3 f + d` (the captured :math:`G` costs one dense weight-gradient product) against
#: :math:`3 d`.  Measured on one CPU thread (float32): 256->256 3x3 at ranks
#: (57, 57, 3, 3), 16x16 input, FLOP ratio 0.11: forward 5x faster, training forward +
#: backward 2.2x faster; 20->50 5x5 at ranks (20, 20, 5, 5) (ratio 0.48) is slower in
#: training (1.14x), hence the training rule.
#: With the kernel-only backward (``param_grads=False``, TDLRT) backward computes no factor
#: gradients: the counts are :math:`k f + d` against :math:`(k + 1) d` with :math:`k = 2`
#: (:math:`k = 1` when the input needs no gradient, e.g. the first layer), compared with
#: :data:`KERNEL_ONLY_FLOP_RATIO`.
FACTORIZED_FLOP_RATIO = 0.5

#: Ratio of the kernel-only training rule.  Measured (1 thread, batch 128, float32,
#: forward + backward): VGG 3->32 3x3 at 32x32, ranks (7, 1, 3, 3), FLOP ratio 0.34 and no
#: input gradient: factorized 27 ms, dense 53 ms (counts 1.34 d vs 2 d: 0.67); LeNet5's
#: 1->20 5x5, ranks (5, 1, 5, 5), ratio 0.45: factorized 8.5 ms, dense 5.7 ms (0.73); the
#: 3x3 layers at ratio 0.1 with input gradient: factorized 1.5-2.2x faster.
KERNEL_ONLY_FLOP_RATIO = 0.7


class _LayerRef:
    """Weak reference from a core or factor Parameter to its Tucker layer.

    Stored as ``param._tucker_layer`` by the layer itself; :class:`~tucker_dlra.nn.TDLRT` maps
    the Parameters it is given to their layers through it (no process-wide registry).  It
    pickles and deep-copies as a dead reference, so that a copied Parameter never points to
    the original layer; the copied layer re-tags its own Parameters (``__setstate__``,
    ``forward``).  Calling it returns the layer or ``None``.
    """

    __slots__ = ("_ref",)

    def __init__(self, layer: Any = None) -> None:
        self._ref = None if layer is None else weakref.ref(layer)

    def __call__(self) -> Any:
        return None if self._ref is None else self._ref()

    def __reduce__(self) -> tuple:
        return (_LayerRef, ())

    def __copy__(self) -> _LayerRef:
        return _LayerRef()

    def __deepcopy__(self, memo: dict) -> _LayerRef:
        return _LayerRef()


def layer_of(param: torch.Tensor) -> Any:
    """The Tucker layer whose core or factor ``param`` currently is, else ``None``."""
    ref = getattr(param, "_tucker_layer", None)
    layer = ref() if isinstance(ref, _LayerRef) else None
    if layer is None or not any(q is param for q in (layer.core, *layer.factors)):
        return None
    return layer


#: ... and only when the dense count is at least this many multiply-adds per sample:
#: below it the extra kernel launches dominate.  Since the 1x1 stages run as batched GEMMs
#: with the bias fused into the last stage, small layers gain too (measured, inference,
#: 1 thread, batch 128: LeNet5's 1->20 5x5 at ranks (5, 1, 5, 5), 0.29M MACs, FLOP ratio
#: 0.45: factorized 1.6 ms, dense 2.8 ms; VGG's 3->32 3x3 at 32x32, 0.88M MACs, ratio
#: 0.34: 4.1 ms against 21 ms for ``nn.Conv2d``); the former bound 1e6 predates that.
FACTORIZED_MIN_FLOPS = 100_000

RankArg = int | float | Sequence[int] | None

#: Bumped after every ``torch.optim`` optimizer step (a global step post-hook): part of
#: every layer's kernel-cache key, so no kernel cached before a step is reused after it,
#: whatever way the optimizer writes the parameters.
_STEP_GENERATION = [0]


def _bump_generation(*_args: Any) -> None:
    _STEP_GENERATION[0] += 1


register_optimizer_step_post_hook(_bump_generation)


def cuda_event_timer(path: str, fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call of ``fn``: CUDA events on a CUDA device, else ``perf_counter``.

    ``path`` (the candidate's name) is unused; it lets a test inject a deterministic timer.
    Cost: one call of ``fn`` and one synchronisation.
    """
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class PathSelector:
    """Process-wide measured choice between forward paths, like cuDNN's benchmark mode.

    Parameters
    ----------
    devices : iterable of str
        Device types on which the choice is measured (default ``("cuda",)``); elsewhere
        :meth:`enabled` is False and the layers use their FLOP rule.
    repeats : int
        Timed calls per candidate (after one untimed warm-up call each), interleaved; the
        candidate with the smallest median wins, ties go to the first candidate.
    timer : callable ``(path, fn, device) -> seconds``, optional
        Times one call; default :func:`cuda_event_timer`.

    Notes
    -----
    Cost of a first use of a key: ``repeats + 1`` calls of every candidate and
    ``repeats * len(candidates)`` device synchronisations; afterwards one dict lookup.
    ``choices`` maps key -> chosen path, ``timings`` key -> {path: median seconds}.
    """

    def __init__(self, devices: Sequence[str] = ("cuda",), repeats: int = 5,
                 timer: Callable[[str, Callable[[], Any], torch.device], float] | None = None
                 ) -> None:
        if isinstance(repeats, bool) or not isinstance(repeats, numbers.Integral) or repeats < 1:
            raise ValueError(f"repeats must be an int >= 1; got {repeats!r}")
        self.devices = frozenset(str(d) for d in devices)
        self.repeats = int(repeats)
        self.timer = timer if timer is not None else cuda_event_timer
        self.choices: dict[tuple, str] = {}
        self.timings: dict[tuple, dict[str, float]] = {}

    def enabled(self, device: torch.device) -> bool:
        """Whether choices on ``device`` are measured (not while compiling or capturing)."""
        if device.type not in self.devices:
            return False
        if torch.compiler.is_compiling():
            return False
        return not (device.type == "cuda" and torch.cuda.is_current_stream_capturing())

    def choose(self, key: tuple, candidates: dict[str, Callable[[], Any]]
               | Callable[[], dict[str, Callable[[], Any]]], device: torch.device) -> str:
        """The cached choice for ``key``, measuring the ``candidates`` on first use
        (``candidates`` may be a function returning them, called only then)."""
        hit = self.choices.get(key)
        if hit is not None:
            return hit
        if callable(candidates):
            candidates = candidates()
        for fn in candidates.values():  # warm-up: cuDNN autotuning, caches, allocations
            fn()
        samples: dict[str, list[float]] = {p: [] for p in candidates}
        for _ in range(self.repeats):
            for p, fn in candidates.items():
                samples[p].append(float(self.timer(p, fn, device)))
        med = {p: statistics.median(v) for p, v in samples.items()}
        best = min(med, key=lambda p: med[p])  # first minimum: ties keep the order
        self.timings[key] = med
        self.choices[key] = best
        return best

    def clear(self) -> None:
        """Forget all measured choices (e.g. after changing cuDNN settings)."""
        self.choices.clear()
        self.timings.clear()


#: The selector the Tucker layers consult (replace it, or its ``timer``/``devices``, to
#: change where and how paths are measured).
PATH_SELECTOR = PathSelector()


def is_tucker_layer(module: Any) -> bool:
    """``True`` for the Tucker layers of this module (trained by :class:`TDLRT`)."""
    return isinstance(module, _TuckerLayer)


def _replace_data(p: torch.Tensor, new: torch.Tensor) -> None:
    """``p.data = new`` for a new shape, dropping autograd's cached gradient accumulator.

    Autograd caches one ``AccumulateGrad`` node per leaf with the leaf's shape, and
    ``set_data`` only renews it when dtype or device change; while an old graph (e.g. the
    previous ``loss``) is alive, the next backward would otherwise fail with a shape
    mismatch.  Passing through a placeholder of another dtype resets the cache.
    """
    p.grad = None
    other = torch.float32 if p.dtype != torch.float32 else torch.float64
    p.data = torch.empty(0, dtype=other, device=p.device)
    p.data = new


def _upper_ranks(shape: Sequence[int]) -> list[int]:
    return list(max_tucker_rank(shape))


def resolve_rank(rank: RankArg, shape: Sequence[int], name: str = "rank",
                 max_rank: Sequence[int] | None = None) -> tuple[int, ...]:
    """Turn a rank specification into one Tucker rank per mode.

    Parameters
    ----------
    rank : None, int, float in (0, 1] or sequence of int
        ``None``: full rank :math:`\\min(n_i, \\prod_{j\\ne i} n_j)` (capped by ``max_rank``);
        int: the same rank in every mode, clipped to each mode's size; float:
        ``ceil(rank * n_i)`` (at least 1) in each mode; sequence: one rank per mode, each in
        ``[1, n_i]`` (a clear ``ValueError`` otherwise).
    shape : kernel shape :math:`(n_0, \\dots, n_{d-1})`.

    Returns
    -------
    tuple of int, a valid Tucker rank (:math:`r_i \\le \\prod_{j\\ne i} r_j`).  The one rank
    parser of the layers and the baselines (``nn/_conv.py``).
    """
    return resolve_tucker_rank(rank, shape, name, max_rank)


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


class _TuckerLayer(nn.Module):
    """Shared machinery of the Tucker layers: parameters, kernel, hooks, checkpoints."""

    _min_flops = 0  # convolutions: FACTORIZED_MIN_FLOPS (kernel launches); matmuls: none

    core: nn.Parameter
    factors: nn.ParameterList

    def _init_tucker(self, kernel_shape: Sequence[int], rank: RankArg, max_rank: Any,
                     min_rank: Any, init: str, fan_in: int, device: Any, dtype: Any) -> None:
        self.kernel_shape = tuple(int(n) for n in kernel_shape)
        d = len(self.kernel_shape)
        upper = _upper_ranks(self.kernel_shape)
        mx = per_mode(max_rank, d, "max_rank", upper, clamp=True)
        mn = per_mode(min_rank, d, "min_rank", upper, clamp=True)
        self.max_rank = tuple(u if m is None else m for u, m in zip(upper, mx, strict=True))
        self.min_rank = tuple(1 if m is None else m for m in mn)
        for i in range(d):
            if self.min_rank[i] > self.max_rank[i]:
                raise ValueError(f"min_rank[{i}] = {self.min_rank[i]} exceeds max_rank[{i}] = "
                                 f"{self.max_rank[i]}")
        ranks = resolve_rank(rank, self.kernel_shape, "rank", self.max_rank)
        if init not in ("kaiming", "spectral"):
            raise ValueError(f"init must be 'kaiming' or 'spectral'; got {init!r}")
        self.init = init
        self.fan_in = int(fan_in)
        fk = {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}
        if not fk["dtype"].is_floating_point:
            raise TypeError(f"dtype must be a floating dtype; got {fk['dtype']}")
        self.core = nn.Parameter(torch.empty(ranks, **fk))
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.empty(n, r, **fk)) for n, r in zip(self.kernel_shape, ranks,
                                                                     strict=True)]
        )
        self.grad_full: torch.Tensor | None = None
        self.capture_grad = True
        self.param_grads = True  # False: kernel-only backward (set by TDLRT), see module doc
        self._grad_stamp: tuple[int, int] | None = None
        self._hooked_id: int | None = None
        self.cache_kernel = True  # keep W between graph-free forwards (module docstring)
        self._kcache: tuple | None = None
        self.register_load_state_dict_post_hook(_TuckerLayer._after_load)
        self._tag_params()

    # ------------------------------------------------------------------ properties
    @property
    def ranks(self) -> tuple[int, ...]:
        """Current Tucker ranks :math:`(r_0, \\dots, r_{d-1})` (the core's shape)."""
        return tuple(int(s) for s in self.core.shape)

    @property
    def order(self) -> int:
        """Order d of the kernel."""
        return len(self.kernel_shape)

    def __getstate__(self) -> dict:
        """Pickling and deepcopy: everything but the cached dense kernel."""
        state = self.__dict__.copy()
        state["_kcache"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("cache_kernel", True)
        self.__dict__.setdefault("_kcache", None)
        self._tag_params()

    def _tag_params(self) -> None:
        """Point ``core`` and ``factors`` back to this layer (:func:`layer_of`); O(d)."""
        for p in (self.core, *self.factors):
            ref = p.__dict__.get("_tucker_layer")
            if ref is None or ref() is not self:
                p._tucker_layer = _LayerRef(self)

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        """``.to()``/``.cuda()``/``.half()``...: clears the kernel cache first."""
        self.clear_kernel_cache()
        out = super()._apply(fn, recurse)
        self._tag_params()  # new Parameter objects if the conversion overwrote them
        return out

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self) -> None:
        r"""Random orthonormal factors and a core scaled like the dense default init.

        ``init="kaiming"``: Gaussian core with
        :math:`\mathrm{E}\|W\|^2 = \prod_i n_i / (3\,\mathrm{fan\_in})`, i.e. the dense kernel
        has the variance of PyTorch's default (Kaiming-uniform, a = sqrt(5)) init.
        ``init="spectral"`` (paper Section 4.3, overestimated rank): the Gaussian core is
        multiplied in every mode by :math:`\mathrm{diag}(10^{-3 j/(r_i-1)})_j`, so the
        unfoldings' singular values decay exponentially over three powers of ten, then
        rescaled to the same norm.  The bias is uniform in :math:`\pm 1/\sqrt{\mathrm{fan\_in}}`.
        Cost :math:`O(\sum_i n_i r_i^2 + d\prod r_i)`.
        """
        xp = namespace(self.core)
        ranks = self.ranks
        for f in self.factors:
            q, _ = qr(xp, torch.randn_like(f))
            f.copy_(q)
        c = torch.randn_like(self.core)
        if self.init == "spectral":
            mats = [torch.diag(torch.logspace(0.0, -3.0 if r > 1 else 0.0, r, dtype=c.dtype,
                                              device=c.device)) for r in ranks]
            c = multi_mode_product(c, mats)
        self.clear_kernel_cache()
        target = math.sqrt(math.prod(self.kernel_shape) / (3.0 * max(self.fan_in, 1)))
        c = c * (target / max(float(torch.linalg.vector_norm(c)), 1e-30))
        self.core.copy_(c)
        if getattr(self, "bias", None) is not None:
            bound = 1.0 / math.sqrt(max(self.fan_in, 1))
            nn.init.uniform_(self.bias, -bound, bound)
        self.grad_full = None

    # ------------------------------------------------------------------ Tucker views
    def weight_full(self) -> torch.Tensor:
        r"""The dense kernel :math:`W = C \times_i U_i` (Eq. (3)), differentiable.

        Computed by :meth:`tucker_dlra.TuckerTensor.full` (greedy mode order).
        """
        return TuckerTensor(self.core, list(self.factors)).full()

    def _kernel_key(self) -> tuple:
        """What the cached kernel depends on (module docstring, "Kernel cache")."""
        ps = (self.core, *self.factors)
        return (_STEP_GENERATION[0], torch.is_inference_mode_enabled(),
                tuple((id(p), p._version, p.data_ptr(), tuple(p.shape), p.dtype, p.device)
                      for p in ps))

    def cached_weight(self) -> torch.Tensor:
        r"""The dense kernel :math:`W = C\times_i U_i` without autograd graph, cached.

        Rebuilt (:meth:`weight_full` under ``torch.no_grad``, cost
        :math:`O(\sum_i r_i\prod_{j\le i} n_j\prod_{j>i} r_j)`) only when the key of
        :meth:`_kernel_key` changed since the last call, otherwise returned as is (cost: the
        key, :math:`O(d)`).  The cache holds detached views of the parameters it was built
        from, so their storage cannot be freed and reused at the same address while the
        entry lives.  With ``cache_kernel = False`` every call rebuilds.  The result must not
        be modified in place.
        """
        if not self.cache_kernel:
            with torch.no_grad():
                return self.weight_full()
        key = self._kernel_key()
        hit = self._kcache
        if hit is not None and hit[0] == key:
            return hit[1]
        self._kcache = None  # free the old kernel before building the new one
        with torch.no_grad():
            w = self.weight_full()
        self._kcache = (key, w, tuple(p.detach() for p in (self.core, *self.factors)))
        return w

    def clear_kernel_cache(self) -> None:
        """Drop the cached dense kernel (the next graph-free forward rebuilds it).

        Also bumps the layer's value generation (``_value_generation``), which caches keyed
        on the layer's values outside the layer (TDLRT's K-start) compare: ``set_tucker``,
        ``load_state_dict``, ``reset_parameters`` and ``.to()`` call this, and so must code
        that writes core or factors through ``p.data``.
        """
        self.__dict__["_kcache"] = None
        self.__dict__["_value_generation"] = self.__dict__.get("_value_generation", 0) + 1

    def _graph_free(self) -> bool:
        """True when a forward needs no autograd graph through the kernel."""
        if not torch.is_grad_enabled():
            return True
        return not any(p.requires_grad for p in (self.core, *self.factors))

    def tucker(self) -> TuckerTensor:
        """The kernel as a :class:`tucker_dlra.TuckerTensor` of detached core and factors."""
        # orthonormal by the layer's invariant (kept by TDLRT, restored on load)
        return TuckerTensor._orthonormal(self.core.detach(), [f.detach() for f in self.factors])

    @torch.no_grad()
    def set_tucker(self, t: TuckerTensor) -> None:
        r"""Replace core and factors by those of ``t`` (ranks may change).

        The same Parameter objects are kept (``p.data = new``), so optimizers keep their
        references; storage is reallocated at the new size (memory really falls when
        ranks shrink).  Gradients of these parameters and ``grad_full`` are cleared.
        A ``t`` not flagged orthonormal is orthonormalised first
        (:meth:`tucker_dlra.TuckerTensor.orthonormalize`, cost :math:`O(\sum_i n_i r_i^2)`;
        the flag itself is checked when ``t`` is built).
        """
        if not isinstance(t, TuckerTensor):
            raise TypeError(f"t must be a tucker_dlra.TuckerTensor; got {type(t).__name__}")
        if tuple(t.shape) != self.kernel_shape:
            raise ValueError(f"t has shape {t.shape}; this layer's kernel has {self.kernel_shape}")
        if not t.orthonormal:
            t = t.orthonormalize()
        fk = {"device": self.core.device, "dtype": self.core.dtype}
        params = [self.core, *self.factors]
        self.clear_kernel_cache()
        for p, new in zip(params, [t.core, *t.factors], strict=True):
            p.grad = None
            new = torch.as_tensor(new).to(**fk)
            if new.shape == p.shape:
                p.data.copy_(new)
            else:
                _replace_data(p, new.detach().clone(memory_format=torch.contiguous_format))
        self.grad_full = None

    # ------------------------------------------------------------------ gradient capture
    def _capturing(self) -> bool:
        return (self.capture_grad and self.training and torch.is_grad_enabled()
                and self.core.requires_grad)

    def _sync_grad_full(self) -> None:
        """Drop a captured ``grad_full`` whose backward pass was zeroed since (forward time).

        ``grad_full`` accumulates like ``.grad``; it is valid while the core's ``.grad`` is
        the tensor autograd last accumulated into (identity and version recorded by a
        post-accumulate hook).  So ``model.zero_grad()`` (either ``set_to_none``) or any
        other reset of the core's gradient also resets ``grad_full`` at the next forward.
        """
        core = self.core
        if self._capturing():
            attach(self)  # DDP: record the process group (see tucker_dlra.nn.distributed)
        if self._hooked_id != id(core):
            ref = weakref.ref(self)

            def stamp(p: torch.Tensor, ref=ref) -> None:
                layer = ref()
                if layer is not None and p.grad is not None:
                    layer._grad_stamp = (id(p.grad), p.grad._version)

            core.register_post_accumulate_grad_hook(stamp)
            self._hooked_id = id(core)
        if self.grad_full is not None:
            g = core.grad
            if g is None or (id(g), g._version) != self._grad_stamp:
                self.grad_full = None

    def _store_grad(self, g: torch.Tensor) -> None:
        g = g.detach()
        if self.grad_full is None or self.grad_full.shape != g.shape:
            self.grad_full = g.clone() if g.requires_grad else g
        else:
            self.grad_full = self.grad_full + g

    def _kernel_hook(self, g: torch.Tensor) -> None:
        self._store_grad(g)

    def _check_input_dtype(self, x: torch.Tensor) -> None:
        """The input must have the layer's dtype (as for ``nn.Conv2d``; a clear message).

        Under ``torch.autocast`` mixed dtypes are the point, and are left to autocast.
        """
        if x.dtype != self.core.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"{type(self).__name__} has dtype {self.core.dtype}; got an input of "
                            f"dtype {x.dtype} (convert one of them, e.g. x.to({self.core.dtype}) "
                            f"or layer.to({x.dtype}))")

    def _kernel_only(self) -> bool:
        """Training forward whose backward computes only :math:`G` (``param_grads=False``)."""
        return not getattr(self, "param_grads", True) and self._capturing()

    def _params(self, detached: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if detached:
            return self.core.detach(), [f.detach() for f in self.factors]
        return self.core, list(self.factors)

    def _tap(self, t: torch.Tensor, grad_of: Any) -> torch.Tensor:
        """``t`` unchanged; its backward stores :math:`G` = ``grad_of(grad_t)`` in
        ``grad_full`` and hands :math:`\nabla_C = G\times_i U_i^\top` to the core."""
        return _KernelTap.apply(t, self.core, self, grad_of)

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Resize core and factors to the checkpoint's ranks before loading (rank changes)."""
        self.clear_kernel_cache()
        ck = prefix + "core"
        if ck in state_dict:
            core = state_dict[ck]
            ranks = tuple(int(s) for s in core.shape)
            ok = len(ranks) == self.order
            fac = []
            for i in range(self.order if ok else 0):
                key = f"{prefix}factors.{i}"
                if key not in state_dict:
                    ok = False
                    break
                fac.append(tuple(int(s) for s in state_dict[key].shape))
            if ok:
                for i, (n, s) in enumerate(zip(self.kernel_shape, fac, strict=True)):
                    if s != (n, ranks[i]):
                        error_msgs.append(
                            f"{prefix}factors.{i} has shape {s}; expected ({n}, {ranks[i]}) for "
                            f"kernel shape {self.kernel_shape} and core shape {ranks}")
                        ok = False
            if ok:
                for p, shape in zip([self.core, *self.factors], [ranks, *fac], strict=True):
                    if tuple(p.shape) != shape:
                        _replace_data(p, torch.empty(shape, dtype=p.dtype, device=p.device))
                self.grad_full = None
            else:
                error_msgs.append(f"{prefix}: inconsistent Tucker checkpoint (core {ranks})")
        self._load_prefix = prefix  # for the post-load check (factors load after this)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    @staticmethod
    def _after_load(module: _TuckerLayer, incompatible: Any) -> None:
        """Load-state-dict post hook: see :meth:`_reorthonormalize_loaded`."""
        prefix = module.__dict__.pop("_load_prefix", "")
        keys = [prefix + "core"] + [f"{prefix}factors.{i}" for i in range(module.order)]
        if not any(k in incompatible.missing_keys for k in keys):
            module._reorthonormalize_loaded(prefix)

    @torch.no_grad()
    def _reorthonormalize_loaded(self, prefix: str) -> None:
        r"""Restore orthonormal factors after a load, keeping the kernel (with a warning).

        TDLRT (Algorithm 1) and :meth:`tucker` rely on :math:`U_i^\top U_i = I`; a loaded
        factor that violates it (beyond the tolerance of
        :func:`tucker_dlra.check_orthonormal`, far above the drift of training) is replaced
        by the QR :math:`U_i = Q_i R_i`, :math:`U_i \leftarrow Q_i`,
        :math:`C \leftarrow C \times_i R_i`: the same kernel, now in a valid representation.
        The checkpoint's kernel is kept rather than refused, since it is what was saved.
        Cost :math:`O(\sum_i n_i r_i^2)` per load.
        """
        bad = orthonormality_defects([f.detach() for f in self.factors])
        if not bad:
            return
        t = TuckerTensor(self.core.detach(), [f.detach() for f in self.factors]).orthonormalize()
        self.core.copy_(t.core)
        for f, q in zip(self.factors, t.factors, strict=True):
            f.copy_(q)
        names = ", ".join(f"{prefix}factors.{i} (||U^T U - I|| = {dev:.2e} > {tol:.2e})"
                          for i, dev, tol in bad)
        warnings.warn(f"loaded Tucker factors are not orthonormal: {names}; re-orthonormalised "
                      f"by QR with the core adjusted (the kernel is unchanged)", stacklevel=2)

    # ------------------------------------------------------------------ forward selection
    def _check_mode(self, mode: str) -> str:
        if mode not in ("auto", "dense", "factorized"):
            raise ValueError(f"forward_mode must be 'auto', 'dense' or 'factorized'; got {mode!r}")
        return mode

    def _path_key(self, x: torch.Tensor) -> tuple:
        """Everything the relative speed of the two paths depends on (measured choice)."""
        return (type(self).__name__, self.kernel_shape, self.ranks, self.bias is not None,
                self._config(), tuple(x.shape), tuple(x.stride()), x.dtype, x.device)

    def _config(self) -> tuple:
        return ()

    def _run_path(self, x: torch.Tensor, path: str) -> torch.Tensor:
        """The graph-free forward of one path (subclasses)."""
        raise NotImplementedError

    def _choose(self, x: torch.Tensor) -> str:
        """Path of this forward: ``forward_mode``, else measured (graph-free forwards on the
        devices of :data:`PATH_SELECTOR`), else the FLOP rule."""
        if self.forward_mode != "auto":
            return self.forward_mode
        sel = PATH_SELECTOR
        if sel.enabled(x.device):
            if self._capturing():  # training: forward + backward of each path
                key = ("train", self._kernel_only(), x.requires_grad, *self._path_key(x))
                return sel.choose(key, lambda: self._training_candidates(x), x.device)
            if self._graph_free():
                cands = {"dense": lambda: self._run_path(x, "dense"),
                         "factorized": lambda: self._run_path(x, "factorized")}
                return sel.choose(self._path_key(x), cands, x.device)
        return self._flop_choice(x)

    def _training_candidates(self, x: torch.Tensor) -> dict[str, Callable[[], Any]]:
        r"""Training forward + backward of each path, on a private copy of the layer.

        The copy (``copy.deepcopy``: core, factors and bias, :math:`O(\sum_i n_i r_i +
        \prod_i r_i)`) has its own parameters, so the timed backward passes leave this
        layer's ``.grad`` and ``grad_full`` untouched; its kernel cache is cleared before
        every call (a training step changes the kernel, so each real forward rebuilds it).
        The input is detached and requires grad as ``x`` does (same backward work).
        """
        clone = copy.deepcopy(self)
        clone.train()
        clone._timing_copy = True  # its timed backward passes stay local (no DDP all-reduce)
        xx = x.detach().requires_grad_(x.requires_grad)

        def run(path: str) -> None:
            clone.forward_mode = path
            clone.clear_kernel_cache()
            clone.grad_full = None
            for p in clone.parameters():
                p.grad = None
            y = clone(xx)
            y.backward(torch.ones_like(y))

        return {"dense": lambda: run("dense"), "factorized": lambda: run("factorized")}

    def _flop_choice(self, x: torch.Tensor) -> str:
        """The FLOP rule of ``forward_mode="auto"`` (see :data:`FACTORIZED_FLOP_RATIO`)."""
        dense, fact = self.flops(tuple(x.shape[1:]))
        if dense < self._min_flops:
            return "dense"
        if self._kernel_only():  # training, backward: dL/dx (if needed) and G only
            k = 2 if x.requires_grad else 1
            return "factorized" if k * fact + dense < KERNEL_ONLY_FLOP_RATIO * (k + 1) * dense \
                else "dense"
        if self._capturing():  # training: backward ~ 2x forward, plus the dense G product
            return "factorized" if 3 * fact + dense < FACTORIZED_FLOP_RATIO * 3 * dense \
                else "dense"
        return "factorized" if fact < FACTORIZED_FLOP_RATIO * dense else "dense"

    def parameter_bytes(self) -> int:
        """Bytes actually allocated by core, factors and bias."""
        ps = [self.core, *self.factors] + ([self.bias] if self.bias is not None else [])
        return sum(p.untyped_storage().nbytes() for p in ps)


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
    rank : None, int, float in (0, 1] or tuple of d = N + 2 ints
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
    Without a graph (``torch.no_grad``, inference) the 2-d factorized path returns its
    output in channels-last memory format (same shape and values; the following ReLU,
    batch-norm and pooling then run their faster channels-last kernels).
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
        # 2-d inference: the 1x1 stages write channels-last outputs (see pointwise; the
        # downstream pooling/BN/ReLU run 2-9x faster).  Not in training: measured on LeNet5,
        # max-pooling's backward on channels-last tensors costs more than the forward saves.
        cl = n == 2 and not torch.is_grad_enabled()
        if not fold_in:
            if g == 1 and x.dim() == n + 2:  # 1x1 conv as one batched GEMM (C2: faster
                x = pointwise(x, u1.t(), channels_last=cl)  # than oneDNN's 1x1 conv)
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
                xd = xin.detach()
                wgrad = self._conv_weight_grad()
                shape = self.kernel_shape
                unbatched = xd.dim() == self._N + 1

                def hook(gy: torch.Tensor, xd=xd) -> None:
                    xx, gg = (xd.unsqueeze(0), gy.unsqueeze(0)) if unbatched else (xd, gy)
                    self._store_grad(wgrad(xx, shape, gg, self.stride, pad, self.dilation,
                                           self.groups))

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


def _from_dense(layer: _TuckerLayer, w: torch.Tensor, bias: torch.Tensor | None, rank: RankArg,
                rtol: float | None, rule: str) -> None:
    if rtol is not None:
        t = hosvd(w, rtol=rtol, rule=rule, max_rank=list(layer.max_rank),
                  min_rank=list(layer.min_rank))
    else:
        r = resolve_rank(rank, layer.kernel_shape, "rank", layer.max_rank)
        t = hosvd(w, rank=list(r))
    layer.set_tucker(t)
    if bias is not None and layer.bias is not None:
        with torch.no_grad():
            layer.bias.copy_(bias.detach())


class TuckerConv1d(_TuckerConvNd):
    """1-d Tucker convolution (kernel of order 3); interface of ``nn.Conv1d``, see the base."""

    _N = 1


class TuckerConv2d(_TuckerConvNd):
    """2-d Tucker convolution (kernel of order 4, the paper's case); see :class:`_TuckerConvNd`."""

    _N = 2


class TuckerConv3d(_TuckerConvNd):
    """3-d Tucker convolution (kernel of order 5); interface of ``nn.Conv3d``, see the base."""

    _N = 3


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
