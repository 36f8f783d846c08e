"""Token streaming: live through nested agents, replayable, one copy of the tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from agentforum import (
    Agent,
    AgentError,
    AgentFunction,
    ErrorMessage,
    Forum,
    ForwardedMessage,
    InteractionContext,
    Message,
    MessagePromise,
    MessageSequence,
    StreamedMessage,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = pytest.mark.anyio


async def collect_tokens(promise: MessagePromise) -> list[str]:
    return [token async for token in promise]


async def collect_promises(seq: MessageSequence) -> list[MessagePromise]:
    return [promise async for promise in seq]


async def drain(seq: MessageSequence) -> tuple[list[MessagePromise], AgentError]:
    """Iterate a sequence that must fail; return the promises before the error, and the error."""
    promises: list[MessagePromise] = []

    async def consume() -> None:
        async for promise in seq:
            promises.append(promise)  # noqa: PERF401 - keep the promises seen before the error

    with pytest.raises(AgentError) as info:
        await consume()
    return promises, info.value


def make_chain(
    forum: Forum, leaf_function: AgentFunction, depth: int
) -> tuple[Agent, list[MessageSequence]]:
    """Register ``leaf`` and ``depth`` proxies above it; return the top one and a list.

    Proxy ``proxy{i}`` responds with the responses of ``proxy{i+1}`` (the last one with the
    responses of ``leaf``), passing its requests on; each inner sequence is appended to the
    returned list, so the leaf's comes last.
    """
    inner_sequences: list[MessageSequence] = []
    below = forum.agent(alias="leaf")(leaf_function)
    for index in reversed(range(depth)):

        async def proxy(ctx: InteractionContext, _below: Agent = below) -> None:
            seq = _below.ask(ctx.request_messages)
            inner_sequences.append(seq)
            ctx.respond(seq)

        below = forum.agent(alias=f"proxy{index}")(proxy)
    return below, inner_sequences


# -- live streaming -----------------------------------------------------------------------------


async def test_hand_streamed_tokens_reach_the_top_consumer_live_through_nested_agents() -> None:
    """A token sent by hand three agents down reaches the top consumer before the next is sent."""
    forum = Forum()
    first_seen = anyio.Event()

    async def leaf(ctx: InteractionContext) -> None:
        streamed = StreamedMessage()
        ctx.respond(streamed)
        async with streamed:
            await streamed.send("one ")
            await first_seen.wait()
            await streamed.send("two")

    top, _ = make_chain(forum, leaf, depth=2)
    tokens: list[str] = []
    with anyio.fail_after(5):
        async with forum:
            seq = top.ask("go")
            async for promise in seq:
                async for token in promise:
                    tokens.append(token)
                    first_seen.set()
            message = await seq.last()
    assert tokens == ["one ", "two"]
    assert message.content == "one two"


async def test_async_generator_tokens_reach_the_top_consumer_live_through_nested_agents() -> None:
    """Tokens of a StreamedMessage over an async generator reach the top consumer one by one."""
    forum = Forum()
    first_seen = anyio.Event()

    async def tokens_source() -> AsyncIterator[str]:
        yield "one "
        await first_seen.wait()
        yield "two"

    async def leaf(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(tokens_source()))

    top, _ = make_chain(forum, leaf, depth=2)
    tokens: list[str] = []
    with anyio.fail_after(5):
        async with forum:
            seq = top.ask("go")
            async for promise in seq:
                async for token in promise:
                    tokens.append(token)
                    first_seen.set()
            message = await seq.last()
    assert tokens == ["one ", "two"]
    assert message.content == "one two"


async def test_streamed_request_by_hand_reaches_the_agent() -> None:
    """A StreamedMessage given as a request is placed with the tokens sent by hand."""
    forum = Forum()

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond([token async for token in request])

    with anyio.fail_after(5):
        async with forum:
            streamed = StreamedMessage()
            seq = echo.ask(streamed)
            async with streamed:
                await streamed.send("he")
                await streamed.send("llo")
            assert [m.content for m in await seq.messages()] == ["he", "llo"]
            history = await seq.history()
    assert history[0].content == "hello"
    assert history[0].sender == "user"


# -- many consumers -----------------------------------------------------------------------------


async def test_concurrent_and_late_consumers_see_identical_tokens_and_promises() -> None:
    """Ten concurrent consumers and a late one see the same promises and the same tokens."""
    forum = Forum()
    release = anyio.Event()

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        ctx.respond("before")
        streamed = StreamedMessage()
        ctx.respond(streamed)
        async with streamed:
            await streamed.send("a")
            await release.wait()
            for token in ("b", "c", "d"):
                await streamed.send(token)
        ctx.respond("after")

    promise_lists: list[list[MessagePromise]] = []
    token_lists: list[list[list[str]]] = []

    async def consume(seq: MessageSequence) -> None:
        promises: list[MessagePromise] = []
        tokens: list[list[str]] = []
        async for promise in seq:
            promises.append(promise)
            tokens.append(await collect_tokens(promise))
        promise_lists.append(promises)
        token_lists.append(tokens)

    with anyio.fail_after(5):
        async with forum:
            seq = streamer.ask("go")
            async with anyio.create_task_group() as group:
                for _ in range(10):
                    group.start_soon(consume, seq)
                await anyio.wait_all_tasks_blocked()
                release.set()
            await consume(seq)  # late: the message is complete, iteration replays
            await consume(seq)  # and again
    expected = [["before"], ["a", "b", "c", "d"], ["after"]]
    assert token_lists == [expected] * 12
    first = promise_lists[0]
    assert all(
        len(promises) == 3 and all(p is q for p, q in zip(promises, first, strict=True))
        for promises in promise_lists
    )


async def test_late_token_iteration_replays_from_the_first_token() -> None:
    """Iterating a promise's tokens again, after it is complete, replays every token."""
    forum = Forum()

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(iter(["x", "y", "z"])))

    with anyio.fail_after(5):
        async with forum:
            (promise,) = await collect_promises(streamer.ask("go"))
            first = await collect_tokens(promise)
            await promise
            second = await collect_tokens(promise)
            tokens = aiter(promise)
            assert aiter(tokens) is tokens
            promises = aiter(streamer.ask("again"))
            assert aiter(promises) is promises
    assert first == second == ["x", "y", "z"]


