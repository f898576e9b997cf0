"""Atomic file writes (temporary file in the same folder, fsync, rename), NumPy- and torch-free."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "ensure_writable_dir", "open_file_mode"]


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_file_mode(fd: int) -> None:
    """Give the open file ``fd`` the mode an ordinary ``open(path, "w")`` would have
    (``0o666`` less the umask) instead of the ``0o600`` of a ``tempfile.mkstemp`` file
    (no-op where ``os.fchmod`` does not exist)."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o666 & ~_umask())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file in the same folder, fsync, rename.

    The file gets the mode an ordinary ``open(path, "w")`` would give (``0o666`` less the
    umask), not the ``0o600`` of the temporary file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            open_file_mode(f.fileno())  # mkstemp created it 0o600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (with parents) and check that a file can be written there.

    Raises ``ValueError`` naming the folder and the reason when it cannot.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a probe of its own (several processes, e.g. torchrun's workers, may check at once)
        fd, probe = tempfile.mkstemp(prefix=".tucker-dlra-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"cannot write to output folder {path}: {exc.strerror or exc}") from None
    return path
