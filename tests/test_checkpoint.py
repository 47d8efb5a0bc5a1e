import json

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


def test_a_checkpoint_written_with_a_one_element_buffer_still_loads(tmp_path):
    model = _bn_model()
    state = model.state_dict()
    state["1.num_batches_tracked"] = np.asarray([7])               # what xpcnn 0.1.0 wrote after load_state_dict
    model.load_state_dict(state)
    assert tuple(model.layers[1].num_batches_tracked.shape) == () and int(model.layers[1].num_batches_tracked) == 7


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
