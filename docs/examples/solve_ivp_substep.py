"""Recipe: scipy.integrate.solve_ivp as the substep solver of the DLRA integrators.

Every integrator accepts ``substep=callable(f, t0, y0, h) -> y1``, which must advance the
small substep ODE ``y' = f(t, y)`` from ``t0`` to ``t0 + h``.  The state ``y0`` is an
array (K-, C- and S-steps) or a tuple of arrays (``direct``); this wrapper flattens it
into one vector for ``solve_ivp`` and restores the structure afterwards.  Use it for
nonlinear or time-dependent F where tight error control matters (e.g. order tests of the
midpoint BUG); NumPy arrays only.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp


def solve_ivp_substep(method: str = "DOP853", rtol: float = 1e-10, atol: float = 1e-12):
    """Return a substep solver that calls ``scipy.integrate.solve_ivp``."""

    def substep(f, t0, y0, h):
        parts = y0 if isinstance(y0, tuple) else (y0,)
        shapes = [p.shape for p in parts]
        dtype = np.result_type(*parts)

        def pack(s):
            s = s if isinstance(s, tuple) else (s,)
            return np.concatenate([np.asarray(p, dtype=dtype).ravel() for p in s])

        def unpack(v):
            out, k = [], 0
            for shape in shapes:
                n = int(np.prod(shape))
                out.append(v[k:k + n].reshape(shape))
                k += n
            return tuple(out) if isinstance(y0, tuple) else out[0]

        sol = solve_ivp(lambda t, v: pack(f(t, unpack(v))), (t0, t0 + h), pack(y0),
                        method=method, rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"solve_ivp substep failed: {sol.message}")
        return unpack(sol.y[:, -1].astype(dtype, copy=False))

    return substep


if __name__ == "__main__":
    from tucker_dlra import integrate
    from tucker_dlra.problems import schrodinger

    p = schrodinger(n=40, rank=4)
    res = integrate(p.F_tucker, p.y0, (0.0, 0.5), 0.05, method="ra_bug", rtol=1e-8,
                    structured=True, substep=solve_ivp_substep())
    err = np.linalg.norm(res.y[-1].full() - p.solution(0.5))
    print(f"error {err:.2e}, ranks {res.ranks[-1]}, F evaluations {res.nfev}")
