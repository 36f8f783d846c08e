"""Cancelling calls: seq.cancel(), call.cancel(), and the forum's own cancellation."""

from __future__ import annotations

import anyio
import pytest

from agentforum import (
    AgentCancelled,
    ErrorMessage,
    Forum,
    InteractionContext,
    MessagePromise,
    MessageSequence,
    StreamedMessage,
)

pytestmark = pytest.mark.anyio


async def drain(sequence: MessageSequence) -> tuple[list[MessagePromise], AgentCancelled]:
    """Iterate a sequence that must end in AgentCancelled; return its promises and the error."""
    promises: list[MessagePromise] = []
    try:
        async for promise in sequence:
            promises.append(promise)  # noqa: PERF401 - keep those before the error
    except AgentCancelled as error:
        return promises, error
    raise AssertionError("the sequence ended without AgentCancelled")


async def test_cancel_mid_stream_records_the_cut_message_then_the_error() -> None:
    """seq.cancel() while a message streams: the cut message, then an AgentCancelled branch end.

    The agent's ``finally`` runs, completed responses stay, the consumer gets AgentCancelled,
    and the forum exits without raising (a cancellation is not an agent error).
    """
    forum = Forum()
    sent = anyio.Event()
    finished: list[str] = []

    @forum.agent
    async def talker(ctx: InteractionContext) -> None:
        try:
            ctx.respond("first, complete")
            streamed = StreamedMessage(model="scripted")
            ctx.respond(streamed)
            async with streamed:
                await streamed.send("Hel")
                await streamed.send("lo")
                sent.set()
                await anyio.sleep_forever()
        finally:
            finished.append("finally ran")

    with anyio.fail_after(5):
        async with forum:
            sequence = talker.ask("hi")
            seen = aiter(sequence)
            assert (await (await anext(seen))).content == "first, complete"
            tokens = aiter(await anext(seen))
            assert [await anext(tokens), await anext(tokens)] == ["Hel", "lo"]
            await sent.wait()
            sequence.cancel()  # as a user does: after seeing the tokens
            promises, error = await drain(sequence)
            first, cut = [await promise for promise in promises]
            assert [token async for token in promises[1]] == ["Hel", "lo"]
    assert finished == ["finally ran"]
    assert first.content == "first, complete"
    assert (cut.content, dict(cut.metadata)) == ("Hello", {"model": "scripted", "incomplete": True})
    end = error.message
    assert isinstance(end, ErrorMessage)
    assert (end.error_type, end.sender, end.parent) == (
        "agentforum.AgentCancelled",
        "talker",
        cut.hash,
    )
    branch = await forum.history(end)
    assert [message.content for message in branch][-3:] == [
        "first, complete",
        "Hello",
        "the call was cancelled",
    ]
    assert await forum.store.verify() == []


async def test_cancel_cancels_every_nested_call() -> None:
    """Cancelling an outer call cancels the call nested in it; both branches end cancelled."""
    forum = Forum()
    inner_started = anyio.Event()
    cleaned: list[str] = []

    @forum.agent
    async def inner(ctx: InteractionContext) -> None:
        try:
            inner_started.set()
            await anyio.sleep_forever()
        finally:
            cleaned.append("inner")

    inner_sequences: list[MessageSequence] = []

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        try:
            sequence = inner.ask("sub-question")
            inner_sequences.append(sequence)
            ctx.respond(sequence)
        finally:
            cleaned.append("outer")

    with anyio.fail_after(5):
        async with forum:
            sequence = outer.ask("question")
            await inner_started.wait()
            sequence.cancel()
            _, outer_error = await drain(sequence)
            _, inner_error = await drain(inner_sequences[0])
    assert sorted(cleaned) == ["inner", "outer"]
    for error, sender in ((outer_error, "outer"), (inner_error, "inner")):
        assert error.message.error_type == "agentforum.AgentCancelled"
        assert error.message.sender == sender


async def test_agent_call_cancel_and_cancel_before_the_call_runs() -> None:
    """AgentCall.cancel() works like seq.cancel(), even before the call has started."""
    forum = Forum()
    ran: list[str] = []

    @forum.agent
    async def agent(ctx: InteractionContext) -> None:
        ran.append("agent")
        await anyio.sleep_forever()

    with anyio.fail_after(5):
        async with forum:
            call = agent.start_asking()
            call.send_request("never placed")
            call.cancel()  # no checkpoint yet: the call's task has not run
            _, error = await drain(call.response_sequence())
    assert ran == []
    assert error.message.error_type == "agentforum.AgentCancelled"
    assert error.message.parent is None


