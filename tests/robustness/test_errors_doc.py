"""docs/errors.md quotes messages the code really produces: each quote is triggered here and compared."""
import pathlib
import re
import sys

import numpy as np
import pytest

import xpcnn
from xpcnn import datasets, functional as F, layers as L, optim
from xpcnn.backend import resolve

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUOTED = re.findall(r"^\| `([^`]+)`(?: / `([^`]+)`)?", (ROOT / "docs" / "errors.md").read_text(), flags=re.M)
MESSAGES = [m for pair in QUOTED for m in pair if m]


def _model():
    return xpcnn.Sequential([L.Conv2D(3, 16, 3, padding=1), L.Flatten(), L.Dense(3136, 128)], seed=0)


def _fit_labels(labels, x=None):
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 10)], seed=0)
    model.fit(np.zeros((6, 1, 2, 2)) if x is None else x, labels, optimizer=optim.SGD(model.parameters(), lr=0.1),
              progress=False)


def _diverge(tmp_path):
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0)
    calls = []

    def loss(logits, labels):
        calls.append(1)
        value, grad = F.softmax_cross_entropy(logits, labels)
        return (value * float("nan") if len(calls) == 36 else value), grad      # 12 batches an epoch

    model.fit(np.zeros((120, 1, 2, 2)), np.zeros(120, int), optimizer=optim.SGD(model.parameters(), lr=0.1),
              loss=loss, epochs=3, batch_size=10, progress=False)


def _checkpoint(tmp_path, version=None, damage=False):
    path = _model().save(tmp_path / "m.npz")
    if version is not None:
        import json
        with np.load(path) as archive:
            arrays = dict(archive)
        meta = json.loads(arrays["meta"].tobytes())
        meta["version"] = version
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez(path, **arrays)
    if damage:
        path.write_bytes(path.read_bytes()[:100])
    return path


def _optimizer_mismatch(tmp_path):
    from xpcnn import load_checkpoint
    model = _model()
    opt = optim.Adam(model.parameters())
    model.fit(np.zeros((2, 3, 14, 14)), np.array([0, 1]), optimizer=opt, progress=False)
    path = model.save(tmp_path / "o.npz", optimizer=opt)
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["optim.0.exp_avg"] = np.zeros((1, 1))
    np.savez(path, **arrays)
    load_checkpoint(path)


class _Custom(L.ReLU):
    """A user's layer type, not registered."""


def _idx(tmp_path, content):
    path = tmp_path / "f.idx"
    path.write_bytes(content)
    datasets.read_idx(path)


def _download_mismatch(tmp_path, monkeypatch, offline):
    import io
    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def urlopen(url, timeout):
        if offline:
            raise datasets.mnist.urllib.error.URLError("offline")
        return Response(b"x")

    monkeypatch.setattr(datasets.mnist.urllib.request, "urlopen", urlopen)
    datasets.mnist._download(("m/",), "f.gz", "0" * 64, tmp_path)


