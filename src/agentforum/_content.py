"""What may be sent as a request or a response, checked at once where it can be."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping

from ._messages import Message
from ._promises import MessagePromise, MessageSequence, StreamedMessage

#: One piece of content, as the forum's call runner places it.
Item = str | Message | MessagePromise | StreamedMessage | MessageSequence | AsyncIterable[object]

_ACCEPTED = (
    "str, Message, MessagePromise, StreamedMessage, MessageSequence, "
    "or a sync or async iterable of these"
)


def flatten(content: object, where: str) -> list[Item]:
    """Flatten ``content`` into items, in order, checking every type that can be seen now.

    Sync iterables are walked at once; async iterables are kept whole, for the call runner to
    walk (a wrong item inside one ends the branch with an :class:`ErrorMessage`).

    Raises:
        TypeError: something that is not content; the message names its type and ``where``.
    """
    items: list[Item] = []
    _flatten(content, where, items)
    streamed = [item for item in items if isinstance(item, StreamedMessage)]
    if any(item._placed for item in streamed) or len({id(s) for s in streamed}) < len(streamed):
        raise TypeError(
            f"{where}: a StreamedMessage is placed once; it was placed already "
            "(pass its MessagePromise or Message to place it again)"
        )
    for item in streamed:
        item._placed = True
    return items


def _flatten(content: object, where: str, items: list[Item]) -> None:
    if isinstance(content, (str, Message, MessagePromise, MessageSequence)):
        items.append(content)
    elif isinstance(content, (StreamedMessage, AsyncIterable)):
        items.append(content)
    elif isinstance(content, Iterable) and not isinstance(content, (bytes, bytearray, Mapping)):
        for item in content:
            _flatten(item, where, items)
    else:
        raise TypeError(
            f"{where}: {type(content).__qualname__} is not message content (expected {_ACCEPTED})"
        )
