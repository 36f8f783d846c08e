"""Moving a tree between stores, as git moves commits: push, pull and clone.

A sync copies what some refs of a *source* store reach to a *destination* store, and moves
those refs there. Three promises shape it:

- **Only the difference travels.** The sync walks down from the refs' tips, through every
  link (``parent``, ``reply_to``, ``original``), and stops at the messages the destination
  has: a store holds every message its messages link to, so what lies below one of them
  is there too. It asks the destination about many hashes at once
  (:meth:`MessageStore.stored`), and reads the source ahead of the answers in rounds that
  double (16 messages, then 32, ... up to 4,096): pushing 10 messages onto a branch of
  100,000 reads 16 of them and asks one question, and a clone reads each message once.
- **Nothing unverified lands.** Every message read from the source is hashed again, and
  its content too, before anything is written: a source with one altered message is
  refused whole (:exc:`IntegrityError`), the destination left as it was. Then the messages
  go in parents first, in batches of :data:`BATCH` that are each one transaction
  (:meth:`MessageStore.put_many`): a sync killed midway leaves the destination sound, with
  the batches it wrote (and no ref moved), and running it again sends the rest.
- **Refs move forward only.** A ref moves when the source's message descends from the
  destination's (a fast-forward), by compare-and-set, so that a concurrent writer's move
  is never lost: when another writer moved the ref meanwhile, the sync moves it only if
  the new place still descends from that writer's. Otherwise it raises
  :exc:`NonFastForwardError`, unless ``force``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

from ._branches import is_ancestor
from ._exceptions import IntegrityError, NonFastForwardError, RefConflictError
from ._hashing import hash_content, sha256_hex
from ._messages import ForwardedMessage, Message, encode_message, has_content, links

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._stores._protocol import MessageStore

#: The most messages written in one transaction of the destination.
BATCH: Final = 1000
#: The messages read from the source in the first round of the walk, and the most in one.
FIRST_ROUND: Final = 16
LAST_ROUND: Final = 4096


@attrs.frozen
class RefUpdate:
    """A ref that a push or pull moved (or created) in the destination.

    Attributes:
        name: The ref's name.
        old: Where it pointed before (a full hash), or ``None`` when it was created.
        new: Where it points now.
        forced: Whether the move was not a fast-forward (``new`` does not descend from
            ``old``), made because ``force`` was given.
    """

    name: str
    old: str | None
    new: str
    forced: bool = False


@attrs.frozen
class SyncReport:
    """What a push or pull did.

    Attributes:
        messages: The messages sent: those the destination lacked.
        contents: The distinct contents of those messages (each travels with the messages
            that name it; the destination keeps it once, and may have had it).
        refs: The refs moved or created, by name; a ref already where the source's
            points is not among them.
    """

    messages: int
    contents: int
    refs: tuple[RefUpdate, ...]


async def sync(
    source: MessageStore, destination: MessageStore, names: Sequence[str], *, force: bool = False
) -> SyncReport:
    """Send what the refs ``names`` of ``source`` reach to ``destination``, and move the refs.

    ``names`` empty means every ref of ``source``. See the module's docstring for the
    promises; :meth:`Forum.push` documents the arguments and errors.
    """
    tips = await _tips(source, names)
    missing = await _missing(source, destination, set(tips.values()))
    view = _Union(missing, destination)
    moves: list[tuple[str, str | None, str, bool]] = []
    refused: list[tuple[str, str, str]] = []
    for name, new in tips.items():
        old = await destination.get_ref(name)
        if old == new:
            continue
        forced = old is not None and not await is_ancestor(view, old, new)
        if forced and not force:
            assert old is not None
            refused.append((name, old, new))
        moves.append((name, old, new, forced))
    if refused:
        raise NonFastForwardError(tuple(refused))
    order = _parents_first(missing)
    for start in range(0, len(order), BATCH):
        await destination.put_many(order[start : start + BATCH])
    updates = []
    for name, old, new, forced in moves:
        update = await _move(destination, name, old, new, forced=forced, force=force)
        if update is not None:
            updates.append(update)
    contents = {message.content_hash for message in order if has_content(message)}
    return SyncReport(len(order), len(contents), tuple(updates))


async def _tips(source: MessageStore, names: Sequence[str]) -> dict[str, str]:
    """The hash each ref of ``names`` points at in ``source`` (every ref when empty)."""
    if not names:
        return dict(await source.refs())
    tips: dict[str, str] = {}
    for name in names:
        tip = await source.get_ref(name)
        if tip is None:
            raise ValueError(f"the source has no ref {name!r}; nothing was sent")
        tips[name] = tip
    return tips


async def _missing(
    source: MessageStore, destination: MessageStore, tips: set[str]
) -> dict[str, Message]:
    """Every message reachable from ``tips`` that ``destination`` lacks, read and verified.

    Walks the links down from the tips, reading up to a round's worth of messages from the
    source before asking the destination which of them (and of the links still to follow)
    it has: what it has is dropped, with everything below it, which it has too.
    """
    missing: dict[str, Message] = {}
    have = await destination.stored(tips)
    queue = sorted(tips - have)
    contents: dict[str, str] = {}
    size = FIRST_ROUND
    while queue:
        fetched: dict[str, Message] = {}
        while queue and len(fetched) < size:
            key = queue.pop()
            if key in missing or key in fetched:
                continue
            message = await _fetch(source, key, contents)
            fetched[key] = message
            queue.extend(
                value
                for _, value in links(message)
                if value not in missing and value not in fetched
            )
        unknown = [key for key in dict.fromkeys(queue) if key not in missing and key not in fetched]
        have = await destination.stored([*fetched, *unknown])
        missing.update((key, message) for key, message in fetched.items() if key not in have)
        queue = [key for key in unknown if key not in have]
        size = min(size * 2, LAST_ROUND)
    _check_forwards(missing)
    return missing


async def _fetch(source: MessageStore, key: str, contents: dict[str, str]) -> Message:
    """The message ``key`` of ``source``, hashed again, with its content.

    Raises:
        IntegrityError: the message (or its content) does not hash to its hash.
    """
    try:
        message = await source.get(key)
    except IntegrityError as exc:
        raise IntegrityError(f"{exc}; nothing was sent") from exc
    if sha256_hex(encode_message(message)) != key:
        raise IntegrityError(
            f"message {key} of the source does not hash to its hash; nothing was sent"
        )
    if has_content(message):
        # Each distinct content is hashed once; another message naming it must hold it.
        known = contents.get(message.content_hash)
        if known is None and hash_content(message.content) == message.content_hash:
            contents[message.content_hash] = message.content
        elif known is None or known != message.content:
            raise IntegrityError(
                f"the content of message {key} of the source does not hash to its hash; "
                "nothing was sent"
            )
    return message


def _check_forwards(missing: dict[str, Message]) -> None:
    """Refuse a forward whose content is not its original's, when both travel together
    (the destination checks one whose original it has), before anything is written."""
    for message in missing.values():
        if isinstance(message, ForwardedMessage):
            original = missing.get(message.original)
            if original is not None and original.content_hash != message.content_hash:
                raise ValueError(
                    f"forward {message.hash} of the source does not hold the content of its "
                    f"original {message.original}; nothing was sent"
                )


def _parents_first(messages: dict[str, Message]) -> list[Message]:
    """``messages`` in an order where every message comes after those it links to."""
    order: list[Message] = []
    done: set[str] = set()
    for start in sorted(messages):
        stack = [(start, False)]
        while stack:
            key, expanded = stack.pop()
            if key in done:
                continue
            if expanded:
                done.add(key)
                order.append(messages[key])
                continue
            stack.append((key, True))
            stack.extend(
                (value, False)
                for _, value in links(messages[key])
                if value in messages and value not in done
            )
    return order


async def _move(
    destination: MessageStore,
    name: str,
    old: str | None,
    new: str,
    *,
    forced: bool,
    force: bool,
) -> RefUpdate | None:
    """Move the ref ``name`` from ``old`` to ``new`` by compare-and-set; when another writer
    moved it meanwhile, check the fast-forward again from where that writer left it."""
    while True:
        try:
            await destination.set_ref(name, new, expected=old)
        except RefConflictError as conflict:
            old = conflict.actual
            if old == new:
                return None  # another writer moved it here
            forced = old is not None and not await is_ancestor(destination, old, new)
            if forced and not force:
                assert old is not None
                raise NonFastForwardError(((name, old, new),)) from None
            continue
        return RefUpdate(name, old, new, forced)


@attrs.frozen
class _Union:
    """The destination as it will be once the missing messages are in: for the checks
    made before anything is written."""

    missing: dict[str, Message]
    destination: MessageStore

    async def get(self, hash: str) -> Message:
        message = self.missing.get(hash)
        if message is not None:
            return message
        return await self.destination.get(hash)
