import numpy as np
import pytest

from xpcnn.backend import copy_to_host, on_gpu, staging_buffer, to_backend


def test_copy_to_host_fills_the_front_of_a_staging_buffer(backend):
    """The MPI path: a host buffer in the array's dtype, reused; each copy fills its first len(array) values."""
    values = to_backend(np.arange(5.0), backend, dtype="float32")
    buffer = staging_buffer(8, values)
    assert buffer.shape == (8,) and buffer.dtype == np.float32 and isinstance(buffer, np.ndarray)
    buffer[:] = -1
    view = copy_to_host(values, buffer)
    np.testing.assert_array_equal(view, np.arange(5.0, dtype=np.float32))
    np.testing.assert_array_equal(buffer[5:], -1)
    if backend.name != "jax":                        # JAX on a GPU or not, as it was installed
        assert on_gpu(values) == (backend.name in ("cupy", "torch:cuda"))


def test_cpu_tensors_get_ordinary_memory_and_are_not_on_a_gpu():
    torch = pytest.importorskip("torch")
    tensor = torch.zeros(3, dtype=torch.float64)
    assert not on_gpu(tensor) and staging_buffer(3, tensor).dtype == np.float64


def test_synchronize_array_waits_on_the_arrays_own_device(monkeypatch):
    """CuPy: the current stream of the array's device (entered as a context), before MPI reads its memory."""
    import sys
    import types
    from xpcnn.backend import transfer
    events = []

    class Device:
        def __enter__(self):
            events.append("enter device 1")

        def __exit__(self, *exc):
            events.append("exit device 1")

    stream = types.SimpleNamespace(synchronize=lambda: events.append("synchronize"))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        cuda=types.SimpleNamespace(get_current_stream=lambda: stream)))
    monkeypatch.setattr(transfer._compat, "is_cupy_array", lambda array: True)
    transfer.synchronize_array(types.SimpleNamespace(device=Device()))
    assert events == ["enter device 1", "synchronize", "exit device 1"]
    monkeypatch.undo()
    transfer.synchronize_array(np.zeros(3))                  # host memory: nothing to wait for
