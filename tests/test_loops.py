"""Chains and loops of agents: ``agent_chain``, ``agent_loop`` and ``dialog_loop``."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentforum import (
    Agent,
    AgentCancelled,
    AgentError,
    CallMessage,
    ErrorMessage,
    Forum,
    ForwardedMessage,
    InteractionContext,
    Message,
    StreamedMessage,
)
from agentforum.agents import AgentLoop, agent_chain, agent_loop, dialog_loop

pytestmark = pytest.mark.anyio


def counter(forum: Forum, alias: str, log: list[str] | None = None, *, cache: bool = True) -> Agent:
    """An agent that answers ``"<alias> saw <n>"``, n the length of its history."""

    async def count(ctx: InteractionContext) -> None:
        if log is not None:
            log.append(f"{alias} starts")
        history = await ctx.history()
        ctx.respond(f"{alias} saw {len(history)}")
        if log is not None:
            log.append(f"{alias} ends")

    return forum.agent(count, alias=alias, cache=cache)


async def contents(forum: Forum, last: Message, *, include_calls: bool = False) -> list[str]:
    return [
        f"call {m.receiver}" if isinstance(m, CallMessage) else f"{m.sender}: {m.content}"
        for m in await forum.history(last, include_calls=include_calls)
    ]


async def test_a_chain_asks_each_agent_with_the_previous_answer() -> None:
    """Each agent continues the previous one's branch; the chain responds with every answer."""
    forum = Forum()
    a, b, c = (counter(forum, name) for name in "abc")
    pipeline = forum.agent(agent_chain([a, b, c]), alias="pipeline")
    async with forum:
        responses = await pipeline.ask("hi").messages()
        assert [m.content for m in responses] == ["a saw 1", "b saw 2", "c saw 3"]
        assert all(isinstance(m, ForwardedMessage) for m in responses)
        assert all(m.sender == "pipeline" for m in responses)
        end = await forum.get(responses[-1].original)  # type: ignore[attr-defined]
        assert await contents(forum, end, include_calls=True) == [
            "user: hi",
            "call a",
            "a: a saw 1",
            "call b",
            "b: b saw 2",
            "call c",
            "c: c saw 3",
        ]
        # The chain's own branch: its call, then the forwards.
        assert await contents(forum, responses[-1], include_calls=True) == [
            "user: hi",
            "call pipeline",
            "pipeline: a saw 1",
            "pipeline: b saw 2",
            "pipeline: c saw 3",
        ]


async def test_a_chain_of_one_agent_without_requests_continues_after_the_callers_request() -> None:
    """A loop call without requests starts where any nested call would: a root here."""
    forum = Forum()
    a = counter(forum, "a")
    chain = forum.agent(agent_chain([a]))
    assert chain.alias == "chain"
    async with forum:
        answer = await chain.ask().last()
        end = await forum.get(answer.original)  # type: ignore[attr-defined]
        assert await contents(forum, end, include_calls=True) == ["call a", "a: a saw 0"]


async def test_a_silent_step_of_a_chain_is_skipped() -> None:
    """An agent that responds nothing: the next one continues from the same point."""
    forum = Forum()
    a, c = counter(forum, "a"), counter(forum, "c")
    seen: list[int] = []

    @forum.agent
    async def quiet(ctx: InteractionContext) -> None:
        seen.append(len([m async for m in ctx.request_messages]))

    @forum.agent
    async def first_quiet(ctx: InteractionContext) -> None:
        pass

    async with forum:
        responses = await forum.agent(agent_chain([a, quiet, c]), alias="p1").ask("hi").messages()
        assert [m.content for m in responses] == ["a saw 1", "c saw 2"]
        end = await forum.get(responses[-1].original)  # type: ignore[attr-defined]
        assert await contents(forum, end) == ["user: hi", "a: a saw 1", "c: c saw 2"]
        assert seen == [1]  # quiet was asked with a's answer
        # A silent first step: the next agent continues after the chain's last request.
        responses = (
            await forum.agent(agent_chain([first_quiet, c]), alias="p2").ask("yo").messages()
        )
        end = await forum.get(responses[-1].original)  # type: ignore[attr-defined]
        assert await contents(forum, end) == ["user: yo", "c: c saw 1"]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync-stop", "async-stop"])
