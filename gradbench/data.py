"""Image data for the image tasks: find, verify, read and split it, and binarize pixels.

Datasets (pixels scaled to [0, 1], flattened; 10 classes):

* ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 images, shipped with scikit-learn; no download).
  Fixed split from a seeded permutation: 1,257 train / 180 valid / 360 test.
* ``fashion-mnist`` and ``mnist``: the four official idx ``.gz`` files (28x28). Split: the first 55,000
  official training images train, the last 5,000 valid, the official 10,000 test; under ``split="disarm"``
  (DisARM's launcher: ``train[:50000]``, ``train[50000:]``, ``test``) 50,000 / 10,000 / 10,000.
* ``omniglot``: ``chardata.mat`` of the IWAE repository (yburda/iwae, ``datasets/OMNIGLOT``), the split
  VIMCO and DisARM use: 28x28 grey images, ``data`` 24,345 training and ``testdata`` 8,070 test images;
  the last 1,345 training images valid (DisARM's ``num_valid``), so 23,000 train. Read with
  ``scipy.io.loadmat`` (a MATLAB file: nothing is unpickled). Labels: the alphabet (``target``).

The files are looked for in ``$GRADBENCH_DATA/<name>``, then the user cache
(``$XDG_CACHE_HOME/gradbench/<name>``, default ``~/.cache/gradbench/<name>``), then, for Fashion-MNIST, the
install location of Debian's ``dataset-fashion-mnist``. Every file is checked before use: an idx file
against its MD5 (the official ``.gz`` checksum, or the checksum of the decompressed content: Debian
re-compresses the same bytes); ``chardata.mat``, which has no published checksum, against the SHA-256
pinned beside it in ``chardata.mat.sha256`` (written by ``fetch``, which requires ``sha256=``). ``fetch``
downloads from the official source into the cache, verifying as it goes.

Binarization (pixels as Bernoulli targets): ``dynamic`` re-samples every training image each time it is
drawn, ``static`` uses one fixed seeded sample, ``threshold`` uses ``pixel > 0.5``. Evaluation under
``dynamic`` uses the same fixed sample as ``static``, so evaluations are deterministic and paired.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.client
import os
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradbench.errors import UsageError

DATASETS = ("digits", "fashion-mnist", "mnist", "omniglot")
BINARIZE = ("dynamic", "static", "threshold")
SPLITS = ("gradbench", "disarm")  # gradbench's own, or DisARM's launcher's (differs for the MNISTs only)
STATIC_SEED = 1234  # the one fixed sample of static binarization (and of dynamic's evaluation sets)
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


class DataError(UsageError):
    """Data missing, truncated or failing its checksum: one line saying what to do."""


class DataMissing(DataError):
    """No search directory holds the dataset's files (or none it can verify)."""


OMNIGLOT_URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/"  # DisARM's dataset.py reads it here
OMNIGLOT_FILE = "chardata.mat"
OMNIGLOT_VALID = 1345  # the last training images, DisARM's num_valid
OMNIGLOT_HINT = ("run 'gradbench data fetch omniglot --sha256 HEX' with the SHA-256 you trust for chardata.mat "
                 "(no checksum is published), or put chardata.mat in $GRADBENCH_DATA/omniglot with its SHA-256 "
                 "in chardata.mat.sha256")


@dataclass(frozen=True)
class Remote:
    """Where an idx dataset comes from and what its files hash to (MD5 of the .gz; of the content)."""

    url: str
    gz_md5: dict[str, str]
    raw_md5: dict[str, str]
    hint: str


