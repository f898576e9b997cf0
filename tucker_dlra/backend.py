"""Array-namespace helpers: the only place where backends are told apart.

Every function of the core takes the namespace of its inputs through
:func:`array_api_compat.array_namespace` (as SciPy does), so NumPy arrays,
PyTorch tensors (CPU or CUDA) and ``array_api_strict`` arrays run through the
same code and keep their dtype and device.  Nothing here imports torch.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

__all__ = [
    "namespace",
    "import_torch",
    "conj",
    "ct",
    "dtype_eps",
    "check_floating",
    "is_complex",
    "to_float",
    "qr",
    "bmm",
    "orth_columns",
    "eigh_descending",
    "svd_left",
    "matrix_from",
    "flat_concat",
    "split_flat",
]

Array = Any


#: Namespaces of NumPy arrays and torch tensors by argument types (they depend on the
#: types only); other libraries are looked up on every call.
_NS_CACHE: dict[tuple[type, ...], Any] = {}
_CACHED_MODULES = ("numpy", "torch", "torch.nn.parameter")


def namespace(*arrays: Array) -> Any:
    """Return the array-API namespace shared by ``arrays``.

    The lookup (:func:`array_api_compat.array_namespace`) is memoised by argument types
    for NumPy arrays and torch tensors (a few microseconds per call otherwise, which the
    many small mode products of a training step add up).

    Raises
    ------
    TypeError
        If the arrays come from different libraries.
    """
    key = tuple(type(a) for a in arrays)
    xp = _NS_CACHE.get(key)
    if xp is not None:
        return xp
    try:
        xp = array_api_compat.array_namespace(*arrays)
    except TypeError as exc:  # pragma: no cover - message depends on array_api_compat
        raise TypeError(f"arrays must share one array library; got {exc}") from exc
    if key and all(t.__module__ in _CACHED_MODULES for t in key):
        _NS_CACHE[key] = xp
    return xp


def import_torch() -> Any:
    """Import and return :mod:`torch` on demand (the core never imports it at import time).

    The one place where the core reaches torch: for problem builders and demos asked for
    ``backend="torch"``.  Raises ``ImportError`` with an install hint when it is missing.
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("backend='torch' needs PyTorch: "
                          "pip install 'tucker-dlra[torch]'") from exc
    return torch


#: ``is_complex`` answers by (namespace, dtype): ``isdtype`` of array_api_compat is a few
#: Python calls deep, and a training step asks a few hundred times.
_COMPLEX: dict[tuple[str, Any], bool] = {}


def is_complex(xp: Any, x: Array) -> bool:
    """``True`` if ``x`` has a complex floating dtype."""
    key = (getattr(xp, "__name__", ""), x.dtype)
    hit = _COMPLEX.get(key)
    if hit is None:
        hit = _COMPLEX[key] = bool(xp.isdtype(x.dtype, "complex floating"))
    return hit


def conj(xp: Any, x: Array) -> Array:
    """Complex conjugate; a no-op (no copy) for real dtypes."""
    return xp.conj(x) if is_complex(xp, x) else x


def ct(xp: Any, a: Array) -> Array:
    """Conjugate transpose ``a^H`` of a matrix (``a.T`` for real dtypes)."""
    return conj(xp, xp.matrix_transpose(a) if a.ndim > 2 else a.T)


def check_floating(x: Array, name: str) -> Any:
    """Return the namespace of ``x`` after checking that its dtype is floating.

    Raises
    ------
    TypeError
        If ``x`` is not an array or has an integer/boolean dtype.
    """
    try:
        xp = namespace(x)
    except TypeError:
        raise TypeError(
            f"{name} must be a NumPy array, a torch.Tensor or another array-API array; "
            f"got {type(x).__name__}"
        ) from None
    if not (xp.isdtype(x.dtype, "real floating") or xp.isdtype(x.dtype, "complex floating")):
        raise TypeError(
            f"{name} must have a floating dtype (float32, float64, complex64 or complex128); "
            f"got {x.dtype}"
        )
    return xp


def dtype_eps(xp: Any, dtype: Any) -> float:
    """Machine epsilon of a (real or complex) floating dtype."""
    if xp.isdtype(dtype, "complex floating"):
        dtype = xp.float32 if dtype == xp.complex64 else xp.float64
    return float(xp.finfo(dtype).eps)


