"""The API reference (docs/api.md) documents every public name once, and nothing else.

The public API is the ``__all__`` of ``agentforum`` and of its public sub-packages. The
reference is made of autodoc directives (``.. autoclass:: agentforum.Forum``) in MyST
``{eval-rst}`` blocks; this test reads their targets from the Markdown source, so it needs
no Sphinx. ``nox -s docs`` builds the page, and fails on a target that does not import.
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "api.md"

#: The packages whose ``__all__`` is public API.
PACKAGES = (
    "agentforum",
    "agentforum.agents",
    "agentforum.testing",
    "agentforum.llms",
    "agentforum.llms.openai",
    "agentforum.otel",
    "agentforum.llms.anthropic",
    "agentforum.ui",
    "agentforum.mcp",
)
#: Every public module, and the modules the reference may describe: those packages, the
#: command line (documented on docs/cli.md) and the pytest plugin (an entry point).
MODULES = {*PACKAGES, "agentforum.cli", "agentforum.testing.pytest_plugin"}

#: An autodoc directive (or ``.. module::``) and its target, in an ``{eval-rst}`` block; the
#: target may be followed by the signature to show (``MCPTool()``: not its constructor's).
_DIRECTIVE = re.compile(
    r"^\s*\.\. (?P<kind>auto\w+|module|currentmodule)::\s*(?P<target>[^\s(]+)(\(.*\))?\s*$"
)
_MODULE_KINDS = {"automodule", "module", "currentmodule"}


def _directives() -> list[tuple[str, str]]:
    """The ``(directive, target)`` pairs of the reference's ``{eval-rst}`` blocks, in order."""
    found = []
    in_rst = False
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        fence = line.strip()
        if fence.startswith("```"):
            in_rst = fence == "```{eval-rst}"
            continue
        if in_rst and (match := _DIRECTIVE.match(line)):
            found.append((match["kind"], match["target"]))
    return found


def _documented() -> Counter[str]:
    """How many times the reference documents each object (modules apart)."""
    return Counter(target for kind, target in _directives() if kind not in _MODULE_KINDS)


def _public() -> dict[str, object]:
    """Every public name, qualified (``agentforum.testing.ScriptedModel``), and its value."""
    names = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            names[f"{package}.{name}"] = getattr(module, name)
    # agentforum.cli exports the command line's entry point; the commands are on docs/cli.md.
    names["agentforum.cli.main"] = importlib.import_module("agentforum.cli").main
    # Public, but not in __all__ (as in trio and anyio): star imports do not bind it.
    names["agentforum.__version__"] = importlib.import_module("agentforum").__version__
    return names


def test_the_reference_is_read() -> None:
    """The parser finds the directives (a reference it could not read would pass vacuously)."""
    kinds = {kind for kind, _ in _directives()}
    assert {"autoclass", "autoexception", "autofunction", "autodata", "automodule"} <= kinds


def test_every_public_name_is_documented_once() -> None:
    documented = _documented()
    missing = sorted(name for name in _public() if documented[name] == 0)
    repeated = sorted(name for name in _public() if documented[name] > 1)
    assert not missing, f"public names missing from docs/api.md: {missing}"
    assert not repeated, f"public names documented more than once in docs/api.md: {repeated}"


def test_the_reference_documents_nothing_private() -> None:
    public = _public()
    extra = sorted(set(_documented()) - set(public))
    assert not extra, f"docs/api.md documents names that are not public: {extra}"
    modules = {target for kind, target in _directives() if kind in _MODULE_KINDS}
    assert modules <= MODULES, f"docs/api.md describes private modules: {modules - MODULES}"


@pytest.mark.parametrize(("name", "value"), sorted(_public().items()))
def test_each_name_has_the_directive_of_its_kind(name: str, value: object) -> None:
    """Exceptions with autoexception, classes with autoclass, functions with autofunction."""
    if typing.get_origin(value) is not None:  # JSONValue, AgentFunction (before inspect:
        expected = "autodata"  # on Python 3.10, isclass() is true of Callable[...] aliases)
    elif isinstance(value, type) and issubclass(value, BaseException):
        expected = "autoexception"
    elif inspect.isclass(value):
        expected = "autoclass"
    elif inspect.isfunction(value):
        expected = "autofunction"
    else:
        expected = "autodata"
    kinds = [kind for kind, target in _directives() if target == name]
    assert kinds == [expected], f"{name} is documented with {kinds}, not [{expected!r}]"
