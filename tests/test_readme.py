"""The README cannot rot: its API example runs as a doctest, its test command is the one
.ci/run executes, and the demo it advertises runs and meets its own checks."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_api_example_runs():
    blocks = _python_blocks(README.read_text())
    assert blocks, "README has no ```python example"
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    n = 0
    for i, block in enumerate(blocks):
        test = parser.get_doctest(block, {}, f"README[{i}]", str(README), 0)
        n += len(test.examples)
        runner.run(test)
    res = runner.summarize(verbose=False)
    assert n >= 8 and res.attempted == n
    assert res.failed == 0


def test_quickstart_doc_examples_run():
    path = ROOT / "docs" / "start" / "quickstart.rst"
    test = doctest.DocTestParser().get_doctest(path.read_text(), {}, "quickstart", str(path), 0)
    assert len(test.examples) >= 6
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_ci_runs_the_readme_test_command():
    text = README.read_text()
    cmd = 'pip install -e ".[test]" && python -m pytest'
    assert cmd in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmd in ci
    assert "python -m tucker_dlra.demo" in text


def test_demo_runs(capsys):
    from tucker_dlra import demo

    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "Truncated HOSVD" in out and "Rank-adaptive BUG" in out and "OK:" in out


def test_demo_runs_on_torch(capsys):
    pytest.importorskip("torch")
    from tucker_dlra import demo

    demo.truncation_demo("torch")
    assert "(torch)" in capsys.readouterr().out
