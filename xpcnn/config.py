"""Scoped knobs of xpcnn's kernels, in one place: read from the environment once, changed for a block.

    >>> import xpcnn
    >>> xpcnn.config.get().conv_workspace_bytes          # 1 GiB, or $XPCNN_WORKSPACE_MB
    >>> with xpcnn.config.using(conv_workspace_bytes=64 * 2**20):
    ...     model.fit(...)                                 # convolutions keep their columns under 64 MiB

| knob | environment (read at import) | default | what it does |
|---|---|---|---|
| ``conv_workspace_bytes`` | ``XPCNN_WORKSPACE_MB`` | 1 GiB | cap on one conv call's column buffer, on any device: a larger batch is processed in blocks of samples |
| ``conv_block_bytes`` | ``XPCNN_CONV_BLOCK_MB`` | 4 MiB | on CPUs, the size of those blocks when the columns are not built whole |
| ``conv_whole_bytes`` | - | 32 MiB | on CPUs, columns up to this size are built whole and kept for the backward pass (glibc's mmap ceiling) |
| ``device_data_bytes`` | ``XPCNN_DEVICE_DATA_MB`` | 1 GiB | ``fit``/``evaluate`` copy a data set up to this size (in the model's dtype) to the device once and gather batches there |
| ``few_launches`` | ``XPCNN_FEW_LAUNCHES`` | ``"auto"`` | ``"auto"``: ops take their few-launch forms on GPUs and array_api_strict (see ``functional._launch.launch_bound``); ``"on"``/``"off"`` force them |
| ``winograd`` | ``XPCNN_WINOGRAD`` | ``"auto"`` | 3x3 stride-1 convolutions by Winograd's minimal filtering (``functional.winograd``): ``"auto"`` follows the measured rule on CPU libraries in float32 (F(4x4, 3x3) from 32 channels in and out on 16x16 and larger outputs, F(2x2, 3x3) from 128 channels on smaller ones), ``"on"`` forces F(2x2, 3x3), ``"off"`` never |
| ``prefetch_batches`` | - | 2 | a larger data set (or a host-only ``augment`` function) is batched on the host by a background thread this many batches ahead of the step; 0 turns the thread off |

On a CPU backend "the device" is main memory, so a data set under ``device_data_bytes`` costs at most one
cast copy; on a GPU it is GPU memory, which the budget keeps within bounds (lower it for large models).

A ``using`` block applies to the thread (or asyncio task) that enters it; ``set`` changes the default
for every thread. This module imports nothing from xpcnn: it sits on the bottom floor beside ``backend``.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import os
from typing import Iterator

_MIB = 2**20
_SWITCHES = {"few_launches": "XPCNN_FEW_LAUNCHES", "winograd": "XPCNN_WINOGRAD"}   # "auto" | "on" | "off"


@dataclasses.dataclass(frozen=True)
class Config:
    """The values in force; see the module's table. Every field is a positive int (bytes, or a count),
    except ``prefetch_batches`` (may be 0) and ``few_launches``, ``winograd`` ("auto", "on" or "off")."""

    conv_workspace_bytes: int = 1024 * _MIB
    conv_block_bytes: int = 4 * _MIB
    conv_whole_bytes: int = 32 * _MIB
    device_data_bytes: int = 1024 * _MIB
    prefetch_batches: int = 2
    few_launches: str = "auto"
    winograd: str = "auto"

    def replaced(self, owner: str, **changes) -> "Config":
        """A copy with ``changes``, each checked (a positive int, the name a field)."""
        names = {f.name for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in names:
                raise TypeError(f"{owner}: unknown setting {name!r}; the settings are {', '.join(sorted(names))}")
            if name in _SWITCHES:
                if value not in ("auto", "on", "off"):
                    raise ValueError(f"{owner}: {name} must be 'auto', 'on' or 'off', got {value!r}")
                continue
            least = 0 if name == "prefetch_batches" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                what = "a count >= 0" if least == 0 else "a positive number of bytes"
                raise ValueError(f"{owner}: {name} must be {what}, got {value!r}")
        return dataclasses.replace(self, **changes)


def _from_environment() -> Config:
    """The defaults with the environment's values; a bad value is a ValueError naming the variable."""
    changes = {}
    for name, variable in (("conv_workspace_bytes", "XPCNN_WORKSPACE_MB"), ("conv_block_bytes", "XPCNN_CONV_BLOCK_MB"),
                           ("device_data_bytes", "XPCNN_DEVICE_DATA_MB")):
        text = os.environ.get(variable)
        if text:
            try:
                mib = float(text)
            except ValueError:
                mib = math.nan
            if not (math.isfinite(mib) and mib * _MIB >= 1):
                raise ValueError(f"${variable} must be a positive finite number of MiB (such as 512), got {text!r}")
            changes[name] = int(mib * _MIB)
    for name, variable in _SWITCHES.items():
        text = os.environ.get(variable)
        if text:
            if text.strip().lower() not in ("auto", "on", "off"):
                raise ValueError(f"${variable} must be auto, on or off, got {text!r}")
            changes[name] = text.strip().lower()
    return Config().replaced("xpcnn.config (environment)", **changes)


# A bad variable does not stop `import xpcnn` (the command line reports it in one line): the first use
# of the settings raises its error instead.
try:
    _default: Config | None = _from_environment()
    _environment_error = ""
except ValueError as exc:
    _default, _environment_error = None, str(exc)
_scoped: contextvars.ContextVar[Config | None] = contextvars.ContextVar("xpcnn_config", default=None)


def get() -> Config:
    """The settings in force here: the innermost ``using`` block's, else the default. Raises ValueError
    (naming the variable) while an ``XPCNN_*`` environment variable holds a bad value."""
    scoped = _scoped.get()
    if scoped is not None:
        return scoped
    if _default is None:
        raise ValueError(_environment_error)
    return _default


def set(**changes) -> Config:  # noqa: A001 - the natural name, as in set_backend
    """Change the default settings (every thread without a ``using`` block); returns them."""
    global _default
    _default = get().replaced("xpcnn.config.set", **changes)
    return _default


@contextlib.contextmanager
def using(**changes) -> Iterator[Config]:
    """``with xpcnn.config.using(conv_workspace_bytes=...):`` the settings changed for the block only."""
    token = _scoped.set(get().replaced("xpcnn.config.using", **changes))
    try:
        yield _scoped.get()
    finally:
        _scoped.reset(token)