TRIGGERS = {
    "ValueError: unknown backend 'numpi'; valid names are: numpy, cupy, ...": lambda t, m: xpcnn.set_backend("numpi"),
    "conv2d: x must be 4-D (N, C, H, W), got shape ...":
        lambda t, m: F.conv2d_forward(np.zeros((3, 5, 5)), np.zeros((2, 3, 3, 3))),
    "conv2d: expected input with 3 channels":
        lambda t, m: F.conv2d_forward(np.zeros((1, 2, 5, 5)), np.zeros((2, 3, 3, 3))),
    "layer 0: Conv2D(3->16): expected input with 3 channels, got shape ...": lambda t, m: _model()(np.zeros((1, 1, 28, 28))),
    "conv2d: kernel 5x5 (dilation 1x1) is larger than the padded input":
        lambda t, m: F.conv2d_forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 5, 5))),
    "layer 7: Dense(3136->128): expected (N, 3136), got (64, 3200)": lambda t, m: xpcnn.Sequential(
        [L.Conv2D(1, 2, 1)] + [L.ReLU() for _ in range(5)] + [L.Flatten(), L.Dense(3136, 128)],
        seed=0)(np.zeros((64, 1, 40, 40))),
    "Sequential: x is an empty batch": lambda t, m: _model()(np.zeros((0, 3, 14, 14))),
    "conv2d: x must have dtype float32 or float64, got int64":
        lambda t, m: F.conv2d_forward(np.zeros((1, 1, 3, 3), np.int64), np.zeros((1, 1, 2, 2))),
    "Sequential: x must have dtype float32 or float64 (the model computes in float32), got dtype uint8":
        lambda t, m: _model()(np.zeros((1, 3, 14, 14), np.uint8)),
    "conv2d: weight has dtype float64 but the input has dtype float32":
        lambda t, m: F.conv2d_forward(np.zeros((1, 1, 3, 3), np.float32), np.zeros((1, 1, 2, 2))),
    "conv2d: all arrays must come from one backend, got a mix of ...":
        lambda t, m: F.conv2d_forward(np.zeros((1, 1, 3, 3)), xpcnn.to_backend(np.zeros((1, 1, 2, 2)), "array_api_strict")),
    "Sequential: x is a torch array but the model is on numpy":
        lambda t, m: _model()(xpcnn.to_backend(np.zeros((1, 3, 14, 14)), "torch")),
    "conv2d_backward: dy must have shape ...": lambda t, m: F.conv2d_backward(
        np.zeros((1, 1, 9, 9)), F.conv2d_forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2)))[1]),
    "fit: labels must lie in [0, 10) for a model with 10 outputs; sample 4 has label 12":
        lambda t, m: _fit_labels(np.array([0, 1, 2, 3, 12, 0])),
    "fit: integer labels must have shape (N,)": lambda t, m: _fit_labels(np.zeros((6, 2), int)),
    "fit: probability targets must be non-negative and sum to 1": lambda t, m: _fit_labels(np.full((6, 10), 0.2)),
    "softmax_cross_entropy: labels must lie in [0, K)":
        lambda t, m: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 5])),
    "fit: x contains NaN or infinity (first in sample 3)":
        lambda t, m: _fit_labels(np.zeros(6, int), np.where(np.arange(24).reshape(6, 1, 2, 2) == 12, np.nan, 0.0)),
    "TrainingDiverged: fit: the loss became nan by epoch 3, batch 12 (losses are read every N steps and at each epoch's end); the model was restored to the end of epoch 2":
        lambda t, m: _diverge(t),
    "SGD: lr must be in [0.0, inf), got -0.1": lambda t, m: optim.SGD(_model().parameters(), lr=-0.1),
    "SGD: momentum must be in [0.0, 1.0), got 1.0": lambda t, m: optim.SGD(_model().parameters(), lr=0.1, momentum=1.0),
    "SGD: nesterov=True needs momentum > 0 and dampening = 0":
        lambda t, m: optim.SGD(_model().parameters(), lr=0.1, nesterov=True),
    "Dropout: p must be a probability in [0, 1), got 1.0": lambda t, m: L.Dropout(1.0),
    "Conv2D(3->16): kernel_size must be >= 1, got 0": lambda t, m: L.Conv2D(3, 16, 0),
    "Conv2D(4->6): groups=4 must divide in_channels=4 and out_channels=6": lambda t, m: L.Conv2D(4, 6, 3, groups=4),
    "MaxPool2D(2): padding must be at most half the kernel size": lambda t, m: L.MaxPool2D(2, padding=2),
    "load_state_dict: the state does not fit this model:": lambda t, m: _model().load_state_dict({}),
    "CheckpointError: ...: not a readable xpcnn checkpoint (truncated or corrupted?)":
        lambda t, m: xpcnn.load(_checkpoint(t, damage=True)),
    "CheckpointError: ...: checkpoint format version 2; this xpcnn reads version 1":
        lambda t, m: xpcnn.load(_checkpoint(t, version=2)),
    "CheckpointError: checkpoint not found": lambda t, m: xpcnn.load(t / "absent.npz"),
    "the optimizer state cannot be restored": lambda t, m: _optimizer_mismatch(t),
    "DataError: ...: wrong magic number ...; expected 0000 <type> <ndim> of an IDX file":
        lambda t, m: _idx(t, b"\x08\x08\x08\x01abcd"),
    "DataError: ...: truncated: shape (...) needs N bytes, the file has M":
        lambda t, m: _idx(t, b"\x00\x00\x08\x01\x00\x00\x00\x05ab"),
    "DataError: load_mnist: .../train-images-idx3-ubyte.gz not found; pass download=True":
        lambda t, m: datasets.load_mnist(t),
    "Sequential: parameters() needs the parameters, but some sizes are inferred from the input and not known yet":
        lambda t, m: xpcnn.Sequential([L.Dense(10)]).parameters(),
    "Sequential: input_shape must be positive ints without the batch axis, such as (1, 28, 28)":
        lambda t, m: xpcnn.Sequential([L.Dense(10)], input_shape=(0,)),
    "Sequential.build: input_shape must be a shape without the batch axis, such as (1, 28, 28), got 'numpy'":
        lambda t, m: xpcnn.Sequential([L.Dense(10)]).build("numpy"),
    "layer 0: Conv2D(?->8): expected a 4-D input (N, C, H, W), got (1, 28, 28)":
        lambda t, m: xpcnn.Sequential([L.Conv2D(8, 3)], input_shape=(28, 28)),
    "Conv2D: ambiguous or missing sizes (32,)": lambda t, m: L.Conv2D(32, kernel_size=3),
    "Dense: takes at most 2 positional sizes": lambda t, m: L.Dense(1, 2, False),
    "Residual: the block gives shape (1, 5, 4, 4) but the input (identity shortcut) gives (1, 3, 4, 4)":
        lambda t, m: xpcnn.Sequential([L.Residual(L.Conv2D(3, 5, 3, padding=1))])(np.zeros((1, 3, 4, 4))),
    "Dense(?->4): activation must be one of relu, leaky_relu, sigmoid, tanh, softmax":
        lambda t, m: L.Dense(4, activation="nope"),
    "save: layer 2.0 ... is not a built-in or registered layer type and cannot be saved":
        lambda t, m: xpcnn.Sequential([L.Flatten(), L.ReLU(), xpcnn.Sequential([_Custom()])]).save(t / "c.npz"),
    "DataError: could not download ... (are you offline?)": lambda t, m: _download_mismatch(t, m, offline=True),
    "SHA-256 ... does not match": lambda t, m: _download_mismatch(t, m, offline=False),
}