REMOTES = {
    "fashion-mnist": Remote(
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        gz_md5={"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        # content of Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 (same data, re-gzipped)
        raw_md5={"train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                 "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
                 "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
                 "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965"},
        hint="install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
             "or run 'gradbench data fetch fashion-mnist'"),
    "mnist": Remote(
        url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        gz_md5={"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        raw_md5={},
        hint="run 'gradbench data fetch mnist', or put the four official idx .gz files in $GRADBENCH_DATA/mnist"),
}


def cache_dir() -> Path:
    """The user cache for downloaded data."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gradbench"


def files(name: str) -> tuple[str, ...]:
    """The files dataset ``name`` is read from."""
    return (OMNIGLOT_FILE,) if name == "omniglot" else FILES


def search_dirs(name: str) -> list[Path]:
    """Where the idx files of ``name`` are looked for, in order."""
    dirs = []
    if os.environ.get("GRADBENCH_DATA"):
        dirs.append(Path(os.environ["GRADBENCH_DATA"]) / name)
    dirs.append(cache_dir() / name)
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION)
    return dirs


# --- idx files -------------------------------------------------------------------------------------

def _open(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: damaged or truncated gzip file ({e}); delete it and fetch it again") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (``.gz`` or raw) of unsigned bytes as a uint8 array; truncation is an error."""
    path = Path(path)
    data = _open(path)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated idx header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    size = int(np.prod(shape)) if shape else 1
    if len(data) - header != size:
        raise DataError(f"{path}: idx payload has {len(data) - header} bytes, the header says {size}; "
                        f"the file is truncated or damaged")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 array as an idx file (gzipped by default): the format's inverse of ``read_idx``."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    blob = b"\x00\x00\x08" + bytes([a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    Path(path).write_bytes(gzip.compress(blob, mtime=0) if compress else blob)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def check_bytes(raw: bytes, fname: str, name: str, where: object,
                advice: str = "the file is damaged or not the official one: delete it and run "
                              "'gradbench data fetch {name}'") -> None:
    """Raise DataError unless ``raw`` matches a known checksum of dataset ``name``'s file ``fname``."""
    remote = REMOTES[name]
    got = _md5(raw)
    if got == remote.gz_md5[fname]:
        return
    want_raw = remote.raw_md5.get(fname)
    if want_raw is not None and raw[:2] == b"\x1f\x8b":
        try:
            if _md5(gzip.decompress(raw)) == want_raw:
                return
        except (OSError, EOFError):
            pass
    raise DataError(f"{where}: MD5 {got} does not match {name}'s {fname} ({remote.gz_md5[fname]}); "
                    + advice.format(name=name))


def verify(path: Path, name: str) -> None:
    """Raise DataError unless the file at ``path`` matches a known checksum (for omniglot: the SHA-256
    pinned in the ``.sha256`` file beside it)."""
    if name == "omniglot":
        check_sha256(path.read_bytes(), pinned_sha256(path), path)
        return
    check_bytes(path.read_bytes(), path.name, name, path)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normal_sha256(value: str) -> str:
    """A SHA-256 given by a user: 64 hex digits (case and surrounding space ignored), else a UsageError."""
    v = value.strip().lower()
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise UsageError(f"--sha256 must be 64 hex digits, got {value!r}")
    return v


def pinned_sha256(path: Path) -> str:
    """The SHA-256 pinned for ``path`` in ``<path>.sha256`` (its first word, as ``sha256sum`` writes it)."""
    pin = path.with_name(path.name + ".sha256")
    if not pin.is_file():
        raise DataMissing(f"{path}: no pinned checksum ({pin.name} is missing); {OMNIGLOT_HINT}")
    words = pin.read_text().split()
    try:
        return normal_sha256(words[0] if words else "")
    except UsageError:
        raise DataError(f"{pin}: not a SHA-256 (64 hex digits); {OMNIGLOT_HINT}") from None


def check_sha256(raw: bytes, want: str, where: object,
                 advice: str = "the file is damaged or not the one pinned: delete it and fetch it again") -> None:
    got = _sha256(raw)
    if got != want:
        raise DataError(f"{where}: SHA-256 {got} does not match the pinned {want}; {advice}")


@functools.lru_cache(maxsize=8)
def _verified(path: Path, name: str, size: int, mtime_ns: int) -> bool:
    verify(path, name)
    return True


def locate(name: str) -> Path:
    """The first search directory holding all files of ``name``, each verified (cached per file)."""
    for d in search_dirs(name):
        if all((d / f).is_file() for f in files(name)):
            for f in files(name):
                st = (d / f).stat()
                pin = d / (f + ".sha256")
                pin_mtime = pin.stat().st_mtime_ns if pin.is_file() else 0
                _verified(d / f, name, st.st_size, st.st_mtime_ns + pin_mtime)
            return d
    where = ", ".join(str(d) for d in search_dirs(name))
    hint = OMNIGLOT_HINT if name == "omniglot" else REMOTES[name].hint
    raise DataMissing(f"dataset {name!r} not found (looked in {where}); {hint}")


def fetch(name: str, dest: str | Path | None = None, base_url: str | None = None, log=print,
          sha256: str | None = None) -> Path:
    """Download ``name``'s files into ``dest`` (default: the user cache), verifying each: the idx files'
    MD5s, or for omniglot the SHA-256 given as ``sha256`` (required: no checksum is published for
    ``chardata.mat``; it is pinned beside the file in ``chardata.mat.sha256`` for every later use).

    A file is written under a temporary name and renamed only once it verifies; files already present
    and valid are kept. A bad URL is a UsageError; a failed transfer an OSError (a run failure, exit 1).
    """
    downloadable = (*REMOTES, "omniglot")
    if name not in downloadable:
        raise UsageError(f"nothing to fetch for {name!r}; downloadable: {', '.join(downloadable)}"
                         + (" (digits ships with scikit-learn)" if name == "digits" else ""))
    if name == "omniglot":
        if sha256 is None:
            raise UsageError("omniglot's chardata.mat has no published checksum: pass --sha256 HEX, the SHA-256 "
                             "of the file you trust (e.g. 'sha256sum chardata.mat' of a copy you checked)")
        sha256 = normal_sha256(sha256)
    elif sha256 is not None:
        raise UsageError(f"--sha256 is for omniglot; {name}'s files are checked against their published MD5s")
    out = Path(dest) / name if dest is not None else cache_dir() / name
    created = [p for p in (out, *out.parents) if not p.exists()]  # removed again if nothing is kept
    out.mkdir(parents=True, exist_ok=True)
    try:
        if name == "omniglot":
            assert sha256 is not None
            _fetch_pinned(out / OMNIGLOT_FILE, sha256, base_url or OMNIGLOT_URL, log)
        else:
            for f in FILES:
                _fetch_file(out / f, name, base_url or REMOTES[name].url, log)
    except BaseException:
        for folder in created:  # deepest first; a folder that holds anything stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return out


def _fetch_file(target: Path, name: str, url: str, log) -> None:
    """Keep ``target`` if it is present and valid, else download it and write it only once it verifies."""
    if target.is_file():
        try:
            verify(target, name)
            log(f"{target}: present, checksum ok")
            return
        except DataError:
            pass
    raw, source = _download(url, target.name)
    check_bytes(raw, target.name, name, source, advice="nothing was kept; try again, or another --url")
    _write(target, raw)
    log(f"{target}: downloaded, checksum ok")


def _fetch_pinned(target: Path, sha256: str, url: str, log) -> None:
    """Like ``_fetch_file`` against a given SHA-256, which is then pinned in ``<target>.sha256``."""
    pin = target.with_name(target.name + ".sha256")
    if target.is_file() and _sha256(target.read_bytes()) == sha256:
        log(f"{target}: present, checksum ok")
    else:
        raw, source = _download(url, target.name)
        check_sha256(raw, sha256, source, advice="nothing was kept; check the checksum, try again, or another --url")
        _write(target, raw)
        log(f"{target}: downloaded, checksum ok")
    _write(pin, f"{sha256}  {target.name}\n".encode())


def _download(url: str, fname: str) -> tuple[bytes, str]:
    source = url.rstrip("/") + "/" + fname
    try:
        with urllib.request.urlopen(source, timeout=60) as r:
            return r.read(), source
    except ValueError as e:  # not a URL at all
        raise UsageError(f"bad --url {url!r}: {e}") from None
    except (OSError, http.client.HTTPException) as e:  # network, HTTP error, truncated transfer
        raise OSError(f"downloading {source} failed: {type(e).__name__}: {e}") from None


def _write(target: Path, raw: bytes) -> None:
    """Write under a temporary name, then rename: a reader never sees a partial file."""
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        part.write_bytes(raw)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


# --- loading and splits ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Splits:
    """Pixels in [0, 1] as float32 (N, D) arrays and int64 labels, for train / valid / test."""

    train_x: np.ndarray
    train_y: np.ndarray
    valid_x: np.ndarray
    valid_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    image_shape: tuple[int, int]
    classes: int = 10


def check(name: str) -> None:
    """Raise DataError now (before a run starts) if ``name`` is unknown or not available here."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; datasets: {', '.join(DATASETS)}")
    if name != "digits":
        locate(name)


def read_omniglot(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(train images, train labels, test images, test labels, classes) from an IWAE ``chardata.mat``: images
    (N, 784) float32 in [0, 1], one image per column of ``data`` / ``testdata`` (kept in the file's pixel
    order, as DisARM's ``dataset.py`` keeps it); labels the alphabet, argmax of ``target`` / ``testtarget``
    (zeros when the file has none)."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, NotImplementedError, OSError, TypeError) as e:  # not MATLAB 5 / damaged
        raise DataError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from None

    def images(key: str) -> np.ndarray:
        a = mat.get(key)
        if a is None or a.ndim != 2 or a.shape[0] != 28 * 28 or not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{path}: expected {key!r} as 784 x N pixels, found "
                            f"{'nothing' if a is None else a.shape}")
        x = np.ascontiguousarray(a.T, dtype=np.float32)
        if x.size and not (0 <= x.min() and x.max() <= 1):
            raise DataError(f"{path}: {key!r} pixels outside [0, 1]")
        return x

    def labels(key: str, n: int) -> np.ndarray:
        t = mat.get(key)
        if t is None:
            return np.zeros(n, dtype=np.int64)
        if t.ndim != 2 or t.shape[1] != n:
            raise DataError(f"{path}: {key!r} has shape {t.shape}, expected classes x {n}")
        return t.argmax(0).astype(np.int64)

    train, test = images("data"), images("testdata")
    target = mat.get("target")
    classes = int(target.shape[0]) if target is not None and target.ndim == 2 else 1
    return train, labels("target", len(train)), test, labels("testtarget", len(test)), classes


@functools.lru_cache(maxsize=4)
def load(name: str, split: str = "gradbench") -> Splits:
    """The fixed splits of ``name`` (cached per process); ``split="disarm"``: DisARM's launcher's."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    check(name)
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.data / 16.0).astype(np.float32)
        y = d.target.astype(np.int64)
        order = np.random.default_rng(0).permutation(len(x))
        tr, va, te = order[:1257], order[1257:1437], order[1437:]
        return Splits(x[tr], y[tr], x[va], y[va], x[te], y[te], (8, 8))
    d = locate(name)
    if name == "omniglot":  # DisARM's split (the only one): the last OMNIGLOT_VALID training images valid
        train_x, train_y, test_x, test_y, classes = read_omniglot(d / OMNIGLOT_FILE)
        if len(train_x) <= OMNIGLOT_VALID:
            raise DataError(f"{d / OMNIGLOT_FILE}: {len(train_x)} training images, fewer than the "
                            f"{OMNIGLOT_VALID} validation images DisARM's split holds out")
        cut = len(train_x) - OMNIGLOT_VALID
        return Splits(train_x[:cut], train_y[:cut], train_x[cut:], train_y[cut:], test_x, test_y, (28, 28), classes)
    images = read_idx(d / FILES[0]).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    labels = read_idx(d / FILES[1]).astype(np.int64)
    test_x = read_idx(d / FILES[2]).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    test_y = read_idx(d / FILES[3]).astype(np.int64)
    if len(images) != len(labels) or len(test_x) != len(test_y):
        raise DataError(f"{d}: images and labels differ in count")
    n_valid = len(images) // 12 if split == "gradbench" else len(images) // 6  # 5,000 / 10,000 of the 60,000
    cut = len(images) - n_valid
    return Splits(images[:cut], labels[:cut], images[cut:], labels[cut:], test_x, test_y, (28, 28))


