"""Random multi-agent scenarios give the same message tree on asyncio and on Trio.

A scenario is plain data: a few agents, each with a script of steps (respond with a string
or a streamed message, call an agent with a higher index, fail), and a top-level driver of
asks. :func:`run_scenario` runs one inside ``async with Forum()`` and returns the hashes of
the top-level responses, in order, and of every message in the store, sorted. The tree a
scenario writes depends on nothing but the scenario: not the backend, not the scheduling,
not the run, not ``PYTHONHASHSEED``.

Scenarios are drawn so that their outcome is determined, errors included: a call fed by a
failed sequence is never drawn (its agent would run for an unpredictable while before it is
cancelled), and a script ends at the first step that fails its call.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentforum import (
    Agent,
    AgentError,
    CallMessage,
    ErrorMessage,
    Forum,
    ForwardedMessage,
    InteractionContext,
    Message,
    MessageSequence,
    StreamedMessage,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# -- scenarios: plain data ---------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """Call content: a string request."""

    text: str


@dataclass(frozen=True)
class OwnRequests:
    """Call content: the calling agent's own ``ctx.request_messages``."""


@dataclass(frozen=True)
class Earlier:
    """Call content: the responses of the ``index``-th call made earlier in the same script."""

    index: int


Part: TypeAlias = Text | OwnRequests | Earlier


Mode: TypeAlias = Literal["respond", "await", "tell"]


@dataclass(frozen=True)
class Say:
    """Respond with a fixed string (and metadata)."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stream:
    """Respond with a StreamedMessage of these tokens, from an async generator or by hand."""

    tokens: tuple[str, ...]
    by_hand: bool


@dataclass(frozen=True)
class Ask:
    """Call agent ``target``; ``respond`` with its sequence, ``await`` its messages, or ``tell``.

    The requests are the parts of ``content``, flattened in order.
    """

    target: int
    content: tuple[Part, ...]
    mode: Mode
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fail:
    """Raise ValueError(text)."""

    text: str


Step: TypeAlias = Say | Stream | Ask | Fail


@dataclass(frozen=True)
class TopAsk:
    """A top-level call; ``branch_from`` = (earlier top-level ask, response index modulo)."""

    target: int
    requests: tuple[str, ...]
    branch_from: tuple[int, int] | None = None
    blank_history: bool = False
    start_asking: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """Agents ``a0 .. a{n-1}`` with their scripts, and the top-level asks, in order."""

    scripts: tuple[tuple[Step, ...], ...]
    asks: tuple[TopAsk, ...]


@dataclass(frozen=True)
class Outcome:
    """What a run wrote: top-level responses in order (``error:`` hashes for errors), all."""

    top_level: list[str]
    store: list[str]


# -- running a scenario ------------------------------------------------------------------------


async def _tokens(tokens: tuple[str, ...]) -> AsyncIterator[str]:
    for token in tokens:
        await anyio.lowlevel.checkpoint()
        yield token


def _make_agent(forum: Forum, agents: list[Agent], script: tuple[Step, ...], index: int) -> Agent:
    """Make agent ``a{index}`` of ``forum``, which plays ``script`` (``agents``: all of them)."""

    async def agent(ctx: InteractionContext, **kwargs: object) -> None:
        made: list[MessageSequence] = []
        for step in script:
            if isinstance(step, Say):
                ctx.respond(step.text, **step.metadata)
            elif isinstance(step, Stream):
                if step.by_hand:
                    streamed = StreamedMessage()
                    ctx.respond(streamed)
                    async with streamed:
                        for token in step.tokens:
                            await streamed.send(token)
                else:
                    ctx.respond(StreamedMessage(_tokens(step.tokens)))
            elif isinstance(step, Ask):
                content: list[object] = []
                for part in step.content:
                    if isinstance(part, Text):
                        content.append(part.text)
                    elif isinstance(part, OwnRequests):
                        content.append(ctx.request_messages)
                    else:
                        content.append(made[part.index])
                target = agents[step.target]
                if step.mode == "tell":
                    target.tell(content, **step.kwargs)
                    continue
                inner = target.ask(content, **step.kwargs)
                made.append(inner)
                if step.mode == "respond":
                    ctx.respond(inner)
                else:
                    contents = [message.content for message in await inner.messages()]
                    ctx.respond(f"{ctx.agent.alias} heard {contents}")
            else:
                raise ValueError(step.text)

    return forum.agent(alias=f"a{index}")(agent)


async def _collect(forum: Forum) -> list[str]:
    """Every hash in the store, walking the tree from the roots; checks the tree's rules."""
    store = forum.store
    found: list[str] = []
    pending: list[str | None] = [None]
    while pending:
        node = pending.pop()
        for child in await store.children(node):
            assert child.parent == node
            if isinstance(child, ForwardedMessage):
                original = await store.get(child.original)
                assert not isinstance(original, ForwardedMessage), "a forward of a forward"
                assert child.content == original.content
            if isinstance(child, CallMessage):
                assert (child.sender, child.content) == ("", "")
            found.append(child.hash)
            pending.append(child.hash)
    return sorted(found)


