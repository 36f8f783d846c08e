"""Write and read speed of the stores, and the size of an SQLite database.

Run: ``python benchmarks/store.py [--asks N] [--branch N] [--repeat R]``.

Prints one table:

- messages/s written through ``Forum`` (an echo agent asked ``--asks`` times, each ask
  continuing the branch: 3 messages per ask) to ``SQLiteStore`` and ``MemoryStore``, on
  asyncio and on Trio;
- the floor: the same rows (same schema, same encodings) inserted with plain ``sqlite3``,
  ``executemany`` in one transaction, and one transaction per row (what the store does, since
  each message is committed before its promise resolves); and ``SQLiteStore.put_many`` of them;
- the database size per message for messages of 1,000 characters;
- the time of ``store.ancestors`` (the history ``log`` prints) on a ``--branch``-message branch.

Times are the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
from typing import TYPE_CHECKING

import anyio

from agentforum import (
    Forum,
    InteractionContext,
    MemoryStore,
    Message,
    SQLiteStore,
    decode_message,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from agentforum import MessageStore

BACKENDS = ("asyncio", "trio")


@contextlib.contextmanager
def connect(path: str) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


async def converse(store: MessageStore, asks: int) -> tuple[float, str]:
    """Ask an echo agent ``asks`` times on one branch; return the seconds and the last hash."""
    forum = Forum(store)

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")

    start = time.perf_counter()
    async with forum:
        last: Message | None = None
        for index in range(asks):
            last = await echo.ask(f"question {index}", branch_from=last).last()
    elapsed = time.perf_counter() - start
    assert last is not None
    return elapsed, last.hash


def forum_rate(kind: str, backend: str, asks: int, directory: str) -> tuple[float, int]:
    """Messages/s through Forum into a new store of ``kind``; and the messages written."""

    async def run() -> tuple[float, int]:
        store: MessageStore
        if kind == "sqlite":
            path = os.path.join(directory, f"forum-{backend}-{time.perf_counter_ns()}.db")
            store = SQLiteStore(path)
        else:
            store = MemoryStore()
        elapsed, last = await converse(store, asks)
        count = len(await store.ancestors(last))
        await store.aclose()
        return count / elapsed, count

    return anyio.run(run, backend=backend)


def written_rows(asks: int, directory: str) -> tuple[str, list[tuple[object, ...]]]:
    """The schema, and the rows (root first) of a database written by ``asks`` asks."""
    path = os.path.join(directory, "rows.db")

    async def run() -> list[str]:
        store = SQLiteStore(path)
        _, last = await converse(store, asks)
        order = [message.hash for message in await store.ancestors(last)]
        await store.aclose()
        return order

    order = anyio.run(run)
    with connect(path) as connection:
        schema = ";\n".join(
            sql
            for (sql,) in connection.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")
        )
        rows = {row[0]: row for row in connection.execute("SELECT * FROM messages")}
    assert len(rows) == len(order)
    return schema, [rows[key] for key in order]


def floor_rate(schema: str, rows: list[tuple[object, ...]], directory: str, batch: bool) -> float:
    """Rows/s inserted with plain sqlite3 into a new database of the same schema and pragmas."""
    path = os.path.join(directory, f"floor-{time.perf_counter_ns()}.db")
    insert = f"INSERT OR IGNORE INTO messages VALUES ({', '.join('?' * len(rows[0]))})"
    with connect(path) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.executescript(schema)
        start = time.perf_counter()
        if batch:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(insert, rows)
            connection.execute("COMMIT")
        else:
            for row in rows:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute(insert, row)
                connection.execute("COMMIT")
        elapsed = time.perf_counter() - start
    return len(rows) / elapsed


def put_many_rate(rows: list[tuple[object, ...]], backend: str, directory: str) -> float:
    """Messages/s of one SQLiteStore.put_many call with the decoded rows."""
    messages = [decode_message(row[-1]) for row in rows]  # type: ignore[arg-type]

    async def run() -> float:
        store = SQLiteStore(os.path.join(directory, f"many-{time.perf_counter_ns()}.db"))
        await store.refs()  # open (and create) it before the clock starts
        start = time.perf_counter()
        await store.put_many(messages)
        elapsed = time.perf_counter() - start
        await store.aclose()
        return len(messages) / elapsed

    return anyio.run(run, backend=backend)


def chain(count: int, content: Callable[[int], str]) -> list[Message]:
    branch: list[Message] = []
    parent = None
    for index in range(count):
        message = Message(content=content(index), sender="user", parent=parent)
        branch.append(message)
        parent = message.hash
    return branch


def size_per_message(count: int, directory: str) -> tuple[float, float]:
    """Bytes per message of a database of ``count`` 1,000-character messages; and encoding."""
    path = os.path.join(directory, "size.db")
    branch = chain(count, lambda index: f"{index:08d}" + "x" * 992)

    async def run() -> None:
        store = SQLiteStore(path)
        for message in branch:  # one commit per message, as a conversation writes them
            await store.put(message)
        await store.aclose()  # the last connection checkpoints the WAL into the file

    anyio.run(run)
    assert not os.path.exists(path + "-wal")
    encoded = statistics.fmean(len(row[0]) for row in rows_of(path))
    return os.path.getsize(path) / count, encoded


def rows_of(path: str) -> list[tuple[bytes]]:
    with connect(path) as connection:
        return connection.execute("SELECT encoding FROM messages").fetchall()


def ancestors_time(kind: str, backend: str, count: int, repeat: int, directory: str) -> float:
    """Median seconds of store.ancestors on the last message of a ``count``-message branch."""
    branch = chain(count, lambda index: f"message {index}")

    async def run() -> float:
        store: MessageStore
        if kind == "sqlite":
            path = os.path.join(directory, f"branch-{count}.db")
            store = SQLiteStore(path)
        else:
            store = MemoryStore()
        await store.put_many(branch)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            found = await store.ancestors(branch[-1].hash)
            times.append(time.perf_counter() - start)
            assert len(found) == count
        await store.aclose()
        return statistics.median(times)

    return anyio.run(run, backend=backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asks", type=int, default=1000, help="asks per conversation")
    parser.add_argument("--branch", type=int, default=10_000, help="messages in the branch")
    parser.add_argument("--size-messages", type=int, default=2000, help="1 KB messages")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args()
    rows_out: list[tuple[str, str, str]] = []

    def median(function: Callable[..., float]) -> float:
        return statistics.median(function() for _ in range(args.repeat))

    with tempfile.TemporaryDirectory() as directory:
        schema, rows = written_rows(args.asks, directory)
        count = len(rows)
        title = f"write {count} messages ({args.asks} asks)"
        for backend in BACKENDS:
            for kind in ("memory", "sqlite"):
                rate = median(lambda k=kind, b=backend: forum_rate(k, b, args.asks, directory)[0])
                rows_out.append((title, f"Forum -> {kind} store, {backend}", f"{rate:,.0f} msg/s"))
        for backend in BACKENDS:
            rate = median(lambda b=backend: put_many_rate(rows, b, directory))
            rows_out.append(
                (title, f"SQLiteStore.put_many (1 call), {backend}", f"{rate:,.0f} msg/s")
            )
        rate = median(lambda: floor_rate(schema, rows, directory, batch=False))
        rows_out.append((title, "sqlite3, 1 transaction per row", f"{rate:,.0f} msg/s"))
        rate = median(lambda: floor_rate(schema, rows, directory, batch=True))
        rows_out.append((title, "sqlite3 executemany, 1 transaction (floor)", f"{rate:,.0f} msg/s"))

        per_message, encoded = size_per_message(args.size_messages, directory)
        rows_out.append(
            (
                f"size, {args.size_messages} msgs of 1,000 chars",
                f"database file / message (encoding: {encoded:,.0f} B)",
                f"{per_message:,.0f} B",
            )
        )
        for backend in BACKENDS:
            for kind in ("memory", "sqlite"):
                seconds = ancestors_time(kind, backend, args.branch, args.repeat * 3, directory)
                rows_out.append(
                    (
                        f"ancestors of a {args.branch}-msg branch",
                        f"{kind} store, {backend}",
                        f"{seconds * 1000:,.1f} ms",
                    )
                )

    widths = [max(len(row[column]) for row in rows_out) for column in range(3)]
    for row in rows_out:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}")


if __name__ == "__main__":
    main()