def _cli(*args):
    """Run the command line in-process; its one line on stderr becomes the exception to compare."""
    import contextlib
    import io
    from xpcnn import cli
    stream = io.StringIO()
    with contextlib.redirect_stderr(stream), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.main(list(args))
        except SystemExit:
            pass
    raise RuntimeError(stream.getvalue())


def _files(tmp_path):
    """A file, a .npy array, a text file named .npy and one named .png, and a checkpoint with its run folder."""
    (tmp_path / "file").write_text("x")
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "text.npy").write_text("1 2 3")
    (tmp_path / "text.png").write_text("1 2 3")
    run = tmp_path / "run"
    run.mkdir()
    model = xpcnn.Sequential([L.Flatten(), L.Dense(784, 10)], seed=0)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    model.save(run / "checkpoint.npz", optimizer=optimizer, epoch=2, metadata={"run": {"epochs": 2}})
    return tmp_path


def _fit_tiny(lr=0.1, verbose=0, optimizer=None, lr_again=None, plateau=False, **options):
    """Fit a 4-input, 3-class model for one epoch, with warnings raised as errors."""
    import warnings
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0)
    chosen = optimizer or optim.SGD(model.parameters(), lr=lr)
    if plateau:
        options["scheduler"] = optim.ReduceLROnPlateau(chosen)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(np.zeros((4, 1, 2, 2)), np.zeros(4, int), optimizer=chosen, lr=lr_again, verbose=verbose, **options)


def _cupy(monkeypatch, installed):
    """A stand-in for CuPy: absent, or present with a CUDA runtime that finds no device."""
    import sys
    import types
    from xpcnn.backend import registry
    monkeypatch.setattr(registry, "_cache", {})
    if not installed:
        monkeypatch.setitem(sys.modules, "cupy", None)            # import cupy -> ImportError
    else:
        def no_device():
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        fake = types.SimpleNamespace(__version__="13.9.9", cuda=types.SimpleNamespace(
            runtime=types.SimpleNamespace(getDeviceCount=no_device)))
        monkeypatch.setitem(sys.modules, "cupy", fake)
    resolve("cupy")


