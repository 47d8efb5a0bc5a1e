"""Every name xpcnn calls on an array namespace exists in array-api-compat's CuPy namespace, with the
keywords xpcnn passes. CuPy and array_api_compat.cupy import on a machine without a GPU (only creating
an array needs one), so this runs wherever a CuPy wheel is installed (CI installs one)."""
import ast
import inspect
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "xpcnn"
NAMESPACE_NAMES = {"xp"}                    # how xpcnn names an array namespace in its code
NUMPY_ONLY = {"reference.py"}               # the plain-loop float64 oracle: NumPy alone (there `xp` is x padded)


def _calls():
    """{name: set of keyword names} for every ``xp.NAME`` (called or not) and ``<...>.xp.NAME`` in xpcnn."""
    found: dict[str, set] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name in NUMPY_ONLY:
            continue
        tree = ast.parse(path.read_text())
        called = {id(node.func): node for node in ast.walk(tree) if isinstance(node, ast.Call)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            base = node.value
            is_namespace = (isinstance(base, ast.Name) and base.id in NAMESPACE_NAMES) or (
                isinstance(base, ast.Attribute) and base.attr in NAMESPACE_NAMES)
            if is_namespace:
                keywords = found.setdefault(node.attr, set())
                call = called.get(id(node))
                if call is not None:
                    keywords |= {k.arg for k in call.keywords if k.arg}
    return found


def test_the_scan_finds_the_namespace_calls():
    calls = _calls()
    assert {"matmul", "reshape", "permute_dims", "astype", "zeros", "concat", "argmax"} <= set(calls)
    assert {"dtype", "device"} <= calls["zeros"]


def test_every_name_and_keyword_exists_in_the_cupy_namespace():
    pytest.importorskip("cupy", reason="CuPy is not installed (pip install cupy-cuda12x; no GPU is needed here)")
    import array_api_compat.cupy as cupy_namespace
    missing, bad_keywords = [], []
    for name, keywords in sorted(_calls().items()):
        if not hasattr(cupy_namespace, name):
            missing.append(name)
            continue
        member = getattr(cupy_namespace, name)
        if not keywords or not callable(member):
            continue
        try:
            parameters = inspect.signature(member).parameters
        except (TypeError, ValueError):      # a C ufunc without a signature: it takes only the standard's keywords
            continue
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        unknown = sorted(k for k in keywords if k not in parameters and not takes_any)
        if unknown:
            bad_keywords.append(f"{name}({', '.join(unknown)})")
    assert missing == [] and bad_keywords == []
