"""Issue 8's workloads for ``miniagents`` (the successor of agentforum 0.0.x), in its own
virtual environment.

Run by ``benchmarks/bench.py`` with that environment's Python: ``python
benchmarks/peer_miniagents.py --case W1 --backend asyncio --params '{"n": 1000, "depth": 1}'``.

Its API, read from its installed source and README: ``async with MiniAgents():`` around the
program; ``@miniagent`` on ``async def f(ctx)``; ``agent.trigger(messages)`` returns a
``MessageSequencePromise`` of ``MessagePromise`` objects (awaiting it gives the tuple of reply
messages); ``ctx.reply(...)``, ``ctx.message_promises``; a streamed message is
``TextMessage.promise(message_token_streamer=...)`` with an async generator of tokens. It runs on
asyncio only; its messages are not chained into a tree (no parent hash), so W4 and W5 do not
apply; it has no store, so W6 does not either.
"""

from __future__ import annotations

import asyncio
from typing import Any

from _common import Clock, child_main, held_memory, not_applicable
from miniagents import MiniAgents, TextMessage, miniagent

#: The leaf checkpoints every BATCH tokens, as the floor's producer does.
BATCH = 64


def asyncio_only(backend: str) -> None:
    if backend != "asyncio":
        not_applicable("miniagents runs on asyncio only")


def tokens_of(n: int) -> list[str]:
    return [f"t{index % 100} " for index in range(n)]


def streaming_agent(tokens: list[str], depth: int) -> Any:
    async def stream(_auxiliary: dict[str, Any]) -> Any:
        for index, token in enumerate(tokens):
            yield token
            if index % BATCH == BATCH - 1:
                await asyncio.sleep(0)

    @miniagent
    async def leaf(ctx: Any) -> None:
        ctx.reply(TextMessage.promise(message_token_streamer=stream))

    agent = leaf
    for level in range(depth):

        async def proxy(ctx: Any, inner: Any = agent) -> None:
            ctx.reply(inner.trigger(ctx.message_promises))

        agent = miniagent(proxy, alias=f"PROXY{level}")
    return agent


def w1(backend: str, params: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
    asyncio_only(backend)
    n, depth = params["n"], params["depth"]
    tokens = tokens_of(n)

    async def run() -> int:
        received = 0
        async with MiniAgents():
            agent = streaming_agent(tokens, depth)
            async for promise in agent.trigger("go"):
                async for _token in promise:
                    received += 1
        return received

    with Clock() as clock:
        received = asyncio.run(run())
    assert received == n, (received, n)
    return clock.seconds, n, {}


def w2(backend: str, params: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
    asyncio_only(backend)
    n, consumers = params["n"], params["consumers"]
    tokens = tokens_of(n)

    async def run() -> int:
        counts = [0] * consumers
        async with MiniAgents():
            agent = streaming_agent(tokens, 0)
            async for promise in agent.trigger("go"):

                async def reader(slot: int, promise: Any = promise) -> None:
                    async for _token in promise:
                        counts[slot] += 1

                await asyncio.gather(*(reader(slot) for slot in range(consumers)))
        assert counts == [n] * consumers, counts
        return sum(counts)

    with Clock() as clock:
        delivered = asyncio.run(run())
    return clock.seconds, delivered, {}


def w3(backend: str, params: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
    asyncio_only(backend)
    calls, concurrent = params["calls"], params["concurrent"]

    @miniagent
    async def echo(ctx: Any) -> None:
        async for request in ctx.message_promises:
            ctx.reply(f"re: {await request}")

    async def run() -> int:
        async with MiniAgents():
            if concurrent:
                sequences = [echo.trigger(f"q{index}") for index in range(calls)]
                for index, sequence in enumerate(sequences):
                    (message,) = await sequence
                    assert str(message) == f"re: q{index}", message
            else:
                for index in range(calls):
                    (message,) = await echo.trigger(f"q{index}")
                    assert str(message) == f"re: q{index}", message
        return calls

    with Clock() as clock:
        done = asyncio.run(run())
    return clock.seconds, done, {}


def mem(backend: str, params: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
    """``n`` hashed ``TextMessage`` objects of ``size`` characters held in a list (it has no
    store and no branch; the nearest thing to holding a conversation)."""
    asyncio_only(backend)
    n, size = params["n"], params.get("size", 100)
    contents = [f"{index:08d}".ljust(size, "x") for index in range(n)]
    holder: list[list[Any]] = []

    async def run() -> int:
        async with MiniAgents():
            messages = [TextMessage(content) for content in contents]
            for message in messages:
                assert message.hash_key
        holder.append(messages)
        return n

    return held_memory(lambda: asyncio.run(run()), holder, n)


if __name__ == "__main__":
    no_tree = "miniagents messages are not chained into a branch (no parent hash)"
    child_main({"W1": w1, "W2": w2, "W3": w3, "MEM": mem}, {"W4": no_tree, "W5": no_tree})
