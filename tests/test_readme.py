"""The README's code runs as written."""
import pathlib

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str) -> str:
    section = README.read_text().split(heading, 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


def test_api_in_ten_lines_runs(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    code = _block("## The API in ten lines").replace("epochs=3", "epochs=1")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "digits.npz").exists()
    assert namespace["same"].backend.name == "torch"
    assert len(namespace["model"].layers) == 5


def test_functional_example_runs():
    namespace = {}
    exec(compile(_block("## The functional ops"), "README.md", "exec"), namespace)
    assert tuple(namespace["y"].shape) == (8, 16, 28, 28)
    assert namespace["db"] is None
