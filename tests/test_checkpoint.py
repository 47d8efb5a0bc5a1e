import io
import json
import struct
import zipfile

import numpy as np
import pytest

import xpcnn
from xpcnn import optim
from xpcnn.checkpoint import CheckpointError
from xpcnn.zoo import vgg_small


def _saved(tmp_path, backend="numpy"):
    model = vgg_small(image_size=8, widths=(4,), seed=0, backend=backend)
    opt = optim.Adam(model.parameters(), lr=0.01)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    model.fit(x, np.array([0, 1, 2, 3]), optimizer=opt, epochs=1, batch_size=4, progress=False)
    path = model.save(tmp_path / "model.npz", optimizer=opt, epoch=1)
    return model, opt, path


def test_a_checkpoint_saved_on_one_backend_loads_on_another(backend, tmp_path):
    model, opt, path = _saved(tmp_path, backend="numpy")
    loaded = xpcnn.load_checkpoint(path, backend)
    assert loaded.model.backend.name == backend.name and loaded.epoch == 1
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.model.state_dict()[key], value, err_msg=key)
    assert loaded.optimizer.state_dict()["step"] == opt.state_dict()["step"]
    for key, value in opt.state_dict()["state"].items():
        np.testing.assert_array_equal(loaded.optimizer.state_dict()["state"][key], value, err_msg=key)
    x = np.ones((2, 3, 8, 8), np.float32)
    model.eval(), loaded.model.eval()
    expected = model(x)
    # float32 through conv layers on two BLAS libraries: rounding is relative to the logits' scale
    np.testing.assert_allclose(xpcnn.to_numpy(loaded.model(x)), expected, rtol=1e-5,
                               atol=1e-5 * float(np.abs(expected).max()))


def test_checkpoints_hold_no_pickle(tmp_path):
    _, _, path = _saved(tmp_path)
    with np.load(path, allow_pickle=False) as archive:
        assert all(archive[name].dtype != object for name in archive.files)


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    _, _, path = _saved(tmp_path)
    data = path.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match="not a readable xpcnn checkpoint|not an xpcnn checkpoint"):
            xpcnn.load(path)


