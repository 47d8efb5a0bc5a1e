import gzip
import struct

import numpy as np
import pytest

from xpcnn import datasets


def _write_idx(path, array, type_code=0x08, compress=False):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def test_bundled_sample_is_stratified_real_mnist():
    (x_train, y_train), (x_test, y_test) = datasets.load_mnist_sample()
    assert x_train.shape == (4000, 28, 28) and x_test.shape == (1000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [400] * 10
    assert np.bincount(y_test).tolist() == [100] * 10
    assert x_train.max() == 255 and x_train.min() == 0
    assert 0.08 < x_train.mean() / 255 < 0.2          # MNIST's mean intensity is about 0.13


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reader_round_trip(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3)).astype(np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    np.testing.assert_array_equal(datasets.read_idx(_write_idx(tmp_path / "i", images, compress=compress)), images)
    np.testing.assert_array_equal(datasets.read_idx(_write_idx(tmp_path / "l", labels, compress=compress)), labels)
    floats = np.linspace(-1, 1, 6).reshape(2, 3)
    np.testing.assert_array_equal(datasets.read_idx(_write_idx(tmp_path / "f", floats, 0x0E)), floats)


def test_idx_reader_refuses_truncated_and_wrong_magic_files(tmp_path):
    path = _write_idx(tmp_path / "images", np.zeros((3, 4, 4), np.uint8))
    data = path.read_bytes()
    (tmp_path / "short").write_bytes(data[:-5])
    with pytest.raises(datasets.DataError, match=r"truncated: shape \(3, 4, 4\) needs 64 bytes, the file has 59"):
        datasets.read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x08\x03" + data[2:])
    with pytest.raises(datasets.DataError, match="wrong magic number 0803"):
        datasets.read_idx(tmp_path / "magic")
    (tmp_path / "header").write_bytes(data[:9])
    with pytest.raises(datasets.DataError, match="truncated header"):
        datasets.read_idx(tmp_path / "header")
    (tmp_path / "gz").write_bytes(gzip.compress(data)[:20])
    with pytest.raises(datasets.DataError, match="not a readable gzip/IDX file"):
        datasets.read_idx(tmp_path / "gz")
    with pytest.raises(datasets.DataError, match="IDX file not found"):
        datasets.read_idx(tmp_path / "nothing")


def test_load_mnist_reads_a_directory_and_explains_missing_files(tmp_path):
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), compress=True)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    (x_train, y_train), (x_test, y_test) = datasets.load_mnist(tmp_path)
    assert x_train.shape == (6, 28, 28) and y_test.shape == (4,)
    with pytest.raises(datasets.DataError, match="not found; pass download=True"):
        datasets.load_mnist(tmp_path / "empty")
    with pytest.raises(ValueError, match="kind must be one of mnist, fashion-mnist"):
        datasets.load_mnist(tmp_path, kind="cifar")


def test_download_checks_sha256_and_writes_atomically(tmp_path, monkeypatch):
    payload = b"pretend archive"
    import hashlib
    import io

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(datasets.mnist.urllib.request, "urlopen", lambda url, timeout: Response(payload))
    good = hashlib.sha256(payload).hexdigest()
    path = datasets.mnist._download(("https://mirror/",), "file.gz", good, tmp_path)
    assert path.read_bytes() == payload
    with pytest.raises(datasets.DataError, match="SHA-256 .* does not match"):
        datasets.mnist._download(("https://mirror/",), "other.gz", "0" * 64, tmp_path)
    assert not (tmp_path / "other.gz").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["file.gz"]

    def offline(url, timeout):
        raise datasets.mnist.urllib.error.URLError("no network")

    monkeypatch.setattr(datasets.mnist.urllib.request, "urlopen", offline)
    with pytest.raises(datasets.DataError, match=r"could not download third.gz \(are you offline\?\)"):
        datasets.mnist._download(("https://mirror/",), "third.gz", good, tmp_path)


def test_random_shift_moves_images_within_bounds():
    x = np.zeros((50, 1, 8, 8), np.float32)
    x[:, 0, 4, 4] = 1.0
    shifted = datasets.random_shift(x, np.random.default_rng(0), max_shift=2)
    rows, cols = np.nonzero(shifted[:, 0].sum(axis=0))
    assert shifted.shape == x.shape and shifted.sum() == 50
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(*np.nonzero(shifted[:, 0])[1:]))) > 5


def test_bundled_sample_is_stored_shuffled_so_a_prefix_holds_every_digit():
    (x_train, y_train), (x_test, y_test) = datasets.load_mnist_sample()
    assert np.bincount(y_train[:500], minlength=10).min() >= 30      # sorted by label, [:500] held only 0s and 1s
    assert np.bincount(y_test[:100], minlength=10).min() >= 3
    (again, labels), _ = datasets.load_mnist_sample()
    np.testing.assert_array_equal(labels, y_train)                   # the same fixed order on every call
