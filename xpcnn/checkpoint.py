"""Checkpoint files: one ``.npz`` holding a model's architecture spec, its weights and, optionally, the
training state. This module reads and writes files; it does not build models: :mod:`xpcnn.serialization`
(above it) turns a spec into a ``Sequential`` (:func:`xpcnn.load`, :func:`xpcnn.load_checkpoint`), and the
training loop resumes from the plain state :func:`read` returns.

No pickle anywhere: arrays are stored as arrays and everything else as one JSON document
(``meta``). Files are written to a temporary file beside the target and renamed into place, so an
interrupted save leaves the previous file intact; saving refuses weights that loading would refuse
(NaN or infinity).

Files are untrusted input: reading takes only the entries the format defines, checks every entry's
declared size against its header (and, given the model, against the shape it should have) before
decompressing it, bounds how deeply an architecture may nest layers (:data:`MAX_NESTING`), and
checks the types of the metadata; any failure is a :class:`CheckpointError`.

Layout: ``meta`` (UTF-8 JSON as uint8), ``model.<key>`` (state_dict), ``optim.<i>.<name>``.

Weights alone go to ``.safetensors`` (:func:`save_weights`, :func:`read_weights`): the state dict under
PyTorch's key names, readable by PyTorch, JAX and the Hugging Face hub without running code, with the
architecture and the xpcnn version as JSON in the file's metadata.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import pathlib
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import optim as O
from ._files import atomic_write_bytes, write_error
from ._version import __version__

FORMAT = "xpcnn-checkpoint"
VERSION = 1
MAX_NESTING = 64                  # layers inside containers inside ... that a file's architecture may nest
MAX_META_BYTES = 64 * 2**20       # the JSON document of a checkpoint
CHECKSUM_KEY = "xpcnn_sha256"     # metadata of a .safetensors file: SHA-256 of its tensors (see tensors_digest)
_ENTRY = re.compile(r"meta|model\..+|optim\.\d+\..+")   # the .npz entries the format defines (without ".npy")


class CheckpointError(ValueError):
    """A checkpoint cannot be read: truncated, corrupted, of another format version, or not fitting."""


@dataclass
class Checkpoint:
    """What :func:`xpcnn.load_checkpoint` returns; pass it to ``model.fit(..., resume=checkpoint)``."""

    model: Any
    optimizer: O.Optimizer | None = None
    scheduler: O.LRScheduler | None = None
    epoch: int = 0
    history: dict = field(default_factory=dict)
    data_rng_state: dict | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class SavedRun:
    """A checkpoint file's contents as plain data (:func:`read`): the spec and state to rebuild or resume from."""

    path: pathlib.Path
    spec: dict                 # {"dtype": ..., "dropout_rng": ..., "layers": [{"type": ..., "config": {...}}, ...]}
    model_state: dict          # the model's state_dict
    model_rng: dict
    training: bool
    epoch: int
    history: dict
    data_rng_state: dict | None
    metadata: dict
    optimizer: dict | None     # Optimizer.state_dict() form, or None
    scheduler: dict | None     # LRScheduler.state_dict() plus "config", or None
    noise: dict                # the dropout RandomStream's state (RandomStream.state())


