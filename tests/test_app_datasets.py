"""Datasets of the training application: embedded MNIST subset, IDX/CIFAR readers, downloads.

The download tests run a local HTTP server (127.0.0.1, a thread) serving real MNIST images
(the shipped subset re-encoded as IDX gzip files); the reader test against the original files
runs where the environment variable ``TUCKER_DLRA_DATA_DIR`` names a folder holding them as
``mnist/`` and ``fashion-mnist/`` (CI sets it) and is skipped elsewhere.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tucker_dlra.app import datasets as D  # noqa: E402

_DATA_DIR = os.environ.get("TUCKER_DLRA_DATA_DIR", "")
SHARED = Path(_DATA_DIR) / "mnist" if _DATA_DIR else None


def _idx_bytes(a: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f8"): 0x0E}[a.dtype]
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">i4").tobytes()
    return header + a.tobytes()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def subset():
    with np.load(Path(D.__file__).parent / "data" / "mnist_subset.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def idx_files(subset, tmp_path_factory):
    """The embedded subset as the four MNIST IDX .gz files (real images), with their MD5s."""
    folder = tmp_path_factory.mktemp("served")
    arrays = {
        "train-images-idx3-ubyte.gz": subset["x_train"],
        "train-labels-idx1-ubyte.gz": subset["y_train"],
        "t10k-images-idx3-ubyte.gz": subset["x_test"],
        "t10k-labels-idx1-ubyte.gz": subset["y_test"],
    }
    md5 = {}
    for name, a in arrays.items():
        data = gzip.compress(_idx_bytes(np.ascontiguousarray(a, dtype=np.uint8)),
                             compresslevel=1, mtime=0)
        (folder / name).write_bytes(data)
        md5[name] = _md5(data)
    return folder, md5


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate: set[str] = set()

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):  # noqa: N802
        name = self.path.rsplit("/", 1)[-1]
        if name in self.truncate:  # announce the full length, send half, close
            data = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture()
def server(idx_files):
    folder, _ = idx_files
    handler = lambda *a, **k: _Handler(*a, directory=str(folder), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", folder
    httpd.shutdown()
    httpd.server_close()
    _Handler.truncate = set()


# ------------------------------------------------------------------------- embedded subset
def test_embedded_subset_is_balanced_real_mnist(subset):
    train, test = D.load_dataset("mnist-subset")
    assert (len(train), len(test)) == (10_000, 2_000)
    assert train.images.dtype == torch.uint8 and train.image_shape == (1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [1000] * 10
    assert torch.bincount(test.labels).tolist() == [200] * 10
    # real digits: ink on ~19 % of the pixels, mean intensity close to MNIST's 0.1307
    mean = float(train.images.float().mean() / 255)
    assert 0.11 < mean < 0.15
    assert len(np.unique(subset["index_train"])) == 10_000
    x, y = next(train.batches(256))
    assert x.dtype == torch.float32 and x.shape == (256, 1, 28, 28)
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2  # normalised


@pytest.mark.skipif(SHARED is None or not SHARED.is_dir(),
                    reason="set TUCKER_DLRA_DATA_DIR to a folder with the original MNIST files")
def test_readers_on_original_files_and_subset_provenance(subset):
    """The IDX reader on the published files (MD5-checked), and the subset is cut from them."""
    train, test = D.load_dataset("mnist", SHARED.parent)  # data_dir/<name>/ layout
    assert (len(train), len(test)) == (60_000, 10_000)
    assert torch.equal(train.images[torch.from_numpy(subset["index_train"]).long()][:, 0],
                       torch.from_numpy(subset["x_train"]))
    assert torch.equal(test.labels[torch.from_numpy(subset["index_test"]).long()],
                       torch.from_numpy(subset["y_test"]).long())
    fm_train, fm_test = D.load_dataset("fashion-mnist", SHARED.parent)
    assert (len(fm_train), len(fm_test)) == (60_000, 10_000)
    assert torch.bincount(fm_test.labels).tolist() == [1000] * 10


# ------------------------------------------------------------------------- readers
def test_read_idx_roundtrip_and_corruption(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "a-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_idx_bytes(a)))
    assert np.array_equal(D.read_idx(p), a)
    f = np.linspace(0, 1, 6).reshape(2, 3).astype(">f8")
    q = tmp_path / "f.idx"
    q.write_bytes(_idx_bytes(f))
    got = D.read_idx(q)
    assert got.dtype == np.float64 and np.array_equal(got, f)
    q.write_bytes(_idx_bytes(f)[:-3])  # truncated
    with pytest.raises(D.DatasetError, match="size mismatch"):
        D.read_idx(q)
    q.write_bytes(b"\x01\x02\x03\x04" + bytes(8))
    with pytest.raises(D.DatasetError, match="magic"):
        D.read_idx(q)
    p.write_bytes(gzip.compress(_idx_bytes(a))[:20])  # broken gzip stream
    with pytest.raises(D.DatasetError, match="download it"):
        D.read_idx(p)


def test_read_cifar10_tarball(tmp_path, monkeypatch):
    """The CIFAR-10 reader on a tarball with the real layout (random images, 5+1 batches)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar-10-python.tar.gz"
    expect = {}
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, 4).tolist()
            expect[name] = (data, labels)
            blob = pickle.dumps({b"data": data, b"labels": labels})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    xtr, ytr, xte, yte = D.read_cifar10(path)
    assert xtr.shape == (20, 3, 32, 32) and xte.shape == (4, 3, 32, 32)
    assert np.array_equal(xtr[4:8].reshape(4, -1), expect["data_batch_2"][0])
    assert yte.tolist() == expect["test_batch"][1]
    # through load_dataset with the MD5 of this file, in torchvision's layout (data_dir itself)
    spec = dataclasses.replace(D.DATASETS["cifar10"],
                               files={"cifar-10-python.tar.gz": _md5(path.read_bytes())})
    monkeypatch.setitem(D.DATASETS, "cifar10", spec)
    train, test = D.load_dataset("cifar10", tmp_path)
    assert train.image_shape == (3, 32, 32) and len(train) == 20 and len(test) == 4
    x, _ = next(train.batches(5))
    assert x.shape == (5, 3, 32, 32)


