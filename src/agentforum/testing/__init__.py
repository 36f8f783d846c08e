"""Test agents without a language model: strategies, a scripted model, a stateless check.

- Hypothesis strategies: :func:`contents`, :func:`metadata`, :func:`messages`,
  :func:`conversations`, :func:`requests`.
- :class:`ScriptedModel`, a deterministic stand-in for a language model, and
  :class:`ScriptedCall`, what it records of each call.
- :func:`assert_stateless`, a property test: the same request gets the same responses.
- A pytest plugin (:mod:`agentforum.testing.pytest_plugin`) with a ``forum`` fixture.

Install the optional dependencies with ``pip install "agentforum[testing]"`` (Hypothesis and
pytest). The names are imported when first used: pytest, which imports this package for the
plugin in every project where agentforum is installed, imports nothing more, and
:class:`ScriptedModel` needs neither Hypothesis nor pytest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._scripted import ScriptedCall as ScriptedCall
    from ._scripted import ScriptedModel as ScriptedModel
    from ._stateless import assert_stateless as assert_stateless
    from ._strategies import contents as contents
    from ._strategies import conversations as conversations
    from ._strategies import messages as messages
    from ._strategies import metadata as metadata
    from ._strategies import requests as requests

__all__ = (
    "ScriptedCall",
    "ScriptedModel",
    "assert_stateless",
    "contents",
    "conversations",
    "messages",
    "metadata",
    "requests",
)

#: The private module that defines each public name.
_SOURCES: Final = {
    "ScriptedCall": "._scripted",
    "ScriptedModel": "._scripted",
    "assert_stateless": "._stateless",
    "contents": "._strategies",
    "conversations": "._strategies",
    "messages": "._strategies",
    "metadata": "._strategies",
    "requests": "._strategies",
}


def __getattr__(name: str) -> object:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(source, __name__)
    # Every public name of that module at once, each saying ``agentforum.testing.X`` in
    # reprs and docs, as the names of ``agentforum`` do.
    for public, where in _SOURCES.items():
        if where == source:
            value = getattr(module, public)
            if getattr(value, "__module__", "").startswith(__name__ + "."):
                value.__module__ = __name__
            globals()[public] = value
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
