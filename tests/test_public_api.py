"""The declared surface: every public name is documented, with an example, in docs/."""

import doctest
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import tltf

DOCS = Path(__file__).resolve().parents[1] / "docs"
MODULES = sorted(
    m.name for m in pkgutil.walk_packages(tltf.__path__, "tltf.")
    if not any(part.startswith("_") for part in m.name.split("."))
)


def _public(module):
    return [(name, getattr(module, name)) for name in getattr(module, "__all__", [])]


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_its_surface(name):
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list), f"{name} has no __all__"
    for public, obj in _public(module):
        assert obj is not None, f"{name}.{public} is listed in __all__ but missing"


@pytest.mark.parametrize("name", MODULES)
def test_every_public_function_has_a_docstring_with_an_example(name):
    module = importlib.import_module(name)
    missing = []
    for public, obj in _public(module):
        # Functions and the classes users construct; result records (dataclasses) are
        # documented by the function that returns them.
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if inspect.isclass(obj) and hasattr(obj, "__dataclass_fields__") and public != "BackboneSpec":
            continue
        doc = inspect.getdoc(obj) or ""
        if "Example" not in doc:
            missing.append(public)
    assert not missing, f"{name}: public names without an `Example:` section: {missing}"


PACKAGES = {m.name for m in pkgutil.walk_packages(tltf.__path__, "tltf.") if m.ispkg}


@pytest.mark.parametrize("name", sorted(set(MODULES) - PACKAGES))  # a package only re-exports
def test_every_module_has_a_docs_page(name):
    pages = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    assert f"::: {name}" in pages, f"no docs page renders `::: {name}`"


def test_top_level_names_are_declared_and_importable():
    assert tltf.__version__
    assert "build_classifier" in tltf.__all__
    for name in tltf.__all__:
        assert getattr(tltf, name) is not None


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def _import_graph() -> dict[str, set[str]]:
    """tltf module -> the tltf modules it imports, at any depth of the code (lazy ones too).

    Names are dotted below `tltf` ("data.decode"); a package is its `__init__` ("data").
    Importing a module runs its package's `__init__` first, so that is an edge too.
    """
    import ast

    root = Path(tltf.__file__).parent

    def name_of(path: Path) -> str:
        parts = path.relative_to(root).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name_of(p) for p in root.rglob("*.py")}
    graph = {}
    for path in root.rglob("*.py"):
        name = name_of(path)
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tltf"):
                base = node.module.removeprefix("tltf").removeprefix(".")
                edges.add(base)
                edges |= {f"{base}.{a.name}".strip(".") for a in node.names}
            elif isinstance(node, ast.Import):
                edges |= {a.name.removeprefix("tltf.") for a in node.names
                          if a.name.startswith("tltf.")}
        for edge in list(edges):  # importing a.b.c runs a's and a.b's __init__ first
            parts = edge.split(".")
            edges |= {".".join(parts[:i]) for i in range(1, len(parts))}
        graph[name] = {e for e in edges if e in modules} - {name, ""}
    return graph


def test_no_import_cycle_inside_tltf():
    """Imports between tltf modules point one way (lazy imports count too)."""
    graph = _import_graph()
    graph = {node: {e for e in edges if not node.startswith(e + ".")}  # a module's own package
             for node, edges in graph.items()}

    def visit(node, stack):
        if node in stack:
            return stack[stack.index(node):] + [node]
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt, stack + [node])
            if cycle:
                return cycle
        return None

    cycles = {" -> ".join(c) for c in (visit(start, []) for start in sorted(graph)) if c}
    assert not cycles, f"import cycles inside tltf: {sorted(cycles)}"


# Each subpackage may import only those of a lower layer (and the private top-level helpers).
_LAYERS = {"data": 0, "backbones": 0, "models": 1, "training": 2, "tune": 3, "evaluation": 3,
           "export": 3, "runs": 4, "cli": 5}


def test_subpackages_import_downwards_only():
    upward = []
    for node, edges in _import_graph().items():
        top = node.split(".")[0]
        if top not in _LAYERS:
            continue
        for edge in edges:
            other = edge.split(".")[0]
            if other in _LAYERS and other != top and _LAYERS[other] >= _LAYERS[top]:
                upward.append(f"{node} -> {edge}")
    assert not upward, f"imports that point up or sideways between subpackages: {sorted(upward)}"
