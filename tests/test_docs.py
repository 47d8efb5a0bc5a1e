"""Every Python block in docs/*.md runs as written: the blocks of one page in order, in one fresh interpreter
(a later block may use an earlier one's names, as a reader's session would), in a temporary folder."""
import pathlib
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(page for page in DOCS.glob("*.md") if "```python" in page.read_text())


def _blocks(page: pathlib.Path) -> list[str]:
    return [block.split("```", 1)[0] for block in page.read_text().split("```python")[1:]]


def test_the_pages_with_code_are_found():
    assert {"layers.md", "interop.md", "distributed.md"} <= {page.name for page in PAGES}


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_python_block_runs(page, tmp_path):
    if page.name == "interop.md":
        for module in ("torch", "onnx", "onnxruntime"):
            pytest.importorskip(module)
    if page.name == "distributed.md":
        pytest.importorskip("mpi4py")
    result = subprocess.run([sys.executable, "-c", "\n".join(_blocks(page))], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    if page.name == "layers.md":
        assert "gradients agree" in result.stdout and "reloaded: ChannelScale(4)" in result.stdout
        assert "ChannelScale(4)" in result.stdout.split("loss by epoch")[0]        # listed in summary()
    if page.name == "interop.md":
        assert "PyTorch and xpcnn agree: True" in result.stdout and "all-zero logits: True" in result.stdout
        assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.onnx", "digits.safetensors", "zeros.safetensors"]
    if page.name == "distributed.md":
        assert "1 process(es): loss " in result.stdout and "epoch 2/2" in result.stdout