async def run_scenario(scenario: Scenario, *, cache: bool = True) -> Outcome:
    """Run ``scenario`` in a new forum (with the response cache or not); return what it wrote."""
    with anyio.fail_after(10):
        forum = Forum(strict_errors=False, cache=cache)
        agents: list[Agent] = []
        for index, script in enumerate(scenario.scripts):
            agents.append(_make_agent(forum, agents, script, index))
        top_level: list[str] = []
        async with forum:
            sequences: list[MessageSequence] = []
            for top in scenario.asks:
                branch_from: Message | None = None
                if top.branch_from is not None:
                    which, position = top.branch_from
                    answered, _ = await _outcome(sequences[which])
                    if answered:
                        branch_from = answered[position % len(answered)]
                agent = agents[top.target]
                options: dict[str, Any] = {
                    "branch_from": branch_from,
                    "blank_history": top.blank_history,
                    **top.kwargs,
                }
                if top.start_asking:
                    call = agent.start_asking(**options)
                    for request in top.requests:
                        call.send_request(request)
                    sequences.append(call.response_sequence())
                else:
                    sequences.append(agent.ask(list(top.requests), **options))
            for sequence in sequences:
                messages, error = await _outcome(sequence)
                top_level.extend(message.hash for message in messages)
                if error is not None:
                    top_level.append(f"error:{error.hash}")
        assert await forum.store.verify() == []
        return Outcome(top_level, await _collect(forum))


async def _outcome(sequence: MessageSequence) -> tuple[list[Message], ErrorMessage | None]:
    """The messages of ``sequence`` and the ErrorMessage that ended it, if any."""
    messages: list[Message] = []
    iterator = aiter(sequence)
    while True:
        try:
            promise = await anext(iterator)
        except StopAsyncIteration:
            return messages, None
        except AgentError as error:
            return messages, error.message
        messages.append(await promise)


def run_on(backend: str, scenario: Scenario, *, cache: bool = True) -> Outcome:
    """Run ``scenario`` on ``backend`` ("asyncio" in debug mode, or "trio")."""
    options: dict[str, object] = {"debug": True} if backend == "asyncio" else {}
    return anyio.run(
        functools.partial(run_scenario, scenario, cache=cache),
        backend=backend,
        backend_options=options,
    )


# -- drawing scenarios -------------------------------------------------------------------------

#: At most this many calls in one call of an agent, its nested calls included.
CALL_BUDGET = 8
#: At most this many calls in the whole scenario.
SCENARIO_BUDGET = 24

words = st.text(alphabet="abcxyz é", max_size=6)


