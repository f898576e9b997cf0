r"""Data-parallel TDLRT under ``torch.distributed`` (DistributedDataParallel, torchrun).

Why DDP alone cannot train Tucker layers
----------------------------------------
``DistributedDataParallel`` averages ``param.grad`` in buckets laid out, once, for the shapes
its parameters have when it is built, and it hooks each parameter's gradient accumulator.
A rank-adaptive step changes the shapes of a Tucker layer's core and factors: DDP's bucket
views no longer fit and the hooks sit on accumulators autograd no longer uses (measured:
after one rank change DDP silently stops averaging that bucket, then fails with "Expected to
have finished reduction in the prior iteration").  Besides, the C-step of Algorithm 1 needs
:math:`\nabla_W\mathcal L` projected onto the *augmented* bases, which only exist after the
K-steps: no gradient computed in backward carries it.

What this module does instead
-----------------------------
* **DDP keeps the ordinary parameters, this module the Tucker ones.**  The first training
  forward of a Tucker layer inside a ``DistributedDataParallel`` forward removes the Tucker
  cores and factors of that DDP's module from DDP's reducer (DDP's own ignore list, the one
  ``_set_params_and_buffers_to_ignore_for_model`` fills, and a rebuilt reducer); the user
  wraps the model with plain ``DistributedDataParallel(model)``, no flags.  DDP has
  broadcast them from rank 0 when it was built, so all workers start from the same point.
* **Round 1, in backward** (:func:`accumulate`): with the kernel-only backward, a Tucker
  layer's backward turns its dense kernel gradient :math:`G` into the gradients Algorithm 1
  steps along -- ``core.grad`` :math:`= \nabla_C\mathcal L = G\times_i U_i^\top` and
  ``factors[i].grad`` :math:`= \nabla_{K_i}\mathcal L` (Theorem 1, the K-step gradient,
  :func:`tucker_dlra.steps.k_gradients`) -- and at the end of the backward pass all Tucker
  gradients of the model are averaged over the workers in one flat all-reduce (skipped
  inside ``ddp.no_sync()``, like DDP's).  Both are linear in :math:`G`, so the average is
  the gradient of the concatenated batch.  After backward every worker therefore holds the
  same ``.grad`` everywhere -- what ``clip_grad_norm_`` or ``GradScaler.unscale_`` then read.
* **Round 2, in the step** (:func:`reduce_c_gradients`): the C-gradient in the augmented
  bases :math:`G\times_i\hat U_i^\top` (Algorithm 1, line 9; :math:`\hat U_i` computed on
  every worker from the same averaged K-gradients) is averaged in one flat all-reduce.  The
  parallel BUG needs no second round (its C-step uses ``core.grad``).
* **Consistency check** (:func:`check_consistent`): before a step is committed, the new
  ranks and a checksum of every new core and factor are compared across workers (one small
  all-reduce).  Any disagreement raises the same ``RuntimeError`` on every worker, before
  any parameter is written; a fixed-size header of the ranks precedes every variable-size
  all-reduce, so a disagreement can never turn into a shape mismatch or a hang.

Bytes per step (all-reduce payload): :math:`\sum_\ell (\prod_i r_i + \sum_i n_i r_i)`
(round 1) plus :math:`\sum_\ell\prod_i\min(2r_i, n_i)` (round 2, BUG) and a few dozen
bytes of checks, against :math:`\sum_\ell\prod_i n_i` for dense DDP of the same model;
:func:`comm_bytes` counts them (``validation/bench_distributed_bytes.py``).

FSDP and tensor parallelism shard parameters; TDLRT refuses them (:func:`check_not_sharded`).
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Any

import torch

from tucker_dlra import c_gradient, k_core
from tucker_dlra.backend import flat_concat, split_flat
from tucker_dlra.steps import k_gradients

__all__ = [
    "Launch",
    "accumulate",
    "all_sum",
    "all_true",
    "any_distributed",
    "attach",
    "check_consistent",
    "check_not_sharded",
    "comm_bytes",
    "finish",
    "is_distributed_layer",
    "launch_from_env",
    "local_part",
    "projected_bytes",
    "reduce_c_gradients",
    "rescale_verdict",
    "reset_comm_bytes",
    "step_gradients",
]

_BYTES = {"all_reduce": 0, "checks": 0, "calls": 0}
#: per-layer bookkeeping (process group, reference gradients, ...), outside the modules so
#: that copying or pickling a model never meets a process group
_STATE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _st(layer: Any) -> dict:
    st = _STATE.get(layer)
    if st is None:
        st = _STATE[layer] = {}
    return st
_PENDING: dict[int, list[Any]] = {}  # id(group) -> layers whose grads this backward produced
_GROUPS: dict[int, Any] = {}
_QUEUED = [False]


def comm_bytes() -> dict[str, int]:
    """Bytes this process has all-reduced for Tucker layers since the last
    :func:`reset_comm_bytes`: ``all_reduce`` (every call's payload summed), of which
    ``checks`` went to the fixed-size consistency checks (32 bytes each), and ``calls``."""
    return dict(_BYTES)


def reset_comm_bytes() -> None:
    """Zero the counters of :func:`comm_bytes`."""
    for k in _BYTES:
        _BYTES[k] = 0


def _all_reduce(t: torch.Tensor, group: Any, op: Any = None) -> None:
    import torch.distributed as dist

    _BYTES["all_reduce"] += t.numel() * t.element_size()
    _BYTES["calls"] += 1
    if op is not None:  # MAX: the checks
        _BYTES["checks"] += t.numel() * t.element_size()
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op, group=group)


def _world(group: Any) -> int:
    import torch.distributed as dist

    return dist.get_world_size(group)


# ---------------------------------------------------------------------------- DDP
_CURRENT: list[Any] = []  # DDP modules whose forward is running (hooks, after first sight)


def _push(module: Any, args: Any) -> None:
    _CURRENT.append(module)


def _pop(module: Any, args: Any, output: Any) -> None:
    if _CURRENT:
        _CURRENT.pop()


def _active_ddp() -> Any:
    """The ``DistributedDataParallel`` whose forward is running, or None.

    Found by DDP's own marker on first sight (``_get_active_ddp_module``), then by forward
    hooks this module installs on it (DDP skips its marker when it has no parameter left
    to average, e.g. a model of Tucker layers only)."""
    if _CURRENT:
        return _CURRENT[-1]
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    from torch.nn.parallel import DistributedDataParallel

    get = getattr(DistributedDataParallel, "_get_active_ddp_module", None)
    ddp = get() if get is not None else None
    if ddp is not None and not getattr(ddp, "_tucker_dlra_hooked", False):
        ddp._tucker_dlra_hooked = True
        ddp.register_forward_pre_hook(_push)
        ddp.register_forward_hook(_pop, always_call=True)
    return ddp


def _exclude_from_ddp(ddp: Any) -> None:
    """Take the Tucker cores and factors of ``ddp.module`` out of DDP's reducer (once)."""
    from .layers import is_tucker_layer

    if getattr(ddp, "_tucker_dlra_excluded", False):
        return
    names = []
    for mname, m in ddp.module.named_modules():
        if is_tucker_layer(m):
            pre = f"{mname}." if mname else ""
            _st(m)["name"] = mname  # a worker-independent order for the flat buffers
            # DDP's construction broadcast rank 0's values into the parameters (raw writes
            # that may bypass the version counters): drop caches keyed on the old values
            m.clear_kernel_cache()
            names += [pre + "core"] + [f"{pre}factors.{i}" for i in range(len(m.factors))]
    ddp._tucker_dlra_excluded = True
    names = sorted(set(names))
    if not names or set(names) <= set(ddp.parameters_to_ignore):
        return
    try:
        ddp.parameters_to_ignore = set(ddp.parameters_to_ignore) | set(names)
        ddp.module._ddp_params_and_buffers_to_ignore = sorted(ddp.parameters_to_ignore)
        ddp._module_parameters = [p for n, p in ddp.module.named_parameters()
                                  if n not in ddp.parameters_to_ignore]
        if not any(p.requires_grad for p in ddp._module_parameters):
            # nothing left for DDP to average: its forward/backward become pass-through
            ddp._delay_all_reduce_all_params = True
            return
        parameters, sparse = ddp._build_params_for_reducer()
        mapping = ddp._build_debug_param_to_name_mapping(parameters)
        ddp._ddp_init_helper(parameters, sparse, mapping, ddp.static_graph)
        import torch.distributed as dist

        for hook, state in getattr(ddp, "_comm_hooks", []):  # the user's hooks, re-registered
            dist._register_comm_hook(ddp.reducer, state, hook)
        if torch.is_grad_enabled() and ddp.require_backward_grad_sync:
            ddp.reducer.prepare_for_forward()
    except (AttributeError, TypeError) as exc:  # a torch whose DDP internals differ
        raise RuntimeError(
            "tucker_dlra: could not take the Tucker layers' cores and factors out of "
            "DistributedDataParallel's reducer (rank changes resize them, which DDP's buckets "
            "cannot follow). Build DDP with them ignored: DistributedDataParallel."
            "_set_params_and_buffers_to_ignore_for_model(model, names) before wrapping, with "
            f"names = {names[:4]}...") from exc


def attach(layer: Any) -> None:
    """Called by a Tucker layer's training forward: record whether it runs under DDP (and
    whether this pass's backward synchronises), excluding its parameters from DDP's reducer
    on first sight.  Records ``(group, sync)``, or None outside DDP."""
    ddp = _active_ddp()
    if ddp is None or getattr(layer, "_timing_copy", False):
        _st(layer)["dist"] = None
        return
    _exclude_from_ddp(ddp)
    group = ddp.process_group
    _st(layer)["dist"] = (group, bool(ddp.require_backward_grad_sync) and torch.is_grad_enabled())


def is_distributed_layer(layer: Any) -> bool:
    """True when the layer's last training forward ran inside a DDP forward."""
    return _st(layer).get("dist") is not None


# ---------------------------------------------------------------------------- round 1
def accumulate(layer: Any, g: torch.Tensor) -> None:
    r"""Kernel-only backward of one layer: add :math:`\nabla_C = G\times_i U_i^\top` to
    ``core.grad`` and :math:`\nabla_{K_i}` (Theorem 1) to ``factors[i].grad``; queue the
    end-of-backward averaging over the workers.  Cost: one ``c_gradient`` and one
    ``k_gradients`` on :math:`G` (what the step needed anyway) and :math:`d` small QRs."""
    core = layer.core.detach()
    us = [f.detach() for f in layer.factors]
    g = g.detach().to(dtype=core.dtype)
    gs = [k_core(core, i)[0] for i in range(len(us))]
    grads = [c_gradient(g, us), *k_gradients(g, gs, us)]
    for p, gp in zip([layer.core, *layer.factors], grads, strict=True):
        if p.grad is None or p.grad.shape != gp.shape:
            p.grad = gp.contiguous()
        else:  # not in place: a reference to the earlier .grad keeps its value
            p.grad = p.grad + gp
    dist_state = _st(layer).get("dist")
    group = None if dist_state is None or not dist_state[1] else dist_state[0]
    if dist_state is not None:
        _st(layer)["synced"] = group is not None
    _GROUPS[id(group)] = group
    _PENDING.setdefault(id(group), [])
    if all(x is not layer for x in _PENDING[id(group)]):
        _PENDING[id(group)].append(layer)
    if not _QUEUED[0]:
        _QUEUED[0] = True
        torch.autograd.Variable._execution_engine.queue_callback(_flush)


def _record(layer: Any) -> None:
    """Reference copy of the layer's gradients and the ``grad_full`` stamp (see
    :func:`step_gradients`)."""
    ps = [layer.core, *layer.factors]
    _st(layer)["ref"] = [p.grad.detach().clone() for p in ps]
    _st(layer)["ref_ids"] = [id(p.grad) for p in ps]
    g = layer.core.grad
    layer._grad_stamp = (id(g), g._version)


def _header(layers: list[Any], extra: list[int], group: Any, what: str) -> None:
    """All-reduce a fixed-size fingerprint of the layers' ranks; differing ones raise."""
    h = 0
    for layer in layers:
        for r in layer.ranks:
            h = (h * 1000003 + int(r) + 1) % (2 ** 61 - 1)
    for e in extra:
        h = (h * 1000003 + int(e) + 1) % (2 ** 61 - 1)
    v = torch.tensor([h, -h, len(layers), -len(layers)], dtype=torch.int64,
                     device=layers[0].core.device if layers else "cpu")
    import torch.distributed as dist

    _all_reduce(v, group, dist.ReduceOp.MAX)
    v0, v1, v2, v3 = v.tolist()  # one host sync
    if v0 != -v1 or v2 != -v3:
        raise RuntimeError(
            f"TDLRT (distributed): the workers disagree on the Tucker layers {what} (their ranks "
            "or the set of layers differ). All workers must hold identical models: build the "
            "model and TDLRT identically on every worker and load the same checkpoint.")


def projected_bytes(layer: Any) -> tuple[int, int]:
    r"""Numbers all-reduced per step for one layer: (projections, dense kernel).

    Projections: round 1 (:math:`\prod r_i + \sum n_i r_i`) plus round 2 (the augmented
    core, :math:`\prod\min(2r_i, n_i)`, its largest size); dense: :math:`\prod n_i`.  When
    the projections are not smaller (ranks near full), the layer's dense :math:`G` is
    averaged instead, so a step never sends more than dense DDP would.
    """
    shape, ranks = layer.kernel_shape, layer.ranks
    proj = (math.prod(ranks) + sum(n * r for n, r in zip(shape, ranks, strict=True))
            + math.prod(min(2 * r, n) for n, r in zip(shape, ranks, strict=True)))
    return proj, math.prod(shape)


def _own_grads(layer: Any, g: torch.Tensor | None = None) -> list[torch.Tensor]:
    """``[core gradient, *K-gradients]`` of one layer from its kernel gradient ``g``
    (default ``layer.grad_full``)."""
    core = layer.core.detach()
    us = [f.detach() for f in layer.factors]
    g = (layer.grad_full if g is None else g).to(dtype=core.dtype)
    gs = [k_core(core, i)[0] for i in range(len(us))]
    return [c_gradient(g, us), *k_gradients(g, gs, us)]


def _flush() -> None:
    """End of backward: average the Tucker gradients produced in this pass over the workers
    (one all-reduce per process group: the projections, or ``grad_full`` itself for layers
    where that is smaller), then record the references :func:`step_gradients` compares."""
    _QUEUED[0] = False
    pending = dict(_PENDING)
    _PENDING.clear()
    for key, layers in pending.items():
        group = _GROUPS.get(key)
        if group is not None:
            layers.sort(key=lambda m: _st(m).get("name", ""))  # backward order may vary
            _header(layers, [], group, "in backward")
            dense = [projected_bytes(layer)[0] >= projected_bytes(layer)[1] for layer in layers]
            parts = []
            for layer, d in zip(layers, dense, strict=True):
                _st(layer)["dense"] = d
                ts = [layer.grad_full] if d else [p.grad for p in [layer.core, *layer.factors]]
                parts += [t.reshape(-1).to(layer.core.dtype) for t in ts]
            flat = torch.cat(parts)
            _all_reduce(flat, group)
            flat /= _world(group)
            off = 0
            for layer, d in zip(layers, dense, strict=True):
                if d:
                    n = layer.grad_full.numel()
                    layer.grad_full = flat[off:off + n].view_as(layer.grad_full).to(
                        layer.grad_full.dtype).clone()
                    off += n
                    for p, g in zip([layer.core, *layer.factors], _own_grads(layer),
                                    strict=True):
                        p.grad = g.contiguous()
                    continue
                for p in [layer.core, *layer.factors]:
                    n = p.grad.numel()
                    p.grad.copy_(flat[off:off + n].view_as(p.grad))
                    off += n
        for layer in layers:
            _record(layer)


# ---------------------------------------------------------------------------- step
def step_gradients(layers: list[Any], grads: list[torch.Tensor], fresh: bool = False
                   ) -> tuple[list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]],
                              torch.Tensor | None]:
    r"""The K-gradients, the C-gradient in the old bases and the common factor ``s`` of each
    layer, as Algorithm 1 consumes them, and a device flag vector for the step's read-back.

    Read from ``.grad`` when the kernel-only backward produced them (averaged over workers
    under DDP).  ``s`` (a 0-d device tensor, no host sync) is the factor by which they were
    rescaled since backward (gradient clipping, ``GradScaler.unscale_``); the step applies
    it to the C-gradient it computes from :math:`G`, so the whole Tucker step is scaled like
    the ``.grad`` everyone else sees.  Layers whose ``.grad`` are plain autograd gradients
    (``param_grads=True``), or all layers when ``fresh`` (the optimizer's kernel-gradient
    hook was overridden), get them from ``grads`` (their :math:`G`; averaged here, in one
    all-reduce per process group, under DDP), with ``s = 1``.

    The flags (float, 1 = true) are ``[all changes are common factors, no factor needs the
    clipping warning]``; the caller reads them back with the step's ranks and raises or
    warns there (:func:`rescale_verdict`).  Cost: :math:`O(\sum_i n_i r_i + \prod r)` per
    layer when read from ``.grad``.
    """
    out: list[Any] = [None] * len(layers)
    todo = []
    for k, layer in enumerate(layers):
        ps = [layer.core, *layer.factors]
        ref = _st(layer).get("ref")
        if (fresh or ref is None or any(p.grad is None for p in ps)
                or [id(p.grad) for p in ps] != _st(layer).get("ref_ids")
                or any(r.shape != p.grad.shape for r, p in zip(ref, ps, strict=True))):
            todo.append(k)
            continue
        if is_distributed_layer(layer) and not _st(layer).get("synced", True):
            raise RuntimeError(
                "TDLRT (distributed): the last backward pass ran inside DistributedDataParallel."
                "no_sync(); run the last micro-batch's backward outside no_sync() before step")
        # compared by value: GradScaler.unscale_ writes without bumping ._version
        out[k] = [p.grad.detach() if p.grad.requires_grad else p.grad for p in ps], ref
    read = [k for k in range(len(layers)) if k not in todo]
    scales, flags = _common_factors([out[k] for k in read])
    for k, s in zip(read, scales, strict=True):
        cur = out[k][0]
        out[k] = (cur[1:], cur[0], s)
    if todo:
        fresh_g = {k: _own_grads(layers[k], grads[k]) for k in todo}
        groups: dict[int, list[int]] = {}
        for k in todo:
            if is_distributed_layer(layers[k]):
                groups.setdefault(id(_st(layers[k])["dist"][0]), []).append(k)
        for ks in groups.values():
            group = _st(layers[ks[0]])["dist"][0]
            _header([layers[k] for k in ks], [], group, "in step")
            flat = flat_concat(torch, [t for k in ks for t in fresh_g[k]])
            _all_reduce(flat, group)
            flat /= _world(group)
            pieces = iter(split_flat(torch, flat, [tuple(t.shape) for k in ks
                                                   for t in fresh_g[k]]))
            for k in ks:
                fresh_g[k] = [next(pieces) for _ in fresh_g[k]]
        for k in todo:
            one = torch.ones((), dtype=layers[k].core.dtype, device=layers[k].core.device)
            out[k] = (fresh_g[k][1:], fresh_g[k][0], one)
    return out, flags


