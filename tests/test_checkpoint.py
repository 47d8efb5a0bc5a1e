import json

import numpy as np
import pytest

import xpcnn
from xpcnn import optim
from xpcnn.checkpoint import CheckpointError
from xpcnn.models import vgg_small


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
    with pytest.raises(CheckpointError, match="not a readable xpcnn checkpoint"):
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
