"""The ``xpcnn`` command line: train, evaluate, predict, export, teach, viz, backends.

Every failure the user can cause (a wrong argument, a missing file, an unknown backend) is
one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import pathlib
import sys
import warnings
from typing import Sequence

import numpy as np

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """An error to report in one line."""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _note(path, text: str) -> None:
    """A conversion made to an input, said on stderr."""
    print(f"note: {path}: {text}", file=sys.stderr)


def launched_processes() -> tuple[int, int]:
    """(rank, count) of the processes mpiexec started (MPICH's and Open MPI's variables); (0, 1) without it."""
    for rank, size in (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")):
        try:
            return int(os.environ.get(rank, "0")), int(os.environ[size])
        except (KeyError, ValueError):
            continue
    return 0, 1


# ----------------------------------------------------------------------------- data
def load_data(spec: str, download: bool = True):
    """``sample`` (bundled), ``mnist`` / ``fashion-mnist`` / ``cifar10`` (cached under ~/.cache/xpcnn), or a
    directory of IDX files."""
    from . import datasets

    if spec == "sample":
        return datasets.load_mnist_sample()
    root = pathlib.Path(os.environ.get("XPCNN_DATA", pathlib.Path.home() / ".cache" / "xpcnn")) / spec
    if spec in datasets.SOURCES:
        return datasets.load_mnist(root, kind=spec, download=download)
    if spec == "cifar10":
        return datasets.load_cifar10(root, download=download)
    path = pathlib.Path(spec)
    if not path.is_dir():
        raise CommandError(f"--data must be sample, mnist, fashion-mnist, cifar10 or a directory of IDX files; "
                           f"{spec!r} is none")
    return datasets.load_mnist(path)


def _class_names(data: str) -> list[str]:
    from .datasets import CIFAR10_CLASSES

    return list(CIFAR10_CLASSES) if data == "cifar10" else [str(c) for c in range(10)]


def _prepare(images, labels, mean=None, std=None):
    from .datasets import images_to_float

    x, mean, std = images_to_float(images, mean, std)
    return x, np.asarray(labels, dtype=np.int64), mean, std


# ----------------------------------------------------------------------------- commands
#: What `xpcnn train` uses when neither the command line nor a resumed checkpoint says otherwise.
TRAIN_DEFAULTS = {"model": "lenet", "epochs": 8, "batch_size": 64, "lr": 2e-3, "optimizer": "adam",
                  "data": "sample", "seed": 0}


def _backend(name):
    """The --backend option, or $XPCNN_BACKEND when it is not given (then NumPy); a bad variable is named."""
    from .backend import ENV_VAR, BackendUnavailable, get_backend, resolve

    if name is not None:
        return resolve(name)
    try:
        return get_backend()
    except (ValueError, BackendUnavailable) as exc:
        raise CommandError(f"${ENV_VAR}={os.environ.get(ENV_VAR)!r}: {exc}") from None


def open_checkpoint(path: str, backend):
    """The checkpoint at ``path``: an ``.npz`` checkpoint, or a ``.safetensors`` file that ``xpcnn.load`` reads
    (weights and architecture only: no optimizer, epoch, history or input statistics)."""
    import xpcnn
    from .checkpoint import Checkpoint

    if str(path).endswith(".safetensors"):
        return Checkpoint(xpcnn.load(path, backend))
    return xpcnn.load_checkpoint(path, backend)


def _input_statistics(checkpoint, path) -> tuple[float | None, float | None]:
    """The training data's mean and std that the checkpoint records; without them, the images' own (said so)."""
    mean, std = checkpoint.metadata.get("input_mean"), checkpoint.metadata.get("input_std")
    if mean is None or std is None:
        _note(path, "records no training mean and std (weights only); the images are standardised by their own")
    return mean, std


def _output_folder(args) -> pathlib.Path:
    """--out, the resumed checkpoint's own folder, or a new runs/<timestamp>; refused if it is a file."""
    if args.out:
        out = pathlib.Path(args.out)
    elif args.resume:
        out = pathlib.Path(args.resume).parent
    else:
        out = pathlib.Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out: {out} exists and is not a directory; choose a folder")
    return out


