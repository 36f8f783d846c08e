"""The SQLite store's own thread: puts queued together share a commit, one caller's error
never fails another's write, cancellation withdraws what is queued and waits for what runs,
and the thread ends with the store.

The thread is held up the way another process holds it up: a second connection to the file
takes the write lock (``BEGIN IMMEDIATE``), so the store's next write waits for it inside
SQLite, and everything queued behind that write waits its turn. The commits are counted in
the write-ahead log itself: each transaction ends with one commit frame.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import struct
import sys
import textwrap
import threading
from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from anyio.streams.buffered import BufferedByteReceiveStream

from agentforum import (
    Forum,
    ForwardedMessage,
    InteractionContext,
    Message,
    MessageNotFoundError,
    SQLiteStore,
    StoreError,
)
from agentforum._stores._sqlite_worker import Worker

if TYPE_CHECKING:
    import pathlib
    from collections.abc import AsyncIterator, Iterator, Sequence

    from anyio.from_thread import BlockingPortal

pytestmark = pytest.mark.anyio


def message(text: str, parent: Message | None = None) -> Message:
    return Message(content=text, sender="s", parent=None if parent is None else parent.hash)


def commits(path: pathlib.Path) -> int:
    """The transactions committed in the write-ahead log of ``path`` since it was last reset.

    A frame is a 24-byte header and a page; its second field is nonzero only in the last
    frame of a transaction (the size of the database after the commit). Frames left from
    before the last reset have other salts than the log's header, and end the count.
    """
    data = (path.parent / f"{path.name}-wal").read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    count = 0
    for start in range(32, len(data) - 24, 24 + page_size):
        if data[start + 8 : start + 16] != salts:
            break
        count += struct.unpack(">I", data[start + 4 : start + 8])[0] != 0
    return count


@contextlib.contextmanager
def write_lock(path: pathlib.Path) -> Iterator[None]:
    """Hold the write lock of the database at ``path`` from another connection: the store's
    next write waits for it, and whatever is queued behind that write waits too."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("COMMIT")
    finally:
        other.close()


@contextlib.asynccontextmanager
async def other_event_loop(
    backend: str, options: dict[str, object]
) -> AsyncIterator[BlockingPortal]:
    """An event loop of ``backend`` in another thread, run by a blocking portal; its methods
    block, so they are called here from worker threads (Trio refuses them in its own)."""
    manager = start_blocking_portal(backend, options)
    portal = await anyio.to_thread.run_sync(manager.__enter__)
    try:
        with anyio.fail_after(20):
            yield portal
    finally:
        await anyio.to_thread.run_sync(manager.__exit__, None, None, None)


def threads_of(store: SQLiteStore) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == f"agentforum {store!r}"]


async def stored(store: SQLiteStore, messages: Sequence[Message]) -> list[bool]:
    """For each message, whether the store holds it."""
    hashes = {one.hash for one in messages}
    found = set()
    for parent in {one.parent for one in messages}:
        found.update(child.hash for child in await store.children(parent) if child.hash in hashes)
    return [one.hash in found for one in messages]


# -- coalesced puts ------------------------------------------------------------------------------


async def test_puts_queued_together_share_a_commit(tmp_path: pathlib.Path) -> None:
    """Twenty puts from twenty tasks, queued while the thread waits for the write lock, are
    committed in at most two transactions (the first ones the thread took, the rest), not
    twenty; each is stored when its call returns."""
    path = tmp_path / "chat.db"
    store = SQLiteStore(path)
    root = message("root")
    children = [message(f"child {index}", root) for index in range(20)]
    returned: list[Message] = []

    async def put(child: Message) -> None:
        await store.put(child)
        returned.append(child)

    try:
        await store.put(root)
        before = commits(path)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                with write_lock(path):
                    group.start_soon(store.set_ref, "main", root.hash)  # waits for the lock
                    await anyio.wait_all_tasks_blocked()
                    for child in children:
                        group.start_soon(put, child)
                    await anyio.wait_all_tasks_blocked()
                    assert returned == []
        assert sorted(m.hash for m in returned) == sorted(m.hash for m in children)
        assert commits(path) - before <= 3  # the ref, then the puts in one or two
        assert await stored(store, children) == [True] * 20
        assert await store.verify() == []
    finally:
        await store.aclose()


