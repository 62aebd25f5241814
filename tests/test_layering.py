"""The package's import graph has no circle and keeps the layers docs/architecture.md states.

Counted: every ``import minetrain...`` and ``from ... import ...`` naming a minetrain module, absolute or
relative (``from . import x``, ``from .x import y``), wherever it stands (module level, inside functions,
``if TYPE_CHECKING`` and ``__main__`` blocks). ``from a.b import c`` is an edge to ``a.b.c`` when that is
a module, else to ``a.b``. Not counted: the implicit import of a module's parent packages (every package
whose ``__init__`` re-exports a submodule would be a circle), and imports by name in strings
(``importlib.import_module`` in ``cli.main``, the policy registry's ``"module:Class"`` entries).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minetrain"

# Bottom up; a module imports from its own layer or a lower one (docs/architecture.md, "Layers").
LAYERS = (
    ("minetrain", "minetrain.errors", "minetrain.files", "minetrain.actions"),
    ("minetrain.data",),
    ("minetrain.models",),
    ("minetrain.offline",),
    ("minetrain.evaluation",),
    ("minetrain.cli",),
)
# What models may read of data: the store's formats (compressed frames, the data-only unpickler).
MODELS_FROM_DATA = {"minetrain.data.store.codecs", "minetrain.data.store.safe_pickle"}


def module_names(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package) for every .py file under ``root``."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        names[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same top-level package it imports (see the module docstring)."""
    modules = module_names(root)
    top = root.name
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    child = f"{source}.{alias.name}"
                    targets.add(child if child in modules else source)
        graph[name] = {t for t in targets if t in modules and t != name and t.split(".")[0] == top}
    return graph


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_of(module: str) -> int:
    if module == "minetrain":
        return 0
    for level, packages in enumerate(LAYERS):
        if any(in_package(module, p) for p in packages if p != "minetrain"):
            return level
    raise AssertionError(f"{module} is in no layer; add its package to LAYERS and docs/architecture.md")


def test_the_graph_sees_relative_and_function_level_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n    return g\n")
    (pkg / "c.py").write_text("from pkg.sub import b\ndef g():\n    pass\n")
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.sub": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.c"}, "pkg.c": {"pkg.sub.b"}}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


def test_no_import_circle() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 50  # the walk found the package
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"import circle: {' -> '.join(err.args[1])}")


def test_imports_go_down_the_layers() -> None:
    upward = [
        f"{source} -> {target}"
        for source, targets in sorted(import_graph(PACKAGE).items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(source)
    ]
    assert upward == []


def test_models_read_only_the_store_formats_of_data_and_offline_nothing_of_data() -> None:
    crossing = [
        f"{source} -> {target}"
        for source, targets in sorted(import_graph(PACKAGE).items())
        for target in sorted(targets)
        if in_package(target, "minetrain.data")
        and (
            in_package(source, "minetrain.offline")
            or (in_package(source, "minetrain.models") and target not in MODELS_FROM_DATA)
        )
    ]
    assert crossing == []
