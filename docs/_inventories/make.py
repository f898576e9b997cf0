"""Write the small intersphinx inventories of ``docs/_inventories`` (no download needed).

The documentation builds offline, so intersphinx cannot fetch the ``objects.inv`` files
of Python, NumPy, SciPy and PyTorch.  This script writes inventories that list the names
the documentation refers to, with their addresses in those projects' documentation.  Add
a name here when ``sphinx-build -n`` reports an unresolved reference to one of these
projects, then run ``python docs/_inventories/make.py``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, role, uri relative to the project's root); "$" in a uri stands for the name.
PYTHON = [
    *[(n, "class", "library/functions.html#$") for n in
      ("int", "float", "bool", "str", "complex", "tuple", "list", "dict", "object", "type",
       "slice", "range", "set", "frozenset", "bytes")],
    ("None", "data", "library/constants.html#$"),
    ("True", "data", "library/constants.html#$"),
    ("False", "data", "library/constants.html#$"),
    ("NotImplemented", "data", "library/constants.html#$"),
    ("ValueError", "exception", "library/exceptions.html#$"),
    ("TypeError", "exception", "library/exceptions.html#$"),
    ("RuntimeError", "exception", "library/exceptions.html#$"),
    ("FileNotFoundError", "exception", "library/exceptions.html#$"),
    ("OSError", "exception", "library/exceptions.html#$"),
    ("KeyError", "exception", "library/exceptions.html#$"),
    ("Warning", "exception", "library/exceptions.html#$"),
    ("DeprecationWarning", "exception", "library/exceptions.html#$"),
    ("typing.Any", "data", "library/typing.html#$"),
    ("typing.Callable", "data", "library/typing.html#$"),
    ("typing.Sequence", "class", "library/typing.html#$"),
    ("typing.Iterable", "class", "library/typing.html#$"),
    ("typing.Mapping", "class", "library/typing.html#$"),
    ("collections.abc.Callable", "class", "library/collections.abc.html#$"),
    ("collections.abc.Sequence", "class", "library/collections.abc.html#$"),
    ("collections.abc.Iterable", "class", "library/collections.abc.html#$"),
    ("collections.abc.Iterator", "class", "library/collections.abc.html#$"),
    ("collections.abc.Mapping", "class", "library/collections.abc.html#$"),
    ("os.PathLike", "class", "library/os.html#$"),
    ("pathlib.Path", "class", "library/pathlib.html#$"),
    ("argparse.ArgumentParser", "class", "library/argparse.html#$"),
    ("dataclasses.dataclass", "function", "library/dataclasses.html#$"),
    ("fnmatch.fnmatch", "function", "library/fnmatch.html#$"),
    ("warnings.warn", "function", "library/warnings.html#$"),
    ("json.dumps", "function", "library/json.html#$"),
]

NUMPY = [
    ("numpy.ndarray", "class", "reference/generated/numpy.ndarray.html#$"),
    ("numpy.dtype", "class", "reference/generated/numpy.dtype.html#$"),
    ("numpy.random.Generator", "class", "reference/random/generator.html#$"),
    ("numpy.random.default_rng", "function", "reference/random/generator.html#$"),
    ("numpy.linalg.svd", "function", "reference/generated/numpy.linalg.svd.html#$"),
    ("numpy.linalg.qr", "function", "reference/generated/numpy.linalg.qr.html#$"),
    ("numpy.linalg.eigh", "function", "reference/generated/numpy.linalg.eigh.html#$"),
    ("numpy.linalg.norm", "function", "reference/generated/numpy.linalg.norm.html#$"),
    ("numpy.einsum", "function", "reference/generated/numpy.einsum.html#$"),
    ("numpy.moveaxis", "function", "reference/generated/numpy.moveaxis.html#$"),
    ("numpy.reshape", "function", "reference/generated/numpy.reshape.html#$"),
    ("numpy.float64", "attribute", "reference/arrays.scalars.html#$"),
    ("numpy.complex128", "attribute", "reference/arrays.scalars.html#$"),
]

SCIPY = [
    ("scipy.integrate.solve_ivp", "function",
     "reference/generated/scipy.integrate.solve_ivp.html#$"),
    ("scipy.integrate.OdeSolver", "class",
     "reference/generated/scipy.integrate.OdeSolver.html#$"),
    ("scipy.linalg.expm", "function", "reference/generated/scipy.linalg.expm.html#$"),
    ("scipy.sparse.linalg.expm_multiply", "function",
     "reference/generated/scipy.sparse.linalg.expm_multiply.html#$"),
]

_GEN = "generated/$.html#$"
TORCH = [
    ("torch.Tensor", "class", "tensors.html#$"),
    ("torch.dtype", "class", "tensor_attributes.html#$"),
    ("torch.device", "class", "tensor_attributes.html#$"),
    ("torch.Generator", "class", "generated/torch.Generator.html#$"),
    ("torch.nn.Module", "class", _GEN),
    ("torch.nn.Parameter", "class", "generated/torch.nn.parameter.Parameter.html#$"),
    ("torch.nn.ParameterList", "class", _GEN),
    ("torch.nn.Conv1d", "class", _GEN),
    ("torch.nn.Conv2d", "class", _GEN),
    ("torch.nn.Conv3d", "class", _GEN),
    ("torch.nn.Linear", "class", _GEN),
    ("torch.nn.Sequential", "class", _GEN),
    ("torch.nn.BatchNorm2d", "class", _GEN),
    ("torch.nn.functional.conv2d", "function", _GEN),
    ("torch.optim.Optimizer", "class", "optim.html#$"),
    ("torch.optim.SGD", "class", _GEN),
    ("torch.optim.Adam", "class", _GEN),
    ("torch.optim.lr_scheduler.LRScheduler", "class", _GEN),
    ("torch.autograd.Function", "class", "autograd.html#$"),
    ("torch.no_grad", "class", _GEN),
    ("torch.save", "function", _GEN),
    ("torch.load", "function", _GEN),
    ("torch.compile", "function", _GEN),
    ("torch.nn.Module.state_dict", "method", "generated/torch.nn.Module.html#$"),
    ("torch.nn.Module.load_state_dict", "method", "generated/torch.nn.Module.html#$"),
    ("torch.nn.Module.train", "method", "generated/torch.nn.Module.html#$"),
    ("torch.optim.Optimizer.zero_grad", "method", "generated/$.html#$"),
    ("torch.optim.Optimizer.step", "method", "generated/$.html#$"),
    ("torch.Tensor.to", "method", "generated/$.html#$"),
    # canonical (defining-module) names that autodoc writes for the same objects
    ("torch.nn.modules.module.Module", "class", "generated/torch.nn.Module.html#torch.nn.Module"),
    ("torch.nn.parameter.Parameter", "class",
     "generated/torch.nn.parameter.Parameter.html#torch.nn.parameter.Parameter"),
    ("torch.nn.modules.linear.Linear", "class", "generated/torch.nn.Linear.html#torch.nn.Linear"),
    ("torch.nn.modules.conv.Conv2d", "class", "generated/torch.nn.Conv2d.html#torch.nn.Conv2d"),
    ("torch.optim.optimizer.Optimizer", "class", "optim.html#torch.optim.Optimizer"),
    ("torch.utils.hooks.RemovableHandle", "class", "generated/torch.nn.Module.html"),
    # the short spelling used in docstrings
    ("nn.Module", "class", "generated/torch.nn.Module.html#torch.nn.Module"),
    ("nn.Linear", "class", "generated/torch.nn.Linear.html#torch.nn.Linear"),
    ("nn.Conv2d", "class", "generated/torch.nn.Conv2d.html#torch.nn.Conv2d"),
    ("nn.Module.load_state_dict", "method",
     "generated/torch.nn.Module.html#torch.nn.Module.load_state_dict"),
]


def write(path: Path, project: str, entries: list[tuple[str, str, str]]) -> None:
    """Write a version-2 Sphinx inventory: a plain header and zlib-compressed entries."""
    lines = []
    for name, role, uri in sorted(entries):
        lines.append(f"{name} py:{role} 1 {uri} -")
    header = (f"# Sphinx inventory version 2\n# Project: {project}\n# Version: stable\n"
              "# The remainder of this file is compressed using zlib.\n")
    path.write_bytes(header.encode() + zlib.compress(("\n".join(lines) + "\n").encode()))


if __name__ == "__main__":
    write(HERE / "python.inv", "Python", PYTHON)
    write(HERE / "numpy.inv", "NumPy", NUMPY)
    write(HERE / "scipy.inv", "SciPy", SCIPY)
    write(HERE / "torch.inv", "PyTorch", TORCH)
    print("wrote", ", ".join(p.name for p in sorted(HERE.glob("*.inv"))))
