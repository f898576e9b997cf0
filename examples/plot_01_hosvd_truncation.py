"""
HOSVD and its truncation bounds
===============================

The truncated HOSVD (De Lathauwer, De Moor and Vandewalle, 2000) keeps, in every mode,
the leading left singular vectors of the unfolding.  Its error is bounded by the
discarded singular values:

.. math:: \\|X - Y\\|^2 \\le \\sum_i \\mathrm{tail}_i^2 \\le d\\,\\min_{\\operatorname{rank} Z
          \\le \\rho} \\|X - Z\\|^2 .

:func:`tucker_dlra.hosvd` picks the smallest ranks whose tails fit a tolerance.  We check
the bound, compare the two truncation rules ``"split"`` (guarantees the total error) and
``"per_mode"`` (each mode alone fits the tolerance), and see how much the rule matters.
"""

# %%
# A tensor with decaying multilinear spectrum
# -------------------------------------------
# A 30x30x30 tensor: a random core with geometrically decaying scales, in random
# orthonormal bases, plus a little noise.
import matplotlib.pyplot as plt
import numpy as np

from tucker_dlra import hosvd, truncate

rng = np.random.default_rng(0)
n, d = 30, 3
scales = 0.7 ** np.arange(n)
core = rng.standard_normal((n, n, n)) * np.einsum("i,j,k->ijk", scales, scales, scales)
Q = [np.linalg.qr(rng.standard_normal((n, n)))[0] for _ in range(d)]
x = np.einsum("abc,ia,jb,kc->ijk", core, *Q) + 1e-6 * rng.standard_normal((n, n, n))
nx = np.linalg.norm(x)

# %%
# The bound holds, for both rules
# -------------------------------
# ``full_output=True`` returns a :class:`tucker_dlra.TruncationInfo` with the chosen
# ranks, the per-mode tails and the error bound :math:`(\sum_i \mathrm{tail}_i^2)^{1/2}`.
print(f"{'rtol':>7} {'rule':>9} {'ranks':>14} {'bound/|x|':>10} {'error/|x|':>10} {'params':>7}")
rows = []
for rule in ("split", "per_mode"):
    for rtol in (1e-1, 3e-2, 1e-2, 3e-3, 1e-3):
        t, info = hosvd(x, rtol=rtol, rule=rule, full_output=True)
        err = np.linalg.norm(x - t.full()) / nx
        params = t.core.size + sum(u.size for u in t.factors)
        rows.append((rule, rtol, err, info.error_bound / nx, params))
        assert err <= info.error_bound / nx * (1 + 1e-10)
        print(f"{rtol:7.0e} {rule:>9} {str(t.rank):>14} {info.error_bound / nx:10.2e} "
              f"{err:10.2e} {params:7d}")

# %%
# With ``"split"`` the true error is always below ``rtol``; with ``"per_mode"`` it may
# exceed it, by at most :math:`\sqrt d`, in exchange for smaller ranks.
for rule, rtol, err, _bound, _ in rows:
    limit = rtol if rule == "split" else np.sqrt(d) * rtol
    assert err <= limit
print("split: error <= rtol;  per_mode: error <= sqrt(d)*rtol  -- both verified")

# %%
# Rounding a Tucker tensor
# ------------------------
# Sums of Tucker tensors add ranks; :func:`tucker_dlra.truncate` rounds them back (this
# is the rank adjustment of Algorithm 1, lines 10-12).
t = hosvd(x, rtol=1e-2)
s = t + 0.5 * t
r = truncate(s, rtol=1e-10)
print("ranks of t:", t.rank, " of t + t/2:", s.rank, " after rounding:", r.rank)
print("rounding error:", f"{np.linalg.norm(r.full() - 1.5 * t.full()):.1e}")

# %%
# Error against storage
# ---------------------
fig, ax = plt.subplots(figsize=(6, 3.5))
for rule, marker in (("split", "o"), ("per_mode", "s")):
    sel = [row for row in rows if row[0] == rule]
    ax.loglog([row[4] for row in sel], [row[2] for row in sel], marker + "-",
              label=f"{rule}: error")
    ax.loglog([row[4] for row in sel], [row[3] for row in sel], marker + ":", alpha=0.6,
              label=f"{rule}: bound")
ax.set_xlabel("stored numbers (core + factors)")
ax.set_ylabel("relative error")
ax.set_title("truncated HOSVD of a 30x30x30 tensor")
ax.legend(fontsize=8)
fig.tight_layout()
