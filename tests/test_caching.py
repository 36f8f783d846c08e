"""Response caching: keyed by the CallMessage hash, on by default, with single flight."""

from __future__ import annotations

import sys
import textwrap
from contextlib import nullcontext
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentforum import (
    AgentCancelled,
    AgentError,
    Forum,
    InteractionContext,
    Message,
    MessageSequence,
    StreamedMessage,
)

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable

pytestmark = pytest.mark.anyio


class Counted:
    """An agent function that counts its runs and answers ``<request> #<run>``.

    Its answer changes from run to run, so a test sees whether a call ran it or was answered
    from the cache.
    """

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self, ctx: InteractionContext, **kwargs: object) -> None:
        self.runs += 1
        requests = [message.content async for message in _contents(ctx.request_messages)]
        ctx.respond(f"{' '.join(requests)} #{self.runs}")


async def _contents(sequence: MessageSequence):  # type: ignore[no-untyped-def]
    async for promise in sequence:
        yield await promise


async def test_an_identical_call_is_answered_from_the_cache() -> None:
    """The second identical call does not run the agent and gets the very same messages."""
    forum = Forum()
    counted = Counted()
    agent = forum.agent(counted, alias="counted")
    async with forum:
        first = await agent.ask("hello", temperature=0.5).messages()
        second_sequence = agent.ask("hello", temperature=0.5)
        second = await second_sequence.messages()
        tokens = [[token async for token in promise] async for promise in second_sequence]
    assert counted.runs == 1
    assert second == first
    assert [message.hash for message in second] == [message.hash for message in first]
    assert first[0].content == "hello #1"
    # A cached answer streams each message's content as one token, at once.
    assert tokens == [["hello #1"]]


async def test_the_key_covers_history_requests_receiver_and_kwargs() -> None:
    """Changing any part of the CallMessage's hash runs the agent again."""
    forum = Forum()
    counted = Counted()
    agent = forum.agent(counted, alias="counted")
    other = forum.agent(Counted(), alias="other")
    async with forum:
        base = await agent.ask("hello").last()
        await agent.ask("hello").last()  # cached
        assert counted.runs == 1
        await agent.ask("hello", temperature=1).last()  # kwargs
        await agent.ask("hello!").last()  # requests
        await agent.ask("hello", branch_from=base).last()  # history
        await agent.ask(["hello", "again"]).last()  # more requests
        await other.ask("hello").last()  # receiver
        assert counted.runs == 5
        # And each of those is cached in turn.
        await agent.ask("hello", temperature=1).last()
        await agent.ask("hello", branch_from=base).last()
        assert counted.runs == 5


@pytest.mark.parametrize("where", ["forum", "agent"])
async def test_cache_can_be_turned_off(where: str) -> None:
    """Forum(cache=False) and @forum.agent(cache=False) run every call."""
    forum = Forum(cache=where != "forum")
    counted = Counted()
    agent = forum.agent(alias="counted", cache=where != "agent")(counted)
    assert (forum.cache, agent.cache) == (where != "forum", where != "agent")
    async with forum:
        first = await agent.ask("hello").last()
        second = await agent.ask("hello").last()
    assert counted.runs == 2
    assert (first.content, second.content) == ("hello #1", "hello #2")
    assert await forum.store.get_cached(first.parent or "") is None


async def test_an_agent_off_the_cache_does_not_affect_the_others() -> None:
    forum = Forum()
    cached, uncached = Counted(), Counted()
    yes = forum.agent(cached, alias="yes")
    no = forum.agent(alias="no", cache=False)(uncached)
    async with forum:
        for _ in range(3):
            await yes.ask("x").last()
            await no.ask("x").last()
    assert (cached.runs, uncached.runs) == (1, 3)


async def test_a_cached_agent_sees_its_requests_complete() -> None:
    """The key needs every request: a cached agent starts once they are all placed."""
    forum = Forum()
    seen: list[bool] = []

    @forum.agent
    async def reader(ctx: InteractionContext) -> None:
        seen.extend([promise.is_resolved async for promise in ctx.request_messages])
        ctx.respond("read")

    async def tokens():  # type: ignore[no-untyped-def]
        for token in ["a", "b", "c"]:
            await anyio.lowlevel.checkpoint()
            yield token

    async with forum:
        await reader.ask(["first", StreamedMessage(tokens())]).last()
    assert seen == [True, True]


