"""Sphinx configuration of agentforum's documentation (``python -m nox -s docs`` builds it).

The pages are Markdown (MyST); the API reference (``api.md``) is generated from the
docstrings by autodoc and napoleon (Google style). The build is nitpicky and runs with
warnings as errors, so a link to a missing page or heading anchor, or a reference to a
Python object that is not documented, fails it. Nothing is fetched from the network: the
references to other projects (Python, AnyIO, the openai and anthropic SDKs, ...) are listed
one by one in ``nitpick_ignore`` below and render as code, not links.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

from sphinx.pycode import ModuleAnalyzer

import agentforum

if TYPE_CHECKING:
    from docutils.nodes import Element, TextElement
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

project = "agentforum"
author = "agentforum developers"
copyright = "agentforum developers"
release = _version("agentforum")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# -- MyST ------------------------------------------------------------------------------------

# Anchors for the headings of levels 1 to 3 (``concepts.md#5-backtracking-and-branching``); a
# link to a page or an anchor that does not exist is a warning, so an error in this build.
myst_heading_anchors = 3

# -- autodoc and napoleon --------------------------------------------------------------------

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
# The public type aliases by their name, not expanded.
autodoc_type_aliases = {
    "JSONValue": "JSONValue",
    "AgentFunction": "AgentFunction",
}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

#: Public classes that agentforum makes and hands out, never constructed by their users:
#: their signatures (which take private objects) are not shown.
NOT_CONSTRUCTED = {
    "agentforum.Agent",  # made by forum.agent
    "agentforum.AgentCall",  # made by agent.start_asking()
    "agentforum.InteractionContext",  # given to the agent function
    "agentforum.MessagePromise",  # items of a MessageSequence
    "agentforum.MessageSequence",  # returned by agent.ask()
    "agentforum.MessageStore",  # a Protocol
    "agentforum.llms.openai.OpenAIAgent",  # made by openai_agent()
    "agentforum.llms.anthropic.AnthropicAgent",  # made by anthropic_agent()
}

#: Private names in signatures, and what is shown instead: the private type aliases of
#: agentforum.testing expanded, the private iterator classes as the protocol they implement.
PRIVATE_IN_SIGNATURES = {
    "Replies": "str | Sequence[str] | Callable[[list[Message]], str | Awaitable[str]]",
    "Chunking": "Literal['words', 'characters'] | int",
    "Point": "int | tuple[int, int]",
    # set_ref's expected: a hash, None, or left out (the sentinel ANY: no condition).
    "Expected": "str | None",
    "Request": "str | Message | list",
    "agentforum._promises.TokenIterator": "AsyncIterator[str]",
    "agentforum._promises.PromiseIterator": "AsyncIterator[MessagePromise]",
}

# -- Nitpicky references ---------------------------------------------------------------------

nitpicky = True
# References to other projects' documentation, which this offline build has no inventory
# of: each is listed, and renders as code. agentforum's own names must all resolve. (Python's
# built-in classes and the names of ``typing``, unqualified, need no entry: Sphinx accepts
# them as they are.)
_EXTERNAL = {
    "py:class": [
        # Python
        "os.PathLike",
        "collections.abc.AsyncIterable",
        "collections.abc.Awaitable",
        "collections.abc.Callable",
        "collections.abc.Iterable",
        "collections.abc.Mapping",
        "collections.abc.Sequence",
        "AbstractAsyncContextManager",
        "contextlib.AbstractAsyncContextManager",
        "TextIO",
        "typing.TextIO",
        # Hypothesis
        "SearchStrategy",
        "hypothesis.strategies.SearchStrategy",
        # the openai SDK
        "openai.AsyncOpenAI",
        # the OpenTelemetry API
        "TracerProvider",
        "opentelemetry.trace.TracerProvider",
        # the anthropic SDK
        "anthropic.AsyncAnthropic",
        # the mcp SDK: the server that agentforum.mcp.mcp_server makes
        "Server",
        "mcp.server.lowlevel.Server",
    ],
    "py:exc": ["anyio.ClosedResourceError"],
    "py:func": ["anyio.to_thread.run_sync"],
    "py:mod": ["sqlite3"],
}
nitpick_ignore = [(role, target) for role, targets in _EXTERNAL.items() for target in targets]

# -- HTML ------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"agentforum {release}"


# -- agentforum's public names ---------------------------------------------------------------


def _public_packages() -> dict[str, Any]:
    """The packages whose ``__all__`` make the public API, imported."""
    names = [
        "agentforum",
        "agentforum.testing",
        "agentforum.llms",
        "agentforum.llms.openai",
        "agentforum.otel",
        "agentforum.llms.anthropic",
    ]
    packages = {name: importlib.import_module(name) for name in names}
    for package in packages.values():
        for name in package.__all__:
            getattr(package, name)  # agentforum.testing imports its names when first used
    return packages


def _cached_property_docs(analyzer: ModuleAnalyzer) -> dict[tuple[str, str], list[str]]:
    """The docstrings of the ``functools.cached_property`` methods of a module's classes.

    attrs turns them into slots of its frozen classes, which keep no docstring.
    """
    docs: dict[tuple[str, str], list[str]] = {}
    for node in ast.parse(analyzer.code).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and any(
                ast.unparse(decorator).endswith("cached_property")
                for decorator in item.decorator_list
            ):
                docstring = ast.get_docstring(item)
                if docstring:
                    docs[node.name, item.name] = [*docstring.splitlines(), ""]
    return docs


def _merge_private_analyzers(packages: dict[str, Any]) -> None:
    """Let autodoc find attribute docs and source order in the modules that define names.

    A public name says it belongs to its package (``agentforum.Forum.__module__`` is
    ``"agentforum"``), so autodoc reads the package's ``__init__.py`` for the ``#:``
    comments of attributes, for the docstrings of module-level aliases and for the source
    order of members, and finds none of them there. The analyzer of each package is given
    those of the private modules below it, where the names are defined.
    """
    for package in packages:
        public = ModuleAnalyzer.for_module(package)
        public.analyze()
        private = sorted(
            name
            for name in sys.modules
            if name.startswith(package + ".")
            and name.removeprefix(package + ".").startswith("_")
            and name.removeprefix(package + ".").split(".")[0].startswith("_")
        )
        for name in private:
            analyzer = ModuleAnalyzer.for_module(name)
            analyzer.analyze()
            public.attr_docs = {
                **analyzer.attr_docs,
                **_cached_property_docs(analyzer),
                **public.attr_docs,
            }
            public.annotations = {**analyzer.annotations, **public.annotations}
            public.overloads = {**analyzer.overloads, **public.overloads}
            public.tagorder = {**analyzer.tagorder, **public.tagorder}
            public.tags = {**analyzer.tags, **public.tags}
            public.finals = [*public.finals, *analyzer.finals]


_PACKAGES = _public_packages()
_merge_private_analyzers(_PACKAGES)


def _clean_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str] | None:
    if what == "class" and name in NOT_CONSTRUCTED:
        return ("", "")
    replacements = [
        (re.compile(rf"(?<![\w.]){re.escape(private)}(?!\w)"), shown)
        for private, shown in PRIVATE_IN_SIGNATURES.items()
    ]
    # A type alias nested in a generic (``Mapping[str, JSONValue]``) and a class in a
    # default value (``kinds=(Message, ...)``) are shown as their names, not their reprs.
    replacements.append((re.compile(r"TypeAliasForwardRef\('([\w.]+)'\)"), r"\1"))
    replacements.append((re.compile(r"<class '([\w.]+)'>"), r"\1"))
    parts = [signature or "", return_annotation or ""]
    for pattern, shown in replacements:
        parts = [pattern.sub(shown, part) for part in parts]
    if parts != [signature or "", return_annotation or ""]:
        return (parts[0], parts[1])
    return None


#: The docstrings of attributes, kept from napoleon, which reads a first line "x: y" as the
#: type x of the attribute; agentforum writes none that way (their types are annotations).
_ATTRIBUTE_DOCSTRINGS: dict[str, list[str]] = {}


def _save_attribute_docstring(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    if what in {"attribute", "data", "property"}:
        _ATTRIBUTE_DOCSTRINGS[name] = list(lines)


def _restore_attribute_docstring(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    saved = _ATTRIBUTE_DOCSTRINGS.pop(name, None)
    if saved is not None:
        lines[:] = saved


def _resolve_core_names(
    app: Sphinx, env: BuildEnvironment, node: Element, contnode: TextElement
) -> Element | None:
    """Resolve ``:class:`Message``` written in a sub-package to ``agentforum.Message``.

    The docstrings of ``agentforum.testing`` and ``agentforum.llms`` name the core classes
    unqualified, as their code imports them.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or target.split(".")[0] not in agentforum.__all__:
        return None
    domain = env.get_domain("py")
    # A type alias in an annotation is a ``class`` reference to a ``data`` object.
    for role in (node["reftype"], "obj"):
        resolved = domain.resolve_xref(
            env, node["refdoc"], app.builder, role, f"agentforum.{target}", node, contnode
        )
        if resolved is not None:
            return resolved
    return None


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-signature", _clean_signature)
    # napoleon processes docstrings at the default priority, 500.
    app.connect("autodoc-process-docstring", _save_attribute_docstring, priority=400)
    app.connect("autodoc-process-docstring", _restore_attribute_docstring, priority=600)
    app.connect("missing-reference", _resolve_core_names)
