"""The house plan: every module of xpcnn has a floor, imports point down (or across a floor without a cycle),
function-level imports included, and only the xpcnn.backend package and xpcnn.testing import PyTorch.

The floors, bottom to top (docs/architecture.md explains each room):
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "xpcnn"

#: module (or package prefix) -> floor; a module takes the floor of its longest listed prefix.
FLOORS = {
    "xpcnn.backend": 0, "xpcnn.config": 0, "xpcnn.cores": 0, "xpcnn.checks": 0, "xpcnn._files": 0, "xpcnn._version": 0,
    "xpcnn.datasets": 1, "xpcnn.init": 1,
    "xpcnn.functional": 2, "xpcnn.reference": 2, "xpcnn.gradcheck": 2,
    "xpcnn.layers": 3,
    "xpcnn.optim": 4, "xpcnn.checkpoint": 4, "xpcnn.distributed": 4,
    "xpcnn.train": 5, "xpcnn.callbacks": 5, "xpcnn.plots": 5, "xpcnn.serialization": 5, "xpcnn.summary": 5,
    "xpcnn.model": 6,
    "xpcnn.testing": 7, "xpcnn.zoo": 7, "xpcnn.export": 7, "xpcnn.teach": 7,
    "xpcnn.cli": 8, "xpcnn.__main__": 8, "xpcnn": 8,
}
#: the rooms of floor 0's backend package, bottom to top: convert knows no backend names, registry names
#: them (and the backend in force), random and transfer use both
BACKEND_ROOMS = {"xpcnn.backend.convert": 0, "xpcnn.backend.registry": 1, "xpcnn.backend.random": 2,
                 "xpcnn.backend.transfer": 2}
#: the modules that may import PyTorch: the backend package (any of its modules) and the test helpers
TORCH_ALLOWED = ("xpcnn.backend", "xpcnn.testing")


def _may_import_torch(module: str) -> bool:
    return any(module == allowed or module.startswith(allowed + ".") for allowed in TORCH_ALLOWED)


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def floor(module: str) -> int:
    prefix = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len, default=None)
    if prefix is None:
        raise AssertionError(f"{module} has no floor in tests/test_architecture.py (add it, and to docs/architecture.md)")
    return FLOORS[prefix]


def imports(module: str) -> set[str]:
    """Every xpcnn module ``module`` imports, at any depth of its code (functions included)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:      # `from pkg import submodule` imports the submodule
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {name for name in found if name == "xpcnn" or name.startswith("xpcnn.")} - {module}


GRAPH = {module: {target for target in imports(module) if target in MODULES} for module in MODULES}


def test_every_module_has_a_floor():
    for module in MODULES:
        floor(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_never_run_up_a_floor(module):
    upward = sorted(target for target in GRAPH[module] if floor(target) > floor(module))
    assert upward == [], f"{module} (floor {floor(module)}) imports {upward} from above"


def test_there_is_no_import_cycle():
    # the package __init__ files re-export their modules: an __init__ importing its own children is not a cycle
    def edges(module):
        return {t for t in GRAPH[module] if not (MODULES[module].name == "__init__.py" and t.startswith(module + "."))
                and not (MODULES.get(t) and MODULES[t].name == "__init__.py" and module.startswith(t + "."))}

    state = {}

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(edges(module)):
            if state.get(target) == "open":
                cycle = trail[trail.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])


def test_the_backend_package_has_its_planned_rooms_and_imports_point_down_them():
    rooms = {module for module in MODULES if module.startswith("xpcnn.backend.")}
    assert rooms == set(BACKEND_ROOMS), "add the module to BACKEND_ROOMS (and docs/architecture.md)"
    for module, room in BACKEND_ROOMS.items():
        upward = sorted(t for t in GRAPH[module] if t == "xpcnn.backend" or BACKEND_ROOMS.get(t, -1) > room)
        assert upward == [], f"{module} imports {upward} from above it in the backend package"


def test_only_the_backend_package_and_testing_import_torch():
    offenders = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name == "torch" or name.startswith("torch.") for name in names) and not _may_import_torch(module):
                offenders.append(module)
    assert offenders == []


def test_no_benchmark_harness_in_the_package():
    assert not (PACKAGE / "bench.py").exists()
    assert all("benchmarks" not in imports(module) for module in MODULES)



@pytest.mark.parametrize("module,name", [("xpcnn.optim.base", "Optimizer"), ("xpcnn.model", "Sequential")])
def test_the_rooms_readers_spend_their_time_in_stay_under_200_lines(module, name):
    """The optimizer base class and Sequential each fit on a few screens (their bodies, docstrings included)."""
    tree = ast.parse(MODULES[module].read_text())
    found = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name]
    assert len(found) == 1, f"{module} defines no class {name}"
    lines = found[0].end_lineno - found[0].lineno + 1
    assert lines < 200, f"{module}.{name} is {lines} lines"
