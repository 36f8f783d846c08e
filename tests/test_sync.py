"""push and pull between stores: only the difference travels, nothing unverified lands, refs
move forward only (``docs/persistence.md``, "Moving conversations between stores")."""

from __future__ import annotations

import copy
import sqlite3
from typing import TYPE_CHECKING

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentforum import (
    Forum,
    IntegrityError,
    MemoryStore,
    Message,
    MessageStore,
    NonFastForwardError,
    PostgresStore,
    RefConflictError,
    RefUpdate,
    SQLiteStore,
    SyncReport,
)
from agentforum._messages import links
from agentforum._stores._refs import ANY
from test_branches import chain
from trees import trees

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from agentforum._stores._refs import Expected


async def everything(store: MessageStore) -> set[str]:
    """The hash of every message of ``store``, walked from its roots."""
    found: set[str] = set()
    pending: list[str | None] = [None]
    while pending:
        for child in await store.children(pending.pop()):
            found.add(child.hash)
            pending.append(child.hash)
    return found


def closure(tree: list[Message], tips: Iterable[str]) -> list[Message]:
    """The messages of ``tree`` that ``tips`` reach through their links, parents first."""
    by_hash = {message.hash: message for message in tree}
    reached: set[str] = set()
    pending = list(tips)
    while pending:
        key = pending.pop()
        if key not in reached:
            reached.add(key)
            pending.extend(value for _, value in links(by_hash[key]))
    return [message for message in tree if message.hash in reached]


async def filled(tree: list[Message], tips: list[str], prefix: str) -> MemoryStore:
    """A store holding what ``tips`` reach in ``tree``, with a ref ``prefix/i`` per tip."""
    store = MemoryStore()
    await store.put_many(closure(tree, tips))
    for index, tip in enumerate(tips):
        await store.set_ref(f"{prefix}/{index}", tip)
    return store


def some_tips(tree: list[Message]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from([message.hash for message in tree]), max_size=4)


@settings(max_examples=40)
@given(data=st.data(), tree=trees())
def test_push_gives_the_union_and_is_idempotent_and_order_independent(
    data: st.DataObject, tree: list[Message]
) -> None:
    """For all trees and two parts of one that stores hold: after a push, the destination
    holds the union, every hash verifies and the pushed refs point where the source's do;
    a second push sends nothing; pushing two sources in either order gives the same store."""
    one, two = data.draw(some_tips(tree)), data.draw(some_tips(tree))

    async def main() -> None:
        first, second = await filled(tree, one, "one"), await filled(tree, two, "two")
        held = await everything(second)
        union = await everything(first) | held
        report = await Forum(first).push(second)
        assert await everything(second) == union
        assert await second.verify() == []
        assert {name: key for name, key in (await second.refs()).items() if name[:3] == "one"} == (
            dict(await first.refs())
        )
        assert report.messages == len(union - held)
        assert await Forum(first).push(second) == SyncReport(0, 0, ())

        orders = []
        for sources in ((first, second), (second, first)):
            target = await filled(tree, [], "none")
            for source in sources:
                await Forum(source).push(target)
            orders.append((await everything(target), dict(await target.refs())))
        assert orders[0] == orders[1]

    anyio.run(main)


class Counting(MemoryStore):
    """A MemoryStore that counts the messages read and the hashes asked about."""

    __slots__ = ("asked", "gets")

    def __init__(self) -> None:
        super().__init__()
        self.gets = self.asked = 0

    async def get(self, hash: str) -> Message:
        self.gets += 1
        return await super().get(hash)

    async def stored(self, hashes: Iterable[str]) -> set[str]:
        hashes = list(hashes)
        self.asked += len(hashes)
        return await super().stored(hashes)


@pytest.mark.anyio
async def test_only_the_difference_travels() -> None:
    """Pushing 10 messages onto a branch of 2,000 reads a round of 16 from the source, asks
    the destination about them only, and reads nothing there; a clone reads each message of
    the source once."""
    trunk = chain(2000)
    source, destination = Counting(), Counting()
    await source.put_many(trunk)
    await source.set_ref("main", trunk[-1].hash)
    clone = await Forum(source).push(destination)
    assert clone.messages == 2000
    assert source.gets == 2000
    assert clone.refs == (RefUpdate("main", None, trunk[-1].hash),)

    more = chain(10, trunk[-1].hash, "more")
    await source.put_many(more)
    await source.set_ref("main", more[-1].hash)
    source.gets = destination.gets = destination.asked = 0
    report = await Forum(source).push(destination, "main")
    assert report == SyncReport(10, 10, (RefUpdate("main", trunk[-1].hash, more[-1].hash),))
    assert source.gets == 16
    assert destination.asked <= 1 + 17
    assert destination.gets <= 2 * 10 + 2  # the fast-forward check: the new part only
    assert await destination.get_ref("main") == more[-1].hash


