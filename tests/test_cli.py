"""Every command, run as a user runs it: a subprocess, checking output, files and exit codes."""
import importlib.util
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
    if importlib.util.find_spec("matplotlib") is None:
        assert "curves:     skipped (install matplotlib for the PNG)" in result.stdout
        assert not (out / "curves.png").exists()
    else:
        png = pytest.importorskip("PIL.Image").open(out / "curves.png")
        assert png.size == (1000, 400)


def test_train_resume_continues_from_the_checkpoint(trained, tmp_path):
    out, _ = trained
    result = run("train", "--resume", str(out / "checkpoint.npz"), "--epochs", "2", "--out", str(tmp_path),
                 "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and "epoch 2/2" in result.stdout and "epoch 1/2" not in result.stdout


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
    (("train", "--backend", "nope"), "invalid choice: 'nope'"),
    (("train", "--epochs", "0"), "--epochs must be at least 1"),
    (("train", "--data", "/no/such/dir"), "--data must be sample, mnist, fashion-mnist or a directory"),
    (("evaluate", "missing.npz"), "checkpoint not found: missing.npz"),
    (("predict", "missing.npz", "x.png"), "checkpoint not found"),
    (("frobnicate",), "invalid choice: 'frobnicate'"),
])
def test_wrong_usage_is_one_line_and_a_nonzero_exit(args, message):
    result = run(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "error" in line]) == 1


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
        "multichannel", "optimizers"]
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
    if importlib.util.find_spec("matplotlib") is None:
        assert result.returncode == 1
        assert "drawing PNGs needs matplotlib: pip install matplotlib" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "v").iterdir())
    assert names == ["curves.png", "features-0.png", "features-3.png", "filters.png"]


def test_train_can_trace_the_first_batch(tmp_path):
    result = run("train", "--epochs", "1", "--model", "mlp", "--trace-first-batch", "--out", str(tmp_path),
                 "--no-progress", "--no-augment")
    assert result.returncode == 0, result.stderr
    assert "Trace of one batch through 4 layers" in result.stdout
    assert "dL/dweight (128, 784)" in result.stdout


def test_bench_command_runs_the_harness(tmp_path):
    pytest.importorskip("torch")
    result = run("bench", "--groups", "overhead", "--out", str(tmp_path), "--name", "cli")
    assert result.returncode == 0, result.stderr
    assert "batch-1 LeNet forward" in result.stdout
    assert (tmp_path / "cli.json").exists() and (tmp_path / "cli.md").exists()