def _torch_cuda(monkeypatch):
    torch = pytest.importorskip("torch")
    from xpcnn.backend import registry
    monkeypatch.setattr(registry, "_cache", {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    resolve("torch:cuda")


class _TwoRanks:
    """A stand-in communicator of 2 processes in which rank 1 holds another model; Abort raises."""

    def Get_size(self):
        return 2

    def Get_rank(self):
        return 1

    def Allgather(self, mine, everyone):
        everyone[0], everyone[1] = mine, mine ^ 1

    def Abort(self, code):
        raise RuntimeError("aborted")


def _distributed(monkeypatch, case):
    from xpcnn import distributed as D
    if case == "no mpi":
        monkeypatch.setitem(sys.modules, "mpi4py", None)
        monkeypatch.setattr(D, "_communicator", None)
        D.rank()
    monkeypatch.setattr(D, "_communicator", _TwoRanks())
    if case == "mismatch":
        D.broadcast_parameters(xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0))
    import contextlib
    import io
    stream = io.StringIO()
    with contextlib.redirect_stderr(stream), contextlib.suppress(RuntimeError):
        with D.abort_on_error("fit"):
            raise ValueError("bad data on this process")
    raise RuntimeError(stream.getvalue())


TRIGGERS.update({
    'xpcnn.distributed needs mpi4py and an MPI library: pip install "xpcnn[mpi]"':
        lambda t, m: _distributed(m, "no mpi"),
    "broadcast_parameters: the model on rank(s) 1 differs from rank 0's (names, shapes or dtypes)":
        lambda t, m: _distributed(m, "mismatch"),
    "fit (rank 1 of 2): error: ...": lambda t, m: _distributed(m, "abort"),
    "--threads goes with --distributed": lambda t, m: _cli("train", "--threads", "2"),
})


def _disagree(monkeypatch):
    from xpcnn import distributed as D
    world = type("World", (), {"allgather": lambda self, mine: [mine, [4]]})()
    monkeypatch.setattr(D, "_communicator", world)
    D.agree("fit", {"epochs": 3})


def _cuda_aware(monkeypatch, argument=False):
    from xpcnn import distributed as D
    if argument:
        pytest.importorskip("mpi4py")
        D.DistributedOptimizer(optim.SGD(_model().parameters(), lr=0.1), cuda_aware="yes")
    monkeypatch.setenv("XPCNN_CUDA_AWARE_MPI", "yes")
    D.cuda_aware()


TRIGGERS.update({
    "fit: the processes disagree on ...: rank 0 has ..., rank 1 has ...": lambda t, m: _disagree(m),
    "XPCNN_CUDA_AWARE_MPI must be 0 (stage GPU buffers through the host) or 1 (hand them to MPI), got ...":
        lambda t, m: _cuda_aware(m),
    "DistributedOptimizer: cuda_aware must be None (detect), True or False": lambda t, m: _cuda_aware(m, True),
})


TRIGGERS.update({
    "BackendUnavailable: backend 'cupy' is not installed": lambda t, m: _cupy(m, installed=False),
    "BackendUnavailable: backend 'cupy' is installed (CuPy ...) but no CUDA device can be used":
        lambda t, m: _cupy(m, installed=True),
    "BackendUnavailable: backend 'torch:cuda' needs a CUDA GPU": lambda t, m: _torch_cuda(m),
})


TRIGGERS.update({
    "xpcnn train: error: argument --seed: expected an integer >= 0, got -5 (see: xpcnn train --help)":
        lambda t, m: _cli("train", "--seed", "-5"),
    "argument --epochs: expected an integer, got 'abc'": lambda t, m: _cli("train", "--epochs", "abc"),
    "argument --lr: expected a positive finite number, got inf": lambda t, m: _cli("train", "--lr", "inf"),
    "--out: ... exists and is not a directory": lambda t, m: _cli("train", "--out", str(_files(t) / "file")),
    "--resume: ... has finished its N epochs; pass --epochs N with N > ...":
        lambda t, m: _cli("train", "--resume", str(_files(t) / "run" / "checkpoint.npz")),
    "CheckpointError: ...: is a folder, expected a checkpoint file (.npz)":
        lambda t, m: xpcnn.load(_files(t) / "run"),
    "CheckpointError: ...: not an xpcnn checkpoint: a single NumPy array (.npy)":
        lambda t, m: xpcnn.load(_files(t) / "array.npy"),
    "...: not a NumPy .npy file (no .npy header)":
        lambda t, m: _cli("predict", str(_files(t) / "run" / "checkpoint.npz"), str(t / "text.npy")),
    "...: not an image Pillow can read":
        lambda t, m: _cli("predict", str(_files(t) / "run" / "checkpoint.npz"), str(t / "text.png")),
    "fit: verbose must be 0 (silent) or 1 (a line per epoch)": lambda t, m: _fit_tiny(verbose=3),
    "fit: optimizer must be an xpcnn.optim optimizer or one of sgd, adagrad, rmsprop, adam, adamw, got 'adams'":
        lambda t, m: _fit_tiny(optimizer="adams"),
    "fit: lr= goes with an optimizer given by name": lambda t, m: _fit_tiny(lr_again=0.5),
    "fit: validation_split must be a fraction in (0, 1), got 1.5": lambda t, m: _fit_tiny(validation_split=1.5),
    "fit: pass validation_data or validation_split, not both":
        lambda t, m: _fit_tiny(validation_split=0.5, validation_data=(np.zeros((2, 1, 2, 2)), np.zeros(2, int))),
    "parameter group 1: SGD: momentum must be in [0.0, 1.0), got 2.0": lambda t, m: optim.SGD(
        [{"params": _model().parameters()[:2]}, {"params": _model().parameters()[2:], "momentum": 2.0}], lr=0.1),
    "SGD: parameter group 0 sets betas, which SGD does not have":
        lambda t, m: optim.SGD([{"params": _model().parameters(), "betas": (0.9, 0.99)}], lr=0.1),
    "fit: ReduceLROnPlateau monitors 'val_loss', which needs validation_data or validation_split":
        lambda t, m: _fit_tiny(plateau=True),
    "DataError: load_cifar10: no CIFAR-10 batch files or cifar-10-binary.tar.gz in ...; pass download=True":
        lambda t, m: datasets.load_cifar10(t, download=False),
    "DataError: ...: N bytes is not a whole number of CIFAR-10 records of 3073 bytes":
        lambda t, m: (t / "short.bin").write_bytes(bytes(100)) and datasets.read_cifar_binary(t / "short.bin"),
    "DataError: ...: record 0 has label 57; CIFAR-10 labels are 0-9":
        lambda t, m: (t / "c100.bin").write_bytes(bytes([57]) + bytes(3072)) and datasets.read_cifar_binary(
            t / "c100.bin"),
    "fit: epoch N runs at learning rate 0": lambda t, m: _fit_tiny(lr=0.0),
})


def _weights_overflow():
    """A finite loss whose gradient overflows the epoch's last update."""
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0)

    def loss(logits, labels):
        value, grad = F.softmax_cross_entropy(logits, labels)
        return value, grad * float("inf")

    with np.errstate(all="ignore"):
        model.fit(np.ones((4, 1, 2, 2)), np.zeros(4, int), optimizer="sgd", loss=loss, verbose=0)