@pytest.mark.anyio
async def test_refs_move_forward_only_unless_forced() -> None:
    """A ref moves when the source's message descends from the destination's; a push that
    would move it elsewhere raises NonFastForwardError and writes nothing; force moves it."""
    trunk = chain(3)
    ours, theirs = chain(2, trunk[-1].hash, "ours"), chain(2, trunk[-1].hash, "theirs")
    source, destination = MemoryStore(), MemoryStore()
    await source.put_many([*trunk, *ours])
    await destination.put_many([*trunk, *theirs])
    await source.set_ref("main", ours[-1].hash)
    await source.set_ref("side", trunk[0].hash)
    await destination.set_ref("main", theirs[-1].hash)
    before = await everything(destination)
    with pytest.raises(NonFastForwardError, match="'main'") as refused:
        await Forum(source).push(destination)
    assert refused.value.refused == (("main", theirs[-1].hash, ours[-1].hash),)
    assert await everything(destination) == before
    assert dict(await destination.refs()) == {"main": theirs[-1].hash}

    report = await Forum(destination).pull(source, "main", force=True)
    assert report.refs == (RefUpdate("main", theirs[-1].hash, ours[-1].hash, forced=True),)
    assert await everything(destination) == before | {ours[0].hash, ours[1].hash}
    with pytest.raises(ValueError, match="no ref 'nothing'"):
        await Forum(source).push(destination, "nothing")


class Racing(MemoryStore):
    """A destination where another writer moves the ref ``main`` to ``theirs`` just before
    the sync's first compare-and-set of it."""

    __slots__ = ("theirs",)

    def __init__(self, theirs: str) -> None:
        super().__init__()
        self.theirs = theirs

    async def set_ref(self, name: str, hash: str, *, expected: Expected = ANY) -> None:
        if expected is not ANY and self.theirs:
            theirs, self.theirs = self.theirs, ""
            await super().set_ref(name, theirs)
        await super().set_ref(name, hash, expected=expected)


@pytest.mark.anyio
async def test_a_concurrent_move_is_never_lost() -> None:
    """When another writer moves the ref while the push runs, the push moves it on only if
    its message descends from the other writer's; else the other writer's move stays."""
    trunk = chain(6)
    source = MemoryStore()
    await source.put_many(trunk)
    await source.set_ref("main", trunk[-1].hash)
    destination = Racing(theirs=trunk[3].hash)
    await destination.put_many(trunk[:4])
    await destination.set_ref("main", trunk[1].hash)
    report = await Forum(source).push(destination)
    assert report.refs == (RefUpdate("main", trunk[3].hash, trunk[-1].hash),)

    elsewhere = Message(content="elsewhere", sender="other", parent=trunk[1].hash)
    destination = Racing(theirs=elsewhere.hash)
    await destination.put_many([*trunk[:2], elsewhere])
    await destination.set_ref("main", trunk[1].hash)
    with pytest.raises(NonFastForwardError):
        await Forum(source).push(destination)
    assert await destination.get_ref("main") == elsewhere.hash
    assert await everything(destination) >= {message.hash for message in trunk}


class Lying(MemoryStore):
    """A source that returns an altered copy of one message (its hashes left as they were):
    what a store that does not check what it reads could return."""

    __slots__ = ("field", "victim")

    def __init__(self, victim: str, field: str) -> None:
        super().__init__()
        self.victim, self.field = victim, field

    async def get(self, hash: str) -> Message:
        message = await super().get(hash)
        if hash != self.victim:
            return message
        altered = copy.copy(message)
        object.__setattr__(altered, self.field, getattr(message, self.field) + " (altered)")
        # The hashes it hands out are the true ones: only hashing again finds the change.
        object.__setattr__(altered, "content_hash", message.content_hash)
        object.__setattr__(altered, "hash", message.hash)
        return altered


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["sender", "content"])
async def test_an_altered_message_of_the_source_is_refused_whole(field: str) -> None:
    """A source that hands out one altered message (its fields, or its content) is refused:
    IntegrityError, nothing written, no ref moved."""
    trunk = chain(30)
    source = Lying(trunk[3].hash, field)
    await source.put_many(trunk)
    await source.set_ref("main", trunk[-1].hash)
    destination = MemoryStore()
    await destination.put_many(trunk[:2])
    await destination.set_ref("main", trunk[1].hash)
    with pytest.raises(IntegrityError, match=f"{trunk[3].hash}.*nothing was sent"):
        await Forum(source).push(destination)
    assert await everything(destination) == {trunk[0].hash, trunk[1].hash}
    assert await destination.get_ref("main") == trunk[1].hash


