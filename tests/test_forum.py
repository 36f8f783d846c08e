"""The forum: task group nesting, waiting at exit, closing open requests, several forums."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.lowlevel import checkpoint

from agentforum import (
    Agent,
    AgentCall,
    AgentCancelled,
    CallMessage,
    Forum,
    InteractionContext,
    MemoryStore,
    Message,
    MessagePromise,
    MessageSequence,
    StreamedMessage,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


def make_echo(forum: Forum, alias: str = "echo") -> Agent:
    """Register an agent that answers each request with "re: <content>"."""

    async def echo(ctx: InteractionContext) -> None:
        async for promise in ctx.request_messages:
            ctx.respond(f"re: {(await promise).content}")

    return forum.agent(alias=alias)(echo)


async def tokens_of(promise: MessagePromise) -> list[str]:
    return [token async for token in promise]


# -- agents and their attributes ----------------------------------------------------------------


async def test_agent_alias_and_description_default_to_the_function() -> None:
    """The alias defaults to the function's name, the description to its docstring."""
    forum = Forum()

    @forum.agent
    async def researcher(ctx: InteractionContext) -> None:
        """Finds sources."""

    @forum.agent(alias="Writer", description="Writes it up.")
    async def writer(ctx: InteractionContext) -> None:
        """Ignored: the decorator's description wins."""

    @forum.agent()
    async def silent(ctx: InteractionContext) -> None:
        pass

    assert (researcher.alias, researcher.description) == ("researcher", "Finds sources.")
    assert (writer.alias, writer.description) == ("Writer", "Writes it up.")
    assert (silent.alias, silent.description) == ("silent", "")
    assert researcher.forum is forum
    assert isinstance(writer, Agent)


async def test_context_knows_its_agent_and_forum() -> None:
    """ctx.agent is the Agent called and ctx.forum its forum."""
    forum = Forum()
    seen: list[tuple[object, object]] = []

    @forum.agent
    async def introspect(ctx: InteractionContext) -> None:
        seen.append((ctx.agent, ctx.forum))
        ctx.respond(ctx.agent.alias)

    with anyio.fail_after(5):
        async with forum:
            assert forum.is_running
            assert (await introspect.ask("who?").last()).content == "introspect"
    assert seen == [(introspect, forum)]
    assert not forum.is_running


# -- nesting and waiting ------------------------------------------------------------------------


async def test_a_call_told_by_an_agent_outlives_the_agent_and_the_forum_waits_for_it() -> None:
    """An inner call told by an outer agent runs on after the outer's responses closed."""
    forum = Forum()
    release = anyio.Event()
    progress: list[str] = []

    @forum.agent
    async def inner(ctx: InteractionContext) -> None:
        progress.append("inner started")
        await release.wait()
        for _ in range(5):
            await checkpoint()
        ctx.respond("inner done")
        progress.append("inner finished")

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        inner.tell(ctx.request_messages)
        ctx.respond("outer done")

    with anyio.fail_after(5):
        async with forum:
            seq = outer.ask("q")
            assert [m.content for m in await seq.messages()] == ["outer done"]
            await anyio.wait_all_tasks_blocked()
            assert progress == ["inner started"]
            release.set()
        assert progress == ["inner started", "inner finished"]
    (question,) = await forum.store.children(None)
    calls = await forum.store.children(question.hash)
    assert sorted(c.receiver for c in calls if isinstance(c, CallMessage)) == ["inner", "outer"]


async def test_leaving_the_forum_waits_for_every_call() -> None:
    """Exit waits for all calls: one waits on an event that another sets after the body ended."""
    forum = Forum()
    body_done = anyio.Event()
    handshake = anyio.Event()
    finished: list[str] = []

    @forum.agent
    async def waiter(ctx: InteractionContext) -> None:
        await handshake.wait()
        ctx.respond("released")
        finished.append("waiter")

    @forum.agent
    async def setter(ctx: InteractionContext) -> None:
        await body_done.wait()
        await checkpoint()
        handshake.set()
        finished.append("setter")

    with anyio.fail_after(5):
        async with forum:
            waiter.tell("wait")
            setter.tell("set")
            await anyio.wait_all_tasks_blocked()
            assert finished == []
            body_done.set()
    assert sorted(finished) == ["setter", "waiter"]
    roots = {m.content: m for m in await forum.store.children(None)}
    (call,) = await forum.store.children(roots["wait"].hash)
    (answer,) = await forum.store.children(call.hash)
    assert answer.content == "released"


