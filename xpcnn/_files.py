"""Atomic file writes."""
from __future__ import annotations

import os
import pathlib
import re
import tempfile
import time

try:
    import fcntl
except ImportError:        # Windows: an open file cannot be removed there, which protects a live writer instead
    fcntl = None


def write_error(path: pathlib.Path, exc: OSError, what: str = "save") -> OSError:
    """``exc`` (which may name a temporary file) as one line naming the target ``path`` and the reason."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, IsADirectoryError):
        reason = "it is a folder (expected a file name)"
    error = type(exc)(f"{what}: cannot write {path}: {reason}")
    error.errno = exc.errno
    return error


def remove_stale_parts(path: pathlib.Path, before: float) -> None:
    """Remove the temporary files an interrupted write to ``path`` left (its own name pattern only, last
    changed before ``before``, and not locked by a writer still running)."""
    pattern = re.compile(re.escape(path.name) + r"\.[A-Za-z0-9_]{8}\.part")
    try:
        candidates = [entry for entry in os.scandir(path.parent) if pattern.fullmatch(entry.name)]
    except OSError:
        return
    for entry in candidates:
        try:
            if entry.stat().st_mtime >= before:
                continue
            with open(entry.path, "rb") as handle:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)   # fails while its writer holds it
                os.unlink(entry.path)
        except OSError:
            continue


def atomic_write_bytes(path: pathlib.Path, payload: bytes, what: str = "save") -> pathlib.Path:
    """Write to a temporary file beside ``path``, then rename: a crash never leaves half a file. The folder
    is created when missing; temporary files of earlier interrupted writes to ``path`` are removed. A
    failure is one OSError naming ``path`` and the reason, and leaves any previous file as it was."""
    path = pathlib.Path(path)
    started = time.time()
    try:
        if path.is_dir():
            raise IsADirectoryError(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc, what) from None
    opened = False
    try:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)     # marks the file as being written (released when closed)
        remove_stale_parts(path, started)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        opened = True
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        if not opened:
            os.close(handle)
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise write_error(path, exc, what) from None
        raise
    return path
