"""Frozen JSON values: what message metadata and call keyword arguments may hold."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeAlias

JSONValue: TypeAlias = (
    bool | int | float | str | tuple["JSONValue", ...] | Mapping[str, "JSONValue"] | None
)
"""A value allowed in ``metadata`` and call ``kwargs``, once frozen.

``None``, ``bool``, ``int``, finite ``float``, ``str``, tuples of these and mappings with ``str``
keys, nested to any depth. Lists are accepted as input and stored as tuples; mappings are stored
as immutable, hashable mappings.
"""


class FrozenDict(Mapping[str, JSONValue]):
    """An immutable, hashable mapping of frozen JSON values (the type of ``metadata``)."""

    __slots__ = ("_data", "_hash")

    _data: dict[str, JSONValue]
    _hash: int | None

    def __init__(self, data: Mapping[str, object] = (), /) -> None:  # type: ignore[assignment]
        frozen = freeze_mapping(data, "") if data else {}
        object.__setattr__(self, "_data", frozen)
        object.__setattr__(self, "_hash", None)

    @classmethod
    def _trusted(cls, data: dict[str, JSONValue]) -> FrozenDict:
        self = cls.__new__(cls)
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_hash", None)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __getitem__(self, key: str) -> JSONValue:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(frozenset(self._data.items())))
        return self._hash  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenDict):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._data)


EMPTY = FrozenDict._trusted({})


def _describe(path: str) -> str:
    return path or "the value"


def freeze(value: object, path: str) -> JSONValue:
    """Return ``value`` as a frozen JSON value.

    Raises:
        TypeError: a value (or mapping key) that JSON cannot hold; the message names its path.
        ValueError: a float that is NaN or infinite, or a string that is not valid Unicode.
    """
    kind = type(value)
    if value is None or kind is bool:
        return value  # type: ignore[return-value]
    if kind is str:
        check_text(value, path)  # type: ignore[arg-type]
        return value  # type: ignore[return-value]
    if kind is int:
        return value  # type: ignore[return-value]
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ValueError(f"{_describe(path)} is {value!r}: only finite floats are allowed")
        return value  # type: ignore[return-value]
    if isinstance(value, FrozenDict):
        return value
    if isinstance(value, Mapping):
        return FrozenDict._trusted(freeze_mapping(value, path))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item, f"{path}[{index}]") for index, item in enumerate(value))
    # Subclasses of the JSON scalar types (enums, say) are stored as their plain value.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return operator.index(value)
    if isinstance(value, float):
        return freeze(float(value), path)
    if isinstance(value, str):
        return freeze(str.__str__(value), path)
    raise TypeError(
        f"{_describe(path)} is of type {kind.__qualname__}, which is not a JSON value "
        "(allowed: None, bool, int, float, str, list, tuple, and mappings with str keys)"
    )


def freeze_mapping(value: Mapping[Any, object], path: str) -> dict[str, JSONValue]:
    """Freeze every value of a mapping whose keys must be strings."""
    frozen: dict[str, JSONValue] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(
                f"{_describe(path)} has a key {key!r} of type {type(key).__qualname__}: "
                "mapping keys must be str"
            )
        key = str.__str__(key)
        check_text(key, f"{path}[{key!r}]")
        frozen[key] = freeze(item, f"{path}[{key!r}]")
    return frozen


def check_text(text: str, path: str) -> None:
    """Raise ValueError if ``text`` cannot be encoded as UTF-8 (it holds a lone surrogate)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{_describe(path)} is not valid Unicode text (lone surrogate at index {exc.start})"
            ) from None
