"""Contents addressed by their own hash (format ``agentforum/2``, ``docs/hashing.md``).

Each distinct content is hashed once and stored once, whatever number of messages name it;
stores and bundles keep every hash and content; a forward names the first original and its
content, so its hash does not depend on how many times it was passed on.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentforum import (
    CallMessage,
    Forum,
    ForwardedMessage,
    InteractionContext,
    MemoryStore,
    Message,
    MessageStore,
    SQLiteStore,
    hash_content,
)
from agentforum.cli._bundle import decode_bundle, encode_bundle
from agentforum.cli._database import load_tree
from agentforum.testing import contents, conversations

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.anyio

#: Hypothesis settings of the properties below, which write stores (several per example).
STORES = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def new_store(kind: str, directory: Path) -> MessageStore:
    """A new, empty store of ``kind`` ("memory" or "sqlite", a new file in ``directory``)."""
    if kind == "memory":
        return MemoryStore()
    path = directory / "s.db"
    for leftover in directory.glob("s.db*"):
        leftover.unlink()
    return SQLiteStore(path)


def stored_contents(store: MessageStore) -> int:
    """How many contents ``store`` keeps: rows of ``contents``, or the MemoryStore's strings."""
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as connection:
            (count,) = connection.execute("SELECT count(*) FROM contents").fetchone()
        return int(count)
    assert isinstance(store, MemoryStore)
    return len(store._contents)


def distinct_contents(messages: list[Message]) -> set[str]:
    """The hashes of the contents that ``messages`` name (a call names none)."""
    return {m.content_hash for m in messages if not isinstance(m, CallMessage)}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@STORES
@given(tree=conversations(max_size=10))
async def test_stores_keep_every_hash_and_content(
    kind: str, tmp_path: Path, tree: list[Message]
) -> None:
    """For every tree: stored and read back, each message has its hash, its content and its
    content's hash; each distinct content is stored once; verify finds nothing."""
    store = new_store(kind, tmp_path)
    try:
        await store.put_many(tree)
        for message in tree:
            got = await store.get(message.hash)
            assert got == message
            assert type(got) is type(message)
            assert got.content == message.content
            assert got.content_hash == message.content_hash == hash_content(message.content)
        assert stored_contents(store) == len(distinct_contents(tree))
        assert await store.verify() == []
    finally:
        await store.aclose()


@STORES
@given(tree=conversations(max_size=10))
async def test_bundles_keep_every_hash_and_content_each_once(
    tmp_path: Path, tree: list[Message]
) -> None:
    """For every tree: its bundle carries each content once, and imported into a new SQLite
    store gives back every message, hash and content."""
    source = MemoryStore()
    await source.put_many(tree)
    data = encode_bundle(await load_tree(source))
    lines = data.splitlines()[1:]
    assert sum(line.startswith(b'"') for line in lines) == len(distinct_contents(tree))
    bundle = decode_bundle(data, "bundle")
    assert {m.hash for m in bundle.messages} == {m.hash for m in tree}
    target = new_store("sqlite", tmp_path)
    try:
        await target.put_many(bundle.messages)
        for message in tree:
            assert (await target.get(message.hash)).content == message.content
        assert stored_contents(target) == len(distinct_contents(tree))
        assert await target.verify() == []
    finally:
        await target.aclose()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@STORES
@given(
    texts=st.lists(contents(max_size=40), min_size=1, max_size=4),
    picks=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=25),
)
async def test_a_content_named_by_many_messages_is_stored_once(
    kind: str, tmp_path: Path, texts: list[str], picks: list[tuple[int, bool]]
) -> None:
    """For all messages, in one conversation or many, naming a few contents (each message's
    text a new str object): the store keeps one copy of each distinct content."""
    store = new_store(kind, tmp_path)
    messages: list[Message] = []
    try:
        for index, (pick, new_root) in enumerate(picks):
            text = "".join(list(texts[pick % len(texts)]))  # an equal str, not the same one
            parent = None if new_root or not messages else messages[-1].hash
            messages.append(Message(content=text, sender=f"s{index}", parent=parent))
            await store.put(messages[-1])
        assert stored_contents(store) == len(distinct_contents(messages))
        if isinstance(store, MemoryStore):
            # One string object per content, shared by every message that names it.
            by_content: dict[str, set[int]] = {}
            for message in messages:
                got = await store.get(message.hash)
                by_content.setdefault(got.content_hash, set()).add(id(got.content))
            assert all(len(ids) == 1 for ids in by_content.values())
        assert await store.verify() == []
    finally:
        await store.aclose()


