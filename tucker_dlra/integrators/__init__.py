r"""DLRA time integrators for Tucker tensors (the BUG family of Ceruti & Lubich,
BIT 62, 2022, and its relatives; see the References page).

One step signature for all of them, ``y1, info = method(F, t0, y0, h, *, substep="rk4",
substeps=1, structured=False, ...)``, and one driver, :func:`integrate`:

* :func:`bug` -- fixed-rank BUG (Ceruti & Lubich 2022);
* :func:`ra_bug` -- rank-adaptive BUG (Ceruti, Kusch & Lubich 2022) = the paper's Algorithm 1;
* :func:`parallel_bug` -- parallel rank-adaptive BUG with step rejection
  (Ceruti, Kusch, Lubich & Sulz);
* :func:`projector_splitting` -- Tucker projector splitting (Lubich, Vandereycken & Walach 2018);
* :func:`midpoint_bug` -- second-order midpoint BUG (Ceruti, Einkemmer, Kusch & Lubich 2024);
* :func:`direct` -- explicit integration of the factor equations (8) (the unstable baseline).

The contract between the driver and a method is :class:`Stepper` (as SciPy's ``OdeSolver``
is for ``solve_ivp``): each built-in method is registered as a Stepper subclass
(``STEPPERS``: :class:`BUG`, :class:`RankAdaptiveBUG`, ...), and ``integrate(method=...)``
accepts a user's own subclass, run by the same driver.
"""

from ._common import (
    SUBSTEPS,
    IntegrationError,
    StepInfo,
    euler_substep,
    exact_substep,
    krylov_substep,
    rk4_substep,
)
from .base import (
    BUG,
    STEPPERS,
    Direct,
    MidpointBUG,
    ParallelBUG,
    ProjectorSplitting,
    RankAdaptiveBUG,
    Stepper,
)
from .bug import bug, ra_bug
from .direct import direct
from .driver import ADAPTIVE, METHODS, IntegrationResult, integrate
from .midpoint import midpoint_bug
from .parallel import parallel_bug
from .splitting import projector_splitting

__all__ = [
    "ADAPTIVE",
    "BUG",
    "Direct",
    "MidpointBUG",
    "ParallelBUG",
    "ProjectorSplitting",
    "RankAdaptiveBUG",
    "STEPPERS",
    "Stepper",
    "METHODS",
    "SUBSTEPS",
    "IntegrationError",
    "IntegrationResult",
    "StepInfo",
    "bug",
    "direct",
    "euler_substep",
    "exact_substep",
    "integrate",
    "krylov_substep",
    "midpoint_bug",
    "parallel_bug",
    "projector_splitting",
    "ra_bug",
    "rk4_substep",
]
