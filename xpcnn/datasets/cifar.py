"""CIFAR-10 from its official binary version (no pickle is ever loaded), with a verified download.

CIFAR-10 is by Alex Krizhevsky, Vinod Nair and Geoffrey Hinton (Learning Multiple Layers of Features from
Tiny Images, 2009). The binary version holds ``data_batch_1.bin`` ... ``data_batch_5.bin`` (10,000 images
each) and ``test_batch.bin``: records of 3,073 bytes, one label byte (0-9) then the 32x32 image as
1,024 red, 1,024 green and 1,024 blue bytes, row-major: exactly (3, 32, 32) in channel-first order.
"""
from __future__ import annotations

import os
import pathlib
import tarfile

import numpy as np

from .._files import atomic_write_bytes
from .mnist import DataError, _download

CIFAR10_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"   # 170,052,171 bytes
CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = ("test_batch.bin",)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD_BYTES = 1 + 3 * 32 * 32


def read_cifar_binary(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One batch file of CIFAR-10's binary version: images uint8 (N, 3, 32, 32) and labels uint8 (N,)."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if not raw or len(raw) % RECORD_BYTES:
        raise DataError(f"{path}: {len(raw)} bytes is not a whole number of CIFAR-10 records of {RECORD_BYTES} "
                        "bytes (truncated, or not the binary version?)")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].copy()
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(f"{path}: record {int(bad[0])} has label {int(labels[bad[0]])}; CIFAR-10 labels are 0-9 "
                        "(is this CIFAR-100, or not the binary version?)")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def _folder(root: pathlib.Path) -> pathlib.Path | None:
    """Where the batch files are: ``root/cifar-10-batches-bin`` or ``root`` itself; None if neither has them all."""
    for folder in (root / CIFAR10_FOLDER, root):
        if all((folder / name).is_file() for name in CIFAR10_TRAIN + CIFAR10_TEST):
            return folder
    return None


def _extract(archive: pathlib.Path, root: pathlib.Path) -> pathlib.Path:
    """Write the six batch files of the archive into ``root/cifar-10-batches-bin`` (each atomically; nothing
    else in the archive is touched, so no member can write outside ``root``)."""
    wanted = {f"{CIFAR10_FOLDER}/{name}": name for name in CIFAR10_TRAIN + CIFAR10_TEST}
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    contents[wanted[member.name]] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: not a readable CIFAR-10 archive (truncated or corrupted?): {exc}") from None
    missing = sorted(set(wanted.values()) - set(contents))
    if missing:
        raise DataError(f"{archive}: the archive lacks {', '.join(missing)}; expected the binary version "
                        f"({CIFAR10_ARCHIVE}, folder {CIFAR10_FOLDER})")
    for name, payload in contents.items():          # every record checked before anything is written
        if len(payload) % RECORD_BYTES or not payload:
            raise DataError(f"{archive}: {name} has {len(payload)} bytes, not whole records of {RECORD_BYTES}")
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in contents.items():
        atomic_write_bytes(folder / name, payload)
    return folder


def load_cifar10(root: str | os.PathLike, download: bool = True):
    """CIFAR-10 from the binary batch files under ``root`` (in ``root/cifar-10-batches-bin`` or ``root``).

    When they are missing, ``root/cifar-10-binary.tar.gz`` is unpacked; with ``download=True`` a missing
    archive is first fetched from the dataset's page, checked against its SHA-256 and written
    atomically. Returns ``(x_train, y_train), (x_test, y_test)``: uint8 images (50000, 3, 32, 32) and
    (10000, 3, 32, 32), uint8 labels; class names are :data:`CIFAR10_CLASSES`.
    """
    root = pathlib.Path(root)
    folder = _folder(root)
    if folder is None:
        archive = root / CIFAR10_ARCHIVE
        if not archive.is_file():
            if not download:
                raise DataError(f"load_cifar10: no CIFAR-10 batch files or {CIFAR10_ARCHIVE} in {root}; pass "
                                f"download=True (xpcnn train --data cifar10 downloads it) or put the binary "
                                f"version's files there")
            archive = _download(CIFAR10_MIRRORS, CIFAR10_ARCHIVE, CIFAR10_SHA256, root)
        folder = _extract(archive, root)
    train = [read_cifar_binary(folder / name) for name in CIFAR10_TRAIN]
    x_test, y_test = read_cifar_binary(folder / CIFAR10_TEST[0])
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return (x_train, y_train), (x_test, y_test)


def write_cifar_binary(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray) -> pathlib.Path:
    """Write images uint8 (N, 3, 32, 32) and labels (N,) as one batch file of the binary version (atomically)."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.shape[1:] != (3, 32, 32) or labels.shape != (len(images),):
        raise ValueError(f"write_cifar_binary: expected uint8 images (N, 3, 32, 32) and labels (N,), got "
                         f"{images.dtype} {images.shape} and {labels.shape}")
    records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(images), -1)], axis=1)
    return atomic_write_bytes(pathlib.Path(path), records.tobytes())