_WARNED: list[bool] = [False]


def _common_factors(pairs: list[tuple[list, list]]
                    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    r"""Per layer, the factor :math:`s` with ``.grad`` :math:`= s\,` reference (exactly 1
    when untouched), from float64 inner products, on the device; and the flags of
    :func:`step_gradients`: every change is a common factor (to the dtype's accuracy), and
    no factor calls for the clipping warning (a factor that is not a power of two, i.e. not
    ``GradScaler``'s; :func:`tucker_dlra.nn.clip_grad_norm_` leaves none: it re-records)."""
    if not pairs:
        return [], None
    dev = pairs[0][0][0].device
    n = len(pairs)
    # all layers at once: one flat float64 vector per side, sums per layer by index_add_
    cur = flat_concat(torch, [a.to(dev) for c, _ in pairs for a in c]).double()
    ref = flat_concat(torch, [b.to(dev) for _, r in pairs for b in r]).double()
    counts = [sum(a.numel() for a in c) for c, _ in pairs]
    seg = torch.repeat_interleave(torch.arange(n, device=dev),
                                  torch.tensor(counts, device=dev), output_size=sum(counts))
    sums = torch.zeros(4, n, dtype=torch.float64, device=dev)
    sums.index_add_(1, seg, torch.stack([(cur != ref).double(), cur * ref, ref * ref,
                                         cur * cur]))
    neq, num, den, c2 = sums[0] > 0, sums[1], sums[2], sums[3]
    s = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 1.0)
    s = torch.where(neq, s, 1.0)
    err2 = (c2 - s * num).clamp_min(0.0)  # ||cur - s ref||^2 = ||cur||^2 - num^2 / den
    eps = torch.tensor([1e-5 if c[0].dtype == torch.float64 else 1e-3 for c, _ in pairs],
                       dtype=torch.float64, device=dev)
    good = torch.isfinite(s) & (err2 <= eps.square() * c2.clamp_min(1e-300))
    mant, _ = torch.frexp(s)
    flags = torch.stack([(~neq | good).all(), (~neq | (mant == 0.5)).all()])
    scales = [x.to(device=c[0].device, dtype=c[0].dtype) for x, (c, _) in
              zip(s.unbind(), pairs, strict=True)]
    return scales, flags


