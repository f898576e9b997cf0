"""
Theorem 3: the three error terms
================================

After :math:`k` steps of Algorithm 1 with learning rate :math:`\\lambda` and truncation
tolerance :math:`\\tau`, the distance to the *full* gradient flow at :math:`t = k\\lambda`
is bounded by

.. math::
   \\|W(t) - C(t)\\times_i U_i(t)\\| \\le c_1\\varepsilon + c_2\\lambda + c_3\\,\\tau/\\lambda .

On the least-squares gradient flows of :func:`tucker_dlra.problems.gradient_flow` the
exact solution is known in closed form, so each term can be seen separately:

1. :math:`\\tau \\ll \\lambda^2` and :math:`\\varepsilon = 0`: first order in :math:`\\lambda`;
2. :math:`\\tau` fixed: shrinking :math:`\\lambda` eventually *increases* the error
   (:math:`\\tau/\\lambda` truncations accumulate);
3. small :math:`\\lambda`: the error is proportional to the normal component
   :math:`\\varepsilon` of the gradient.
"""

# %%
# First order in the learning rate
# --------------------------------
# The exact flow (``eps=0``) stays on tensors of Tucker rank at most 3r
# (``meta["flow_rank"]``): the fixed-rank BUG runs at that rank (zero-padded start,
# :func:`tucker_dlra.problems.pad_rank`), the rank-adaptive BUG starts at rank r and grows.
import matplotlib.pyplot as plt
import numpy as np

import tucker_dlra.problems as P
from tucker_dlra.integrators import integrate

p = P.gradient_flow((9, 9, 9), 2, seed=4)
flow_rank = tuple(p.meta["flow_rank"])
hs = [0.1, 0.05, 0.025, 0.0125]
err = {"bug": [], "ra_bug": []}
for h in hs:
    res = integrate(p.F, P.pad_rank(p.y0, flow_rank), (0.0, 0.5), h, method="bug",
                    substeps=2, keep=False)
    err["bug"].append(p.error(res.y[-1], 0.5))
    res = integrate(p.F, p.y0, (0.0, 0.5), h, method="ra_bug", atol=1e-9, substeps=2,
                    keep=False)
    err["ra_bug"].append(p.error(res.y[-1], 0.5))
print(f"{'lambda':>7} {'bug':>9} {'ra_bug':>9}")
for k, h in enumerate(hs):
    print(f"{h:7.4f} {err['bug'][k]:9.2e} {err['ra_bug'][k]:9.2e}")
for m in err:
    print(f"observed order of {m}: {np.polyfit(np.log(hs), np.log(err[m]), 1)[0]:.2f}")

# %%
# The tau/lambda term
# -------------------
# A target with geometrically decaying spectrum (``decay=0.6``), so that every truncation
# really discards about :math:`\tau`; one SGD step per substep (``substep="euler"``), as in
# training.
q = P.gradient_flow((8, 8, 8), 2, decay=0.6, seed=2)
hs2 = [0.1, 0.05, 0.02, 0.01, 0.005]
err_tau = {}
for tau in (1e-9, 3e-3, 1e-2):
    err_tau[tau] = []
    for h in hs2:
        res = integrate(q.F, q.y0, (0.0, 1.0), h, method="ra_bug", atol=tau, substep="euler",
                        keep=False)
        err_tau[tau].append(q.error(res.y[-1], 1.0))
print(f"{'lambda':>7} " + " ".join(f"{'tau=' + format(t, '.0e'):>11}" for t in err_tau))
for k, h in enumerate(hs2):
    print(f"{h:7.3f} " + " ".join(f"{err_tau[t][k]:11.2e}" for t in err_tau))

# %%
# With :math:`\tau = 10^{-9}` the error falls like :math:`\lambda`; with
# :math:`\tau = 3\cdot10^{-3}` and :math:`10^{-2}` it reaches a minimum and grows again as
# :math:`\lambda \to 0`, as the bound predicts.
#
# The epsilon term
# ----------------
# Noise of size :math:`\varepsilon` in the data makes :math:`-\nabla\mathcal L` leave the
# tangent space by about :math:`\varepsilon`; at a small learning rate the error follows it.
eps_list = [1e-3, 1e-2, 1e-1]
err_eps = []
for eps in eps_list:
    r = P.gradient_flow((8, 8, 8), 2, eps=eps, seed=9)
    res = integrate(r.F, P.pad_rank(r.y0, tuple(r.meta["flow_rank"])), (0.0, 0.4), 0.02,
                    method="bug", substeps=1, keep=False)
    err_eps.append(r.error(res.y[-1], 0.4))
for eps, e in zip(eps_list, err_eps, strict=True):
    print(f"eps = {eps:5.0e}: error {e:.2e}")

fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
for m, mk in (("bug", "o"), ("ra_bug", "s")):
    axes[0].loglog(hs, err[m], mk + "-", label=m)
axes[0].loglog(hs, [err["bug"][0] * h / hs[0] for h in hs], "k:", label="slope 1")
axes[0].set_xlabel(r"$\lambda$")
axes[0].set_title(r"$c_2\lambda$")
axes[0].legend(fontsize=8)
for t, e in err_tau.items():
    axes[1].loglog(hs2, e, "o-", label=rf"$\tau$ = {t:.0e}")
axes[1].set_xlabel(r"$\lambda$")
axes[1].set_title(r"$c_3\tau/\lambda$")
axes[1].legend(fontsize=8)
axes[2].loglog(eps_list, err_eps, "o-")
axes[2].set_xlabel(r"$\varepsilon$")
axes[2].set_title(r"$c_1\varepsilon$")
for ax in axes:
    ax.set_ylabel("error")
fig.tight_layout()
