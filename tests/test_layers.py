"""The layers point one way: every import of the package, parsed, checked against the layer order.

Reads every `mmkeras/**/*.py` with `ast` (imports inside functions included,
and the lazy `_EXPORTS` tables of the package `__init__`s, which are imports
too), builds the import graph between files, and fails on a cycle between
files or packages, on an import of a higher layer or of a sibling in the
same layer, and on an import hidden inside a function outside the CLI.
The order is written out in `docs/architecture.md`; keep the two in step.
"""
from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmkeras"

# Bottom to top. A unit (a top-level module or package of mmkeras) may import its own files and
# any unit of a LOWER rank; units that share a rank (branches and fusion, export and serving)
# know nothing of each other.
LAYERS = (
    ("_version", "_lazy", "checks", "registry"),  # no mmkeras imports at all
    ("spec", "wire"),                             # what a dataset holds; what TF Serving reads
    ("datasets",),                                # builders of the bundled data
    ("data",),                                    # decoders, manifests, pipelines
    ("branches", "fusion"),                       # encoders per modality; fusion layers
    ("models",),                                  # where branches and fusion meet
    ("training",),                                # configs, strategy, loop, run folder layout
    ("evaluation",),                              # metrics, reliance, plots, reports
    ("tuning",),                                  # KerasTuner searches whose trials are train runs
    ("export", "serving"),                        # SavedModels for TF Serving; the client
    ("alignment",),                               # dual encoders, built from all of the above
    ("runs",),                                    # run-folder adapters
    ("mmkeras",),                                 # the public API (`mmkeras/__init__.py`)
    ("cli",),                                     # the `mmkeras` command
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
# The serving client speaks TF Serving's protocol and needs nothing else of the package.
SERVING_MAY_IMPORT = {"serving", "wire", "spec", "_lazy", "checks", "registry", "_version"}
# Where an import inside a function is the rule: the CLI starts TensorFlow only when a command runs.
FUNCTION_IMPORTS_ALLOWED = {"mmkeras.cli"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mmkeras"


def _known(name: str) -> str | None:
    """The package module `name` refers to (a module, or the module holding an imported name)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in MODULES else None


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of the package in `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(child) for child in ast.walk(node) if child is not node)
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from package import submodule` imports the submodule; `from module import name`, the module.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "_EXPORTS" for target in node.targets
        ) and isinstance(node.value, ast.Dict):  # lazy tables: name -> module imported on first use
            names = [value.value for value in node.value.values if isinstance(value, ast.Constant)]
        for name in names:
            target = _known(name) if name.startswith("mmkeras") else None
            if target is not None and target != module:
                found.append((target, node.lineno, id(node) in inside))
    return sorted(set(found))


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_parser_sees_the_package():
    assert len(MODULES) > 50
    assert any(target == "mmkeras.fusion" for target, _, _ in GRAPH["mmkeras.models.saving"])
    # Imports inside functions and lazy tables count.
    assert any(inside for target, _, inside in GRAPH["mmkeras.cli"])
    assert any(target == "mmkeras.training.loop" for target, _, _ in GRAPH["mmkeras"])


def test_every_unit_has_a_layer():
    missing = sorted({_unit(module) for module in MODULES} - set(RANK))
    assert not missing, f"Place {missing} in LAYERS here and in docs/architecture.md."


def test_no_cycle_between_files():
    graph = {module: {target for target, _, _ in imports} for module, imports in GRAPH.items()}
    assert _cycles(graph) == []


def test_no_cycle_between_packages():
    graph = collections.defaultdict(set)
    for module, imports in GRAPH.items():
        graph[_unit(module)].update(_unit(target) for target, _, _ in imports if _unit(target) != _unit(module))
    assert _cycles(graph) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    unit = _unit(module)
    wrong = [
        f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports {target} "
        f"({_unit(target)}, layer {RANK[_unit(target)]}; {unit} is layer {RANK[unit]})"
        for target, line, _ in GRAPH[module]
        if _unit(target) != unit and RANK[_unit(target)] >= RANK[unit]
    ]
    assert not wrong, "Upward or sideways imports:\n" + "\n".join(wrong)


def test_the_serving_client_needs_only_the_wire_format():
    wrong = [
        f"{module} imports {target}"
        for module, imports in GRAPH.items() if _unit(module) == "serving"
        for target, _, _ in imports if _unit(target) not in SERVING_MAY_IMPORT
    ]
    assert not wrong


def test_imports_sit_at_module_level():
    hidden = [
        f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports {target} inside a function"
        for module, imports in GRAPH.items() if module not in FUNCTION_IMPORTS_ALLOWED
        for target, line, inside in imports if inside
    ]
    assert not hidden, "An import inside a function dodges a cycle; move the code to its layer:\n" + "\n".join(hidden)
