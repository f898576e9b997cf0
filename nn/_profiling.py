"""Deterministic cost counters for a training step: ATen operations and host syncs.

:class:`OpCounter` is a ``TorchDispatchMode`` that counts every ATen operation dispatched
while it is active; ``aten._local_scalar_dense`` (what ``.item()``, ``float(t)``,
``bool(t)`` call) and ``Tensor.tolist()`` (which on the CPU reads memory without
dispatching, and on an accelerator copies to the host) are device-to-host
synchronisations.  Counts do not depend on timing, so tests may assert them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCounter", "count_step"]

_SYNC_OPS = ("aten._local_scalar_dense",)


class OpCounter(TorchDispatchMode):
    """Count ATen ops (``ops``), host syncs (``syncs``) and ops by name (``by_name``)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_name: Counter[str] = Counter()
        self.host_reads = 0
        self._tolist: Any = None

    def __enter__(self) -> OpCounter:
        self._tolist = torch.Tensor.tolist
        original = self._tolist

        def tolist(t: torch.Tensor) -> Any:
            self.host_reads += 1
            return original(t)

        torch.Tensor.tolist = tolist  # type: ignore[method-assign]
        return super().__enter__()

    def __exit__(self, *exc: Any) -> Any:
        torch.Tensor.tolist = self._tolist  # type: ignore[method-assign]
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        self.by_name[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def ops(self) -> int:
        """Total ATen operations dispatched."""
        return sum(self.by_name.values())

    @property
    def syncs(self) -> int:
        """Device-to-host synchronisations (``aten._local_scalar_dense``, ``tolist``)."""
        return sum(self.by_name[n] for n in _SYNC_OPS) + self.host_reads


def count_step(opt: torch.optim.Optimizer) -> OpCounter:
    """Run ``opt.step()`` once under an :class:`OpCounter` and return the counter."""
    with OpCounter() as c:
        opt.step()
    return c
