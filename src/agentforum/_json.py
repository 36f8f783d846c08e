"""Frozen JSON values: what message metadata and call keyword arguments may hold."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from typing import TypeAlias

JSONValue: TypeAlias = (
    bool | int | float | str | Sequence["JSONValue"] | Mapping[str, "JSONValue"] | None
)
"""A value allowed in ``metadata`` and call ``kwargs``.

``None``, ``bool``, ``int``, finite ``float``, ``str``, lists or tuples of these and mappings
with ``str`` keys, nested at most 100 levels deep below the metadata or kwargs mapping
(a :class:`FrozenDict` counts for the levels it holds, wherever it is placed). Once frozen
(as messages and agent functions see them), sequences are tuples and mappings are
immutable, hashable :class:`FrozenDict` objects.
"""


class FrozenDict(Mapping[str, JSONValue]):
    """An immutable, hashable mapping of frozen JSON values (the type of ``metadata``).

    Its values are checked as metadata's are (:data:`JSONValue`): it holds at most 100
    levels of nesting, and placed inside another value it counts for the levels it holds,
    so no nesting of frozen dicts in each other can make a value deeper than that.

    Raises:
        TypeError: a value that JSON cannot hold, or nesting deeper than 100 levels.
        ValueError: a value out of range, as for :class:`Message` metadata.
    """

    __slots__ = ("_data", "_hash", "_height")

    _data: dict[str, JSONValue]
    _hash: int | None
    # Its levels of nesting, itself included (see _height_of); None until first asked.
    _height: int | None

    def __init__(self, data: Mapping[str, object] = (), /) -> None:  # type: ignore[assignment]
        frozen = freeze_mapping(data, "") if data else {}
        object.__setattr__(self, "_data", frozen)
        object.__setattr__(self, "_hash", None)
        object.__setattr__(self, "_height", None)

    @classmethod
    def _trusted(cls, data: dict[str, JSONValue]) -> FrozenDict:
        """Wrap values frozen by :func:`freeze_mapping` at the top level (depth 0)."""
        self = cls.__new__(cls)
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_hash", None)
        object.__setattr__(self, "_height", None)
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

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, JSONValue]]]:
        return (type(self), (self._data,))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> FrozenDict:
        return self


EMPTY = FrozenDict._trusted({})


def _height_of(value: JSONValue) -> int:
    """The levels of nesting of a frozen value: 0 for a scalar, 1 for a flat tuple or dict.

    A FrozenDict's is computed once, on first use, and kept: one nested in another is not
    walked again, so checking a chain of them, each nesting the last, costs one step each.
    """
    if isinstance(value, FrozenDict):
        height = value._height
        if height is None:
            height = 1 + max(map(_height_of, value._data.values()), default=0)
            object.__setattr__(value, "_height", height)
        return height
    if type(value) is tuple:
        return 1 + max(map(_height_of, value), default=0)
    return 0


def _describe(path: str) -> str:
    return path or "the value"


#: Metadata and kwargs nest at most this deep (a deeper value raises TypeError): the
#: canonical encoding (docs/hashing.md) holds no deeper value, and decode_message reads
#: back every value this allows.
MAX_DEPTH: Final = 100
#: Integers have at most this many decimal digits (Python's own limit for printing is 4300).
MAX_INT_DIGITS: Final = 4000
_MAX_INT: Final = 10**MAX_INT_DIGITS


def _check_int(value: int, path: str) -> int:
    if value.bit_length() > 13_000 and abs(value) >= _MAX_INT:
        raise ValueError(f"{_describe(path)} has more than {MAX_INT_DIGITS} decimal digits")
    return value


def freeze(value: object, path: str, depth: int = 0) -> JSONValue:
    """Return ``value`` as a frozen JSON value.

    ``depth`` is how many lists and mappings hold ``value`` below the top-level mapping; a
    :class:`FrozenDict` is checked by the levels it holds, known without walking it again.

    Raises:
        TypeError: a value (or mapping key) that JSON cannot hold, or nesting deeper than
            :data:`MAX_DEPTH` (100) levels; the message names its path.
        ValueError: a float that is NaN or infinite, a string that is not valid Unicode, or
            an integer of more than 4000 digits.
    """
    kind = type(value)
    if value is None or kind is bool:
        return value  # type: ignore[return-value]
    if kind is str:
        check_text(value, path)  # type: ignore[arg-type]
        return value  # type: ignore[return-value]
    if kind is int:
        return _check_int(value, path)  # type: ignore[arg-type]
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ValueError(f"{_describe(path)} is {value!r}: only finite floats are allowed")
        return value  # type: ignore[return-value]
    if isinstance(value, FrozenDict):
        height = _height_of(value)
        if depth + height > MAX_DEPTH:
            raise TypeError(
                f"{_describe(path)} is a FrozenDict {height} levels deep: placed there, "
                f"its values are nested more than {MAX_DEPTH} levels deep"
            )
        return value
    if depth >= MAX_DEPTH and isinstance(value, (Mapping, list, tuple)):
        raise TypeError(f"{_describe(path)} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, Mapping):
        return FrozenDict._trusted(freeze_mapping(value, path, depth + 1))
    if isinstance(value, (list, tuple)):
        return tuple(
            freeze(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)
        )
    # Subclasses of the JSON scalar types (enums, say) are stored as their plain value.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _check_int(operator.index(value), path)
    if isinstance(value, float):
        return freeze(float(value), path)
    if isinstance(value, str):
        return freeze(str.__str__(value), path)
    raise TypeError(
        f"{_describe(path)} is of type {kind.__qualname__}, which is not a JSON value "
        "(allowed: None, bool, int, float, str, list, tuple, and mappings with str keys)"
    )


def freeze_mapping(value: Mapping[Any, object], path: str, depth: int = 0) -> dict[str, JSONValue]:
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
        frozen[key] = freeze(item, f"{path}[{key!r}]", depth)
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
