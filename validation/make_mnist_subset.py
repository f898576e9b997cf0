"""Rebuild the MNIST subset shipped with the package (``app/data/mnist_subset.npz``).

Source: the original MNIST IDX files (Yann LeCun, Corinna Cortes and Christopher J.C. Burges,
http://yann.lecun.com/exdb/mnist/, licensed CC BY-SA 3.0), verified by their MD5 sums below.
The subset takes the first 1,000 training images of each digit (10,000 in all) from
``train-*`` and the first 200 test images of each digit (2,000 in all) from ``t10k-*``, in their
original order, as uint8, and stores them with ``numpy.savez_compressed``.

Usage::

    python validation/make_mnist_subset.py [--src /path/to/mnist] [--out app/data/mnist_subset.npz]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from tucker_dlra.app.datasets import read_idx

MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
PER_CLASS = {"train": 1000, "t10k": 200}


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def balanced_indices(labels: np.ndarray, per_class: int) -> np.ndarray:
    """First ``per_class`` indices of each class, merged back into the original order."""
    idx = [np.flatnonzero(labels == c)[:per_class] for c in range(10)]
    if any(len(i) < per_class for i in idx):
        raise ValueError(f"fewer than {per_class} images for some class")
    return np.sort(np.concatenate(idx))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, required=True,
                   help="folder with the original MNIST IDX gzip files (MD5-checked)")
    default_out = Path(__file__).parents[1] / "app/data/mnist_subset.npz"
    p.add_argument("--out", type=Path, default=default_out)
    args = p.parse_args()
    for name, digest in MD5.items():
        got = md5(args.src / name)
        if got != digest:
            raise SystemExit(f"{name}: MD5 {got} != published {digest}")
    arrays = {}
    for split, key in (("train", "train"), ("t10k", "test")):
        images = read_idx(args.src / f"{split}-images-idx3-ubyte.gz")
        labels = read_idx(args.src / f"{split}-labels-idx1-ubyte.gz")
        idx = balanced_indices(labels, PER_CLASS[split])
        arrays[f"x_{key}"] = images[idx].astype(np.uint8)
        arrays[f"y_{key}"] = labels[idx].astype(np.uint8)
        arrays[f"index_{key}"] = idx.astype(np.int32)
    arrays["source"] = np.array(
        json.dumps(
            {
                "dataset": "MNIST (LeCun, Cortes, Burges), CC BY-SA 3.0",
                "url": "http://yann.lecun.com/exdb/mnist/",
                "md5": MD5,
                "selection": "first 1000 train / 200 test images per class, original order",
            }
        )
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    for k in ("x_train", "y_train", "x_test", "y_test"):
        counts = np.bincount(arrays[k]).tolist() if k[0] == "y" else ""
        print(k, arrays[k].shape, arrays[k].dtype, counts)


if __name__ == "__main__":
    main()
