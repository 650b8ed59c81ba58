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
    m.name for m in pkgutil.iter_modules(tltf.__path__, "tltf.") if not m.name.split(".")[-1].startswith("_")
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


@pytest.mark.parametrize("name", MODULES)
def test_every_module_has_a_docs_page(name):
    pages = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    assert f"::: {name}" in pages, f"no docs page renders `::: {name}`"


def test_top_level_names_are_declared_and_importable():
    assert tltf.__version__
    assert "build_classifier" in tltf.__all__
    for name in tltf.__all__:
        assert getattr(tltf, name) is not None


@pytest.mark.parametrize("name", ["tltf.backbones", "tltf.heads", "tltf.models"])
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