async def test_stop_is_asked_after_every_turn_with_its_last_message(asynchronous: bool) -> None:
    """A true stop condition ends a chain or a loop after that turn."""
    forum = Forum()
    a, b = counter(forum, "a"), counter(forum, "b")
    asked: list[str] = []

    def sync_stop(message: Message) -> bool:
        asked.append(message.content)
        return message.sender == "b"

    async def async_stop(message: Message) -> bool:
        await anyio.lowlevel.checkpoint()
        return sync_stop(message)

    stop = async_stop if asynchronous else sync_stop
    async with forum:
        chain = forum.agent(agent_chain([a, b, a], stop=stop), alias="chain")
        assert [m.content for m in await chain.ask("q").messages()] == ["a saw 1", "b saw 2"]
        loop = forum.agent(agent_loop([a, a, b, a], stop=stop), alias="loop")
        assert [m.content for m in await loop.ask("q").messages()] == [
            "a saw 1",
            "a saw 2",
            "b saw 3",
        ]
    assert asked == ["a saw 1", "b saw 2", "a saw 1", "a saw 2", "b saw 3"]


async def test_a_loop_goes_round_until_max_turns() -> None:
    """``agent_loop`` cycles through its agents; ``max_turns`` counts calls of agents."""
    forum = Forum()
    a, b = counter(forum, "a"), counter(forum, "b")
    loop = forum.agent(agent_loop([a, b], max_turns=5), alias="debate")
    async with forum:
        answers = await loop.ask("topic").messages()
    assert [m.content for m in answers] == ["a saw 1", "b saw 2", "a saw 3", "b saw 4", "a saw 5"]
    assert repr(loop.function) == "<AgentLoop loop of a, b, max_turns=5>"


async def test_a_dialog_starts_with_the_user_and_ends_when_someone_has_nothing_to_say() -> None:
    """``dialog_loop(user, assistant)``: the user first; a turn without responses ends it."""
    forum = Forum()
    lines = iter(["hello", "how are you?"])

    @forum.agent(cache=False)
    async def user(ctx: InteractionContext) -> None:
        line = next(lines, None)
        if line is not None:
            ctx.respond(line)

    assistant = counter(forum, "assistant")
    dialog = forum.agent(dialog_loop(user, assistant))
    assert dialog.alias == "dialog"
    assert dialog.cache is False  # the user is not cached, so neither is the dialog
    async with forum:
        answers = await dialog.ask().messages()
        assert [m.content for m in answers] == [
            "hello",
            "assistant saw 1",
            "how are you?",
            "assistant saw 3",
        ]
        end = await forum.get(answers[-1].original)  # type: ignore[attr-defined]
        assert await contents(forum, end) == [
            "user: hello",
            "assistant: assistant saw 1",
            "user: how are you?",
            "assistant: assistant saw 3",
        ]


async def test_each_turn_waits_for_the_previous_one() -> None:
    """Back-pressure: a turn starts once the previous one has responded, never earlier."""
    forum = Forum()
    log: list[str] = []
    a, b = counter(forum, "a", log), counter(forum, "b", log)
    loop = forum.agent(agent_loop([a, b], max_turns=4))
    async with forum:
        await loop.ask("go").messages()
    assert log == ["a starts", "a ends", "b starts", "b ends"] * 2


async def test_the_turns_stream_live_through_the_loop() -> None:
    """A turn's tokens reach the loop's consumer while the turn's agent is still writing."""
    forum = Forum()
    seen = {"first": anyio.Event()}

    @forum.agent
    async def writer(ctx: InteractionContext) -> None:
        message = StreamedMessage()
        ctx.respond(message)
        async with message:
            await message.send("one ")
            await seen["first"].wait()  # only the loop's consumer can set it
            await message.send("two")

    loop = forum.agent(agent_loop([writer], max_turns=1))
    async with forum:
        responses = loop.ask("go")
        tokens = []
        async for promise in responses:
            async for token in promise:
                tokens.append(token)
                seen["first"].set()
        assert tokens == ["one ", "two"]


