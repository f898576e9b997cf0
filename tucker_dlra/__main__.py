"""``python -m tucker_dlra`` and the ``tucker-dlra`` console script.

The command line lives in :mod:`tucker_dlra.nn.cli` (it needs PyTorch); it is imported only
here, inside :func:`main`, so that importing the core never imports torch or ``tucker_dlra.nn``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tucker-dlra``; returns the exit status (see ``tucker-dlra --help``)."""
    try:
        cli = importlib.import_module("tucker_dlra.nn.cli")
    except ImportError as exc:
        print(f"tucker-dlra: error: the command line needs PyTorch, tqdm and matplotlib ({exc}); "
              "install them with: pip install 'tucker-dlra[nn]'", file=sys.stderr)
        return 2
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
