"""Argument checks shared by the core: clear errors naming the argument and its range."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

RankSpec = int | Sequence[int | None] | None


def check_tolerance(value: Any, name: str) -> float | None:
    """Return ``value`` as a float in ``[0, inf)`` (``None`` passes through)."""
    if value is None:
        return None
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{name} must be a real number >= 0; got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number >= 0; got {value!r}") from None
    if math.isnan(v) or v < 0 or math.isinf(v):
        raise ValueError(f"{name} must be a finite real number >= 0; got {value!r}")
    return v


def check_int(value: Any, name: str, low: int = 0, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise TypeError(f"{name} must be an int {rng}; got {value!r}")
    v = int(value)
    if v < low or (high is not None and v > high):
        rng = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {rng}; got {v}")
    return v


def per_mode(spec: RankSpec, ndim: int, name: str, upper: Sequence[int],
             low: int = 1, clamp: bool = False) -> list[int | None]:
    """Expand an int / tuple / None rank specification to one entry per mode.

    Each entry must lie in ``[low, upper[i]]``; ``None`` entries mean "no constraint".
    With ``clamp=True`` (bounds such as ``max_rank``/``min_rank``) a single int
    is clipped to each mode's ``upper[i]`` instead of raising.
    """
    if spec is None:
        return [None] * ndim
    if isinstance(spec, (str, bytes)):
        raise TypeError(f"{name} must be an int or a sequence of {ndim} ints; got the string "
                        f"{spec!r}")
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        vals = [int(spec)] * ndim
        broadcast = True
    else:
        try:
            vals = list(spec)
        except TypeError:
            raise TypeError(
                f"{name} must be an int or a sequence of {ndim} ints; got {spec!r}"
            ) from None
        if len(vals) != ndim:
            raise ValueError(f"{name} must have one entry per mode ({ndim}); got {len(vals)}")
        broadcast = False
    out: list[int | None] = []
    for i, v in enumerate(vals):
        if v is None:
            out.append(None)
            continue
        vname = f"{name}[{i}]" if not broadcast else name
        if not broadcast and isinstance(v, numbers.Integral) and not isinstance(v, bool) \
                and v < low:
            raise ValueError(f"{vname} must be in [{low}, {upper[i]}]; got {int(v)}")
        v = check_int(v, vname, low)
        if broadcast and clamp:
            v = min(v, upper[i])
        elif v > upper[i]:
            raise ValueError(
                f"{name}[{i}] = {v} exceeds the largest possible rank {upper[i]} of mode {i} "
                f"(the size of that mode or the product of the others); it must be in "
                f"[{low}, {upper[i]}]"
            )
        out.append(v)
    return out
