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

A ``using`` block applies to the thread (or asyncio task) that enters it; ``set`` changes the default
for every thread. This module imports nothing from xpcnn: it sits on the bottom floor beside ``backend``.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from typing import Iterator

_MIB = 2**20


@dataclasses.dataclass(frozen=True)
class Config:
    """The values in force; see the module's table. Every field is a positive number of bytes."""

    conv_workspace_bytes: int = 1024 * _MIB
    conv_block_bytes: int = 4 * _MIB
    conv_whole_bytes: int = 32 * _MIB

    def replaced(self, owner: str, **changes: int) -> "Config":
        """A copy with ``changes``, each checked (a positive int, the name a field)."""
        names = {f.name for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in names:
                raise TypeError(f"{owner}: unknown setting {name!r}; the settings are {', '.join(sorted(names))}")
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{owner}: {name} must be a positive number of bytes, got {value!r}")
        return dataclasses.replace(self, **changes)


def _from_environment() -> Config:
    changes = {}
    for name, variable in (("conv_workspace_bytes", "XPCNN_WORKSPACE_MB"), ("conv_block_bytes", "XPCNN_CONV_BLOCK_MB")):
        text = os.environ.get(variable)
        if text:
            try:
                changes[name] = int(float(text) * _MIB)
            except ValueError:
                raise ValueError(f"${variable} must be a number of MiB, got {text!r}") from None
    return Config().replaced("xpcnn.config (environment)", **changes)


_default = _from_environment()
_scoped: contextvars.ContextVar[Config | None] = contextvars.ContextVar("xpcnn_config", default=None)


def get() -> Config:
    """The settings in force here: the innermost ``using`` block's, else the default."""
    scoped = _scoped.get()
    return _default if scoped is None else scoped


def set(**changes: int) -> Config:  # noqa: A001 - the natural name, as in set_backend
    """Change the default settings (every thread without a ``using`` block); returns them."""
    global _default
    _default = _default.replaced("xpcnn.config.set", **changes)
    return _default


@contextlib.contextmanager
def using(**changes: int) -> Iterator[Config]:
    """``with xpcnn.config.using(conv_workspace_bytes=...):`` the settings changed for the block only."""
    token = _scoped.set(get().replaced("xpcnn.config.using", **changes))
    try:
        yield _scoped.get()
    finally:
        _scoped.reset(token)
