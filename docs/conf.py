"""Sphinx configuration of the tucker-dlra documentation.

Build: ``sphinx-build -n -W -b html docs docs/_build/html`` (nitpicky, warnings are
errors; CI runs it).  The build is offline: MathJax is served from the package
``sphinx-mathjax-offline``, intersphinx reads the small inventories committed in
``docs/_inventories`` (regenerate them with ``python docs/_inventories/make.py``), and
the example gallery (``examples/``) is executed on the CPU by sphinx-gallery.
``sphinx-build -b doctest docs <dir>`` runs the ``.. doctest::`` blocks of the pages.
New pages: add an ``.rst`` file and list it in a toctree of ``index.rst`` (the order
there is the learning order).
"""

from __future__ import annotations

import os
import sys

# The gallery runs on shared CI machines: one BLAS/OpenMP thread per example process
# (set before NumPy is imported; an explicit setting in the environment wins).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..")))  # works without an install too

project = "tucker-dlra"
author = "the tucker-dlra developers"
copyright = "2026, the tucker-dlra developers"  # noqa: A001
try:
    from tucker_dlra import __version__ as release
except Exception:  # pragma: no cover - docs of a broken tree still build the text
    release = "0.1.0"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax files copied into _static: no network at view time
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx_gallery.gen_gallery",
]

# autodoc / napoleon (NumPy-style docstrings)
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True  # "Attributes" sections as :ivar: (no duplicates with dataclass fields)
napoleon_use_rtype = False

# Intersphinx from local inventory files (no download at build time).  The inventories
# list the names the documentation refers to, with their URLs in the projects' docs.
_INV = os.path.join(HERE, "_inventories")
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", os.path.join(_INV, "python.inv")),
    "numpy": ("https://numpy.org/doc/stable/", os.path.join(_INV, "numpy.inv")),
    "scipy": ("https://docs.scipy.org/doc/scipy/", os.path.join(_INV, "scipy.inv")),
    "torch": ("https://docs.pytorch.org/docs/stable/", os.path.join(_INV, "torch.inv")),
}
intersphinx_timeout = 1

nitpicky = True
# Free-text type descriptions of the NumPy-style docstrings ("float >= 0", "array, shape
# (n, r)", "callable ``F(t, y)``") are not object names: napoleon and the py domain still
# try to link each word.  Ignore those, and the private helpers.
nitpick_ignore_regex = [
    ("py:class", r".*[\s()`\[\]{}<>=,;:*|'\"/].*"),  # any description with spaces/symbols
    ("py:class", r"[a-z_][a-z0-9_]*"),  # single lower-case words: "array", "callable", ...
    ("py:class", r"(Dropout|BatchNorm|ResNet18|Parameters|T|RankArg|RankSpec|LinearTerm)"),
    ("py:(class|obj)", r"(Ellipsis|None\.\.\.)"),
    ("py:attr", r"(grad_input|grad_output|strict|persistent|requires_grad|dtype)"),
    ("py:.*", r"(.*\.)?_[A-Za-z].*"),  # private helpers
    ("py:.*", r"array_api_compat\..*"),  # no inventory for array-api-compat
    ("py:mod", r"torch"),
    ("py:class", r"[0-9.]+|Module"),  # "float in (0, 1]"; torch's own docstrings
    ("py:meth", r"solution|to_dense"),  # a field of Problem; the method of every layer
    ("py:func", r"resolve_rank"),  # helper of the layers module, not public
    ("py:class", r"argparse.Namespace"),  # not in Python's inventory
]

# References to public names (``tucker_dlra.hosvd``, ``tucker_dlra.nn.TDLRT``) and to
# names relative to the current module (``TuckerTensor``) point to the object documented
# under its defining module (``tucker_dlra.tucker.hosvd``): resolved by suffix match.


def _py_suffix_resolve(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip("~.")
    if not target:
        return None
    domain = env.get_domain("py")
    names = list(domain.objects)
    parts = target.split(".")
    for k in range(len(parts)):
        suffix = ".".join(parts[k:])
        hits = [n for n in names if n == suffix or n.endswith("." + suffix)]
        hits = [n for n in hits if n.startswith("tucker_dlra")]
        if len(hits) > 1 and k > 0:  # "pkg.name": a module-level object, not a method
            top = [n for n in hits if domain.objects[n].objtype not in ("method", "attribute",
                                                                       "property")]
            hits = top or hits
        if len(hits) > 1:  # prefer the public package the reference names
            pref = [n for n in hits if n.startswith(".".join(parts[:max(k, 1)]))]
            hits = pref if len(pref) == 1 else hits
        if len(hits) == 1:
            return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", hits[0],
                                       node, contnode)
        if hits:
            return None
    return None


def setup(app):
    app.connect("missing-reference", _py_suffix_resolve, priority=900)


exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "_inventories", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip", "auto_examples/*.md5"]
templates_path: list[str] = []

# sphinx-gallery: the scripts of examples/ are run at build time (CPU, a few seconds each).
sphinx_gallery_conf = {
    "examples_dirs": os.path.join(HERE, "..", "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "show_memory": False,
    "min_reported_time": 1,
    "write_computation_times": False,  # its page loads scripts from a CDN
    "capture_repr": (),  # printed output only: no dumped reprs of return values
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "first_notebook_cell": None,
    "plot_gallery": "True",
}

# HTML: pydata-sphinx-theme, no remote assets
html_theme = "pydata_sphinx_theme"
html_title = f"tucker-dlra {release}"
html_short_title = "tucker-dlra"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_last_updated_fmt = None
html_theme_options = {
    "navbar_start": ["navbar-logo"],
    "navbar_center": ["navbar-nav"],
    "navbar_end": ["theme-switcher"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "logo": {"text": f"tucker-dlra {release}"},
    # the gallery pages print wide tables: no right-hand sidebar there
    "secondary_sidebar_items": {"*": ["page-toc", "sourcelink"], "start/*": ["page-toc"],
                                "api/*": ["page-toc", "sourcelink"], "auto_examples/*": []},
    "header_links_before_dropdown": 6,
}
# the flat learning-order toctree gives no section navigation: only the gallery keeps it
html_sidebars = {"*": [], "start/*": [], "api/*": []}
html_context = {"default_mode": "light"}
html_copy_source = True
pygments_style = "sphinx"

doctest_global_setup = "import numpy as np"
