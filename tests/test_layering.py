"""The layout is the architecture: core <- library (``tucker_dlra.nn``) <- application
(``tucker_dlra.app``).  Imports point downwards only; ``tucker-dlra verify`` runs without
PyTorch; the old import paths of the moved application still work, with a warning."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP_NAMES = ("DATASETS", "MODELS", "ArrayDataset", "CheckpointError", "DatasetError", "LeNet5",
             "TrainConfig", "build_model", "evaluate", "load_checkpoint", "load_dataset", "train")


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module imported anywhere in ``path`` (lazy imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = list(path.relative_to(ROOT).parent.parts)
    top = {"nn": ["tucker_dlra", "nn"], "app": ["tucker_dlra", "app"]}.get(parts[0],
                                                                   ["tucker_dlra"])
    pkg = ".".join(top + parts[1:])  # the package a relative import starts from
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def test_import_nn_imports_no_application_module(tmp_path):
    res = _run("import sys, tucker_dlra.nn; "
               "print(sorted(m for m in sys.modules if m.startswith('tucker_dlra.app')))",
               tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_import_core_imports_neither_library_nor_application_nor_torch(tmp_path):
    res = _run("import sys, tucker_dlra, tucker_dlra.integrators, tucker_dlra.problems, "
               "tucker_dlra.verify, tucker_dlra.__main__; "
               "print(sorted(m for m in sys.modules if m == 'torch' "
               "or m.startswith(('tucker_dlra.nn', 'tucker_dlra.app'))))", tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("folder,forbidden", [
    ("tucker_dlra", ("tucker_dlra.nn", "tucker_dlra.app")),
    ("nn", ("tucker_dlra.app",)),
])
def test_no_upward_import_in_the_sources(folder, forbidden):
    """Static check, so that a lazy import inside a function is caught too."""
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for mod in _imported_modules(path):
            if mod.startswith(forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert bad == []
    # the check itself can fail: the application does import the library
    assert any(m.startswith("tucker_dlra.nn") for m in _imported_modules(ROOT / "app/train.py"))


def test_verify_runs_without_torch(tmp_path):
    """``sys.modules['torch'] = None`` makes every ``import torch`` fail, as without PyTorch."""
    res = _run("import sys; sys.modules['torch'] = None; "
               "from tucker_dlra.__main__ import main; "
               "sys.exit(main(['verify', '--quick', '--no-plots', '--out', 'v']))", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "5/5 checks passed" in res.stdout
    assert (tmp_path / "v" / "verify.json").is_file()


@pytest.mark.parametrize("argv", [["train"], ["report", "x.pt"], []])
def test_torch_subcommands_without_torch_say_how_to_install(tmp_path, argv):
    res = _run("import sys; sys.modules['torch'] = None; "
               f"from tucker_dlra.__main__ import main; sys.exit(main({argv!r}))", tmp_path)
    assert res.returncode == 2
    err = res.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "pip install 'tucker-dlra[nn]'" in err and "verify" in err


def test_verify_bad_output_folder_is_one_line_exit_2(tmp_path):
    (tmp_path / "file").write_text("x")
    res = _run("import sys; from tucker_dlra.verify import main; "
               "sys.exit(main(['--quick', '--no-plots', '--out', 'file/sub']))", tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "cannot write to output folder" in res.stderr


@pytest.mark.parametrize("old,new", [
    ("tucker_dlra.nn.train", "tucker_dlra.app.train"),
    ("tucker_dlra.nn.cli", "tucker_dlra.app.cli"),
    ("tucker_dlra.nn.datasets", "tucker_dlra.app.datasets"),
    ("tucker_dlra.nn.models", "tucker_dlra.app.models"),
    ("tucker_dlra.nn.plots", "tucker_dlra.app.plots"),
    ("tucker_dlra.nn.verify", "tucker_dlra.verify"),
])
def test_old_module_paths_warn_and_are_the_new_modules(old, new):
    import tucker_dlra.nn as nn_pkg

    sys.modules.pop(old, None)
    nn_pkg.__dict__.pop(old.rsplit(".", 1)[1], None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        mod = importlib.import_module(old)
    assert mod is importlib.import_module(new)
    sys.modules.pop(old, None)
    nn_pkg.__dict__.pop(old.rsplit(".", 1)[1], None)


@pytest.mark.parametrize("name", APP_NAMES)
def test_old_package_names_warn_and_are_the_new_objects(name):
    import tucker_dlra.app
    import tucker_dlra.nn as nn_pkg

    nn_pkg.__dict__.pop(name, None)
    with pytest.warns(DeprecationWarning, match=f"tucker_dlra.app.{name}"):
        obj = getattr(nn_pkg, name)
    assert obj is getattr(tucker_dlra.app, name)
    assert name not in nn_pkg.__all__


def test_unknown_name_is_still_an_attribute_error():
    import tucker_dlra.nn as nn_pkg

    with pytest.raises(AttributeError, match="no_such_thing"):
        nn_pkg.no_such_thing  # noqa: B018