async def test_many_tokens_are_all_delivered_in_order() -> None:
    """A message of several hundred tokens reaches a consumer whole and in order."""
    forum = Forum()
    tokens = [f"t{index} " for index in range(500)]

    async def source() -> AsyncIterator[str]:
        for token in tokens:
            yield token

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(source()))
        ctx.respond(StreamedMessage(tokens))

    with anyio.fail_after(5):
        async with forum:
            promises = await collect_promises(streamer.ask("go"))
            assert [await collect_tokens(p) for p in promises] == [tokens, tokens]
            messages = [await p for p in promises]
    assert [m.content for m in messages] == ["".join(tokens)] * 2


# -- non-streamed messages ----------------------------------------------------------------------


async def test_non_streamed_message_is_one_token() -> None:
    """A message that was not streamed yields exactly one token: its content."""
    forum = Forum()

    @forum.agent
    async def plain(ctx: InteractionContext) -> None:
        ctx.respond("whole answer")

    with anyio.fail_after(5):
        async with forum:
            (promise,) = await collect_promises(plain.ask("go"))
            assert await collect_tokens(promise) == ["whole answer"]


async def test_empty_message_has_no_tokens() -> None:
    """A message with empty content yields no token at all."""
    forum = Forum()

    @forum.agent
    async def empty(ctx: InteractionContext) -> None:
        ctx.respond("")
        ctx.respond(StreamedMessage([]))

    with anyio.fail_after(5):
        async with forum:
            promises = await collect_promises(empty.ask("go"))
            assert [await collect_tokens(p) for p in promises] == [[], []]
            assert [(await p).content for p in promises] == ["", ""]


