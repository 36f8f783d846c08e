"""The in-memory store: the reference implementation of :class:`MessageStore`."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, ClassVar

from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from .._exceptions import AmbiguousHashError, MessageNotFoundError
from .._hashing import hash_content, sha256_hex
from .._messages import (
    ForwardedMessage,
    Message,
    check_forward,
    check_prefix,
    check_ref_name,
    encode_message,
    has_content,
    links,
    with_content,
)
from ._cache import Node, cache_problems, check_entry
from ._protocol import IntegrityProblem, MessageStore
from ._refs import ANY, check_current, check_expected

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from anyio.abc import AsyncBackend

    from ._refs import Expected


class MemoryStore(MessageStore):
    """A :class:`MessageStore` that keeps everything in this process's memory.

    The default store of :class:`Forum`. It holds the :class:`Message` objects themselves, so
    reading a message costs no decoding; it is gone when the process ends.

    Its methods never wait for anything. Each is a cancellation point, and one call in
    ``YIELD_EVERY`` also lets the other tasks run (a full checkpoint), so that a loop
    over the store cannot starve them; yielding at every call would cost each operation a
    turn of the event loop, and make a call of an agent several times slower.
    """

    __slots__ = (
        "_cache",
        "_children",
        "_contents",
        "_messages",
        "_operations",
        "_refs",
        "_sorted",
    )

    #: One call of the store's methods in this many is a full checkpoint (see above).
    YIELD_EVERY: ClassVar[int] = 64

    def __init__(self) -> None:
        self._messages: dict[str, Message] = {}
        self._contents: dict[str, str] = {}
        self._children: dict[str | None, list[str]] = {}
        self._refs: dict[str, str] = {}
        self._cache: dict[str, tuple[str, ...]] = {}
        self._sorted: list[str] | None = []
        self._operations = 0

    def __repr__(self) -> str:
        return f"<MemoryStore with {len(self._messages)} messages>"

    async def _checkpoint(self, backend: type[AsyncBackend] | None = None) -> None:
        """A cancellation point; one call in ``YIELD_EVERY`` a full checkpoint.

        ``backend``: the AnyIO backend running, when the caller knows it (a forum's calls
        do), which saves asking which library runs.
        """
        self._operations += 1
        if self._operations % self.YIELD_EVERY:
            if backend is None:
                await checkpoint_if_cancelled()
            else:
                await backend.checkpoint_if_cancelled()
        else:
            await checkpoint()

    def _require(self, hash: str, what: str) -> Message:
        try:
            return self._messages[hash]
        except KeyError:
            raise MessageNotFoundError(f"{what} {hash} is not in the store") from None

    async def put(self, message: Message) -> None:
        await self._checkpoint()
        self._put_now(message)

    def _put_now(self, message: Message) -> None:
        """:meth:`put` without its checkpoint: what a call's writer uses to place a text
        response while its agent function runs (see ``_runtime/_writer.py``)."""
        if message.hash in self._messages:
            return
        for field, value in links(message):
            linked = self._require(value, field)
            if field == "original":
                check_forward(message, linked)
        self._add(message)
        self._sorted = None

    async def put_many(self, messages: Iterable[Message]) -> None:
        await self._checkpoint()
        batch = {message.hash: message for message in messages}
        for message in batch.values():
            for field, value in links(message):
                if value not in batch and value not in self._messages:
                    raise MessageNotFoundError(f"{field} {value} is not in the store")
        for message in batch.values():
            if isinstance(message, ForwardedMessage):
                check_forward(
                    message, batch.get(message.original) or self._messages[message.original]
                )
        for key, message in batch.items():
            if key not in self._messages:
                self._add(message)
        self._sorted = None

    def _add(self, message: Message) -> None:
        """Keep ``message``, its content shared with the messages that have the same."""
        if has_content(message):
            key = message.content_hash
            content = self._contents.setdefault(key, message.content)
            message = with_content(message, content)
        self._messages[message.hash] = message
        self._children.setdefault(message.parent, []).append(message.hash)

    async def get(self, hash: str) -> Message:
        await self._checkpoint()
        return self._require(hash, "message")

    async def resolve(self, hash_or_prefix: str) -> Message:
        await self._checkpoint()
        prefix = check_prefix(hash_or_prefix)
        if len(prefix) == 64:
            return self._require(prefix, "message")
        if self._sorted is None:
            self._sorted = sorted(self._messages)
        keys = self._sorted
        start = bisect.bisect_left(keys, prefix)
        matches = [key for key in keys[start : start + 2] if key.startswith(prefix)]
        if not matches:
            raise MessageNotFoundError(f"no message hash starts with {prefix}")
        if len(matches) > 1:
            raise AmbiguousHashError(f"more than one message hash starts with {prefix}")
        return self._messages[matches[0]]

    async def stored(self, hashes: Iterable[str]) -> set[str]:
        await self._checkpoint()
        return {key for key in hashes if key in self._messages}

    async def ancestors(self, hash: str) -> list[Message]:
        await self._checkpoint()
        branch = []
        message: Message | None = self._require(hash, "message")
        while message is not None:
            branch.append(message)
            message = None if message.parent is None else self._messages[message.parent]
        branch.reverse()
        return branch

    async def children(self, hash: str | None) -> list[Message]:
        await self._checkpoint()
        return [self._messages[key] for key in sorted(self._children.get(hash, ()))]

    async def set_ref(self, name: str, hash: str, *, expected: Expected = ANY) -> None:
        await self._checkpoint()
        check_ref_name(name)
        check_expected(expected)
        self._require(hash, "message")
        check_current(name, expected, self._refs.get(name))
        self._refs[name] = hash

    async def get_ref(self, name: str) -> str | None:
        await self._checkpoint()
        return self._refs.get(check_ref_name(name))

    async def delete_ref(self, name: str) -> None:
        await self._checkpoint()
        self._refs.pop(check_ref_name(name), None)

    async def refs(self) -> Mapping[str, str]:
        await self._checkpoint()
        return dict(sorted(self._refs.items()))

    async def get_cached(self, call_hash: str) -> Sequence[str] | None:
        await self._checkpoint()
        return self._cache.get(call_hash)

    async def put_cached(self, call_hash: str, response_hashes: Sequence[str]) -> None:
        await self._checkpoint()
        check_entry(call_hash, response_hashes, self._node)
        self._cache[call_hash] = tuple(response_hashes)

    def _node(self, hash: str) -> Node | None:
        message = self._messages.get(hash)
        return None if message is None else (message._kind, message.parent)

    async def verify(self) -> list[IntegrityProblem]:
        await self._checkpoint()
        problems = []
        referenced: set[str] = set()
        for key, message in self._messages.items():
            if sha256_hex(encode_message(message)) != key:
                problems.append(IntegrityProblem(key, "its fields do not hash to its hash"))
            if has_content(message):
                content_key = message.content_hash
                referenced.add(content_key)
                if content_key not in self._contents:
                    problems.append(IntegrityProblem(key, f"its content {content_key} is missing"))
                elif hash_content(message.content) != content_key:
                    problems.append(IntegrityProblem(key, "its content does not hash to its hash"))
            problems.extend(
                IntegrityProblem(key, f"its {field} {value} is not in the store")
                for field, value in links(message)
                if value not in self._messages
            )
            if isinstance(message, ForwardedMessage):
                try:
                    check_forward(message, self._messages.get(message.original))
                except ValueError:
                    problems.append(
                        IntegrityProblem(key, "its content is not the content of its original")
                    )
        for content_key, content in self._contents.items():
            if hash_content(content) != content_key:
                problems.append(
                    IntegrityProblem(content_key, "a content does not hash to its hash")
                )
            if content_key not in referenced:
                problems.append(
                    IntegrityProblem(content_key, "a content is referenced by no message")
                )
        problems.extend(
            IntegrityProblem(key, f"ref {name!r} points at a message that is not in the store")
            for name, key in self._refs.items()
            if key not in self._messages
        )
        problems.extend(cache_problems(self._cache.items(), self._node))
        return problems

    async def aclose(self) -> None:
        """Nothing to release: the messages stay readable until the store is dropped."""
        await self._checkpoint()


__all__ = ["MemoryStore"]
