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
    "set_workspace_limit: expected a positive number of bytes": lambda t, m: F.set_workspace_limit(0),
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
    from xpcnn import backend
    monkeypatch.setattr(backend, "_cache", {})
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
    from xpcnn import backend
    monkeypatch.setattr(backend, "_cache", {})
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
