"""Shared fixtures: every core test runs on each available array backend.

``backend`` yields a small adapter with ``asarray`` (host NumPy -> backend array,
dtype kept), ``to_numpy`` and the library's name.  NumPy always runs; torch runs
when installed (CI installs the CPU wheel); CUDA is added when a GPU is present.
``array_api_strict`` is used by the dedicated strict-namespace test module.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "25")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors,
                           HealthCheck.function_scoped_fixture],  # `backend` is stateless
    derandomize=True,
)
settings.load_profile("default")

HAS_TORCH = importlib.util.find_spec("torch") is not None


def _has_cuda() -> bool:
    if not HAS_TORCH:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``cuda`` need a GPU: without one they are skipped (the only skips)."""
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


class Backend:
    """Moves host NumPy arrays to one array library and back."""

    def __init__(self, name: str, device: str | None = None):
        self.name = name
        self.device = device

    def asarray(self, a):
        a = np.asarray(a)
        if self.name == "numpy":
            return a
        if self.name == "torch":
            import torch

            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device or "cpu")
        if self.name == "array_api_strict":
            import array_api_strict as xp

            return xp.asarray(a)
        raise ValueError(self.name)

    def to_numpy(self, x):
        if self.name == "torch":
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def __repr__(self) -> str:
        return f"{self.name}{':' + self.device if self.device else ''}"


def _backends():
    out = [pytest.param(Backend("numpy"), id="numpy")]
    if HAS_TORCH:
        out.append(pytest.param(Backend("torch", "cpu"), id="torch"))
        import torch

        if torch.cuda.is_available():
            out.append(pytest.param(Backend("torch", "cuda"), id="torch-cuda"))
    return out


@pytest.fixture(params=_backends())
def backend(request) -> Backend:
    """Each available backend in turn (NumPy, torch CPU, torch CUDA if present)."""
    return request.param


@pytest.fixture
def strict_backend() -> Backend:
    """The ``array_api_strict`` namespace: nothing backend-specific may slip through."""
    return Backend("array_api_strict")


def random_array(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Standard normal array of a real or complex dtype."""
    dtype = np.dtype(dtype)
    x = rng.standard_normal(shape)
    if dtype.kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def random_orthonormal(rng: np.random.Generator, n: int, r: int, dtype) -> np.ndarray:
    """n x r matrix with orthonormal columns."""
    q, _ = np.linalg.qr(random_array(rng, (n, r), dtype))
    return q.astype(dtype)