async def test_a_turn_reads_the_previous_turns_tokens_as_they_stream() -> None:
    """Without a stop condition, a turn is asked with the previous one's responses live."""
    forum = Forum()
    read_first = anyio.Event()

    @forum.agent
    async def writer(ctx: InteractionContext) -> None:
        message = StreamedMessage()
        ctx.respond(message)
        async with message:
            await message.send("one ")
            await read_first.wait()  # only the next turn can set it
            await message.send("two")

    # Not cached: a cached call knows its key, and starts its agent, once its requests
    # are complete (docs/caching.md).
    @forum.agent(cache=False)
    async def reader(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            tokens = []
            async for token in request:
                tokens.append(token)
                read_first.set()
            ctx.respond("read " + "|".join(tokens))

    loop = forum.agent(agent_loop([writer, reader], max_turns=2))
    async with forum:
        with anyio.fail_after(10):
            responses = await loop.ask("go").messages()
    assert [m.content for m in responses] == ["one two", "read one |two"]


async def test_with_a_stop_condition_a_turn_starts_when_the_previous_one_has_ended() -> None:
    """stop is asked with a turn's last message: the next turn waits for the whole turn."""
    forum = Forum()
    log: list[str] = []

    @forum.agent
    async def writer(ctx: InteractionContext) -> None:
        message = StreamedMessage()
        ctx.respond(message)
        async with message:
            await message.send("one ")
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            log.append("writer ends")
            await message.send("two")

    @forum.agent
    async def reader(ctx: InteractionContext) -> None:
        log.append("reader starts")
        ctx.respond("read")

    loop = forum.agent(agent_loop([writer, reader], max_turns=2, stop=lambda m: False))
    async with forum:
        await loop.ask("go").messages()
    assert log == ["writer ends", "reader starts"]


async def test_a_turn_failing_while_the_next_one_reads_it_fails_the_loop_once() -> None:
    """The next turn, started on the failing turn's stream, is not a second error."""
    forum = Forum()  # strict: an error nobody observed would be raised at the exit

    @forum.agent
    async def flaky(ctx: InteractionContext) -> None:
        ctx.respond("a start")
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        raise ValueError("no luck")

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond("re: " + (await request).content)

    loop = forum.agent(agent_loop([flaky, echo], max_turns=4))
    async with forum:
        with pytest.raises(AgentError) as caught:
            await loop.ask("go").messages()
    assert caught.value.message.error_type == "ValueError"
    assert caught.value.message.sender == "loop"
    ends = {m.sender: m.error_type for m in await _all(forum) if isinstance(m, ErrorMessage)}
    # The second turn either failed on its failed request or was cancelled by the loop.
    assert ends["flaky"] == "ValueError"
    assert ends["echo"] in {"ValueError", "agentforum.AgentCancelled"}


async def test_a_failing_turn_ends_the_loop_with_its_error() -> None:
    """A turn's error ends the loop: its consumer gets the error; no turn runs after it."""
    forum = Forum(strict_errors=False)
    log: list[str] = []
    a = counter(forum, "a", log)

    @forum.agent
    async def broken(ctx: InteractionContext) -> None:
        raise ValueError("no luck")

    loop = forum.agent(agent_loop([a, broken, a], max_turns=6))
    async with forum:
        responses = loop.ask("go")
        with pytest.raises(AgentError) as caught:
            await responses.messages()
        assert caught.value.message.error_type == "ValueError"
        assert caught.value.message.sender == "loop"
        error = caught.value.message
        assert error.parent is not None
        assert await contents(forum, await forum.get(error.parent)) == [
            "user: go",
            "loop: a saw 1",
        ]
    assert log == ["a starts", "a ends"]


async def test_cancelling_a_loop_cancels_its_turn_and_runs_no_more() -> None:
    """Cancelling the loop's call cancels the running turn; its branch ends with the error."""
    forum = Forum()
    started = anyio.Event()
    a = counter(forum, "a")

    @forum.agent
    async def slow(ctx: InteractionContext) -> None:
        started.set()
        await anyio.sleep_forever()

    loop = forum.agent(agent_loop([a, slow, a]))
    async with forum:
        responses = loop.ask("go")
        await started.wait()
        responses.cancel()
        with pytest.raises(AgentCancelled):
            await responses.messages()
        first = await forum.history((await forum.store.children(None))[0].hash)
        assert first[0].content == "go"
    errors = [m for m in await _all(forum) if isinstance(m, ErrorMessage)]
    assert sorted(m.sender for m in errors) == ["loop", "slow"]


async def _all(forum: Forum) -> list[Message]:
    found: list[Message] = []
    pending: list[str | None] = [None]
    while pending:
        for child in await forum.store.children(pending.pop()):
            found.append(child)
            pending.append(child.hash)
    return found


async def test_a_loop_of_cached_agents_is_cached() -> None:
    """``forum.agent`` caches a loop when all its agents are: a repeat runs no agent."""
    forum = Forum()
    log: list[str] = []
    a = counter(forum, "a", log)
    chain = forum.agent(agent_chain([a, a]))
    assert chain.cache is True
    async with forum:
        first = await chain.ask("q").messages()
        again = await chain.ask("q").messages()
    assert first == again
    assert log == ["a starts", "a ends", "a starts", "a ends"]
    # Told otherwise, forum.agent does as it is told.
    other = Forum()
    assert other.agent(agent_chain([counter(other, "x")]), cache=False).cache is False


async def test_presets_go_into_the_turns_calls() -> None:
    """A preset agent in a loop calls the agent with its presets."""
    forum = Forum()
    got: list[object] = []

    @forum.agent
    async def styled(ctx: InteractionContext, *, style: str) -> None:
        got.append(style)
        ctx.respond(style)

    chain = forum.agent(agent_chain([styled.with_kwargs(style="a"), styled.with_kwargs(style="b")]))
    async with forum:
        assert [m.content for m in await chain.ask("q").messages()] == ["a", "b"]
    assert got == ["a", "b"]


def test_the_loops_check_their_arguments() -> None:
    """Bad agents, limits and conditions are refused when the loop is made."""
    forum, other = Forum(), Forum()
    a, b = counter(forum, "a"), counter(other, "b")
    with pytest.raises(ValueError, match="at least one agent"):
        agent_chain([])
    with pytest.raises(TypeError, match="not str"):
        agent_loop(["a"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="one forum"):
        dialog_loop(a, b)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_turns"):
            agent_loop([a], max_turns=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="stop"):
        agent_loop([a], stop="never")  # type: ignore[arg-type]
    assert isinstance(agent_loop([a], max_turns=1), AgentLoop)
    assert dialog_loop(a, a).__doc__ == "A conversation: a, then a, in turn."


async def test_a_loop_registered_in_another_forum_fails_its_calls() -> None:
    """The agents of a loop must be those of the forum it is registered in."""
    forum, other = Forum(strict_errors=False), Forum()
    loop = forum.agent(agent_chain([counter(other, "a")]))
    async with forum:
        with pytest.raises(AgentError, match="another forum"):
            await loop.ask("q").messages()


@given(
    replies=st.lists(st.integers(0, 2), min_size=1, max_size=3),
    max_turns=st.integers(1, 6),
)
async def test_a_loops_responses_are_its_turns_messages_in_order(
    replies: list[int], max_turns: int
) -> None:
    """For all loops: the responses are the turns' messages, and the branch is the history.

    Agent ``i`` answers ``replies[i]`` messages; the loop stops at ``max_turns`` or at the
    first silent turn.
    """
    forum = Forum()
    agents = []
    for index, count in enumerate(replies):

        async def speak(ctx: InteractionContext, index: int = index, count: int = count) -> None:
            seen = len(await ctx.history())
            for part in range(count):
                ctx.respond(f"{index}.{part} after {seen}")

        agents.append(forum.agent(speak, alias=f"agent{index}"))
    loop = forum.agent(agent_loop(agents, max_turns=max_turns))

    expected: list[str] = []
    history = 1  # the request
    for turn in range(max_turns):
        index = turn % len(replies)
        if replies[index] == 0:
            break
        expected += [f"{index}.{part} after {history}" for part in range(replies[index])]
        history += replies[index]

    async with forum:
        answers = await loop.ask("start").messages()
        assert [m.content for m in answers] == expected
        if answers:
            end = await forum.get(answers[-1].original)  # type: ignore[attr-defined]
            branch = await forum.history(end)
            assert [m.content for m in branch] == ["start", *expected]
