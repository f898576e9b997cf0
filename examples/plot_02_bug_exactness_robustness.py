"""
BUG integrators: exactness and robustness
=========================================

The factor equations of the projected flow (the paper's Eq. (8)) contain the
pseudo-inverse of the core's unfoldings; integrating them directly
(:func:`tucker_dlra.integrators.direct`) needs steps smaller than the smallest singular
value.  The basis-update & Galerkin (BUG) integrators (Ceruti and Lubich, 2022; Ceruti,
Kusch and Lubich, 2022) avoid it (Theorem 1) and are

* **exact** when the solution has exactly the working Tucker rank, and
* **robust**: their error does not depend on small singular values.
"""

# %%
# Exactness on a low-rank trajectory
# ----------------------------------
# :func:`tucker_dlra.problems.low_rank_trajectory` builds :math:`A(t)` of Tucker rank
# (3, 3, 3) with :math:`F = \dot A` ("data mode") and an exact quadrature substep.
import math

import matplotlib.pyplot as plt
import numpy as np

import tucker_dlra.problems as P
from tucker_dlra.integrators import integrate

p = P.low_rank_trajectory((20, 18, 16), (3, 3, 3), seed=0)
for method in ("bug", "ra_bug", "projector_splitting"):
    kw = {"rtol": 1e-10} if method == "ra_bug" else {}
    res = integrate(p.F, p.y0, (0.0, 1.0), 0.1, method=method, substep=p.substep, **kw)
    rel = p.error(res.y[-1], 1.0) / np.linalg.norm(p.solution(1.0))
    print(f"{method:>20}: relative error at t=1  {rel:.1e}")

# %%
# Robustness to small singular values
# -----------------------------------
# The same kind of trajectory, now with the core's singular values log-spaced from 1 down
# to ``sigma_min`` and a perturbation of size :math:`\varepsilon = 10^{-5}` (so the
# problem is not exactly low-rank).  Fixed step :math:`h = 0.05`.
h, eps = 0.05, 1e-5
sigmas = [1e-2, 1e-4, 1e-6, 1e-8, 1e-12]
errors = {"bug": [], "ra_bug": [], "direct": []}
for smin in sigmas:
    p = P.low_rank_trajectory((8, 8, 8), 3, sigma_min=smin, eps=eps, seed=11)
    for method in errors:
        kw = dict(substep=p.substep) if method != "direct" else dict(substeps=2)
        if method == "ra_bug":
            kw["max_rank"] = 3  # the augmented BUG truncated back to the working rank
            kw["rtol"] = 1e-12
        try:
            with np.errstate(all="ignore"):
                res = integrate(p.F, p.y0, (0.0, 1.0), h, method=method, keep=False, **kw)
            e = p.error(res.y[-1], 1.0)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            e = math.inf  # the direct integration broke down
        errors[method].append(e if math.isfinite(e) else math.inf)

print(f"{'sigma_min':>9} " + " ".join(f"{m:>10}" for m in errors))
for k, smin in enumerate(sigmas):
    print(f"{smin:9.0e} " + " ".join(f"{errors[m][k]:10.2e}" for m in errors))

# %%
# The BUG errors stay at the level of the perturbation for every ``sigma_min``; the direct
# integration of Eq. (8) loses accuracy (or breaks down: ``inf``) as the core becomes
# ill-conditioned.
fig, ax = plt.subplots(figsize=(6, 3.5))
for m, marker in (("bug", "o"), ("ra_bug", "s"), ("direct", "x")):
    vals = [v if math.isfinite(v) else 1e3 for v in errors[m]]
    ax.loglog(sigmas, vals, marker + "-", label=m)
ax.axhline(eps, color="gray", ls=":", label=r"perturbation $\varepsilon$")
ax.invert_xaxis()
ax.set_xlabel(r"smallest singular value of the core's unfoldings")
ax.set_ylabel("error at t = 1 (inf drawn as 1e3)")
ax.set_title("robustness to small singular values")
ax.legend(fontsize=8)
fig.tight_layout()