async def test_nested_calls_run_in_their_callers_task_group() -> None:
    """A deep chain of tells (each agent tells the next and returns) all finish before exit."""
    forum = Forum()
    finished: list[int] = []
    agents: list[Agent] = []

    for depth in range(6):

        async def link(ctx: InteractionContext, _depth: int = depth) -> None:
            if _depth + 1 < len(agents):
                agents[_depth + 1].tell(ctx.request_messages)
            await checkpoint()
            finished.append(_depth)

        agents.append(forum.agent(alias=f"link{depth}")(link))

    with anyio.fail_after(5):
        async with forum:
            agents[0].tell("go")
    assert sorted(finished) == list(range(6))


async def test_open_requests_are_closed_when_the_forum_body_ends() -> None:
    """start_asking requests left open at the end of the body are closed: the agent finishes."""
    forum = Forum()
    counted: list[int] = []

    @forum.agent
    async def counter(ctx: InteractionContext) -> None:
        count = len(await ctx.request_messages.messages())
        counted.append(count)
        ctx.respond(str(count))

    with anyio.fail_after(5):
        async with forum:
            call = counter.start_asking()
            call.send_request("one").send_request("two")
            await anyio.wait_all_tasks_blocked()
            assert counted == []
    assert counted == [2]
    with pytest.raises(anyio.ClosedResourceError):
        call.send_request("three")


async def test_open_requests_are_closed_when_the_calling_agent_returns() -> None:
    """start_asking requests left open by an agent are closed when its function returns."""
    forum = Forum()
    calls: list[AgentCall] = []

    @forum.agent
    async def counter(ctx: InteractionContext) -> None:
        ctx.respond(str(len(await ctx.request_messages.messages())))

    @forum.agent
    async def starter(ctx: InteractionContext) -> None:
        call = counter.start_asking()
        call.send_request("a").send_request("b").send_request("c")
        calls.append(call)
        ctx.respond("started")

    with anyio.fail_after(5):
        async with forum:
            assert [m.content for m in await starter.ask("q").messages()] == ["started"]
            counted = await calls[0].response_sequence().messages()
            assert [m.content for m in counted] == ["3"]
            with pytest.raises(anyio.ClosedResourceError):
                calls[0].send_request("d")


async def test_open_requests_of_a_failing_agent_are_closed_too() -> None:
    """An agent that raises after start_asking still closes the requests it left open."""
    forum = Forum(strict_errors=False)
    calls: list[AgentCall] = []
    started = anyio.Event()

    @forum.agent
    async def counter(ctx: InteractionContext) -> None:
        ctx.respond(str(len(await ctx.request_messages.messages())))

    @forum.agent
    async def starter(ctx: InteractionContext) -> None:
        calls.append(counter.start_asking().send_request("a"))
        started.set()
        raise ValueError("starter failed")

    with anyio.fail_after(5):
        async with forum:
            starter.tell("q")
            await started.wait()
            counted = calls[0].response_sequence()
            assert [m.content for m in await counted.messages()] == ["1"]


# -- after the forum ----------------------------------------------------------------------------


async def test_promises_and_sequences_work_after_the_forum_exited() -> None:
    """A promise or sequence used after the forum exited gives the recorded messages."""
    forum = Forum()

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(["a", "b"]))
        ctx.respond("c")

    with anyio.fail_after(5):
        async with forum:
            seq = streamer.ask("q")
        promises = [p async for p in seq]
        assert [(await p).content for p in promises] == ["ab", "c"]
        assert [await tokens_of(p) for p in promises] == [["a", "b"], ["c"]]
        assert [m.content for m in await seq.history()] == ["q", "ab", "c"]


