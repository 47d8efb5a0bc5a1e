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
from typing import Sequence

import numpy as np

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """An error to report in one line."""


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
TRAIN_DEFAULTS = {"model": "lenet", "epochs": 12, "batch_size": 64, "lr": 2e-3, "optimizer": "adam",
                  "data": "sample", "seed": 0}


def _backend(name):
    """The --backend option, or $XPCNN_BACKEND when it is not given (then NumPy)."""
    from .backend import get_backend, resolve

    return resolve(name) if name is not None else get_backend()


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
    """The checkpoint named by --resume, and the run settings: the checkpoint's, overridden by the options given."""
    import xpcnn

    checkpoint = xpcnn.load_checkpoint(args.resume, backend)
    if checkpoint.optimizer is None:
        raise CommandError(f"--resume: {args.resume} holds no optimizer state; it cannot be resumed")
    settings = _settings(args, checkpoint.metadata.get("run", {}))
    if checkpoint.epoch >= settings["epochs"]:
        raise CommandError(f"--resume: {args.resume} has finished its {checkpoint.epoch} epochs; "
                           f"pass --epochs N with N > {checkpoint.epoch} to train longer")
    return checkpoint, settings


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
    from .train import MetricsLogger, ModelCheckpoint

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
    say(f"training {settings['model']} on {settings['data']} ({len(x_train)} train / {len(x_test)} test images) "
        f"with backend {backend.name}{processes}, {settings['epochs']} epochs, batch {settings['batch_size']}, "
        f"{type(optimizer).__name__} lr {optimizer.lr:g}")
    augment = None if args.no_augment else RandomShift(2)
    created = say is print and not out.exists()
    if say is print:
        out.mkdir(parents=True, exist_ok=True)
    callbacks = [ModelCheckpoint(checkpoint_path, metadata), MetricsLogger(out / "metrics.csv")]
    try:
        history = model.fit(x_train, y_train, optimizer=optimizer, scheduler=scheduler, epochs=settings["epochs"],
                            batch_size=settings["batch_size"], validation_data=(x_test, y_test),
                            seed=settings["seed"], callbacks=callbacks, progress=not args.no_progress,
                            augment=augment, resume=checkpoint, distributed=args.distributed)
    except BaseException as exc:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()                                   # a run stopped before its first epoch leaves nothing
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
    scores = model.evaluate(x_test, y_test)
    print(f"test accuracy {scores['accuracy']:.4f}  test loss {scores['loss']:.4f}")
    print(f"checkpoint: {checkpoint_path}\nmetrics:    {out / 'metrics.csv'}")
    from .plots import plot_history
    print(f"curves:     {plot_history(history.history, out / 'curves.png')}")
    return 0


def _silent(*args, **kwargs) -> None:
    """print on the processes of a distributed run other than rank 0."""


def cmd_evaluate(args) -> int:
    import xpcnn

    checkpoint = xpcnn.load_checkpoint(args.checkpoint, args.backend)
    data = args.data or checkpoint.metadata.get("data", "sample")
    _, (x_test, y_test) = load_data(data, download=False)
    meta = checkpoint.metadata
    x_test, y_test, _, _ = _prepare(x_test, y_test, meta.get("input_mean"), meta.get("input_std"))
    scores = checkpoint.model.evaluate(x_test, y_test)
    print(f"{args.checkpoint}: {len(x_test)} test images from {data}: accuracy {scores['accuracy']:.4f}  "
          f"loss {scores['loss']:.4f}")
    return 0


def cmd_export(args) -> int:
    import xpcnn

    if not args.onnx and not args.safetensors:
        raise CommandError("give --onnx OUT.onnx, --safetensors OUT.safetensors, or both")
    for option, path, suffix in (("--onnx", args.onnx, ".onnx"), ("--safetensors", args.safetensors, ".safetensors")):
        if path and not path.endswith(suffix):
            raise CommandError(f"{option}: expected a file name ending in {suffix}, got {path!r}")
    checkpoint = xpcnn.load_checkpoint(args.checkpoint, "numpy")
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
                picture = picture.convert("L" if shape[0] == 1 else "RGB")
                if picture.size != (shape[-1], shape[-2]):
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
    return image


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


def _images_for(checkpoint, paths: Sequence[str]) -> np.ndarray:
    """The images at ``paths``, read, converted to the training data's conventions (saying so), and normalised."""
    meta = checkpoint.metadata
    shape = meta.get("image_shape", [1, 28, 28])
    dark_background = meta.get("input_mean", 0.0) < 0.5      # MNIST's mean pixel is 0.13: dark background
    images = []
    for path in paths:
        image, notes = as_training_images(read_image(pathlib.Path(path), shape), dark_background)
        for note in notes:
            print(f"note: {path}: {note}", file=sys.stderr)
        images.append(image)
    x, _, _, _ = _prepare(np.stack(images) / 255.0, np.zeros(len(images)), meta.get("input_mean"),
                          meta.get("input_std"))
    return x