def binarize_fixed(x: torch.Tensor, mode: str | None) -> torch.Tensor:
    """The fixed binarization of ``x`` (None: grey levels); dynamic's fixed sample is static's."""
    if mode is None:
        return x
    if mode == "threshold":
        return (x > 0.5).to(x.dtype)
    g = torch.Generator().manual_seed(STATIC_SEED)
    return torch.bernoulli(x.cpu(), generator=g).to(x.device)


def image_set(name: str, binarize: str | None, device: torch.device, split: str = "gradbench") -> ImageSet:
    """The ImageSet of ``name`` on ``device`` in torch's default float dtype (float64 under
    ``torch.set_default_dtype``, which the exact-trajectory tests use), shared by every task that asks in this
    process (seeds run one after another, the replicas of a seed batch): it is never written to."""
    return _image_set(name, binarize, device, torch.get_default_dtype(), split)


@functools.lru_cache(maxsize=2)
def _image_set(name: str, binarize: str | None, device: torch.device, dtype: torch.dtype,
               split: str = "gradbench") -> ImageSet:
    return ImageSet(name, binarize, device, dtype, split)


class ImageSet:
    """A dataset's splits on one device (moved once), batches drawn without host sync, and binarization.

    ``binarize=None`` keeps grey levels (classification inputs).
    """

    def __init__(self, name: str, binarize: str | None, device: torch.device,
                 dtype: torch.dtype = torch.float32, split: str = "gradbench") -> None:
        if binarize is not None and binarize not in BINARIZE:
            raise UsageError(f"unknown binarize {binarize!r}; use one of {', '.join(BINARIZE)}")
        s = load(name, split)
        self.train_mean = torch.from_numpy(s.train_x.mean(0, dtype=np.float64)).to(device, dtype)  # grey, per pixel
        self.binarize = binarize
        self.image_shape = s.image_shape
        self.classes = s.classes
        self.dim = s.train_x.shape[1]

        def put(a: np.ndarray) -> torch.Tensor:  # pixels in ``dtype``, labels stay int64
            t = torch.from_numpy(a)
            return t.to(device, dtype) if t.is_floating_point() else t.to(device)

        grey_train = put(s.train_x)
        self.train_y, self.valid_y, self.test_y = put(s.train_y), put(s.valid_y), put(s.test_y)
        fixed_mode = None if binarize is None else ("static" if binarize == "dynamic" else binarize)
        self.train_x = binarize_fixed(grey_train, fixed_mode)  # fixed versions, for evaluation
        # what training batches are drawn from: grey for dynamic (sampled per draw), else the fixed version
        self._train_source = grey_train if binarize == "dynamic" else self.train_x
        self.valid_x = binarize_fixed(put(s.valid_x), fixed_mode)
        self.test_x = binarize_fixed(put(s.test_x), fixed_mode)

    def batch(self, size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch (x, y) drawn uniformly with replacement on the device, from ``generator`` (the
        task's data stream) when given."""
        idx = torch.randint(self._train_source.shape[0], (size,), device=self._train_source.device,
                            generator=generator)
        x = self._train_source[idx]
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        return x, self.train_y[idx]