async def test_cancelling_a_finished_call_changes_nothing() -> None:
    """seq.cancel() after the responses are complete leaves the branch as it is."""
    forum = Forum()

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        ctx.respond("done")

    with anyio.fail_after(5):
        async with forum:
            sequence = echo.ask("hi")
            messages = await sequence.messages()
            sequence.cancel()
            sequence.cancel()
            assert await sequence.messages() == messages
    assert [message.content for message in await forum.history(messages[-1])] == [
        "hi",
        "done",
    ]


async def test_cancelling_the_scope_around_the_forum_cancels_everything_promptly() -> None:
    """A cancelled scope around ``async with forum`` stops every call; branches end cancelled."""
    forum = Forum()
    started = anyio.Event()

    @forum.agent
    async def sleeper(ctx: InteractionContext) -> None:
        started.set()
        await anyio.sleep_forever()

    sequences: list[MessageSequence] = []
    with anyio.fail_after(5):
        with anyio.CancelScope() as scope:
            async with forum:
                sequences.append(sleeper.ask("zzz"))
                await started.wait()
                scope.cancel()
        assert scope.cancelled_caught
        _, error = await drain(sequences[0])
    assert error.message.error_type == "agentforum.AgentCancelled"
    assert await forum.store.verify() == []
    stored = await forum.store.get(error.message.hash)
    assert stored == error.message


async def test_an_outer_agent_awaiting_a_cancelled_inner_call_fails_with_agent_cancelled() -> None:
    """An agent that awaits a call someone cancelled gets AgentCancelled, like any AgentError."""
    forum = Forum(strict_errors=False)
    inner_started = anyio.Event()
    inner_sequences: list[MessageSequence] = []

    @forum.agent
    async def inner(ctx: InteractionContext) -> None:
        inner_started.set()
        await anyio.sleep_forever()

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        sequence = inner.ask("sub")
        inner_sequences.append(sequence)
        try:
            await sequence.messages()
        except AgentCancelled:
            ctx.respond("the inner call was cancelled")

    with anyio.fail_after(5):
        async with forum:
            sequence = outer.ask("question")
            await inner_started.wait()
            inner_sequences[0].cancel()
            assert [message.content for message in await sequence.messages()] == [
                "the inner call was cancelled"
            ]


@pytest.mark.parametrize("blocker", ["reply", "sequence"])
async def test_cancel_places_the_responses_queued_behind_the_cut_message(blocker: str) -> None:
    """Queued responses that need no waiting are placed after the cut message, in order.

    Placement stops at the first one that would have to wait (a reply to a message not
    complete yet, a sequence): it and everything after it are dropped. A streamed message
    never started is recorded empty and incomplete.
    """
    forum = Forum()
    ready = anyio.Event()

    @forum.agent
    async def forever(ctx: InteractionContext) -> None:
        streamed = StreamedMessage()
        ctx.respond(streamed)
        async with streamed:
            await streamed.send("never ends")
            await anyio.sleep_forever()

    @forum.agent
    async def talker(ctx: InteractionContext) -> None:
        streamed = StreamedMessage()
        ctx.respond(streamed)
        ctx.respond("queued")
        ctx.respond(StreamedMessage(lang="en"))
        ctx.respond("after the queued stream")
        if blocker == "reply":
            ctx.respond("a reply that waits", reply_to=pending)
        else:
            ctx.respond(forever.ask("y"))
        ctx.respond("never placed")
        async with streamed:
            await streamed.send("tok")
            ready.set()
            await anyio.sleep_forever()

    with anyio.fail_after(5):
        async with forum:
            outside = forever.ask("x")  # not nested in talker: not cancelled with it
            pending = await anext(aiter(outside))
            sequence = talker.ask("hi")
            await ready.wait()
            sequence.cancel()
            promises, error = await drain(sequence)
            outside.cancel()
    messages = [await promise for promise in promises]
    assert [(m.content, dict(m.metadata)) for m in messages] == [
        ("tok", {"incomplete": True}),
        ("queued", {}),
        ("", {"lang": "en", "incomplete": True}),
        ("after the queued stream", {}),
    ]
    assert error.message.parent == messages[-1].hash
    assert await forum.store.verify() == []