async def test_one_put_failing_does_not_fail_the_puts_queued_with_it(
    tmp_path: pathlib.Path,
) -> None:
    """Queued together, a put whose parent is not stored and a forward whose content is not
    its original's each raise their own error; the puts queued with them are stored."""
    path = tmp_path / "chat.db"
    store = SQLiteStore(path)
    root = message("root")
    good = [message(f"good {index}", root) for index in range(5)]
    orphan = message("orphan", message("never stored"))
    forged = ForwardedMessage(original=root.hash, content="not the root's", sender="s")
    outcomes: dict[str, str] = {}

    async def put(one: Message, name: str) -> None:
        try:
            await store.put(one)
        except (MessageNotFoundError, ValueError) as exc:
            outcomes[name] = type(exc).__name__
        else:
            outcomes[name] = "stored"

    try:
        await store.put(root)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                with write_lock(path):
                    group.start_soon(store.set_ref, "main", root.hash)
                    await anyio.wait_all_tasks_blocked()
                    group.start_soon(put, good[0], "good 0")
                    group.start_soon(put, orphan, "orphan")
                    group.start_soon(put, good[1], "good 1")
                    group.start_soon(put, forged, "forged")
                    for index, one in enumerate(good[2:], 2):
                        group.start_soon(put, one, f"good {index}")
                    await anyio.wait_all_tasks_blocked()
        assert outcomes == {
            "orphan": "MessageNotFoundError",
            "forged": "ValueError",
            **{f"good {index}": "stored" for index in range(5)},
        }
        assert await stored(store, [*good, orphan, forged]) == [True] * 5 + [False, False]
        assert await store.verify() == []
    finally:
        await store.aclose()


@pytest.mark.parametrize("same_content", [True, False])
async def test_a_forward_queued_before_its_original_is_checked_against_it(
    tmp_path: pathlib.Path, same_content: bool
) -> None:
    """A forward queued just before its original: with another content than the original's,
    it is refused, as alone before its original (which is not stored yet), even when both
    go into one transaction; the original is stored. With the original's content, the
    forward is stored if both share a transaction (an order the callers allowed), or
    refused as alone before its original."""
    path = tmp_path / "chat.db"
    store = SQLiteStore(path)
    root = message("root")
    original = message("the original", root)
    forward = ForwardedMessage(
        original=original.hash,
        content=original.content if same_content else "another text",
        sender="proxy",
    )
    outcomes: list[str] = []

    async def put(one: Message) -> None:
        try:
            await store.put(one)
        except MessageNotFoundError as exc:
            outcomes.append(f"{type(one).__name__}: {exc}")
        else:
            outcomes.append(f"{type(one).__name__}: stored")

    try:
        await store.put(root)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                with write_lock(path):
                    group.start_soon(store.set_ref, "main", root.hash)
                    await anyio.wait_all_tasks_blocked()
                    group.start_soon(put, forward)
                    await anyio.wait_all_tasks_blocked()
                    group.start_soon(put, original)
                    await anyio.wait_all_tasks_blocked()
        refused = [
            f"ForwardedMessage: original {original.hash} is not in the store",
            "Message: stored",
        ]
        if same_content and sorted(outcomes) != refused:
            assert sorted(outcomes) == ["ForwardedMessage: stored", "Message: stored"]
        else:
            assert sorted(outcomes) == refused
        assert (await stored(store, [forward, original]))[1]
        assert await store.verify() == []
    finally:
        await store.aclose()


WRITERS = """
import sys

import anyio

from agentforum import Message, SQLiteStore


async def main() -> None:
    store = SQLiteStore(sys.argv[1])

    async def write(writer: int) -> None:
        parent = None
        for index in range(1_000_000):
            one = Message(content=f"{writer}.{index}", sender=f"writer {writer}", parent=parent)
            await store.put(one)
            print(one.hash, flush=True)
            parent = one.hash

    async with anyio.create_task_group() as group:
        for writer in range(8):
            group.start_soon(write, writer)


anyio.run(main, backend=sys.argv[2])
"""


