"""The ``xpcnn`` command line: train, evaluate, predict, backends.

Every failure the user can cause (a wrong argument, a missing file, an unknown backend) is
one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import datetime
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
    """``sample`` (bundled), ``mnist`` / ``fashion-mnist`` (cached under ~/.cache/xpcnn), or a directory of IDX files."""
    from . import datasets

    if spec == "sample":
        return datasets.load_mnist_sample()
    if spec in datasets.SOURCES:
        root = pathlib.Path(os.environ.get("XPCNN_DATA", pathlib.Path.home() / ".cache" / "xpcnn")) / spec
        return datasets.load_mnist(root, kind=spec, download=download)
    path = pathlib.Path(spec)
    if not path.is_dir():
        raise CommandError(f"--data must be sample, mnist, fashion-mnist or a directory of IDX files; {spec!r} is none")
    return datasets.load_mnist(path)


def _prepare(images, labels, mean=None, std=None):
    from .datasets import images_to_float

    x, mean, std = images_to_float(images, mean, std)
    return x, np.asarray(labels, dtype=np.int64), mean, std


# ----------------------------------------------------------------------------- commands
def cmd_train(args) -> int:
    import xpcnn
    from . import optim
    from .datasets import random_shift
    from .models import MODELS
    from .train import EpochPrinter, MetricsLogger, ModelCheckpoint

    if args.epochs < 1:
        raise CommandError(f"--epochs must be at least 1, got {args.epochs}")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not args.lr > 0:
        raise CommandError(f"--lr must be positive, got {args.lr}")
    backend = xpcnn.set_backend(args.backend)
    (x_train, y_train), (x_test, y_test) = load_data(args.data, download=True)
    x_train, y_train, mean, std = _prepare(x_train, y_train)
    x_test, y_test, _, _ = _prepare(x_test, y_test, mean, std)
    out = pathlib.Path(args.out or pathlib.Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.npz"
    metadata = {"data": args.data, "input_mean": mean, "input_std": std, "image_shape": list(x_train.shape[1:]),
                "classes": [str(c) for c in range(10)]}

    if args.resume:
        checkpoint = xpcnn.load_checkpoint(args.resume, backend)
        model = checkpoint.model
        if checkpoint.optimizer is None:
            raise CommandError(f"{args.resume} holds no optimizer state; it cannot be resumed")
        optimizer, scheduler = checkpoint.optimizer, checkpoint.scheduler
        resume = checkpoint
        print(f"resuming {args.resume} after epoch {checkpoint.epoch}")
    else:
        channels, size = x_train.shape[1], x_train.shape[2]
        model = MODELS[args.model](in_channels=channels, image_size=size, seed=args.seed, backend=backend)
        optimizer = optim.OPTIMIZERS[args.optimizer](model.parameters(), lr=args.lr)
        scheduler = optim.CosineAnnealingLR(optimizer, T_max=args.epochs)
        resume = None
    if args.trace_first_batch:
        from .teach import trace
        print(trace(model, x_train[:min(args.batch_size, 4)], y_train[:min(args.batch_size, 4)]))
    print(f"training {args.model if not args.resume else 'checkpoint'} on {args.data} "
          f"({len(x_train)} train / {len(x_test)} test images) with backend {backend.name}, "
          f"{args.epochs} epochs, batch {args.batch_size}, {type(optimizer).__name__} lr {optimizer.lr:g}")
    augment = None if args.no_augment else (lambda xb, rng: random_shift(xb, rng, 2))
    callbacks = [EpochPrinter(), ModelCheckpoint(checkpoint_path, metadata), MetricsLogger(out / "metrics.csv")]
    try:
        history = model.fit(x_train, y_train, optimizer=optimizer, scheduler=scheduler, epochs=args.epochs,
                            batch_size=args.batch_size, validation_data=(x_test, y_test), seed=args.seed,
                            callbacks=callbacks, progress=not args.no_progress, augment=augment, resume=resume)
    except KeyboardInterrupt:
        print(f"\ninterrupted; the last complete epoch is saved in {checkpoint_path} "
              f"(resume with: xpcnn train --resume {checkpoint_path})", file=sys.stderr)
        return EXIT_INTERRUPTED
    scores = model.evaluate(x_test, y_test)
    print(f"test accuracy {scores['accuracy']:.4f}  test loss {scores['loss']:.4f}")
    print(f"checkpoint: {checkpoint_path}\nmetrics:    {out / 'metrics.csv'}")
    from .plots import plot_history
    picture = plot_history(history.history, out / "curves.png")
    print(f"curves:     {picture}" if picture else "curves:     skipped (install matplotlib for the PNG)")
    return 0


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


def read_image(path: pathlib.Path, shape: Sequence[int]) -> np.ndarray:
    """An image file as a (C, H, W) array with values 0-255: ``.npy`` as stored, ``.png`` via Pillow."""
    if not path.exists():
        raise CommandError(f"image not found: {path}")
    if path.suffix == ".npy":
        try:
            image = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise CommandError(f"{path}: not a readable .npy array ({exc})") from None
    elif path.suffix.lower() == ".png":
        try:
            from PIL import Image
        except ImportError:
            raise CommandError("reading PNG files needs Pillow: pip install pillow") from None
        try:
            with Image.open(path) as picture:
                picture = picture.convert("L")
                if picture.size != (shape[-1], shape[-2]):
                    picture = picture.resize((shape[-1], shape[-2]))
                image = np.asarray(picture)
        except OSError as exc:
            raise CommandError(f"{path}: not a readable PNG ({exc})") from None
    else:
        raise CommandError(f"{path}: expected a .png or .npy file")
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if tuple(image.shape) != tuple(shape):
        raise CommandError(f"{path}: expected an image of shape {tuple(shape)} (or {tuple(shape[1:])}), "
                           f"got {image.shape}")
    return image


def cmd_predict(args) -> int:
    import xpcnn
    from .functional import softmax_forward

    checkpoint = xpcnn.load_checkpoint(args.checkpoint, args.backend)
    meta = checkpoint.metadata
    shape = meta.get("image_shape", [1, 28, 28])
    classes = meta.get("classes", [str(c) for c in range(10)])
    images = np.stack([read_image(pathlib.Path(p), shape) for p in args.images])
    x, _, _, _ = _prepare(images, np.zeros(len(images)), meta.get("input_mean"), meta.get("input_std"))
    logits = checkpoint.model.predict(x)
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
    from . import viz

    checkpoint = xpcnn.load_checkpoint(args.checkpoint, args.backend)
    meta = checkpoint.metadata
    shape = meta.get("image_shape", [1, 28, 28])
    image = read_image(pathlib.Path(args.image), shape)
    x, _, _, _ = _prepare(image[None], np.zeros(1), meta.get("input_mean"), meta.get("input_std"))
    out = pathlib.Path(args.out)
    written = [viz.plot_filters(checkpoint.model, out / "filters.png")]
    written += viz.plot_feature_maps(checkpoint.model, x[0], out)
    if checkpoint.history:
        written.append(viz.plot_history(checkpoint.history, out / "curves.png"))
    written = [path for path in written if path is not None]
    if not written:
        raise CommandError("drawing PNGs needs matplotlib: pip install matplotlib")
    for path in written:
        print(path)
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .backend import BACKEND_NAMES
    from .models import MODELS
    from .optim import OPTIMIZERS

    parser = argparse.ArgumentParser(prog="xpcnn", description="Convolutional networks with hand-written "
                                     "backpropagation on NumPy, CuPy, PyTorch, JAX and array_api_strict.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser("train", help="train a network (default: LeNet on the bundled MNIST sample)")
    train.add_argument("--backend", default="numpy", choices=BACKEND_NAMES)
    train.add_argument("--model", default="lenet", choices=sorted(MODELS))
    train.add_argument("--epochs", type=int, default=12)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS))
    train.add_argument("--data", default="sample", help="sample (bundled), mnist, fashion-mnist, or a directory "
                       "of IDX files (mnist and fashion-mnist are downloaded to ~/.cache/xpcnn, or $XPCNN_DATA)")
    train.add_argument("--out", default=None, help="output directory (default runs/<timestamp>)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", default=None, metavar="CKPT", help="continue training from a checkpoint")
    train.add_argument("--no-augment", action="store_true", help="no random shifts of the training images")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--trace-first-batch", action="store_true",
                       help="before training, print every layer's forward and backward arrays for 4 images")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="accuracy of a checkpoint on a test set")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--data", default=None, help="default: the data the checkpoint was trained on")
    evaluate.add_argument("--backend", default="numpy", choices=BACKEND_NAMES)
    evaluate.set_defaults(run=cmd_evaluate)

    predict = commands.add_parser("predict", help="top-3 classes for images (.png or .npy)")
    predict.add_argument("checkpoint")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--backend", default="numpy", choices=BACKEND_NAMES)
    predict.set_defaults(run=cmd_predict)

    backends = commands.add_parser("backends", help="which backends are installed and usable")
    backends.set_defaults(run=cmd_backends)

    teach = commands.add_parser("teach", help="worked examples of forward and backward propagation")
    teach.add_argument("name", nargs="?", help="the example (see --list)")
    teach.add_argument("--list", action="store_true", help="list the examples")
    teach.add_argument("--backend", default="numpy", choices=BACKEND_NAMES)
    teach.add_argument("--lr", type=float, default=None, help="learning rate (where the example updates)")
    teach.add_argument("--steps", type=int, default=None, help="number of steps (optimizers)")
    teach.add_argument("--target", type=int, default=None, help="the target class (classification examples)")
    teach.add_argument("--mixup", action="store_true",
                       help="conv-relu-dense-softmax: read the loss off the other label, to see the classic mistake")
    teach.add_argument("--out", default=None, help="a PNG to write (optimizers)")
    teach.set_defaults(run=cmd_teach)

    viz = commands.add_parser("viz", help="PNGs of a checkpoint's filters, feature maps and training curves")
    viz.add_argument("checkpoint")
    viz.add_argument("image", help="an input image, .png or .npy")
    viz.add_argument("--out", default="viz", help="output directory (default viz/)")
    viz.add_argument("--backend", default="numpy", choices=BACKEND_NAMES)
    viz.set_defaults(run=cmd_viz)

    # listed for --help; main() hands "xpcnn bench ..." to the benchmark's own parser
    commands.add_parser("bench", help="benchmarks against PyTorch (see: xpcnn bench --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .backend import BackendUnavailable
    from .checkpoint import CheckpointError
    from .datasets import DataError
    from .train import TrainingDiverged

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after "bench" belongs to the benchmark's own parser
        from .bench import main as bench_main
        return bench_main([a for a in argv[1:] if a != "--"], default_out="bench-results")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, BackendUnavailable, CheckpointError, DataError, TrainingDiverged, ValueError, TypeError,
            OSError) as exc:
        print(f"xpcnn {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"xpcnn {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
