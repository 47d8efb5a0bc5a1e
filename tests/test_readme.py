"""The README's code runs as written."""
import pathlib
import subprocess
import sys
import textwrap

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str) -> str:
    section = README.read_text().split(heading, 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


def _python_blocks() -> list[str]:
    return [block.split("```", 1)[0] for block in README.read_text().split("```python")[1:]]


#: What `pip install .` does not bring (the extras' libraries): hidden from the snippets' interpreter.
OPTIONAL = ("torch", "jax", "jaxlib", "array_api_strict", "cupy", "onnx", "onnxruntime", "mpi4py")

HIDE_OPTIONAL = textwrap.dedent(f"""
    import importlib.abc, sys

    class _Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {OPTIONAL!r}:
                raise ImportError(f"{{name}} is hidden: pip install . does not install it")

    sys.meta_path.insert(0, _Hide())
""")


def test_every_python_snippet_runs_as_written_in_order(tmp_path):
    """All of the README's Python blocks, in one fresh interpreter, in order (a later block may use an
    earlier one's names, as a reader's session would), with only what the README's `pip install .` installs
    (the extras' libraries hidden); the API block's 3 epochs shortened to 1."""
    blocks = _python_blocks()
    assert len(blocks) >= 4
    code = HIDE_OPTIONAL + "\n".join(blocks).replace("epochs=3", "epochs=1")
    checks = textwrap.dedent("""
        assert same.backend.name == "numpy" and len(model.layers) == 5
        assert tuple(y.shape) == (8, 16, 28, 28) and db is None
        assert xb.shape == (64, 1, 28, 28) and optimizer.step_count == 1
    """)
    result = subprocess.run([sys.executable, "-c", code + checks], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "digits.npz").exists()
    assert "total parameters: 31,530" in result.stdout                 # summary() printed its table


def test_functional_example_runs():
    namespace = {}
    exec(compile(_block("## The functional ops"), "README.md", "exec"), namespace)
    assert tuple(namespace["y"].shape) == (8, 16, 28, 28)
    assert namespace["db"] is None


def test_performance_table_quotes_the_committed_results():
    """Every row of the README's performance tables is a case of the results file named in the text above
    the table (benchmarks/results/<name>.md, whose .json the harness wrote), with its figures as written."""
    import json
    import re
    section = README.read_text().split("## Performance", 1)[1].split("\n## ", 1)[0]
    tables, source = 0, None
    for block in section.split("\n\n"):
        rows = [line.strip("|").split("|") for line in block.splitlines()
                if line.startswith("| ") and not line.startswith("| case")]
        if not rows:
            named = re.findall(r"benchmarks/results/([\w-]+)\.md", block)
            source = named[-1] if named else source
            continue
        assert source is not None, "a performance table must follow the name of its results file"
        results = json.loads((README.parent / "benchmarks" / "results" / f"{source}.json").read_text())["results"]
        tables += 1
        for row in rows:
            name, ours, theirs, ratio = (cell.strip() for cell in row[:4])
            match = next((r for r in results if r["name"] == name), None)
            assert match is not None, f"README row {name!r} is not a case in {source}.json"
            assert (ours, theirs, ratio) == (f"{match['xpcnn_ms']:.2f}", f"{match['torch_ms']:.2f}",
                                             f"{match['ratio']:.2f}"), name
            if len(row) > 4:          # a spread column: the 25th-75th percentile of the paired ratios
                assert row[4].strip() == "{:.2f}-{:.2f}".format(*match["ratio_quartiles"]), name
    assert tables >= 1
