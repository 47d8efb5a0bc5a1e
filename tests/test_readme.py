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


def test_performance_table_quotes_the_committed_results():
    """Every row of the README's performance table is a case of benchmarks/results/numpy-cpu.json,
    with its figures as the harness wrote them."""
    import json
    results = json.loads((README.parent / "benchmarks" / "results" / "numpy-cpu.json").read_text())["results"]
    section = README.read_text().split("## Performance", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| case")]
    assert len(rows) >= 3
    for name, ours, theirs, ratio in ((cell.strip() for cell in row) for row in rows):
        match = next((r for r in results if r["name"] == name), None)
        assert match is not None, f"README row {name!r} is not a case in the results file"
        assert (ours, theirs, ratio) == (f"{match['xpcnn_ms']:.2f}", f"{match['torch_ms']:.2f}",
                                         f"{match['ratio']:.2f}"), name
