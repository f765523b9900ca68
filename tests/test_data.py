"""The data module: idx files, checksums, search paths, fetch over HTTP, splits and binarization."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from gradbench import data
from gradbench.cli import main


@pytest.fixture(autouse=True)
def fresh_caches():
    for cache in (data.load, data._verified, data._image_set):
        cache.cache_clear()
    yield
    for cache in (data.load, data._verified, data._image_set):
        cache.cache_clear()


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    for shape in [(7, 5, 3), (11,)]:
        a = rng.integers(0, 256, size=shape, dtype=np.uint8)
        path = tmp_path / f"a{len(shape)}.idx"
        data.write_idx(path, a, compress=compress)
        assert np.array_equal(data.read_idx(path), a)


def test_truncated_or_damaged_idx_is_an_error(tmp_path):
    a = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    raw = tmp_path / "raw.idx"
    data.write_idx(raw, a, compress=False)
    raw.write_bytes(raw.read_bytes()[:-7])
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(raw)
    gz = tmp_path / "a.idx.gz"
    data.write_idx(gz, a)
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(gz)
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an idx file at all")
    with pytest.raises(data.DataError, match="not an idx file"):
        data.read_idx(junk)


def _fake_mnist(folder: Path, n_train: int = 120, n_test: int = 24) -> dict[str, str]:
    """Small MNIST-shaped idx files; returns their MD5s (to stand in for the official ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), np.arange(n_train, dtype=np.uint8) % 10,
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), np.arange(n_test, dtype=np.uint8) % 10]
    md5 = {}
    for name, a in zip(data.FILES, arrays, strict=True):
        data.write_idx(folder / name, a)
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    return md5


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """$GRADBENCH_DATA/mnist holds small idx files whose MD5s are registered as mnist's."""
    root = tmp_path / "data"
    md5 = _fake_mnist(root / "mnist")
    monkeypatch.setitem(data.REMOTES, "mnist", data.Remote(url="http://unused/", gz_md5=md5, raw_md5={}, hint="h"))
    monkeypatch.setenv("GRADBENCH_DATA", str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return root / "mnist"


def test_mnist_loader_reads_splits_from_gradbench_data(fake_mnist):
    s = data.load("mnist")
    assert s.image_shape == (28, 28)
    assert s.train_x.shape == (110, 784) and s.valid_x.shape == (10, 784) and s.test_x.shape == (24, 784)
    assert s.train_x.dtype == np.float32 and 0 <= s.train_x.min() and s.train_x.max() <= 1
    raw = data.read_idx(fake_mnist / data.FILES[0])
    np.testing.assert_allclose(s.valid_x[0], raw[110].reshape(-1) / 255.0)  # valid = the last 1/12 of train
    assert list(s.test_y[:12]) == list(range(10)) + [0, 1]


def test_wrong_checksum_is_caught_before_use(fake_mnist):
    path = fake_mnist / data.FILES[2]
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF  # still a valid-looking file, wrong content
    path.write_bytes(bytes(blob))
    with pytest.raises(data.DataError, match="MD5"):
        data.load("mnist")


def test_missing_dataset_is_one_clear_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRADBENCH_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code = main(["run", "--task", "classify:dataset=mnist", "--estimator", "ste", "--runs", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "not found" in err and "gradbench data fetch mnist" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    """A loopback HTTP server serving a folder; yields (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_fetch_downloads_and_verifies_over_http(http_dir, tmp_path, monkeypatch, capsys):
    served, url = http_dir
    md5 = _fake_mnist(served)
    monkeypatch.setitem(data.REMOTES, "mnist", data.Remote(url="http://unused/", gz_md5=md5, raw_md5={}, hint="h"))
    dest = tmp_path / "dest"
    assert main(["data", "fetch", "mnist", "--dir", str(dest), "--url", url]) == 0
    for name in data.FILES:
        assert (dest / "mnist" / name).read_bytes() == (served / name).read_bytes()
    monkeypatch.setenv("GRADBENCH_DATA", str(dest))
    assert data.load("mnist").test_x.shape == (24, 784)
    capsys.readouterr()


def test_fetch_refuses_a_file_with_the_wrong_checksum(http_dir, tmp_path, monkeypatch, capsys):
    served, url = http_dir
    md5 = _fake_mnist(served)
    md5[data.FILES[1]] = "0" * 32  # the server's train labels are not what the checksum says
    monkeypatch.setitem(data.REMOTES, "mnist", data.Remote(url="http://unused/", gz_md5=md5, raw_md5={}, hint="h"))
    dest = tmp_path / "dest"
    assert main(["data", "fetch", "mnist", "--dir", str(dest), "--url", url]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gradbench: error:")]
    assert len(errors) == 1 and "MD5" in errors[0]
    kept = sorted(p.name for p in (dest / "mnist").iterdir())
    assert kept == [data.FILES[0]]  # the file before the bad one; nothing of the bad one, no temp files


def test_content_checksum_accepts_recompressed_official_data(tmp_path, monkeypatch):
    """Debian re-gzips Fashion-MNIST: the .gz MD5 differs, the content MD5 must match instead."""
    payload = b"\x00\x00\x08\x01\x00\x00\x00\x03abc"
    f = tmp_path / data.FILES[3]
    f.write_bytes(gzip.compress(payload, mtime=12345))
    remote = data.Remote(url="u", gz_md5={data.FILES[3]: "0" * 32},
                         raw_md5={data.FILES[3]: hashlib.md5(payload).hexdigest()}, hint="h")
    monkeypatch.setitem(data.REMOTES, "mnist", remote)
    data.verify(f, "mnist")  # passes on the content checksum
    f.write_bytes(gzip.compress(payload + b"x"))
    with pytest.raises(data.DataError, match="MD5"):
        data.verify(f, "mnist")


def test_digits_splits_are_fixed_and_disjoint():
    s = data.load("digits")
    assert (len(s.train_x), len(s.valid_x), len(s.test_x)) == (1257, 180, 360)
    rows = {tuple(r) for r in np.concatenate([s.train_x, s.valid_x, s.test_x]).round(4)}
    assert len(rows) > 1700  # a permutation, not resampling (the digits set has a few duplicate images)
    data.load.cache_clear()
    assert np.array_equal(data.load("digits").test_x, s.test_x)


def test_binarization_variants():
    grey = data.ImageSet("digits", None, torch.device("cpu"))
    static = data.ImageSet("digits", "static", torch.device("cpu"))
    static2 = data.ImageSet("digits", "static", torch.device("cpu"))
    thresh = data.ImageSet("digits", "threshold", torch.device("cpu"))
    dynamic = data.ImageSet("digits", "dynamic", torch.device("cpu"))
    # static: one fixed sample, the same in every run; in {0,1}; dynamic evaluates on that same sample
    assert torch.equal(static.test_x, static2.test_x) and torch.equal(static.train_x, static2.train_x)
    assert set(static.test_x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(dynamic.test_x, static.test_x)
    assert torch.equal(thresh.test_x, (grey.test_x > 0.5).float())
    # static training batches come from the fixed sample: every batch row is one of its rows
    torch.manual_seed(0)
    xb, _ = static.batch(50)
    assert (xb[:, None, :] == static.train_x[None]).all(-1).any(-1).all()
    # dynamic: re-sampled per draw, so per class the mean binarized image approaches the mean grey image
    # (about 2,000 draws per class: per-pixel sd ~0.015; a 0.08 tolerance is > 5 sd; seeded, so stable)
    torch.manual_seed(0)
    x, y = dynamic.batch(20_000)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    for c in range(10):
        gap = (x[y == c].mean(0) - grey.train_x[grey.train_y == c].mean(0)).abs().max()
        assert gap < 0.08, (c, float(gap))
    # and they are not the static sample: the same image is binarized differently across draws
    assert not all((row == static.train_x).all(-1).any() for row in x[:50])


@pytest.mark.skipif(not data.DEBIAN_FASHION.is_dir() and not os.environ.get("GRADBENCH_REQUIRE_DATA"),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); CI installs it")
def test_real_fashion_mnist_loads_verified():
    s = data.load("fashion-mnist")
    assert s.train_x.shape == (55_000, 784) and s.valid_x.shape == (5_000, 784) and s.test_x.shape == (10_000, 784)
    assert np.bincount(s.test_y).tolist() == [1000] * 10


def test_fetch_bad_url_is_a_usage_error_and_a_dead_server_a_failure(tmp_path, capsys):
    dest = str(tmp_path / "dest")
    assert main(["data", "fetch", "mnist", "--dir", dest, "--url", "notaurl"]) == 2
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["data", "fetch", "mnist", "--dir", dest, "--url", f"http://127.0.0.1:{port}/"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gradbench: error:")]
    assert len(errors) == 2 and "bad --url" in errors[0] and "downloading" in errors[1]
    assert not (tmp_path / "dest").exists()  # a failed fetch leaves no file and no empty folder behind


# --- DisARM's split and Omniglot (chardata.mat, pinned SHA-256) ---------------------------------------


def test_disarm_split_holds_out_the_last_sixth_of_training(fake_mnist):
    """DisARM's launcher: train[:50000] / train[50000:] of the official 60,000 (here 100 / 20 of 120)."""
    ours, theirs = data.load("mnist"), data.load("mnist", "disarm")
    assert (len(ours.train_x), len(ours.valid_x)) == (110, 10)
    assert (len(theirs.train_x), len(theirs.valid_x), len(theirs.test_x)) == (100, 20, 24)
    np.testing.assert_array_equal(theirs.train_x, ours.train_x[:100])
    with pytest.raises(data.UsageError, match="unknown split"):
        data.load("mnist", "nope")


def _fake_omniglot(folder: Path, n_train: int = 40, n_test: int = 12, alphabets: int = 5) -> str:
    """A small chardata.mat as IWAE's is laid out (pixels x images, one-hot alphabets x images); its SHA-256."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)

    def onehot(n: int) -> np.ndarray:
        t = np.zeros((alphabets, n))
        t[np.arange(n) % alphabets, np.arange(n)] = 1
        return t

    scipy.io.savemat(folder / "chardata.mat", {"data": rng.random((784, n_train)),
                                               "testdata": rng.random((784, n_test)),
                                               "target": onehot(n_train), "testtarget": onehot(n_test)})
    return hashlib.sha256((folder / "chardata.mat").read_bytes()).hexdigest()


@pytest.fixture
def fake_omniglot(tmp_path, monkeypatch):
    """$GRADBENCH_DATA/omniglot holds a small chardata.mat (40 training images) and its pinned SHA-256;
    5 of them are held out (DisARM holds out 1,345 of 24,345)."""
    root = tmp_path / "data"
    sha = _fake_omniglot(root / "omniglot")
    (root / "omniglot" / "chardata.mat.sha256").write_text(f"{sha}  chardata.mat\n")
    monkeypatch.setattr(data, "OMNIGLOT_VALID", 5)
    monkeypatch.setenv("GRADBENCH_DATA", str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return root / "omniglot"


def test_omniglot_loader_reads_chardata_with_disarms_split(fake_omniglot):
    import scipy.io

    raw = scipy.io.loadmat(fake_omniglot / "chardata.mat")
    for split in data.SPLITS:  # the same split either way: DisARM's is Omniglot's only one
        s = data.load("omniglot", split)
        assert (s.train_x.shape, s.valid_x.shape, s.test_x.shape) == ((35, 784), (5, 784), (12, 784))
        assert s.train_x.dtype == np.float32 and s.classes == 5 and s.image_shape == (28, 28)
        np.testing.assert_allclose(s.train_x[3], raw["data"][:, 3], rtol=1e-6)  # one image per column
        np.testing.assert_allclose(s.valid_x[0], raw["data"][:, 35], rtol=1e-6)  # the last ones held out
        np.testing.assert_allclose(s.test_x[-1], raw["testdata"][:, -1], rtol=1e-6)
        assert list(s.train_y[:6]) == [0, 1, 2, 3, 4, 0] and list(s.test_y[:2]) == [0, 1]
    images = data.ImageSet("omniglot", "dynamic", torch.device("cpu"), split="disarm")
    x, _ = images.batch(8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 784) and set(x.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(images.train_mean, torch.from_numpy(raw["data"][:, :35].mean(1)).float())


def test_omniglot_rejects_a_wrong_or_missing_pinned_checksum(fake_omniglot):
    pin = fake_omniglot / "chardata.mat.sha256"
    good = pin.read_text()
    pin.write_text("0" * 64 + "  chardata.mat\n")
    with pytest.raises(data.DataError, match="SHA-256 .* does not match the pinned"):
        data.load("omniglot")
    data._verified.cache_clear()
    pin.write_text("not a checksum\n")
    with pytest.raises(data.DataError, match="not a SHA-256"):
        data.check("omniglot")
    pin.unlink()
    with pytest.raises(data.DataMissing, match="no pinned checksum.*--sha256"):
        data.check("omniglot")
    pin.write_text(good)
    blob = bytearray((fake_omniglot / "chardata.mat").read_bytes())
    blob[-9] ^= 0xFF  # a damaged file under a good pin
    (fake_omniglot / "chardata.mat").write_bytes(bytes(blob))
    data._verified.cache_clear()
    with pytest.raises(data.DataError, match="SHA-256"):
        data.check("omniglot")


def test_omniglot_file_that_is_not_chardata_is_an_error(tmp_path):
    import scipy.io

    scipy.io.savemat(tmp_path / "a.mat", {"data": np.zeros((10, 3))})
    with pytest.raises(data.DataError, match="784 x N"):
        data.read_omniglot(tmp_path / "a.mat")
    scipy.io.savemat(tmp_path / "b.mat", {"data": np.full((784, 3), 2.0), "testdata": np.zeros((784, 1))})
    with pytest.raises(data.DataError, match=r"outside \[0, 1\]"):
        data.read_omniglot(tmp_path / "b.mat")
    (tmp_path / "c.mat").write_bytes(b"junk" * 100)
    with pytest.raises(data.DataError, match="not a readable MATLAB file"):
        data.read_omniglot(tmp_path / "c.mat")


def test_fetch_omniglot_needs_a_sha256_and_pins_it(http_dir, tmp_path, monkeypatch, capsys):
    served, url = http_dir
    sha = _fake_omniglot(served)
    dest = tmp_path / "dest"
    assert main(["data", "fetch", "omniglot", "--dir", str(dest), "--url", url]) == 2  # no --sha256
    assert main(["data", "fetch", "omniglot", "--dir", str(dest), "--url", url, "--sha256", "f" * 64]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gradbench: error:")]
    assert len(errors) == 2 and "no published checksum" in errors[0] and "SHA-256" in errors[1]
    assert not dest.exists()  # nothing kept, no empty folder
    assert main(["data", "fetch", "mnist", "--dir", str(dest), "--url", url, "--sha256", sha]) == 2
    assert main(["data", "fetch", "omniglot", "--dir", str(dest), "--url", url, "--sha256", sha.upper()]) == 0
    assert (dest / "omniglot" / "chardata.mat").read_bytes() == (served / "chardata.mat").read_bytes()
    assert (dest / "omniglot" / "chardata.mat.sha256").read_text().split()[0] == sha
    monkeypatch.setenv("GRADBENCH_DATA", str(dest))
    monkeypatch.setattr(data, "OMNIGLOT_VALID", 5)
    assert data.load("omniglot").train_x.shape == (35, 784)
    capsys.readouterr()