def cmd_predict(args) -> int:
    import xpcnn
    from .functional import softmax_forward

    checkpoint = xpcnn.load_checkpoint(args.checkpoint, args.backend)
    classes = checkpoint.metadata.get("classes", [str(c) for c in range(10)])
    logits = checkpoint.model.predict(_images_for(checkpoint, args.images))
    probabilities, _ = softmax_forward(logits.astype(np.float64))
    for path, row in zip(args.images, probabilities):
        top = np.argsort(-row)[:3]
        ranked = ", ".join(f"{classes[i]} ({row[i]:.3f})" for i in top)
        print(f"{path}: {ranked}")
    return 0


def cmd_backends(args) -> int:
    from .backend import describe

    rows = describe()
    headers = ("backend", "installed", "usable", "device", "version")
    table = [headers] + [tuple(row[h if h != "backend" else "name"] for h in headers) for row in rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(headers))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    for row in rows:
        if row["note"] and row["installed"] == "yes":
            print(f"  {row['name']}: {row['note']}")
    return 0


def cmd_teach(args) -> int:
    from .teach import EXAMPLES, run

    if args.list or not args.name:
        width = max(len(name) for name in EXAMPLES)
        for name, (description, _) in EXAMPLES.items():
            print(f"{name.ljust(width)}  {description}")
        return 0
    options = {"lr": args.lr, "steps": args.steps, "target": args.target, "out": args.out,
               "mixup": True if args.mixup else None}
    print(run(args.name, backend=args.backend, **options))
    return 0


def cmd_viz(args) -> int:
    import xpcnn
    from . import plots

    checkpoint = xpcnn.load_checkpoint(args.checkpoint, args.backend)
    x = _images_for(checkpoint, [args.image])
    out = pathlib.Path(args.out)
    written = [plots.plot_filters(checkpoint.model, out / "filters.png")]
    written += plots.plot_feature_maps(checkpoint.model, x[0], out)
    if checkpoint.history:
        written.append(plots.plot_history(checkpoint.history, out / "curves.png"))
    for path in written:
        print(path)
    return 0


# ----------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the mistake and where to read more, not the whole usage."""

    def error(self, message):
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

TRAIN_EPILOG = """\
resuming: --resume CKPT continues the run that wrote CKPT: its model, optimizer, learning-rate schedule,
data order, settings (epochs, batch size, data, seed) and output folder, unless an option says otherwise.
--epochs counts from the start of the run, so --epochs 20 on a checkpoint of epoch 12 trains 8 more; the
cosine schedule is then recomputed for the new length, lr(e) = lr0 (1 + cos(pi e / epochs)) / 2, so the
learning rate continues on the curve of a run planned for that many epochs instead of sitting at 0.
"""


def build_parser() -> argparse.ArgumentParser:
    from .backend import BACKEND_NAMES
    from .zoo import MODELS
    from .optim import OPTIMIZERS

    parser = _Parser(prog="xpcnn", description="Convolutional networks with hand-written "
                     "backpropagation on NumPy, CuPy, PyTorch, JAX and array_api_strict.")
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
    evaluate.add_argument("checkpoint", help="a .npz checkpoint written by xpcnn train or model.save")
    evaluate.add_argument("--data", default=None, help="default: the data the checkpoint was trained on")
    evaluate.add_argument("--backend", default=None, choices=BACKEND_NAMES, help=_BACKEND_HELP)
    evaluate.set_defaults(run=cmd_evaluate)

    export = commands.add_parser("export", help="a checkpoint as an ONNX graph and/or safetensors weights",
                                 formatter_class=_Help)
    export.add_argument("checkpoint", help="a .npz checkpoint written by xpcnn train or model.save")
    export.add_argument("--onnx", default=None, metavar="OUT.onnx",
                        help='the model in evaluation mode for ONNX Runtime (needs pip install "xpcnn[onnx]")')
    export.add_argument("--safetensors", default=None, metavar="OUT.safetensors",
                        help="the weights (PyTorch key names) with the architecture in the metadata")
    export.add_argument("--opset", type=positive_count, default=17, help="ONNX opset, 13 to 21")
    export.set_defaults(run=cmd_export)

    predict = commands.add_parser("predict", help="top-3 classes for images (any format Pillow reads, or .npy)",
                                  formatter_class=_Help)
    predict.add_argument("checkpoint", help="a .npz checkpoint")
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
    teach.add_argument("--mixup", action="store_true",
                       help="conv-relu-dense-softmax: read the loss off the other label, to see the classic mistake")
    teach.add_argument("--out", default=None, help="a PNG to write (optimizers)")
    teach.set_defaults(run=cmd_teach)

    viz = commands.add_parser("viz", help="PNGs of a checkpoint's filters, feature maps and training curves",
                              formatter_class=_Help)
    viz.add_argument("checkpoint", help="a .npz checkpoint")
    viz.add_argument("image", help="an input image (any format Pillow reads, or .npy)")
    viz.add_argument("--out", default="viz", help="output folder (default: viz)")
    viz.add_argument("--backend", default=None, choices=BACKEND_NAMES, help=_BACKEND_HELP)
    viz.set_defaults(run=cmd_viz)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .backend import BackendUnavailable
    from .checkpoint import CheckpointError
    from .datasets import DataError
    from .train import TrainingDiverged

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, BackendUnavailable, CheckpointError, DataError, TrainingDiverged, ValueError, TypeError,
            OSError, ImportError) as exc:
        print(f"xpcnn {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"xpcnn {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