def to_float(x: Array) -> float:
    """Bring a 0-d array to the host as a Python float (one scalar transfer)."""
    return float(x)


def matrix_from(xp: Any, like: Array, values: Any) -> Array:
    """Array with the dtype and device of ``like`` built from ``values``."""
    return xp.asarray(values, dtype=like.dtype, device=array_api_compat.device(like))


def bmm(xp: Any, a: Array, b: Array) -> Array:
    """Batched matrix product of two 3-d stacks with equal batch sizes.

    The library's own batched kernel where the namespace has one (``torch.bmm``: one
    operation, where ``matmul`` adds broadcasting views around it), else ``matmul``.
    """
    f = getattr(xp, "bmm", None)
    return f(a, b) if f is not None else xp.matmul(a, b)


def _torch_of(xp: Any) -> Any:
    """The torch module behind a torch namespace, else ``None`` (never imports it)."""
    import sys

    return sys.modules.get("torch") if "torch" in getattr(xp, "__name__", "") else None


def flat_concat(xp: Any, arrays: list[Array]) -> Array:
    """The C-order flattenings of ``arrays`` (one dtype and device), concatenated.

    One operation for torch tensors that need no gradient (``torch._chunk_cat``, the
    kernel FSDP packs gradients with), where flattening each array first costs one
    operation per array; ``concat`` of ``reshape`` otherwise.  Cost: one copy of the data.
    """
    torch = _torch_of(xp)
    if torch is not None and len(arrays) > 1 and hasattr(torch, "_chunk_cat"):
        first = arrays[0]
        if all(a.ndim > 0 and a.numel() > 0 and a.dtype == first.dtype
               and a.device == first.device for a in arrays) and not (
                torch.is_grad_enabled() and any(a.requires_grad for a in arrays)):
            return torch._chunk_cat(arrays, 0, 1).view(-1)
    flats = [xp.reshape(a, (-1,)) for a in arrays]
    return flats[0] if len(flats) == 1 else xp.concat(flats)


def split_flat(xp: Any, flat: Array, shapes: list[tuple[int, ...]],
               offset: int = 0) -> list[Array]:
    """Consecutive blocks of the 1-d array ``flat`` from ``offset`` on, reshaped to
    ``shapes`` (views, no copy): the inverse of :func:`flat_concat`.

    One operation per block for torch tensors (a strided view of the storage), where a
    slice and a reshape take two; slice and reshape otherwise.
    """
    out = []
    torch = _torch_of(xp)
    direct = torch is not None and flat.ndim == 1 and flat.stride(0) == 1
    base = flat.storage_offset() if direct else 0
    for shape in shapes:
        n = math.prod(shape)
        if direct:
            strides = [math.prod(shape[k + 1:]) for k in range(len(shape))]
            out.append(flat.as_strided(tuple(shape), tuple(strides), base + offset))
        else:
            out.append(xp.reshape(flat[offset:offset + n], tuple(shape)))
        offset += n
    return out


def qr(xp: Any, a: Array) -> tuple[Array, Array]:
    """Reduced QR factorisation ``a = q r`` (Householder; ``q`` has orthonormal columns)."""
    return xp.linalg.qr(a, mode="reduced")


def orth_columns(xp: Any, a: Array) -> Array:
    """Orthonormal basis (``q`` of a reduced QR) of the columns of ``a``."""
    return qr(xp, a)[0]


def eigh_descending(xp: Any, gram: Array) -> tuple[Array, Array]:
    """Eigen-decomposition of a Hermitian matrix, eigenvalues in descending order.

    Returns the eigenvalues clipped at zero (they are squared singular values
    when ``gram = A A^H``) and the matching eigenvectors as columns.
    """
    w, v = xp.linalg.eigh(gram)
    w = xp.flip(w, axis=0)
    v = xp.flip(v, axis=1)
    return xp.clip(w, 0.0, None) if hasattr(xp, "clip") else xp.where(w > 0, w, 0.0 * w), v


def svd_left(xp: Any, a: Array) -> tuple[Array, Array]:
    """Left singular vectors and singular values of ``a`` (reduced SVD, descending)."""
    u, s, _ = xp.linalg.svd(a, full_matrices=False)
    return u, s