async def test_request_promises_of_existing_messages_are_one_token() -> None:
    """The agent sees a request made of a str as a promise with one token."""
    forum = Forum()
    seen: list[list[str]] = []

    @forum.agent
    async def reader(ctx: InteractionContext) -> None:
        seen.extend([await collect_tokens(p) async for p in ctx.request_messages])
        ctx.respond("done")

    with anyio.fail_after(5):
        async with forum:
            await reader.ask(["a", "bc"]).messages()
    assert seen == [["a"], ["bc"]]


# -- promises and the placed messages -----------------------------------------------------------


async def test_awaiting_a_promise_returns_the_placed_message() -> None:
    """`await promise` returns the Message stored in the forum, whose content is its tokens."""
    forum = Forum()

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(["Hel", "lo"]))
        ctx.respond("plain")

    with anyio.fail_after(5):
        async with forum:
            seq = streamer.ask("go")
            promises = await collect_promises(seq)
            messages = [await p for p in promises]
            assert messages == await seq.messages()
            for promise, message in zip(promises, messages, strict=True):
                assert promise.is_resolved
                assert "".join(await collect_tokens(promise)) == message.content
                assert await forum.get(message.hash) == message
    assert [type(m) for m in messages] == [Message, Message]
    assert [m.content for m in messages] == ["Hello", "plain"]
    assert all(m.sender == "streamer" for m in messages)


async def test_streamed_message_from_a_sync_iterable() -> None:
    """A StreamedMessage over a sync iterable (a generator) streams its tokens in order."""
    forum = Forum()

    def source() -> Iterator[str]:
        yield from ["a", "b", "c"]

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(source()))

    with anyio.fail_after(5):
        async with forum:
            (promise,) = await collect_promises(streamer.ask("go"))
            assert await collect_tokens(promise) == ["a", "b", "c"]
            assert (await promise).content == "abc"


async def test_streamed_message_metadata_is_recorded() -> None:
    """The metadata given to StreamedMessage is the metadata of the recorded message."""
    forum = Forum()

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(["x"], model="m1", usage={"tokens": [1, 2]}))

    with anyio.fail_after(5):
        async with forum:
            message = await streamer.ask("go").last()
    assert message.metadata == {"model": "m1", "usage": {"tokens": (1, 2)}}


async def test_respond_metadata_merges_with_streamed_metadata() -> None:
    """Metadata passed to respond() is merged over the StreamedMessage's own metadata."""
    forum = Forum()

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(["x"], model="m1", temperature=0), temperature=1, extra=True)
        ctx.respond("plain", extra=False)

    with anyio.fail_after(5):
        async with forum:
            streamed, plain = await streamer.ask("go").messages()
    assert streamed.metadata == {"model": "m1", "temperature": 1, "extra": True}
    assert plain.metadata == {"extra": False}


# -- bad inputs ---------------------------------------------------------------------------------


async def test_sending_a_non_str_token_is_a_type_error() -> None:
    """StreamedMessage.send() of a token that is not a str raises TypeError naming the type."""
    streamed = StreamedMessage()
    with pytest.raises(TypeError, match="int"):
        await streamed.send(1)  # type: ignore[arg-type]
    await streamed.aclose()


async def test_sending_after_close_is_a_closed_resource_error() -> None:
    """StreamedMessage.send() after the message ended raises anyio.ClosedResourceError."""
    streamed = StreamedMessage()
    async with streamed:
        await streamed.send("a")
    with pytest.raises(anyio.ClosedResourceError):
        await streamed.send("b")
    await streamed.aclose()  # closing twice is fine


