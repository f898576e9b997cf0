r"""Conversion of any PyTorch model to Tucker / low-rank layers and back.

:func:`tuckerize` replaces the ``nn.Conv1d/2d/3d`` and ``nn.Linear`` layers of a model by
Tucker convolutions / low-rank linear layers (initialised by the truncated HOSVD of the
trained weights, paper Section 2.1 and Eq. (3)), either the rank-adaptive layers trained
by Algorithm 1 (``kind="tdlrt"``) or one of the paper's fixed-rank "vanilla" baselines of
Section 4 (``kind="vanilla-tucker" | "vanilla-cp" | "vanilla-matrix"``).
:func:`to_dense` exports plain ``nn.ConvNd`` / ``nn.Linear`` layers for deployment.
"""

from __future__ import annotations

import copy
import fnmatch
import inspect
from collections.abc import Iterable
from typing import Any

from torch import nn

from .vanilla import (
    VANILLA_KINDS,
    VanillaCPConv,
    VanillaLowRankLinear,
    VanillaMatrixConv,
    VanillaTuckerConv,
    _VanillaConv,
)

__all__ = ["tuckerize", "to_dense", "KINDS"]

#: Accepted values of ``tuckerize(kind=...)``.
KINDS = ("tdlrt",) + VANILLA_KINDS

_DENSE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _layers_module() -> Any:
    from . import layers  # C1's Tucker layers; imported lazily (no import cycle)

    return layers


def _low_rank_types() -> tuple[type, ...]:
    """Classes of this package whose instances :func:`to_dense` exports."""
    types: list[type] = [_VanillaConv, VanillaLowRankLinear]
    try:
        layers = _layers_module()
    except ImportError:  # pragma: no cover - only while the layers module is absent
        return tuple(types)
    for name in ("_TuckerConvNd", "TuckerConv1d", "TuckerConv2d", "TuckerConv3d",
                 "LowRankLinear"):
        cls = getattr(layers, name, None)
        if isinstance(cls, type):
            types.append(cls)
    return tuple(types)


def _check_selector(sel: Any, name: str) -> list[Any] | None:
    if sel is None:
        return None
    if isinstance(sel, (str, type)):
        sel = [sel]
    try:
        items = list(sel)
    except TypeError:
        raise TypeError(f"{name} must be None, a name pattern, a module type or a list of "
                        f"them; got {sel!r}") from None
    for it in items:
        if not isinstance(it, (str, type)):
            raise TypeError(f"{name} entries must be module-name patterns (str, fnmatch "
                            f"syntax) or nn.Module types; got {it!r}")
    return items


