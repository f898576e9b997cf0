"""Shared helpers of the integrator validation scripts (convergence, robustness, descent, ranks).

* :class:`Store` -- a JSON file of finished runs keyed by a string; a script that is
  interrupted and started again skips what is already there (``--fresh`` starts over).
  Written atomically (temporary file + ``os.replace``).
* :func:`pin_threads` -- one BLAS thread unless told otherwise (shared machines).
* :func:`run` -- integrate a :class:`tucker_dlra.problems.Problem` with any method and
  return the final error, ranks, F evaluations and wall time.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"


def pin_threads(n: int = 1) -> None:
    """Pin BLAS/OpenMP threads (call before NumPy does heavy work)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))


class Store:
    """Resumable JSON store of results: ``store.get(key)``, ``store.put(key, value)``."""

    def __init__(self, name: str, fresh: bool = False, meta: dict | None = None):
        OUT.mkdir(parents=True, exist_ok=True)
        self.path = OUT / f"{name}.json"
        self.data: dict[str, Any] = {"meta": meta or {}, "runs": {}}
        if self.path.exists() and not fresh:
            try:
                old = json.loads(self.path.read_text())
                if old.get("meta") == self.data["meta"]:
                    self.data = old
            except (OSError, ValueError):
                pass

    def get(self, key: str) -> Any:
        return self.data["runs"].get(key)

    def put(self, key: str, value: Any) -> None:
        self.data["runs"][key] = value
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=_jsonable))
        os.replace(tmp, self.path)


def _jsonable(x: Any) -> Any:
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def finite(x: float) -> float | None:
    """JSON-safe float (None for inf/nan)."""
    return float(x) if x is not None and math.isfinite(x) else None


def run(problem: Any, method: str, h: float, t_end: float | None = None,
        structured: bool = False, callback: Any = None, **kw: Any) -> dict[str, Any]:
    """Integrate ``problem`` with ``method`` at step ``h``; return error, ranks, counts, time.

    A failure (exception or non-finite result) is recorded as ``error = None`` with the
    message, not raised: the direct integration of Eq. (8) is expected to fail.
    """
    import numpy as np

    from tucker_dlra.integrators import integrate

    t_end = problem.t_span[1] if t_end is None else t_end
    F = problem.F_tucker if structured else problem.F
    t0 = time.perf_counter()
    try:
        with np.errstate(all="ignore"):
            res = integrate(F, problem.y0, (problem.t_span[0], t_end), h, method=method,
                            structured=structured, keep=False, callback=callback, **kw)
        err = problem.error(res.y[-1], t_end)
        out = dict(error=finite(err), ranks=[list(r) for r in res.ranks], nfev=res.nfev,
                   rejected=res.rejected, message="ok" if math.isfinite(err) else "non-finite")
    except Exception as exc:  # noqa: BLE001 - recorded, the figure shows the failure
        out = dict(error=None, ranks=[], nfev=0, rejected=0,
                   message=f"{type(exc).__name__}: {exc}"[:300])
    out["seconds"] = time.perf_counter() - t0
    return out


def slope(hs: list[float], errs: list[float | None]) -> float | None:
    """Least-squares slope of log(err) against log(h) over the finite entries."""
    import numpy as np

    pts = [(h, e) for h, e in zip(hs, errs, strict=True) if e is not None and e > 0]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])
