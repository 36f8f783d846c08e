"""What only SQLiteStore does: the file, its pragmas, reopening, tampering, refusing to open.

The behaviour every store shares is in ``test_stores.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import pathlib
import sqlite3
import subprocess
import sys
import textwrap
import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from agentforum import (
    Forum,
    IntegrityError,
    InteractionContext,
    Message,
    MessageNotFoundError,
    SQLiteStore,
    StoreError,
    hash_content,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from agentforum import Agent

pytestmark = pytest.mark.anyio

APPLICATION_ID = 0x4146524D


@contextlib.contextmanager
def raw(path: pathlib.Path | str) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to ``path``, committed and closed on exit."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            yield connection
    finally:
        connection.close()


def pragma(path: pathlib.Path, name: str) -> object:
    """Read ``PRAGMA name`` of the database at ``path`` with the stdlib sqlite3."""
    with raw(path) as connection:
        return connection.execute(f"PRAGMA {name}").fetchone()[0]


def make_echo(forum: Forum) -> Agent:
    """Register an agent that answers each request with "re: <content>"."""

    async def echo(ctx: InteractionContext) -> None:
        async for promise in ctx.request_messages:
            ctx.respond(f"re: {(await promise).content}")

    return forum.agent(alias="echo")(echo)


def message(content: str, parent: Message | None = None) -> Message:
    """Return a message from "s" continuing ``parent`` (a root if None)."""
    return Message(content=content, sender="s", parent=None if parent is None else parent.hash)


async def stored_branch(path: pathlib.Path, *contents: str) -> list[Message]:
    """Write a branch of messages with ``contents`` into a new SQLiteStore at ``path``."""
    branch: list[Message] = []
    for content in contents:
        branch.append(message(content, branch[-1] if branch else None))
    store = SQLiteStore(path)
    await store.put_many(branch)
    await store.aclose()
    return branch


# -- Forum(path) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [str, pathlib.Path])
async def test_forum_with_a_path_opens_an_sqlite_store(tmp_path: pathlib.Path, kind: type) -> None:
    """Forum(str) and Forum(pathlib.Path) open an SQLiteStore at that path."""
    path = tmp_path / "chat.db"
    forum = Forum(kind(path))
    assert isinstance(forum.store, SQLiteStore)
    assert forum.store.path == str(path)
    async with forum:
        await make_echo(forum).ask("hi").last()
    assert path.is_file()


async def test_conversation_survives_the_forum_and_refs_come_back(tmp_path: pathlib.Path) -> None:
    """A new Forum on the same file sees the messages, the history and the refs of the last."""
    path = tmp_path / "chat.db"
    forum = Forum(path)
    echo = make_echo(forum)
    with anyio.fail_after(10):
        async with forum:
            first = await echo.ask("one").last()
            second = await echo.ask("two", branch_from=first).last()
            await forum.set_ref("main", second)
            await forum.set_ref("start", first)
            history = await forum.history(second, include_calls=True)
    # The forum closed the store it opened: the last connection is gone, so is the WAL file.
    assert not (tmp_path / "chat.db-wal").exists()

    again = Forum(str(path))
    async with again:
        assert dict(await again.refs()) == {"main": second.hash, "start": first.hash}
        assert (await again.get("main")).hash == second.hash
        assert (await again.get(second.hash)).hash == second.hash
        assert (await again.get(second.hash[:8])).hash == second.hash
        assert [m.hash for m in await again.history("main", include_calls=True)] == [
            m.hash for m in history
        ]
        assert [m.content for m in await again.history("main")] == [
            "one",
            "re: one",
            "two",
            "re: two",
        ]
        assert await again.store.verify() == []


async def test_set_ref_takes_a_promise_a_message_or_a_prefix(tmp_path: pathlib.Path) -> None:
    """forum.set_ref accepts a promise, a message or a hash prefix; forum.get(name) follows it."""
    forum = Forum(tmp_path / "chat.db")
    echo = make_echo(forum)
    with anyio.fail_after(10):
        async with forum:
            seq = echo.ask(["a", "b"])
            promises = [promise async for promise in seq]
            await forum.set_ref("by-promise", promises[0])
            response = await promises[0]
            assert (await forum.get("by-promise")).hash == response.hash
            outside = message("never stored before")
            await forum.set_ref("by-message", outside)
            assert (await forum.get("by-message")).hash == outside.hash
            await forum.set_ref("by-prefix", response.hash[:7])
            assert (await forum.get("by-prefix")).hash == response.hash
            await forum.set_ref("by-prefix", outside.hash)
            assert (await forum.get("by-prefix")).hash == outside.hash
            await forum.delete_ref("by-message")
            assert set(await forum.refs()) == {"by-promise", "by-prefix"}
            with pytest.raises(ValueError, match="hexadecimal"):
                await forum.get("by-message")


async def test_refs_are_looked_up_before_hashes(tmp_path: pathlib.Path) -> None:
    """A ref named like the prefix of another message's hash names the ref's message."""
    first, second = message("first"), message("second")
    forum = Forum(tmp_path / "chat.db")
    async with forum:
        await forum.store.put_many([first, second])
        name = second.hash[:8]
        await forum.set_ref(name, first)
        assert (await forum.get(name)).hash == first.hash
        assert (await forum.get(second.hash[:9])).hash == second.hash
        await forum.set_ref(second.hash, first)
        assert (await forum.get(second.hash)).hash == first.hash


async def test_set_ref_to_an_unstorable_message_raises(tmp_path: pathlib.Path) -> None:
    """forum.set_ref with a message whose parent is not stored raises; no ref is made."""
    forum = Forum(tmp_path / "chat.db")
    async with forum:
        with pytest.raises(MessageNotFoundError, match="parent"):
            await forum.set_ref("main", message("orphan", message("not stored")))
        assert dict(await forum.refs()) == {}


# -- the file ------------------------------------------------------------------------------------


async def test_the_file_is_wal_with_our_application_id_and_schema_version(
    tmp_path: pathlib.Path,
) -> None:
    """A new database is in WAL mode, user_version 2, application_id 0x4146524D ("AFRM")."""
    path = tmp_path / "new.db"
    await stored_branch(path, "a")
    assert pragma(path, "journal_mode") == "wal"
    assert pragma(path, "user_version") == 2
    assert pragma(path, "application_id") == APPLICATION_ID
    assert path.read_bytes()[68:72] == b"AFRM"


async def test_messages_are_stored_as_their_fields_and_each_content_once(
    tmp_path: pathlib.Path,
) -> None:
    """Each row holds its message's fields, hashes as 32 bytes; a content shared by several
    messages is one row of ``contents``, its UTF-8 bytes under its own hash."""
    path = tmp_path / "rows.db"
    branch = await stored_branch(path, "same", "other", "same", "same")
    with raw(path) as connection:
        rows = connection.execute(
            "SELECT hash, kind, parent, reply_to, original, content, sender, metadata, "
            "receiver, kwargs, error_type FROM messages"
        ).fetchall()
        contents = connection.execute("SELECT hash, text FROM contents").fetchall()

    def key(hash: str | None) -> bytes | None:
        return None if hash is None else bytes.fromhex(hash)

    assert sorted(rows) == sorted(
        (
            key(m.hash),
            "message",
            key(m.parent),
            None,
            None,
            key(m.content_hash),
            "s",
            "{}",
            None,
            None,
            None,
        )
        for m in branch
    )
    assert sorted(contents) == sorted(
        (key(hash_content(text)), text.encode()) for text in ("same", "other")
    )


async def test_an_empty_file_becomes_a_database(tmp_path: pathlib.Path) -> None:
    """An existing empty file is made an agentforum database (create=True, the default)."""
    path = tmp_path / "empty.db"
    path.touch()
    branch = await stored_branch(path, "a")
    store = SQLiteStore(path)
    assert (await store.get(branch[0].hash)).hash == branch[0].hash
    await store.aclose()
    assert pragma(path, "application_id") == APPLICATION_ID


async def test_a_database_of_format_1_is_refused_naming_both_formats(
    tmp_path: pathlib.Path,
) -> None:
    """A database of schema 1 (format agentforum/1) is refused untouched, saying which format
    it holds and which this version reads."""
    path = tmp_path / "old.db"
    with raw(path) as connection:
        connection.execute("CREATE TABLE messages (hash TEXT PRIMARY KEY, encoding BLOB)")
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("PRAGMA user_version = 1")
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"format agentforum/1.*reads agentforum/2"):
        await SQLiteStore(path).open()
    assert path.read_bytes() == before


# -- tampering -----------------------------------------------------------------------------------

#: Ways to alter the row of message ``b`` (or its content's row): table, column, new value.
TAMPERINGS: dict[str, tuple[str, str, object]] = {
    "another text": ("contents", "text", b"evil"),
    "a text not UTF-8": ("contents", "text", b"\xff\xfe garbage \x00"),
    "a text stored as text": ("contents", "text", "b"),
    "an empty text": ("contents", "text", b""),
    "another sender": ("messages", "sender", "mallory"),
    "metadata not JSON": ("messages", "metadata", "{not json"),
    "metadata nested without end": ("messages", "metadata", "[" * 100_000 + "]" * 100_000),
    "metadata a number": ("messages", "metadata", 2**60),
    "an unknown kind": ("messages", "kind", "evil"),
    "a kind of another class": ("messages", "kind", "error"),
    "a damaged link": ("messages", "reply_to", b"\x01\x02"),
}


def alter(path: pathlib.Path, message: Message, table: str, column: str, value: object) -> None:
    """Write ``value`` in ``column`` of the row of ``message`` (or of its content) by hand."""
    key = message.content_hash if table == "contents" else message.hash
    with raw(path) as connection:
        connection.execute(
            f"UPDATE {table} SET {column} = ? WHERE hash = ?", (value, bytes.fromhex(key))
        )


@pytest.mark.parametrize("tampering", TAMPERINGS.values(), ids=TAMPERINGS.keys())
async def test_a_tampered_row_is_never_returned(
    tmp_path: pathlib.Path, tampering: tuple[str, str, object]
) -> None:
    """A message whose row (or content row) was changed raises IntegrityError on every read;
    verify names it, and its content too when the content was changed."""
    path = tmp_path / "tampered.db"
    a, b, c = await stored_branch(path, "a", "b", "c")
    alter(path, b, *tampering)
    store = SQLiteStore(path)
    try:
        with pytest.raises(IntegrityError, match=b.hash):
            await store.get(b.hash)
        with pytest.raises(IntegrityError, match=b.hash):
            await store.resolve(b.hash[:10])
        with pytest.raises(IntegrityError, match=b.hash):
            await store.ancestors(b.hash)
        with pytest.raises(IntegrityError, match=b.hash):
            await store.ancestors(c.hash)
        with pytest.raises(IntegrityError, match=b.hash):
            await store.children(a.hash)
        assert (await store.get(c.hash)).hash == c.hash
        assert [m.hash for m in await store.ancestors(a.hash)] == [a.hash]
        problems = await store.verify()
        expected = [b.hash, b.content_hash] if tampering[0] == "contents" else [b.hash]
        assert sorted(problem.hash for problem in problems) == sorted(expected)
        assert all(problem.reason for problem in problems)
    finally:
        await store.aclose()


async def test_the_reason_says_whether_a_row_is_altered_or_damaged(
    tmp_path: pathlib.Path,
) -> None:
    """verify says "do not hash" for other valid fields, "damaged" for fields no message
    has, and names the content whose text was changed."""
    path = tmp_path / "tampered.db"
    a, b, c = await stored_branch(path, "a", "b", "c")
    alter(path, a, "messages", "sender", "evil")
    alter(path, b, "messages", "metadata", "garbage")
    alter(path, c, "contents", "text", b"evil")
    store = SQLiteStore(path)
    try:
        problems = {problem.hash: problem.reason for problem in await store.verify()}
    finally:
        await store.aclose()
    assert problems.keys() == {a.hash, b.hash, c.hash, c.content_hash}
    assert "do not hash" in problems[a.hash]
    assert "damaged" in problems[b.hash]
    assert f"its content {c.content_hash} does not hash" in problems[c.hash]
    assert "a content does not hash to its hash" in problems[c.content_hash]


async def test_columns_not_stored_as_the_fields_are_reported_by_verify(
    tmp_path: pathlib.Path,
) -> None:
    """Metadata stored as JSON that is not canonical: the message reads as it was stored (its
    hash holds), and verify says its columns are not stored as its fields are."""
    path = tmp_path / "tampered.db"
    _, b = await stored_branch(path, "a", "b")
    alter(path, b, "messages", "metadata", "{ }")
    store = SQLiteStore(path)
    try:
        problems = await store.verify()
        assert [(problem.hash, problem.reason) for problem in problems] == [
            (b.hash, "its columns are not stored as its fields are")
        ]
        assert await store.get(b.hash) == b
    finally:
        await store.aclose()


async def test_verify_reports_missing_and_unreferenced_contents(tmp_path: pathlib.Path) -> None:
    """A message whose content row is gone, and a content no message names, are reported; the
    message cannot be read."""
    path = tmp_path / "contents.db"
    _, b = await stored_branch(path, "a", "b")
    stray = hash_content("stray")
    with raw(path) as connection:
        connection.execute("PRAGMA foreign_keys = OFF")
        connection.execute("DELETE FROM contents WHERE hash = ?", (bytes.fromhex(b.content_hash),))
        connection.execute("INSERT INTO contents VALUES (?, ?)", (bytes.fromhex(stray), b"stray"))
    store = SQLiteStore(path)
    try:
        with pytest.raises(IntegrityError, match=rf"{b.hash}: its content {b.content_hash}"):
            await store.get(b.hash)
        problems = {(problem.hash, problem.reason) for problem in await store.verify()}
    finally:
        await store.aclose()
    assert problems == {
        (b.hash, f"its content {b.content_hash} is missing"),
        (stray, "a content is referenced by no message"),
    }


async def test_verify_reports_dangling_refs_and_cache_entries(tmp_path: pathlib.Path) -> None:
    """Refs and cached responses naming missing messages are reported (rows written by hand)."""
    path = tmp_path / "dangling.db"
    (a,) = await stored_branch(path, "a")
    missing = "e" * 64
    with raw(path) as connection:
        connection.execute("PRAGMA foreign_keys = OFF")
        connection.execute("INSERT INTO refs VALUES ('main', ?)", (bytes.fromhex(missing),))
        connection.execute(
            "INSERT INTO cache VALUES (?, ?)", (bytes.fromhex(a.hash), json.dumps([missing]))
        )
        connection.execute("INSERT INTO cache VALUES (?, '[]')", (bytes.fromhex(missing),))
    store = SQLiteStore(path)
    try:
        problems = await store.verify()
    finally:
        await store.aclose()
    reasons = sorted((problem.hash, problem.reason) for problem in problems)
    assert len(reasons) == 4
    assert any("ref 'main'" in reason for _, reason in reasons)
    assert any(key == a.hash and missing in reason for key, reason in reasons)
    assert any(key == a.hash and "not a call" in reason for key, reason in reasons)
    assert any(key == missing and "cached call" in reason for key, reason in reasons)


# -- refusing to open ----------------------------------------------------------------------------


def make_text_file(path: pathlib.Path) -> None:
    """A text file, not a database."""
    path.write_text("just some notes\nnot a database\n")


def make_foreign_database(path: pathlib.Path) -> None:
    """An SQLite database of another application (no application_id, a table of its own)."""
    with raw(path) as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")
        connection.execute("INSERT INTO t VALUES (1)")


def make_newer_database(path: pathlib.Path) -> None:
    """An agentforum database of a newer schema version (99)."""
    with raw(path) as connection:
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("PRAGMA user_version = 99")
        connection.execute("CREATE TABLE messages_v99 (x)")


def make_other_application_id(path: pathlib.Path) -> None:
    """An SQLite database that declares another application_id, and no tables."""
    with raw(path) as connection:
        connection.execute("PRAGMA application_id = 1234")


BAD_FILES = {
    "text file": (make_text_file, "not SQLite"),
    "foreign database": (make_foreign_database, "not an agentforum database"),
    "other application id": (make_other_application_id, "not an agentforum database"),
    "newer schema": (make_newer_database, "newer"),
}


def snapshot(directory: pathlib.Path) -> dict[str, tuple[bytes, int]]:
    """Every file of ``directory``: its bytes and modification time."""
    return {
        entry.name: (entry.read_bytes(), entry.stat().st_mtime_ns)
        for entry in sorted(directory.iterdir())
    }


@pytest.mark.parametrize("create", [True, False])
@pytest.mark.parametrize(("maker", "words"), BAD_FILES.values(), ids=BAD_FILES.keys())
async def test_opening_a_file_that_is_not_ours_raises_and_leaves_it_alone(
    tmp_path: pathlib.Path, maker: object, words: str, create: bool
) -> None:
    """A non-SQLite file, another app's database or a newer one: StoreError, file untouched."""
    path = tmp_path / "file.db"
    assert callable(maker)
    maker(path)
    before = snapshot(tmp_path)
    store = SQLiteStore(path, create=create)
    for _ in range(2):  # a failed open is not remembered: every use tries again, and fails
        with pytest.raises(StoreError, match=words) as caught:
            await store.get("0" * 64)
        assert "\n" not in str(caught.value)
        assert str(path) in str(caught.value)
    with pytest.raises(StoreError):
        await store.put(message("a"))
    with pytest.raises(StoreError):
        await store.verify()
    await store.aclose()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("maker", "words"), BAD_FILES.values(), ids=BAD_FILES.keys())