async def test_sending_to_an_iterable_stream_is_a_type_error() -> None:
    """A StreamedMessage that takes its tokens from an iterable refuses send()."""
    streamed = StreamedMessage(["a"])
    with pytest.raises(TypeError, match="iterable"):
        await streamed.send("b")


@pytest.mark.parametrize("tokens", ["abc", b"abc", 42, 1.5])
def test_streamed_message_rejects_what_is_not_an_iterable_of_tokens(tokens: object) -> None:
    """StreamedMessage("abc") (and bytes, numbers) raises TypeError: tokens come as an iterable."""
    with pytest.raises(TypeError, match=type(tokens).__qualname__):
        StreamedMessage(tokens)  # type: ignore[arg-type]


def test_streamed_message_rejects_metadata_that_is_not_json() -> None:
    """StreamedMessage metadata that is not JSON raises TypeError naming the key."""
    with pytest.raises(TypeError, match="metadata\\['bad'\\]"):
        StreamedMessage(["a"], bad={1, 2})  # type: ignore[arg-type]


async def test_non_str_token_from_the_iterable_ends_the_branch_with_an_error() -> None:
    """A non-str token from the source: partial message marked incomplete, then a TypeError."""
    forum = Forum()

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(["a", "b", 3, "c"], model="m"))

    with anyio.fail_after(5):
        async with forum:
            seq = streamer.ask("go")
            promises, error = await drain(seq)
            partial = await promises[0]
            assert await collect_tokens(promises[0]) == ["a", "b"]
            branch = await forum.history(error.message, include_calls=True)
    assert partial.content == "ab"
    assert partial.metadata == {"model": "m", "incomplete": True}
    assert len(promises) == 1
    error_message = error.message
    assert isinstance(error_message, ErrorMessage)
    assert error_message.error_type == "TypeError"
    assert error_message.sender == "streamer"
    assert error_message.parent == partial.hash
    assert isinstance(error.__cause__, TypeError)
    assert branch[-2:] == [partial, error_message]


async def test_async_source_raising_midway_records_the_partial_message_then_fails() -> None:
    """A raising async source: the tokens before the error are kept, then AgentError."""
    forum = Forum()
    raised: list[Exception] = []
    closed = anyio.Event()

    async def source() -> AsyncIterator[str]:
        try:
            yield "par"
            yield "tial"
            exc = RuntimeError("connection lost")
            raised.append(exc)
            raise exc
        finally:
            closed.set()

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        ctx.respond("first")
        ctx.respond(StreamedMessage(source()))
        ctx.respond("never placed")

    with anyio.fail_after(5):
        async with forum:
            seq = streamer.ask("go")
            promises, error = await drain(seq)
            assert len(promises) == 2
            assert await collect_tokens(promises[1]) == ["par", "tial"]
            partial = await promises[1]
            with pytest.raises(AgentError):
                await seq.messages()
    assert closed.is_set()
    assert partial.content == "partial"
    assert partial.metadata == {"incomplete": True}
    assert error.__cause__ is raised[0]
    assert error.message.error_type == "RuntimeError"
    assert error.message.content == "connection lost"
    assert error.message.parent == partial.hash


async def test_exception_inside_a_hand_stream_records_the_partial_message_then_fails() -> None:
    """An exception inside `async with streamed:` keeps the tokens sent, then ends in an error."""
    forum = Forum()

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        streamed = StreamedMessage()
        ctx.respond(streamed)
        async with streamed:
            await streamed.send("so far")
            raise LookupError("gone")

    with anyio.fail_after(5):
        async with forum:
            seq = streamer.ask("go")
            with pytest.raises(AgentError) as info:
                await seq.messages()
            (promise,), _ = await drain(seq)
            partial = await promise
    assert partial.content == "so far"
    assert partial.metadata == {"incomplete": True}
    assert info.value.message.error_type == "LookupError"
    assert isinstance(info.value.__cause__, LookupError)