def rescale_verdict(flags: list[float]) -> None:
    """Raise or warn (once per process) from the read-back flags of :func:`step_gradients`."""
    if not flags:
        return
    if flags[0] != 1.0:
        raise RuntimeError(
            "TDLRT: the gradients of a Tucker layer were changed between backward and step in "
            "a way that is not a common factor (e.g. torch.nn.utils.clip_grad_value_, or an "
            "in-place edit): its C-step reads the dense kernel gradient grad_full, which such "
            "a change cannot reach. Clip by norm (tucker_dlra.nn.clip_grad_norm_) or edit "
            "layer.grad_full.")
    if flags[1] != 1.0 and not _WARNED[0]:  # GradScaler's factors are powers of two
        _WARNED[0] = True
        warnings.warn(
            "TDLRT: the Tucker layers' gradients were rescaled since backward (gradient "
            "clipping?); the whole Tucker step is scaled alike. Note: torch.nn.utils."
            "clip_grad_norm_ counts a Tucker layer's norm over its .grad (core gradient and "
            "K-gradients), not over the dense kernel gradient as the equivalent dense model "
            "would; tucker_dlra.nn.clip_grad_norm_ counts the kernel gradient.", UserWarning,
            stacklevel=4)


def any_distributed(layers: list[Any]) -> bool:
    """True when any of the layers' last training forward ran inside a DDP forward."""
    return any(is_distributed_layer(layer) for layer in layers)