async def test_a_forum_on_a_file_that_is_not_ours_raises_store_error(
    tmp_path: pathlib.Path, maker: object, words: str
) -> None:
    """Forum(path) on such a file: entering the forum raises StoreError, file untouched."""
    path = tmp_path / "file.db"
    assert callable(maker)
    maker(path)
    before = snapshot(tmp_path)
    forum = Forum(path)
    with pytest.raises(StoreError, match=words):
        async with forum:
            pass
    assert not forum.is_running
    assert snapshot(tmp_path) == before


async def test_a_missing_file_with_create_false_raises_and_creates_nothing(
    tmp_path: pathlib.Path,
) -> None:
    """SQLiteStore(missing, create=False) raises StoreError; no file, -wal or -shm appears."""
    path = tmp_path / "missing.db"
    store = SQLiteStore(path, create=False)
    with pytest.raises(StoreError, match="no such file") as caught:
        await store.get("0" * 64)
    assert "\n" not in str(caught.value)
    with pytest.raises(StoreError):
        await store.children(None)
    await store.aclose()
    assert snapshot(tmp_path) == {}


async def test_an_empty_file_with_create_false_raises_and_stays_empty(
    tmp_path: pathlib.Path,
) -> None:
    """SQLiteStore(empty file, create=False) raises StoreError; the file stays empty."""
    path = tmp_path / "empty.db"
    path.touch()
    before = snapshot(tmp_path)
    store = SQLiteStore(path, create=False)
    with pytest.raises(StoreError, match="empty") as caught:
        await store.refs()
    assert "\n" not in str(caught.value)
    await store.aclose()
    assert snapshot(tmp_path) == before