def _fit_data(x, y, **options):
    xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0).fit(x, y, optimizer="sgd", verbose=0, **options)


def _nhwc():
    import warnings
    model = xpcnn.Sequential([L.Conv2D(2, 3), L.Flatten(), L.Dense(3)], seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(np.zeros((2, 32, 32, 3)), np.zeros(2, int), optimizer="sgd", verbose=0)


def _foreign_optimizer():
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0)
    model.fit(np.zeros((2, 1, 2, 2)), np.zeros(2, int), optimizer=optim.SGD(_model().parameters(), lr=0.1))


def _foreign_scheduler():
    model = xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0)
    schedule = optim.StepLR(optim.SGD(model.parameters(), lr=0.1), 1)
    model.fit(np.zeros((2, 1, 2, 2)), np.zeros(2, int), optimizer="sgd", scheduler=schedule)


TRIGGERS.update({
    "fit: x must have dtype float32 or float64 (the model computes in float32), got dtype uint8":
        lambda t, m: _fit_data(np.zeros((4, 1, 2, 2), np.uint8), np.zeros(4, int)),
    "fit: x has shape (N, 32, 32, 3), which looks like NHWC (channels last)": lambda t, m: _nhwc(),
    "predict: x must be a non-empty batch of samples (or one sample)":
        lambda t, m: _model().predict(np.zeros((0, 3, 14, 14))),
    "TrainingDiverged: fit: the weights became NaN or infinite by epoch N, batch M": lambda t, m: _weights_overflow(),
    "fit: loss 'mse' needs float targets of the output's shape (8, 3)":
        lambda t, m: _fit_data(np.zeros((8, 1, 2, 2)), np.zeros(8, int), loss="mse"),
    "fit: y must be an array of labels or targets, one per sample, got 1":
        lambda t, m: _fit_data(np.zeros((4, 1, 2, 2)), 1),
    "fit: batch_size must be a positive int, got 0": lambda t, m: _fit_tiny(batch_size=0),
    "fit: seed must be None or an int >= 0, got -1": lambda t, m: _fit_tiny(seed=-1),
    "fit: validation_data must be a pair (x, y), got a tuple of 1":
        lambda t, m: _fit_tiny(validation_data=(np.zeros((2, 1, 2, 2)),)),
    "fit: callbacks[0] must be an xpcnn.callbacks.Callback": lambda t, m: _fit_tiny(callbacks=[print]),
    "fit: callbacks[0] is a ReduceLROnPlateau schedule; pass it as scheduler=": lambda t, m: _fit_tiny(
        callbacks=[optim.ReduceLROnPlateau(optim.SGD(_model().parameters(), lr=0.1))]),
    "LRSchedule: expected an xpcnn.optim schedule, got SGD":
        lambda t, m: xpcnn.callbacks.LRSchedule(optim.SGD(_model().parameters(), lr=0.1)),
    "ModelCheckpoint: metric 'val_loss' is not logged":
        lambda t, m: _fit_tiny(callbacks=[xpcnn.callbacks.ModelCheckpoint(t / "c.npz", monitor="val_loss")]),
    "fit: scheduler must be an xpcnn.optim schedule or one of cosine, step, plateau":
        lambda t, m: _fit_tiny(scheduler="linear"),
    "fit: the optimizer holds N parameter(s) that are not this model's": lambda t, m: _foreign_optimizer(),
    "fit: the scheduler's optimizer is not the optimizer fit trains with": lambda t, m: _foreign_scheduler(),
    "EarlyStopping: mode must be 'auto', 'min' or 'max'": lambda t, m: xpcnn.callbacks.EarlyStopping(mode="up"),
})



