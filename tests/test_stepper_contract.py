"""The contract between ``integrate`` and a one-step method (``integrators.Stepper``): the
built-in methods are registered Steppers, a user's own Stepper runs through the same driver,
and an option a method does not use is an error naming the option and the method."""

from __future__ import annotations

import numpy as np
import pytest

from tucker_dlra import hosvd, integrate, problems
from tucker_dlra.integrators import (
    ADAPTIVE,
    METHODS,
    STEPPERS,
    StepInfo,
    Stepper,
)


class EulerProject(Stepper):
    """Explicit Euler on the dense tensor, then HOSVD back to the rank of y0 (a projected
    method, not a BUG integrator: a stepper the driver knows nothing about)."""

    name = "euler_project"

    def step(self, F, t0, y0, h, *, substep="rk4", substeps=1, structured=False,
             step_index=None, damping=1.0):
        y1 = y0.full() + (h * damping) * F(t0, y0.full())
        out = hosvd(y1, rank=y0.rank)
        return out, StepInfo(nfev=1, rank=out.rank, t=t0, h=h)


def _euler_project_by_hand(p, h, t_end, damping=1.0):
    y, t = p.y0, 0.0
    n = int(round(t_end / h))
    for _ in range(n):
        y = hosvd(y.full() + (h * damping) * p.F(t, y.full()), rank=y.rank)
        t += h
    return y


@pytest.fixture(scope="module")
def problem():
    return problems.low_rank_trajectory((6, 6, 6), 2, seed=3)


def test_builtins_are_registered_steppers():
    assert tuple(STEPPERS) == METHODS
    assert {n for n, c in STEPPERS.items() if c.adaptive} == set(ADAPTIVE)
    assert all(issubclass(c, Stepper) and c.name == n for n, c in STEPPERS.items())


@pytest.mark.parametrize("name", ["bug", "ra_bug"])
def test_name_and_class_give_the_same_run(problem, name):
    kw = {"rank": 2} if name == "ra_bug" else {}
    a = integrate(problem.F, problem.y0, (0.0, 0.3), 0.1, method=name, **kw)
    b = integrate(problem.F, problem.y0, (0.0, 0.3), 0.1, method=STEPPERS[name], **kw)
    np.testing.assert_array_equal(a.y_final.full(), b.y_final.full())
    assert a.nfev == b.nfev and a.t == b.t


def test_user_stepper_runs_through_the_driver(problem):
    res = integrate(problem.F, problem.y0, (0.0, 0.4), 0.1, method=EulerProject)
    ref = _euler_project_by_hand(problem, 0.1, 0.4)
    np.testing.assert_allclose(res.y_final.full(), ref.full(), rtol=1e-12, atol=1e-14)
    assert res.success and res.status == 0 and res.nsteps == 4 and res.nfev == 4
    assert res.t == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    # the driver's own services: output times, callback
    res = integrate(problem.F, problem.y0, (0.0, 0.4), 0.1, method=EulerProject(),
                    t_eval=[0.15, 0.4])
    assert res.t == pytest.approx([0.15, 0.4]) and res.nsteps == 5
    res = integrate(problem.F, problem.y0, (0.0, 0.4), 0.1, method=EulerProject,
                    callback=lambda t, y: t > 0.15)
    assert res.status == 1 and res.nsteps == 2


def test_user_stepper_options_are_passed_or_refused(problem):
    res = integrate(problem.F, problem.y0, (0.0, 0.2), 0.1, method=EulerProject, damping=0.5)
    ref = _euler_project_by_hand(problem, 0.1, 0.2, damping=0.5)
    np.testing.assert_allclose(res.y_final.full(), ref.full(), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match=r"option 'dampign' is not used by method "
                                         r"'euler_project' \(its own options: damping\)"):
        integrate(problem.F, problem.y0, (0.0, 0.2), 0.1, method=EulerProject, dampign=0.5)
    with pytest.raises(ValueError, match=r"rtol is only accepted .*'euler_project'"):
        integrate(problem.F, problem.y0, (0.0, 0.2), 0.1, method=EulerProject, rtol=0.1)


@pytest.mark.parametrize("method", ["bug", "projector_splitting", "direct"])
def test_rank_options_for_fixed_rank_methods_are_errors(problem, method):
    for opt in ({"rule": "per_mode"}, {"rule": "split"}, {"max_rank": 3}, {"atol": 1e-3}):
        name = next(iter(opt))
        with pytest.raises(ValueError, match=rf"{name} is only accepted .*method '{method}'"):
            integrate(problem.F, problem.y0, (0.0, 0.2), 0.1, method=method, **opt)


def test_method_specific_option_of_another_method_is_an_error(problem):
    with pytest.raises(ValueError, match=r"option 'rejection' is not used by method 'bug'"):
        integrate(problem.F, problem.y0, (0.0, 0.2), 0.1, method="bug", rejection=False)
    res = integrate(problem.F, problem.y0, (0.0, 0.2), 0.1, method="parallel_bug", atol=1e-8,
                    rejection=False)
    assert res.success and res.rejected == 0


def test_adaptive_user_stepper_receives_the_rank_options(problem):
    seen = {}

    class Recorder(EulerProject):
        name = "recorder"
        adaptive = True

        def step(self, F, t0, y0, h, **options):
            seen.update(options)
            return super().step(F, t0, y0, h)

    integrate(problem.F, problem.y0, (0.0, 0.1), 0.1, method=Recorder, rtol=0.1, max_rank=2)
    assert seen["rtol"] == 0.1 and seen["max_rank"] == 2 and seen["rule"] == "split"
    assert seen["atol"] is None and seen["substep"] == "rk4" and seen["step_index"] == 0


def test_bad_stepper_and_bad_method(problem):
    class Broken(Stepper):
        name = "broken"

        def step(self, F, t0, y0, h, **options):
            return y0

    with pytest.raises(TypeError, match=r"Broken.step must return \(TuckerTensor, StepInfo\)"):
        integrate(problem.F, problem.y0, (0.0, 0.1), 0.1, method=Broken)
    with pytest.raises(TypeError, match="subclass of tucker_dlra.integrators.Stepper"):
        integrate(problem.F, problem.y0, (0.0, 0.1), 0.1, method=object())
    with pytest.raises(ValueError, match="method must be one of"):
        integrate(problem.F, problem.y0, (0.0, 0.1), 0.1, method="nope")
    with pytest.raises(NotImplementedError):
        integrate(problem.F, problem.y0, (0.0, 0.1), 0.1, method=Stepper)