def save(model, path: str | os.PathLike, *, optimizer: O.Optimizer | None = None,
         scheduler: O.LRScheduler | None = None, epoch: int | None = None, history: dict | None = None,
         data_rng_state: dict | None = None, metadata: dict | None = None) -> pathlib.Path:
    """Write ``model`` (anything with ``spec()``, ``state_dict()``, ``rng`` and ``training``, as a
    Sequential has) and optionally its training state to ``path`` atomically; returns the path."""
    path = target_path(path)
    spec = model.spec()
    state = model.state_dict()
    _refuse_nonfinite(state, path)
    arrays = {f"model.{key}": value for key, value in state.items()}
    meta: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, **spec,
        "model_rng": model.rng.bit_generator.state, "noise": model.noise.state(), "training": model.training,
        "epoch": epoch, "history": history or {}, "data_rng": data_rng_state, "metadata": metadata or {},
    }
    if optimizer is not None:
        state = optimizer.state_dict()
        meta["optimizer"] = {"type": state["type"], "step": state["step"], "hyper": state["hyper"],
                             "groups": state["groups"]}
        arrays.update({f"optim.{key}": value for key, value in state["state"].items()})
    if scheduler is not None:
        if type(scheduler).__name__ not in O.SCHEDULERS:
            raise CheckpointError(f"save: cannot save a {type(scheduler).__name__} schedule")
        meta["scheduler"] = {**scheduler.state_dict(), "config": scheduler.config()}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    # stored, not deflated: weights and optimizer moments are close to random bits (compression saves ~8 %
    # of a LeNet checkpoint and takes 20x as long: 0.15 s against 0.007 s, once per epoch of `xpcnn train`)
    np.savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def save_weights(model, path: str | os.PathLike) -> pathlib.Path:
    """Write ``model``'s state dict to a ``.safetensors`` file atomically, with ``{"format": "xpcnn",
    "xpcnn_version": ..., "architecture": <the spec as JSON>, "xpcnn_sha256": <tensors_digest>}`` as its
    metadata; returns the path."""
    from safetensors.numpy import save as encode

    path = target_path(path, suffix="")
    spec = json.dumps(model.spec())                     # refuses an unregistered layer before anything is written
    tensors = {key: np.ascontiguousarray(value).reshape(np.shape(value))     # 0-d stays 0-d, as torch saves it
               for key, value in model.state_dict().items()}
    _refuse_nonfinite(tensors, path)
    payload = encode(tensors, metadata={"format": "xpcnn", "xpcnn_version": __version__, "architecture": spec,
                                        CHECKSUM_KEY: tensors_digest(tensors)})
    return atomic_write_bytes(path, payload)


def target_path(path: str | os.PathLike, what: str = "save", suffix: str = ".npz") -> pathlib.Path:
    """The file a save to ``path`` writes: ``path`` with ``suffix`` added unless it ends in it (``""``: as it is);
    a path that names no file (``""``, ``"."``, None) is a ValueError."""
    if not isinstance(path, (str, os.PathLike)) or pathlib.Path(path).name in ("", ".", ".."):
        raise ValueError(f"{what}: path must name a file, such as model.npz or model.safetensors, got {path!r}")
    path = pathlib.Path(path)
    if not suffix or path.suffix == suffix:
        return path
    return path.with_suffix(path.suffix + suffix) if path.suffix else path.with_suffix(suffix)


