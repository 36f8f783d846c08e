"""The public surface: ``agentforum.__all__`` against what the package really exports."""

from __future__ import annotations

import ast
import inspect
import itertools
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

import agentforum

PUBLIC = agentforum.__all__
PACKAGE_DIR = Path(agentforum.__file__).parent


def _defined_by_us(value: object) -> bool:
    module = getattr(value, "__module__", None)
    return isinstance(module, str) and (module == "agentforum" or module.startswith("agentforum."))


def _is_type_alias(value: object) -> bool:
    # Before Python 3.11, inspect.isclass() is true of ``collections.abc.Callable[...]``.
    return typing.get_origin(value) is not None


def _is_class_or_function(value: object) -> bool:
    if _is_type_alias(value):
        return False
    return inspect.isclass(value) or inspect.isfunction(value)


CLASSES_AND_FUNCTIONS = [
    name for name in PUBLIC if _is_class_or_function(getattr(agentforum, name))
]


def _source_module(name: str) -> str:
    """The private module that ``agentforum/__init__.py`` re-exports ``name`` from."""
    tree = ast.parse((PACKAGE_DIR / "__init__.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            if any((alias.asname or alias.name) == name for alias in node.names):
                return node.module
    raise AssertionError(f"agentforum/__init__.py does not import {name} from a module")


def _assigned_names(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    elif type(node).__name__ == "TypeAlias":  # ``type X = ...``, Python 3.12+
        targets = [node.name]  # type: ignore[attr-defined]
    else:
        return []
    return [target.id for target in targets if isinstance(target, ast.Name)]


def _attribute_docstring(module: str, name: str) -> str | None:
    """The string literal right after the module-level assignment to ``name``, if any."""
    path = PACKAGE_DIR.joinpath(*module.split(".")).with_suffix(".py")
    body = ast.parse(path.read_text(encoding="utf-8")).body
    for node, following in itertools.pairwise(body):
        if name in _assigned_names(node):
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                value = following.value.value
                return value if isinstance(value, str) else None
            return None
    return None


def test_all_is_a_sorted_tuple_without_duplicates() -> None:
    """``__all__`` is a tuple, sorted, with every name once."""
    assert isinstance(PUBLIC, tuple)
    assert list(PUBLIC) == sorted(PUBLIC)
    assert len(set(PUBLIC)) == len(PUBLIC)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_exists(name: str) -> None:
    """Every name in ``__all__`` is an attribute of the package (``import *`` works)."""
    assert hasattr(agentforum, name)


def test_star_import_gives_exactly_all() -> None:
    """``from agentforum import *`` binds exactly the names of ``__all__``."""
    namespace: dict[str, object] = {}
    exec("from agentforum import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(PUBLIC)


def test_no_public_name_is_missing_from_all() -> None:
    """Every public class or function of the package that agentforum defines is in ``__all__``."""
    missing = [
        name
        for name, value in vars(agentforum).items()
        if not name.startswith("_")
        and _is_class_or_function(value)
        and _defined_by_us(value)
        and name not in PUBLIC
    ]
    assert missing == []


#: The optional parts: sub-packages that import the core, never the other way round.
PUBLIC_SUBPACKAGES = {"agents", "cli", "llms", "mcp", "otel", "testing", "ui"}


def test_no_private_module_is_public() -> None:
    """The core's modules are private (underscored): users import from ``agentforum``."""
    modules = [
        name
        for name, value in vars(agentforum).items()
        if isinstance(value, types.ModuleType)
        and name.isidentifier()  # pytest's assertion rewriting adds "@py_builtins"
        and not name.startswith("_")
        and name not in PUBLIC_SUBPACKAGES
    ]
    assert modules == []


def test_the_core_imports_no_optional_part() -> None:
    """Importing agentforum loads none of its optional sub-packages (CLI, testing toolkit)."""
    code = (
        "import sys, agentforum; "
        "print(sorted(m for m in sys.modules if m.startswith(('agentforum.cli', "
        "'agentforum.testing', 'agentforum.llms', 'agentforum.otel', 'agentforum.mcp', "
        "'agentforum.ui', 'openai', 'click', 'rich', 'hypothesis', 'pytest', 'psycopg', "
        "'opentelemetry', 'mcp', 'starlette', 'hypercorn', 'markdown_it'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_ready_made_agents_need_only_the_core() -> None:
    """``agentforum.agents`` is core: importing it loads no optional dependency."""
    code = (
        "import sys, agentforum.agents; "
        "print(sorted(m for m in sys.modules if m.startswith(('agentforum.cli', "
        "'agentforum.testing', 'agentforum.llms', 'openai', 'click', 'rich', "
        "'hypothesis', 'pytest', 'psycopg'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", CLASSES_AND_FUNCTIONS)
def test_public_name_reports_the_package_as_its_module(name: str) -> None:
    """Public classes and functions say ``agentforum.X`` in reprs and docs, not a private path."""
    assert getattr(agentforum, name).__module__ == "agentforum"


@pytest.mark.parametrize("name", sorted(set(PUBLIC) - set(CLASSES_AND_FUNCTIONS)))
def test_other_public_names_are_type_aliases(name: str) -> None:
    """A public name that is neither a class nor a function is a type alias (JSONValue, ...)."""
    assert _is_type_alias(getattr(agentforum, name))


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_is_documented(name: str) -> None:
    """Every public name has its own docstring (an alias: one after its definition)."""
    value = getattr(agentforum, name)
    if _is_type_alias(value):
        # A type alias's runtime object is a typing construct with typing's docstring; its
        # documentation is the attribute docstring under its definition, as Sphinx reads it.
        doc = _attribute_docstring(_source_module(name), name)
    elif inspect.isclass(value):
        doc = vars(value).get("__doc__")
    else:
        doc = value.__doc__
    assert isinstance(doc, str)
    assert doc.strip(), f"{name} has an empty docstring"


def _public_methods() -> list[tuple[str, str]]:
    methods = []
    for class_name in PUBLIC:
        cls = getattr(agentforum, class_name)
        if not inspect.isclass(cls) or _is_type_alias(cls):
            continue
        for attribute in dir(cls):
            if attribute.startswith("_"):
                continue
            owner = next(base for base in cls.__mro__ if attribute in vars(base))
            static = vars(owner)[attribute]
            # Our own methods and properties; slot fields are documented in the class.
            if _defined_by_us(owner) and isinstance(
                static, (types.FunctionType, property, classmethod, staticmethod)
            ):
                methods.append((class_name, attribute))
    return methods


@pytest.mark.parametrize(("class_name", "attribute"), _public_methods())
def test_public_method_is_documented(class_name: str, attribute: str) -> None:
    """Every public method or property of a public class has a docstring (own or inherited)."""
    cls = getattr(agentforum, class_name)
    static = inspect.getattr_static(cls, attribute)
    doc = (
        static.__doc__ if isinstance(static, property) else inspect.getdoc(getattr(cls, attribute))
    )
    assert doc, f"{class_name}.{attribute} has no docstring"