async def test_a_forward_must_hold_its_originals_content(tmp_path: Path) -> None:
    """Both stores refuse a forward whose content is not its original's (ValueError, nothing
    stored), alone or in a batch with its original; a forward of a call holds ""."""
    original = Message(content="the original", sender="a")
    call = CallMessage(receiver="r")
    liar = ForwardedMessage(content="something else", sender="b", original=original.hash)
    of_call = ForwardedMessage(content="", sender="b", original=call.hash)
    for kind in ("memory", "sqlite"):
        store = new_store(kind, tmp_path)
        try:
            with pytest.raises(ValueError, match="a forward's content is its original's"):
                await store.put_many([original, liar])
            assert await store.children(None) == []
            await store.put_many([original, call])
            with pytest.raises(ValueError, match="a forward's content is its original's"):
                await store.put(liar)
            await store.put(of_call)
            assert await store.get(of_call.hash) == of_call
            assert await store.verify() == []
        finally:
            await store.aclose()


@given(text=contents(max_size=200), depth=st.integers(1, 6), data=st.data())
@settings(max_examples=25, deadline=None)
def test_a_forward_does_not_depend_on_how_deep_it_was_forwarded(
    text: str, depth: int, data: st.DataObject
) -> None:
    """For all contents and chains of places: a message passed on ``depth`` times, each time
    to another branch, then placed after ``p``, is the very message (same hash) that placing
    the first message after ``p`` gives: a forward names the first original and its content.
    """
    positions = data.draw(st.lists(st.text("abc", min_size=1), min_size=depth, max_size=depth))

    async def main() -> tuple[str, str]:
        forum = Forum()

        @forum.agent
        async def listener(ctx: InteractionContext) -> None:
            async for _ in ctx.request_messages:
                pass

        async def placed(item: Message, after: str) -> Message:
            """``item`` asked as a request after a message ``after``: what is placed."""
            point = Message(content=after, sender="user")
            await forum.store.put(point)
            await listener.ask(item, branch_from=point).messages()
            (request,) = await forum.store.children(point.hash)
            return request

        async with forum:
            first = Message(content=text, sender="user")
            await forum.store.put(first)
            passed: Message = first
            for position in positions:
                passed = await placed(passed, position)
                assert isinstance(passed, ForwardedMessage)
                assert passed.original == first.hash
                assert passed.content_hash == first.content_hash
            direct = await placed(first, "p")
            again = await placed(passed, "p")
        return direct.hash, again.hash

    for backend in ("asyncio", "trio"):
        direct, again = anyio.run(main, backend=backend)
        assert direct == again


def test_forwarding_does_not_hash_the_content_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forward made by the forum takes its content hash from the message it forwards: a
    content is hashed once however many times it is passed on (here, 5 levels of agents)."""
    import agentforum._messages as messages

    counted: list[int] = []
    real: Callable[[str], str] = messages.hash_content

    def counting(text: str) -> str:
        counted.append(len(text))
        return real(text)

    monkeypatch.setattr(messages, "hash_content", counting)
    long = "x" * 100_000

    async def main() -> str:
        forum = Forum()

        @forum.agent
        async def source(ctx: InteractionContext) -> None:
            ctx.respond(long)

        agents = [source]
        for level in range(5):
            inner = agents[-1]

            async def proxy(ctx: InteractionContext, inner: object = inner) -> None:
                ctx.respond(inner.ask(ctx.request_messages))  # type: ignore[attr-defined]

            agents.append(forum.agent(proxy, alias=f"proxy{level}"))
        async with forum:
            return (await agents[-1].ask("go").last()).content

    assert anyio.run(main) == long
    assert counted.count(len(long)) == 1


async def test_forwards_of_a_long_message_cost_the_same_as_those_of_a_short_one(
    tmp_path: Path,
) -> None:
    """In an SQLite file, 100 forwards of a 100 KB message add what 100 forwards of a
    1-character one add, to a page or two (the content is stored once, and pages fill
    differently beside its overflow pages), and less than 64 KiB in all (10 MB if each
    forward held the text)."""
    added = []
    for size in (1, 100_000):
        path = tmp_path / f"{size}.db"
        original = Message(content="x" * size, sender="source")
        store = SQLiteStore(path)
        await store.put(original)
        await store.aclose()  # the last connection to close checkpoints the file
        before = path.stat().st_size
        parent = original
        store = SQLiteStore(path)
        for index in range(100):
            parent = ForwardedMessage(
                content=original.content,
                sender=f"proxy{index}",
                parent=parent.hash,
                original=original.hash,
            )
            await store.put(parent)
        await store.aclose()
        added.append(path.stat().st_size - before)
    assert abs(added[1] - added[0]) <= 2 * 4096
    assert added[1] < 64 * 1024
