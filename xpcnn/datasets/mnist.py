"""MNIST and Fashion-MNIST: the bundled sample, the standard IDX files, and verified downloads.

MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges (CC BY-SA 3.0);
Fashion-MNIST by Zalando Research (MIT licence).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import urllib.error
import urllib.request
from importlib import resources

import numpy as np

from .._files import atomic_write_bytes

SAMPLE_FILE = "mnist_sample.npz"

# name: (mirrors, {file: sha256})
SOURCES = {
    "mnist": (
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
    "fashion-mnist": (
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
            "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
            "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
            "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
        },
    ),
}

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class DataError(ValueError):
    """A data file is missing, truncated, corrupted or of the wrong format."""


def load_mnist_sample() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The bundled 5,000 real MNIST digits (500 per class): ``(x_train, y_train), (x_test, y_test)``.

    Images are uint8 (N, 28, 28), labels uint8 (N,). The split is fixed and stratified:
    4,000 training images (400 per digit) and 1,000 test images (100 per digit), each stored in a
    fixed shuffled order, so a prefix such as ``x_train[:500]`` holds every digit in about equal numbers.
    """
    with resources.files(__package__).joinpath("data", SAMPLE_FILE).open("rb") as handle:
        with np.load(handle, allow_pickle=False) as data:
            return (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not): magic 0x0000 <type> <ndim>, ndim big-endian uint32 sizes, data."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: not a readable gzip/IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise DataError(f"{path}: wrong magic number {raw[:4].hex() or 'empty'}; expected 0000 <type> <ndim> of an IDX file")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header ({len(raw)} bytes, expected at least {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: {'truncated' if len(raw) < expected else 'trailing data'}: "
                        f"shape {shape} needs {expected} bytes, the file has {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist(root: str | os.PathLike, kind: str = "mnist", download: bool = False):
    """MNIST or Fashion-MNIST from the standard IDX files in ``root``.

    With ``download=True`` missing files are fetched from the dataset's public mirrors, checked
    against their SHA-256, and written atomically into ``root``. Returns
    ``(x_train, y_train), (x_test, y_test)`` as uint8 arrays.
    """
    if kind not in SOURCES:
        raise ValueError(f"load_mnist: kind must be one of {', '.join(SOURCES)}, got {kind!r}")
    root = pathlib.Path(root)
    mirrors, files = SOURCES[kind]
    paths = {}
    for name, digest in files.items():
        candidates = [root / name, root / name[:-3]]
        found = next((p for p in candidates if p.exists()), None)
        if found is None:
            if not download:
                raise DataError(f"load_mnist: {root / name} not found; pass download=True "
                                f"(xpcnn train --data {kind} downloads it) or put the IDX files in {root}")
            found = _download(mirrors, name, digest, root)
        paths[name] = found
    x_train, y_train = read_idx(paths["train-images-idx3-ubyte.gz"]), read_idx(paths["train-labels-idx1-ubyte.gz"])
    x_test, y_test = read_idx(paths["t10k-images-idx3-ubyte.gz"]), read_idx(paths["t10k-labels-idx1-ubyte.gz"])
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise DataError(f"load_mnist: images and labels in {root} do not match in number")
    return (x_train, y_train), (x_test, y_test)


def _download(mirrors, name: str, digest: str, root: pathlib.Path) -> pathlib.Path:
    """Fetch ``name`` from the first mirror that serves it with SHA-256 ``digest``; ``root`` is created (and the
    file written, atomically) only then, so a failed download leaves nothing behind."""
    errors = []
    for mirror in mirrors:
        try:
            with urllib.request.urlopen(mirror + name, timeout=60) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as exc:
            errors.append(f"{mirror}: {exc}")
            continue
        actual = hashlib.sha256(payload).hexdigest()
        if actual != digest:
            errors.append(f"{mirror}: SHA-256 {actual} does not match {digest}")
            continue
        root.mkdir(parents=True, exist_ok=True)
        return atomic_write_bytes(root / name, payload)
    raise DataError(f"could not download {name} (are you offline?): " + "; ".join(errors))
