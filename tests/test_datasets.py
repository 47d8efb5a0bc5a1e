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


# ---------------------------------------------------------------------------- CIFAR-10 (binary version)
def _cifar_batches(count=3, seed=0):
    rng = np.random.default_rng(seed)
    return {name: (rng.integers(0, 256, (count, 3, 32, 32)).astype(np.uint8), rng.integers(0, 10, count).astype(np.uint8))
            for name in datasets.cifar.CIFAR10_TRAIN + datasets.cifar.CIFAR10_TEST}


def _cifar_archive(batches, drop=()):
    import io
    import tarfile
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, (images, labels) in batches.items():
            if name in drop:
                continue
            payload = np.concatenate([labels[:, None], images.reshape(len(images), -1)], axis=1).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        info = tarfile.TarInfo("../outside.txt")            # a member that must never be written
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    return buffer.getvalue()


def test_cifar_binary_records_are_label_then_channel_first_image(tmp_path):
    image = np.zeros((1, 3, 32, 32), np.uint8)
    image[0, 0, 0, 1], image[0, 1, 2, 3], image[0, 2, 31, 31] = 11, 22, 33
    path = tmp_path / "one.bin"
    record = bytearray(3073)
    record[0] = 7
    record[1 + 1] = 11                             # red plane, row 0, column 1
    record[1 + 1024 + 2 * 32 + 3] = 22             # green plane, row 2, column 3
    record[1 + 2048 + 31 * 32 + 31] = 33           # blue plane, last pixel
    path.write_bytes(bytes(record))
    images, labels = datasets.read_cifar_binary(path)
    np.testing.assert_array_equal(images, image)
    assert labels.tolist() == [7]
    datasets.write_cifar_binary(tmp_path / "again.bin", images, labels)
    assert (tmp_path / "again.bin").read_bytes() == bytes(record)


def test_load_cifar10_reads_the_batch_files_in_order(tmp_path):
    batches = _cifar_batches()
    for name, (images, labels) in batches.items():
        datasets.write_cifar_binary(tmp_path / name, images, labels)
    (x_train, y_train), (x_test, y_test) = datasets.load_cifar10(tmp_path, download=False)
    assert x_train.shape == (15, 3, 32, 32) and x_test.shape == (3, 3, 32, 32) and x_train.dtype == np.uint8
    np.testing.assert_array_equal(x_train[3:6], batches["data_batch_2.bin"][0])
    np.testing.assert_array_equal(y_test, batches["test_batch.bin"][1])


def test_load_cifar10_downloads_checks_and_unpacks_only_the_batch_files(tmp_path, monkeypatch):
    import hashlib
    import io
    batches = _cifar_batches(seed=1)
    payload = _cifar_archive(batches)

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    urls = []
    monkeypatch.setattr(datasets.mnist.urllib.request, "urlopen",
                        lambda url, timeout: urls.append(url) or Response(payload))
    root = tmp_path / "cifar"
    with pytest.raises(datasets.DataError, match="SHA-256 .* does not match"):
        datasets.load_cifar10(root)
    assert not root.exists()                              # no empty folder left behind
    monkeypatch.setattr(datasets.cifar, "CIFAR10_SHA256", hashlib.sha256(payload).hexdigest())
    (x_train, y_train), (x_test, _) = datasets.load_cifar10(root)
    assert urls[-1] == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    np.testing.assert_array_equal(x_test, batches["test_batch.bin"][0])
    np.testing.assert_array_equal(y_train[-3:], batches["data_batch_5.bin"][1])
    assert not (tmp_path / "outside.txt").exists()
    assert sorted(p.name for p in (root / "cifar-10-batches-bin").iterdir()) == sorted(batches)
    urls.clear()
    datasets.load_cifar10(root)                           # the second time reads the files, downloads nothing
    assert urls == []


def test_cifar10_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(datasets.DataError, match="no CIFAR-10 batch files or cifar-10-binary.tar.gz in .*download=True"):
        datasets.load_cifar10(tmp_path, download=False)
    (tmp_path / "short.bin").write_bytes(b"\x01" * 3000)
    with pytest.raises(datasets.DataError, match="3000 bytes is not a whole number of CIFAR-10 records of 3073"):
        datasets.read_cifar_binary(tmp_path / "short.bin")
    (tmp_path / "hundred.bin").write_bytes(bytes([57]) + bytes(3072))
    with pytest.raises(datasets.DataError, match="record 0 has label 57; CIFAR-10 labels are 0-9"):
        datasets.read_cifar_binary(tmp_path / "hundred.bin")
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(_cifar_archive(_cifar_batches(), drop=("test_batch.bin",)))
    with pytest.raises(datasets.DataError, match="the archive lacks test_batch.bin"):
        datasets.load_cifar10(tmp_path, download=False)
    assert not (tmp_path / "cifar-10-batches-bin").exists()
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(_cifar_archive(_cifar_batches())[:200])
    with pytest.raises(datasets.DataError, match="not a readable CIFAR-10 archive"):
        datasets.load_cifar10(tmp_path, download=False)
