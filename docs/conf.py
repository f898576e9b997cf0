"""Sphinx configuration of the tucker-dlra documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors; CI runs it).
New pages: drop an ``.rst`` file into ``docs/`` (guides, tutorials) or ``docs/api/``
(reference pages); the glob toctrees of ``index.rst`` pick them up.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # works without an install, too

project = "tucker-dlra"
author = "tucker-dlra developers"
copyright = "2026, tucker-dlra developers"  # noqa: A001
try:
    from tucker_dlra import __version__ as release
except Exception:  # pragma: no cover - docs of a broken tree still build the text
    release = "0.1.0"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
]

# autodoc / napoleon (NumPy-style docstrings)
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True  # "Attributes" sections as :ivar: (no duplicates with dataclass fields)
napoleon_use_rtype = False

nitpicky = False  # cross-references to third-party types (numpy, torch) are not resolved
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
html_theme = "alabaster"
html_static_path: list[str] = []
html_theme_options = {"description": "DLRA of Tucker tensors and rank-adaptive Tucker training"}
