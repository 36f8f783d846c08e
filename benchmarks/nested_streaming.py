"""Stream N tokens through D nested agents; compare with D chained plain AnyIO memory streams.

Run: ``python benchmarks/nested_streaming.py [--tokens N] [--depth D] [--repeat R]``.
Prints the median wall time of each, on asyncio and on trio, and the ratio to the floor.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import TYPE_CHECKING

import anyio
from anyio.lowlevel import checkpoint

from agentforum import Agent, Forum, InteractionContext, StreamedMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from anyio.streams.memory import MemoryObjectReceiveStream

BATCH = 64


async def floor(tokens: list[str], depth: int) -> int:
    """The same tokens through ``depth`` chained memory object streams, as fast as they go.

    Every stage moves what is ready with ``send_nowait``/``receive_nowait`` and waits only
    when nothing is; the producer checkpoints every 64 tokens. ``depth=1`` is the single
    stream floor of the benchmark plan (issue 8's W1).
    """
    streams = [anyio.create_memory_object_stream[str](math.inf) for _ in range(depth)]

    async def produce() -> None:
        async with streams[0][0] as send:
            for index, token in enumerate(tokens):
                send.send_nowait(token)
                if index % BATCH == BATCH - 1:
                    await checkpoint()

    async def drain(receive: MemoryObjectReceiveStream[str]) -> list[str]:
        batch = [await receive.receive()]
        try:
            while True:
                batch.append(receive.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            # At the end, the next call's receive() raises EndOfStream.
            return batch

    async def relay(level: int) -> None:
        async with streams[level][1] as receive, streams[level + 1][0] as send:
            try:
                while True:
                    for token in await drain(receive):
                        send.send_nowait(token)
            except anyio.EndOfStream:
                return

    received = 0
    async with anyio.create_task_group() as group:
        group.start_soon(produce)
        for level in range(depth - 1):
            group.start_soon(relay, level)
        async with streams[-1][1] as receive:
            try:
                while True:
                    received += len(await drain(receive))
            except anyio.EndOfStream:
                pass
    return received


async def agentforum_run(tokens: list[str], depth: int) -> int:
    """The same tokens streamed by a leaf agent and passed up through ``depth - 1`` proxies."""
    forum = Forum()

    async def generate() -> AsyncIterator[str]:
        for token in tokens:
            yield token

    @forum.agent
    async def leaf(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(generate()))

    agent: Agent = leaf
    for level in range(depth - 1):

        async def proxy(ctx: InteractionContext, inner: Agent = agent) -> None:
            ctx.respond(inner.ask(ctx.request_messages))

        agent = forum.agent(proxy, alias=f"proxy{level}")

    received = 0
    async with forum:
        async for promise in agent.ask("go"):
            async for _token in promise:
                received += 1
    return received


def measure(
    function: Callable[[list[str], int], Awaitable[int]],
    tokens: list[str],
    depth: int,
    backend: str,
    repeat: int,
) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        count = anyio.run(function, tokens, depth, backend=backend)
        times.append(time.perf_counter() - start)
        assert count == len(tokens), (count, len(tokens))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tokens = [f"t{index % 100} " for index in range(args.tokens)]
    print(f"{args.tokens} tokens, depth {args.depth}, median of {args.repeat}")
    print(
        f"{'backend':8} {'1 stream (s)':>12} {f'{args.depth} streams (s)':>14} "
        f"{'agentforum (s)':>15} {'ratio':>6} {'tokens/s':>11}"
    )
    for backend in ("asyncio", "trio"):
        single = measure(floor, tokens, 1, backend, args.repeat)
        chained = measure(floor, tokens, args.depth, backend, args.repeat)
        ours = measure(agentforum_run, tokens, args.depth, backend, args.repeat)
        print(
            f"{backend:8} {single:12.3f} {chained:14.3f} {ours:15.3f} "
            f"{ours / chained:6.2f} {args.tokens / ours:11,.0f}"
        )
    print(f"ratio = agentforum / {args.depth} chained streams (lower is better)")


if __name__ == "__main__":
    main()