async def test_create_false_opens_an_existing_database(tmp_path: pathlib.Path) -> None:
    """create=False opens a database that exists, for reading and writing."""
    path = tmp_path / "chat.db"
    (a,) = await stored_branch(path, "a")
    store = SQLiteStore(path, create=False)
    try:
        assert (await store.get(a.hash)).hash == a.hash
        await store.put(message("b", a))
        assert len(await store.children(a.hash)) == 1
    finally:
        await store.aclose()


async def test_a_directory_is_refused(tmp_path: pathlib.Path) -> None:
    """A path that is a directory raises StoreError."""
    store = SQLiteStore(tmp_path)
    with pytest.raises(StoreError):
        await store.refs()
    await store.aclose()


# -- reopening, backends, processes --------------------------------------------------------------


async def test_store_reopens_after_aclose(tmp_path: pathlib.Path) -> None:
    """After aclose, the next call opens the file again and sees everything written."""
    path = tmp_path / "chat.db"
    store = SQLiteStore(path)
    branch = [message("a")]
    await store.put(branch[0])
    await store.aclose()
    assert not (tmp_path / "chat.db-wal").exists()
    branch.append(message("b", branch[0]))
    await store.put(branch[1])
    await store.set_ref("main", branch[1].hash)
    await store.aclose()
    await store.aclose()
    assert [m.hash for m in await store.ancestors(branch[1].hash)] == [m.hash for m in branch]
    assert await store.get_ref("main") == branch[1].hash
    await store.aclose()


