"""Two branches of one tree: where they part (their merge base), and what each adds.

A branch is the chain of parents that leads from a root to a message. Two branches share
the part from their common root down to their *merge base*, the last message on both (as
in git); after it each goes its own way. Nothing here reads more of a store than the two
parts after the merge base and as much again: two walkers go down the two chains in
step, one message at a time, and stop at the first message that one of them has already
seen on the other's chain. Of every message both chains hold, that one is always met
first (the walker that reaches it second detects it before it can step past it), so it
is the merge base.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._messages import Message


class Reader(Protocol):
    """What the walks here read: a :class:`MessageStore`, or a view of several."""

    async def get(self, hash: str) -> Message:
        """Return the message stored under ``hash`` (see :meth:`MessageStore.get`)."""
        ...


async def merge_base(store: Reader, a: str, b: str) -> str | None:
    """Return the hash of the last message on both the branch of ``a`` and that of ``b``.

    ``None`` when the two branches share no message (they start at different roots). When
    one message is an ancestor of the other (or they are the same), it is the merge base.

    Reads the messages of both branches after the merge base, and at most as many again on
    the longer side, one :meth:`MessageStore.get` at a time.

    Raises:
        MessageNotFoundError: ``a``, ``b`` or a message of their branches is not stored.
    """
    if a == b:
        await store.get(a)  # the same message: it must exist all the same
        return a
    seen: tuple[set[str], set[str]] = ({a}, {b})
    tips: list[str | None] = [a, b]
    while tips[0] is not None or tips[1] is not None:
        for side in (0, 1):
            key = tips[side]
            if key is None:
                continue
            parent = (await store.get(key)).parent
            tips[side] = parent
            if parent is None:
                continue
            if parent in seen[1 - side]:
                return parent
            seen[side].add(parent)
    return None


async def after(store: Reader, base: str | None, tip: str) -> list[Message]:
    """Return the messages of the branch of ``tip`` after ``base``, oldest first.

    ``base`` is an ancestor of ``tip`` (or ``tip`` itself, which gives ``[]``), or ``None``
    for the whole branch. Reads only the messages returned.

    Raises:
        MessageNotFoundError: a message of the branch is not stored.
    """
    found: list[Message] = []
    key: str | None = tip
    while key is not None and key != base:
        message = await store.get(key)
        found.append(message)
        key = message.parent
    found.reverse()
    return found


async def is_ancestor(store: Reader, ancestor: str, descendant: str) -> bool:
    """Whether ``ancestor`` is on the branch of ``descendant`` (a message is its own).

    Raises:
        MessageNotFoundError: either message, or one of their branches, is not stored.
    """
    return await merge_base(store, ancestor, descendant) == ancestor