def reduce_c_gradients(layers: list[Any], cgrads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Average the C-gradients (Algorithm 1, line 9) of the distributed layers over the
    workers, in one all-reduce per process group (after a fixed-size shape header).  Layers
    not under DDP, or whose ``grad_full`` was averaged in backward, are returned unchanged."""
    out = list(cgrads)
    groups: dict[int, list[int]] = {}
    for k, layer in enumerate(layers):
        if is_distributed_layer(layer) and not _st(layer).get("dense", False):
            groups.setdefault(id(_st(layer)["dist"][0]), []).append(k)
    for ks in groups.values():
        group = _st(layers[ks[0]])["dist"][0]
        shapes = [s for k in ks for s in out[k].shape]
        _header([layers[k] for k in ks], shapes, group, "before the C-step")
        flat = flat_concat(torch, [out[k] for k in ks])
        _all_reduce(flat, group)
        flat /= _world(group)
        for k, piece in zip(ks, split_flat(torch, flat, [tuple(out[k].shape) for k in ks]),
                            strict=True):
            out[k] = piece
    return out


def check_consistent(layers: list[Any], tuckers: list[Any]) -> None:
    """Compare the new ranks and a checksum of the new cores and factors across the workers
    (one all-reduce of a fixed-size vector); raise on every worker if they differ."""
    groups: dict[int, list[int]] = {}
    for k, layer in enumerate(layers):
        if is_distributed_layer(layer):
            groups.setdefault(id(_st(layer)["dist"][0]), []).append(k)
    import torch.distributed as dist

    for ks in groups.values():
        group = _st(layers[ks[0]])["dist"][0]
        dev = layers[ks[0]].core.device
        h = 0
        sums = []
        for k in ks:
            t = tuckers[k]
            for r in t.rank:
                h = (h * 1000003 + int(r) + 1) % (2 ** 52)  # exact in float64
            sums += [torch.as_tensor(a).double().abs().sum().to(dev) for a in [t.core, *t.factors]]
        cs = torch.stack(sums).sum()
        hh = torch.tensor(float(h), dtype=torch.float64, device=dev)
        v = torch.stack([hh, -hh, cs, -cs])
        _all_reduce(v, group, dist.ReduceOp.MAX)
        v = v.tolist()
        same_rank = float(v[0]) == -float(v[1])
        spread = float(v[2]) + float(v[3])
        if not same_rank or spread > 1e-6 * max(abs(float(v[2])), 1e-30):
            raise RuntimeError(
                "TDLRT (distributed): the workers disagree on the new Tucker ranks or factors "
                f"({'ranks differ' if not same_rank else f'checksums differ by {spread:.3g}'}); "
                "the step was not applied. The workers' gradients or optimizer settings differ "
                "(same tau, integrator and state on every worker?).")


# ---------------------------------------------------------------------------- sharding
def check_not_sharded(params: list[torch.Tensor]) -> None:
    """Raise a clear ``TypeError`` for parameters sharded by FSDP or tensor parallelism."""
    for p in params:
        name = type(p).__name__
        if name == "FlatParameter" or getattr(p, "_is_flat_param", False) or name == "DTensor" \
                or type(getattr(p, "data", None)).__name__ == "DTensor":
            raise TypeError(
                "TDLRT does not support FullyShardedDataParallel or tensor parallelism (a "
                f"parameter is a sharded {name}): Algorithm 1 needs each Tucker layer's whole "
                "core and factors on every worker. Use DistributedDataParallel.")


# ---------------------------------------------------------------------------- torchrun
class Launch:
    """This process's place in a ``torchrun`` launch (see :func:`launch_from_env`)."""

    def __init__(self, rank: int, world: int, local_rank: int, device: torch.device,
                 owns_group: bool) -> None:
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.device, self.owns_group = device, owns_group

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0


def launch_from_env(device: torch.device) -> Launch | None:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), else None.

    CUDA: one device per local rank (``cuda:LOCAL_RANK``) and the nccl backend; CPU: gloo.
    """
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device.type == "cuda":
        if torch.cuda.device_count() <= local:
            raise ValueError(f"LOCAL_RANK {local} needs a CUDA device cuda:{local}; this machine "
                             f"has {torch.cuda.device_count()} (use --device cpu for gloo)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Launch(dist.get_rank(), dist.get_world_size(), local, device, owns)


def local_part(x: torch.Tensor, y: torch.Tensor, launch: Launch
               ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This worker's contiguous share of a global batch and the factor ``world / len(y)``:
    ``factor * (sum of the local losses)``, averaged by DDP over the workers, is the mean
    loss of the global batch (also for a last batch that does not split evenly)."""
    b = len(y)
    lo, hi = b * launch.rank // launch.world, b * (launch.rank + 1) // launch.world
    return x[lo:hi], y[lo:hi], launch.world / max(b, 1)


def all_sum(values: list[float], launch: Launch | None, device: Any = "cpu") -> list[float]:
    """Sum a few numbers over the workers (identity without a launch)."""
    if launch is None:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) for v in t]


def all_true(flag: bool, launch: Launch | None, device: Any = "cpu") -> bool:
    """``flag`` on every worker (one tiny all-reduce), so that all of them stop together."""
    if launch is None:
        return flag
    return all_sum([0.0 if flag else 1.0], launch, device)[0] == 0.0


def finish(launch: Launch | None) -> None:
    """Wait for every worker, then leave the process group this module joined."""
    if launch is None:
        return
    import torch.distributed as dist

    dist.barrier()
    if launch.owns_group:
        dist.destroy_process_group()