async def test_cancel_scope_inside_a_hand_stream_does_not_lose_later_responses() -> None:
    """An agent that cancels its own scope around a hand stream still has later responses placed."""
    forum = Forum()

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        streamed = StreamedMessage()
        ctx.respond(streamed)
        with anyio.CancelScope() as scope:
            async with streamed:
                await streamed.send("a")
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        ctx.respond("after")

    with anyio.fail_after(5):
        async with forum:
            messages = await streamer.ask("go").messages()
    assert [m.content for m in messages] == ["a", "after"]


async def test_a_streamed_message_is_placed_only_once() -> None:
    """Placing the same StreamedMessage a second time raises TypeError at once."""
    forum = Forum()
    caught: list[str] = []

    @forum.agent
    async def again(ctx: InteractionContext) -> None:
        streamed = StreamedMessage(["a"])
        ctx.respond(streamed)
        try:
            ctx.respond(["fine", streamed])
        except TypeError as exc:
            caught.append(str(exc))
        ctx.respond("ok")

    with anyio.fail_after(5):
        async with forum:
            messages = await again.ask("go").messages()
    assert [m.content for m in messages] == ["a", "ok"]
    assert len(caught) == 1
    assert "once" in caught[0]


async def test_a_streamed_message_given_twice_in_one_respond_is_a_type_error() -> None:
    """respond([s, s]) raises TypeError in the agent, and nothing of it is placed."""
    forum = Forum()
    caught: list[str] = []

    @forum.agent
    async def twice(ctx: InteractionContext) -> None:
        streamed = StreamedMessage(["a"])
        try:
            ctx.respond([streamed, streamed])
        except TypeError as exc:
            caught.append(str(exc))
        ctx.respond("ok")

    with anyio.fail_after(5):
        async with forum:
            messages = await twice.ask("go").messages()
    assert [m.content for m in messages] == ["ok"]
    assert len(caught) == 1


# -- full duplex --------------------------------------------------------------------------------


async def test_agent_reads_and_answers_a_request_before_the_next_is_sent() -> None:
    """With start_asking, the agent answers request 1 before request 2 exists (full duplex)."""
    forum = Forum()
    answered_first = anyio.Event()

    @forum.agent
    async def chat(ctx: InteractionContext) -> None:
        async for promise in ctx.request_messages:
            request = await promise
            ctx.respond(f"re: {request.content}")
            if request.content == "1":
                answered_first.set()

    with anyio.fail_after(5):
        async with forum:
            call = chat.start_asking()
            call.send_request("1")
            await answered_first.wait()
            call.send_request("2")
            seq = call.response_sequence()
            contents = [(await p).content async for p in seq]
            history = await seq.history()
    assert contents == ["re: 1", "re: 2"]
    assert [m.content for m in history] == ["1", "2", "re: 1", "re: 2"]


# -- one copy of the tokens ---------------------------------------------------------------------


async def test_fifty_consumers_through_five_proxies_see_the_same_tokens() -> None:
    """Fifty consumers of a message forwarded through five proxies all see every token."""
    forum = Forum()
    release = anyio.Event()
    tokens = [f"tok{index}" for index in range(20)]

    async def leaf(ctx: InteractionContext) -> None:
        streamed = StreamedMessage()
        ctx.respond(streamed)
        async with streamed:
            await streamed.send(tokens[0])
            await release.wait()
            for token in tokens[1:]:
                await streamed.send(token)

    top, inner = make_chain(forum, leaf, depth=5)
    seen: list[list[str]] = []

    async def consume(seq: MessageSequence) -> None:
        seen.extend([await collect_tokens(promise) async for promise in seq])

    with anyio.fail_after(5):
        async with forum:
            seq = top.ask("go")
            async with anyio.create_task_group() as group:
                for _ in range(50):
                    group.start_soon(consume, seq)
                await anyio.wait_all_tasks_blocked()
                release.set()
            top_message = await seq.last()
            leaf_message = await inner[-1].last()
    assert seen == [tokens] * 50
    assert isinstance(top_message, ForwardedMessage)
    assert top_message.original == leaf_message.hash
    assert top_message.sender == "proxy0"
    assert top_message.content == leaf_message.content == "".join(tokens)