async def test_a_promise_awaited_only_after_exit_returns_its_message() -> None:
    """A promise taken during the forum but first awaited after exit returns the message."""
    forum = Forum()
    echo = make_echo(forum)
    promises: list[MessagePromise] = []
    with anyio.fail_after(5):
        async with forum:
            seq = echo.ask("q")
            promises.append(await anext(aiter(seq)))
        message = await promises[0]
    assert message.content == "re: q"
    assert await forum.get(message.hash) == message


async def test_two_forums_do_not_interfere_and_give_the_same_hashes() -> None:
    """The same agent code in two forums run at once: separate stores, identical hashes."""
    first, second = Forum(), Forum()
    echo_one, echo_two = make_echo(first), make_echo(second)
    with anyio.fail_after(5):
        async with first, second:
            one, two = echo_one.ask(["a", "b"]), echo_two.ask(["a", "b"])
            history_one = await one.history(include_calls=True)
            history_two = await two.history(include_calls=True)
            extra = await echo_two.ask("only in two").last()
    assert history_one == history_two
    assert [m.hash for m in history_one] == [m.hash for m in history_two]
    assert first.store is not second.store
    assert await second.get(extra.hash) == extra
    with pytest.raises(LookupError):
        await first.get(extra.hash)


async def test_calling_another_forums_agent_from_an_agent_is_a_top_level_call() -> None:
    """An agent of forum A calling an agent of forum B: in B it is a top-level call by "user"."""
    forum_a, forum_b = Forum(), Forum()
    echo_b = make_echo(forum_b)

    @forum_a.agent
    async def bridge(ctx: InteractionContext) -> None:
        ctx.respond((await echo_b.ask("across").last()).content)

    with anyio.fail_after(5):
        async with forum_b, forum_a:
            (response,) = await bridge.ask("q").messages()
    (root_b,) = await forum_b.store.children(None)
    assert root_b.content == "across"
    assert root_b.sender == "user"
    assert response.content == "re: across"


async def test_forum_accepts_a_given_store_and_keeps_messages_in_it() -> None:
    """Forum(store=MemoryStore()) writes its messages to that store."""
    store = MemoryStore()
    forum = Forum(store=store)
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            last = await echo.ask("q").last()
    assert forum.store is store
    assert await store.get(last.hash) == last


# -- AgentCall ----------------------------------------------------------------------------------