async def test_two_stores_on_one_file_see_each_others_writes(tmp_path: pathlib.Path) -> None:
    """Two SQLiteStores on the same file (two connections) see each other's commits at once."""
    path = tmp_path / "shared.db"
    first, second = SQLiteStore(path), SQLiteStore(path)
    try:
        a = message("a")
        await first.put(a)
        assert (await second.get(a.hash)).hash == a.hash
        b = message("b", a)
        await second.put(b)
        await second.set_ref("main", b.hash)
        assert [m.hash for m in await first.children(a.hash)] == [b.hash]
        assert await first.get_ref("main") == b.hash
    finally:
        await first.aclose()
        await second.aclose()


def test_one_store_is_used_from_asyncio_then_trio(tmp_path: pathlib.Path) -> None:
    """The same SQLiteStore object works in an asyncio run and then in a Trio run."""
    store = SQLiteStore(tmp_path / "both.db")
    a = message("a")
    b = message("b", a)

    async def write() -> None:
        await store.put(a)

    async def read_and_write() -> list[str]:
        await store.put(b)
        return [m.hash for m in await store.ancestors(b.hash)]

    async def close() -> None:
        await store.aclose()

    anyio.run(write, backend="asyncio")
    assert anyio.run(read_and_write, backend="trio") == [a.hash, b.hash]
    anyio.run(close, backend="trio")


