import asyncio
import os
import subprocess
import sys
import threading

import pytest

import xpcnn
from xpcnn.backend import BACKEND_NAMES, BackendUnavailable, registry, resolve


@pytest.fixture
def restored_default(monkeypatch):
    """set_backend changes the process default: put it back after the test."""
    monkeypatch.setattr(registry, "_default", registry._default)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown backend 'numpi'; valid names are: numpy, cupy, torch"):
        xpcnn.set_backend("numpi")


def test_default_is_numpy_and_use_backend_restores():
    assert xpcnn.get_backend().name in BACKEND_NAMES
    before = xpcnn.get_backend()
    with xpcnn.use_backend("array_api_strict") as chosen:
        assert chosen.name == "array_api_strict"
        assert xpcnn.get_backend() is chosen
    assert xpcnn.get_backend() is before


def test_use_backend_applies_to_its_own_thread_only():
    """Two threads inside use_backend blocks at once each see their own backend; the main thread its own."""
    both_inside, seen = threading.Barrier(2), {}

    def work(name):
        with xpcnn.use_backend(name):
            both_inside.wait(timeout=10)                 # the other thread has entered its block too
            seen[name] = xpcnn.get_backend().name
            both_inside.wait(timeout=10)

    main = xpcnn.get_backend()
    threads = [threading.Thread(target=work, args=(name,)) for name in ("numpy", "array_api_strict")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"numpy": "numpy", "array_api_strict": "array_api_strict"}
    assert xpcnn.get_backend() is main


def test_use_backend_applies_to_its_own_asyncio_task_only():
    async def work(name, inside, read):
        mine, other = (0, 1) if name == "numpy" else (1, 0)
        with xpcnn.use_backend(name):
            inside[mine].set()
            await inside[other].wait()                   # the other task has entered its block too
            seen = xpcnn.get_backend().name
            read[mine].set()
            await read[other].wait()                     # ... and stays in it until both have looked
            return seen

    async def both():
        inside, read = (asyncio.Event(), asyncio.Event()), (asyncio.Event(), asyncio.Event())
        return await asyncio.gather(work("numpy", inside, read), work("array_api_strict", inside, read))

    assert asyncio.run(both()) == ["numpy", "array_api_strict"]


def test_set_backend_sets_the_default_of_every_thread(restored_default):
    xpcnn.set_backend("array_api_strict")
    seen = []
    worker = threading.Thread(target=lambda: seen.append(xpcnn.get_backend().name))
    worker.start()
    worker.join()
    assert seen == ["array_api_strict"] and xpcnn.get_backend().name == "array_api_strict"


def test_set_backend_inside_a_block_changes_the_default_not_the_block(restored_default):
    """As config.set inside config.using: the block keeps its backend, the new default holds after it."""
    xpcnn.set_backend("numpy")
    with xpcnn.use_backend("array_api_strict") as chosen:
        xpcnn.set_backend("numpy")
        assert xpcnn.get_backend() is chosen
        xpcnn.set_backend("array_api_strict")
    assert xpcnn.get_backend().name == "array_api_strict"


def test_environment_variable_selects_the_backend():
    code = "import xpcnn; print(xpcnn.get_backend().name)"
    env = dict(os.environ, XPCNN_BACKEND="array_api_strict")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "array_api_strict"


def test_missing_library_says_what_to_install(monkeypatch):
    import importlib

    real_import = importlib.import_module

    def fake_import(name, *args):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    monkeypatch.setattr(registry, "_cache", {})
    with pytest.raises(BackendUnavailable, match=r"'cupy' is not installed .*pip install 'xpcnn\[cuda12\]'"):
        resolve("cupy")


def test_auto_says_which_backend_it_chose():
    with pytest.warns(UserWarning, match=r"backend 'auto' chose '(cupy|numpy)'"):
        chosen = resolve("auto")
    assert chosen.name in ("cupy", "numpy")
