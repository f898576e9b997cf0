"""
Theorem 2: loss descent with active truncation
==============================================

One step of Algorithm 1 with learning rate :math:`\\lambda` and (absolute) truncation
error :math:`\\tau` satisfies

.. math:: \\mathcal L(W_1) \\le \\mathcal L(W_0) - \\alpha\\lambda + \\beta\\tau ,

with :math:`\\alpha` the smallest squared projected gradient norm along the step's
Galerkin trajectory and :math:`\\beta` the largest gradient norm between the untruncated
and the truncated result (see the theory page).  Here the truncation really removes
something: the tolerance is chosen so that the ranks drop at every step, and
:func:`tucker_dlra.problems.descent_bound` recomputes :math:`\\alpha`, :math:`\\beta` and
:math:`\\tau` independently of the integrator.
"""

# %%
# A least-squares gradient flow without exact low-rank structure
# --------------------------------------------------------------
# :func:`tucker_dlra.problems.gradient_flow`: :math:`\mathcal L(W) = \frac12\sum_i
# \|W\times_i A_i - B_i\|^2` on 14x14x14 tensors, with a target whose multilinear
# singular values decay like :math:`0.5^j` (``decay``), and a start of rank (3, 3, 3).
import matplotlib.pyplot as plt
import numpy as np

import tucker_dlra.problems as P
from tucker_dlra.integrators import ra_bug

p = P.gradient_flow((14, 14, 14), rank=3, decay=0.5, eps=1e-3, seed=0)
lam, atol, substeps = 0.2, 0.03, 4  # learning rate, absolute tolerance tau, RK4 substeps

# %%
# Ten steps of Algorithm 1
# ------------------------
# ``ra_bug`` is one step of Algorithm 1 for the right-hand side :math:`F = -\nabla\mathcal
# L`; ``info.augmented_rank`` is the rank after the basis augmentation (lines 5-7), the
# result's rank is after the truncation (lines 10-12).
w = p.y0
hist = []
print(f"{'step':>4} {'rank':>12} {'augmented':>12} {'kept':>12} {'tau used':>9} "
      f"{'L(W0)':>9} {'L(W1)':>9} {'bound':>9}")
for k in range(10):
    w1, info = ra_bug(p.F, k * lam, w, lam, substeps=substeps, atol=atol)
    q = P.descent_bound(p, k * lam, w, lam, w1, substeps=substeps)
    hist.append((w.rank, info.augmented_rank, w1.rank, q))
    print(f"{k:4d} {str(w.rank):>12} {str(info.augmented_rank):>12} {str(w1.rank):>12} "
          f"{q['tau']:9.1e} {q['loss0']:9.5f} {q['loss1']:9.5f} {q['bound']:9.5f}")
    assert q["tau"] > 0 and w1.rank != info.augmented_rank  # truncation is active
    assert q["loss1"] <= q["bound"] + 1e-12  # Theorem 2
    w = w1

# %%
# Every step satisfies the bound although the truncation discards up to :math:`\tau`.
# Because :math:`\mathcal L(\widehat W(\lambda)) \le \mathcal L(W_0) - \alpha\lambda`
# holds for the untruncated step, the bound is tight exactly when the truncation costs
# what the mean value theorem allows.
losses0 = [q["loss0"] for *_, q in hist]
losses1 = [q["loss1"] for *_, q in hist]
bounds = [q["bound"] for *_, q in hist]
galerkin = [q["loss_hat"] for *_, q in hist]

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
steps = np.arange(1, len(hist) + 1)
ax1.semilogy(steps, losses1, "o-", label=r"$\mathcal{L}(W_1)$ (after truncation)")
ax1.semilogy(steps, galerkin, "x:", label=r"$\mathcal{L}(\widehat W(\lambda))$ (before)")
ax1.semilogy(steps, bounds, "s--", label=r"$\mathcal{L}(W_0)-\alpha\lambda+\beta\tau$")
ax1.set_xlabel("step")
ax1.set_title("Theorem 2, one bound per step")
ax1.legend(fontsize=8)
for i in range(3):
    ax2.plot(steps, [h[1][i] for h in hist], "--", color=f"C{i}", alpha=0.5)
    ax2.plot(steps, [h[2][i] for h in hist], "o-", color=f"C{i}", label=f"mode {i}")
ax2.set_xlabel("step")
ax2.set_ylabel("rank (dashed: augmented)")
ax2.set_title(f"ranks, tau = {atol}")
ax2.legend(fontsize=8)
fig.tight_layout()

# %%
# Larger tolerances
# -----------------
# For one step from the same point, a larger :math:`\tau` removes more and the
# :math:`\beta\tau` term grows; the bound still holds but may allow the loss to rise.
w = p.y0
for k in range(3):
    w, _ = ra_bug(p.F, k * lam, w, lam, substeps=substeps, atol=atol)
print(f"{'tau':>7} {'rank':>12} {'L(W0)':>9} {'L(W1)':>9} {'bound':>9} {'beta*tau':>9}")
for tau in (0.0, 0.01, 0.03, 0.1, 0.3):
    w1, info = ra_bug(p.F, 3 * lam, w, lam, substeps=substeps, atol=tau)
    q = P.descent_bound(p, 3 * lam, w, lam, w1, substeps=substeps)
    assert q["loss1"] <= q["bound"] + 1e-12
    print(f"{tau:7.2f} {str(w1.rank):>12} {q['loss0']:9.5f} {q['loss1']:9.5f} "
          f"{q['bound']:9.5f} {q['beta'] * q['tau']:9.5f}")
