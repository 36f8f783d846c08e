"""What an agent function can read of its call: ``ctx.history()``; and late metadata."""

from __future__ import annotations

import anyio
import pytest

from agentforum import (
    AgentError,
    CallMessage,
    Forum,
    InteractionContext,
    Message,
    StreamedMessage,
)

pytestmark = pytest.mark.anyio


def contents(messages: list[Message]) -> list[str]:
    return [message.content for message in messages]


@pytest.mark.parametrize("cache", [True, False])
async def test_history_is_the_branch_up_to_the_last_request(cache: bool) -> None:
    """ctx.history() is the call's input: root first, to its last request; calls left out."""
    forum = Forum(cache=cache)
    seen: list[list[Message]] = []

    @forum.agent
    async def reader(ctx: InteractionContext) -> None:
        seen.append(await ctx.history())
        seen.append(await ctx.history(include_calls=True))
        ctx.respond("read")

    async with forum:
        first = await reader.ask(["Hello", "World"]).last()
        await reader.ask("Again", branch_from=first).last()
    assert contents(seen[0]) == ["Hello", "World"]
    assert contents(seen[2]) == ["Hello", "World", "read", "Again"]
    # With the calls: the first call's CallMessage sits between "World" and "read".
    assert [type(message) for message in seen[3]] == [
        Message,
        Message,
        CallMessage,
        Message,
        Message,
    ]


async def test_history_of_a_call_without_requests() -> None:
    """Without requests: the branch above the CallMessage ([] at a new root)."""
    forum = Forum()
    seen: list[list[str]] = []

    @forum.agent
    async def reader(ctx: InteractionContext) -> None:
        seen.append(contents(await ctx.history()))
        ctx.respond("read")

    async with forum:
        answer = await reader.ask().last()
        await reader.ask(branch_from=answer).last()
    assert seen == [[], ["read"]]


async def test_history_in_a_full_duplex_call_waits_for_the_requests() -> None:
    """With start_asking, history() waits until the requests are closed, then has them all."""
    forum = Forum()
    seen: list[list[str]] = []
    first_read = anyio.Event()

    @forum.agent
    async def reader(ctx: InteractionContext) -> None:
        async for promise in ctx.request_messages:
            await promise
            first_read.set()
            break
        seen.append(contents(await ctx.history()))
        ctx.respond("read")

    with anyio.fail_after(5):
        async with forum:
            call = reader.start_asking().send_request("one")
            await first_read.wait()
            await anyio.wait_all_tasks_blocked()
            assert seen == []  # still waiting: the requests are open
            call.send_request("two")
            await call.response_sequence().last()
    assert seen == [["one", "two"]]


async def test_an_agent_waiting_for_its_history_is_cancelled_when_a_request_fails() -> None:
    """A request that fails ends the call: its agent, waiting in history(), is cancelled.

    No code after history() runs, the ``finally`` does, and the consumer gets the error.
    """
    forum = Forum()
    ran: list[str] = []
    waiting = anyio.Event()
    go = anyio.Event()

    @forum.agent
    async def failing(ctx: InteractionContext) -> None:
        await go.wait()
        raise ValueError("no request for you")

    @forum.agent
    async def reader(ctx: InteractionContext) -> None:
        try:
            waiting.set()
            await ctx.history()
            ran.append("after history()")
        finally:
            ran.append("finally")

    with anyio.fail_after(5):
        async with forum:
            call = reader.start_asking().send_request(failing.ask("x"))
            responses = call.response_sequence()
            await waiting.wait()
            go.set()
            with pytest.raises(AgentError, match="no request for you"):
                await responses.messages()
    assert ran == ["finally"]


async def test_add_metadata_before_the_end_is_recorded() -> None:
    """Metadata known at the end of a stream (a finish reason, usage) is in the message."""
    forum = Forum()
    late: list[StreamedMessage] = []

    @forum.agent
    async def model(ctx: InteractionContext) -> None:
        streamed = StreamedMessage(model="m")
        late.append(streamed)
        ctx.respond(streamed)
        async with streamed:
            await streamed.send("Hi")
            streamed.add_metadata(finish_reason="stop", usage={"total_tokens": 3})
            streamed.add_metadata(finish_reason="length")

    async with forum:
        message = await model.ask("hello").last()
    assert dict(message.metadata) == {
        "model": "m",
        "finish_reason": "length",
        "usage": {"total_tokens": 3},
    }
    with pytest.raises(anyio.ClosedResourceError, match="complete"):
        late[0].add_metadata(more=1)


async def test_add_metadata_checks_its_values() -> None:
    streamed = StreamedMessage()
    with pytest.raises(TypeError, match="metadata"):
        streamed.add_metadata(bad=object())  # type: ignore[arg-type]
    assert dict(streamed.metadata) == {}