def _settings(args, saved: dict) -> dict:
    """Each run setting: the option given, else the resumed run's ``saved`` value, else TRAIN_DEFAULTS."""
    return {key: getattr(args, key) if getattr(args, key) is not None else saved.get(key, default)
            for key, default in TRAIN_DEFAULTS.items()}


def _resumed(args, backend):
    """The checkpoint named by --resume, and the settings of the run as it will train: the checkpoint's, with
    --epochs, --batch-size and --lr applied. The checkpoint fixes the model, optimizer, data and seed: an option
    that would change one of them is refused (all of them in one line)."""
    import xpcnn
    from .optim import OPTIMIZERS

    if str(args.resume).endswith(".safetensors"):
        raise CommandError(f"--resume: {args.resume} holds weights only (no optimizer state, epoch or data order), "
                           "so it cannot be resumed; resume from the run's checkpoint.npz")
    checkpoint = xpcnn.load_checkpoint(args.resume, backend)
    if checkpoint.optimizer is None:
        raise CommandError(f"--resume: {args.resume} holds no optimizer state; it cannot be resumed")
    saved = checkpoint.metadata.get("run", {})
    fixed = {"model": saved.get("model"), "seed": saved.get("seed"), "data": saved.get("data"),
             "optimizer": next((name for name, cls in OPTIMIZERS.items() if type(checkpoint.optimizer) is cls), None)}
    conflicts = [f"--{key} {getattr(args, key)} (the checkpoint's: {'not recorded' if value is None else value})"
                 for key, value in fixed.items() if getattr(args, key) is not None and getattr(args, key) != value
                 and not (key == "data" and value is None)]     # unrecorded data: the option says which
    if conflicts:
        raise CommandError(f"--resume: a resumed run keeps its model, optimizer, data and seed; "
                           f"{', '.join(conflicts)} cannot be applied (drop them, or start a new run without --resume)")
    settings = _settings(args, saved)
    settings.update({key: value for key, value in fixed.items() if key != "data"})
    if args.lr is not None:
        _set_base_lr(checkpoint.optimizer, checkpoint.scheduler, args.lr)
    scheduler = checkpoint.scheduler
    settings["lr"] = args.lr or (scheduler.base_lr if scheduler is not None else checkpoint.optimizer.defaults["lr"])
    if checkpoint.epoch >= settings["epochs"]:
        raise CommandError(f"--resume: {args.resume} has finished its {_plural(checkpoint.epoch, 'epoch')}; "
                           f"pass --epochs N with N > {checkpoint.epoch} to train longer")
    return checkpoint, settings


def _set_base_lr(optimizer, scheduler, lr: float) -> None:
    """--lr on a resumed run: the schedule's base learning rate (each group's scaled alike), or, without a
    schedule that computes the rate from the epoch, the optimizer's learning rate."""
    from .optim import LRScheduler

    if scheduler is not None and type(scheduler).lr_at is not LRScheduler.lr_at:
        scale = lr / scheduler.base_lr if scheduler.base_lr else None
        scheduler.base_lrs = [lr if scale is None else base * scale for base in scheduler.base_lrs]
        scheduler.base_lr = lr
        scheduler.apply()
        return
    optimizer.defaults["lr"] = lr
    for group in optimizer.param_groups:
        group["lr"] = lr


def _stretch_schedule(scheduler, epochs: int) -> str | None:
    """A cosine schedule made for fewer epochs is recomputed for ``epochs`` (see --help); returns what changed."""
    from .optim import CosineAnnealingLR

    if not isinstance(scheduler, CosineAnnealingLR) or scheduler.T_max == epochs:
        return None
    previous, scheduler.T_max = scheduler.T_max, epochs
    scheduler.apply()
    return (f"the cosine schedule now spans {epochs} epochs (was {previous}); "
            f"epoch {scheduler.epoch + 1} starts at lr {scheduler.optimizer.lr:.3g}")


