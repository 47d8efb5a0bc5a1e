"""Checkpoint files: one ``.npz`` holding a model's architecture spec, its weights and, optionally, the
training state. This module reads and writes files; it does not build models: ``model`` (above it)
turns a spec into a ``Sequential`` (:func:`xpcnn.load`, :func:`xpcnn.load_checkpoint`), and the
training loop resumes from the plain state :func:`read` returns.

No pickle anywhere: arrays are stored as arrays and everything else as one JSON document
(``meta``), read back with ``allow_pickle=False``. Files are written to a temporary file beside
the target and renamed into place, so an interrupted save leaves the previous file intact.

Layout: ``meta`` (UTF-8 JSON as uint8), ``model.<key>`` (state_dict), ``optim.<i>.<name>``.

Weights alone go to ``.safetensors`` (:func:`save_weights`, :func:`read_weights`): the state dict under
PyTorch's key names, readable by PyTorch, JAX and the Hugging Face hub without running code, with the
architecture and the xpcnn version as JSON in the file's metadata.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import optim as O
from ._files import atomic_write_bytes
from ._version import __version__

FORMAT = "xpcnn-checkpoint"
VERSION = 1


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
    noise: dict | None = None  # the dropout RandomStream's state (None in files older than 0.2)


def save(model, path: str | os.PathLike, *, optimizer: O.Optimizer | None = None,
         scheduler: O.LRScheduler | None = None, epoch: int | None = None, history: dict | None = None,
         data_rng_state: dict | None = None, metadata: dict | None = None) -> pathlib.Path:
    """Write ``model`` (anything with ``spec()``, ``state_dict()``, ``rng`` and ``training``, as a
    Sequential has) and optionally its training state to ``path`` atomically; returns the path."""
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    spec = model.spec()
    arrays = {f"model.{key}": value for key, value in model.state_dict().items()}
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
    np.savez_compressed(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, buffer.getvalue())


def save_weights(model, path: str | os.PathLike) -> pathlib.Path:
    """Write ``model``'s state dict to a ``.safetensors`` file atomically, with ``{"format": "xpcnn",
    "xpcnn_version": ..., "architecture": <the spec as JSON>}`` as its metadata; returns the path."""
    from safetensors.numpy import save as encode

    path = pathlib.Path(path)
    spec = json.dumps(model.spec())                     # refuses an unregistered layer before anything is written
    tensors = {key: np.ascontiguousarray(value) for key, value in model.state_dict().items()}
    payload = encode(tensors, metadata={"format": "xpcnn", "xpcnn_version": __version__, "architecture": spec})
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, payload)


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
    except ValueError as exc:
        raise CheckpointError(f"{path}: the architecture in the file's metadata is damaged: {exc}") from None
    return spec, tensors


def _existing(path: pathlib.Path, suffix: str) -> pathlib.Path:
    """``path`` if it is a file; else the CheckpointError for a missing path or a folder."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        hint = f" (did you mean {path / 'checkpoint.npz'}?)" if (path / "checkpoint.npz").is_file() else ""
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file ({suffix}){hint}")
    return path


def _read(path: pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
    _existing(path, ".npz")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic[:2] != b"PK":           # every .npz is a zip archive
        kind = "a single NumPy array (.npy)" if magic == b"\x93NUM" else "not a zip archive"
        raise CheckpointError(f"{path}: not an xpcnn checkpoint: {kind}; expected the .npz written by "
                              "xpcnn train or model.save")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (Exception, MemoryError) as exc:  # any failure to parse an untrusted file is a corrupted checkpoint
        # (zipfile alone raises BadZipFile, NotImplementedError, struct.error, UnicodeDecodeError, ... on damage)
        raise CheckpointError(f"{path}: not a readable xpcnn checkpoint (truncated or corrupted?): "
                              f"{type(exc).__name__}: {exc}") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not an xpcnn checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's metadata is corrupted: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an xpcnn checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')!r}; this xpcnn reads "
                              f"version {VERSION} (a newer file needs a newer xpcnn)")
    return meta, arrays


def read(path: str | os.PathLike) -> SavedRun:
    """The contents of a checkpoint file, checked for format and version; nothing is built."""
    path = pathlib.Path(path)
    meta, arrays = _read(path)
    optimizer = None
    if "optimizer" in meta:
        optimizer = {**meta["optimizer"], "state": {key[len("optim."):]: value for key, value in arrays.items()
                                                    if key.startswith("optim.")}}
    try:
        spec = {"dtype": meta["dtype"], "layers": meta["layers"]}
        for key in ("dropout_rng", "input_shape"):
            if key in meta:
                spec[key] = meta[key]
        return SavedRun(path, spec,
                        {key[len("model."):]: value for key, value in arrays.items() if key.startswith("model.")},
                        meta["model_rng"], bool(meta.get("training", True)), int(meta.get("epoch") or 0),
                        meta.get("history") or {}, meta.get("data_rng"), meta.get("metadata") or {},
                        optimizer, meta.get("scheduler"), meta.get("noise"))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's metadata is incomplete: {exc}") from None


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
