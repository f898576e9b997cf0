"""The shared base of the Tucker layers: parameters, kernel, kernel cache, gradient capture,
forward path choice, checkpoints (see :mod:`tucker_dlra.nn.layers`)."""

from __future__ import annotations

import copy
import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from tucker_dlra import TuckerTensor, hosvd, multi_mode_product
from tucker_dlra._validate import per_mode
from tucker_dlra.backend import namespace, qr
from tucker_dlra.tucker import orthonormality_defects

from ..distributed import attach
from ._params import RankArg, _LayerRef, _replace_data, _upper_ranks, resolve_rank
from ._paths import _STEP_GENERATION
from ._tap import _KernelTap


def is_tucker_layer(module: Any) -> bool:
    """``True`` for the Tucker layers of this module (trained by :class:`TDLRT`)."""
    return isinstance(module, _TuckerLayer)


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
        set_tucker_many([self], [t])

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
        from . import PATH_SELECTOR as sel  # the package's, so that replacing it there counts

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
        # the ratios are read from the package, so that setting them there counts (as before
        # the module became a package)
        from . import FACTORIZED_FLOP_RATIO, KERNEL_ONLY_FLOP_RATIO

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


@torch.no_grad()
def set_tucker_many(layers: list, ts: list[TuckerTensor]) -> None:
    r""":meth:`_TuckerLayer.set_tucker` for several layers at once.

    Every ``t`` is checked (type, shape; orthonormalised when not flagged) before any layer
    is written; the parameters whose shape is unchanged are written by one
    ``torch._foreach_copy_`` (one kernel launch per dtype and device group instead of one
    copy per tensor), the resized ones get new storage.  Cost: one pass over the new
    cores and factors.
    """
    checked = []
    for layer, t in zip(layers, ts, strict=True):
        if not isinstance(t, TuckerTensor):
            raise TypeError(f"t must be a tucker_dlra.TuckerTensor; got {type(t).__name__}")
        if tuple(t.shape) != layer.kernel_shape:
            raise ValueError(f"t has shape {t.shape}; this layer's kernel has "
                             f"{layer.kernel_shape}")
        checked.append(t if t.orthonormal else t.orthonormalize())
    dst, src = [], []
    for layer, t in zip(layers, checked, strict=True):
        fk = {"device": layer.core.device, "dtype": layer.core.dtype}
        layer.clear_kernel_cache()
        for p, new in zip([layer.core, *layer.factors], [t.core, *t.factors], strict=True):
            p.grad = None
            new = torch.as_tensor(new).to(**fk)
            if new.shape == p.shape:
                dst.append(p)
                src.append(new)
            else:
                _replace_data(p, new.detach().clone(memory_format=torch.contiguous_format))
        layer.grad_full = None
    if dst:
        torch._foreach_copy_(dst, src)
