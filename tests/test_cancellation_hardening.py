"""Cancellation and errors at the edges (issue 14).

- ``async with forum:`` raises the body's own exception, not a group around it, unless
  agent errors nobody observed join it.
- A message streamed from an async iterable (an SDK's stream) and cut by a cancellation is
  recorded ``incomplete``, whichever way the call was cancelled, on both stores.
- A call that ends in ``AgentCancelled`` because a call nested in it was cancelled is a
  cancellation too: never raised when the forum exits.
- A sync tool whose call is cancelled while its thread runs gives no result, on both
  backends alike.
"""

from __future__ import annotations

import sys
import threading
import traceback
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import openai
import pytest

from agentforum import (
    Agent,
    AgentCancelled,
    AgentError,
    CallMessage,
    ErrorMessage,
    Forum,
    InteractionContext,
    Message,
    MessageSequence,
    StreamedMessage,
)
from agentforum.llms.openai import openai_agent
from llm_server import SDK_GENERATOR_WARNING, Stream, ToolCall, calling, chat_server
from test_cancellation import drain
from test_errors import Stop, leaves

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

if TYPE_CHECKING:
    import pathlib
    from collections.abc import AsyncIterable, AsyncIterator, Callable


#: Seconds any one test may take before it fails instead of hanging.
LIMIT = 5


# -- What leaves `async with forum:` ----------------------------------------------------------


def failing_agent(forum: Forum) -> Agent:
    """Register and return ``failing``: it raises ValueError("broken")."""

    @forum.agent
    async def failing(ctx: InteractionContext) -> None:
        raise ValueError("broken")

    return failing


@pytest.mark.anyio
async def test_except_agent_error_around_the_forum_catches_the_bodys_agent_error() -> None:
    """``except AgentError`` around ``async with forum:`` catches ``await seq.last()``'s error.

    The task group inside the forum is an implementation detail: when the body raised and
    nothing else failed, its exception leaves the block itself, not in a group.
    """
    forum = Forum()
    failing = failing_agent(forum)
    caught: list[AgentError] = []
    with anyio.fail_after(LIMIT):
        try:
            async with forum:
                await failing.ask("q").last()
        except AgentError as error:
            caught.append(error)
    [agent_error] = caught
    assert type(agent_error) is AgentError
    assert agent_error.message.error_type == "ValueError"
    assert not forum.is_running


def raise_key_error() -> None:
    """Raise KeyError("body") while handling a LookupError: a context the user made."""
    try:
        raise LookupError("first")
    except LookupError:
        raise KeyError("body")  # noqa: B904 - the implicit context is what is checked


def interrupt() -> None:
    """Raise KeyboardInterrupt, as Ctrl-C does."""
    raise KeyboardInterrupt


async def fail_unobserved_then(forum: Forum, body: Callable[[], None], *, tell: bool) -> None:
    """In ``async with forum:``, let ``failing`` fail unobserved (if ``tell``), then ``body()``."""
    failing = failing_agent(forum)
    async with forum:
        if tell:
            failing.tell("nobody listens")
            await anyio.wait_all_tasks_blocked()
        body()


@pytest.mark.anyio
@pytest.mark.parametrize("strict_errors", [True, False])
async def test_the_bodys_exception_leaves_the_forum_as_the_body_raised_it(
    strict_errors: bool,
) -> None:
    """The body's exception keeps its own traceback and context, nothing of the forum's.

    Its traceback goes from this test to the ``raise``, through no frame of AnyIO, Trio,
    asyncio or the forum; its ``__context__`` is the exception being handled where it was
    raised. With ``strict_errors=False``, an unobserved agent error does not change that.
    """
    forum = Forum(strict_errors=strict_errors)
    with anyio.fail_after(LIMIT), pytest.raises(KeyError) as info:
        await fail_unobserved_then(forum, raise_key_error, tell=not strict_errors)
    error = info.value
    assert isinstance(error.__context__, LookupError)
    assert error.__cause__ is None
    frames = traceback.extract_tb(error.__traceback__)
    assert [frame.name for frame in frames] == [
        "test_the_bodys_exception_leaves_the_forum_as_the_body_raised_it",
        "fail_unobserved_then",
        "raise_key_error",
    ]


