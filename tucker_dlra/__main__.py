"""``python -m tucker_dlra`` and the ``tucker-dlra`` console script.

``tucker-dlra verify`` (NumPy only) runs :func:`tucker_dlra.verify.main` and never imports
torch.  Every other subcommand lives in the training application :mod:`tucker_dlra.app.cli`
(it needs PyTorch), imported only here, inside :func:`main`, so that importing the core never
imports torch, :mod:`tucker_dlra.nn` or :mod:`tucker_dlra.app`.  Without PyTorch those
subcommands answer in one line how to install it (exit status 2).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tucker-dlra``; returns the exit status (see ``tucker-dlra --help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["verify"]:
        from .verify import main as verify_main

        return verify_main(argv[1:])
    try:
        cli = importlib.import_module("tucker_dlra.app.cli")
        importlib.import_module("tucker_dlra.app")
    except ImportError as exc:
        what = f"'{argv[0]}'" if argv and not argv[0].startswith("-") else "this command"
        print(f"tucker-dlra: error: {what} needs PyTorch, tqdm and matplotlib ({exc}); install "
              "them with: pip install 'tucker-dlra[nn]' ('tucker-dlra verify' runs without them)",
              file=sys.stderr)
        return 2
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
