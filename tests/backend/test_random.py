import contextlib
import types

import numpy as np

from xpcnn.backend import random as backend_random


def test_cupy_dropout_masks_come_from_philox_keyed_per_draw_and_resume_exactly(monkeypatch):
    """CuPy cannot run here: a stand-in module records what the CuPy branch calls. Each draw keys a cuRAND
    Philox4x3210 Generator with the stream's (seed, draw) key (the legacy RandomState, reseeded per mask,
    reran cuRAND's set-up each time: the stand-in has none), so a stream resumed at draw 1 draws what the
    uninterrupted one drew."""
    keys = []

    class Philox4x3210:
        def __init__(self, seed):
            keys.append(seed)
            self.seed = seed

    class Generator:
        def __init__(self, bit_generator):
            self.rng = np.random.Generator(np.random.Philox(key=bit_generator.seed))

        def random(self, shape, dtype):
            return self.rng.random(shape, dtype=dtype)

    fake = types.SimpleNamespace(float32=np.float32, random=types.SimpleNamespace(
        Generator=Generator, Philox4x3210=Philox4x3210))
    reference = types.SimpleNamespace(device=contextlib.nullcontext(), dtype=np.float32)
    monkeypatch.setattr(backend_random, "backend_of", lambda array: "cupy")
    monkeypatch.setattr(backend_random._compat, "device", lambda array: "gpu0")
    real_import = backend_random.importlib.import_module
    monkeypatch.setattr(backend_random.importlib, "import_module",
                        lambda name: fake if name == "cupy" else real_import(name))
    stream = backend_random.RandomStream(5)
    first, second = (stream.keep_mask((4, 6), 0.5, reference) for _ in range(2))
    assert keys == [backend_random._mix(5, 0), backend_random._mix(5, 1)] and first.dtype == np.float32
    resumed = backend_random.RandomStream(5)
    resumed.set_state(stream.state() | {"draws": 1})
    np.testing.assert_array_equal(resumed.keep_mask((4, 6), 0.5, reference), second)
    assert not np.array_equal(first, second)
