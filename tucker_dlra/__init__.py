"""tucker-dlra: dynamical low-rank approximation of Tucker tensors (TDLRT reference library).

The core is backend-agnostic (array API standard): every function works on NumPy
arrays and PyTorch tensors alike and keeps their dtype and device.  It never
imports torch at import time; the PyTorch adapter is :mod:`tucker_dlra.nn`.
"""

from .integrators import (
    IntegrationError,
    IntegrationResult,
    StepInfo,
    bug,
    direct,
    integrate,
    midpoint_bug,
    parallel_bug,
    projector_splitting,
    ra_bug,
)
from .manifold import tangent_components, tangent_project
from .steps import (
    augment_basis,
    c_gradient,
    core_qr,
    galerkin_core,
    k_core,
    k_gradient,
    k_tensor,
    parallel_core,
)
from .tensor import fold, mode_product, multi_mode_product, unfold
from .tucker import (
    RULES,
    TruncationInfo,
    TuckerTensor,
    check_orthonormal,
    hosvd,
    pad_core,
    pad_rank,
    truncate,
    valid_rank,
)

__version__ = "0.1.0"

__all__ = [
    "IntegrationError",
    "IntegrationResult",
    "StepInfo",
    "bug",
    "direct",
    "integrate",
    "midpoint_bug",
    "parallel_bug",
    "projector_splitting",
    "ra_bug",
    "RULES",
    "TruncationInfo",
    "TuckerTensor",
    "augment_basis",
    "c_gradient",
    "check_orthonormal",
    "core_qr",
    "fold",
    "galerkin_core",
    "hosvd",
    "k_core",
    "k_gradient",
    "k_tensor",
    "mode_product",
    "multi_mode_product",
    "pad_core",
    "pad_rank",
    "parallel_core",
    "tangent_components",
    "tangent_project",
    "truncate",
    "unfold",
    "valid_rank",
]
