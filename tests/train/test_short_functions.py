"""The training floor stays readable: no function or method in xpcnn/train/ is longer than 40 lines,
counted from its def line to its last line (docstring included)."""
import ast
import pathlib

import xpcnn

LIMIT = 40


def _lengths(source: str):
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_function_in_the_train_package_is_over_40_lines():
    folder = pathlib.Path(xpcnn.__file__).parent / "train"
    files = sorted(folder.glob("*.py"))
    assert len(files) >= 5
    too_long = [f"{path.name}:{line} {name} ({length} lines)" for path in files
                for name, line, length in _lengths(path.read_text()) if length > LIMIT]
    assert too_long == []


def test_the_length_rule_counts_from_the_def_line_to_the_last_line():
    body = "\n".join(f"    x{i} = {i}" for i in range(39))
    assert list(_lengths(f"def f():\n{body}\n")) == [("f", 1, 40)]
    assert [length for *_, length in _lengths(f"def g():\n    '''doc'''\n{body}\n")] == [41]