@pytest.mark.skipif(os.name != "posix", reason=f"SIGKILL needs POSIX, not {os.name!r}")
@pytest.mark.parametrize("seed", [1, 2])
async def test_each_of_concurrent_puts_survives_sigkill_once_returned(
    tmp_path: pathlib.Path, seed: int, anyio_backend_name: str
) -> None:
    """Eight tasks put their chains into one store at once (their puts share commits); after
    SIGKILL at a random moment the database verifies and holds every hash printed after a
    put returned."""
    script = tmp_path / "writers.py"
    script.write_text(textwrap.dedent(WRITERS))
    path = tmp_path / "chat.db"
    kill_after = __import__("random").Random(seed).randint(20, 400)
    printed: list[str] = []
    with anyio.fail_after(30):
        process = await anyio.open_process([sys.executable, script, path, anyio_backend_name])
        async with process:
            assert process.stdout is not None
            lines = BufferedByteReceiveStream(process.stdout)
            while len(printed) < kill_after:
                printed.append((await lines.receive_until(b"\n", 100)).decode())
            process.kill()
            assert await process.wait() == -signal.SIGKILL
            with contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead):
                while True:
                    printed.append((await lines.receive_until(b"\n", 100)).decode())
            assert process.stderr is not None
            assert b"".join([chunk async for chunk in process.stderr]) == b""

    store = SQLiteStore(path, create=False)
    try:
        assert await store.verify() == []
        for key in printed:
            assert (await store.get(key)).hash == key
    finally:
        await store.aclose()


# -- cancellation --------------------------------------------------------------------------------


async def test_a_put_cancelled_while_queued_is_withdrawn_at_once(tmp_path: pathlib.Path) -> None:
    """A put cancelled while it waits in the queue raises the cancellation at once, without
    waiting for the operation ahead of it, and is never run."""
    path = tmp_path / "chat.db"
    store = SQLiteStore(path)
    root, withdrawn = message("root"), message("withdrawn")
    ended = anyio.Event()

    async def put_cancelled(scope: anyio.CancelScope) -> None:
        with scope:
            await store.put(withdrawn)
            pytest.fail("the put returned")  # pragma: no cover
        assert scope.cancelled_caught
        ended.set()

    try:
        await store.put(root)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                with write_lock(path):
                    group.start_soon(store.set_ref, "main", root.hash)  # waits for the lock
                    await anyio.wait_all_tasks_blocked()
                    scope = anyio.CancelScope()
                    group.start_soon(put_cancelled, scope)
                    await anyio.wait_all_tasks_blocked()
                    scope.cancel()
                    await ended.wait()  # while the operation ahead still waits for the lock
        assert await store.get_ref("main") == root.hash
        assert await stored(store, [withdrawn]) == [False]
    finally:
        await store.aclose()


async def test_the_reader_cancelled_hands_over_to_the_tasks_still_waiting(
    tmp_path: pathlib.Path, anyio_backend: tuple[str, dict[str, object]]
) -> None:
    """Of the tasks of one event loop waiting for their operations, the first waits on the
    thread's socket and wakes the others: cancelled, it hands that over, and the others
    still learn that their operations are done. The operation they wait behind comes from
    another event loop, in another thread, told through a socket of its own."""
    path = tmp_path / "chat.db"
    store = SQLiteStore(path)
    root = message("root")
    first, *others = [message(f"child {index}", root) for index in range(4)]
    ended = anyio.Event()

    async def put_cancelled(scope: anyio.CancelScope) -> None:
        with scope:
            await store.put(first)
        assert scope.cancelled_caught
        ended.set()

    try:
        await store.put(root)
        async with other_event_loop(*anyio_backend) as portal:
            async with anyio.create_task_group() as group:
                with write_lock(path):
                    # From the other loop's thread, an operation that waits for the lock.
                    ahead = await anyio.to_thread.run_sync(
                        portal.start_task_soon, store.set_ref, "main", root.hash
                    )
                    await anyio.to_thread.run_sync(portal.call, anyio.wait_all_tasks_blocked)
                    reader = anyio.CancelScope()
                    group.start_soon(put_cancelled, reader)  # the first to wait here
                    await anyio.wait_all_tasks_blocked()
                    for one in others:
                        group.start_soon(store.put, one)
                    await anyio.wait_all_tasks_blocked()
                    reader.cancel()
                    await ended.wait()
            await anyio.to_thread.run_sync(ahead.result)
        assert await store.get_ref("main") == root.hash
        assert await stored(store, [first, *others]) == [False, True, True, True]
    finally:
        await store.aclose()