def test_missing_and_corrupt_local_files_say_what_to_do(tmp_path, idx_files, monkeypatch):
    with pytest.raises(D.DatasetError, match="--download"):
        D.load_dataset("mnist", tmp_path)
    with pytest.raises(D.DatasetError, match="does not exist"):
        D.load_dataset("mnist", tmp_path / "nowhere")
    with pytest.raises(D.DatasetError, match="--data-dir"):
        D.load_dataset("fashion-mnist")
    with pytest.raises(ValueError, match="dataset must be one of"):
        D.load_dataset("imagenet")
    folder, md5 = idx_files
    spec = dataclasses.replace(D.DATASETS["mnist"], files=md5)
    monkeypatch.setitem(D.DATASETS, "mnist", spec)
    target = tmp_path / "mnist"
    target.mkdir()
    for name in md5:
        (target / name).write_bytes((folder / name).read_bytes())
    train, _ = D.load_dataset("mnist", tmp_path)
    assert len(train) == 10_000
    bad = target / "t10k-labels-idx1-ubyte.gz"
    raw = bad.read_bytes()
    bad.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    with pytest.raises(D.DatasetError, match="corrupt.*delete it"):
        D.load_dataset("mnist", tmp_path)


def test_decompressed_idx_files_alone_are_refused(tmp_path, idx_files, monkeypatch):
    """Files named like decompressed MNIST cannot be MD5-verified: refused, not trained on."""
    folder, md5 = idx_files
    monkeypatch.setitem(D.DATASETS, "mnist", dataclasses.replace(D.DATASETS["mnist"], files=md5))
    target = tmp_path / "mnist"
    target.mkdir()
    for name in md5:
        (target / name[:-3]).write_bytes(gzip.decompress((folder / name).read_bytes()))
    with pytest.raises(D.DatasetError, match="decompressed IDX files.*without their .gz"):
        D.load_dataset("mnist", tmp_path)
    for name in md5:  # with the verified originals beside them, the originals are read
        (target / name).write_bytes((folder / name).read_bytes())
    train, _ = D.load_dataset("mnist", tmp_path)
    assert len(train) == 10_000


