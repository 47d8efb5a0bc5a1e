"""Checkpoints: one ``.npz`` holding the architecture, weights and, optionally, the training state.

No pickle anywhere: arrays are stored as arrays and everything else as one JSON document
(``meta``), read back with ``allow_pickle=False``. Files are written to a temporary file beside
the target and renamed into place, so an interrupted save leaves the previous file intact.

Layout: ``meta`` (UTF-8 JSON as uint8), ``model.<key>`` (state_dict), ``optim.<i>.<name>``.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import layers as L
from . import optim as O
from .backend import Backend
from ._files import atomic_write_bytes
from .model import Sequential

FORMAT = "xpcnn-checkpoint"
VERSION = 1
LAYER_TYPES = {cls.__name__: cls for cls in (L.Conv2D, L.Dense, L.Flatten, L.MaxPool2D, L.AvgPool2D,
                                             L.GlobalAvgPool2D, L.ReLU, L.LeakyReLU, L.Sigmoid, L.Tanh, L.Softmax,
                                             L.Dropout, L.BatchNorm2D)}


class CheckpointError(ValueError):
    """A checkpoint cannot be read: truncated, corrupted, of another format version, or not fitting."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns; pass it to ``model.fit(..., resume=checkpoint)``."""

    model: Sequential
    optimizer: O.Optimizer | None = None
    scheduler: O.LRScheduler | None = None
    epoch: int = 0
    history: dict = field(default_factory=dict)
    data_rng_state: dict | None = None
    metadata: dict = field(default_factory=dict)


def save(model: Sequential, path: str | os.PathLike, *, optimizer: O.Optimizer | None = None,
         scheduler: O.LRScheduler | None = None, epoch: int | None = None, history: dict | None = None,
         data_rng_state: dict | None = None, metadata: dict | None = None) -> pathlib.Path:
    """Write ``model`` (and optionally its training state) to ``path`` atomically; returns the path."""
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    arrays = {f"model.{key}": value for key, value in model.state_dict().items()}
    meta: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "dtype": model.dtype,
        "layers": [{"type": type(layer).__name__, "config": layer.config()} for layer in model.layers],
        "model_rng": model.rng.bit_generator.state, "training": model.training,
        "epoch": epoch, "history": history or {}, "data_rng": data_rng_state, "metadata": metadata or {},
    }
    for layer in model.layers:
        if type(layer).__name__ not in LAYER_TYPES:
            raise CheckpointError(f"save: layer {layer!r} is not a built-in layer type and cannot be saved")
    if optimizer is not None:
        state = optimizer.state_dict()
        meta["optimizer"] = {"type": state["type"], "step": state["step"], "hyper": state["hyper"]}
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


def _read(path: pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        hint = f" (did you mean {path / 'checkpoint.npz'}?)" if (path / "checkpoint.npz").is_file() else ""
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file (.npz){hint}")
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


def load_checkpoint(path: str | os.PathLike, backend: str | Backend | None = None) -> Checkpoint:
    """Read a checkpoint onto ``backend`` (default: the current backend), whichever backend saved it."""
    path = pathlib.Path(path)
    meta, arrays = _read(path)
    try:
        layers = [LAYER_TYPES[spec["type"]](**spec["config"]) for spec in meta["layers"]]
        model = Sequential(layers, backend=backend, dtype=meta["dtype"])
        model.rng.bit_generator.state = meta["model_rng"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the architecture in the checkpoint cannot be rebuilt: {exc}") from None
    try:
        model.load_state_dict({key[len("model."):]: value for key, value in arrays.items() if key.startswith("model.")})
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model.train(bool(meta.get("training", True)))
    checkpoint = Checkpoint(model, epoch=int(meta.get("epoch") or 0), history=meta.get("history") or {},
                            data_rng_state=meta.get("data_rng"), metadata=meta.get("metadata") or {})
    if "optimizer" in meta:
        spec = meta["optimizer"]
        try:
            cls = {cls.__name__: cls for cls in O.OPTIMIZERS.values()}[spec["type"]]
            hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["hyper"].items()}
            checkpoint.optimizer = cls(model.parameters(), **hyper)
            checkpoint.optimizer.load_state_dict({
                "type": spec["type"], "step": spec["step"], "hyper": spec["hyper"],
                "state": {key[len("optim."):]: value for key, value in arrays.items() if key.startswith("optim.")}})
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: the optimizer state cannot be restored: {exc}") from None
    if "scheduler" in meta and checkpoint.optimizer is not None:
        spec = meta["scheduler"]
        try:
            checkpoint.scheduler = O.SCHEDULERS[spec["type"]](checkpoint.optimizer, **spec["config"])
            checkpoint.scheduler.load_state_dict(spec)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: the learning-rate schedule cannot be restored: {exc}") from None
    return checkpoint


def load(path: str | os.PathLike, backend: str | Backend | None = None) -> Sequential:
    """The model stored in a checkpoint, on ``backend``."""
    return load_checkpoint(path, backend).model
