#!/usr/bin/env python
"""CIFAR-10 cells of the paper's Tables 1, 5 and 2 as runnable ``tucker-dlra train`` commands.

VGG16 and AlexNet on CIFAR-10 (the paper: 70 epochs, batch 128, SGD lr 0.05 with a plateau
schedule, momentum 0.1, no augmentation): the dense baseline, TDLRT at the paper's tau values
(Table 5: VGG16 0.02-0.15, AlexNet 0.06-0.15; Table 2: AlexNet 0.6 and 0.7) and the vanilla
baselines at the paper's kappa values (fixed rank ``kappa * r_max``, ``--rank-fraction``).
``--list`` prints the commands (``DATA``: a folder holding ``cifar-10-python.tar.gz``).

``--smoke`` runs each distinct (model, method) command for one step on a *synthetic*
CIFAR-shaped tarball (random images, the real file layout) built in a temporary folder, to show
that the commands run; the MD5 check of the real tarball is bypassed for that synthetic file
only, in this process.  No accuracy is claimed from it.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import sys
import tarfile
import tempfile
from pathlib import Path

#: (model, method, tau or kappa) -> the paper's numbers (test acc. mean, std, eval, train);
#: None where the paper gives no number.
PAPER_CIFAR: dict[tuple[str, str, float | None], tuple] = {
    ("vgg16", "baseline", None): (82.88, 0.23, 0.0, 0.0),
    ("vgg16", "tdlrt", 0.02): (82.86, 1.6, 93.57, 50.25),
    ("vgg16", "tdlrt", 0.03): (83.97, 0.57, 95.34, 69.92),
    ("vgg16", "tdlrt", 0.04): (82.25, 0.49, 96.71, 84.25),
    ("vgg16", "tdlrt", 0.05): (81.04, 0.49, 97.40, 90.33),
    ("vgg16", "tdlrt", 0.06): (80.70, 0.47, 97.62, 92.38),
    ("vgg16", "tdlrt", 0.1): (77.80, 0.90, 98.01, 95.51),
    ("vgg16", "tdlrt", 0.15): (74.52, 1.04, 98.23, 96.67),
    ("vgg16", "vanilla-cp", 0.95): (72.28, 1.89, 93.64, None),
    ("vgg16", "vanilla-cp", 0.9): (75.89, 1.57, 88.73, None),
    ("vgg16", "vanilla-cp", 0.8): (77.13, 2.71, 78.86, None),
    ("vgg16", "vanilla-cp", 0.6): (77.62, 4.36, 59.12, None),
    ("vgg16", "vanilla-tucker", 0.95): (57.92, 1.91, 93.39, None),
    ("vgg16", "vanilla-tucker", 0.9): (59.10, 3.79, 89.03, None),
    ("vgg16", "vanilla-tucker", 0.8): (75.95, 4.65, 75.26, None),
    ("vgg16", "vanilla-tucker", 0.6): (77.19, 1.05, 61.34, None),
    ("vgg16", "vanilla-tucker", 0.4): (78.42, 0.96, 52.32, None),
    ("vgg16", "vanilla-matrix", 0.95): (68.23, 1.47, 92.90, None),
    ("vgg16", "vanilla-matrix", 0.9): (73.41, 2.12, 87.20, None),
    ("vgg16", "vanilla-matrix", 0.8): (78.32, 4.03, 75.78, None),
    ("vgg16", "vanilla-matrix", 0.6): (81.25, 0.19, 52.26, None),
    ("alexnet", "baseline", None): (79.63, 0.30, 0.0, 0.0),
    ("alexnet", "tdlrt", 0.06): (76.56, 0.45, 83.12, 29.82),
    ("alexnet", "tdlrt", 0.1): (74.92, 0.40, 86.98, 72.42),
    ("alexnet", "tdlrt", 0.15): (71.34, 0.31, 91.78, 78.60),
    ("alexnet", "tdlrt", 0.6): (76.26, 0.88, 74.0, None),  # Table 2
    ("alexnet", "tdlrt", 0.7): (73.08, 0.44, 83.5, None),  # Table 2
    ("alexnet", "vanilla-cp", 0.95): (48.93, 3.23, 84.91, None),
    ("alexnet", "vanilla-cp", 0.9): (56.94, 3.10, 80.42, None),
    ("alexnet", "vanilla-cp", 0.8): (70.31, 0.58, 71.46, None),
    ("alexnet", "vanilla-cp", 0.7): (72.41, 0.44, 53.56, None),
    ("alexnet", "vanilla-tucker", 0.95): (50.90, 3.91, 84.66, None),
    ("alexnet", "vanilla-tucker", 0.9): (55.14, 1.19, 80.53, None),
    ("alexnet", "vanilla-tucker", 0.8): (64.47, 1.92, 69.74, None),
    ("alexnet", "vanilla-tucker", 0.6): (71.54, 1.10, 54.95, None),
    ("alexnet", "vanilla-matrix", 0.95): (58.87, 0.85, 84.07, None),
    ("alexnet", "vanilla-matrix", 0.9): (62.48, 1.45, 78.84, None),
    ("alexnet", "vanilla-matrix", 0.8): (71.24, 0.91, 68.20, None),
}


def cell_args(model: str, method: str, value: float | None) -> list[str]:
    """The method-specific arguments of a cell (``--tau`` for TDLRT, ``--rank-fraction``)."""
    if method == "tdlrt":
        return ["--tau", f"{value:g}"]
    if method.startswith("vanilla"):
        return ["--rank-fraction", f"{value:g}"]
    return []


def command(model: str, method: str, value: float | None, seed: int = 0, epochs: int = 70,
            data: str = "DATA", out: str = "RUN") -> list[str]:
    """``tucker-dlra train`` arguments of one CIFAR-10 cell (without the program name)."""
    return ["train", "--model", model, "--dataset", "cifar10", "--method", method,
            *cell_args(model, method, value), "--seed", str(seed), "--epochs", str(epochs),
            "--data-dir", data, "--out", out]


def synthetic_cifar(folder: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """Write a CIFAR-10-shaped ``cifar-10-python.tar.gz`` of random images (the real layout:
    five ``data_batch_*`` pickles and ``test_batch``) and return its path."""
    import numpy as np

    rng = np.random.default_rng(seed)
    path = folder / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, n in [*((f"data_batch_{i}", n_train) for i in range(1, 6)),
                        ("test_batch", n_test)]:
            blob = pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                 b"labels": rng.integers(0, 10, n).tolist()})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def smoke(models: list[str], out: Path) -> list[dict]:
    """One step of every distinct (model, method) on a synthetic tarball; returns the results."""
    import dataclasses

    from tucker_dlra.app import datasets as D
    from tucker_dlra.app.cli import main as cli_main

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tarball = synthetic_cifar(Path(tmp))
        spec = D.DATASETS["cifar10"]
        D.DATASETS["cifar10"] = dataclasses.replace(
            spec, files={"cifar-10-python.tar.gz": D.file_md5(tarball)})
        try:
            seen = set()
            for (model, method, value) in PAPER_CIFAR:
                if model not in models or (model, method) in seen:
                    continue
                seen.add((model, method))
                run = Path(tmp) / f"{model}-{method}"
                argv = command(model, method, value, epochs=1, data=tmp, out=str(run))
                argv += ["--max-steps", "1", "--train-limit", "64", "--test-limit", "16",
                         "--batch-size", "16", "--threads", "1", "--quiet", "--no-plots",
                         "--no-progress"]
                rc = cli_main(argv)
                summary = json.loads((run / "metrics.json").read_text())["summary"]
                results.append({"model": model, "method": method, "value": value,
                                "exit_code": rc, "steps": summary["steps"],
                                "ranks": summary.get("ranks"),
                                "command": "tucker-dlra " + " ".join(command(model, method,
                                                                             value))})
        finally:
            D.DATASETS["cifar10"] = spec
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", action="store_true", help="print every cell's command")
    ap.add_argument("--smoke", action="store_true",
                    help="run one step of each (model, method) on synthetic CIFAR-shaped data")
    ap.add_argument("--models", nargs="+", default=["vgg16", "alexnet"],
                    choices=["vgg16", "alexnet"])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results"
                    / "cifar_smoke" / "cifar_smoke.json")
    args = ap.parse_args(argv)
    if not (args.list or args.smoke):
        ap.error("give --list and/or --smoke")
    if args.list:
        for (model, method, value) in PAPER_CIFAR:
            if model in args.models:
                print("tucker-dlra " + " ".join(command(model, method, value)))
    if args.smoke:
        for r in smoke(args.models, args.out):
            print(f"{r['model']:8s} {r['method']:15s} exit {r['exit_code']}  steps {r['steps']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
