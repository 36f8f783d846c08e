"""Two branches on the command line: ``log A..B``, ``merge-base A B`` and ``diff A B``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from agentforum._branches import after, merge_base

from ._database import find

if TYPE_CHECKING:
    from agentforum import Message, MessageStore


@attrs.frozen
class Comparison:
    """Two branches, where they part, and what each holds after that.

    Attributes:
        base: The merge base (the last message of both branches), or ``None`` when they
            share none.
        left: The messages of the first branch after the merge base, oldest first.
        right: The messages of the second branch after it, oldest first.
    """

    base: Message | None
    left: list[Message]
    right: list[Message]


async def compare(store: MessageStore, a: str, b: str) -> Comparison:
    """Compare the branches that end at ``a`` and ``b`` (refs, hashes or prefixes).

    Raises:
        UserError: a name is neither a ref nor a hash or prefix.
        MessageNotFoundError: a name matches no message.
        AmbiguousHashError: a prefix matches several.
    """
    left, right = (await find(store, a)).hash, (await find(store, b)).hash
    base = await merge_base(store, left, right)
    return Comparison(
        None if base is None else await store.get(base),
        await after(store, base, left),
        await after(store, base, right),
    )


def split_range(spec: str) -> tuple[str, str] | None:
    """The two ends of ``A..B``, or ``None`` when ``spec`` is not a range."""
    first, dots, second = spec.partition("..")
    if not dots or not first or not second:
        return None
    return first, second


async def log_branch(store: MessageStore, spec: str) -> list[Message]:
    """Return what ``log SPEC`` shows, oldest first: the branch that ends at ``SPEC``; for
    ``A..B``, the messages of B's branch that are not on A's (as in git).

    A ref whose name holds ``..`` is the ref, not a range.

    Raises:
        UserError: a name is neither a ref nor a hash or prefix.
        MessageNotFoundError: a name matches no message.
        AmbiguousHashError: a prefix matches several.
    """
    ends = None if await _is_ref(store, spec) else split_range(spec)
    if ends is None:
        return await store.ancestors((await find(store, spec)).hash)
    return (await compare(store, *ends)).right


async def _is_ref(store: MessageStore, name: str) -> bool:
    try:
        return await store.get_ref(name) is not None
    except ValueError:  # not a valid ref name
        return False
