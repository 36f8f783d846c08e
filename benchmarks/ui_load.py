"""The first load of the web view's page (``agentforum ui``) on a 100,000-message database.

Run: ``python benchmarks/ui_load.py [--messages N] [--conversations C] [--repeat R]
[--db PATH]``.

Writes an SQLite database of ``--messages`` messages (``--conversations`` conversations,
each a user's question followed by alternating answers and follow-ups, a ref at the end of
each, and a second branch off the middle of every tenth), unless ``--db`` names one already
written, then serves it with :func:`agentforum.ui.serve` on loopback (Hypercorn, asyncio)
and times, with httpx over real HTTP, what the page requests when it loads: the page, its
script and style sheet, the refs and the roots of the tree (the tree loads the rest when
a branch is expanded). Prints the median and the worst of ``--repeat`` loads, each with a
fresh connection, and the slowest request of the median load. The issue's goal: under a
second.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import aclosing
from pathlib import Path

import anyio
import httpx

from agentforum import Message, SQLiteStore
from agentforum.ui import serve

#: What the page fetches on load (``index.html`` and ``app.js``), in order: the page, then
#: its assets, then the JSON of the refs and the roots (fetched at once).
PAGE = ("/", "/static/app.js", "/static/app.css")
DATA = ("/api/refs", "/api/children")


async def write(path: Path, messages: int, conversations: int) -> None:
    """Write the database: ``conversations`` branches sharing ``messages`` messages."""
    per = messages // conversations
    async with aclosing(SQLiteStore(path)) as store:
        written = 0
        for number in range(conversations):
            batch: list[Message] = []
            parent = None
            middle = None
            for turn in range(per):
                sender = "user" if turn % 2 == 0 else "assistant"
                message = Message(
                    content=f"Conversation {number}, turn {turn}: " + "lorem ipsum " * 8,
                    sender=sender,
                    parent=parent,
                    metadata={"turn": turn},
                )
                batch.append(message)
                parent = message.hash
                if turn == per // 2:
                    middle = message.hash
            if number % 10 == 0 and middle is not None:
                batch.append(Message(content="Another answer", sender="assistant", parent=middle))
            await store.put_many(batch)
            written += len(batch)
            assert parent is not None
            await store.set_ref(f"conversation/{number}", parent)
        print(f"wrote {written:,} messages in {conversations} conversations to {path}")


async def load(url: str) -> tuple[float, dict[str, float]]:
    """Seconds of one first load of the page, and of each of its requests."""
    times: dict[str, float] = {}

    async def get(client: httpx.AsyncClient, path: str) -> None:
        start = time.perf_counter()
        response = await client.get(url + path.lstrip("/"))
        response.raise_for_status()
        response.read()
        times[path] = time.perf_counter() - start

    start = time.perf_counter()
    async with httpx.AsyncClient() as client:
        await get(client, PAGE[0])
        async with anyio.create_task_group() as group:
            for path in (*PAGE[1:], *DATA):
                group.start_soon(get, client, path)
    return time.perf_counter() - start, times


async def main(arguments: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(arguments.db) if arguments.db else Path(directory) / "ui.db"
        if not path.exists():
            started = time.perf_counter()
            await write(path, arguments.messages, arguments.conversations)
            print(f"(written in {time.perf_counter() - started:.1f} s)")
        async with aclosing(SQLiteStore(path, create=False)) as store, serve(store) as server:
            loads = [await load(server.url) for _ in range(arguments.repeat)]
    totals = sorted(total for total, _ in loads)
    median = statistics.median(totals)
    middle = min(loads, key=lambda item: abs(item[0] - median))[1]
    slowest = max(middle, key=middle.__getitem__)
    print(
        f"first load of the page: median {median * 1000:.1f} ms, worst {totals[-1] * 1000:.1f} ms"
        f" over {arguments.repeat} loads (slowest request {slowest}: "
        f"{middle[slowest] * 1000:.1f} ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--db", help="a database to reuse (written there when missing)")
    anyio.run(main, parser.parse_args())
