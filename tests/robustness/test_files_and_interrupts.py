"""Checkpoints survive crashes and hostile files; an interrupted fit resumes from the last complete epoch."""
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import xpcnn
from xpcnn import layers as L, optim
from xpcnn.checkpoint import CheckpointError
from xpcnn.train import ModelCheckpoint


def _model(seed=0):
    return xpcnn.Sequential([L.Conv2D(1, 2, 3), L.ReLU(), L.Flatten(), L.Dense(72, 3)], seed=seed, dtype="float64")


def test_a_save_killed_at_random_moments_never_leaves_a_broken_checkpoint(tmp_path):
    path = tmp_path / "model.npz"
    script = textwrap.dedent(f"""
        import numpy as np, xpcnn
        from xpcnn import layers as L
        model = xpcnn.Sequential([L.Flatten(), L.Dense(1500, 1500)], seed=0)
        value = 0
        while True:
            value += 1
            model.load_state_dict({{"1.weight": np.full((1500, 1500), value, np.float32),
                                    "1.bias": np.full(1500, value, np.float32)}})
            model.save({str(path)!r})
            print(value, flush=True)
    """)
    rng = np.random.default_rng(0)
    for attempt in range(4):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() != ""          # at least one complete save
        time.sleep(float(rng.uniform(0.0, 0.4)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        model = xpcnn.load(path)                              # always the last complete save, never a torn one
        weight = xpcnn.to_numpy(model.layers[1].weight.data)
        assert np.all(weight == weight.flat[0]) and weight.flat[0] >= 1
        assert np.all(xpcnn.to_numpy(model.layers[1].bias.data) == weight.flat[0])


def test_a_save_that_fails_leaves_the_previous_file_and_no_debris(tmp_path, monkeypatch):
    model = _model()
    path = model.save(tmp_path / "m.npz")
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr("xpcnn._files.os.replace", fail)
    with pytest.raises(OSError, match="no space left"):
        _model(seed=1).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_loading_never_runs_code_from_the_file(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    path = tmp_path / "evil.npz"
    meta = np.frombuffer(b'{"format": "xpcnn-checkpoint", "version": 1}', dtype=np.uint8)
    np.savez(path, meta=meta, **{"model.0.weight": np.array([Payload()], dtype=object)})
    with pytest.raises(CheckpointError, match="not a readable xpcnn checkpoint"):
        xpcnn.load(path)
    assert not marker.exists()


def test_every_single_byte_corruption_gives_a_clear_error_or_an_intact_model(tmp_path):
    model = _model()
    path = model.save(tmp_path / "m.npz", optimizer=optim.Adam(model.parameters()))
    original = path.read_bytes()
    expected = model.state_dict()
    outcomes = {"error": 0, "intact": 0}
    for position in range(0, len(original), max(1, len(original) // 150)):
        corrupted = bytearray(original)
        corrupted[position] ^= 0xFF
        path.write_bytes(bytes(corrupted))
        try:
            loaded = xpcnn.load_checkpoint(path)
        except CheckpointError as exc:
            assert str(path) in str(exc)
            outcomes["error"] += 1
            continue
        for key, value in loaded.model.state_dict().items():   # a flip in a field nobody reads
            np.testing.assert_array_equal(value, expected[key])
        outcomes["intact"] += 1
    assert outcomes["error"] > 0.5 * sum(outcomes.values())


def _run(epochs, path=None, resume=None, interrupt_at=None):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((60, 1, 8, 8)), rng.integers(0, 3, 60)
    model = _model(seed=4)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batches = [0]

    def augment(xb, generator):
        batches[0] += 1
        if batches[0] == interrupt_at:
            raise KeyboardInterrupt
        return xb + generator.normal(0, 0.01, xb.shape)

    model.fit(x, y, optimizer=opt, epochs=epochs, batch_size=20, seed=5, progress=False, augment=augment,
              callbacks=[ModelCheckpoint(path)] if path else [], resume=resume)
    return model


def test_an_interrupted_fit_resumes_from_the_last_complete_epoch(tmp_path):
    straight = _run(4)
    path = tmp_path / "ckpt.npz"
    with pytest.raises(KeyboardInterrupt):
        _run(4, path=path, interrupt_at=8)                   # batch 2 of epoch 3 (3 batches per epoch)
    assert xpcnn.load_checkpoint(path).epoch == 2
    resumed = _run(4, resume=path)
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)


def test_the_parts_killed_saves_left_are_removed_by_the_next_save_and_no_others(tmp_path):
    import fcntl
    import os
    path = tmp_path / "w.safetensors"
    script = textwrap.dedent(f"""
        import os, signal, xpcnn, xpcnn._files as files
        from xpcnn import layers as L
        files.os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)    # killed once the part is written
        xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0).save({str(path)!r})
    """)
    for _ in range(3):
        assert subprocess.run([sys.executable, "-c", script]).returncode == -signal.SIGKILL
    assert len(list(tmp_path.glob("w.safetensors.*.part"))) == 1      # each save removed the parts before it
    other = tmp_path / "w.safetensors.old.safetensors.abcd1234.part"      # another target's part
    other.write_bytes(b"x")
    live = tmp_path / "w.safetensors.live0000.part"                       # a writer still at work holds its lock
    live.write_bytes(b"x")
    for part in (other, live):
        os.utime(part, (time.time() - 3600,) * 2)
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        _model().save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["w.safetensors", other.name, live.name])
    xpcnn.load(path)
