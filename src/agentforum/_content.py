"""What may be sent as a request or a response, checked at once where it can be."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Iterator, Mapping
from typing import Final

from ._json import check_text
from ._messages import Message, check_prefix, is_hash
from ._promises import MessagePromise, MessageSequence, StreamedMessage

#: One piece of content, as the forum's call runner places it.
Item = str | Message | MessagePromise | StreamedMessage | MessageSequence | AsyncIterable[object]

_ACCEPTED = (
    "str, Message, MessagePromise, StreamedMessage, MessageSequence, "
    "or a sync or async iterable of these"
)

#: Sync iterables nest at most this deep in content (a deeper one, or one that holds itself,
#: raises TypeError).
MAX_NESTING: Final = 100

#: What an exhausted iterator gives (no item of content is this object).
_END: Final = object()


def flatten(content: object, where: str) -> list[Item]:
    """Flatten ``content`` into items, in order, checking every type that can be seen now.

    Sync iterables are walked at once, nested at most :data:`MAX_NESTING` deep; async
    iterables are kept whole, for the call runner to walk (a wrong item inside one ends the
    branch with an :class:`ErrorMessage`). A str must be valid Unicode (no lone surrogate):
    the message it would become could not be stored.

    Raises:
        TypeError: something that is not content, content nested too deep (or holding
            itself), or a str that is not valid Unicode; the message names ``where``.
    """
    if type(content) is str and content.isascii():
        return [content]  # the common case, checked as _flatten would
    items: list[Item] = []
    _flatten(content, where, items)
    streamed = [item for item in items if isinstance(item, StreamedMessage)]
    if not streamed:
        return items
    if any(item._placed for item in streamed) or len({id(s) for s in streamed}) < len(streamed):
        raise TypeError(
            f"{where}: a StreamedMessage is placed once; it was placed already "
            "(pass its MessagePromise or Message to place it again)"
        )
    for item in streamed:
        item._placed = True
    return items


def _flatten(content: object, where: str, items: list[Item]) -> None:
    """Append the items of ``content`` to ``items``, walking nested iterables without recursion.

    ``walking`` holds an iterator per sync iterable being walked and ``taken`` how many
    items each gave, so an error can name an item's path (``content[1][0]``) without a path
    being built for every item.
    """
    walking: list[Iterator[object]] = []
    taken: list[int] = []
    while True:
        if isinstance(content, str):
            if not content.isascii():
                try:
                    check_text(content, _path(taken))
                except ValueError as exc:
                    raise TypeError(f"{where}: {exc}") from None
            items.append(content)
        elif isinstance(content, (Message, MessagePromise, MessageSequence)):
            items.append(content)
        elif isinstance(content, (StreamedMessage, AsyncIterable)):
            items.append(content)
        elif isinstance(content, Iterable) and not isinstance(content, (bytes, bytearray, Mapping)):
            if len(walking) == MAX_NESTING:
                raise TypeError(
                    f"{where}: content is nested more than {MAX_NESTING} levels deep "
                    "(or holds itself)"
                )
            walking.append(iter(content))
            taken.append(0)
        else:
            raise TypeError(
                f"{where}: {type(content).__qualname__} is not message content "
                f"(expected {_ACCEPTED})"
            )
        while walking:
            content = next(walking[-1], _END)
            if content is not _END:
                taken[-1] += 1
                break
            walking.pop()
            taken.pop()
        else:
            return


def _path(taken: list[int]) -> str:
    """The path of the item being flattened, as ``content[1][0]``."""
    return "content" + "".join(f"[{count - 1}]" for count in taken)


def check_point(value: object, name: str) -> None:
    """Check a ``branch_from`` or ``reply_to`` argument: a message, a promise, or a hash."""
    if value is None or isinstance(value, (Message, MessagePromise)):
        return
    if isinstance(value, str):
        if name == "reply_to" and not is_hash(value):
            raise ValueError(f"reply_to must be a full message hash, got {value!r}")
        if name == "branch_from":
            check_prefix(value)
        return
    raise TypeError(
        f"{name} must be a Message, a MessagePromise or a message hash (str), "
        f"not {type(value).__qualname__}"
    )
