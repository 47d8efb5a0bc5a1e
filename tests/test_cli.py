"""Every command, run as a user runs it: a subprocess, checking output, files and exit codes."""
import os
import subprocess
import sys

import numpy as np
import pytest

from xpcnn.datasets import load_mnist_sample


def run(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "xpcnn", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run("train", "--epochs", "1", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    return out, result


def test_train_writes_checkpoint_metrics_and_curves(trained):
    out, result = trained
    assert "epoch 1/1" in result.stdout and "test accuracy" in result.stdout
    accuracy = float(result.stdout.split("test accuracy")[1].split()[0])
    assert accuracy > 0.85
    assert (out / "checkpoint.npz").stat().st_size > 0
    assert (out / "metrics.csv").read_text().startswith("epoch,loss,accuracy,val_loss,val_accuracy")
    assert result.stderr == ""
    assert f"curves:     {out / 'curves.png'}" in result.stdout
    from PIL import Image
    with Image.open(out / "curves.png") as png:
        assert png.size == (1000, 400)


def test_train_resume_continues_from_the_checkpoint(trained, tmp_path):
    out, _ = trained
    result = run("train", "--resume", str(out / "checkpoint.npz"), "--epochs", "2", "--out", str(tmp_path),
                 "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and "epoch 2/2" in result.stdout and "epoch 1/2" not in result.stdout
    assert "the cosine schedule now spans 2 epochs (was 1); epoch 2 starts at lr 0.001" in result.stdout
    assert "learning rate 0" not in result.stderr


def test_resume_as_printed_after_ctrl_c_continues_the_same_run(tmp_path):
    """Ctrl-C during a 3-epoch run, then the printed command run literally: epochs 2-3 of the same run,
    in the same folder, on the same schedule (it once trained to the default 12 epochs, epoch 4 at lr 0)."""
    import signal
    import time
    import xpcnn
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "xpcnn", "train", "--epochs", "3", "--out", str(out),
                                "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path, env=env)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.npz").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    command = stderr.split("resume with: ", 1)[1].split(")")[0].split()
    assert command[:3] == ["xpcnn", "train", "--resume"] and len(command) == 4
    assert xpcnn.load_checkpoint(out / "checkpoint.npz").epoch == 1
    resumed = run(*command[1:], "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "after epoch 1 of 3" in resumed.stdout
    assert "epoch 3/3" in resumed.stdout and "/12" not in resumed.stdout and "epoch 4/" not in resumed.stdout
    assert f"checkpoint: {out / 'checkpoint.npz'}" in resumed.stdout                      # the same folder
    assert "learning rate 0" not in resumed.stderr and not (tmp_path / "runs").exists()
    assert xpcnn.load_checkpoint(out / "checkpoint.npz").epoch == 3
    finished = run(*command[1:], cwd=tmp_path)
    assert finished.returncode == 1
    assert "has finished its 3 epochs; pass --epochs N with N > 3 to train longer" in finished.stderr


def test_evaluate_and_predict(trained, tmp_path):
    out, _ = trained
    result = run("evaluate", str(out / "checkpoint.npz"))
    assert result.returncode == 0, result.stderr
    assert "1000 test images from sample: accuracy" in result.stdout
    _, (x_test, y_test) = load_mnist_sample()
    np.save(tmp_path / "digit.npy", x_test[0])
    pil = pytest.importorskip("PIL.Image")
    pil.fromarray(x_test[1]).save(tmp_path / "digit.png")
    result = run("predict", str(out / "checkpoint.npz"), str(tmp_path / "digit.npy"), str(tmp_path / "digit.png"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{tmp_path / 'digit.npy'}: {y_test[0]} (")
    assert lines[0].count("(") == 3


def test_backends_lists_every_backend():
    result = run("backends")
    assert result.returncode == 0
    for name in ("numpy", "cupy", "torch", "torch:cuda", "jax", "array_api_strict"):
        assert any(line.split()[0] == name for line in result.stdout.splitlines()[1:] if line.strip()
                   and not line.startswith(" "))
    assert "numpy             yes        yes" in result.stdout
    from xpcnn import cores
    kernels = cores.blas_kernels()
    if kernels:                     # the subprocess loads the same OpenBLAS with the same environment
        assert f"numpy: OpenBLAS runs its {kernels} kernels" in result.stdout


def test_backend_rows_list_every_backend():
    from xpcnn.backend import BACKEND_NAMES
    from xpcnn.cli import backend_rows
    rows = backend_rows()
    assert [row["name"] for row in rows] == list(BACKEND_NAMES[:-1])
    numpy_row = rows[0]
    assert numpy_row["usable"] == "yes" and numpy_row["version"] == np.__version__


@pytest.mark.parametrize("args,message", [
    (("train", "--backend", "nope"), "argument --backend: invalid choice: 'nope'"),
    (("train", "--epochs", "0"), "argument --epochs: expected an integer >= 1, got 0"),
    (("train", "--epochs", "abc"), "argument --epochs: expected an integer, got 'abc' (see: xpcnn train --help)"),
    (("train", "--seed", "-5"), "argument --seed: expected an integer >= 0, got -5"),
    (("train", "--lr", "inf"), "argument --lr: expected a positive finite number, got inf"),
    (("train", "--data", "/no/such/dir"), "--data must be sample, mnist, fashion-mnist, cifar10 or a directory"),
    (("evaluate", "missing.npz"), "checkpoint not found: missing.npz"),
    (("predict", "missing.npz", "x.png"), "checkpoint not found"),
    (("frobnicate",), "invalid choice: 'frobnicate'"),
])
def test_wrong_usage_is_one_line_and_a_nonzero_exit(args, message, tmp_path):
    result = run(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr      # no usage block before the error
    assert list(tmp_path.iterdir()) == []                                   # nothing created (no runs/<timestamp>)


def test_a_run_that_fails_before_training_creates_no_folder(tmp_path):
    result = run("train", "--seed", "-5", "--out", str(tmp_path / "X"))
    assert result.returncode != 0 and not (tmp_path / "X").exists()
    result = run("train", "--data", str(tmp_path), "--out", str(tmp_path / "Y"))   # a folder without IDX files
    assert result.returncode == 1 and "not found" in result.stderr and not (tmp_path / "Y").exists()


def test_files_of_the_wrong_kind_are_named_in_one_line(trained, tmp_path):
    out, _ = trained
    (tmp_path / "file").write_text("x")
    np.save(tmp_path / "some.npy", np.zeros(3))
    (tmp_path / "fake.npy").write_text("not numbers")
    (tmp_path / "fake.png").write_text("not a picture")
    cases = [
        (("train", "--out", str(tmp_path / "file")), f"--out: {tmp_path / 'file'} exists and is not a directory"),
        (("evaluate", str(tmp_path / "some.npy")), "not an xpcnn checkpoint: a single NumPy array (.npy)"),
        (("predict", str(out / "checkpoint.npz"), str(tmp_path / "fake.npy")), "not a NumPy .npy file"),
        (("predict", str(out / "checkpoint.npz"), str(tmp_path / "fake.png")), "not an image Pillow can read"),
        (("train", "--resume", str(out)), f"{out}: is a folder, expected a checkpoint file (.npz) (did you mean "),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "allow_pickle" not in result.stderr, result.stderr


def test_train_help_shows_every_option_with_its_default():
    text = run("train", "--help").stdout.split("options:", 1)[1]
    from xpcnn.cli import TRAIN_DEFAULTS
    for option, default in (("--epochs", str(TRAIN_DEFAULTS["epochs"])), ("--lr", "0.002"), ("--batch-size", "64"), ("--seed", "0"),
                            ("--model", "lenet"), ("--backend", "$XPCNN_BACKEND")):
        block = " ".join(text.split(option, 1)[1].split("\n  -", 1)[0].split())
        assert f"default: {default}" in block, (option, block)
    assert "the cosine schedule is then recomputed for the new length" in " ".join(text.split())


def test_the_backend_variable_applies_when_no_option_is_given(tmp_path):
    pytest.importorskip("torch")
    env = dict(os.environ, XPCNN_BACKEND="torch")
    result = subprocess.run([sys.executable, "-m", "xpcnn", "train", "--epochs", "1", "--model", "mlp",
                             "--no-progress", "--out", str(tmp_path)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "with backend torch" in result.stdout


def test_predict_refuses_an_image_of_the_wrong_shape(trained, tmp_path):
    out, _ = trained
    np.save(tmp_path / "wide.npy", np.zeros((28, 30), np.uint8))
    result = run("predict", str(out / "checkpoint.npz"), str(tmp_path / "wide.npy"))
    assert result.returncode == 1
    assert "expected an image of shape (1, 28, 28)" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(os.environ.get("XPCNN_SKIP_SLOW") == "1", reason="XPCNN_SKIP_SLOW=1")
def test_default_train_reaches_97_percent(tmp_path):
    """The README's quick start: `xpcnn train` with no options."""
    result = run("train", "--out", str(tmp_path), "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("test accuracy")[1].split()[0])
    assert accuracy >= 0.97


def test_teach_lists_and_runs_examples():
    listing = run("teach", "--list")
    assert listing.returncode == 0
    assert [line.split()[0] for line in listing.stdout.splitlines()] == [
        "conv-mse", "conv-relu-dense-softmax", "conv-backprop", "pool-backprop", "handwritten-cnn",
        "multichannel", "optimizers", "residual", "winograd"]
    lesson = run("teach", "conv-mse", "--lr", "0.02", "--backend", "array_api_strict")
    assert lesson.returncode == 0, lesson.stderr
    assert "w11 = 0.1 - 0.02·(-6.5) = 0.23" in lesson.stdout
    wrong = run("teach", "conv-mse", "--steps", "3")
    assert wrong.returncode == 1 and "option steps does not apply" in wrong.stderr
    mismatch = run("teach", "conv-relu-dense-softmax", "--wrong-label")
    assert mismatch.returncode == 0 and "MISMATCH: the gradient was computed for class 0" in mismatch.stdout


def test_viz_writes_pngs(trained, tmp_path):
    out, _ = trained
    _, (x_test, _) = load_mnist_sample()
    np.save(tmp_path / "digit.npy", x_test[3])
    result = run("viz", str(out / "checkpoint.npz"), str(tmp_path / "digit.npy"), "--out", str(tmp_path / "v"))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "v").iterdir())
    assert names == ["curves.png", "features-0.png", "features-3.png", "filters.png"]


def test_train_can_trace_the_first_batch(tmp_path):
    result = run("train", "--epochs", "1", "--model", "mlp", "--trace-first-batch", "--out", str(tmp_path),
                 "--no-progress", "--no-augment")
    assert result.returncode == 0, result.stderr
    assert "Trace of one batch through 4 layers" in result.stdout
    assert "dL/dweight (128, 784)" in result.stdout


def test_predict_converts_inverted_and_unit_range_images_and_says_so(trained, tmp_path):
    out, _ = trained
    from PIL import Image
    _, (x_test, _) = load_mnist_sample()
    digit = x_test[0]
    np.save(tmp_path / "plain.npy", digit)
    np.save(tmp_path / "unit.npy", digit.astype(np.float32) / 255)            # floats in [0, 1]
    Image.fromarray(255 - digit).save(tmp_path / "paper.jpg", quality=95)      # a dark digit on white, as JPEG
    result = run("predict", str(out / "checkpoint.npz"), *(str(tmp_path / n) for n in ("plain.npy", "unit.npy",
                                                                                        "paper.jpg")))
    assert result.returncode == 0, result.stderr
    tops = [line.split(": ", 1)[1].split(" ")[0] for line in result.stdout.splitlines()]
    assert len(tops) == 3 and tops[0] == tops[1] == tops[2], result.stdout
    notes = result.stderr.splitlines()
    assert notes == [f"note: {tmp_path / 'unit.npy'}: values in [0, 1]: scaled to 0-255",
                     f"note: {tmp_path / 'paper.jpg'}: light background: inverted to a light digit on dark, "
                     "as the training images are"]


def test_ctrl_c_before_the_first_epoch_ends_leaves_no_folder_and_says_so(tmp_path):
    import signal
    import time
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "xpcnn", "train", "--epochs", "1", "--out", str(out),
                                "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not out.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)                          # the folder appears when training starts
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted before the first epoch ended; nothing was saved" in stderr
    assert not out.exists()


def test_train_on_cifar10_files_with_a_resnet(tmp_path):
    """`--data cifar10 --model resnet8` on a machine that has the data: here a few records written in the binary
    version's format under $XPCNN_DATA/cifar10 (no download is attempted when the files are there)."""
    from xpcnn.datasets import CIFAR10_CLASSES, write_cifar_binary
    from xpcnn.datasets.cifar import CIFAR10_TEST, CIFAR10_TRAIN
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in CIFAR10_TRAIN + CIFAR10_TEST:
        write_cifar_binary(folder / name, rng.integers(0, 256, (4, 3, 32, 32)).astype(np.uint8),
                           rng.integers(0, 10, 4))
    env = dict(os.environ, XPCNN_DATA=str(tmp_path / "data"))
    result = subprocess.run([sys.executable, "-m", "xpcnn", "train", "--data", "cifar10", "--model", "resnet8",
                             "--epochs", "1", "--batch-size", "8", "--no-progress", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "training resnet8 on cifar10 (20 train / 4 test images)" in result.stdout
    import xpcnn
    checkpoint = xpcnn.load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert checkpoint.metadata["classes"] == list(CIFAR10_CLASSES)
    assert checkpoint.metadata["image_shape"] == [3, 32, 32]
    assert sum(int(np.prod(p.shape)) for p in checkpoint.model.parameters()) == 78042


def test_export_writes_onnx_and_safetensors_that_match_the_checkpoint(trained, tmp_path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    import xpcnn
    out, _ = trained
    result = run("export", str(out / "checkpoint.npz"), "--onnx", str(tmp_path / "m.onnx"),
                 "--safetensors", str(tmp_path / "m.safetensors"))
    assert result.returncode == 0, result.stderr
    assert "(input (batch, 1, 28, 28), opset 17)" in result.stdout
    model = xpcnn.load(out / "checkpoint.npz")
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model.predict(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(xpcnn.load(tmp_path / "m.safetensors").predict(x), model.predict(x))
    nothing = run("export", str(out / "checkpoint.npz"), cwd=tmp_path)
    assert nothing.returncode == 1 and "give --onnx OUT.onnx, --safetensors OUT.safetensors, or both" in nothing.stderr
    wrong = run("export", str(out / "checkpoint.npz"), "--onnx", str(tmp_path / "m.txt"))
    assert wrong.returncode == 1 and "--onnx: expected a file name ending in .onnx" in wrong.stderr
    assert not (tmp_path / "m.txt").exists()


# ----------------------------------------------------------------------------- in-process: xpcnn.cli.main(...)
import xpcnn  # noqa: E402
from xpcnn.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """A one-epoch MLP run of `xpcnn train` (a few seconds), shared by the in-process tests below."""
    out = tmp_path_factory.mktemp("mlp")
    assert main(["train", "--model", "mlp", "--epochs", "1", "--no-progress", "--no-augment", "--out", str(out)]) == 0
    return out / "checkpoint.npz"


def _errors(capsys):
    return capsys.readouterr().err.strip().splitlines()


def test_resume_refuses_in_one_line_every_option_it_cannot_apply(mlp_run, tmp_path, capsys):
    before = mlp_run.read_bytes()
    code = main(["train", "--resume", str(mlp_run), "--model", "lenet", "--optimizer", "sgd", "--seed", "5",
                 "--data", "mnist", "--epochs", "2", "--lr", "0.01", "--out", str(tmp_path / "run")])
    assert code == 1
    errors = _errors(capsys)
    assert len(errors) == 1 and errors[0].startswith(
        "xpcnn train: error: --resume: a resumed run keeps its model, optimizer, data and seed; "
        "--model lenet (the checkpoint's: mlp), --seed 5 (the checkpoint's: 0), --data mnist (the checkpoint's: "
        "sample), --optimizer sgd (the checkpoint's: adam) cannot be applied"), errors
    assert mlp_run.read_bytes() == before and not (tmp_path / "run").exists()


def test_resume_applies_lr_epochs_and_batch_size_and_records_what_trained(mlp_run, tmp_path, capsys):
    resumed = tmp_path / "checkpoint.npz"
    resumed.write_bytes(mlp_run.read_bytes())
    code = main(["train", "--resume", str(resumed), "--model", "mlp", "--optimizer", "adam", "--seed", "0",
                 "--lr", "0.01", "--epochs", "2", "--batch-size", "128", "--no-progress", "--no-augment"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "training mlp on sample" in out and "2 epochs, batch 128, Adam lr 0.005" in out   # cosine at epoch 2 of 2
    checkpoint = xpcnn.load_checkpoint(resumed)
    assert checkpoint.epoch == 2 and checkpoint.scheduler.base_lr == 0.01
    assert checkpoint.metadata["run"] == {"model": "mlp", "epochs": 2, "batch_size": 128, "lr": 0.01,
                                          "optimizer": "adam", "data": "sample", "seed": 0}


def test_resume_records_no_model_name_it_does_not_know(tmp_path, capsys):
    """A checkpoint written by model.fit in Python records no run settings: --model cannot be checked, so it is
    refused, and the run's metadata does not claim a model name."""
    from xpcnn.zoo import mlp
    model = mlp(seed=0)
    optimizer = xpcnn.optim.Adam(model.parameters())
    path = xpcnn.checkpoint.save(model, tmp_path / "python.npz", optimizer=optimizer, epoch=0)
    assert main(["train", "--resume", str(path), "--model", "mlp", "--epochs", "1"]) == 1
    assert "--model mlp (the checkpoint's: not recorded) cannot be applied" in capsys.readouterr().err
    assert main(["train", "--resume", str(path), "--epochs", "1", "--no-progress", "--no-augment"]) == 0
    assert "training the checkpoint's model on sample" in capsys.readouterr().out
    assert xpcnn.load_checkpoint(tmp_path / "checkpoint.npz").metadata["run"]["model"] is None   # the run's folder


def test_commands_read_safetensors_files_and_resume_refuses_them(tmp_path, capsys):
    from xpcnn.zoo import lenet
    _, (x_test, _) = load_mnist_sample()
    np.save(tmp_path / "digit.npy", x_test[0])
    model = lenet(width=4, seed=0)
    model.build((1, 28, 28))                              # the input shape, recorded for the ONNX export
    weights = str(model.save(tmp_path / "w.safetensors"))
    assert main(["predict", weights, str(tmp_path / "digit.npy")]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{tmp_path / 'digit.npy'}: ") and captured.out.count("(") == 3
    assert f"note: {weights}: records no training mean and std" in captured.err
    assert main(["evaluate", weights]) == 0 and "1000 test images from sample: accuracy" in capsys.readouterr().out
    assert main(["viz", weights, str(tmp_path / "digit.npy"), "--out", str(tmp_path / "viz")]) == 0
    assert (tmp_path / "viz" / "filters.png").exists()
    pytest.importorskip("onnx")
    assert main(["export", weights, "--onnx", str(tmp_path / "m.onnx")]) == 0 and (tmp_path / "m.onnx").exists()
    capsys.readouterr()
    assert main(["train", "--resume", weights, "--out", str(tmp_path / "run")]) == 1
    assert _errors(capsys) == [f"xpcnn train: error: --resume: {weights} holds weights only (no optimizer state, "
                               "epoch or data order), so it cannot be resumed; resume from the run's checkpoint.npz"]


def test_predict_composites_a_transparent_png_and_says_so(mlp_run, tmp_path, capsys):
    """Black strokes on a transparent background (as drawing programs save them) read as the digit, not as an
    all-black picture."""
    from PIL import Image
    _, (x_test, _) = load_mnist_sample()
    digit = x_test[0]
    np.save(tmp_path / "plain.npy", digit)
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = digit                                   # the ink's coverage; the colour is black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "drawn.png")
    assert main(["predict", str(mlp_run), str(tmp_path / "plain.npy"), str(tmp_path / "drawn.png")]) == 0
    captured = capsys.readouterr()
    plain, drawn = (line.split(": ", 1)[1] for line in captured.out.splitlines())
    assert drawn == plain, captured.out
    assert f"note: {tmp_path / 'drawn.png'}: transparent pixels: composited onto white" in captured.err


def test_predict_says_when_it_resizes_and_refuses_nan_images(mlp_run, tmp_path, capsys):
    from PIL import Image
    Image.fromarray(np.zeros((56, 40), np.uint8)).save(tmp_path / "big.png")
    assert main(["predict", str(mlp_run), str(tmp_path / "big.png")]) == 0
    assert (f"note: {tmp_path / 'big.png'}: 40x56 pixels: resized to 28x28, the training images' size"
            in capsys.readouterr().err)
    np.save(tmp_path / "nan.npy", np.full((28, 28), np.nan, np.float32))
    assert main(["predict", str(mlp_run), str(tmp_path / "nan.npy")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        f"xpcnn predict: error: {tmp_path / 'nan.npy'}: 784 of 784 pixel values are NaN or infinite; "
        "expected finite numbers"]


def test_export_checks_both_outputs_before_writing_either(mlp_run, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder.safetensors").mkdir()
    cases = [(["--safetensors", str(tmp_path / "file" / "m.safetensors")],
              f"--safetensors: {tmp_path / 'file'} is a file, not a folder, so"),
             (["--safetensors", str(tmp_path / "folder.safetensors")],
              f"--safetensors: {tmp_path / 'folder.safetensors'} is a folder; expected a file name")]
    for option, message in cases:
        assert main(["export", str(mlp_run), "--onnx", str(tmp_path / "m.onnx"), *option]) == 1
        errors = _errors(capsys)
        assert len(errors) == 1 and message in errors[0], errors
        assert not (tmp_path / "m.onnx").exists()


def _fit_raising(exception, warning=None):
    def fit(self, *args, **kwargs):
        if warning:
            import warnings
            warnings.warn(warning, RuntimeWarning)
        raise exception
    return fit


@pytest.mark.parametrize("exception,code", [(KeyboardInterrupt(), 130),
                                            (xpcnn.train.TrainingDiverged("fit: the loss became nan"), 1)])
def test_a_run_stopped_in_its_first_epoch_leaves_no_folders(exception, code, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(xpcnn.Sequential, "fit", _fit_raising(exception))
    assert main(["train", "--model", "mlp", "--epochs", "1", "--no-progress"]) == code       # runs/<timestamp>
    assert main(["train", "--model", "mlp", "--epochs", "1", "--no-progress", "--out", "a/b/c"]) == code
    assert list(tmp_path.iterdir()) == []
    out = capsys.readouterr().out
    assert ", 1 epoch, batch 64" in out and "1 epochs" not in out


def test_warnings_are_one_line_before_the_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(xpcnn.Sequential, "fit", _fit_raising(xpcnn.train.TrainingDiverged("fit: the loss became "
                                                                                            "nan"),
                                                               "overflow encountered in matmul"))
    assert main(["train", "--model", "mlp", "--epochs", "1", "--no-progress"]) == 1
    assert _errors(capsys) == ["xpcnn train: warning: overflow encountered in matmul",
                               "xpcnn train: error: fit: the loss became nan"]


def test_under_mpiexec_rank_0_alone_reports_and_a_run_without_distributed_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PMI_SIZE", "2")
    for rank, says in (("1", False), ("0", True)):
        monkeypatch.setenv("PMI_RANK", rank)
        with pytest.raises(SystemExit) as exit_:
            main(["train", "--epochs", "0"])
        assert exit_.value.code == 2
        assert ("argument --epochs: expected an integer >= 1, got 0" in capsys.readouterr().err) is says
        assert main(["train", "--epochs", "1"]) == 1
        errors = _errors(capsys)
        assert errors == (["xpcnn train: error: started as 2 processes (mpiexec) without --distributed: each would "
                           "train the whole run into the same folder; add --distributed, or run one process"]
                          if says else [])
    monkeypatch.delenv("PMI_SIZE")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "3")
    assert main(["train", "--epochs", "1"]) == 1 and "started as 3 processes" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"xpcnn {xpcnn.__version__}\n"


def test_a_bad_backend_variable_is_named_not_the_file(mlp_run, monkeypatch, capsys):
    monkeypatch.setattr(xpcnn.backend.registry, "_default", None)
    monkeypatch.setenv("XPCNN_BACKEND", "numpi")
    assert main(["evaluate", str(mlp_run)]) == 1
    errors = _errors(capsys)
    assert len(errors) == 1 and errors[0].startswith(
        "xpcnn evaluate: error: $XPCNN_BACKEND='numpi': unknown backend 'numpi'; valid names are: numpy"), errors


def test_checkpoint_problems_are_one_line_by_one_rule_for_both_formats(mlp_run, tmp_path, capsys):
    """Several problems in a file: `.npz` and `.safetensors` alike, one line, the problems joined by '; '."""
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open
    with np.load(mlp_run) as archive:
        arrays = dict(archive)
    arrays["model.1.weight"], arrays["model.3.bias"] = arrays["model.1.weight"][:5], arrays["model.3.bias"][:4]
    np.savez(tmp_path / "bad.npz", **arrays)
    weights = xpcnn.load(mlp_run).save(tmp_path / "good.safetensors")
    tensors = load_file(weights)
    with safe_open(str(weights), framework="numpy") as handle:
        checksum = getattr(xpcnn.checkpoint, "CHECKSUM_KEY", None)                   # damage on purpose, unsigned
        metadata = {key: value for key, value in handle.metadata().items() if key != checksum}
    tensors["1.weight"], tensors["3.bias"] = tensors["1.weight"][:5], tensors["3.bias"][:4]
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    messages = []
    for name in ("bad.npz", "bad.safetensors"):
        assert main(["evaluate", str(tmp_path / name)]) == 1
        errors = _errors(capsys)
        assert len(errors) == 1, errors
        messages.append(errors[0])
    for message in messages:
        assert "1.weight" in message and "3.bias" in message and "; " in message and "  " not in message, message