def _tiny():
    return xpcnn.Sequential([L.Flatten(), L.Dense(4, 3)], seed=0)


def _saving(tmp_path, monkeypatch, case):
    """The errors of saving and of checking a folder before saving into it."""
    import errno
    model = _tiny()
    if case == "nan":
        model.layers[1].weight.data[0, 0] = np.nan
        model.save(tmp_path / "m.npz")
    elif case == "disk full":
        def full(*args):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr("xpcnn._files.os.replace", full)
        model.save(tmp_path / "m.npz")
    elif case == "empty":
        model.save("")
    else:
        from xpcnn.train import ModelCheckpoint
        (tmp_path / "blocker").write_text("x")
        model.fit(np.zeros((4, 1, 2, 2)), np.zeros(4, int), optimizer="sgd", progress=False, verbose=0,
                  callbacks=[ModelCheckpoint(tmp_path / "blocker" / "ck.npz")])


def _crafted(tmp_path, case):
    """A checkpoint changed the way a hostile file would be."""
    import io
    import json
    import zipfile
    from xpcnn.checkpoint import read_weights
    model = _tiny()
    if case == "checksum":
        path = model.save(tmp_path / "w.safetensors")
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x10
        path.write_bytes(bytes(data))
        return read_weights(path)
    path = model.save(tmp_path / "m.npz")
    with np.load(path) as archive:
        arrays = dict(archive)
    meta = json.loads(arrays["meta"].tobytes())
    if case == "deep":
        meta["layers"] = [{"type": "ReLU", "config": {}}]
        for _ in range(70):
            meta["layers"] = [{"type": "Sequential", "config": {"layers": meta["layers"]}}]
    elif case == "training":
        meta["training"] = "false"
    elif case == "unexpected":
        arrays["model.9.weight"] = np.zeros(2)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    if case in ("large", "declared"):
        header = io.BytesIO()
        shape = (2**28,) if case == "large" else (3, 4)
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
        with zipfile.ZipFile(path) as archive:
            entries = {info.filename: archive.read(info) for info in archive.infolist()}
        entries["model.1.weight.npy"] = header.getvalue()
        with zipfile.ZipFile(path, "w") as archive:
            for name, content in entries.items():
                archive.writestr(name, content)
        data = bytearray(path.read_bytes())      # declare the size the header implies (stored, so it is plain)
        size = len(header.getvalue()) + (4 * 2**28 if case == "large" else 2**31)
        for marker, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
            position = data.find(marker)
            while b"model.1.weight.npy" not in data[position:position + 80]:
                position = data.find(marker, position + 1)
            data[position + offset:position + offset + 4] = size.to_bytes(4, "little")
        path.write_bytes(bytes(data))
    xpcnn.load(path)


