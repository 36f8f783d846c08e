"""One worker process of W6PGW: a forum on a shared PostgreSQL database, answering calls.

Run by the W6PGW case of ``workloads.py``, never by hand: ``python _pg_worker.py URL TAG
CALLS BACKEND``. It opens a forum on the database of URL (the store's connection made and
its schema checked), prints ``ready``, and waits for a line on its standard input. Then it
asks an echo agent CALLS times at once, each ask a conversation of its own (the request, the
call and the response, each committed before its promise resolves), awaits every answer,
leaves the forum (its last cache entries written) and prints the seconds since the line came.
"""

from __future__ import annotations

import sys
import time

import anyio

from agentforum import Forum, InteractionContext


async def main(url: str, tag: str, calls: int) -> None:
    forum = Forum(url)

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")

    async with forum:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        start = time.perf_counter()
        sequences = [echo.ask(f"{tag} q{index}") for index in range(calls)]
        for index, sequence in enumerate(sequences):
            message = await sequence.last()
            assert message.content == f"re: {tag} q{index}", message
    print(time.perf_counter() - start, flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), backend=sys.argv[4])