def cmd_train(args) -> int:
    from . import optim
    from .datasets import RandomShift
    from .zoo import MODELS
    from .callbacks import ShareCores
    from .cores import CoreShare
    from .train import MetricsLogger, ModelCheckpoint

    share = None if args.distributed else CoreShare()   # measures other programs' load while the data loads
    backend = _backend(args.backend)
    say, processes = print, ""
    if args.distributed:
        from . import distributed
        threads = distributed.limit_threads(args.threads)
        processes = f", {distributed.size()} processes of {threads} thread{'s' if threads > 1 else ''} each"
        if not distributed.is_main():
            say = _silent                                  # rank 0 prints, shows progress and writes files
    elif args.threads is not None:
        raise CommandError("--threads goes with --distributed (one process uses every core)")
    checkpoint, settings = _resumed(args, backend) if args.resume else (None, _settings(args, {}))
    out = _output_folder(args)
    (x_train, y_train), (x_test, y_test) = load_data(settings["data"], download=True)
    x_train, y_train, mean, std = _prepare(x_train, y_train)
    x_test, y_test, _, _ = _prepare(x_test, y_test, mean, std)
    if checkpoint is not None:
        model, optimizer, scheduler = checkpoint.model, checkpoint.optimizer, checkpoint.scheduler
        stretched = _stretch_schedule(scheduler, settings["epochs"])
        say(f"resuming {args.resume} after epoch {checkpoint.epoch} of {settings['epochs']}"
              + (f"; {stretched}" if stretched else ""))
    else:
        channels, size = x_train.shape[1], x_train.shape[2]
        model = MODELS[settings["model"]](in_channels=channels, image_size=size, seed=settings["seed"], backend=backend)
        optimizer = optim.OPTIMIZERS[settings["optimizer"]](model.parameters(), lr=settings["lr"])
        scheduler = optim.CosineAnnealingLR(optimizer, T_max=settings["epochs"])
    checkpoint_path = out / "checkpoint.npz"
    metadata = {"data": settings["data"], "input_mean": mean, "input_std": std,
                "image_shape": list(x_train.shape[1:]), "classes": _class_names(settings["data"]), "run": settings}
    if args.trace_first_batch:
        from .teach import trace
        count = min(settings["batch_size"], 4)
        say(trace(model, x_train[:count], y_train[:count], optimizer=optimizer))
    name = settings["model"] or "the checkpoint's model"
    say(f"training {name} on {settings['data']} ({len(x_train)} train / {len(x_test)} test images) "
        f"with backend {backend.name}{processes}, {_plural(settings['epochs'], 'epoch')}, "
        f"batch {settings['batch_size']}, {type(optimizer).__name__} lr {optimizer.lr:g}")
    augment = None if args.no_augment else RandomShift(2)
    created = [folder for folder in (out, *out.parents) if not folder.exists()] if say is print else []
    if say is print:
        out.mkdir(parents=True, exist_ok=True)
    callbacks = [ModelCheckpoint(checkpoint_path, metadata), MetricsLogger(out / "metrics.csv")]
    if share is not None and backend.name in ("numpy", "torch", "array_api_strict"):
        callbacks.append(ShareCores(share))             # CPU backends: BLAS (and PyTorch) threads
    try:
        history = model.fit(x_train, y_train, optimizer=optimizer, scheduler=scheduler, epochs=settings["epochs"],
                            batch_size=settings["batch_size"], validation_data=(x_test, y_test),
                            seed=settings["seed"], callbacks=callbacks, progress=not args.no_progress,
                            augment=augment, resume=checkpoint, distributed=args.distributed)
    except BaseException as exc:
        for folder in created:                            # a run stopped before its first epoch leaves nothing
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if not isinstance(exc, KeyboardInterrupt):
            raise
        if checkpoint_path.exists():
            print(f"\ninterrupted; the last complete epoch is saved in {checkpoint_path} "
                  f"(resume with: xpcnn train --resume {checkpoint_path})", file=sys.stderr)
        else:
            print("\ninterrupted before the first epoch ended; nothing was saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    if say is not print:
        return 0
    # the last epoch ended by scoring these very weights on the test set (the validation data): no second pass
    print(f"test accuracy {history['val_accuracy'][-1]:.4f}  test loss {history['val_loss'][-1]:.4f}")
    print(f"checkpoint: {checkpoint_path}\nmetrics:    {out / 'metrics.csv'}")
    from .plots import plot_history
    curves = plot_history(history.history, out / "curves.png", title=f"{name} on {settings['data']}",
                          validation_label="test")        # the test set is the validation data above
    print(f"curves:     {curves}")
    return 0


def _silent(*args, **kwargs) -> None:
    """print on the processes of a distributed run other than rank 0."""


def cmd_evaluate(args) -> int:
    checkpoint = open_checkpoint(args.checkpoint, _backend(args.backend))
    data = args.data or checkpoint.metadata.get("data", "sample")
    _, (x_test, y_test) = load_data(data, download=False)
    x_test, y_test, _, _ = _prepare(x_test, y_test, *_input_statistics(checkpoint, args.checkpoint))
    scores = checkpoint.model.evaluate(x_test, y_test)
    print(f"{args.checkpoint}: {len(x_test)} test images from {data}: accuracy {scores['accuracy']:.4f}  "
          f"loss {scores['loss']:.4f}")
    return 0


def _check_output(option: str, path: str) -> None:
    """Refuse an output path that cannot be written, before any output is written."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise CommandError(f"{option}: {path} is a folder; expected a file name")
    folder = next(parent for parent in path.parents if parent.exists())   # where the missing folders would go
    if not folder.is_dir():
        raise CommandError(f"{option}: {folder} is a file, not a folder, so {path} cannot be written")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(f"{option}: cannot write into {folder} (permission denied), so {path} cannot be written")


def cmd_export(args) -> int:
    if not args.onnx and not args.safetensors:
        raise CommandError("give --onnx OUT.onnx, --safetensors OUT.safetensors, or both")
    for option, path, suffix in (("--onnx", args.onnx, ".onnx"), ("--safetensors", args.safetensors, ".safetensors")):
        if path and not path.endswith(suffix):
            raise CommandError(f"{option}: expected a file name ending in {suffix}, got {path!r}")
        if path:
            _check_output(option, path)
    checkpoint = open_checkpoint(args.checkpoint, "numpy")
    model = checkpoint.model
    if args.onnx:
        from .export import to_onnx
        shape = model.input_shape or checkpoint.metadata.get("image_shape")
        if shape is None:
            raise CommandError(f"{args.checkpoint}: the checkpoint does not record the input shape, so the ONNX "
                               "graph's input is unknown; export from Python with to_onnx(model, path, input_shape=...)")
        print(f"wrote {to_onnx(model, args.onnx, input_shape=tuple(shape), opset=args.opset)} "
              f"(input (batch, {', '.join(map(str, shape))}), opset {args.opset})")
    if args.safetensors:
        print(f"wrote {model.save(args.safetensors)}")
    return 0


def read_image(path: pathlib.Path, shape: Sequence[int]) -> np.ndarray:
    """An image file as a (C, H, W) array: ``.npy`` as stored, any other file through Pillow (PNG, JPEG, ...)."""
    if not path.exists():
        raise CommandError(f"image not found: {path}")
    if path.is_dir():
        raise CommandError(f"{path}: is a folder; expected an image file")
    if path.suffix.lower() == ".npy":
        if not path.read_bytes()[:6] == b"\x93NUMPY":
            raise CommandError(f"{path}: not a NumPy .npy file (no .npy header); save arrays with numpy.save")
        try:
            image = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise CommandError(f"{path}: not a readable .npy array of numbers ({exc})") from None
    else:
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError:
            raise CommandError("reading image files needs Pillow: pip install pillow") from None
        try:
            with Image.open(path) as picture:
                picture = _without_alpha(picture, path).convert("L" if shape[0] == 1 else "RGB")
                if picture.size != (shape[-1], shape[-2]):
                    _note(path, f"{picture.size[0]}x{picture.size[1]} pixels: resized to {shape[-1]}x{shape[-2]}, "
                          "the training images' size")
                    picture = picture.resize((shape[-1], shape[-2]))
                image = np.asarray(picture)
        except (UnidentifiedImageError, OSError) as exc:
            raise CommandError(f"{path}: not an image Pillow can read ({type(exc).__name__}); "
                               "expected a picture file (.png, .jpg, ...) or a .npy array") from None
        if image.ndim == 3:
            image = np.moveaxis(image, -1, 0)
    image = np.asarray(image)
    if image.dtype.kind not in "uif":
        raise CommandError(f"{path}: expected an array of numbers, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[None]
    if tuple(image.shape) != tuple(shape):
        raise CommandError(f"{path}: expected an image of shape {tuple(shape)} (or {tuple(shape[1:])}), "
                           f"got {image.shape}")
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:
        raise CommandError(f"{path}: {bad} of {image.size} pixel values are NaN or infinite; expected finite numbers")
    return image


def _without_alpha(picture, path):
    """A picture with transparency, composited onto the background its strokes stand out from: white under
    dark strokes (as a viewer shows a drawing), black under light ones; said on stderr."""
    if "A" not in picture.getbands() and "transparency" not in picture.info:
        return picture
    from PIL import Image

    rgba = np.asarray(picture.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:] / 255.0
    if alpha.min() == 1.0:
        return picture
    ink = float((rgba[..., :3].mean(axis=-1, keepdims=True) * alpha).sum() / max(float(alpha.sum()), 1e-12))
    background = 255.0 if ink < 127.5 else 0.0
    flat = rgba[..., :3] * alpha + background * (1.0 - alpha)
    _note(path, f"transparent pixels: composited onto {'white' if background else 'black'} "
          f"(the {'dark' if background else 'light'} strokes stand out from it)")
    return Image.fromarray(np.round(flat).astype(np.uint8), "RGB")


def as_training_images(image: np.ndarray, dark_background: bool) -> tuple[np.ndarray, list[str]]:
    """An image (C, H, W) on the 0-255 scale and with the training data's background, and what was changed.

    Two common mismatches are converted: floats in [0, 1] (scaled by 255), and a light background
    where the training images have a dark one (a black digit on white paper: inverted).
    """
    notes = []
    image = np.asarray(image, dtype=np.float64)
    if image.max() <= 1.0 and image.min() >= 0.0 and image.max() > 0:
        image = image * 255.0
        notes.append("values in [0, 1]: scaled to 0-255")
    border = np.concatenate([image[:, 0, :].ravel(), image[:, -1, :].ravel(), image[:, :, 0].ravel(),
                             image[:, :, -1].ravel()])
    if dark_background and border.mean() > 127.5:
        image = 255.0 - image
        notes.append("light background: inverted to a light digit on dark, as the training images are")
    return image, notes


def _images_for(checkpoint, source: str, paths: Sequence[str]) -> np.ndarray:
    """The images at ``paths``, read, converted to the conventions of the data the checkpoint read from
    ``source`` was trained on (saying so), and normalised."""
    meta = checkpoint.metadata
    shape = meta.get("image_shape") or checkpoint.model.input_shape or [1, 28, 28]
    dark_background = meta.get("input_mean", 0.0) < 0.5      # MNIST's mean pixel is 0.13: dark background
    images = []
    for path in paths:
        image, notes = as_training_images(read_image(pathlib.Path(path), shape), dark_background)
        for note in notes:
            _note(path, note)
        images.append(image)
    x, _, _, _ = _prepare(np.stack(images) / 255.0, np.zeros(len(images)), *_input_statistics(checkpoint, source))
    return x


def cmd_predict(args) -> int:
    from .functional import softmax_forward

    checkpoint = open_checkpoint(args.checkpoint, _backend(args.backend))
    classes = checkpoint.metadata.get("classes", [str(c) for c in range(10)])
    logits = checkpoint.model.predict(_images_for(checkpoint, args.checkpoint, args.images))
    probabilities, _ = softmax_forward(logits.astype(np.float64))
    for path, row in zip(args.images, probabilities):
        top = np.argsort(-row)[:3]
        ranked = ", ".join(f"{classes[i]} ({row[i]:.3f})" for i in top)
        print(f"{path}: {ranked}")
    return 0


def backend_rows() -> list[dict[str, str]]:
    """One row per backend for ``xpcnn backends``: installed?, usable?, device, version, and why not."""
    from .backend import BACKEND_NAMES, BackendUnavailable, resolve

    rows = []
    for name in BACKEND_NAMES[:-1]:                  # every name but "auto"
        row = {"name": name, "installed": "no", "usable": "no", "device": "-", "version": "-", "note": ""}
        try:
            backend = resolve(name)
            row.update(installed="yes", usable="yes", device=str(backend.device), version=backend.library_version)
        except BackendUnavailable as exc:
            message = str(exc)
            if "is not installed" not in message:
                row["installed"] = "yes"
            row["note"] = message
        rows.append(row)
    return rows


def cmd_backends(args) -> int:
    rows = backend_rows()
    headers = ("backend", "installed", "usable", "device", "version")
    table = [headers] + [tuple(row[h if h != "backend" else "name"] for h in headers) for row in rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(headers))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    for row in rows:
        if row["note"] and row["installed"] == "yes":
            print(f"  {row['name']}: {row['note']}")
    from . import cores

    kernels = cores.blas_kernels()
    if kernels:
        print(f"  numpy: OpenBLAS runs its {kernels} kernels with {cores.threads_in_force()} thread(s)")
        note = cores.blas_kernels_note(kernels)
        if note:
            print(f"  numpy: {note}")
    return 0


def cmd_teach(args) -> int:
    from .teach import EXAMPLES, run

    if args.list or not args.name:
        width = max(len(name) for name in EXAMPLES)
        for name, (description, _) in EXAMPLES.items():
            print(f"{name.ljust(width)}  {description}")
        return 0
    options = {"lr": args.lr, "steps": args.steps, "target": args.target, "out": args.out,
               "wrong_label": True if args.wrong_label else None}
    print(run(args.name, backend=args.backend, **options))
    return 0


def cmd_viz(args) -> int:
    from . import plots

    checkpoint = open_checkpoint(args.checkpoint, _backend(args.backend))
    x = _images_for(checkpoint, args.checkpoint, [args.image])
    out = pathlib.Path(args.out)
    written = [plots.plot_filters(checkpoint.model, out / "filters.png")]
    written += plots.plot_feature_maps(checkpoint.model, x[0], out)
    if checkpoint.history:
        run = checkpoint.metadata.get("run")                # xpcnn train validates on the test set
        title = f"{run.get('model') or 'model'} on {run.get('data')}" if run else None
        written.append(plots.plot_history(checkpoint.history, out / "curves.png", title=title,
                                          validation_label="test" if run else "validation"))
    for path in written:
        print(path)
    return 0


# ----------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the mistake and where to read more, not the whole usage."""

    def error(self, message):
        if launched_processes()[0] != 0:
            self.exit(2)                                  # under mpiexec, rank 0 says it once
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help that keeps the epilog's line breaks (each option's help states its default itself)."""


def _count(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
    return value


def positive_count(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _count(text, 1)


def non_negative_count(text: str) -> int:
    """An argparse type: an integer >= 0 (seeds)."""
    return _count(text, 0)


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0 (learning rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


_BACKEND_HELP = "array library to compute with (default: $XPCNN_BACKEND, else numpy)"
_CHECKPOINT_HELP = "a .npz checkpoint written by xpcnn train or model.save, or .safetensors weights"

TRAIN_EPILOG = """\
resuming: --resume CKPT continues the run that wrote CKPT: its model, optimizer, learning-rate schedule,
data order, settings (epochs, batch size, data, seed) and output folder. --epochs, --batch-size, --lr (the
schedule's base rate) and --out apply; --model, --optimizer, --data and --seed cannot change on a resumed run,
so one that differs from the checkpoint's is refused.
--epochs counts from the start of the run, so --epochs 20 on a checkpoint of epoch 12 trains 8 more; the
cosine schedule is then recomputed for the new length, lr(e) = lr0 (1 + cos(pi e / epochs)) / 2, so the
learning rate continues on the curve of a run planned for that many epochs instead of sitting at 0.
"""


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    from .backend import BACKEND_NAMES
    from .zoo import MODELS
    from .optim import OPTIMIZERS

    parser = _Parser(prog="xpcnn", description="Convolutional networks with hand-written "
                     "backpropagation on NumPy, CuPy, PyTorch, JAX and array_api_strict.")
    parser.add_argument("--version", action="version", version=f"xpcnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    train = commands.add_parser("train", help="train a network (default: LeNet on the bundled MNIST sample)",
                                formatter_class=_Help, epilog=TRAIN_EPILOG)
    d = TRAIN_DEFAULTS
    train.add_argument("--backend", default=None, choices=BACKEND_NAMES, help=_BACKEND_HELP)
    train.add_argument("--model", default=None, choices=sorted(MODELS), help=f"architecture (default: {d['model']})")
    train.add_argument("--epochs", type=positive_count, default=None,
                       help=f"total epochs of the run, counted from its start (default: {d['epochs']})")
    train.add_argument("--batch-size", type=positive_count, default=None,
                       help=f"images per training step (default: {d['batch_size']})")
    train.add_argument("--lr", type=positive_number, default=None,
                       help=f"initial learning rate, annealed to 0 by a cosine schedule (default: {d['lr']:g})")
    train.add_argument("--optimizer", default=None, choices=sorted(OPTIMIZERS), help=f"(default: {d['optimizer']})")
    train.add_argument("--data", default=None, help="sample (bundled), mnist, fashion-mnist, cifar10, or a "
                       "directory of IDX files (mnist, fashion-mnist and cifar10 are downloaded to ~/.cache/xpcnn, "
                       "or $XPCNN_DATA; use --model resnet8 or resnet20 for cifar10) "
                       f"(default: {d['data']})")
    train.add_argument("--out", default=None, help="output folder (default: runs/<timestamp>, or the resumed "
                       "checkpoint's folder)")
    train.add_argument("--seed", type=non_negative_count, default=None,
                       help=f"seed of the initial weights, data order, dropout and shifts (default: {d['seed']})")
    train.add_argument("--resume", default=None, metavar="CKPT", help="continue the run that wrote CKPT (see below)")
    train.add_argument("--no-augment", action="store_true", help="no random shifts of the training images")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over the processes of mpiexec (mpiexec -n 4 xpcnn train --distributed); "
                       "--batch-size is then the global batch; rank 0 prints and writes the files")
    train.add_argument("--threads", type=positive_count, default=None,
                       help="with --distributed: BLAS threads per process (default: the machine's cores divided by "
                       "the processes on it)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--trace-first-batch", action="store_true",
                       help="before training, print every layer's forward and backward arrays for 4 images "
                       "(training itself is unchanged)")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="accuracy of a checkpoint on a test set", formatter_class=_Help)
    evaluate.add_argument("checkpoint", help=_CHECKPOINT_HELP)
    evaluate.add_argument("--data", default=None, help="default: the data the checkpoint was trained on")
    evaluate.add_argument("--backend", default=None, choices=BACKEND_NAMES, help=_BACKEND_HELP)
    evaluate.set_defaults(run=cmd_evaluate)

    export = commands.add_parser("export", help="a checkpoint as an ONNX graph and/or safetensors weights",
                                 formatter_class=_Help)
    export.add_argument("checkpoint", help=_CHECKPOINT_HELP)
    export.add_argument("--onnx", default=None, metavar="OUT.onnx",
                        help='the model in evaluation mode for ONNX Runtime (needs pip install "xpcnn[onnx]")')
    export.add_argument("--safetensors", default=None, metavar="OUT.safetensors",
                        help="the weights (PyTorch key names) with the architecture in the metadata")
    export.add_argument("--opset", type=positive_count, default=17, help="ONNX opset, 13 to 21")
    export.set_defaults(run=cmd_export)

    predict = commands.add_parser("predict", help="top-3 classes for images (any format Pillow reads, or .npy)",
                                  formatter_class=_Help)
    predict.add_argument("checkpoint", help=_CHECKPOINT_HELP)
    predict.add_argument("images", nargs="+", help="image files: .png, .jpg, ... or .npy arrays (H, W) or (C, H, W)")
    predict.add_argument("--backend", default=None, choices=BACKEND_NAMES, help=_BACKEND_HELP)
    predict.set_defaults(run=cmd_predict)

    backends = commands.add_parser("backends", help="which backends are installed and usable")
    backends.set_defaults(run=cmd_backends)

    teach = commands.add_parser("teach", help="worked examples of forward and backward propagation",
                                formatter_class=_Help)
    teach.add_argument("name", nargs="?", help="the example (see --list)")
    teach.add_argument("--list", action="store_true", help="list the examples")
    teach.add_argument("--backend", default=None, choices=BACKEND_NAMES, help=_BACKEND_HELP)
    teach.add_argument("--lr", type=positive_number, default=None, help="learning rate (where the example updates)")
    teach.add_argument("--steps", type=positive_count, default=None, help="number of steps (optimizers)")
    teach.add_argument("--target", type=int, default=None, help="the target class (classification examples)")
    teach.add_argument("--wrong-label", action="store_true",
                       help="conv-relu-dense-softmax: read the loss off the other label, to see the classic mistake")
    teach.add_argument("--out", default=None, help="a PNG to write (optimizers)")
    teach.set_defaults(run=cmd_teach)

    viz = commands.add_parser("viz", help="PNGs of a checkpoint's filters, feature maps and training curves",
                              formatter_class=_Help)
    viz.add_argument("checkpoint", help=_CHECKPOINT_HELP)
    viz.add_argument("image", help="an input image (any format Pillow reads, or .npy)")
    viz.add_argument("--out", default="viz", help="output folder (default: viz)")
    viz.add_argument("--backend", default=None, choices=BACKEND_NAMES, help=_BACKEND_HELP)
    viz.set_defaults(run=cmd_viz)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from . import config
    from .backend import BackendUnavailable
    from .checkpoint import CheckpointError
    from .datasets import DataError
    from .train import TrainingDiverged

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    rank, processes = launched_processes()
    if args.command == "train" and processes > 1 and not args.distributed:
        if rank == 0:
            print(f"xpcnn train: error: started as {processes} processes (mpiexec) without --distributed: each would "
                  "train the whole run into the same folder; add --distributed, or run one process", file=sys.stderr)
        return EXIT_ERROR
    with warnings.catch_warnings():                       # restores showwarning afterwards
        warnings.showwarning = lambda message, *_, **__: print(
            f"xpcnn {args.command}: warning: {one_line(message)}", file=sys.stderr)
        try:
            config.get()                                  # a bad XPCNN_* variable, named in one line
            return args.run(args)
        except (CommandError, BackendUnavailable, CheckpointError, DataError, TrainingDiverged, ValueError,
                TypeError, OSError, ImportError) as exc:
            print(f"xpcnn {args.command}: error: {one_line(exc)}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print(f"xpcnn {args.command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


def one_line(message) -> str:
    """A message of several lines (a heading, then one problem a line) as one: the problems joined by "; "."""
    text = ""
    for line in (" ".join(line.split()) for line in str(message).splitlines()):
        if line:
            text += line if not text else (" " if text.endswith(":") else "; ") + line
    return text


if __name__ == "__main__":
    sys.exit(main())
