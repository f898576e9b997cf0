"""Image-classification datasets for the training application (paper Section 4 and Appendix A).

Four datasets, all held in memory as ``uint8`` images and normalised batch by batch:

``mnist-subset`` (the default)
    10,000 training and 2,000 test images of MNIST shipped inside the package
    (``tucker_dlra/app/data/mnist_subset.npz``, about 2 MB): the first 1,000 training and 200 test
    images of each digit of the original IDX files (MD5-checked), rebuilt by
    ``validation/make_mnist_subset.py``.  MNIST is by Yann LeCun, Corinna Cortes and Christopher
    J.C. Burges and is licensed CC BY-SA 3.0.
``mnist``, ``fashion-mnist``
    The original IDX files (gzip), read from ``data_dir`` (``data_dir/<name>/``, ``data_dir``
    itself, or torchvision's ``data_dir/MNIST/raw`` / ``data_dir/FashionMNIST/raw`` layout).
    Only the published ``.gz`` files are read (their MD5 is checked); decompressed copies alone
    are refused, as their content cannot be verified.
``cifar10``
    The python tarball ``cifar-10-python.tar.gz`` from ``data_dir`` (same search order).

With ``download=True`` missing files are fetched from the standard public mirrors into
``data_dir/<name>/``: each file is streamed into a temporary file in the same folder, its MD5 is
verified, and only then is it renamed into place (``os.replace``), so an interrupted or corrupt
download never leaves a file behind that looks valid.  Files already present are MD5-checked
before use.  torchvision is not needed.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import pickle
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from tucker_dlra._io import open_file_mode

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetError",
    "DatasetSpec",
    "download_file",
    "file_md5",
    "load_dataset",
    "read_cifar10",
    "read_idx",
]


class DatasetError(ValueError):
    """A dataset file is missing, corrupt or cannot be downloaded (the message says what to do)."""


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of a dataset: files with MD5 sums, mirrors, image shape, statistics."""

    name: str
    files: dict[str, str]  # file name -> MD5 of the published file
    mirrors: tuple[str, ...]
    shape: tuple[int, int, int]  # (channels, height, width)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    torchvision_dirs: tuple[str, ...] = ()
    classes: tuple[str, ...] = field(default_factory=tuple)


_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