TRIGGERS.update({
    "SGD: lr must be a finite number, got 'fast'": lambda t, m: setattr(optim.SGD(_tiny().parameters(), lr=0.1),
                                                                        "lr", "fast"),
    "RMSprop: centered must be True or False, got 'yes'": lambda t, m: optim.RMSprop(_tiny().parameters(),
                                                                                     centered="yes"),
    "Adam: clip_grad_norm must be in (0.0, inf), got 0": lambda t, m: optim.Adam(_tiny().parameters(),
                                                                                 clip_grad_norm=0),
    "Adam.load_state_dict: parameter group 1: Adam: lr must be a finite number, got 'fast'": lambda t, m: (lambda o: o.load_state_dict(
        {**o.state_dict(), "groups": [{"params": [0]}, {"params": [1], "lr": "fast"}]}))(
        optim.Adam([{"params": _tiny().parameters()[:1]}, {"params": _tiny().parameters()[1:]}])),
    "load_state_dict: expected a dict of arrays keyed as state_dict() keys them, got list":
        lambda t, m: _tiny().load_state_dict([]),
    "load_state_dict: the state does not fit this model: '0.weight': cannot be read as a NumPy array (Tensor of dtype "
    "torch.bfloat16: ...); convert it first, e.g. tensor.float()": lambda t, m: xpcnn.Sequential(
        [L.Conv2D(1, 2, 3)], seed=0).load_state_dict({"0.weight": __import__("torch").zeros(
            (2, 1, 3, 3), dtype=__import__("torch").bfloat16), "0.bias": np.zeros(2)}),
    "load_state_dict: the state does not fit this model: '4.bias': holds values beyond float32's range (up to 1e+300), "
    "which would become infinity": lambda t, m: (lambda model: model.load_state_dict(
        {**model.state_dict(), "4.bias": np.full(3, 1e300)}))(xpcnn.Sequential(
            [L.Flatten(), L.ReLU(), L.ReLU(), L.ReLU(), L.Dense(4, 3)], seed=0)),
    "load_state_dict: the state does not fit this model: '1.running_var': a variance must be >= 0, got -1":
        lambda t, m: (lambda model: model.load_state_dict({**model.state_dict(), "1.running_var": -np.ones(2)}))(
            xpcnn.Sequential([L.Conv2D(1, 2, 1), L.BatchNorm2D(2)], seed=0)),
    "save: '1.weight' holds NaN or infinity, so ... was not written (xpcnn.load refuses such weights)":
        lambda t, m: _saving(t, m, "nan"),
    "save: cannot write .../m.npz: No space left on device": lambda t, m: _saving(t, m, "disk full"),
    "save: path must name a file, such as model.npz or model.safetensors, got ''": lambda t, m: _saving(t, m, "empty"),
    "ModelCheckpoint: cannot write .../ck.npz: ... is a file, not a folder": lambda t, m: _saving(t, m, "blocked"),
    "CheckpointError: ...: the architecture nests layers more than 64 deep": lambda t, m: _crafted(t, "deep"),
    "CheckpointError: ...: entry 'model.1.weight' holds (268435456,), more than the 12 values its place in the model "
    "takes": lambda t, m: _crafted(t, "large"),
    "CheckpointError: ...: unexpected entry 'model.9.weight': the model has no such parameter or buffer":
        lambda t, m: _crafted(t, "unexpected"),
    "CheckpointError: ...: not a readable xpcnn checkpoint (truncated or corrupted?): ValueError: entry "
    "'model.1.weight.npy' declares N bytes, but its header describes (3, 4) of float32 (M bytes)":
        lambda t, m: _crafted(t, "declared"),
    "CheckpointError: ...: the tensors do not match the checksum stored with them: the file is damaged":
        lambda t, m: _crafted(t, "checksum"),
    "CheckpointError: ...: the checkpoint's metadata is damaged: 'training' must be true or false, got \"false\"":
        lambda t, m: _crafted(t, "training"),
})

def _nan_image(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((28, 28), np.nan, np.float32))
    return _cli("predict", str(_files(tmp_path) / "run" / "checkpoint.npz"), str(tmp_path / "nan.npy"))


def _bad_backend_variable(tmp_path, monkeypatch):
    checkpoint = _files(tmp_path) / "run" / "checkpoint.npz"       # written before the variable is set
    monkeypatch.setattr(xpcnn.backend.registry, "_default", None)
    monkeypatch.setenv("XPCNN_BACKEND", "numpi")
    return _cli("evaluate", str(checkpoint))


def _env(monkeypatch, **variables):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


