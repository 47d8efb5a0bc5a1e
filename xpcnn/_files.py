"""Atomic file writes."""
from __future__ import annotations

import os
import pathlib
import tempfile


def atomic_write_bytes(path: pathlib.Path, payload: bytes) -> pathlib.Path:
    """Write to a temporary file beside ``path``, then rename: a crash never leaves half a file."""
    path = pathlib.Path(path)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path
