"""How a package of agentforum makes its public names its own."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


def claim(namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Make the classes and functions ``names`` of a package's namespace say the package.

    So reprs, tracebacks and the docs say ``agentforum.Forum``, not the private module that
    defines it, as trio and httpx do. Type aliases (``JSONValue``, ``StopCondition``) keep
    their module: they belong to ``typing`` or ``collections.abc`` (on Python 3.10 such an
    alias passes for a type, and its ``__module__`` is read-only).
    """
    package = namespace["__name__"]
    assert isinstance(package, str)
    for name in names:
        value = namespace[name]
        if isinstance(value, (type, types.FunctionType)) and value.__module__.startswith(
            "agentforum."
        ):
            value.__module__ = package