async def test_send_request_chains_and_response_sequence_is_stable() -> None:
    """send_request returns its AgentCall; response_sequence() twice gives the same messages."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            call = echo.start_asking()
            assert call.send_request("a") is call
            assert call.send_request(["b", "c"]).send_request("d") is call
            first = call.response_sequence()
            second = call.response_sequence()
            first_messages = await first.messages()
            second_messages = await second.messages()
    assert first_messages == second_messages
    assert [m.content for m in first_messages] == ["re: a", "re: b", "re: c", "re: d"]


async def test_start_asking_accepts_branch_from_and_kwargs() -> None:
    """start_asking(branch_from=..., **kwargs): the call continues there, kwargs in its node."""
    forum = Forum()

    @forum.agent
    async def tagged(ctx: InteractionContext, tag: str) -> None:
        async for promise in ctx.request_messages:
            ctx.respond(f"{tag}: {(await promise).content}")

    with anyio.fail_after(5):
        async with forum:
            base = await tagged.ask("base", tag="t0").last()
            call = tagged.start_asking(branch_from=base, tag="t1")
            branch = await call.send_request("next").response_sequence().history(include_calls=True)
    assert branch[-3].parent == base.hash
    call_message = branch[-2]
    assert isinstance(call_message, CallMessage)
    assert call_message.kwargs == {"tag": "t1"}
    assert branch[-1].content == "t1: next"


async def test_requests_can_be_messages_sequences_and_async_iterables() -> None:
    """Request content mixes str, Message, MessagePromise, MessageSequence, async iterables."""
    forum = Forum()
    echo = make_echo(forum)

    async def more() -> AsyncIterator[object]:
        yield "from async"
        yield ["nested", "list"]

    with anyio.fail_after(5):
        async with forum:
            earlier = echo.ask(["x", "y"])
            promise = await anext(aiter(earlier))
            root = Message(content="root", sender="alice")
            seq = echo.ask([root, "plain", promise, earlier, more()])
            branch = await seq.history()
    assert [m.content for m in branch[:8]] == [
        "root",
        "plain",
        "re: x",
        "re: x",
        "re: y",
        "from async",
        "nested",
        "list",
    ]
    assert branch[0] == root


# -- reprs --------------------------------------------------------------------------------------


async def test_reprs_are_informative() -> None:
    """The reprs of the runtime objects don't crash and say what they are."""
    forum = Forum()
    reprs: dict[str, str] = {}

    @forum.agent
    async def agent(ctx: InteractionContext) -> None:
        reprs["ctx"] = repr(ctx)
        streamed = StreamedMessage()
        reprs["streamed before"] = repr(streamed)
        ctx.respond(streamed)
        async with streamed:
            await streamed.send("tok")
            reprs["streamed open"] = repr(streamed)
        reprs["streamed after"] = repr(streamed)

    assert "not running" in repr(forum)
    assert "MemoryStore" in repr(forum)
    with anyio.fail_after(5):
        async with forum:
            reprs["forum"] = repr(forum)
            reprs["agent"] = repr(agent)
            call = agent.start_asking()
            reprs["call"] = repr(call)
            seq = call.send_request("q").response_sequence()
            reprs["seq open"] = repr(seq)
            promise = await anext(aiter(seq))
            reprs["promise"] = repr(promise)
            message = await promise
            reprs["promise resolved"] = repr(promise)
            await seq.messages()
            reprs["seq done"] = repr(seq)
    assert "running" in reprs["forum"]
    assert "not running" not in reprs["forum"]
    assert "agent" in reprs["agent"]
    assert "Agent" in reprs["agent"]
    assert "AgentCall" in reprs["call"]
    assert "agent" in reprs["call"]
    assert "InteractionContext" in reprs["ctx"]
    assert "agent" in reprs["ctx"]
    assert "MessageSequence" in reprs["seq open"]
    assert "complete" in reprs["seq done"]
    assert "1" in reprs["seq done"]
    assert "MessagePromise" in reprs["promise"]
    assert message.hash[:12] in reprs["promise resolved"]
    assert "StreamedMessage" in reprs["streamed before"]
    assert "streaming" in reprs["streamed open"]
    assert "1 token" in reprs["streamed open"]
    assert "complete" in reprs["streamed after"]


async def test_repr_of_a_pending_promise() -> None:
    """A promise still streaming says so in its repr, with the tokens so far."""
    forum = Forum()
    release = anyio.Event()
    reprs: list[str] = []

    @forum.agent
    async def slow(ctx: InteractionContext) -> None:
        streamed = StreamedMessage()
        ctx.respond(streamed)
        async with streamed:
            await streamed.send("a")
            await streamed.send("b")
            await release.wait()

    with anyio.fail_after(5):
        async with forum:
            promise = await anext(aiter(slow.ask("q")))
            await anyio.wait_all_tasks_blocked()
            reprs.append(repr(promise))
            release.set()
            await promise
    assert "pending" in reprs[0]
    assert "2 tokens" in reprs[0]


async def test_cancelling_the_forum_cancels_its_calls_and_fails_their_consumers() -> None:
    """A cancel scope around the forum cancels every call; consumers then get AgentCancelled."""
    forum = Forum()
    seqs: list[MessageSequence] = []

    @forum.agent
    async def forever(ctx: InteractionContext) -> None:
        streamed = StreamedMessage()
        ctx.respond(streamed)
        async with streamed:
            await streamed.send("a")
            await anyio.sleep_forever()

    with anyio.fail_after(5):
        with anyio.CancelScope() as scope:
            async with forum:
                seqs.append(forever.ask("q"))
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
        assert scope.cancelled_caught
        assert not forum.is_running
        promise = await anext(aiter(seqs[0]))
        assert [token async for token in promise] == ["a"]
        with pytest.raises(AgentCancelled) as info:
            await seqs[0].messages()
    assert info.value.message.error_type == "agentforum.AgentCancelled"
    assert info.value.message.sender == "forever"
