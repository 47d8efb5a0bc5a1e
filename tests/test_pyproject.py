"""What pyproject.toml promises: the extras the docs name, and a test run whose summary is not buried."""
import pathlib

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
PYPROJECT = tomllib.loads((pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def test_the_onnx_extra_brings_onnx_runtime_that_docs_interop_runs():
    names = {requirement.split(">")[0].split("=")[0].strip() for requirement in
             PYPROJECT["project"]["optional-dependencies"]["onnx"]}
    assert {"onnx", "onnxruntime"} <= names


def test_the_test_summary_lists_failures_and_errors_not_every_skip():
    options = PYPROJECT["tool"]["pytest"]["ini_options"]["addopts"].split()
    assert "-p" in options and "no:cacheprovider" in options
    report = [option[2:] for option in options if option.startswith("-r")]
    assert report and not any(letter in chars for chars in report for letter in "saA"), report