@pytest.mark.anyio
async def test_a_tampered_sqlite_source_is_refused_whole(tmp_path: Path) -> None:
    """An SQLite database with one row edited by hand is refused whole when pulled from."""
    trunk = chain(40)
    path = tmp_path / "source.db"
    async with Forum(path) as forum:
        await forum.store.put_many(trunk)
        await forum.set_ref("main", trunk[-1])
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE messages SET sender = 'mallory' WHERE hash = ?", (bytes.fromhex(trunk[7].hash),)
        )
    connection.close()
    forum = Forum()
    with pytest.raises(IntegrityError, match=trunk[7].hash):
        await forum.pull(path)
    assert await everything(forum.store) == set()
    assert dict(await forum.refs()) == {}


@pytest.mark.anyio
async def test_sqlite_to_sqlite_to_postgres_and_back(tmp_path: Path, postgres_url: str) -> None:
    """A branch with a reply goes from an SQLite file to another, to PostgreSQL and back, by
    path and by URL; each copy is sound and holds the same."""
    trunk = chain(5)
    question = Message(content="question", sender="user", parent=trunk[-1].hash)
    answer = Message(content="answer", sender="agent", parent=question.hash, reply_to=question.hash)
    tree = [*trunk, question, answer]
    first, second, back = tmp_path / "first.db", tmp_path / "second.db", tmp_path / "back.db"
    async with Forum(first) as forum:
        await forum.store.put_many(tree)
        await forum.set_ref("main", answer)
        assert (await forum.push(second)).messages == 7
        assert (await forum.push(postgres_url)).refs == (RefUpdate("main", None, answer.hash),)
    async with Forum(back) as forum:
        report = await forum.pull(postgres_url, "main")
        assert report == SyncReport(7, 7, (RefUpdate("main", None, answer.hash),))
    copies: list[MessageStore] = [SQLiteStore(second), SQLiteStore(back)]
    copies.append(PostgresStore(postgres_url, create=False))
    for store in copies:
        try:
            assert await everything(store) == {message.hash for message in tree}
            assert await store.stored([answer.hash, "f" * 64, "not a hash"]) == {answer.hash}
            assert await store.verify() == []
        finally:
            await store.aclose()


@pytest.mark.anyio
async def test_stored_answers_for_many_hashes_at_once(tmp_path: Path) -> None:
    """``stored`` gives the stored hashes among many (more than one query's worth), ignores
    what is not a hash, and the protocol's default (asking ``get``) gives the same."""
    trunk = [Message(content=str(index), sender="root") for index in range(2000)]
    sqlite = SQLiteStore(tmp_path / "many.db")
    memory = MemoryStore()
    try:
        for store in (sqlite, memory):
            await store.put_many(trunk[::2])
        asked = [message.hash for message in trunk] + ["nope", trunk[0].hash]
        expected = {message.hash for message in trunk[::2]}
        assert await sqlite.stored(asked) == expected
        assert await memory.stored(asked) == expected
        assert await MessageStore.stored(memory, asked[:50]) == {
            key for key in asked[:50] if key in expected
        }
    finally:
        await sqlite.aclose()


def test_refs_that_move_cannot_be_confused_with_conflicts() -> None:
    """NonFastForwardError and RefConflictError are different errors (a sync translates
    the one it loses a race with into the other only when the move is not a fast-forward)."""
    assert not issubclass(NonFastForwardError, RefConflictError)
    error = NonFastForwardError((("main", "a" * 64, "b" * 64),))
    assert "aaaaaaaaaa is not on the branch of bbbbbbbbbb" in str(error)
    import pickle

    assert pickle.loads(pickle.dumps(error)).refused == error.refused