def _containers(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["k", "ü", "", "z"]), children, max_size=3
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | words,
    _containers,
    max_leaves=5,
)
kwargs_dicts = st.dictionaries(st.sampled_from(["model", "temperature", "n"]), json_values)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Draw a scenario whose outcome is determined (see the module's docstring)."""
    count = draw(st.integers(2, 5))
    scripts: list[tuple[Step, ...]] = [()] * count
    cost = [1] * count  # calls made by one call of the agent, itself included
    fails = [False] * count  # whether a call of the agent ends with an ErrorMessage
    for index in reversed(range(count)):
        steps: list[Step] = []
        made_fails: list[bool] = []  # for each sequence of an earlier call: did it fail?
        for _ in range(draw(st.integers(0, 4))):
            targets = [j for j in range(index + 1, count) if cost[index] + cost[j] <= CALL_BUDGET]
            kinds = ["say"] * 3 + ["stream"] * 3 + ["fail"] + (["ask"] * 7 if targets else [])
            kind = draw(st.sampled_from(kinds))
            if kind == "say":
                metadata = draw(st.dictionaries(st.sampled_from(["lang", "n"]), json_values))
                steps.append(Say(draw(words), metadata))
            elif kind == "stream":
                tokens = draw(st.lists(st.text(alphabet="ab ", max_size=2), max_size=5))
                steps.append(Stream(tuple(tokens), draw(st.booleans())))
            elif kind == "fail":
                steps.append(Fail(draw(words)))
                fails[index] = True
                break
            else:
                target = draw(st.sampled_from(targets))
                usable = [k for k, failed in enumerate(made_fails) if not failed]
                options: list[st.SearchStrategy[Part]] = [
                    words.map(Text),
                    st.just(OwnRequests()),
                ]
                if usable:
                    options.append(st.sampled_from(usable).map(Earlier))
                content = tuple(draw(st.lists(st.one_of(options), min_size=1, max_size=2)))
                mode: Mode = draw(st.sampled_from(["respond", "await", "tell"]))
                steps.append(Ask(target, content, mode, draw(kwargs_dicts)))
                cost[index] += cost[target]
                if mode == "tell":
                    continue
                made_fails.append(fails[target])
                if fails[target]:
                    fails[index] = True
                    break
        scripts[index] = tuple(steps)
    asks: list[TopAsk] = []
    spent = 0
    for number in range(draw(st.integers(1, 4))):
        affordable = [j for j in range(count) if spent + cost[j] <= SCENARIO_BUDGET]
        target = draw(st.sampled_from(affordable))
        spent += cost[target]
        requests = tuple(draw(st.lists(words, min_size=1, max_size=3)))
        start = draw(st.sampled_from(["default", "branch_from", "blank_history"]))
        branch_from = None
        if start == "branch_from" and number > 0:
            branch_from = (draw(st.integers(0, number - 1)), draw(st.integers(0, 9)))
        asks.append(
            TopAsk(
                target,
                requests,
                branch_from=branch_from,
                blank_history=start == "blank_history",
                start_asking=draw(st.booleans()),
                kwargs=draw(kwargs_dicts),
            )
        )
        if spent >= SCENARIO_BUDGET:
            break
    return Scenario(tuple(scripts), tuple(asks))


# -- the properties ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_scenario_hashes_are_backend_independent(scenario: Scenario) -> None:
    """A scenario writes the same hashes, top level and whole store, on asyncio and on Trio."""
    on_asyncio = run_on("asyncio", scenario)
    on_trio = run_on("trio", scenario)
    assert on_asyncio == on_trio


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_scenario_is_deterministic(scenario: Scenario) -> None:
    """Running a scenario twice on the same backend writes the same hashes."""
    assert run_on("trio", scenario) == run_on("trio", scenario)


@settings(max_examples=60, deadline=None)
@given(scenarios())
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_cache_changes_no_hash(backend: str, scenario: Scenario) -> None:
    """With the response cache or without it, a scenario writes the same tree.

    Identical calls are answered from the cache or by a single flight instead of running
    again: since the agents are deterministic, nobody can tell, errors included.
    """
    assert run_on(backend, scenario, cache=True) == run_on(backend, scenario, cache=False)


#: One scenario with every kind of step, for the test across processes.
FIXED_SCENARIO = Scenario(
    scripts=(
        (
            Say("hello", {"lang": "en", "n": [1, 2.5, None]}),
            Ask(1, (OwnRequests(),), "respond", {"model": {"b": 1, "a": [True, "x"]}}),
            Ask(2, (Text("see"), Earlier(0)), "await"),
            Ask(3, (Text("note"),), "tell", {"n": 3}),
        ),
        (
            Stream(("to", "ke", "ns"), by_hand=True),
            Ask(2, (Text("inner"),), "respond", {"temperature": 0.25}),
            Stream(("a", "b"), by_hand=False),
        ),
        (Say("leaf é"), Stream(("x", "y"), by_hand=False)),
        (Say("last words"), Fail("leaf failed")),
    ),
    asks=(
        TopAsk(0, ("one", "two"), kwargs={"model": "m", "n": {"z": 1, "a": 2, "m": 3}}),
        TopAsk(1, ("three",), branch_from=(0, 2), start_asking=True),
        TopAsk(0, ("four",), blank_history=True),
        TopAsk(3, ("five", "six"), branch_from=(1, 1)),
    ),
)


def _outcome_in_subprocess(backend: str, seed: str) -> Outcome:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    result = subprocess.run(
        [sys.executable, __file__, backend],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data = json.loads(result.stdout)
    return Outcome(data["top_level"], data["store"])


@pytest.mark.parametrize(("backend", "seed"), [("asyncio", "0"), ("trio", "4242")])
def test_scenario_hashes_are_process_independent(backend: str, seed: str) -> None:
    """Another process, with another PYTHONHASHSEED, writes the same hashes for a scenario."""
    here = run_on("asyncio", FIXED_SCENARIO)
    assert len(here.top_level) >= 8
    assert any(entry.startswith("error:") for entry in here.top_level)
    assert _outcome_in_subprocess(backend, seed) == here


def _main(backend: str) -> None:
    """Print the outcome of FIXED_SCENARIO on ``backend`` as JSON (for the subprocess test)."""
    outcome = run_on(backend, FIXED_SCENARIO)
    print(json.dumps({"top_level": outcome.top_level, "store": outcome.store}))


if __name__ == "__main__":
    _main(sys.argv[1])