async def test_start_asking_calls_are_never_cached() -> None:
    """A full-duplex call runs its agent before its requests (its key) are known."""
    forum = Forum()
    counted = Counted()
    agent = forum.agent(counted, alias="counted")
    async with forum:
        first = await agent.start_asking().send_request("hi").response_sequence().last()
        second = await agent.start_asking().send_request("hi").response_sequence().last()
        assert counted.runs == 2
        assert first.parent == second.parent  # the same CallMessage
        assert await forum.store.get_cached(first.parent or "") is None
        # An ask() of the same call is not answered by them either.
        assert (await agent.ask("hi").last()).content == "hi #3"


# -- what is not cached ---------------------------------------------------------------------


async def test_a_failed_call_is_not_cached() -> None:
    forum = Forum()
    runs = 0

    @forum.agent
    async def flaky(ctx: InteractionContext) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ConnectionError("the model is down")
        ctx.respond("up again")

    async with forum:
        with pytest.raises(AgentError, match="the model is down"):
            await flaky.ask("q").messages()
        assert (await flaky.ask("q").last()).content == "up again"
        assert (await flaky.ask("q").last()).content == "up again"
    assert runs == 2


async def test_a_cancelled_call_is_not_cached() -> None:
    forum = Forum()
    runs = 0
    started = anyio.Event()

    @forum.agent
    async def slow(ctx: InteractionContext) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            started.set()
            await anyio.sleep_forever()
        ctx.respond("done")

    with anyio.fail_after(5):
        async with forum:
            sequence = slow.ask("q")
            await started.wait()
            sequence.cancel()
            with pytest.raises(AgentCancelled):
                await sequence.messages()
            assert (await slow.ask("q").last()).content == "done"
    assert runs == 2


@pytest.mark.parametrize("nested_end", ["error", "cancelled"])
async def test_a_call_that_recovered_from_a_nested_error_is_not_cached(nested_end: str) -> None:
    """An agent that answers despite a failed nested call is asked again next time.

    Its answer (a fallback) depends on a failure that may not happen again, and so does the
    answer of every call it is nested in.
    """
    forum = Forum()
    runs = {"outer": 0, "middle": 0, "inner": 0}
    started = anyio.Event()

    @forum.agent
    async def inner(ctx: InteractionContext) -> None:
        runs["inner"] += 1
        if runs["inner"] == 1:
            if nested_end == "error":
                raise TimeoutError("inner timed out")
            started.set()
            await anyio.sleep_forever()
        ctx.respond("inner answer")

    @forum.agent
    async def middle(ctx: InteractionContext) -> None:
        runs["middle"] += 1
        sequence = inner.ask(ctx.request_messages)
        if nested_end == "cancelled" and runs["middle"] == 1:
            await started.wait()
            sequence.cancel()
        try:
            ctx.respond(await sequence.last())
        except AgentError:
            ctx.respond("fallback")

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        runs["outer"] += 1
        ctx.respond(middle.ask(ctx.request_messages))

    with anyio.fail_after(5):
        async with forum:
            assert (await outer.ask("q").last()).content == "fallback"
            assert (await outer.ask("q").last()).content == "inner answer"
            assert (await outer.ask("q").last()).content == "inner answer"
    assert runs == {"outer": 2, "middle": 2, "inner": 2}


@pytest.mark.parametrize("observed", [True, False])
async def test_a_failed_flight_is_one_failure_for_all_its_followers(observed: bool) -> None:
    """Identical calls in flight share one failure; with strict errors it is raised once.

    The failure is observed as soon as one follower's consumer sees it.
    """
    forum = Forum()
    runs = 0
    go = anyio.Event()

    @forum.agent
    async def failing(ctx: InteractionContext) -> None:
        nonlocal runs
        runs += 1
        await go.wait()
        raise ValueError("no")

    with anyio.fail_after(5), pytest.RaisesGroup(AgentError) if not observed else nullcontext():
        async with forum:
            for _ in range(3):
                failing.tell("q")
            sequence = failing.ask("q")
            await anyio.wait_all_tasks_blocked()
            go.set()
            if observed:
                with pytest.raises(AgentError) as error:
                    await sequence.messages()
                assert error.value.message.error_type == "ValueError"
    assert runs == 1


