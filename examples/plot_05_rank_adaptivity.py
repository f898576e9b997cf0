"""
Rank adaptivity
===============

The rank-adaptive BUG integrator (Ceruti, Kusch and Lubich, 2022; the paper's
Algorithm 1) doubles each basis by augmentation and then truncates to a tolerance, so
the rank follows the solution: it grows when the solution needs more directions and
shrinks when it needs fewer.  Two experiments:

1. a trajectory that starts at Tucker rank 1 and has rank 4 for :math:`t > 0`;
2. the discrete Schrödinger equation (Ceruti, Kusch and Lubich 2022, Sec. 6.1), where the
   integrator also conserves norm and energy up to the truncation tolerance.
"""

# %%
# Growing the rank
# ----------------
# :func:`tucker_dlra.problems.low_rank_trajectory` with ``initial_rank=1``: :math:`A(0)`
# has rank (1, 1, 1) and :math:`A(t)` rank (4, 4, 4) for :math:`t > 0`; ``relax`` damps
# the error made while the rank is still too small.
import matplotlib.pyplot as plt
import numpy as np

import tucker_dlra.problems as P
from tucker_dlra.integrators import integrate

p = P.low_rank_trajectory((16, 16, 16), 4, initial_rank=1, relax=5.0, seed=3)
runs = {}
for rtol in (1e-2, 1e-3, 1e-5):
    res = integrate(p.F, p.y0, (0.0, 2.0), 0.05, method="ra_bug", rtol=rtol, substeps=2)
    errs = [p.error(y, t) / np.linalg.norm(p.solution(t)) for t, y in zip(res.t, res.y,
                                                                          strict=True)]
    runs[rtol] = (res, errs)
    print(f"rtol={rtol:.0e}: ranks at t = 0, 0.1, 0.5, 2: "
          f"{res.ranks[0]}, {res.ranks[2]}, {res.ranks[10]}, {res.ranks[-1]}; "
          f"relative error at t=2: {errs[-1]:.1e}")

# %%
# With ``rtol=1e-3`` the rank reaches the true rank 4 within two steps and stays there.
# A loose tolerance (``1e-2``) never admits the new directions, which start small
# (of size :math:`O(h)`), and pays with a large error; a very tight one (``1e-5``) also
# keeps, for a while, the directions of the integration error itself (ranks above 4),
# until the damping removes them.
#
# The Schrödinger equation: conservation up to the tolerance
# ----------------------------------------------------------
# :math:`\dot Y = -i(DY + YD^\top + V_{\cos} Y V_{\cos})`, :math:`N = 100`, initial
# singular values :math:`10^{-i}` at rank 12, absolute tolerance
# :math:`\vartheta = 10^{-6}`, ranks capped at 30.
s = P.schrodinger(n=100, rank=12, seed=0)
theta, h = 1e-6, 0.05
res_s = integrate(s.F_tucker, s.y0, (0.0, 1.0), h, method="ra_bug", atol=theta, max_rank=30,
                  structured=True)
norms = [float(y.norm()) for y in res_s.y]
energies = [s.energy(y) for y in res_s.y]
print(f"Schroedinger: rank {res_s.ranks[0]} -> {res_s.ranks[-1]}, "
      f"max |norm - 1| = {max(abs(v - 1) for v in norms):.1e}, "
      f"max |E - E0| = {max(abs(e - energies[0]) for e in energies):.1e}, "
      f"error at t=1: {s.error(res_s.y[-1], 1.0):.1e}")

fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
for rtol, (res, errs) in runs.items():
    axes[0].plot(res.t, [r[0] for r in res.ranks], drawstyle="steps-post", label=f"rtol={rtol:.0e}")
    axes[1].semilogy(res.t, np.maximum(errs, 1e-16), label=f"rtol={rtol:.0e}")
axes[0].axhline(4, color="gray", ls=":")
axes[0].set_title("rank of mode 0 (true rank 4)")
axes[0].set_xlabel("t")
axes[0].legend(fontsize=8)
axes[1].set_title("relative error")
axes[1].set_xlabel("t")
axes[2].plot(res_s.t, [r[0] for r in res_s.ranks], label="rank")
ax2 = axes[2].twinx()
ax2.semilogy(res_s.t, np.maximum([abs(v - 1) for v in norms], 1e-17), "C1--", label="|norm-1|")
axes[2].set_title("Schroedinger: rank and norm drift")
axes[2].set_xlabel("t")
fig.tight_layout()