TRIGGERS.update({     # the command line's run settings, outputs and environment
    "--resume: a resumed run keeps its model, optimizer, data and seed; ... cannot be applied":
        lambda t, m: _cli("train", "--resume", str(_files(t) / "run" / "checkpoint.npz"), "--model", "mlp"),
    "--resume: ... holds weights only (no optimizer state, epoch or data order), so it cannot be resumed":
        lambda t, m: _cli("train", "--resume", str(t / "w.safetensors")),
    "...: N of M pixel values are NaN or infinite; expected finite numbers": lambda t, m: _nan_image(t),
    "--safetensors: ... is a file, not a folder, so ... cannot be written":
        lambda t, m: _cli("export", str(_files(t) / "run" / "checkpoint.npz"), "--safetensors",
                          str(t / "file" / "m.safetensors")),
    "started as N processes (mpiexec) without --distributed":
        lambda t, m: (_env(m, PMI_SIZE="2", PMI_RANK="0"), _cli("train")),
    "$XPCNN_WORKSPACE_MB must be a positive finite number of MiB (such as 512), got 'inf'":
        lambda t, m: (_env(m, XPCNN_WORKSPACE_MB="inf"), xpcnn.config._from_environment()),
    "$XPCNN_FEW_LAUNCHES must be auto, on or off":
        lambda t, m: (_env(m, XPCNN_FEW_LAUNCHES="maybe"), xpcnn.config._from_environment()),
    "$XPCNN_BACKEND='numpi': unknown backend 'numpi'":
        lambda t, m: _bad_backend_variable(t, m),
})


def _twice():
    relu = L.ReLU()
    return xpcnn.Sequential([L.Flatten(), relu, L.Dense(4, 3), relu])


def _in_two_models():
    dense = L.Dense(4, 3)
    first = xpcnn.Sequential([L.Flatten(), dense])           # kept: a model that is gone holds no layer
    return first, xpcnn.Sequential([L.Flatten(), dense])


def _batch_norm(**kwargs):
    c = np.zeros(3)
    args = dict(weight=c, bias=c, running_mean=c, running_var=c + 1, training=True)
    args.update(kwargs)
    return F.batch_norm2d_forward(np.ones((2, 3, 2, 2)), **args)


TRIGGERS.update({     # functional ops' and layers' arguments; layers placed twice
    "softmax_cross_entropy: check_labels must be True, False or None":
        lambda t, m: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), check_labels="yes"),
    "relu_backward: dy must have the forward pass's dtype float64, got int64":
        lambda t, m: F.relu_backward(np.ones(3, np.int64), F.relu_forward(np.ones(3))[1]),
    "batch_norm2d: weight has dtype float32 but the input has dtype float64":
        lambda t, m: _batch_norm(weight=np.ones(3, np.float32)),
    "batch_norm2d: evaluation (training=False) uses running_mean and running_var, got None":
        lambda t, m: _batch_norm(running_mean=None, training=False),
    "batch_norm2d: training must be True or False, got 'no'": lambda t, m: _batch_norm(training="no"),
    "softmax: axis must be an int, got 1.5": lambda t, m: F.softmax_forward(np.zeros((2, 3)), axis=1.5),
    "leaky_relu: negative_slope must be a number, got 'a'": lambda t, m: F.leaky_relu_forward(np.zeros(3), "a"),
    "leaky_relu: negative_slope must be finite, got nan":
        lambda t, m: F.leaky_relu_forward(np.zeros(3), float("nan")),
    "Sequential: layer 3 (ReLU) is the same object as layer 1; create a new ReLU() for each place":
        lambda t, m: _twice(),
    "Sequential: layer 1 (Dense(4->3)) already belongs to another model or layer; create new layers for this one":
        lambda t, m: _in_two_models(),
})

def _pieces(message: str) -> list[str]:
    message = re.sub(r"^[A-Za-z]+(Error|Unavailable|Diverged): ", "", message)
    return [p.strip() for p in re.split(r"\.\.\.|\bN\b|\bM\b|\bK\b", message) if p.strip()]


def test_every_quoted_message_has_a_trigger():
    assert sorted(set(MESSAGES) - set(TRIGGERS)) == []
    assert len(MESSAGES) >= 35


@pytest.mark.parametrize("message", sorted(TRIGGERS))
def test_the_quoted_message_is_what_the_code_says(message, tmp_path, monkeypatch):
    if "torch" in message:
        pytest.importorskip("torch")
    with pytest.raises(Exception) as info:
        TRIGGERS[message](tmp_path, monkeypatch)
    actual, position = str(info.value), 0
    for piece in _pieces(message):
        found = actual.find(piece, position)
        assert found >= 0, f"{piece!r} not in {actual!r}"
        position = found + len(piece)
