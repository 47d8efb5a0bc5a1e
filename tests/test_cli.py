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
    for option, default in (("--epochs", "12"), ("--lr", "0.002"), ("--batch-size", "64"), ("--seed", "0"),
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
        "multichannel", "optimizers", "residual"]
    lesson = run("teach", "conv-mse", "--lr", "0.02", "--backend", "array_api_strict")
    assert lesson.returncode == 0, lesson.stderr
    assert "w11 = 0.1 - 0.02·(-6.5) = 0.23" in lesson.stdout
    wrong = run("teach", "conv-mse", "--steps", "3")
    assert wrong.returncode == 1 and "option steps does not apply" in wrong.stderr


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