#: The datasets known to :func:`load_dataset`.
DATASETS: dict[str, DatasetSpec] = {
    "mnist-subset": DatasetSpec(
        name="mnist-subset",
        files={},
        mirrors=(),
        shape=(1, 28, 28),
        num_classes=10,
        mean=(0.1307,),
        std=(0.3081,),
        classes=tuple(str(i) for i in range(10)),
    ),
    "mnist": DatasetSpec(
        name="mnist",
        files=dict(
            zip(
                _IDX_FILES,
                (
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
                strict=True,
            )
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        shape=(1, 28, 28),
        num_classes=10,
        mean=(0.1307,),
        std=(0.3081,),
        torchvision_dirs=("MNIST/raw",),
        classes=tuple(str(i) for i in range(10)),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        files=dict(
            zip(
                _IDX_FILES,
                (
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
                strict=True,
            )
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        shape=(1, 28, 28),
        num_classes=10,
        mean=(0.2860,),
        std=(0.3530,),
        torchvision_dirs=("FashionMNIST/raw",),
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        files={"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        shape=(3, 32, 32),
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        torchvision_dirs=(".",),
        classes=(
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck",
        ),
    ),
}


# ---------------------------------------------------------------------------------------------
# In-memory dataset
# ---------------------------------------------------------------------------------------------


@dataclass
class ArrayDataset:
    """Images (uint8, ``(N, C, H, W)``) and labels (int64, ``(N,)``) held in memory.

    Batches are normalised on the fly, ``x = (image / 255 - mean) / std`` per channel, so the
    stored dataset stays at one byte per pixel (CIFAR-10: 150 MB instead of 600 MB).
    """

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""
    num_classes: int = 10

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W); got {self.images.dtype}"
                             f" of shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: torch.Tensor | Sequence[int] | slice) -> ArrayDataset:
        """The images selected by ``index`` (a copy-free view where possible)."""
        return ArrayDataset(self.images[index], self.labels[index], self.mean, self.std,
                            self.name, self.num_classes)

    def normalize(self, images: torch.Tensor, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 images -> normalised float tensor on ``device``."""
        x = images.to(device=device, dtype=dtype).div_(255.0)
        mean = torch.tensor(self.mean, device=device, dtype=dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device, dtype=dtype).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield normalised ``(x, y)`` batches; the order is a permutation drawn from ``generator``.

        The last batch may be smaller.  Cost: one pass over the data, O(N) memory for the order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield (self.normalize(self.images[idx], device, dtype),
                   self.labels[idx].to(device))

    def num_batches(self, batch_size: int) -> int:
        """Number of batches of one pass with ``batch_size``."""
        return -(-len(self) // batch_size)


# ---------------------------------------------------------------------------------------------
# File readers
# ---------------------------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed when the name ends in ``.gz``) into a NumPy array.

    Format (LeCun's MNIST page): two zero bytes, a type code, the number of dimensions, the
    dimensions as big-endian int32, then the data in C order.  Cost: one pass over the file.

    Raises
    ------
    DatasetError
        If the file is truncated, has a bad magic number or trailing bytes.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: cannot read IDX file ({exc}); delete it and download it "
                           "again (--download)") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) != header + count * dtype.itemsize:
        raise DatasetError(f"{path}: IDX size mismatch: header says {dims} of {dtype}, file has "
                           f"{len(raw) - header} data bytes; the file is corrupt, delete it")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def read_cifar10(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read ``cifar-10-python.tar.gz`` without extracting it.

    Returns ``(x_train, y_train, x_test, y_test)`` with images uint8 ``(N, 3, 32, 32)``.  The
    batches are Python pickles: call this only on a file whose MD5 was verified (as
    :func:`load_dataset` does).  Cost: one pass over the 163 MB tarball.
    """
    parts: dict[str, dict] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if base.startswith("data_batch_") or base == "test_batch":
                    f = tar.extractfile(member)
                    assert f is not None
                    parts[base] = pickle.load(io.BytesIO(f.read()), encoding="bytes")
    except (OSError, EOFError, tarfile.TarError, pickle.UnpicklingError) as exc:
        raise DatasetError(f"{path}: cannot read CIFAR-10 tarball ({exc}); delete it and "
                           "download it again (--download)") from None
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in [*names, "test_batch"] if n not in parts]
    if missing:
        raise DatasetError(f"{path}: CIFAR-10 tarball lacks {missing}")

    def stack(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([np.asarray(parts[k][b"data"], dtype=np.uint8) for k in keys])
        y = np.concatenate([np.asarray(parts[k][b"labels"], dtype=np.int64) for k in keys])
        return x.reshape(-1, 3, 32, 32), y

    return (*stack(names), *stack(["test_batch"]))


# ---------------------------------------------------------------------------------------------
# Download with verification
# ---------------------------------------------------------------------------------------------


def file_md5(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex MD5 digest of a file (streamed, O(1) memory)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download_file(urls: Sequence[str], dest: str | os.PathLike, md5: str, retries: int = 3,
                  timeout: float = 60.0, backoff: float = 1.0, progress: bool = False) -> Path:
    """Download ``dest`` from the first of ``urls`` that delivers a file with the given MD5.

    Every attempt streams into a temporary file in ``dest``'s folder; the file is renamed to
    ``dest`` (``os.replace``, atomic on POSIX and Windows) only after its MD5 matched, and the
    temporary file is removed on any failure, so no partial or corrupt file is left behind.
    Each URL is tried ``retries`` times with exponential backoff on network errors; a checksum
    mismatch moves on to the next URL at once.

    Raises
    ------
    DatasetError
        When no URL delivered a verified file; the message lists every failure.
    """
    dest = Path(dest)
    if retries < 1:
        raise ValueError(f"retries must be >= 1; got {retries}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for url in urls:
        for attempt in range(retries):
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part",
                                            dir=dest.parent)
            tmp = Path(tmp_name)
            try:
                h = hashlib.md5()
                received = 0
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                    total = int(r.headers.get("Content-Length") or 0)
                    bar = _progress_bar(total, dest.name) if progress else None
                    for block in iter(lambda r=r: r.read(1 << 16), b""):
                        out.write(block)
                        h.update(block)
                        received += len(block)
                        if bar is not None:
                            bar.update(len(block))
                    if bar is not None:
                        bar.close()
                    out.flush()
                    open_file_mode(out.fileno())  # not mkstemp's 0o600: data is shared
                    os.fsync(out.fileno())
                if total and received != total:
                    raise OSError(f"transfer interrupted after {received} of {total} bytes")
                got = h.hexdigest()
                if got != md5:
                    errors.append(f"{url}: MD5 {got} != expected {md5}")
                    break  # corrupt content: retrying the same URL will not help
                os.replace(tmp, dest)
                return dest
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                errors.append(f"{url} (attempt {attempt + 1}): {exc}")
                if attempt + 1 < retries:
                    time.sleep(backoff * 2**attempt)
            finally:
                if tmp.exists():
                    tmp.unlink()
    raise DatasetError(f"could not download {dest.name}: " + "; ".join(errors)
                       + f". Download it by hand into {dest.parent} (expected MD5 {md5}).")


def _progress_bar(total: int, name: str):
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total or None, unit="B", unit_scale=True, desc=name,
                disable=not sys.stderr.isatty())


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _embedded_subset() -> tuple[np.ndarray, ...]:
    ref = resources.files("tucker_dlra.app").joinpath("data/mnist_subset.npz")
    with resources.as_file(ref) as path, np.load(path) as z:
        return z["x_train"], z["y_train"], z["x_test"], z["y_test"]


def _find_files(spec: DatasetSpec, data_dir: Path) -> dict[str, Path] | None:
    """Folder holding all files of ``spec``, else None.

    Only the published files are used, since only their MD5 sums are known: a folder that holds
    decompressed IDX files (``train-images-idx3-ubyte``) without their ``.gz`` originals is an
    error (their content could not be verified), not a dataset.
    """
    candidates = [data_dir / spec.name, data_dir] + [data_dir / d for d in spec.torchvision_dirs]
    for folder in candidates:
        found = {name: folder / name for name in spec.files if (folder / name).is_file()}
        if len(found) == len(spec.files):
            return found
    for folder in candidates:
        raw = [name[:-3] for name in spec.files
               if name.endswith(".gz") and (folder / name[:-3]).is_file()
               and not (folder / name).is_file()]
        if raw:
            raise DatasetError(
                f"{folder} holds decompressed IDX files ({', '.join(raw)}) without their .gz "
                "originals; only the published .gz files can be MD5-verified: put them there "
                "or rerun with --download"
            )
    return None


def _resolve_files(spec: DatasetSpec, data_dir: Path, download: bool,
                   mirrors: Sequence[str] | None, progress: bool) -> dict[str, Path]:
    found = _find_files(spec, data_dir)
    if found is None:
        if not download:
            raise DatasetError(
                f"dataset {spec.name!r} not found in {data_dir} (looked for "
                f"{', '.join(spec.files)} in {data_dir / spec.name} and {data_dir}); "
                "rerun with --download to fetch it, or point --data-dir to the folder holding it"
            )
        target = data_dir / spec.name
        found = {}
        for name, md5 in spec.files.items():
            dest = target / name
            if not (dest.is_file() and file_md5(dest) == md5):
                bases = mirrors if mirrors else spec.mirrors
                download_file([b.rstrip("/") + "/" + name for b in bases], dest, md5,
                              progress=progress)
            found[name] = dest
        return found
    for name, path in found.items():
        if file_md5(path) != spec.files[name]:
            raise DatasetError(
                f"{path} is corrupt (MD5 {file_md5(path)} != published {spec.files[name]}); "
                "delete it and rerun with --download"
            )
    return found


def load_dataset(name: str = "mnist-subset", data_dir: str | os.PathLike | None = None,
                 download: bool = False, mirrors: Sequence[str] | None = None,
                 progress: bool = False) -> tuple[ArrayDataset, ArrayDataset]:
    """Load the training and test sets of a dataset of :data:`DATASETS`.

    Parameters
    ----------
    name : {"mnist-subset", "mnist", "fashion-mnist", "cifar10"}
        ``"mnist-subset"`` is the real MNIST subset shipped with the package (no files needed).
    data_dir : path, optional
        Folder holding the files (see the module docstring for the layouts searched).
        Required for every dataset but ``"mnist-subset"``.
    download : bool
        Fetch missing files from the public mirrors (MD5-verified, atomic) into
        ``data_dir/<name>/``.
    mirrors : sequence of base URLs, optional
        Replace the standard mirrors (e.g. an internal mirror).

    Returns
    -------
    (train, test) : ArrayDataset
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}; got {name!r}")
    spec = DATASETS[name]
    if name == "mnist-subset":
        arrays = _embedded_subset()
    else:
        if data_dir is None:
            raise DatasetError(f"dataset {name!r} needs --data-dir (add --download to fetch it)")
        data_dir = Path(data_dir)
        if not data_dir.is_dir() and not download:
            raise DatasetError(f"data folder {data_dir} does not exist; create it and add "
                               "--download, or point --data-dir to the folder holding the files")
        files = _resolve_files(spec, data_dir, download, mirrors, progress)
        if name == "cifar10":
            arrays = read_cifar10(files["cifar-10-python.tar.gz"])
        else:
            arrays = tuple(read_idx(files[f]) for f in _IDX_FILES)
    x_train, y_train, x_test, y_test = arrays
    c, h, w = spec.shape
    out = []
    for x, y in ((x_train, y_train), (x_test, y_test)):
        x = np.ascontiguousarray(x, dtype=np.uint8).reshape(-1, c, h, w)
        y = np.asarray(y, dtype=np.int64)
        if x.shape[0] != y.shape[0] or (y.size and (y.min() < 0 or y.max() >= spec.num_classes)):
            raise DatasetError(f"dataset {name!r}: images and labels do not match; the files "
                               "are corrupt, delete them and download them again")
        out.append(ArrayDataset(torch.from_numpy(x), torch.from_numpy(y), spec.mean, spec.std,
                                name, spec.num_classes))
    return out[0], out[1]