def _matches(name: str, module: nn.Module, selectors: list[Any]) -> bool:
    for s in selectors:
        if isinstance(s, str):
            if fnmatch.fnmatchcase(name, s):
                return True
        elif isinstance(module, s):
            return True
    return False


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at the dotted ``name`` inside ``model``; return the (new) root."""
    if name == "":
        return new
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
    return model


def _convert_one(module: nn.Module, kind: str, rank: Any, rtol: float | None,
                 max_rank: Any, min_rank: Any, rule: str, init: str | None = None) -> nn.Module:
    is_linear = isinstance(module, nn.Linear)
    shape = tuple(module.weight.shape)
    if kind == "tdlrt":
        layers = _layers_module()
        kwargs: dict[str, Any] = {"rank": rank, "rtol": rtol, "max_rank": max_rank}
        if is_linear:
            build = layers.LowRankLinear.from_linear
        else:
            build = {1: layers.TuckerConv1d, 2: layers.TuckerConv2d,
                     3: layers.TuckerConv3d}[module.weight.dim() - 2].from_conv
        sig = inspect.signature(build).parameters
        takes_min = "min_rank" in sig
        if "rule" in sig:
            kwargs["rule"] = rule
        if min_rank is not None and takes_min:
            kwargs["min_rank"] = min_rank
        new = build(module, **kwargs)
        if min_rank is not None and not takes_min:
            new.min_rank = _expand_bound(min_rank, len(shape), "min_rank")
        if init is not None:  # fresh initialisation at the converted ranks
            new.init = init
            new.reset_parameters()
        return new.train(module.training)
    if max_rank is not None or min_rank is not None:
        raise ValueError(f"max_rank/min_rank apply to kind 'tdlrt' only (the vanilla "
                         f"baselines have fixed ranks); got kind {kind!r}")
    if rtol is not None and kind == "vanilla-cp":
        raise ValueError("rtol is not supported for kind 'vanilla-cp' (no tolerance-driven CP "
                         "rank); give rank as an int or a fraction")
    if kind == "vanilla-tucker" and rule != "split":
        raise ValueError("kind 'vanilla-tucker' truncates with rule='split' only")
    if is_linear:
        if isinstance(rank, (tuple, list)):
            raise TypeError(f"Linear layers take one rank (int or fraction), not {rank!r}; "
                            f"exclude them (exclude=[nn.Linear]) or convert them separately")
        return VanillaLowRankLinear.from_linear(module, rank=rank, rtol=rtol)
    if kind == "vanilla-tucker":
        return VanillaTuckerConv.from_conv(module, rank=rank, rtol=rtol)
    if isinstance(rank, (tuple, list)):
        raise TypeError(f"kind {kind!r} takes one rank (int or fraction); got {rank!r}")
    if kind == "vanilla-cp":
        return VanillaCPConv.from_conv(module, rank=rank)
    return VanillaMatrixConv.from_conv(module, rank=rank, rtol=rtol)


def _expand_bound(b: Any, d: int, name: str) -> tuple[int, ...]:
    if isinstance(b, int) and not isinstance(b, bool):
        return (int(b),) * d
    vals = tuple(int(v) for v in b)
    if len(vals) != d:
        raise ValueError(f"{name} must have one entry per mode ({d}); got {len(vals)}")
    return vals


def tuckerize(
    model: nn.Module,
    rank: Any = None,
    rtol: float | None = None,
    include: Iterable[Any] | str | type | None = None,
    exclude: Iterable[Any] | str | type | None = None,
    kind: str = "tdlrt",
    max_rank: Any = None,
    min_rank: Any = None,
    inplace: bool = False,
    rule: str = "split",
    init: str | None = None,
) -> nn.Module:
    r"""Replace the conv / linear layers of ``model`` by Tucker / low-rank layers.

    Every selected ``nn.Conv1d/2d/3d`` (kernel :math:`W` of order d = N + 2) becomes a
    Tucker convolution initialised by the truncated HOSVD of :math:`W`
    (:math:`W \approx C \times_i U_i`, paper Eq. (3)); every selected ``nn.Linear``
    becomes a low-rank linear layer (the d = 2 case).  With neither ``rank`` nor
    ``rtol`` (or ``rtol=0``) the conversion is lossless: the model computes the same
    function.

    Parameters
    ----------
    model : nn.Module
        Any model (a single layer too).  Left untouched unless ``inplace``.
    rank : None, int, float in (0, 1] or tuple of int / fraction
        Ranks of every converted layer: an int is clipped per mode to the mode's largest
        rank :math:`\min(n_i, \prod_{j \ne i} n_j)`; a fraction :math:`\kappa` gives
        :math:`\lceil \kappa\, n_i \rceil` (clipped likewise; paper Section 4.1,
        :math:`\hat r = \kappa r_{\max}`); a tuple has one entry per mode (all selected
        layers must then have that many modes): a tuple of ints is used as is, a fraction
        entry :math:`\kappa_i` gives :math:`\lceil \kappa_i n_i \rceil` (so
        ``(0.1, 0.1, 1.0, 1.0)`` compresses only the channel modes of 2-d convolutions: the
        Tucker-2 format of Kim et al. 2016).  For ``"vanilla-cp"`` / ``"vanilla-matrix"`` convs it
        is the single CP / matrix rank (see :mod:`tucker_dlra.nn.vanilla`).
    rtol : float >= 0, optional
        Truncation tolerance where ``rank`` is None: the discarded part obeys the HOSVD
        bound :math:`\|W - \hat W\| \le \mathrm{rtol}\,\|W\|` (for ``"vanilla-matrix"``
        and vanilla linear layers: the truncated SVD, Eckart-Young).  Not for
        ``"vanilla-cp"``.
    include, exclude : pattern, type, or list of them, optional
        Module names (``fnmatch`` patterns on the dotted names of ``named_modules()``,
        e.g. ``"features.*"``) or module types (``nn.Linear``).  A layer is converted when
        it is a Conv1d/2d/3d or Linear, matches ``include`` (default: every such layer),
        and matches nothing in ``exclude``.
    kind : {"tdlrt", "vanilla-tucker", "vanilla-cp", "vanilla-matrix"}
        ``"tdlrt"``: ``TuckerConvNd`` / ``LowRankLinear`` trained by the ``TDLRT``
        optimizer (Algorithm 1).  The vanilla kinds are the paper's fixed-rank baselines
        (Section 4), trained by plain SGD on their factors; their Linear layers become
        :class:`~tucker_dlra.nn.vanilla.VanillaLowRankLinear`.
    max_rank, min_rank : int or tuple, optional
        Rank bounds given to the TDLRT layers (``max_rank`` also caps the initial rank).
    inplace : bool, default False
        Modify ``model`` itself instead of a deep copy.
    rule : {"split", "per_mode"}, default "split"
        Truncation rule of the HOSVD under ``rtol`` (:data:`tucker_dlra.RULES`): ``"split"``
        guarantees :math:`\|W - \hat W\| \le \mathrm{rtol}\|W\|`; ``"per_mode"`` (the
        rule of the paper's training runs) bounds each mode's tail by
        :math:`\mathrm{rtol}\|W\|`, the total by :math:`\sqrt d\,\mathrm{rtol}\|W\|`.
    init : {None, "kaiming", "spectral"}, default None
        None: the layers hold the (truncated) HOSVD of the dense weights.  Otherwise
        (``kind="tdlrt"`` only) every converted layer is re-initialised at its converted
        ranks by its ``reset_parameters`` with this ``init``, discarding the dense weights
        and bias: ``"spectral"`` is the paper's Section 4.3 initialisation for an
        overestimated rank (singular values of every unfolding decaying exponentially over
        powers of ten, see :meth:`TuckerConv2d.reset_parameters`).  Draws from torch's
        global RNG.

    Returns
    -------
    nn.Module
        The converted model (``model`` itself when ``inplace``); each layer keeps the
        device, dtype and train/eval mode of the layer it replaces.  A layer object
        registered under several names is converted once and stays shared.

    Raises
    ------
    ValueError, TypeError
        Unknown ``kind``, bad rank/tolerance, bad ``include``/``exclude`` entries.

    Notes
    -----
    Cost: one HOSVD per converted layer, :math:`O(\sum_i n_i \prod_j n_j)` (Gram route).

    Examples
    --------
    >>> from torch import nn
    >>> from tucker_dlra.nn import tuckerize
    >>> m = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))
    >>> t = tuckerize(m, rank=0.5, kind="vanilla-tucker")
    >>> t[2].ranks
    (8, 8, 2, 2)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    if rank is not None and rtol is not None:
        raise ValueError("give at most one of rank and rtol")
    if rtol is not None:
        if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not rtol >= 0 \
                or rtol != rtol or rtol == float("inf"):
            raise ValueError(f"rtol must be a finite real number >= 0; got {rtol!r}")
    if isinstance(rank, bool):
        raise TypeError(f"rank must be None, an int, a float in (0, 1] or a tuple; got {rank!r}")
    from tucker_dlra import RULES

    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {rule!r}")
    if init is not None:
        if init not in ("kaiming", "spectral"):
            raise ValueError(f"init must be None, 'kaiming' or 'spectral'; got {init!r}")
        if kind != "tdlrt":
            raise ValueError(f"init applies to kind 'tdlrt' only (the vanilla layers keep the "
                             f"HOSVD/SVD of the dense weights); got kind {kind!r}")
    inc = _check_selector(include, "include")
    exc = _check_selector(exclude, "exclude")
    if not inplace:
        model = copy.deepcopy(model)
    done: dict[int, nn.Module] = {}
    low_rank = _low_rank_types()
    targets = []
    for name, mod in model.named_modules(remove_duplicate=False):
        if not isinstance(mod, _DENSE_TYPES) or isinstance(mod, low_rank):
            continue
        if inc is not None and not _matches(name, mod, inc):
            continue
        if exc is not None and _matches(name, mod, exc):
            continue
        targets.append((name, mod))
    for name, mod in targets:
        new = done.get(id(mod))
        if new is None:
            new = _convert_one(mod, kind, rank, rtol, max_rank, min_rank, rule, init)
            done[id(mod)] = new
        model = _replace(model, name, new)
    return model


def to_dense(model: nn.Module, inplace: bool = False) -> nn.Module:
    r"""Replace every Tucker / low-rank layer by a plain ``nn.ConvNd`` / ``nn.Linear``.

    Each layer's ``to_dense()`` rebuilds its kernel :math:`W = C \times_i U_i` (Eq. (3);
    CP and matrix layers likewise) and copies the bias, keeping device, dtype and
    train/eval mode.  Other modules are left as they are.

    Parameters
    ----------
    model : nn.Module
    inplace : bool, default False
        Modify ``model`` itself instead of a deep copy.

    Returns
    -------
    nn.Module
        The same function with dense layers (for deployment or export).

    Notes
    -----
    Cost: one kernel reconstruction per layer, :math:`O(\sum_i r_i \prod_{j} n_j)` at most.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    types = _low_rank_types()
    done: dict[int, nn.Module] = {}
    targets = [(n, m) for n, m in model.named_modules(remove_duplicate=False)
               if isinstance(m, types)]
    for name, mod in targets:
        new = done.get(id(mod))
        if new is None:
            new = mod.to_dense()
            new.train(mod.training)
            done[id(mod)] = new
        model = _replace(model, name, new)
    return model
