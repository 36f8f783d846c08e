"""A worker process of the tests of single flight across processes (``test_claims.py``).

Usage: ``python flight_worker.py DB BACKEND RUNS LEASE HEARTBEAT``. It opens a forum on
``DB`` (an SQLite path or a PostgreSQL URL) and talks over its standard streams, a line
at a time:

- it prints ``ready`` once the forum runs, and reads ``go``; then it asks ``question``;
- its agent appends a line to the file ``RUNS`` when it runs, prints ``started``, and reads
  what to do: ``answer`` (it answers) or ``fail`` (it raises);
- the first time its call waits for another process's claim, it prints ``waiting``;
- at the end it prints the outcome as JSON: ``{"answer": [hashes], "contents": [...]}``, or
  ``{"error": text}``, and exits.

No line is ever timed: the test orders the workers by these lines.
"""

from __future__ import annotations

import json
import sys

import anyio
import anyio.to_thread

from agentforum import (
    AgentError,
    ClaimingStore,
    Forum,
    InteractionContext,
    PostgresStore,
    SQLiteStore,
)


def say(line: str) -> None:
    print(line, flush=True)


async def hear() -> str:
    return (await anyio.to_thread.run_sync(sys.stdin.readline)).strip()


class SaysWhenWaiting(ClaimingStore):
    """A store that prints ``waiting`` the first time a call waits for another's claim."""

    said = False

    async def wait_released(self, call_hash: str, *, poll: float) -> None:
        if not self.said:
            self.said = True
            say("waiting")
        # The store's own method: the class this one is mixed into comes next.
        await super().wait_released(call_hash, poll=poll)  # type: ignore[safe-super]


class SQLiteWorkerStore(SaysWhenWaiting, SQLiteStore):
    """An SQLite store that says when it waits."""


class PostgresWorkerStore(SaysWhenWaiting, PostgresStore):
    """A PostgreSQL store that says when it waits."""


async def main() -> None:
    db, runs, lease, heartbeat = sys.argv[1], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
    store: SQLiteStore | PostgresStore
    if db.startswith("postgresql://"):
        store = PostgresWorkerStore(db)
    else:
        store = SQLiteWorkerStore(db)
    forum = Forum(store, lease=lease, heartbeat=heartbeat)

    @forum.agent
    async def expert(ctx: InteractionContext) -> None:
        async with await anyio.open_file(runs, "a") as counted:
            await counted.write("run\n")
        say("started")
        if await hear() == "fail":
            raise RuntimeError("the model is down")
        async for request in ctx.request_messages:
            ctx.respond(f"the answer to {(await request).content}")

    try:
        async with forum:
            say("ready")
            assert await hear() == "go"
            try:
                answer = await expert.ask("question").messages()
            except AgentError as error:
                say(json.dumps({"error": error.message.content}))
            else:
                hashes = [message.hash for message in answer]
                say(json.dumps({"answer": hashes, "contents": [m.content for m in answer]}))
    finally:
        await store.aclose()


anyio.run(main, backend=sys.argv[2])