class Gate:
    """A database whose operations wait, once the thread has taken them, until the test
    opens the gate: it shows what a call does while its operation runs."""

    def __init__(self) -> None:
        self.is_open = True
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.ran = 0

    def run(self, operation: object, write: bool) -> str:
        self.entered.set()
        self.opened.wait()
        self.ran += 1
        return "result"

    def run_together(self, puts: object) -> None:  # pragma: no cover (no puts here)
        raise AssertionError(puts)

    def close(self) -> None:
        self.is_open = False


async def test_a_call_cancelled_while_running_waits_for_it_then_raises() -> None:
    """Cancelled once the thread has taken its operation, a call waits until the operation
    is done, then raises the cancellation: the operation is done completely."""
    gate = Gate()
    worker = Worker(gate, "gate")
    ended = anyio.Event()
    after: list[object] = []

    async def call(scope: anyio.CancelScope) -> None:
        with scope:
            after.append(await worker.run(lambda connection: None))
        assert scope.cancelled_caught
        ended.set()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            scope = anyio.CancelScope()
            group.start_soon(call, scope)
            await anyio.wait_all_tasks_blocked()
            gate.entered.wait()  # the thread has taken the operation
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert not ended.is_set()  # the call waits for its operation
            gate.opened.set()
            await ended.wait()
        await worker.close()
    assert gate.ran == 1
    assert after == []  # it raised the cancellation, after the operation was done
    assert worker.thread is None


# -- the thread's life ---------------------------------------------------------------------------


async def test_aclose_joins_the_thread_and_the_next_use_starts_another(
    tmp_path: pathlib.Path,
) -> None:
    """The store's thread starts with its first operation and is gone when aclose returns;
    the next operation opens the file again in a new thread."""
    store = SQLiteStore(tmp_path / "chat.db")
    assert threads_of(store) == []
    await store.put(message("a"))
    (first,) = threads_of(store)
    await store.aclose()
    assert not first.is_alive()
    assert threads_of(store) == []
    assert (await store.get(message("a").hash)).content == "a"
    (second,) = threads_of(store)
    assert second is not first
    await store.aclose()
    assert threads_of(store) == []


async def test_aclose_in_a_cancelled_scope_still_closes(tmp_path: pathlib.Path) -> None:
    """aclose is a checkpoint, but a store being closed is closed: in a cancelled scope it
    closes the file (its write-ahead log is gone) and ends the thread, then raises."""
    path = tmp_path / "chat.db"
    store = SQLiteStore(path)
    await store.put(message("a"))
    assert (tmp_path / "chat.db-wal").exists()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await store.aclose()
    assert scope.cancelled_caught
    assert not (tmp_path / "chat.db-wal").exists()
    assert threads_of(store) == []


async def test_no_thread_is_left_after_a_forum_exits(tmp_path: pathlib.Path) -> None:
    """A forum on a path closes its store on exit: no thread of the store is left, and none
    when the file could not be opened either."""
    before = set(threading.enumerate())
    forum = Forum(tmp_path / "chat.db")

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")

    async with forum:
        assert (await echo.ask("hello").last()).content == "re: hello"
        assert isinstance(forum.store, SQLiteStore)
        assert len(threads_of(forum.store)) == 1
    (tmp_path / "not a database").write_bytes(b"x" * 100)
    with pytest.raises(StoreError):
        async with Forum(tmp_path / "not a database"):
            pass  # pragma: no cover
    left = set(threading.enumerate()) - before
    assert [thread.name for thread in left if thread.name.startswith("agentforum")] == []


async def test_a_store_dropped_unclosed_warns_and_its_thread_ends(tmp_path: pathlib.Path) -> None:
    """A store garbage collected while open warns (ResourceWarning, as an unclosed file does),
    and its thread closes the connection and ends."""
    store = SQLiteStore(tmp_path / "chat.db")
    await store.put(message("a"))
    (thread,) = threads_of(store)
    with pytest.warns(ResourceWarning, match=r"chat\.db.* was never closed"):
        del store  # the last reference: collected at once
    thread.join()
    assert not (tmp_path / "chat.db-wal").exists()