def test_same_conversation_gives_the_same_rows_on_asyncio_and_trio(tmp_path: pathlib.Path) -> None:
    """One conversation written on asyncio and on Trio into two files gives identical rows."""

    async def converse(path: pathlib.Path) -> None:
        forum = Forum(path)
        echo = make_echo(forum)
        async with forum:
            last = await echo.ask(["a", "b"]).last()
            await echo.ask("c", branch_from=last).last()

    rows = []
    for backend in ("asyncio", "trio"):
        path = tmp_path / f"{backend}.db"
        anyio.run(converse, path, backend=backend)
        with raw(path) as connection:
            # Every column but the time each row was written (outside the hash): the two
            # runs may fall in different seconds.
            columns = ", ".join(
                column[1]
                for column in connection.execute("PRAGMA table_info(messages)")
                if column[1] != "written"
            )
            rows.append(sorted(connection.execute(f"SELECT {columns} FROM messages").fetchall()))
    assert rows[0] == rows[1]
    assert len(rows[0]) == 8  # a, b, call, re: a, re: b; c, call, re: c


# -- bugs found and fixed: each test failed before its fix ----------------------------------------


def consistent_or_integrity_error(branch: list[Message], key: str) -> None:
    """A branch must end with ``key``, start at a root, and each message continue the last."""
    assert branch[-1].hash == key
    assert branch[0].parent is None
    for before, after in itertools.pairwise(branch):
        assert after.parent == before.hash