# ------------------------------------------------------------------------- downloads
def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verified_atomic(server, idx_files, tmp_path, subset, monkeypatch):
    """load_dataset(download=True) from a local mirror: real images, MD5-verified, in place."""
    url, _ = server
    _, md5 = idx_files
    monkeypatch.setitem(D.DATASETS, "mnist", dataclasses.replace(D.DATASETS["mnist"], files=md5))
    train, test = D.load_dataset("mnist", tmp_path / "data", download=True, mirrors=[url])
    assert torch.equal(train.images[:, 0], torch.from_numpy(subset["x_train"]))
    assert torch.equal(test.labels, torch.from_numpy(subset["y_test"]).long())
    assert _leftovers(tmp_path / "data" / "mnist") == sorted(md5)  # no temporary files
    # the mode of an ordinary write (0o666 less the umask), not the temporary file's 0o600
    mask = os.umask(0o022)
    os.umask(mask)
    for name in md5:
        assert (tmp_path / "data" / "mnist" / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_download_corrupt_file_leaves_nothing(server, idx_files, tmp_path):
    url, _ = server
    _, md5 = idx_files
    name = "t10k-labels-idx1-ubyte.gz"
    dest = tmp_path / "dl" / name
    wrong = "0" * 32
    with pytest.raises(D.DatasetError, match=f"MD5 {md5[name]} != expected {wrong}"):
        D.download_file([url + name], dest, wrong, retries=2, backoff=0)
    assert _leftovers(dest.parent) == []  # neither the file nor a partial download


def test_download_truncated_transfer_retries_then_fails_cleanly(server, idx_files, tmp_path):
    url, _ = server
    _, md5 = idx_files
    name = "train-labels-idx1-ubyte.gz"
    _Handler.truncate = {name}
    dest = tmp_path / "dl" / name
    with pytest.raises(D.DatasetError, match=r"attempt 2"):
        D.download_file([url + name], dest, md5[name], retries=2, backoff=0)
    assert _leftovers(dest.parent) == []
    # a second mirror that works is used after the broken one
    _Handler.truncate = set()
    got = D.download_file([url + "missing/" + name, url + name], dest, md5[name], retries=1,
                          backoff=0)
    assert got == dest and D.file_md5(dest) == md5[name]
    assert _leftovers(dest.parent) == [name]


def test_cli_train_with_download_from_mirror(server, idx_files, tmp_path, monkeypatch, capsys):
    """``tucker-dlra train --dataset mnist --download --mirror URL``: fetch, verify, train."""
    from tucker_dlra.app import cli

    url, _ = server
    _, md5 = idx_files
    monkeypatch.setitem(D.DATASETS, "mnist", dataclasses.replace(D.DATASETS["mnist"], files=md5))
    data = tmp_path / "data"
    data.mkdir()
    code = cli.main(["train", "--dataset", "mnist", "--data-dir", str(data), "--download",
                     "--mirror", url, "--method", "baseline", "--max-steps", "2", "--train-limit",
                     "300", "--test-limit", "100", "--threads", "1", "--no-plots", "--quiet",
                     "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "test accuracy" in out
    assert _leftovers(data / "mnist") == sorted(md5)
    assert all(D.file_md5(data / "mnist" / n) == m for n, m in md5.items())