@pytest.mark.parametrize("seed", range(8))
def test_a_flipped_byte_gives_a_clear_error(tmp_path, seed):
    _, _, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    position = int(rng.integers(0, len(data)))
    data[position] ^= 1 << int(rng.integers(0, 8))
    path.write_bytes(bytes(data))
    try:
        xpcnn.load_checkpoint(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
    # a flip in zip padding/metadata that no reader checks may still load; it must then be intact
    else:
        pytest.skip(f"flip at byte {position} touched nothing that is read")


def _rewrite_meta(path, change):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays["meta"].tobytes())
    change(meta, arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def test_wrong_version_and_wrong_shapes_are_explained(tmp_path):
    _, _, path = _saved(tmp_path)
    _rewrite_meta(path, lambda meta, arrays: meta.update(version=99))
    with pytest.raises(CheckpointError, match="format version 99; this xpcnn reads version 1"):
        xpcnn.load(path)
    _, _, path = _saved(tmp_path)
    _rewrite_meta(path, lambda meta, arrays: arrays.update({"model.0.weight": np.zeros((4, 3, 2, 2), np.float32)}))
    with pytest.raises(CheckpointError, match=r"'0.weight': expected shape \(4, 3, 3, 3\), got \(4, 3, 2, 2\)"):
        xpcnn.load(path)
    path.write_bytes(b"plain text, not a zip")
    with pytest.raises(CheckpointError, match="not an xpcnn checkpoint: not a zip archive"):
        xpcnn.load(path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        xpcnn.load(tmp_path / "absent.npz")


def test_a_checkpoint_needs_its_dropout_stream_and_0d_buffers_of_shape_nothing(tmp_path):
    _, _, path = _saved(tmp_path)
    _rewrite_meta(path, lambda meta, arrays: meta.pop("noise"))
    with pytest.raises(CheckpointError, match="the checkpoint's metadata is incomplete: 'noise'"):
        xpcnn.load(path)
    _, _, path = _saved(tmp_path)
    _rewrite_meta(path, lambda meta, arrays: meta.update(noise=None))
    with pytest.raises(CheckpointError, match="'noise' must be an object, got null"):
        xpcnn.load(path)
    model = _bn_model()
    state = model.state_dict()
    state["1.num_batches_tracked"] = np.asarray([7])
    with pytest.raises(ValueError, match=r"'1.num_batches_tracked': expected shape \(\), got \(1,\)"):
        model.load_state_dict(state)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, opt, path = _saved(tmp_path)
    before = path.read_bytes()

    import xpcnn._files
    real_fdopen = xpcnn._files.os.fdopen

    class Failing:
        def __init__(self, handle, mode):
            self.handle = real_fdopen(handle, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, payload):
            self.handle.write(payload[: len(payload) // 2])
            raise OSError("disk full")

    monkeypatch.setattr(xpcnn._files.os, "fdopen", Failing)
    with pytest.raises(OSError, match="disk full"):
        model.save(path, optimizer=opt)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    xpcnn.load(path)


def test_a_process_killed_mid_save_leaves_the_previous_checkpoint_readable(tmp_path):
    import signal
    import subprocess
    import sys
    import textwrap

    model, opt, path = _saved(tmp_path)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal, xpcnn, xpcnn._files as files
        model = xpcnn.load({str(path)!r})
        real = files.os.replace
        def die(*args):
            os.kill(os.getpid(), signal.SIGKILL)
        files.os.replace = die
        model.save({str(path)!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    xpcnn.load(path)


def _bn_model(backend="numpy"):
    from xpcnn import layers as L
    return xpcnn.Sequential([L.Conv2D(1, 2, 3), L.BatchNorm2D(2), L.ReLU(), L.Flatten(), L.Dense(2 * 4 * 4, 3)],
                            backend=backend, seed=0)


def test_every_array_keeps_its_shape_through_load_state_dict_save_and_load(backend, tmp_path):
    """The 0-d buffer num_batches_tracked once came back as (1,) and made every later checkpoint unreadable."""
    model = _bn_model(backend)
    shapes = {key: value.shape for key, value in model.state_dict().items()}
    assert shapes["1.num_batches_tracked"] == ()
    model.load_state_dict(model.state_dict())
    model.load_state_dict(model.state_dict())                      # twice, as loading a PyTorch state dict twice did
    assert {key: value.shape for key, value in model.state_dict().items()} == shapes
    assert tuple(model.layers[1].num_batches_tracked.shape) == ()
    path = model.save(tmp_path / "again.npz")
    again = xpcnn.load(path, backend=backend)
    assert {key: value.shape for key, value in again.state_dict().items()} == shapes


@pytest.mark.parametrize("path", ["resume", "early_stopping", "rollback"])
def test_resume_early_stopping_and_rollback_leave_checkpoints_that_load(tmp_path, path):
    from xpcnn import functional as F
    from xpcnn.train import EarlyStopping, TrainingDiverged
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((24, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, 24)
    model = _bn_model()
    optimizer = optim.Adam(model.parameters())
    if path == "resume":
        first = model.save(tmp_path / "first.npz", optimizer=optimizer, epoch=0)
        model.fit(x, y, optimizer=optimizer, epochs=2, resume=first, progress=False, verbose=0)
    elif path == "early_stopping":
        stopper = EarlyStopping(monitor="loss", patience=0, min_delta=1e9)   # never improves after epoch 1
        model.fit(x, y, optimizer=optimizer, epochs=3, progress=False, verbose=0, callbacks=[stopper])
        assert stopper.stopped_epoch == 2
    else:
        calls = []

        def loss(logits, labels):
            calls.append(1)
            value, grad = F.softmax_cross_entropy(logits, labels)
            return (value * float("nan") if len(calls) == 5 else value), grad

        with pytest.raises(TrainingDiverged):
            model.fit(x, y, optimizer=optimizer, loss=loss, epochs=3, batch_size=8, progress=False, verbose=0)
    reloaded = xpcnn.load(model.save(tmp_path / "after.npz"))
    assert reloaded.state_dict()["1.num_batches_tracked"].shape == ()


def test_optimizer_state_is_restored_on_each_parameters_own_device():
    strict = pytest.importorskip("array_api_strict")
    second = xpcnn.Backend("array_api_strict", strict, strict.Device("device1"))
    model = _bn_model(second)
    optimizer = optim.Adam(model.parameters())
    x, y = np.random.default_rng(1).standard_normal((6, 1, 6, 6)), np.array([0, 1, 2, 0, 1, 2])
    model.fit(x, y, optimizer=optimizer, progress=False, verbose=0)
    optimizer.load_state_dict(optimizer.state_dict())
    assert {str(state["exp_avg"].device) for state in optimizer.state} == {str(strict.Device("device1"))}
    model.fit(x, y, optimizer=optimizer, progress=False, verbose=0)     # "Arrays from two different devices" before


def test_to_backend_moves_an_array_between_devices_of_one_library():
    strict = pytest.importorskip("array_api_strict")
    second = xpcnn.Backend("array_api_strict", strict, strict.Device("device1"))
    array = strict.asarray([1.0, 2.0])
    moved = xpcnn.to_backend(array, second)
    assert moved.device == strict.Device("device1") and array.device != moved.device


def _tiny(seed=0):
    from xpcnn import layers as L
    return xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=seed)


@pytest.mark.parametrize("name", ["m.npz", "m.safetensors"])
def test_save_refuses_weights_that_load_refuses_and_leaves_the_previous_file(tmp_path, name):
    model = _tiny()
    path = model.save(tmp_path / name)
    before = path.read_bytes()
    model.layers[1].weight.data[1, 2] = np.inf
    with pytest.raises(CheckpointError, match=r"^save: '1.weight' holds NaN or infinity, so .*m\.\w+ was not written"):
        model.save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [name]


def _deep_spec_json(depth):
    # built as text: json.dumps itself would recurse too deeply
    return ('{"type": "Sequential", "config": {"layers": [' * depth + '{"type": "ReLU", "config": {}}'
            + ']}}' * depth)


@pytest.mark.parametrize("depth", [70, 600])
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_an_architecture_nested_too_deeply_is_a_checkpoint_error(tmp_path, depth, suffix):
    from safetensors.numpy import save_file
    path = tmp_path / f"deep{suffix}"
    layers = f"[{_deep_spec_json(depth)}]"
    if suffix == ".npz":
        _tiny().save(path)
        with np.load(path) as archive:
            arrays = dict(archive)
        meta = json.loads(arrays["meta"].tobytes())
        meta["layers"] = "LAYERS"
        text = json.dumps(meta).replace('"LAYERS"', layers)
        arrays["meta"] = np.frombuffer(text.encode(), dtype=np.uint8)
        np.savez(path, **arrays)
    else:
        save_file({"w": np.zeros(2, np.float32)}, str(path),
                  metadata={"architecture": f'{{"dtype": "float32", "layers": {layers}}}'})
    with pytest.raises(CheckpointError, match="nests (layers more than 64 deep|too deeply to read)"):
        xpcnn.load(path)


def _npy(shape, dtype="<f4", data=b""):
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue() + data


def _rezip(path, replace, declare):
    """Rewrite the .npz ``path`` with entries replaced or added (deflated), and the uncompressed sizes of the
    entries in ``declare`` patched in the local and central headers (a crafted file: nothing real is that big)."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    entries.update(replace)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    data = bytearray(out.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        offsets = {name: archive.getinfo(name).header_offset for name in declare}
    for name, size in declare.items():
        struct.pack_into("<I", data, offsets[name] + 22, size)            # local header
        position = data.find(b"PK\x01\x02")
        while data[position + 46:position + 46 + len(name)] != name.encode():
            position = data.find(b"PK\x01\x02", position + 1)
        struct.pack_into("<I", data, position + 24, size)                 # central directory
    path.write_bytes(bytes(data))


def test_a_foreign_entry_declaring_gigabytes_is_never_decompressed(tmp_path, monkeypatch):
    model = _tiny()
    path = model.save(tmp_path / "m.npz")
    junk = _npy((2**29,), data=bytes(2**20))                           # says 2 GiB of float32, stores 1 MiB of zeros
    _rezip(path, {"junk.npy": junk}, {"junk.npy": len(_npy((2**29,))) + 2**31})
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(
        getattr(name, "filename", name)) or real_open(self, name, *a, **k))
    loaded = xpcnn.load(path)
    assert "junk.npy" not in opened and "meta.npy" in opened
    np.testing.assert_array_equal(loaded.state_dict()["1.weight"], model.state_dict()["1.weight"])


@pytest.mark.parametrize("entry,shape,declared,pattern", [
    ("model.1.weight.npy", (2**28,), None, r"entry 'model.1.weight' holds \(268435456,\), more than the 12 values"),
    ("model.9.weight.npy", (2**28,), None, r"unexpected entry 'model.9.weight'"),
    ("optim.0.momentum_buffer.npy", (2**28,), None, r"entry 'optim.0.momentum_buffer' holds \(268435456,\)"),
    ("model.1.weight.npy", (3, 4), 2**31, r"declares 2147483648 bytes, but its header describes \(3, 4\)"),
])
def test_an_entry_is_checked_against_its_place_in_the_model_before_it_is_read(tmp_path, entry, shape, declared,
                                                                              pattern):
    model = _tiny()
    path = model.save(tmp_path / "m.npz", optimizer=optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    content = _npy(shape, data=bytes(2**16))
    header = len(_npy(shape))
    _rezip(path, {entry: content}, {entry: declared or header + 4 * int(np.prod(shape))})
    with pytest.raises(CheckpointError, match=pattern) as info:
        xpcnn.load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_a_flipped_byte_in_safetensors_tensors_is_detected_by_the_checksum(tmp_path):
    from safetensors.numpy import save_file
    model = _tiny()
    path = model.save(tmp_path / "w.safetensors")
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]                      # the tensors follow the JSON header
    for position in range(start, len(data), 7):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        path.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match="do not match the checksum stored with them"):
            xpcnn.load(path)
    # a file without the checksum (written by another program) loads without the check
    tensors = model.state_dict()
    save_file(tensors, str(path), metadata={"architecture": json.dumps(model.spec())})
    np.testing.assert_array_equal(xpcnn.load(path).state_dict()["1.weight"], tensors["1.weight"])


@pytest.mark.parametrize("key,value,pattern", [
    ("optimizer", "x", r"'optimizer' must be an object or null, got \"x\""),
    ("training", "false", r"'training' must be true or false, got \"false\""),
    ("history", [1, 2], r"'history' must be an object, got \[1, 2\]"),
    ("history", {"loss": 3}, r"'history'\['loss'\] must be a list, got 3"),
    ("epoch", -1, r"'epoch' must be an integer or null >= 0, got -1"),
    ("epoch", True, r"'epoch' must be an integer or null >= 0, got true"),
    ("scheduler", {"type": "StepLR", "config": []}, r"'scheduler'\['config'\] must be an object"),
])
def test_crafted_metadata_of_the_wrong_type_is_a_checkpoint_error(tmp_path, key, value, pattern):
    model = _tiny()
    path = model.save(tmp_path / "m.npz", optimizer=optim.SGD(model.parameters(), lr=0.1), epoch=1)
    _rewrite_meta(path, lambda meta, arrays: meta.update({key: value}))
    with pytest.raises(CheckpointError, match=r"the checkpoint's metadata is damaged: " + pattern):
        xpcnn.load_checkpoint(path)


def _raiser(error):
    def fail(*args, **kwargs):
        raise error
    return fail


@pytest.mark.parametrize("name", ["m.npz", "m.safetensors"])
@pytest.mark.parametrize("case", ["disk full", "read-only folder", "folder at the target"])
def test_a_failed_save_is_one_line_naming_the_target_and_the_reason(tmp_path, monkeypatch, name, case):
    import errno
    import tempfile
    path = tmp_path / name
    if case == "disk full":
        monkeypatch.setattr("xpcnn._files.os.replace",
                            _raiser(OSError(errno.ENOSPC, "No space left on device", str(path) + ".x1y2z3w4.part")))
        expected = OSError, f"save: cannot write {path}: No space left on device"
    elif case == "read-only folder":                # (tests run as root, whom a chmod would not stop)
        monkeypatch.setattr(tempfile, "mkstemp",
                            _raiser(PermissionError(errno.EACCES, "Permission denied", str(path) + ".x1y2z3w4.part")))
        expected = PermissionError, f"save: cannot write {path}: Permission denied"
    else:
        path.mkdir()
        expected = IsADirectoryError, f"save: cannot write {path}: it is a folder (expected a file name)"
    with pytest.raises(expected[0]) as info:
        _tiny().save(path)
    assert str(info.value) == expected[1]
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ([name] if case == "folder at the target" else [])


@pytest.mark.parametrize("path", ["", ".", None])
def test_save_to_a_path_that_names_no_file_is_refused(tmp_path, path):
    with pytest.raises(ValueError, match=r"^save: path must name a file, such as model.npz"):
        _tiny().save(path)
    assert list(tmp_path.iterdir()) == []


def test_model_checkpoint_into_an_unwritable_folder_fails_before_the_first_epoch(tmp_path, monkeypatch):
    import errno
    import tempfile
    from xpcnn import functional as F
    from xpcnn.checkpoint import check_writable
    from xpcnn.train import ModelCheckpoint
    (tmp_path / "blocker").write_text("a file where a folder should be")
    batches = []

    def loss(logits, labels):
        batches.append(1)
        return F.softmax_cross_entropy(logits, labels)

    model = _tiny()
    x, y = np.zeros((4, 1, 2, 2), np.float32), np.zeros(4, int)
    with pytest.raises(NotADirectoryError, match=r"^ModelCheckpoint: cannot write .*blocker/ck-1\.npz: .*blocker is a file"):
        model.fit(x, y, optimizer="sgd", loss=loss, progress=False, verbose=0,
                  callbacks=[ModelCheckpoint(tmp_path / "blocker" / "ck-{epoch}.npz")])
    monkeypatch.setattr(tempfile, "mkstemp", _raiser(PermissionError(errno.EACCES, "Permission denied")))
    with pytest.raises(PermissionError, match=r"^ModelCheckpoint: cannot write .*runs/ck\.npz: Permission denied$"):
        model.fit(x, y, optimizer="sgd", loss=loss, progress=False, verbose=0,
                  callbacks=[ModelCheckpoint(tmp_path / "runs" / "ck.npz")])
    assert batches == []
    monkeypatch.undo()
    assert check_writable(tmp_path / "runs" / "ck") == tmp_path / "runs" / "ck.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]          # checking wrote nothing