async def test_a_tampered_parent_column_never_gives_a_wrong_branch(
    tmp_path: pathlib.Path,
) -> None:
    """With b's parent column pointed at c, ancestors(b) and children(c) never lie."""
    path = tmp_path / "tampered.db"
    _, b = await stored_branch(path, "a", "b")
    c = message("c")
    store = SQLiteStore(path)
    try:
        await store.put(c)
        await store.aclose()
        with raw(path) as connection:
            connection.execute(
                "UPDATE messages SET parent = ? WHERE hash = ?",
                (bytes.fromhex(c.hash), bytes.fromhex(b.hash)),
            )
        try:
            consistent_or_integrity_error(await store.ancestors(b.hash), b.hash)
        except IntegrityError:
            pass
        try:
            children = await store.children(c.hash)
        except IntegrityError:
            children = []
        assert all(child.parent == c.hash for child in children)
    finally:
        await store.aclose()


CYCLE_SCRIPT = """
import sqlite3, sys
import anyio
from agentforum import IntegrityError, Message, SQLiteStore

async def main() -> None:
    store = SQLiteStore(sys.argv[1])
    a = Message(content="a", sender="s")
    b = Message(content="b", sender="s", parent=a.hash)
    await store.put_many([a, b])
    await store.aclose()
    connection = sqlite3.connect(sys.argv[1])
    with connection:
        connection.execute(
            "UPDATE messages SET parent = ? WHERE hash = ?",
            (bytes.fromhex(b.hash), bytes.fromhex(a.hash)),
        )
    connection.close()
    try:
        await store.ancestors(b.hash)
    except IntegrityError:
        print("IntegrityError")
    else:
        print("returned")
    await store.aclose()

anyio.run(main)
"""


