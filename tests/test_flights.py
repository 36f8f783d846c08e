"""Single flight where the first call leads: no flight task, and the rule that a flight is
cancelled only when all its callers have left it, however they leave (``_runtime/_flight.py``).

The first of identical calls runs the agent itself; calls made while it runs follow it. These
tests pin what happens when the leader's own consumers leave while others follow: by
``seq.cancel()`` mid-stream, by the cancellation of the call it is nested in, before or after
the others leave; and the counters of ``Forum.statistics()``.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from agentforum import (
    AgentCancelled,
    Forum,
    ForumStatistics,
    InteractionContext,
    Message,
    MessageSequence,
    StreamedMessage,
)

pytestmark = pytest.mark.anyio


class Story:
    """A forum whose agent ``story`` streams "Once", then, once ``release`` is set,
    " upon a time"; ``runs`` counts its runs."""

    def __init__(self) -> None:
        self.forum = Forum()
        self.release = anyio.Event()
        self.runs: list[str] = []

        @self.forum.agent
        async def story(ctx: InteractionContext) -> None:
            self.runs.append("run")
            streamed = StreamedMessage()
            ctx.respond(streamed)
            async with streamed:
                await streamed.send("Once")
                await self.release.wait()
                await streamed.send(" upon a time")

        self.agent = story

    async def two_calls_streaming(self) -> tuple[MessageSequence, MessageSequence]:
        """Two identical asks, each once its first token has come."""
        first, second = self.agent.ask("tell"), self.agent.ask("tell")
        assert await first_token(first) == "Once"
        assert await first_token(second) == "Once"
        return first, second


async def first_token(sequence: MessageSequence) -> str:
    """The first token of the first promise of ``sequence``."""
    promise = await anext(aiter(sequence))
    return await anext(aiter(promise))


async def test_a_leader_cancelled_mid_stream_goes_on_for_its_follower() -> None:
    """The leader's consumers get AgentCancelled at once; its follower gets the whole answer,
    streamed live from the same run; the agent ran once, and the answer is cached."""
    setup = Story()
    forum, release, runs, story = setup.forum, setup.release, setup.runs, setup.agent
    with anyio.fail_after(5):
        async with forum:
            leader, follower = await setup.two_calls_streaming()
            leader.cancel()
            with pytest.raises(AgentCancelled) as cancelled:
                await leader.messages()
            release.set()
            (answer,) = await follower.messages()
            assert answer.content == "Once upon a time"
            assert "incomplete" not in answer.metadata
            # The leader's end is stored beside the branch, below the CallMessage.
            end = cancelled.value.message
            assert await forum.store.get(end.hash) == end
            assert end.parent == answer.parent
            again = await story.ask("tell").messages()
            assert again == [answer]
    assert runs == ["run"]
    assert forum.statistics().agents_run == 1
    assert await forum.store.verify() == []


async def test_a_leader_whose_caller_is_cancelled_goes_on_for_a_follower_elsewhere() -> None:
    """A leader nested in a call that is cancelled leaves its flight; an identical call made
    at top level, following it, still gets the answer of the one run."""
    setup = Story()
    forum, release, runs, story = setup.forum, setup.release, setup.runs, setup.agent
    inner: list[MessageSequence] = []

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        sequence = story.ask("tell", blank_history=True)
        inner.append(sequence)
        await sequence.messages()

    with anyio.fail_after(5):
        async with forum:
            outer_sequence = outer.ask("go")
            while not inner:
                await anyio.lowlevel.checkpoint()
            assert await first_token(inner[0]) == "Once"
            # The same call: the same request (sent by "outer"), at a new root.
            request = Message(content="tell", sender="outer")
            follower = story.ask(request, blank_history=True)
            assert await first_token(follower) == "Once"
            outer_sequence.cancel()
            with pytest.raises(AgentCancelled):
                await outer_sequence.messages()
            with pytest.raises(AgentCancelled):
                await inner[0].messages()
            release.set()
            (answer,) = await follower.messages()
            assert answer.content == "Once upon a time"
    assert runs == ["run"]
    assert await forum.store.verify() == []


@pytest.mark.parametrize("wait", [True, False], ids=["one-after-the-other", "at-once"])
async def test_the_last_caller_to_leave_cancels_the_run(wait: bool) -> None:
    """Two identical calls (either may lead) leave one after the other: the run is cancelled
    when the second leaves; the second's branch is the run's, cut: the streamed message
    incomplete, then AgentCancelled. The first's end hangs below the CallMessage. Every end
    a consumer sees is stored. Nothing is cached."""
    setup = Story()
    forum, release, runs, story = setup.forum, setup.release, setup.runs, setup.agent
    with anyio.fail_after(5):
        async with forum:
            first, second = await setup.two_calls_streaming()
            first.cancel()
            if wait:
                with pytest.raises(AgentCancelled) as first_end:
                    await first.messages()
            second.cancel()
            with pytest.raises(AgentCancelled) as second_end:
                await second.messages()
            if not wait:
                with pytest.raises(AgentCancelled) as first_end:
                    await first.messages()
            ends = [first_end.value.message, second_end.value.message]
            for end in ends:
                assert await forum.store.get(end.hash) == end
            parents = [await forum.store.get(end.parent or "") for end in ends]
            kinds = [(parent.content, dict(parent.metadata)) for parent in parents]
            # Who leaves last gets the run's end: when both leave at once, either may.
            expected = [("", {}), ("Once", {"incomplete": True})]
            assert kinds == expected if wait else sorted(kinds) == expected
            again = story.ask("tell")
            assert await first_token(again) == "Once"  # it runs again: nothing was cached
            release.set()
            assert [m.content for m in await again.messages()] == ["Once upon a time"]
    assert runs == ["run", "run"]
    assert await forum.store.verify() == []


async def test_statistics_count_calls_runs_hits_and_followers() -> None:
    """Forum.statistics(): calls made, agents run, cache hits and misses, followers, flights
    in progress, messages stored; kept after the forum exits, zero before it ever ran."""
    forum = Forum()
    assert forum.statistics() == ForumStatistics(0, 0, 0, 0, 0, 0, 0, 0)
    release = anyio.Event()

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            await release.wait()
            ctx.respond(f"re: {(await request).content}")

    with anyio.fail_after(5):
        async with forum:
            first, second = echo.ask("a"), echo.ask("a")
            while forum.statistics().flights != 1:
                await anyio.lowlevel.checkpoint()
            running = forum.statistics()
            assert (running.calls_started, running.calls_running) == (2, 2)
            release.set()
            await first.messages()
            await second.messages()
            await echo.ask("a").messages()
    stats = forum.statistics()
    assert stats.calls_started == 3
    assert stats.calls_running == 0
    assert stats.agents_run == 1
    assert (stats.cache_misses, stats.calls_followed, stats.cache_hits) == (1, 1, 1)
    assert stats.flights == 0
    # Each call's request and CallMessage (the same messages: each counts), one answer.
    assert stats.messages_stored == 7