@pytest.mark.anyio
async def test_a_body_exception_and_unobserved_agent_errors_leave_in_one_group() -> None:
    """The body raised and an agent error nobody observed: both leave, in one group.

    The body's exception first, then the agent errors in the order they were recorded.
    """
    forum = Forum()
    with anyio.fail_after(LIMIT), pytest.raises(ExceptionGroup) as info:
        await fail_unobserved_then(forum, raise_key_error, tell=True)
    group = info.value
    assert str(group).startswith("the body raised, and 1 agent error(s) that no consumer observed")
    assert [type(error) for error in group.exceptions] == [KeyError, AgentError]
    body, agent_error = group.exceptions
    assert body.args == ("body",)
    assert isinstance(agent_error, AgentError)
    assert agent_error.message.content == "broken"


@pytest.mark.anyio
async def test_a_keyboard_interrupt_in_the_body_leaves_alone_and_unwrapped() -> None:
    """A KeyboardInterrupt (any BaseException) from the body leaves as itself, never grouped.

    Unobserved agent errors stay in the tree: Ctrl-C is not turned into an error report.
    """
    forum = Forum()
    with anyio.fail_after(LIMIT), pytest.raises(KeyboardInterrupt):
        await fail_unobserved_then(forum, interrupt, tell=True)


@pytest.mark.anyio
async def test_a_body_exception_and_a_failed_forum_task_leave_in_the_task_groups_group() -> None:
    """When a task of the forum failed too, the group holds both, as the task groups made it.

    (The agent's BaseException comes through its call's task group: a group inside.)
    """
    forum = Forum()
    stopping = anyio.Event()

    @forum.agent
    async def stopper(ctx: InteractionContext) -> None:
        try:
            stopping.set()
            await anyio.sleep_forever()
        finally:
            raise Stop  # while the forum cancels it: a BaseException of its own

    async def run() -> None:
        async with forum:
            stopper.tell("q")
            await stopping.wait()
            raise KeyError("body")

    with anyio.fail_after(LIMIT), pytest.raises(BaseExceptionGroup) as info:
        await run()
    assert sorted(type(error).__name__ for error in leaves(info.value)) == ["KeyError", "Stop"]


@pytest.mark.anyio
async def test_an_outer_cancel_scope_still_cancels_the_forum_quietly() -> None:
    """A cancelled scope around the forum is caught by it; no agent error replaces it."""
    forum = Forum()
    failing = failing_agent(forum)
    with anyio.fail_after(LIMIT), anyio.CancelScope() as scope:
        async with forum:
            failing.tell("nobody listens")
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught


# -- A stream from an iterable, cut by a cancellation -----------------------------------------


def make_forum(store: str, tmp_path: pathlib.Path) -> Forum:
    """A forum on a new MemoryStore, or on a new SQLite file in ``tmp_path``."""
    return Forum(tmp_path / "forum.db") if store == "sqlite" else Forum()


class SDKStream:
    """An SDK-like stream: ``__aiter__``/``__anext__`` on an object, no ``aclose``.

    It gives its tokens, sets ``sent``, then waits for a next chunk that never comes.
    """

    def __init__(self, tokens: list[str], sent: anyio.Event) -> None:
        self._tokens = iter(tokens)
        self._sent = sent

    def __aiter__(self) -> SDKStream:
        return self

    async def __anext__(self) -> str:
        await anyio.lowlevel.checkpoint()
        for token in self._tokens:
            return token
        self._sent.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def generator_stream(tokens: list[str], sent: anyio.Event) -> AsyncIterator[str]:
    """An async generator that gives its tokens, sets ``sent``, then waits forever."""
    for token in tokens:
        yield token
    sent.set()
    await anyio.sleep_forever()


SOURCES: dict[str, Callable[[list[str], anyio.Event], AsyncIterable[str]]] = {
    "async-generator": generator_stream,
    "sdk-stream": SDKStream,
}


class Leaving(Exception):
    """The body of ``async with forum:`` leaves with it: the forum cancels its calls."""


