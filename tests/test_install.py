"""What a plain ``pip install .`` gives: the core dependencies alone must train and draw the curves.

The optional packages (every extra's, test tools included) are hidden from a subprocess by an import
hook, so this runs in the same environment as the rest of the suite.
"""
import importlib.metadata
import re
import subprocess
import sys
import textwrap

import pytest

from test_readme import README

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")


def _module_names(requirement: str) -> set[str]:
    """The importable top-level names of a requirement such as ``"torch>=2.3"``."""
    distribution = re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0]
    names = {module for module, owners in importlib.metadata.packages_distributions().items()
             if any(owner.lower().replace("_", "-") == distribution.lower() for owner in owners)}
    return names or {distribution.replace("-", "_").split("_cuda")[0]}


def _hidden_modules() -> set[str]:
    project = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]
    core = {name for requirement in project["dependencies"] for name in _module_names(requirement)}
    optional = {name for requirements in project["optional-dependencies"].values()
                for requirement in requirements for name in _module_names(requirement)}
    return optional - core


def test_a_plain_install_trains_and_writes_the_learning_curves(tmp_path):
    hidden = sorted(_hidden_modules())
    assert {"torch", "jax", "array_api_strict", "pytest"} <= set(hidden), hidden
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        HIDDEN = {hidden!r}

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HIDDEN:
                    raise ImportError(f"{{name}} is hidden: not part of a plain install")

        for name in list(sys.modules):
            if name.split(".")[0] in HIDDEN:
                del sys.modules[name]
        sys.meta_path.insert(0, Hide())
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("the import hook did not hide torch")
        from xpcnn.cli import main
        sys.exit(main(["train", "--epochs", "1", "--model", "mlp", "--no-progress", "--out", {str(tmp_path)!r}]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"curves:     {tmp_path / 'curves.png'}" in result.stdout
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