def check_writable(path: str | os.PathLike, what: str = "save", suffix: str = ".npz") -> pathlib.Path:
    """Raise, as one line, the error a save to ``path`` would meet in its folder (not writable, a file where a
    folder should be, a folder at the target) without writing anything; returns the file a save writes.
    ``ModelCheckpoint`` calls it before the first epoch."""
    target = target_path(path, what, suffix)
    if target.is_dir():
        raise IsADirectoryError(f"{what}: cannot write {target}: it is a folder (expected a file name)")
    folder = target.parent.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent                  # the folders a save would create start at the first that exists
    if not folder.is_dir():
        raise NotADirectoryError(f"{what}: cannot write {target}: {folder} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".xpcnn-write-check-", dir=folder)
    except OSError as exc:
        raise write_error(target, exc, what) from None
    os.close(handle)
    os.unlink(probe)
    return target


def tensors_digest(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) of the names, dtypes, shapes and little-endian bytes of ``tensors``, in name order."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        value = np.asarray(tensors[key])
        value = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
        digest.update(f"{key}\0{value.dtype.name}\0{value.shape}\0".encode())
        digest.update(value.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _refuse_nonfinite(state: dict[str, np.ndarray], path: pathlib.Path) -> None:
    """Saving refuses what loading refuses: a parameter or buffer holding NaN or infinity (the file is not touched)."""
    for key, value in state.items():
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise CheckpointError(f"save: {key!r} holds NaN or infinity, so {path} was not written (xpcnn.load "
                                  "refuses such weights); the training diverged: lower the learning rate")


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors (as NumPy arrays) and the metadata of any ``.safetensors`` file, checked for damage."""
    from safetensors import safe_open

    path = _existing(pathlib.Path(path), ".safetensors")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:    # any failure to parse an untrusted file is a damaged file
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupted?): "
                              f"{type(exc).__name__}: {exc}".replace("\n", " ")) from None
    if CHECKSUM_KEY in metadata and metadata[CHECKSUM_KEY] != tensors_digest(tensors):
        raise CheckpointError(f"{path}: the tensors do not match the checksum stored with them: the file is "
                              "damaged; use an earlier copy")
    return tensors, metadata


def read_weights(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """The architecture spec and the state dict of a ``.safetensors`` file written by :func:`save_weights`."""
    tensors, metadata = read_tensors(path)
    if "architecture" not in metadata:
        raise CheckpointError(f"{path}: the safetensors file has no xpcnn architecture in its metadata (written by "
                              "another program?); build the model and call model.load_state_dict(tensors)")
    try:
        spec = json.loads(metadata["architecture"])
        if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list):
            raise ValueError("no list of layers")
    except RecursionError:
        raise CheckpointError(f"{path}: the architecture in the file's metadata nests too deeply to read") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: the architecture in the file's metadata is damaged: {exc}") from None
    _check_nesting(spec, path)
    return spec, tensors


def _check_nesting(spec: dict, path) -> None:
    """Refuse an architecture whose layers nest deeper than MAX_NESTING (walked without recursion)."""
    stack = [(spec, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            depth += "type" in node and "config" in node          # a layer's entry
            if depth > MAX_NESTING:
                raise CheckpointError(f"{path}: the architecture nests layers more than {MAX_NESTING} deep; "
                                      "not an architecture xpcnn writes")
            stack.extend((value, depth) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, depth) for value in node)


def _existing(path: pathlib.Path, suffix: str) -> pathlib.Path:
    """``path`` if it is a file; else the CheckpointError for a missing path or a folder."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        hint = f" (did you mean {path / 'checkpoint.npz'}?)" if (path / "checkpoint.npz").is_file() else ""
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file ({suffix}){hint}")
    return path


def _read(path: pathlib.Path, limits: Callable[[dict], dict[str, int]] | None = None
          ) -> tuple[dict, dict[str, np.ndarray]]:
    """The metadata and the arrays of a checkpoint file. Only the entries the format defines are read; each
    entry's declared size must be what its header describes, and ``limits(meta)`` (optional) gives the most
    elements each entry may hold, checked before anything is decompressed."""
    _existing(path, ".npz")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic[:2] != b"PK":           # every .npz is a zip archive
        kind = "a single NumPy array (.npy)" if magic == b"\x93NUM" else "not a zip archive"
        raise CheckpointError(f"{path}: not an xpcnn checkpoint: {kind}; expected the .npz written by "
                              "xpcnn train or model.save")
    with _damaged_file_errors(path), zipfile.ZipFile(path) as archive:
        entries = {info.filename[:-4]: info for info in archive.infolist()
                   if info.filename.endswith(".npy") and _ENTRY.fullmatch(info.filename[:-4])}
        headers = {name: _entry_header(archive, info) for name, info in entries.items()}
        if "meta" not in entries:
            raise CheckpointError(f"{path}: not an xpcnn checkpoint (no 'meta' entry)")
        shape, dtype, _ = headers["meta"]
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_META_BYTES:
            raise CheckpointError(f"{path}: not an xpcnn checkpoint ('meta' is {shape} of {dtype}, expected "
                                  f"at most {MAX_META_BYTES} bytes of JSON)")
        meta = _parse_meta(path, _entry_array(archive, entries["meta"], headers["meta"]))
    bounds = limits(meta) if limits is not None else {}    # outside: its own errors are not the file's damage
    arrays = {}
    with _damaged_file_errors(path), zipfile.ZipFile(path) as archive:
        for name, info in entries.items():
            if name == "meta":
                continue
            if limits is not None:
                _check_bound(path, name, headers[name][0], bounds)
            arrays[name] = _entry_array(archive, info, headers[name])
    return meta, arrays


@contextlib.contextmanager
def _damaged_file_errors(path: pathlib.Path):
    """Any failure to parse an untrusted file is a corrupted checkpoint (zipfile alone raises BadZipFile,
    NotImplementedError, struct.error, UnicodeDecodeError, ... on damage)."""
    try:
        yield
    except CheckpointError:
        raise
    except (Exception, MemoryError) as exc:
        raise CheckpointError(f"{path}: not a readable xpcnn checkpoint (truncated or corrupted?): "
                              f"{type(exc).__name__}: {exc}".replace("\n", " ")) from None


def _entry_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, header bytes) of one .npy entry, read from its first bytes; its dtype must be a plain
    number type and its declared uncompressed size exactly what the header describes."""
    with archive.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"entry {info.filename!r}: .npy format version {version} is not one numpy.savez writes")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(handle)
        header = handle.tell()
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.itemsize > 8 or fortran_order:
        raise ValueError(f"entry {info.filename!r} holds {dtype}{' (Fortran order)' if fortran_order else ''}; "
                         "checkpoints hold plain C-ordered numbers only")
    needed = header + math.prod(shape) * dtype.itemsize
    if info.file_size != needed:
        raise ValueError(f"entry {info.filename!r} declares {info.file_size} bytes, but its header describes "
                         f"{shape} of {dtype} ({needed} bytes)")
    return tuple(shape), dtype, header


def _entry_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, header: tuple) -> np.ndarray:
    """The array of one entry whose header was checked, read in bounded chunks (the zip CRC is checked)."""
    shape, dtype, skip = header
    flat = np.empty(math.prod(shape), dtype)
    chunk = max(1, 2**24 // dtype.itemsize)
    with archive.open(info) as handle:
        handle.read(skip)
        for start in range(0, flat.size, chunk):
            count = min(chunk, flat.size - start)
            data = handle.read(count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise ValueError(f"entry {info.filename!r} ends early")
            flat[start:start + count] = np.frombuffer(data, dtype=dtype)
        if handle.read(1):
            raise ValueError(f"entry {info.filename!r} is longer than its header says")
    return flat.reshape(shape)


def _check_bound(path: pathlib.Path, name: str, shape: tuple, bounds: dict[str, int]) -> None:
    """Refuse an entry the model has no place for, or that holds more elements than its place (nothing read)."""
    if name.startswith("optim."):
        index, _, state = name[len("optim."):].partition(".")
        key = "step" if state == "step" else f"optim.{index}"
    else:
        key = name
    if key != "step" and key not in bounds:
        raise CheckpointError(f"{path}: unexpected entry {name!r}: the model has no such "
                              f"{'parameter' if key.startswith('optim.') else 'parameter or buffer'}")
    limit = 1 if key == "step" else bounds[key]
    if math.prod(shape) > limit:
        raise CheckpointError(f"{path}: entry {name!r} holds {shape}, more than the {limit} values its place "
                              "in the model takes")


def _parse_meta(path: pathlib.Path, data: np.ndarray) -> dict:
    """The checked JSON document of a checkpoint."""
    try:
        meta = json.loads(data.tobytes().decode("utf-8"))
    except RecursionError:
        raise CheckpointError(f"{path}: the checkpoint's metadata nests too deeply to read") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's metadata is corrupted: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an xpcnn checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')!r}; this xpcnn reads "
                              f"version {VERSION} (a newer file needs a newer xpcnn)")
    _check_meta_types(path, meta)
    _check_nesting({"layers": meta.get("layers")}, path)
    return meta


_NONE = type(None)
_META_TYPES = {"dtype": (str,), "layers": (list,), "model_rng": (dict,), "training": (bool,), "epoch": (int, _NONE),
               "history": (dict,), "data_rng": (dict, _NONE), "metadata": (dict,), "noise": (dict,),
               "optimizer": (dict, _NONE), "scheduler": (dict, _NONE), "dropout_rng": (str,), "input_shape": (list, _NONE)}
_PARTS = {"optimizer": {"type": (str,), "hyper": (dict,), "groups": (list, _NONE), "step": (int,)},
          "scheduler": {"type": (str,), "config": (dict,)}}
_KIND_NAMES = {str: "a string", list: "a list", dict: "an object", bool: "true or false", int: "an integer",
               _NONE: "null"}


def _check_meta_types(path: pathlib.Path, meta: dict) -> None:
    """Each metadata field, when present, of the JSON type the format gives it (a crafted file is refused)."""
    def check(where: str, value, kinds: tuple) -> None:
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds) or (
                isinstance(value, int) and not isinstance(value, bool) and value < 0):
            expected = " or ".join(_KIND_NAMES[kind] for kind in kinds)
            raise CheckpointError(f"{path}: the checkpoint's metadata is damaged: {where} must be {expected}"
                                  f"{' >= 0' if int in kinds else ''}, got {json.dumps(value)[:60]}")

    for key, kinds in _META_TYPES.items():
        if key in meta:
            check(repr(key), meta[key], kinds)
    for key, parts in _PARTS.items():
        for part, kinds in parts.items():
            if isinstance(meta.get(key), dict) and part in meta[key]:
                check(f"{key!r}[{part!r}]", meta[key][part], kinds)
    for name, values in meta.get("history", {}).items():
        check(f"'history'[{name!r}]", values, (list,))


def state_shapes(model) -> tuple[dict[str, tuple], list[str]]:
    """The shapes of ``model``'s state dict and the keys of its parameters in order, without copying anything:
    what :func:`read` checks a file's entries against (``read(path, expected=lambda spec: state_shapes(model))``)."""
    shapes = {key: tuple(param.shape) for key, param in model.named_parameters()}
    params = list(shapes)
    shapes.update({key: tuple(value.shape) for key, value in model.named_buffers()})
    return shapes, params


def read(path: str | os.PathLike,
         expected: Callable[[dict], tuple[dict[str, tuple], list[str]]] | None = None) -> SavedRun:
    """The contents of a checkpoint file, checked for format, version and metadata types; nothing is built.

    ``expected(spec)``, when given, returns what the model of ``spec`` holds (:func:`state_shapes`): entries it
    has no place for, or larger than their place, are then refused before they are decompressed."""
    path = pathlib.Path(path)

    def limits(meta: dict) -> dict[str, int]:
        shapes, params = expected(_spec(path, meta))
        bounds = {f"model.{key}": math.prod(shape) for key, shape in shapes.items()}
        bounds.update({f"optim.{index}": math.prod(shapes[key]) for index, key in enumerate(params)})
        return bounds

    meta, arrays = _read(path, None if expected is None else limits)
    optimizer = None
    if meta.get("optimizer") is not None:
        optimizer = {**meta["optimizer"], "state": {key[len("optim."):]: value for key, value in arrays.items()
                                                    if key.startswith("optim.")}}
    try:
        return SavedRun(path, _spec(path, meta),
                        {key[len("model."):]: value for key, value in arrays.items() if key.startswith("model.")},
                        meta["model_rng"], meta.get("training", True), meta.get("epoch") or 0,
                        meta.get("history") or {}, meta.get("data_rng"), meta.get("metadata") or {},
                        optimizer, meta.get("scheduler"), meta["noise"])
    except KeyError as exc:
        raise CheckpointError(f"{path}: the checkpoint's metadata is incomplete: {exc}") from None


def _spec(path: pathlib.Path, meta: dict) -> dict:
    """The architecture spec stored in a checkpoint's metadata."""
    try:
        spec = {"dtype": meta["dtype"], "layers": meta["layers"]}
    except KeyError as exc:
        raise CheckpointError(f"{path}: the checkpoint's metadata is incomplete: {exc}") from None
    for key in ("dropout_rng", "input_shape"):
        if key in meta:
            spec[key] = meta[key]
    return spec


def restore_optimizer(saved: SavedRun, params) -> O.Optimizer | None:
    """The optimizer stored in ``saved``, built over ``params`` with its state, or None if none was saved."""
    if saved.optimizer is None:
        return None
    spec = saved.optimizer
    try:
        cls = {cls.__name__: cls for cls in O.OPTIMIZERS.values()}[spec["type"]]
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["hyper"].items()}
        params = list(params)
        groups = spec.get("groups")
        if groups and len(groups) > 1:
            params = [{**{k: tuple(v) if isinstance(v, list) else v for k, v in group.items() if k != "params"},
                       "params": [params[i] for i in group["params"]]} for group in groups]
        optimizer = cls(params, **hyper)
        optimizer.load_state_dict(spec)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{saved.path}: the optimizer state cannot be restored: {exc}") from None
    return optimizer


def restore_scheduler(saved: SavedRun, optimizer: O.Optimizer | None) -> O.LRScheduler | None:
    """The learning-rate schedule stored in ``saved``, driving ``optimizer``, or None."""
    if saved.scheduler is None or optimizer is None:
        return None
    spec = saved.scheduler
    try:
        scheduler = O.SCHEDULERS[spec["type"]](optimizer, **spec["config"])
        scheduler.load_state_dict(spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{saved.path}: the learning-rate schedule cannot be restored: {exc}") from None
    return scheduler
