r"""The TDLRT optimizer: Algorithm 1 of the paper as a ``torch.optim.Optimizer``.

Orchestration only (as geoopt does it): every piece of tensor math is a call into the
core -- :func:`tucker_dlra.steps.k_core` (line 2), :func:`~tucker_dlra.steps.k_gradient`
(line 4, Theorem 1; all modes at once by :func:`~tucker_dlra.steps.k_gradients`),
:func:`~tucker_dlra.steps.augment_basis` (lines 5-7),
:func:`~tucker_dlra.steps.galerkin_core` (line 8), :func:`~tucker_dlra.steps.c_gradient`
(line 9), :func:`~tucker_dlra.steps.parallel_core` (parallel BUG) and
:func:`tucker_dlra.truncate` (lines 10-12).  Updates run under ``torch.no_grad()``;
parameters keep their identity (``copy_`` when the shape is unchanged, ``p.data = new``
when ranks change) and all state lives in ``self.state[p]`` with the parameter's shape,
so ``state_dict``/``load_state_dict`` work unchanged.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from tucker_dlra import (
    RULES,
    TuckerTensor,
    augment_basis,
    c_gradient,
    galerkin_core,
    k_core,
    k_gradient,
    multi_mode_product,
    parallel_core,
    truncate,
)
from tucker_dlra._validate import check_tolerance
from tucker_dlra.backend import namespace, orth_columns

from . import distributed
from .layers import _TuckerLayer, tucker_layers

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
    check_tolerance(group["tau"], "tau")
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
    total = math.prod(int(s) for s in shape)
    return [min(int(b), int(s), total // max(int(s), 1)) for b, s in zip(bounds, shape,
                                                                         strict=True)]


class _NonFiniteUpdate(Exception):
    """Internal: an intermediate of the step is not finite (nothing has been written)."""


def _tucker_rank(ranks: tuple[int, ...]) -> tuple[int, ...]:
    """Largest ranks <= ``ranks`` with :math:`r_i \\le \\prod_{j\\ne i} r_j` (valid Tucker rank)."""
    r = list(ranks)
    changed = True
    while changed:
        changed = False
        for i in range(len(r)):
            others = math.prod(r[:i] + r[i + 1:])
            if r[i] > others:
                r[i], changed = others, True
    return tuple(r)


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """All entries finite; one host sync.

    Real tensors are reduced by ``torch.aminmax`` (NaN propagates to both extremes, an
    infinity shows in one of them; ~10x faster than ``isfinite(t).all()`` on CPU); the many
    small cores and factors of a step are concatenated first (one reduction).
    """
    ts = [t for t in tensors if t.numel()]
    if not ts:
        return True
    dev = ts[0].device
    small = [t.reshape(-1).to(dev) for t in ts if t.numel() <= 65536 and not t.is_complex()]
    big = [t for t in ts if t.numel() > 65536 or t.is_complex()]
    if small:
        big.append(torch.cat(small))
    flags = []
    for t in big:
        if t.is_complex():
            flags.append(torch.isfinite(t).all().reshape(1).to(dev))
        else:
            flags.append(torch.isfinite(torch.stack(torch.aminmax(t))).all().reshape(1).to(dev))
    return bool(torch.cat(flags).all())


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
        ``"bug"``: Algorithm 1.  ``"parallel"``: the parallel BUG (NUMERICS.md 1.3): the
        C-step runs in the old bases with the same :math:`G`, the augmented core is
        assembled by :func:`tucker_dlra.parallel_core`; with ``adaptive=False`` it is
        truncated back to the current ranks.  There is no step rejection (a training step
        is never repeated), unlike ``tucker_dlra.integrators.parallel_bug``'s default.
    rule : {"per_mode", "split"}
        Truncation rule (NUMERICS.md section 5); ``"per_mode"`` (default) discards a tail
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
        (the step computes every Tucker update before it writes any).

    Notes
    -----
    **One pass suffices** (issue 4): after augmentation :math:`\hat U_i` keeps
    :math:`U_i` as its first columns, so :math:`\tilde C \times_i \hat U_i = W_0`
    exactly and the C-gradient at the start of the C-step is
    :math:`G \times_i \hat U_i^\top` (``c_gradient(G, U_hat)``).

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
    when the old coordinates are uncorrelated.  New directions start with zero moments
    (as a new parameter would) but share the layer's step count, so with Adam their first
    steps can be up to :math:`(1-\beta_1)/\sqrt{1-\beta_2}` (about 3.2) times the usual size.

    **Memory.**  Between ``backward`` and ``step`` each Tucker layer holds its dense
    kernel gradient (``grad_full``, as a dense model holds ``weight.grad``); during the
    step, per layer, the augmented factors (:math:`n_i \times 2r_i`) and core
    (:math:`\prod 2r_i`) exist transiently.  Parameters and state are reallocated at the
    new ranks (no padding to a maximum rank), so their memory falls when ranks shrink.

    **Data parallelism.**  A step consumes, per layer, only projections of :math:`G`
    that are linear in it (K-gradients, C-gradient), so averaging them over workers gives
    exactly the single-process step.  Under plain ``DistributedDataParallel`` this happens
    automatically (:mod:`tucker_dlra.nn.distributed`, docs page "Distributed training"): the
    K-gradients and core gradients are averaged at the end of backward, the C-gradient in the
    augmented bases in the step, and the new ranks are checked across workers.  The optimizer
    switches its layers to the kernel-only backward (``layer.param_grads = False``), whose
    ``factors[i].grad`` is the K-gradient :math:`\nabla_{K_i}\mathcal L` and ``core.grad``
    :math:`G\times_i U_i^\top`; gradients rescaled since backward by a common factor
    (``clip_grad_norm_``, ``GradScaler.unscale_``) scale the whole Tucker step.

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
                 nonfinite: str = "raise") -> None:
        if nonfinite not in ("raise", "skip"):
            raise ValueError(f"nonfinite must be 'raise' or 'skip'; got {nonfinite!r}")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay, tau=tau, adaptive=adaptive,
                        integrator=integrator, rule=rule, max_rank=max_rank, min_rank=min_rank,
                        descent=descent, betas=tuple(betas) if betas is not None else betas,
                        eps=eps)
        _check_group(defaults)
        super().__init__(params, defaults)
        distributed.check_not_sharded([p for g in self.param_groups for p in g["params"]])
        self.nonfinite = nonfinite
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
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickling (``Optimizer.__getstate__`` keeps only defaults, state and groups)."""
        super().__setstate__(state)
        self.__dict__.setdefault("nonfinite", "raise")
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
        for layer in tucker_layers():
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

    # ------------------------------------------------------------------ descent rules
    @staticmethod
    def _direction(g: torch.Tensor, x: torch.Tensor, state: dict, group: dict
                   ) -> tuple[torch.Tensor, dict]:
        """Descent direction of one substep and the new state (functional; nothing mutated)."""
        wd = group["weight_decay"]
        if wd:
            g = g + wd * x
        new: dict[str, Any] = {}
        if group["descent"] == "adam":
            b1, b2 = group["betas"]
            step = int(state.get("step", 0)) + 1
            m = state.get("exp_avg")
            v = state.get("exp_avg_sq")
            m = (1 - b1) * g if m is None else b1 * m + (1 - b1) * g
            v = (1 - b2) * g * g if v is None else b2 * v + (1 - b2) * g * g
            denom = (v / (1 - b2 ** step)).sqrt() + group["eps"]
            new.update(step=step, exp_avg=m, exp_avg_sq=v)
            return (m / (1 - b1 ** step)) / denom, new
        mu = group["momentum"]
        if mu == 0:
            return g, new
        buf = state.get("momentum_buffer")
        buf = g.clone() if buf is None else mu * buf + (1 - group["dampening"]) * g
        new["momentum_buffer"] = buf
        return (g + mu * buf if group["nesterov"] else buf), new

    @staticmethod
    def _check_state(state: dict, p: torch.Tensor, what: str) -> None:
        for k in _MOMENT_KEYS + _SQ_KEYS:
            v = state.get(k)
            if v is not None and tuple(v.shape) != tuple(p.shape):
                raise ValueError(
                    f"optimizer state {k!r} of {what} has shape {tuple(v.shape)} but the "
                    f"parameter has {tuple(p.shape)}: load the model's state_dict before the "
                    "optimizer's (Tucker layers resize on load)")

    # ------------------------------------------------------------------ transports
    @staticmethod
    def _transport_k(state: dict, b: torch.Tensor) -> dict:
        out = dict(state)
        for k in _MOMENT_KEYS:
            if k in out:
                out[k] = out[k] @ b
        for k in _SQ_KEYS:
            if k in out:
                out[k] = out[k] @ (b * b)
        return out

    @staticmethod
    def _transport_core(state: dict, old: list, new: list) -> dict:
        out = dict(state)
        if not any(k in out for k in _MOMENT_KEYS + _SQ_KEYS):
            return out
        for k in _MOMENT_KEYS:
            if k in out:
                out[k] = c_gradient(TuckerTensor(out[k], old), new)
        for k in _SQ_KEYS:
            if k in out:
                mats = [un.T @ uo for uo, un in zip(old, new, strict=True)]
                out[k] = multi_mode_product(out[k], [a * a for a in mats])
        return out

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
        upper = [min(n, math.prod(shape) // n) for n in shape]
        gmax = self._group_bound(group["max_rank"], d, upper)
        gmin = self._group_bound(group["min_rank"], d, upper)
        mx = [a if b is None else min(a, b) for a, b in zip(layer.max_rank, gmax, strict=True)]
        mn = [a if b is None else max(a, b) for a, b in zip(layer.min_rank, gmin, strict=True)]
        return mx, [min(a, b) for a, b in zip(mn, mx, strict=True)]

    def _k_phase(self, layer: _TuckerLayer, index: dict, tgrads: tuple) -> dict:
        """Algorithm 1 lines 1-8 for one layer (functional): K-steps, new bases, C~."""
        core_p, fac_p = layer.core, list(layer.factors)
        cgroup = index[id(core_p)][1]
        fgroups = [index[id(p)][1] for p in fac_p]
        c = core_p.detach()
        us = [p.detach() for p in fac_p]
        grad = layer.grad_full.to(dtype=c.dtype, device=c.device)
        xp = namespace(c)
        for p in fac_p:
            self._check_state(self.state[p], p, "a Tucker factor")
        self._check_state(self.state[core_p], core_p, "a Tucker core")
        # lines 1-4: K-steps for all modes from the same point (Theorem 1)
        cores = [k_core(c, i) for i in range(len(us))]
        gs = [g_i for g_i, _ in cores]
        kgrads, cgrad_old, scale = tgrads  # Theorem 1 (distributed.step_gradients)
        ks, kstates = [], []
        for i, (_, s_i) in enumerate(cores):
            k0 = us[i] @ s_i
            dk, st = self._direction(kgrads[i], k0, self.state[fac_p[i]], fgroups[i])
            ks.append(k0 - fgroups[i]["lr"] * dk)
            kstates.append({**self.state[fac_p[i]], **st})
        if not _all_finite(ks):
            raise _NonFiniteUpdate
        ctx = {"layer": layer, "c": c, "us": us, "grad": grad, "gs": gs, "ks": ks,
               "kstates": kstates, "group": cgroup, "cstate": self.state[core_p],
               "cgrad_old": cgrad_old, "scale": scale}
        if cgroup["integrator"] == "bug":
            if cgroup["adaptive"]:  # lines 5-7: augmentation, U kept first
                basis = [augment_basis(u, k) for u, k in zip(us, ks, strict=True)]
            else:  # fixed-rank BUG
                basis = [orth_columns(xp, k) for k in ks]
            ctx["basis"] = basis
            ctx["c0"] = galerkin_core(c, us, basis)  # line 8 (zero-padded core if adaptive)
        else:  # parallel BUG: the C-step runs in the old bases
            ctx["basis"], ctx["c0"] = us, c
        return ctx

    def _c_phase(self, ctx: dict, cgrad: torch.Tensor) -> dict:
        """Algorithm 1 lines 9-12 for one layer from its C-gradient ``cgrad`` (line 9)."""
        layer, c, us, group = ctx["layer"], ctx["c"], ctx["us"], ctx["group"]
        basis, c0 = ctx["basis"], ctx["c0"]
        lr, tau, rule = group["lr"], float(group["tau"]), group["rule"]
        mx, mn = self._bounds(layer, group)
        kstates = ctx["kstates"]
        cstate = self._transport_core(ctx["cstate"], us, basis)
        dc, st = self._direction(cgrad, c0, cstate, group)  # line 9
        c1 = c0 - lr * dc
        cstate = {**cstate, **st}
        info = None
        if group["integrator"] == "parallel":  # assemble the augmented core (NUMERICS 1.3)
            aug = [augment_basis(u, k) for u, k in zip(us, ctx["ks"], strict=True)]
            new_dirs = [a[:, u.shape[1]:] for a, u in zip(aug, us, strict=True)]
            c1, basis_t = parallel_core(c1, ctx["gs"], ctx["ks"], new_dirs), aug
        else:
            basis_t = basis
        if not _all_finite([c1, torch.linalg.vector_norm(c1)]):
            raise _NonFiniteUpdate
        # truncate re-orthonormalises the bases by QR (not orthonormal=True: augment_basis
        # keeps U itself first, so without it the factors' orthonormality would drift over
        # the steps, measured 1.4e-4 in float32 on CUDA after a few steps)
        if group["adaptive"]:  # lines 10-12
            t, info = truncate(TuckerTensor(c1, basis_t), rtol=tau, rule=rule,
                               max_rank=_fit(mx, c1.shape), min_rank=_fit(mn, c1.shape),
                               full_output=True)
        elif group["integrator"] == "parallel":  # truncated back to the current ranks
            t, info = truncate(TuckerTensor(c1, basis_t), rank=list(c.shape), rule=rule,
                               full_output=True)
        else:
            t = TuckerTensor(c1, basis_t, orthonormal=True)
        valid = _tucker_rank(t.rank)
        if valid != t.rank:  # tolerance rules may disagree across modes on rounding-level
            t = truncate(t, rank=list(valid))  # values; lossless re-rounding (as ra_bug)
        # vector transport of the state into the coordinates of the new point
        new_f = list(t.factors)
        d = len(us)
        for i in range(d):
            if not any(k in kstates[i] for k in _MOMENT_KEYS + _SQ_KEYS):
                continue  # no state to move (momentum 0, SGD)
            g_new, _ = k_core(t.core, i)
            eye = torch.eye(us[i].shape[1], dtype=c.dtype, device=c.device)
            embed = TuckerTensor(ctx["gs"][i], [eye if j == i else us[j] for j in range(d)])
            kstates[i] = self._transport_k(kstates[i], k_gradient(embed, g_new, new_f, i))
        cstate = self._transport_core(cstate, basis, new_f)
        return {"layer": layer, "tucker": t, "kstates": kstates, "cstate": cstate,
                "info": info}

    def _second_pass(self, closure: Callable[[], Any], ctxs: list[dict],
                     layers: list[_TuckerLayer], index: dict) -> dict[int, torch.Tensor]:
        r"""Fixed-rank BUG with a closure: :math:`\nabla_W\mathcal L` at the Galerkin point.

        Temporarily sets each such layer to :math:`C \times_i (U^{new\top}_i U_i) \times_i
        U^{new}_i`, re-evaluates ``closure`` and reads the layers' new ``grad_full``; then
        restores every parameter, gradient and captured ``grad_full`` (nothing else moves).
        """
        originals = [(ctx["layer"], TuckerTensor(ctx["c"].clone(),
                                                 [u.clone() for u in ctx["us"]]))
                     for ctx in ctxs]
        grads = {id(p): p.grad for p, _ in index.values()}
        fulls = {id(layer): layer.grad_full for layer in layers}
        try:
            for ctx in ctxs:
                ctx["layer"].set_tucker(TuckerTensor(ctx["c0"], ctx["basis"]))
            with torch.enable_grad():
                loss = closure()
            out = {}
            for ctx in ctxs:
                g = ctx["layer"].grad_full
                if g is None:
                    raise RuntimeError("TDLRT.step(closure): the closure must run forward and "
                                       "backward (its second call gave no kernel gradient)")
                out[id(ctx["layer"])] = g.to(dtype=ctx["c"].dtype)
            if (loss is not None and not _all_finite([torch.as_tensor(loss)])) \
                    or not _all_finite(list(out.values())):
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
        grads = [layer.grad_full for layer in active] + [p.grad for p, _ in plain]
        if not _all_finite(grads):
            self._nonfinite("TDLRT.step: non-finite gradient (NaN or inf, e.g. from a non-finite "
                            "loss); the model and the optimizer state were left untouched.")
            return loss
        # compute every Tucker update first, then commit (atomic step)
        try:
            tgrads = distributed.step_gradients(active)  # averaged over workers under DDP
            ctxs = [self._k_phase(layer, index, tg)
                    for layer, tg in zip(active, tgrads, strict=True)]
            two_pass = [ctx for ctx in ctxs if closure is not None
                        and ctx["group"]["integrator"] == "bug" and not ctx["group"]["adaptive"]]
            g2 = self._second_pass(closure, two_pass, layers, index) if two_pass else {}
            bug = [ctx for ctx in ctxs if ctx["group"]["integrator"] == "bug"]
            cg = distributed.reduce_c_gradients(  # line 9 in the new bases, one all-reduce
                [ctx["layer"] for ctx in bug],
                [c_gradient(g2.get(id(ctx["layer"]), ctx["grad"]), ctx["basis"]) for ctx in bug])
            cg = {id(ctx["layer"]): c if id(ctx["layer"]) in g2 else ctx["scale"] * c
                  for ctx, c in zip(bug, cg, strict=True)}
            results = [self._c_phase(ctx, cg.get(id(ctx["layer"]), ctx["cgrad_old"]))
                       for ctx in ctxs]
        except _NonFiniteUpdate:
            results = None
        if results is None:
            self._nonfinite("TDLRT.step: the update is not finite (learning rate too large?); "
                            "the model and the optimizer state were left untouched.")
            return loss
        new_tensors = []
        for r in results:
            new_tensors += [r["tucker"].core, *r["tucker"].factors]
            for st in [*r["kstates"], r["cstate"]]:
                new_tensors += [v for v in st.values() if torch.is_tensor(v)]
        if not _all_finite(new_tensors):
            self._nonfinite("TDLRT.step: the update is not finite (learning rate too large?); "
                            "the model and the optimizer state were left untouched.")
            return loss
        distributed.check_consistent(active, [r["tucker"] for r in results])  # DDP workers
        names = {}  # layer names when the optimizer was given model.named_parameters()
        for g in self.param_groups:
            for p, name in zip(g["params"], g.get("param_names") or [], strict=False):
                if name.endswith("core"):
                    names[id(p)] = name[: -len("core")].rstrip(".") or "core"
        info_all = {}
        for k, r in enumerate(results):
            layer = r["layer"]
            layer.set_tucker(r["tucker"])
            for p, st in zip(layer.factors, r["kstates"], strict=True):
                self.state[p] = st
            self.state[layer.core] = r["cstate"]
            info = r["info"]
            info_all[names.get(id(layer.core), k)] = {
                "ranks": layer.ranks,
                "error_bound": 0.0 if info is None else info.error_bound,
                "tails": () if info is None else info.tails,
            }
        for p, group in plain:
            self._plain_update(p, group)
        self.last_step_info = info_all
        return loss

    def _plain_update(self, p: torch.Tensor, group: dict) -> None:
        """The same descent rule (SGD with momentum or Adam) on an ordinary parameter.

        In place, with the formulas of ``torch.optim.SGD`` / ``torch.optim.Adam`` (L2
        weight decay added to the gradient).
        """
        state = self.state[p]
        g = p.grad
        if group["weight_decay"]:
            g = g.add(p, alpha=group["weight_decay"])
        if group["descent"] == "adam":
            b1, b2 = group["betas"]
            if "exp_avg" not in state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] = int(state["step"]) + 1
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            bc1, bc2 = 1 - b1 ** state["step"], 1 - b2 ** state["step"]
            denom = (v.sqrt() / math.sqrt(bc2)).add_(group["eps"])
            p.addcdiv_(m, denom, value=-group["lr"] / bc1)
            return
        mu = group["momentum"]
        if mu:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = torch.clone(g).detach()
            else:
                buf.mul_(mu).add_(g, alpha=1 - group["dampening"])
            g = g.add(buf, alpha=mu) if group["nesterov"] else buf
        p.add_(g, alpha=-group["lr"])