def test_ancestors_terminate_on_a_tampered_parent_cycle(tmp_path: pathlib.Path) -> None:
    """A cycle of parent columns (a's parent set to its child b) makes ancestors end, not hang."""
    script = tmp_path / "cycle.py"
    script.write_text(textwrap.dedent(CYCLE_SCRIPT))
    try:
        result = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "cycle.db")],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("ancestors() did not return within 3 seconds")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"IntegrityError", "returned"}


async def test_entering_a_forum_on_a_file_that_is_not_ours_raises_store_error(
    tmp_path: pathlib.Path,
) -> None:
    """`async with Forum(text file)` raises StoreError itself, before any call is made."""
    path = tmp_path / "notes.txt"
    make_text_file(path)
    with pytest.raises(StoreError):
        async with Forum(path):
            pass


async def test_opening_while_another_connection_creates_the_schema(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store opening a new file while another creates the schema opens fine.

    The interleaving is forced: right after the opening store has read ``application_id``
    (0: a new file), another store, in another thread, starts creating the database. The
    opener reads the file's header in one read transaction, so it sees a consistent state
    (it used to read "no id" and then "3 tables", and call the file foreign).
    """
    path = tmp_path / "race.db"
    other = message("written by the other one")
    connect = sqlite3.connect
    interleaved = False
    creator: threading.Thread | None = None

    def create_elsewhere() -> None:
        async def create() -> None:
            store = SQLiteStore(path)
            await store.put(other)
            await store.aclose()

        anyio.run(create)

    class Interleaving(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            nonlocal interleaved, creator
            if sql == "PRAGMA user_version" and not interleaved:
                interleaved = True
                creator = threading.Thread(target=create_elsewhere)
                creator.start()
            return super().execute(sql, *args)

    def connect_interleaving(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = connect(*args, factory=Interleaving, **kwargs)
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect_interleaving)
    store = SQLiteStore(path)
    try:
        await store.open()
        assert creator is not None
        await anyio.to_thread.run_sync(creator.join)
        assert (await store.get(other.hash)).hash == other.hash
        assert await store.verify() == []
    finally:
        await store.aclose()
    assert interleaved


def test_stores_opening_one_new_file_at_the_same_moment_all_open(tmp_path: pathlib.Path) -> None:
    """Several stores opening one new file at once all open it (none says "locked").

    Switching a new file to WAL could fail at once with "database is locked" when another
    connection was opening it too, without waiting for the busy timeout: about one opener
    in 70 failed this way before the switch was retried.
    """
    errors: list[BaseException] = []

    def opener(path: pathlib.Path, backend: str, barrier: threading.Barrier) -> None:
        async def open_and_close() -> None:
            store = SQLiteStore(path)
            await store.open()
            await store.aclose()

        barrier.wait()
        try:
            anyio.run(open_and_close, backend=backend)
        except BaseException as exc:  # collected: checked below, in the test's thread
            errors.append(exc)

    for round_number in range(100):
        path = tmp_path / f"{round_number}.db"
        barrier = threading.Barrier(4)
        threads = [
            threading.Thread(target=opener, args=(path, backend, barrier))
            for backend in ("asyncio", "trio", "asyncio", "trio")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
