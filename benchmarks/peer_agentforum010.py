"""Issue 8's workloads for the original ``agentforum==0.0.10``, in its own virtual environment.

Run by ``benchmarks/bench.py`` with that environment's Python (the original shares our import
name, so it can never be imported next to this agentforum): ``python
benchmarks/peer_agentforum010.py --case W1 --backend asyncio --params '{"n": 1000, "depth": 1}'``.

Its API, read from its installed source: ``Forum()``; ``@forum.agent`` on ``async def f(ctx)``;
``agent.ask(content)`` returns an ``AsyncMessageSequence`` of ``MessagePromise`` objects;
``ctx.respond(...)``, ``ctx.request_messages``; a ``StreamedMessage`` is fed through its
``_Producer`` with ``ContentChunk`` tokens (what its own OpenAI agent does); messages are pydantic
models hashed by ``hash_key`` and chained by ``prev_msg_hash_key``. It runs on asyncio only
(``asyncio.create_task`` throughout): on Trio every case is reported as not applicable.
"""

from __future__ import annotations

import asyncio
from typing import Any

from _common import Clock, child_main, held_memory, not_applicable

from agentforum.forum import Forum
from agentforum.models import ContentChunk, Message
from agentforum.promises import MessagePromise, StreamedMessage
from agentforum.storage.trees_impl import InMemoryTrees

BATCH = 64


def asyncio_only(backend: str) -> None:
    if backend != "asyncio":
        not_applicable("agentforum 0.0.10 runs on asyncio only")


def tokens_of(n: int) -> list[str]:
    return [f"t{index % 100} " for index in range(n)]


def streaming_forum(tokens: list[str], depth: int) -> Any:
    forum = Forum()

    @forum.agent
    async def leaf(ctx: Any) -> None:
        message = StreamedMessage()
        ctx.respond(message)
        with StreamedMessage._Producer(message) as producer:
            for index, token in enumerate(tokens):
                producer.send(ContentChunk(text=token))
                if index % BATCH == BATCH - 1:
                    await asyncio.sleep(0)

    agent = leaf
    for level in range(depth):

        async def proxy(ctx: Any, inner: Any = agent) -> None:
            ctx.respond(inner.ask(ctx.request_messages))

        agent = forum.agent(proxy, alias=f"PROXY{level}")
    return agent


def w1(backend: str, params: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
    asyncio_only(backend)
    n, depth = params["n"], params["depth"]
    tokens = tokens_of(n)

    async def run() -> int:
        agent = streaming_forum(tokens, depth)
        received = 0
        async for promise in agent.ask("go"):
            async for _chunk in promise:
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
        agent = streaming_forum(tokens, 0)
        counts = [0] * consumers
        async for promise in agent.ask("go"):

            async def reader(slot: int, promise: Any = promise) -> None:
                async for _chunk in promise:
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
    forum = Forum()

    @forum.agent
    async def echo(ctx: Any) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request.amaterialize()).content}")

    async def run() -> int:
        if concurrent:
            sequences = [echo.ask(f"q{index}") for index in range(calls)]
            for index, sequence in enumerate(sequences):
                message = await sequence.amaterialize_concluding_message()
                assert message.content == f"re: q{index}", message
        else:
            for index in range(calls):
                message = await echo.ask(f"q{index}").amaterialize_concluding_message()
                assert message.content == f"re: q{index}", message
        return calls

    with Clock() as clock:
        done = asyncio.run(run())
    return clock.seconds, done, {}


def chain(trees: InMemoryTrees, contents: list[str]) -> list[Message]:
    """A branch built with its public models: each message names its parent's hash_key."""
    branch = []
    parent = None
    for content in contents:
        message = Message(
            forum_trees=trees,
            final_sender_alias="USER",
            content=content,
            prev_msg_hash_key=parent,
            is_detached=False,
        )
        parent = message.hash_key
        branch.append(message)
    return branch


def w4(backend: str, params: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
    asyncio_only(backend)
    contents = [f"message {index}" for index in range(params["n"])]

    async def run() -> int:
        return len(chain(InMemoryTrees(), contents))

    with Clock() as clock:
        count = asyncio.run(run())
    return clock.seconds, count, {}


def w5(backend: str, params: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
    """The full history of a promise of the last message: it walks the branch through the
    store by ``prev_msg_hash_key``."""
    asyncio_only(backend)
    n, inner = params["n"], params.get("inner", 5)
    contents = [f"message {index}" for index in range(n)]

    async def run() -> float:
        trees = InMemoryTrees()
        branch = chain(trees, contents)
        for message in branch:
            await trees.astore_immutable(message)
        last = MessagePromise(forum_trees=trees, materialized_msg=branch[-1])
        with Clock() as clock:
            for _ in range(inner):
                history = await last.amaterialize_full_history()
        assert [message.hash_key for message in history] == [m.hash_key for m in branch]
        return clock.seconds / inner

    seconds = asyncio.run(run())
    return seconds, n, {}


def mem(backend: str, params: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
    asyncio_only(backend)
    n, size = params["n"], params.get("size", 100)
    contents = [f"{index:08d}".ljust(size, "x") for index in range(n)]
    holder: list[InMemoryTrees] = []

    async def run() -> int:
        trees = InMemoryTrees()
        for message in chain(trees, contents):
            await trees.astore_immutable(message)
        holder.append(trees)
        return n

    return held_memory(lambda: asyncio.run(run()), holder, n)


if __name__ == "__main__":
    child_main({"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "MEM": mem})