async def cut_stream(forum: Forum, source: str, route: str) -> list[Message]:
    """Cancel a call while its message streams from ``source``; return the call's branch.

    ``route`` is how the call is cancelled: ``seq.cancel()`` on it ("sequence"), on the
    call it is nested in ("caller"), a cancelled scope around ``async with forum:``
    ("scope"), or the forum cancelling its calls as its body leaves with an exception
    ("forum").
    """
    sent = anyio.Event()
    sequences: list[MessageSequence] = []

    @forum.agent
    async def talker(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(SOURCES[source](["Hel", "lo"], sent), model="m"))

    @forum.agent
    async def caller(ctx: InteractionContext) -> None:
        inner = talker.ask(ctx.request_messages)
        sequences.append(inner)
        ctx.respond(inner)

    with anyio.fail_after(LIMIT):
        with anyio.CancelScope() as scope:
            try:
                async with forum:
                    outer = (caller if route == "caller" else talker).ask("hi")
                    if route != "caller":
                        sequences.append(outer)
                    await sent.wait()
                    if route in ("sequence", "caller"):
                        outer.cancel()
                    elif route == "scope":
                        scope.cancel()
                    else:
                        raise Leaving
            except Leaving:
                assert route == "forum"
        assert scope.cancelled_caught == (route == "scope")
        _, error = await drain(sequences[0])
        async with forum:  # reopens the SQLite file, to read what was stored
            branch = await forum.history(error.message)
    return branch


@pytest.mark.anyio
@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("route", ["sequence", "caller", "scope", "forum"])
async def test_a_stream_from_an_iterable_cut_by_cancellation_is_incomplete(
    route: str, source: str, store: str, tmp_path: pathlib.Path
) -> None:
    """A message streamed from an async iterable and cut by a cancellation is incomplete.

    However the call is cancelled, the message keeps the tokens it had, with its own
    metadata and ``incomplete: True``, and the branch ends with AgentCancelled after it.
    """
    forum = make_forum(store, tmp_path)
    branch = await cut_stream(forum, source, route)
    cut, end = branch[-2:]
    assert (cut.content, dict(cut.metadata)) == ("Hello", {"model": "m", "incomplete": True})
    assert isinstance(end, ErrorMessage)
    assert (end.error_type, end.parent, end.sender) == (
        "agentforum.AgentCancelled",
        cut.hash,
        "talker",
    )


# -- A call whose nested call was cancelled ---------------------------------------------------


class Nested:
    """``parent``, whose call of ``inner`` (which sleeps until cancelled) is cancelled.

    ``parent`` awaits the messages of its call of ``inner``, or responds with them
    (``uses``), and does not handle the AgentCancelled this gives it.
    """

    def __init__(self, forum: Forum, uses: str) -> None:
        self.started = anyio.Event()
        self.sequences: list[MessageSequence] = []

        @forum.agent
        async def inner(ctx: InteractionContext) -> None:
            self.started.set()
            await anyio.sleep_forever()

        @forum.agent
        async def parent(ctx: InteractionContext) -> None:
            await self.use(ctx, uses)

        self.inner = inner
        self.parent = parent

    async def use(self, ctx: InteractionContext, uses: str) -> None:
        """Call ``inner``, then await its messages or respond with its sequence."""
        sequence = self.inner.ask("sub")
        self.sequences.append(sequence)
        if uses == "awaits":
            await sequence.messages()
        else:
            ctx.respond(sequence)

    async def cancel(self) -> None:
        """Cancel the call of ``inner`` once it runs."""
        await self.started.wait()
        self.sequences[0].cancel()


async def errors_in(forum: Forum) -> dict[str, ErrorMessage]:
    """Every ErrorMessage of the forum's tree, by sender (one each, in these tests)."""
    found: dict[str, ErrorMessage] = {}
    pending: list[str | None] = [None]
    while pending:
        for message in await forum.store.children(pending.pop()):
            if isinstance(message, ErrorMessage):
                assert message.sender not in found
                found[message.sender] = message
            pending.append(message.hash)
    return found


@pytest.mark.anyio
@pytest.mark.parametrize("started", ["tell", "ask"])
@pytest.mark.parametrize("uses", ["awaits", "responds"])
async def test_a_call_ended_by_a_nested_cancellation_is_not_raised_at_exit(
    uses: str, started: str
) -> None:
    """An agent whose nested call is cancelled while it waits on it ends cancelled, quietly.

    The agent awaits the nested call's messages, or responds with its sequence, and does
    not handle the AgentCancelled it gets. Its branch ends with an ``AgentCancelled``
    ErrorMessage of its own (the inner content and type kept, as for any error that
    propagates), which is a cancellation, not an agent error: the forum exits without
    raising, whether the agent was told or asked and nobody read its responses.
    """
    forum = Forum()
    nested = Nested(forum, uses)
    with anyio.fail_after(LIMIT):
        async with forum:
            if started == "tell":
                nested.parent.tell("question")
            else:
                nested.parent.ask("question")  # nobody reads its responses
            await nested.cancel()
    errors = await errors_in(forum)
    assert sorted(errors) == ["inner", "parent"]
    for error in errors.values():
        assert (error.error_type, error.content) == (
            "agentforum.AgentCancelled",
            "the call was cancelled",
        )