async def test_white_box_forwarded_promises_share_one_token_list() -> None:
    """White box: every forwarded promise of a streamed message shares the leaf's token log."""
    forum = Forum()

    async def leaf(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(["a", "b"]))

    top, inner = make_chain(forum, leaf, depth=5)
    with anyio.fail_after(5):
        async with forum:
            seq = top.ask("go")
            await seq.messages()
            levels = [seq, *inner]
            promises = [(await collect_promises(level))[0] for level in levels]
    assert len(promises) == 6
    assert all(p._tokens is promises[-1]._tokens for p in promises)
    assert promises[-1]._tokens.items == ["a", "b"]


async def test_agent_raising_with_an_unfinished_hand_stream_fails_instead_of_hanging() -> None:
    """An agent raising while its hand-streamed response is open: partial message, then error."""
    forum = Forum()

    @forum.agent
    async def careless(ctx: InteractionContext) -> None:
        streamed = StreamedMessage()
        ctx.respond(streamed)
        await streamed.send("a")
        raise ValueError("oops")

    with anyio.fail_after(5):
        async with forum:
            (promise,), error = await drain(careless.ask("go"))
            partial = await promise
    assert partial.content == "a"
    assert partial.metadata == {"incomplete": True}
    assert error.message.error_type == "ValueError"
    assert error.message.parent == partial.hash


async def test_request_tokens_reach_the_agent_live() -> None:
    """The agent reads the tokens of a streamed request while the caller is still sending them."""
    forum = Forum()
    first_read = anyio.Event()

    @forum.agent
    async def reader(ctx: InteractionContext) -> None:
        async for promise in ctx.request_messages:
            tokens: list[str] = []
            async for token in promise:
                tokens.append(token)
                first_read.set()
            ctx.respond("|".join(tokens))

    with anyio.fail_after(5):
        async with forum:
            streamed = StreamedMessage()
            call = reader.start_asking().send_request(streamed)
            async with streamed:
                await streamed.send("one")
                await first_read.wait()
                await streamed.send("two")
            messages = await call.response_sequence().messages()
    assert [m.content for m in messages] == ["one|two"]


async def test_send_nowait_appends_at_once_without_a_checkpoint() -> None:
    """send_nowait never yields: a producer with tokens at hand appends them all, and its
    consumers see every token, in order, live; send() yields first, then appends."""
    forum = Forum()
    seen: list[str] = []
    others_ran: list[int] = []

    @forum.agent
    async def burst(ctx: InteractionContext) -> None:
        streamed = StreamedMessage()
        ctx.respond(streamed)
        async with streamed:
            for index in range(100):
                streamed.send_nowait(f"t{index} ")
            # No task ran while the 100 tokens were appended: none was a checkpoint.
            others_ran.append(len(seen))
            await streamed.send("end")

    with anyio.fail_after(5):
        async with forum:
            async for promise in burst.ask("go"):
                async for token in promise:
                    seen.append(token)  # noqa: PERF401 (read by burst meanwhile)
    assert seen == [f"t{index} " for index in range(100)] + ["end"]
    assert others_ran == [0]


async def test_send_nowait_refuses_what_send_refuses() -> None:
    """Not a str, a message that streams from an iterable, a message complete: the errors of
    send(), raised at once."""
    by_hand = StreamedMessage()
    with pytest.raises(TypeError, match="a token must be a str, not int"):
        by_hand.send_nowait(1)  # type: ignore[arg-type]
    await by_hand.aclose()
    with pytest.raises(anyio.ClosedResourceError, match="complete"):
        by_hand.send_nowait("late")
    with pytest.raises(TypeError, match="takes its tokens from an iterable"):
        StreamedMessage(["a"]).send_nowait("b")
