"""Structured concurrency under load: many calls at once, and cancellation at any point."""

from __future__ import annotations

import contextlib
import gc
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from agentforum import (
    Agent,
    AgentCancelled,
    AgentError,
    ErrorMessage,
    Forum,
    InteractionContext,
    MessageSequence,
    StreamedMessage,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both backends; asyncio without its debug mode, which slows 10,000 calls fourfold.

    The rest of the suite runs asyncio in debug mode, which catches what it is for (a
    coroutine never awaited, a callback that blocks); here it would only add minutes.
    """
    return request.param  # type: ignore[no-any-return]


CALLS = 10_000
IDENTICAL_CALLS = 1_000

#: The names the forum gives its tasks (see Agent._start and Call).
FORUM_TASKS = ("call of ", "agent ", "flight of ")


def forum_tasks() -> list[str]:
    """The names of the forum's tasks still running."""
    return [task.name for task in anyio.get_running_tasks() if task.name.startswith(FORUM_TASKS)]


async def test_ten_thousand_concurrent_calls_each_get_their_answer() -> None:
    forum = Forum()

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for promise in ctx.request_messages:
            ctx.respond(f"echo {(await promise).content}")

    with anyio.fail_after(120):
        async with forum:
            sequences = [echo.ask(f"q{index}") for index in range(CALLS)]
            answers = [await sequence.last() for sequence in sequences]
    assert [answer.content for answer in answers] == [f"echo q{index}" for index in range(CALLS)]
    assert forum_tasks() == []


async def test_identical_concurrent_calls_run_the_agent_once() -> None:
    """A thousand identical calls at once: one run, one answer for all (single flight).

    A thousand, not ten thousand: each follower costs what any call costs (the test above
    measures that), and this one only has to show that they all follow one flight.
    """
    forum = Forum()
    runs = 0

    @forum.agent
    async def answer(ctx: InteractionContext) -> None:
        nonlocal runs
        runs += 1
        ctx.respond(StreamedMessage(iter(["forty", "-", "two"])))

    with anyio.fail_after(120):
        async with forum:
            sequences = [answer.ask("the question") for _ in range(IDENTICAL_CALLS)]
            answers = {await sequence.last() for sequence in sequences}
    assert runs == 1
    assert [message.content for message in answers] == ["forty-two"]
    assert forum_tasks() == []


# -- cancellation at any point --------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """Respond with a message streamed by hand, ``tokens`` tokens long."""

    tokens: int


@dataclass(frozen=True)
class Call:
    """Call agent ``target``; ``respond`` with its responses, or ``await`` them first."""

    target: int
    mode: Literal["respond", "await"]


@dataclass(frozen=True)
class CancelScenario:
    """Agents with scripts, and where to cancel: which call, after how many top tokens."""

    scripts: tuple[tuple[Stream | Call, ...], ...]
    cancel_call: int
    after_tokens: int


@st.composite
def cancel_scenarios(draw: st.DrawFn) -> CancelScenario:
    count = draw(st.integers(1, 4))
    scripts: list[tuple[Stream | Call, ...]] = []
    for index in range(count):
        steps: list[Stream | Call] = []
        for _ in range(draw(st.integers(1, 3))):
            if index + 1 < count and draw(st.booleans()):
                target = draw(st.integers(index + 1, count - 1))
                steps.append(Call(target, draw(st.sampled_from(["respond", "await"]))))
            else:
                steps.append(Stream(draw(st.integers(0, 5))))
        scripts.append(tuple(steps))
    return CancelScenario(tuple(scripts), draw(st.integers(0, 8)), draw(st.integers(1, 10)))


class Recorder:
    """What ran, in order: agent code of a call, ``finally`` blocks, consumers' AgentCancelled."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.parents: dict[int, int | None] = {0: None}
        self.sequences: dict[int, MessageSequence] = {}
        self.started: set[int] = set()
        self.ids = itertools.count(1)

    def subtree(self, root: int) -> set[int]:
        found = {root}
        for call in sorted(self.parents):
            if self.parents[call] in found:
                found.add(call)
        return found

    def ancestors(self, call: int) -> set[int]:
        found = {call}
        parent = self.parents[call]
        while parent is not None:
            found.add(parent)
            parent = self.parents[parent]
        return found


def make_agents(forum: Forum, scenario: CancelScenario, recorder: Recorder) -> list[Agent]:
    agents: list[Agent] = []
    for index, script in enumerate(scenario.scripts):

        async def run(
            ctx: InteractionContext, *, id: int, script: tuple[Stream | Call, ...] = script
        ) -> None:
            recorder.started.add(id)
            recorder.events.append(("code", id))
            try:
                for step in script:
                    if isinstance(step, Stream):
                        streamed = StreamedMessage()
                        ctx.respond(streamed)
                        async with streamed:
                            for token in range(step.tokens):
                                recorder.events.append(("code", id))
                                await streamed.send(f"{id}.{token} ")
                        continue
                    child = next(recorder.ids)
                    recorder.parents[child] = id
                    sequence = agents[step.target].ask(f"from {id}", id=child)
                    recorder.sequences[child] = sequence
                    if step.mode == "respond":
                        ctx.respond(sequence)
                        continue
                    try:
                        messages = await sequence.messages()
                    except AgentCancelled:
                        recorder.events.append(("seen", child))
                        raise
                    recorder.events.append(("code", id))
                    ctx.respond(f"{id} heard {len(messages)}")
            finally:
                recorder.events.append(("finally", id))

        agents.append(forum.agent(alias=f"a{index}")(run))
    return agents


@settings(max_examples=100, deadline=None)
@given(scenario=cancel_scenarios())
# Found once by Hypothesis: calls still running when the top call has ended ask new calls
# while the test waits for the sequences it knows (its loop over them then broke).
@example(
    scenario=CancelScenario(
        scripts=(
            (Stream(tokens=3), Call(target=1, mode="respond"), Call(target=1, mode="respond")),
            (Call(target=2, mode="await"), Call(target=2, mode="respond"), Stream(tokens=0)),
            (Stream(tokens=0),),
        ),
        cancel_call=1,
        after_tokens=3,
    )
)
async def test_cancellation_at_any_point_leaves_a_sound_forum(scenario: CancelScenario) -> None:
    """For all scenarios and cancellation points: nothing runs on, nothing is lost.

    - after a consumer of the cancelled call (or of a call it is nested in) has seen
      AgentCancelled, no code of the cancelled call or of a call nested in it runs;
    - every agent function that started ran its ``finally``;
    - the cancelled call's sequence ends normally (it had ended) or with AgentCancelled;
    - no task of the forum is left running, and the store verifies.
    """
    forum = Forum(strict_errors=False)
    recorder = Recorder()
    agents = make_agents(forum, scenario, recorder)
    cancelled: int | None = None
    top_error: AgentError | None = None
    with anyio.fail_after(10):
        async with forum:
            top = agents[0].ask("go", id=0)
            recorder.sequences[0] = top
            seen = 0

            def cancel() -> int:
                known = sorted(recorder.sequences)
                target = known[scenario.cancel_call % len(known)]
                recorder.sequences[target].cancel()
                return target

            try:
                async for promise in top:
                    async for _ in promise:
                        seen += 1
                        if seen == scenario.after_tokens:
                            cancelled = cancel()
            except AgentError as error:
                top_error = error
                if isinstance(error, AgentCancelled):
                    recorder.events.append(("seen", 0))
            if cancelled is None:
                cancelled = cancel()  # after the end: cancels what still runs, if anything
            # Every sequence to its end, those that calls still running ask meanwhile too.
            drained: set[int] = set()
            while waiting := sorted(recorder.sequences.keys() - drained):
                for call in waiting:
                    drained.add(call)
                    with contextlib.suppress(AgentCancelled):
                        await recorder.sequences[call].messages()
    event(f"cancelled {'the top call' if cancelled == 0 else 'a nested call'}")
    event(f"the top call ended {type(top_error).__name__ if top_error else 'with its answer'}")
    assert forum_tasks() == []
    assert await forum.store.verify() == []
    # Every agent function that started has finished, its finally included.
    assert {call for kind, call in recorder.events if kind == "finally"} == recorder.started
    # Nothing of the cancelled subtree ran after one of its consumers saw AgentCancelled.
    subtree = recorder.subtree(cancelled)
    consumers = recorder.ancestors(cancelled)
    seen_at = [
        position
        for position, (kind, call) in enumerate(recorder.events)
        if kind == "seen" and call in consumers
    ]
    if seen_at:
        late = [
            event
            for event in recorder.events[seen_at[0] :]
            if event[0] != "seen" and event[1] in subtree
        ]
        assert late == []
    # The top-level consumer saw either a complete answer or a cancellation (no other error).
    if top_error is not None:
        assert isinstance(top_error, AgentCancelled)
        end = top_error.message
        assert isinstance(end, ErrorMessage)
        assert await forum.store.get(end.hash) == end


@contextlib.contextmanager
def _without_the_cyclic_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("through", ["the cache", "no cache", "a nested call"])
async def test_a_finished_call_is_freed_without_the_cyclic_collector(through: str) -> None:
    """A call that has ended, and whose sequence nobody holds, is freed at once: it keeps no
    reference cycle (its writer, its request cursor) for the cyclic garbage collector to
    find, which, with thousands of calls in flight, would trace them all at each collection.
    """
    from agentforum._runtime._call import Call

    forum = Forum()

    async def echo_function(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")

    echo = forum.agent(echo_function, alias="echo", cache=through != "no cache")

    @forum.agent
    async def relay(ctx: InteractionContext) -> None:
        ctx.respond(echo.ask(ctx.request_messages))

    with _without_the_cyclic_collector():
        # Calls that earlier tests left alive (in this worker) are not this test's.
        before = {id(thing) for thing in gc.get_objects() if type(thing) is Call}
        async with forum:
            for index in range(5):
                sequence = (relay if through == "a nested call" else echo).ask(f"q{index}")
                assert (await sequence.last()).content == f"re: q{index}"
            del sequence
        alive = [
            thing for thing in gc.get_objects() if type(thing) is Call and id(thing) not in before
        ]
    assert alive == []