@pytest.mark.anyio
@pytest.mark.parametrize("uses", ["awaits", "responds"])
async def test_the_consumer_of_a_call_ended_by_a_nested_cancellation_gets_agent_cancelled(
    uses: str,
) -> None:
    """Its consumer gets AgentCancelled, caused by the AgentCancelled the agent did not handle."""
    forum = Forum()
    nested = Nested(forum, uses)
    with anyio.fail_after(LIMIT):
        async with forum:
            sequence = nested.parent.ask("question")
            await nested.cancel()
            _, error = await drain(sequence)
    assert error.message.sender == "parent"
    assert isinstance(error.__cause__, AgentCancelled)
    assert error.__cause__.message.sender == "inner"


@pytest.mark.anyio
async def test_an_error_raised_while_handling_a_nested_cancellation_is_still_raised() -> None:
    """An agent that turns the nested AgentCancelled into an error of its own fails for real.

    Its error is an agent error like any other: raised when the forum exits if nobody
    observed it.
    """
    forum = Forum()
    nested = Nested(forum, "awaits")

    @forum.agent
    async def wrapper(ctx: InteractionContext) -> None:
        try:
            await nested.use(ctx, "awaits")
        except AgentCancelled as exc:
            raise LookupError("no answer from inner") from exc

    with (
        anyio.fail_after(LIMIT),
        pytest.RaisesGroup(pytest.RaisesExc(AgentError, match="no answer from inner")),
    ):
        async with forum:
            wrapper.tell("question")
            await nested.cancel()


# -- A sync tool running when its call is cancelled -------------------------------------------

LOOKUP = ToolCall("call_1", "slow_lookup", '{"city": "Paris"}')


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[list[int], openai.AsyncOpenAI]]:
    """A loopback server that calls ``slow_lookup``, and a client of it.

    Yields the list the number of requests the server got is appended to on the way out.
    """
    asked: list[int] = []
    async with (
        chat_server() as server,
        openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as client,
    ):
        server.reply(calling(LOOKUP), Stream(["Sunny."]))
        yield asked, client
        asked.append(len(server.requests))


async def cancel_while_a_sync_tool_runs(route: str) -> tuple[list[Message], int]:
    """Cancel a model's call while its sync tool's thread runs; return its branch, requests.

    The tool tells the event loop it runs, then waits until the call has been cancelled:
    the order is fixed by events, never by time.
    """
    running = anyio.Event()
    release = threading.Event()

    def slow_lookup(city: str) -> str:
        """Look the weather up, slowly."""
        anyio.from_thread.run_sync(running.set)
        release.wait()
        return f"sunny in {city}"

    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (asked, client):
            gpt = forum.agent(
                openai_agent(model="gpt-test", client=client, tools=[slow_lookup]), alias="gpt"
            )
            with anyio.CancelScope() as scope:
                async with forum:
                    sequence = gpt.ask("Weather in Paris?")
                    try:
                        await running.wait()
                        if route == "sequence":
                            sequence.cancel()
                        else:
                            scope.cancel()
                    finally:
                        release.set()  # the thread returns after the cancellation
            _, error = await drain(sequence)
        branch = await forum.history(error.message, include_calls=True)
    return branch, asked[0]


@pytest.mark.filterwarnings(f"ignore:{SDK_GENERATOR_WARNING}:ResourceWarning")
@pytest.mark.parametrize("route", ["sequence", "scope"])
def test_a_sync_tool_cancelled_while_it_runs_gives_no_result_on_either_backend(
    route: str,
) -> None:
    """The same program records the same tree on asyncio and Trio: no tool result.

    The tool's thread runs to its end (the call waits for it), but its result comes after
    the cancellation: it is not recorded. The branch is the question, the call, the turn
    that called the tool and the AgentCancelled end; the model is asked once.
    """
    trees = {}
    for backend, options in (("asyncio", {"debug": True}), ("trio", {})):
        branch, requests = anyio.run(
            cancel_while_a_sync_tool_runs, route, backend=backend, backend_options=options
        )
        assert requests == 1
        assert [type(message) for message in branch] == [
            Message,
            CallMessage,
            Message,
            ErrorMessage,
        ], backend
        assert "tool_calls" in branch[2].metadata
        trees[backend] = [message.hash for message in branch]
    assert trees["asyncio"] == trees["trio"]
