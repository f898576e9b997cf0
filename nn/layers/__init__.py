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

Layout
------
The package splits these concerns over private modules, all re-exported here (the import
paths ``tucker_dlra.nn.layers.X`` are the public ones): ``_params`` (rank specifications,
the Parameter-to-layer link :func:`layer_of`), ``_tap`` (the kernel-gradient tap of
backward), ``_paths`` (FLOP rule constants, :class:`PathSelector`, the optimizer-step
counter of the kernel cache), ``_base`` (the shared base :class:`_TuckerLayer`),
``_convnd`` (the convolutions) and ``_linear`` (:class:`LowRankLinear`).
"""

from __future__ import annotations

from tucker_dlra import TuckerTensor, hosvd

from ._base import _from_dense, _TuckerLayer, is_tucker_layer
from ._convnd import TuckerConv1d, TuckerConv2d, TuckerConv3d, _TuckerConvNd
from ._linear import LowRankLinear
from ._params import RankArg, _LayerRef, _replace_data, layer_of, resolve_rank
from ._paths import (
    _STEP_GENERATION,
    FACTORIZED_FLOP_RATIO,
    FACTORIZED_MIN_FLOPS,
    KERNEL_ONLY_FLOP_RATIO,
    PATH_SELECTOR,
    TRAIN_CHANNELS_LAST,
    PathSelector,
    cuda_event_timer,
)
from ._tap import _KernelTap

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
    "TRAIN_CHANNELS_LAST",
    "PATH_SELECTOR",
    "PathSelector",
    "cuda_event_timer",
    "resolve_rank",
]

# Present the re-exported classes and functions under the public path (documentation, reprs,
# and pickles that name ``tucker_dlra.nn.layers.X``, as before the package was split).
for _obj in (_TuckerLayer, _TuckerConvNd, TuckerConv1d, TuckerConv2d, TuckerConv3d, LowRankLinear,
             PathSelector, is_tucker_layer, layer_of, resolve_rank, cuda_event_timer):
    _obj.__module__ = __name__
del _obj

_PRIVATE = (TuckerTensor, hosvd, RankArg, _LayerRef, _replace_data, _from_dense, _KernelTap,
            _STEP_GENERATION)  # re-exported for code that imported them from the old module
