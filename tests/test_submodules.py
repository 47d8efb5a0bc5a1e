"""After `import xpcnn`, every public submodule is an attribute (imported on first use, so the import stays light)."""
import subprocess
import sys


def test_submodules_are_attributes_after_import_xpcnn_and_load_on_first_use():
    code = "\n".join([
        "import sys, xpcnn",
        "lazy = ('xpcnn.zoo', 'xpcnn.export', 'xpcnn.plots', 'xpcnn.teach', 'xpcnn.testing')",
        "assert not [name for name in lazy if name in sys.modules], [n for n in lazy if n in sys.modules]",
        "assert callable(xpcnn.zoo.resnet20) and callable(xpcnn.export.to_onnx)",
        "assert callable(xpcnn.datasets.load_mnist_sample) and callable(xpcnn.plots.plot_history)",
        "assert {'zoo', 'export', 'datasets'} <= set(dir(xpcnn))",
        "try:\n    xpcnn.no_such_thing\nexcept AttributeError as error:\n    print(error)",
    ])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "module 'xpcnn' has no attribute 'no_such_thing'"
