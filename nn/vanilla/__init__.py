r"""The paper's "vanilla" low-rank baselines (Section 4): fixed-rank factorized layers.

Each layer is parametrized by a fixed-rank factorization of its kernel and trained by
plain (stochastic) gradient descent on the factors -- an ordinary ``torch.optim.SGD``
over ``model.parameters()``; the factors are *not* kept orthonormal and no rank
adaptation happens.  These are the three parametrizations compared in Figure 1 and
Tables 1, 3 and 4 of the paper:

* :class:`VanillaTuckerConv` -- Tucker format :math:`W = C \times_{i} U_i` (Eq. (3));
* :class:`VanillaCPConv` -- canonical polyadic (CP) format
  :math:`W = \sum_{\rho=1}^R a^{(0)}_\rho \circ a^{(1)}_\rho \circ \dots \circ a^{(d-1)}_\rho`;
* :class:`VanillaMatrixConv` -- matrix factorization of the matricized kernel,
  :math:`\mathrm{Mat}_0(W) = U V^\top` (Eq. (2));
* :class:`VanillaLowRankLinear` -- a low-rank linear layer :math:`W = U V^\top`.

Ranks are given as an int, a tuple (Tucker) or a fraction :math:`\kappa \in (0, 1]`
giving :math:`\hat r = \lceil \kappa\, r_{\max} \rceil` as in Section 4.1.  Every layer
accepts the full ``nn.ConvNd`` configuration (stride, padding incl. ``'same'``,
dilation, groups, bias, padding_mode) of its dense counterpart, can be built from a
trained dense layer (``from_conv`` / ``from_linear``) and exported back
(:meth:`to_dense`).  The forward pass either rebuilds the dense kernel and runs one
convolution (``"dense"``) or runs a sequence of cheap convolutions (``"factorized"``):
the two give the same result up to rounding; ``"auto"`` picks the cheaper one by the
multiply-accumulate counts of :func:`conv_macs`.
"""

from __future__ import annotations

from .._conv import (  # noqa: F401 (re-exported: the names' old home)
    _tucker_upper,
    conv_macs,
    conv_options_repr,
    out_spatial,
    pointwise,
    resolve_ranks,
)
from ._common import (  # noqa: F401 (re-exported for code that imported the old module)
    _CONV,
    _CONV_FN,
    _FORWARD_MODES,
    VANILLA_KINDS,
    _check_forward_mode,
    _orthonormal_init_,
    _out_spatial,
    _pad_tucker,
    _VanillaConv,
)
from ._cp import VanillaCPConv
from ._matrix import VanillaLowRankLinear, VanillaMatrixConv, _svd_init, _svd_rank  # noqa: F401
from ._tucker import VanillaTuckerConv

__all__ = [
    "VanillaTuckerConv",
    "VanillaCPConv",
    "VanillaMatrixConv",
    "VanillaLowRankLinear",
    "conv_macs",
    "pointwise",
    "resolve_ranks",
    "VANILLA_KINDS",
]

# Present the classes under the public path (documentation, reprs, pickles naming
# ``tucker_dlra.nn.vanilla.X``, as before the module was split into a package).
for _cls in (_VanillaConv, VanillaTuckerConv, VanillaCPConv, VanillaMatrixConv,
             VanillaLowRankLinear):
    _cls.__module__ = __name__
del _cls
