"""Atomic writes and the writable-folder check (:mod:`tucker_dlra._io`)."""

from __future__ import annotations

import threading

import pytest

from tucker_dlra._io import atomic_write_text, ensure_writable_dir


def test_writable_dir_check_is_safe_when_many_processes_check_at_once(tmp_path):
    """Each check writes a probe of its own: concurrent checks of one folder (torchrun's
    workers) never remove each other's probe, and none is left behind."""
    out = tmp_path / "run"
    errors: list[BaseException] = []

    def check() -> None:
        try:
            for _ in range(50):
                ensure_writable_dir(out)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=check) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert list(out.iterdir()) == []


def test_writable_dir_check_ignores_a_leftover_probe_name(tmp_path):
    """A folder (or file) with a probe-like name left in OUT does not make it unwritable."""
    (tmp_path / ".tucker-dlra-write-test").mkdir()
    assert ensure_writable_dir(tmp_path) == tmp_path


def test_writable_dir_check_names_the_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot write to output folder .*file"):
        ensure_writable_dir(tmp_path / "file" / "run")


def test_atomic_write_replaces_whole_files_only(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [q.name for q in tmp_path.iterdir()] == ["a.txt"]


def test_validation_scripts_write_results_with_the_mode_of_an_ordinary_write(tmp_path):
    """The reproduction scripts' result files (shared between users and sessions) get
    0o666 less the umask, like ``open(path, "w")``, not the 0o600 of a temporary file."""
    import os
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "validation"))
    import paper_tables

    mask = os.umask(0o022)
    os.umask(mask)
    p = tmp_path / "sub" / "r.json"
    paper_tables._atomic_write(p, "{}")
    assert p.read_text() == "{}"
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask
