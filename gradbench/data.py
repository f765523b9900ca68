"""Image data for the image tasks: find, verify, read and split it, and binarize pixels.

Datasets (pixels scaled to [0, 1], flattened; 10 classes):

* ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 images, shipped with scikit-learn; no download).
  Fixed split from a seeded permutation: 1,257 train / 180 valid / 360 test.
* ``fashion-mnist`` and ``mnist``: the four official idx ``.gz`` files (28x28). Split: the first 55,000
  official training images train, the last 5,000 valid, the official 10,000 test.

The idx files are looked for in ``$GRADBENCH_DATA/<name>``, then the user cache
(``$XDG_CACHE_HOME/gradbench/<name>``, default ``~/.cache/gradbench/<name>``), then, for Fashion-MNIST, the
install location of Debian's ``dataset-fashion-mnist``. Every file is checked against its MD5 before
use: the official ``.gz`` checksum, or the checksum of the decompressed content (Debian re-compresses the
same bytes). ``fetch`` downloads from the official source into the cache, verifying as it goes.

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

DATASETS = ("digits", "fashion-mnist", "mnist")
BINARIZE = ("dynamic", "static", "threshold")
STATIC_SEED = 1234  # the one fixed sample of static binarization (and of dynamic's evaluation sets)
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


class DataError(UsageError):
    """Data missing, truncated or failing its checksum: one line saying what to do."""


class DataMissing(DataError):
    """No search directory holds the dataset's files."""


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
    """Raise DataError unless the file at ``path`` matches a known checksum."""
    check_bytes(path.read_bytes(), path.name, name, path)


@functools.lru_cache(maxsize=8)
def _verified(path: Path, name: str, size: int, mtime_ns: int) -> bool:
    verify(path, name)
    return True


def locate(name: str) -> Path:
    """The first search directory holding all four files of ``name``, each verified (cached per file)."""
    for d in search_dirs(name):
        if all((d / f).is_file() for f in FILES):
            for f in FILES:
                st = (d / f).stat()
                _verified(d / f, name, st.st_size, st.st_mtime_ns)
            return d
    where = ", ".join(str(d) for d in search_dirs(name))
    raise DataMissing(f"dataset {name!r} not found (looked in {where}); {REMOTES[name].hint}")


def fetch(name: str, dest: str | Path | None = None, base_url: str | None = None, log=print) -> Path:
    """Download ``name``'s four files into ``dest`` (default: the user cache), verifying each MD5.

    A file is written under a temporary name and renamed only once it verifies; files already present
    and valid are kept. A bad URL is a UsageError; a failed transfer an OSError (a run failure, exit 1).
    """
    if name not in REMOTES:
        raise UsageError(f"nothing to fetch for {name!r}; downloadable: {', '.join(REMOTES)}"
                         + (" (digits ships with scikit-learn)" if name == "digits" else ""))
    remote = REMOTES[name]
    out = Path(dest) / name if dest is not None else cache_dir() / name
    created = [p for p in (out, *out.parents) if not p.exists()]  # removed again if nothing is kept
    out.mkdir(parents=True, exist_ok=True)
    try:
        for f in FILES:
            _fetch_file(out / f, name, base_url or remote.url, log)
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
    f = target.name
    source = url.rstrip("/") + "/" + f
    try:
        with urllib.request.urlopen(source, timeout=60) as r:
            raw = r.read()
    except ValueError as e:  # not a URL at all
        raise UsageError(f"bad --url {url!r}: {e}") from None
    except (OSError, http.client.HTTPException) as e:  # network, HTTP error, truncated transfer
        raise OSError(f"downloading {source} failed: {type(e).__name__}: {e}") from None
    check_bytes(raw, f, name, source, advice="nothing was kept; try again, or another --url")
    part = target.with_name(f".{f}.{os.getpid()}.part")
    try:
        part.write_bytes(raw)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    log(f"{target}: downloaded, checksum ok")


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


@functools.lru_cache(maxsize=4)
def load(name: str) -> Splits:
    """The fixed splits of ``name`` (cached per process)."""
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
    images = read_idx(d / FILES[0]).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    labels = read_idx(d / FILES[1]).astype(np.int64)
    test_x = read_idx(d / FILES[2]).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    test_y = read_idx(d / FILES[3]).astype(np.int64)
    if len(images) != len(labels) or len(test_x) != len(test_y):
        raise DataError(f"{d}: images and labels differ in count")
    n_valid = len(images) // 12  # 5,000 of the official 60,000
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


def image_set(name: str, binarize: str | None, device: torch.device) -> ImageSet:
    """The ImageSet of ``name`` on ``device`` in torch's default float dtype (float64 under
    ``torch.set_default_dtype``, which the exact-trajectory tests use), shared by every task that asks in this
    process (seeds run one after another, the replicas of a seed batch): it is never written to."""
    return _image_set(name, binarize, device, torch.get_default_dtype())


@functools.lru_cache(maxsize=2)
def _image_set(name: str, binarize: str | None, device: torch.device, dtype: torch.dtype) -> ImageSet:
    return ImageSet(name, binarize, device, dtype)


class ImageSet:
    """A dataset's splits on one device (moved once), batches drawn without host sync, and binarization.

    ``binarize=None`` keeps grey levels (classification inputs).
    """

    def __init__(self, name: str, binarize: str | None, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        if binarize is not None and binarize not in BINARIZE:
            raise UsageError(f"unknown binarize {binarize!r}; use one of {', '.join(BINARIZE)}")
        s = load(name)
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
