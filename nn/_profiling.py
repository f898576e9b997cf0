"""Deterministic cost counters for a training step: ATen operations and host syncs.

:class:`OpCounter` is a ``TorchDispatchMode`` that counts every ATen operation dispatched
while it is active (what reaches the dispatcher below autograd: one count per kernel
launch on a GPU, roughly).  Host synchronisations (``syncs``) are the operations that make
the host wait for the device:

* ``aten._local_scalar_dense`` -- what ``.item()``, ``float(t)``, ``int(t)`` and ``bool(t)``
  dispatch;
* ``Tensor.tolist()`` calls (on a CPU tensor ``tolist`` reads memory without dispatching;
  on a GPU it copies to the host), counted by wrapping ``torch.Tensor.tolist`` while the
  counter is active;
* copies from a non-CPU device to the CPU (``aten._to_copy``/``aten.copy_``);
* operations whose output shape depends on the data (``nonzero``, ``masked_select``,
  ``unique``...), which must read a size back on a GPU.

The counts do not depend on timing, so tests may assert them; on a CPU they count the
syncs the same step would make on a GPU (except those hidden inside ATen kernels, such as
the error checks of some CUDA linear-algebra routines).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCounter", "count_step"]

#: Scalar reads (``.item()``, ``bool()``, ``float()``...).
_SYNC_OPS = frozenset({"aten._local_scalar_dense"})

#: Operations whose output shape depends on the values (a size read back on a GPU).
_DATA_DEPENDENT = frozenset({
    "aten.nonzero", "aten.nonzero_static", "aten.masked_select", "aten._unique",
    "aten._unique2", "aten.unique_dim", "aten.unique_consecutive",
    "aten.unique_dim_consecutive", "aten.equal", "aten.is_nonzero",
})


def _name(func: Any) -> str:
    return str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)


def _device_to_host(name: str, args: Any, kwargs: dict) -> bool:
    """A copy from a non-CPU device into CPU memory."""
    if name == "aten._to_copy" and args and torch.is_tensor(args[0]):
        dev = kwargs.get("device")
        return dev is not None and torch.device(dev).type == "cpu" \
            and args[0].device.type != "cpu"
    if name == "aten.copy_" and len(args) >= 2 and torch.is_tensor(args[0]) \
            and torch.is_tensor(args[1]):
        return args[0].device.type == "cpu" and args[1].device.type != "cpu"
    return False


class OpCounter(TorchDispatchMode):
    """Count ATen ops (``ops``), host syncs (``syncs``) and ops by name (``by_name``).

    Use as a context manager around the code to count::

        with OpCounter() as c:
            opt.step()
        c.ops, c.syncs, c.by_name.most_common(10)

    ``sync_by_kind`` splits ``syncs`` into ``scalar`` (``_local_scalar_dense``), ``tolist``,
    ``to_host`` (device-to-host copies) and ``data_dependent`` (module docstring).
    Overhead: one Python call per ATen op (do not time code under it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_name: Counter[str] = Counter()
        self.sync_by_kind: Counter[str] = Counter()
        self._tolist: Any = None

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        kwargs = kwargs or {}
        name = _name(func)
        self.by_name[name] += 1
        if name in _SYNC_OPS:
            self.sync_by_kind["scalar"] += 1
        elif name in _DATA_DEPENDENT:
            self.sync_by_kind["data_dependent"] += 1
        elif _device_to_host(name, args, kwargs):
            self.sync_by_kind["to_host"] += 1
        return func(*args, **kwargs)

    def __enter__(self) -> OpCounter:
        original = torch.Tensor.tolist
        counter = self

        def tolist(t: torch.Tensor) -> Any:
            counter.sync_by_kind["tolist"] += 1
            return original(t)

        self._tolist = original
        torch.Tensor.tolist = tolist
        try:
            return super().__enter__()
        except BaseException:
            torch.Tensor.tolist = original
            raise

    def __exit__(self, *exc: Any) -> Any:
        try:
            return super().__exit__(*exc)
        finally:
            torch.Tensor.tolist = self._tolist

    @property
    def ops(self) -> int:
        """Total ATen operations dispatched."""
        return sum(self.by_name.values())

    @property
    def syncs(self) -> int:
        """Host synchronisations of all kinds (module docstring)."""
        return sum(self.sync_by_kind.values())

    def to_dict(self, top: int = 25) -> dict[str, Any]:
        """JSON-ready summary: totals, syncs by kind and the ``top`` most frequent ops."""
        return {"ops": self.ops, "syncs": self.syncs,
                "syncs_by_kind": dict(self.sync_by_kind),
                "top_ops": dict(self.by_name.most_common(top))}


def count_step(opt: torch.optim.Optimizer, closure: Any = None) -> OpCounter:
    """Run ``opt.step(closure)`` once under an :class:`OpCounter` and return the counter."""
    with OpCounter() as c:
        if closure is None:
            opt.step()
        else:
            opt.step(closure)
    return c
