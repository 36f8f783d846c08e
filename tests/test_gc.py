"""Garbage collection: what no ref reaches, older than the grace period, goes; the store
stays sound (``agentforum gc``, ``SQLiteStore.collect_garbage``, ``PostgresStore``'s)."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentforum import (
    CallMessage,
    GarbageReport,
    Message,
    MessageStore,
    PostgresStore,
    SQLiteStore,
)
from test_branches import chain
from test_cli import invoke
from test_sync import closure, everything
from trees import trees

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

DAY = 86400.0


def age(path: Path, messages: list[Message], seconds: float) -> None:
    """Make the rows of ``messages`` look written ``seconds`` earlier than they were."""
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "UPDATE messages SET written = written - ? WHERE hash = ?",
            [(int(seconds), bytes.fromhex(message.hash)) for message in messages],
        )
    connection.close()


async def scene(store: MessageStore) -> dict[str, list[Message]]:
    """A store with a branch a ref reaches, a cached call on it, an abandoned branch with a
    cached call of its own, and a message that forwards from the abandoned branch."""
    kept = chain(3)
    call = CallMessage(receiver="agent", parent=kept[-1].hash)
    answer = Message(content="answer", sender="agent", parent=call.hash)
    forward = Message(content="kept", sender="x", parent=answer.hash)
    lost = chain(2, kept[0].hash, "lost")  # its contents are those of `kept`: they stay
    lost_call = CallMessage(receiver="agent", parent=lost[-1].hash)
    lost_answer = Message(content="lost answer", sender="agent", parent=lost_call.hash)
    await store.put_many([*kept, call, answer, forward, *lost, lost_call, lost_answer])
    await store.put_cached(call.hash, [answer.hash])
    await store.put_cached(lost_call.hash, [lost_answer.hash])
    await store.set_ref("main", forward.hash)
    return {
        "kept": [*kept, call, answer, forward],
        "lost": [*lost, lost_call, lost_answer],
    }


@pytest.mark.anyio
async def test_gc_deletes_what_no_ref_reaches_after_the_grace_period(tmp_path: Path) -> None:
    """Within the grace period nothing goes; after it, what no ref reaches goes, with its
    contents and its calls' cache entries, and the store stays sound. A dry run counts the
    same and deletes nothing."""
    path = tmp_path / "gc.db"
    store = SQLiteStore(path)
    try:
        messages = await scene(store)
        assert await store.collect_garbage() == GarbageReport(0, 0, 0, 10)
        age(path, messages["kept"] + messages["lost"], 2 * DAY)
        dry = await store.collect_garbage(grace=DAY, dry_run=True)
        assert dry == GarbageReport(4, 1, 1, 6)
        assert len(await everything(store)) == 10
        assert await store.collect_garbage(grace=DAY) == dry
        assert await everything(store) == {message.hash for message in messages["kept"]}
        assert await store.verify() == []
        assert await store.get_cached(messages["kept"][3].hash) == (messages["kept"][4].hash,)
        assert await store.get_cached(messages["lost"][2].hash) is None
        assert await store.collect_garbage(grace=0) == GarbageReport(0, 0, 0, 6)
        with pytest.raises(ValueError, match="0 or more"):
            await store.collect_garbage(grace=-1)
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_recent_messages_keep_what_they_link_to(tmp_path: Path) -> None:
    """A message written within the grace period keeps its branch, however old."""
    path = tmp_path / "recent.db"
    store = SQLiteStore(path)
    try:
        old = chain(4)
        await store.put_many(old)
        age(path, old, 30 * DAY)
        recent = Message(content="recent", sender="s", parent=old[-1].hash)
        await store.put(recent)
        assert await store.collect_garbage(grace=DAY) == GarbageReport(0, 0, 0, 5)
        assert await store.verify() == []
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_database_without_write_times_gets_them_and_its_rows_get_a_grace_period(
    tmp_path: Path,
) -> None:
    """A schema-2 database written before write times were recorded opens (the column is
    added); the first collection stamps its rows and keeps them, a later one deletes those
    no ref reaches."""
    path = tmp_path / "before.db"
    store = SQLiteStore(path)
    messages = chain(3)
    try:
        await store.put_many(messages)
        await store.set_ref("main", messages[0].hash)
    finally:
        await store.aclose()
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE messages DROP COLUMN written")
    connection.close()
    store = SQLiteStore(path, create=False)
    try:
        assert await store.collect_garbage(grace=0, dry_run=True) == GarbageReport(0, 0, 0, 3)
        assert await store.collect_garbage(grace=0) == GarbageReport(0, 0, 0, 3)
        age(path, messages, 1)
        assert await store.collect_garbage(grace=0) == GarbageReport(2, 2, 0, 1)
        assert await store.verify() == []
    finally:
        await store.aclose()


@settings(max_examples=25)
@given(data=st.data(), tree=trees(max_size=16))
def test_gc_keeps_exactly_what_the_refs_reach(data: st.DataObject, tree: list[Message]) -> None:
    """For all trees and refs: with no grace period, gc keeps exactly the messages the refs
    reach through their links, and the store verifies."""
    tips = data.draw(st.lists(st.sampled_from([message.hash for message in tree]), max_size=3))

    async def main(path: Path) -> None:
        store = SQLiteStore(path)
        try:
            await store.put_many(tree)
            for index, tip in enumerate(tips):
                await store.set_ref(f"ref/{index}", tip)
            age(path, tree, 10)
            report = await store.collect_garbage(grace=0)
            kept = {message.hash for message in closure(tree, tips)}
            assert await everything(store) == kept
            assert report.kept == len(kept)
            assert await store.verify() == []
        finally:
            await store.aclose()

    with tempfile.TemporaryDirectory() as directory:  # a fresh file per example
        anyio.run(main, Path(directory) / "tree.db")


@pytest.mark.anyio
async def test_gc_on_postgres(postgres_url: str, postgres_server: object) -> None:
    """The same collection on PostgreSQL: nothing within the grace period, then what no ref
    reaches, in one transaction; the store stays sound."""
    store = PostgresStore(postgres_url)
    try:
        messages = await scene(store)
        assert await store.collect_garbage(grace=DAY) == GarbageReport(0, 0, 0, 10)
        assert await store.collect_garbage(grace=0, dry_run=True) == GarbageReport(4, 1, 1, 6)
        assert len(await everything(store)) == 10
        assert await store.collect_garbage(grace=0) == GarbageReport(4, 1, 1, 6)
        assert await everything(store) == {message.hash for message in messages["kept"]}
        assert await store.verify() == []
    finally:
        await store.aclose()


def test_gc_command(demo_db: Path, tmp_path: Path) -> None:
    """`agentforum gc` counts with --dry-run, deletes without, leaves a sound database, and
    refuses a duration it cannot read."""
    path = tmp_path / "demo.db"
    path.write_bytes(demo_db.read_bytes())
    assert invoke("gc", "--db", path).stdout == (
        f"{path}: deleted 0 messages, 0 contents and 0 cache entries; 21 messages kept\n"
    )
    dry = invoke("gc", "--dry-run", "--grace", "0", "--db", path)
    assert dry.stdout.startswith(f"{path}: would delete 3 messages, 2 contents and 0 cache")
    assert invoke("gc", "--grace", "0s", "--db", path).stdout.startswith(f"{path}: deleted 3")
    assert invoke("fsck", "--db", path).stdout.startswith(f"{path}: sound (18 messages")
    bad = invoke("gc", "--grace", "two weeks", "--db", path)
    assert bad.exit_code == 2
    assert "is not a duration" in bad.stderr


@pytest.fixture(params=["sqlite", "postgres"])
async def claiming(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A new SQLite or PostgreSQL store (both hold claims), closed afterwards."""
    if request.param == "postgres":
        store: SQLiteStore | PostgresStore = PostgresStore(request.getfixturevalue("postgres_url"))
    else:
        store = SQLiteStore(tmp_path / "claims.db")
    try:
        yield store
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_gc_removes_the_claims_whose_lease_ran_out(claiming: Any) -> None:
    """A claim whose holder died stays in the table until its call is made again; gc
    removes it (a dry run counts it), and leaves a live claim alone."""
    await claiming.claim("d" * 64, "dead", 0.001)
    await claiming.claim("e" * 64, "alive", 600)
    with anyio.fail_after(30):
        # Until the store's clock passes the dead one's lease: the time, not an order.
        while (await claiming.collect_garbage(dry_run=True)).claims != 1:  # noqa: ASYNC110
            await anyio.sleep(0.001)
    report = await claiming.collect_garbage()
    assert report == GarbageReport(0, 0, 0, 0, claims=1)
    assert (await claiming.collect_garbage()).claims == 0
    assert (await claiming.claim("e" * 64, "other", 600)).owner == "alive"
    assert (await claiming.claim("d" * 64, "heir", 600)).owner == "heir"