# -- single flight --------------------------------------------------------------------------


async def test_identical_calls_in_flight_run_the_agent_once_and_stream_live() -> None:
    forum = Forum()
    runs = 0
    release = [anyio.Event() for _ in range(3)]

    @forum.agent
    async def streamer(ctx: InteractionContext) -> None:
        nonlocal runs
        runs += 1
        streamed = StreamedMessage()
        ctx.respond(streamed)
        async with streamed:
            for index, event in enumerate(release):
                await event.wait()
                await streamed.send(f"t{index} ")

    seen: list[list[str]] = [[] for _ in range(4)]

    async def consume(index: int, sequence: MessageSequence) -> None:
        async for promise in sequence:
            async for token in promise:
                seen[index].append(token)

    with anyio.fail_after(5):
        async with forum, anyio.create_task_group() as group:
            sequences = [streamer.ask("go") for _ in range(4)]
            for index, sequence in enumerate(sequences):
                group.start_soon(consume, index, sequence)
            for index, event in enumerate(release):
                event.set()
                # Every consumer sees each token before the next one exists.
                await wait_until(lambda index=index: all(len(tokens) > index for tokens in seen))
            answers = [await sequence.messages() for sequence in sequences]
    assert runs == 1
    assert seen == [["t0 ", "t1 ", "t2 "]] * 4
    assert len({tuple(answer) for answer in answers}) == 1


