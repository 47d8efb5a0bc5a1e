"""Random keep-masks (dropout) drawn on the array's own device by its library's generator, counter-based so
that a checkpoint stores two integers and a resumed run draws what an uninterrupted one draws."""
from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import array_api_compat as _compat

from .convert import backend_of
from .registry import like

_MASK64 = (1 << 64) - 1


def _mix(seed: int, counter: int) -> int:
    """A 64-bit key for draw ``counter`` of the stream ``seed`` (splitmix64's finaliser over both)."""
    z = (seed * 0x9E3779B97F4A7C15 + (counter + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class RandomStream:
    """Random keep-masks (dropout) drawn by the generator of the array's own library, on its device.

    Counter-based: draw ``k`` comes from a generator keyed by ``(seed, k)``, so the whole state is two
    integers (saved in checkpoints) and a resumed run draws what the uninterrupted run would have drawn.
    NumPy and array_api_strict draw with NumPy's Philox on the host; PyTorch with a ``torch.Generator``
    on the tensor's device; CuPy with a cuRAND Philox ``Generator``; JAX with ``jax.random`` keys. The same seed
    therefore gives the same masks on one backend, and different masks on different libraries.

    ``host=True`` draws every backend's masks with NumPy on the host and copies them over: identical
    on every backend (for teaching and cross-backend comparisons), at the price of one host-to-device
    copy per draw.
    """

    def __init__(self, seed: int, host: bool = False, draws: int = 0):
        self.seed, self.host, self.draws = int(seed) & _MASK64, bool(host), int(draws)
        self._engines: dict = {}

    def state(self) -> dict:
        return {"seed": self.seed, "draws": self.draws, "host": self.host}

    def split(self, number: int) -> "RandomStream":
        """The stream of worker ``number`` of a data-parallel run: this stream for 0, for the others an
        independent one keyed by (seed, number) far past any draw count, at the same draw count."""
        if number == 0:
            return self
        return RandomStream(_mix(self.seed, (1 << 62) + int(number)), host=self.host, draws=self.draws)

    def set_state(self, state: dict) -> None:
        self.seed, self.draws, self.host = int(state["seed"]) & _MASK64, int(state["draws"]), bool(state["host"])

    def keep_mask(self, shape: tuple, p: float, reference: Any) -> Any:
        """A 0/1 mask of ``shape`` (in ``reference``'s dtype, or bool), on its library and device: each value
        is 1 with probability ``1 - p`` (one generator call; on CUDA a single ``bernoulli_`` kernel)."""
        key = _mix(self.seed, self.draws)
        self.draws += 1
        shape = tuple(int(s) for s in shape)
        name = backend_of(reference)
        if self.host or name in ("numpy", "array_api_strict"):
            keep = np.random.Generator(np.random.Philox(key=key)).random(shape, dtype=np.float32) >= p
            return like(keep, reference)
        device = _compat.device(reference)
        if name in ("torch", "torch:cuda"):
            torch = importlib.import_module("torch")
            engine = self._engines.get(device)
            if engine is None:
                engine = self._engines[device] = torch.Generator(device=device)
            engine.manual_seed(key >> 1)                       # torch seeds are signed 64-bit
            if device.type == "cuda":                          # one fused kernel
                return torch.empty(shape, dtype=reference.dtype, device=device).bernoulli_(1.0 - p, generator=engine)
            # on CPUs bernoulli_ with a scalar probability is slow (1.2 against 0.45 ms for 64x3136 values)
            return torch.rand(shape, generator=engine, device=device) >= p
        if name == "cupy":
            return _cupy_keep(importlib.import_module("cupy"), key, shape, p, reference)
        if name == "jax":
            jax = importlib.import_module("jax")
            keep = jax.random.bernoulli(jax.random.key(key & 0xFFFFFFFF), 1.0 - p, shape)
            return jax.device_put(keep.astype(reference.dtype), device)
        raise TypeError(f"RandomStream: no generator for backend {name!r}")


def _cupy_keep(cupy, key: int, shape: tuple, p: float, reference: Any) -> Any:
    """CuPy's keep-mask for draw key ``key``: a Philox4x3210 generator keyed by it, as torch's Philox is seeded
    per draw. Philox is counter-based, so keying one sets each thread's counter in one light kernel; the
    legacy ``RandomState.seed`` reran cuRAND's generator set-up, milliseconds for every mask."""
    with reference.device:
        engine = cupy.random.Generator(cupy.random.Philox4x3210(key))
        return (engine.random(shape, dtype=cupy.float32) >= p).astype(reference.dtype)