async def wait_until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition()`` holds."""
    while not condition():
        await anyio.lowlevel.checkpoint()


async def _started(forum: Forum, alias: str = "slow") -> tuple[anyio.Event, list[str]]:
    """Add an agent that streams a token, signals, and waits forever; record its ``finally``."""
    started = anyio.Event()
    log: list[str] = []

    @forum.agent(alias=alias)
    async def slow(ctx: InteractionContext) -> None:
        log.append("run")
        try:
            streamed = StreamedMessage()
            ctx.respond(streamed)
            async with streamed:
                await streamed.send("partial")
                started.set()
                await anyio.sleep_forever()
        finally:
            log.append("finally")

    return started, log


async def test_cancelling_one_follower_does_not_cancel_the_flight() -> None:
    """One of two identical calls cancels: it gets AgentCancelled, the other its answer."""
    forum = Forum()
    release = anyio.Event()
    runs = 0

    @forum.agent
    async def shared(ctx: InteractionContext) -> None:
        nonlocal runs
        runs += 1
        ctx.respond("before")
        await release.wait()
        ctx.respond("after")

    with anyio.fail_after(5):
        async with forum:
            leaving = shared.ask("q")
            staying = shared.ask("q")
            before = await (await anext(aiter(leaving)))
            leaving.cancel()
            with pytest.raises(AgentCancelled) as cancelled:
                await leaving.messages()
            release.set()
            answer = await staying.messages()
            # The follower's own end hangs below the last message it had.
            end = cancelled.value.message
            assert end.parent == before.hash
            assert await forum.store.get(end.hash) == end
            assert [message.content for message in answer] == ["before", "after"]
            # The flight ended cleanly: it is cached.
            again = await shared.ask("q").messages()
            assert again == answer
    assert runs == 1
    assert await forum.store.verify() == []


async def test_the_last_follower_to_cancel_cancels_the_flight() -> None:
    forum = Forum()
    started, log = await _started(forum)

    with anyio.fail_after(5):
        async with forum:
            first, second = forum._agents["slow"].ask("q"), forum._agents["slow"].ask("q")
            await started.wait()
            first.cancel()
            await anyio.wait_all_tasks_blocked()
            assert log == ["run"]  # the second still follows the flight
            second.cancel()
            errors = []
            for sequence in (first, second):
                with pytest.raises(AgentCancelled) as error:
                    await sequence.messages()
                errors.append(error.value.message)
            assert log == ["run", "finally"]
            # The flight's own branch: the cut message, then its AgentCancelled end.
            flight_end = errors[1]
            cut = await forum.store.get(flight_end.parent or "")
            assert (cut.content, dict(cut.metadata)) == ("partial", {"incomplete": True})
            # Not cached: a new call runs the agent again.
            third = forum._agents["slow"].ask("q")
            await anyio.wait_all_tasks_blocked()
            assert log == ["run", "finally", "run"]
            third.cancel()
            with pytest.raises(AgentCancelled):
                await third.messages()
    assert await forum.store.verify() == []


async def test_a_call_identical_to_one_it_is_nested_in_fails_instead_of_hanging() -> None:
    """An agent that asks itself the very same call would wait for its own answer."""
    forum = Forum()

    @forum.agent
    async def narcissus(ctx: InteractionContext) -> None:
        ctx.respond(narcissus.ask(ctx.request_messages))

    with anyio.fail_after(5):
        async with forum:
            with pytest.raises(AgentError) as error:
                await narcissus.ask("who is the fairest?").messages()
    assert error.value.message.error_type == "RecursionError"
    assert "would never end" in error.value.message.content


# -- persistence ----------------------------------------------------------------------------


async def test_the_cache_survives_a_restart(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "forum.db"
    answers = []
    counted = Counted()
    for _ in range(2):
        forum = Forum(path)
        agent = forum.agent(counted, alias="counted")
        async with forum:
            answers.append(await agent.ask("q").messages())
    assert counted.runs == 1
    assert answers[0] == answers[1]


_PROCESS = textwrap.dedent(
    """
    import sys
    import anyio
    from agentforum import Forum, InteractionContext

    async def main() -> None:
        forum = Forum(sys.argv[1])
        runs = 0

        @forum.agent
        async def answer(ctx: InteractionContext) -> None:
            nonlocal runs
            runs += 1
            ctx.respond(f"answered by {sys.argv[2]}")

        async with forum:
            message = await answer.ask("the question").last()
        print(runs, message.hash, message.content)

    anyio.run(main, backend=sys.argv[2])
    """
)


async def test_the_cache_is_shared_between_processes(tmp_path: pathlib.Path) -> None:
    """A second process (on the other backend) is answered from the first one's cache."""
    path = str(tmp_path / "forum.db")
    lines = []
    for backend in ("asyncio", "trio"):
        result = await anyio.run_process([sys.executable, "-c", _PROCESS, path, backend])
        lines.append(result.stdout.decode().split(maxsplit=2))
    (runs_1, hash_1, content_1), (runs_2, hash_2, content_2) = lines
    assert (runs_1, runs_2) == ("1", "0")
    assert (hash_1, content_1.strip()) == (hash_2, "answered by asyncio")
    assert content_2.strip() == "answered by asyncio"


# -- for all --------------------------------------------------------------------------------


@given(
    calls=st.lists(
        st.tuples(
            st.lists(st.text(alphabet="ab", max_size=2), max_size=2),
            st.integers(0, 1),
            st.sampled_from(["a", "b"]),
        ),
        min_size=1,
        max_size=8,
    )
)
async def test_each_distinct_call_runs_once_and_every_answer_is_its_first(
    calls: list[tuple[list[str], int, str]],
) -> None:
    """For all sequences of calls: each distinct call runs once; repeats get its first answer."""
    forum = Forum()
    runs: list[tuple[str, tuple[str, ...], int]] = []
    for alias in ("a", "b"):

        @forum.agent(alias=alias)
        async def respond(ctx: InteractionContext, *, n: int) -> None:
            requests = tuple([(await promise).content async for promise in ctx.request_messages])
            runs.append((ctx.agent.alias, requests, n))
            ctx.respond(f"{ctx.agent.alias}{n}:{'|'.join(requests)}:run {len(runs)}")

    first: dict[tuple[str, tuple[str, ...], int], list[Message]] = {}
    async with forum:
        for requests, n, alias in calls:
            key = (alias, tuple(requests), n)
            answer = await forum._agents[alias].ask(requests, n=n).messages()
            assert answer == first.setdefault(key, answer)
    assert sorted(runs) == sorted(first)
