"""``assert_stateless``: the same request, asked in fresh forums, gets the same responses."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
import hypothesis
from hypothesis import Phase
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from agentforum import (
    Agent,
    AgentError,
    CallMessage,
    ErrorMessage,
    ForwardedMessage,
    JSONValue,
    MemoryStore,
    Message,
)

from ._strategies import requests as requests_strategy

if TYPE_CHECKING:
    from collections.abc import Iterator

    from hypothesis.strategies import SearchStrategy

    from agentforum import Forum

#: Responses are shown in columns of at most this many characters.
_COLUMN: Final = 56


def _in_event_loop() -> bool:
    try:
        anyio.get_current_task()
    except RuntimeError:
        return False
    return True


@contextlib.contextmanager
def _fresh_forum(forum: Forum) -> Iterator[None]:
    """Make ``forum`` a fresh forum for one run: an empty :class:`MemoryStore`, caching off.

    Its own store is put back afterwards. A fresh store holds no cache index, so no run is
    answered from another's; and this is where a forum that can cache responses has its
    caching switched off for the run, so that no call within a run is answered from the
    cache either (agentforum has no response cache yet: there is nothing to switch off).
    """
    previous = forum._swap_store(MemoryStore())
    try:
        yield
    finally:
        forum._swap_store(previous)


async def _responses(
    agent: Agent, request: object, kwargs: Mapping[str, JSONValue]
) -> list[Message]:
    """Ask ``agent`` once, in its forum; return its responses, ending with its error if any."""
    responses: list[Message] = []
    arguments = cast("dict[str, Any]", kwargs)
    async with agent.forum:
        try:
            async for promise in agent.ask(request, **arguments):
                # One at a time: the messages before an error are kept.
                responses.append(await promise)  # noqa: PERF401
        except AgentError as error:
            responses.append(error.message)
    return responses


def _run(
    agent: Agent,
    request: object,
    kwargs: Mapping[str, JSONValue],
    backend: str,
    backend_options: Mapping[str, Any] | None,
) -> list[Message]:
    with _fresh_forum(agent.forum):
        return anyio.run(
            _responses,
            agent,
            request,
            kwargs,
            backend=backend,
            backend_options=dict(backend_options or {}),
        )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _describe(message: Message) -> str:
    """One line for a message: short hash, kind, sender, content (or what stands for it)."""
    if isinstance(message, CallMessage):
        what = f"call -> {message.receiver}"
        if message.kwargs:
            what += f" {dict(message.kwargs)!r}"
    elif isinstance(message, ErrorMessage):
        what = f"error {message.sender} {message.error_type}: {message.content!r}"
    elif isinstance(message, ForwardedMessage):
        what = f"forward {message.sender} {message.content!r} (of {message.original[:6]})"
    else:
        what = f"message {message.sender} {message.content!r}"
    if message.metadata:
        what += f" metadata={dict(message.metadata)!r}"
    return f"{message.hash[:10]} {what}"


def _describe_request(request: object, indent: str = "  ") -> list[str]:
    if isinstance(request, str):
        return [f"{indent}{request!r}"]
    if isinstance(request, Message):
        return [f"{indent}{_describe(request)}"]
    if isinstance(request, (list, tuple)):
        if not request:
            return [f"{indent}[] (no request)"]
        lines = [f"{indent}["]
        for item in request:
            lines.extend(_describe_request(item, indent + "    "))
        lines.append(f"{indent}]")
        return lines
    return [f"{indent}{request!r}"]


def _report(
    agent: Agent,
    request: object,
    kwargs: Mapping[str, JSONValue],
    first: list[Message],
    second: list[Message],
) -> str:
    left = [_clip(_describe(message), _COLUMN) for message in first]
    right = [_clip(_describe(message), _COLUMN) for message in second]
    width = max([len("first run"), *map(len, left)])
    rows = [f"     {'first run':<{width}} | second run"]
    for index in range(max(len(first), len(second))):
        one = left[index] if index < len(first) else "(no response)"
        two = right[index] if index < len(second) else "(no response)"
        same = index < len(first) and index < len(second) and first[index] == second[index]
        rows.append(f"{' ' if same else '*'} {index:>2} {one:<{width}} | {two}")
    lines = [
        f"agent {agent.alias!r} is not stateless: the same request, asked in two fresh "
        "forums, got different responses.",
        "",
        "request:",
        *_describe_request(request),
    ]
    if kwargs:
        lines.append(f"kwargs: {dict(kwargs)!r}")
    lines += [
        "",
        "responses (* marks those that differ; hash, kind, sender, content):",
        *rows,
    ]
    return "\n".join(lines)


def assert_stateless(
    agent: Agent,
    requests: SearchStrategy[Any] | None = None,
    *,
    kwargs: Mapping[str, JSONValue] | SearchStrategy[Mapping[str, JSONValue]] | None = None,
    backend: str = "asyncio",
    backend_options: Mapping[str, Any] | None = None,
    max_examples: int | None = None,
) -> None:
    """Check that ``agent`` answers the same request with the same responses, every time.

    A property test run by Hypothesis: for each request drawn from ``requests``, the agent
    is asked twice, each time in a fresh forum, and the hashes of its two response
    sequences must be equal. Each run is made against a fresh :class:`MemoryStore` with
    caching off, so no answer of one run can come from the other, or from an earlier run.
    The responses include the :class:`ErrorMessage` that ends a failed call, so an agent
    that always fails the same way passes; an error that no consumer observed (with
    ``strict_errors``) fails the check.

    A "fresh forum" is the agent's own forum, given an empty store for the run (and its
    own store back afterwards): the agent's function, and the other agents of the forum it
    calls, run as they are, closures and all. Whatever state they keep in Python objects
    (a counter, a cache, a list of what they saw) is what the check looks for.

    A failure raises :exc:`AssertionError` for the simplest request Hypothesis found
    (shrunk), showing it, and the two response sequences side by side: hash, kind, sender
    and content of each message.

    This function starts an event loop per run (``anyio.run``): call it from a plain
    ``def`` test, not from inside a running event loop (an ``async def`` test).

    Args:
        agent: The agent to check; its forum must not be running.
        requests: A strategy for the requests (the ``content`` of ``agent.ask``); default:
            :func:`~agentforum.testing.requests`.
        kwargs: The call's keyword arguments: a mapping, or a strategy for mappings
            (default: none).
        backend: The AnyIO backend to run on: ``"asyncio"`` or ``"trio"``.
        backend_options: Options for the backend (``anyio.run``'s ``backend_options``).
        max_examples: How many requests to try (default: the current Hypothesis settings
            profile's, 100 unless changed). The other settings come from that profile too,
            but for ``deadline`` (none) and ``database`` (none: the examples tried are
            drawn afresh each time, not replayed from an earlier failure).

    Raises:
        AssertionError: two runs of a request got different responses.
        RuntimeError: the agent's forum is running, or an event loop runs in this thread.
    """
    if agent.forum.is_running:
        raise RuntimeError(
            f"assert_stateless() runs agent {agent.alias!r} in its forum with a fresh store "
            "for each run: call it while the forum is not running (outside `async with forum:`)"
        )
    if _in_event_loop():
        raise RuntimeError(
            "assert_stateless() starts an event loop for each run: call it from a plain "
            "`def` test or function, not from inside a running event loop"
        )
    request_strategy = requests if requests is not None else requests_strategy()
    kwargs_strategy: SearchStrategy[Mapping[str, JSONValue]] = (
        st.just(dict(kwargs or {})) if kwargs is None or isinstance(kwargs, Mapping) else kwargs
    )
    reports: list[str] = []

    # No explain phase: the lines it would name as "run only by failing cases" are the
    # event loop's and the forum's, not the agent's.
    phases = [phase for phase in hypothesis.settings().phases if phase is not Phase.explain]
    overrides: dict[str, Any] = {"deadline": None, "database": None, "phases": phases}
    if max_examples is not None:
        overrides["max_examples"] = max_examples

    @hypothesis.settings(**overrides)
    @hypothesis.given(request=request_strategy, kwargs=kwargs_strategy)
    def same_request_same_responses(request: object, kwargs: Mapping[str, JSONValue]) -> None:
        __tracebackhide__ = True
        first = _run(agent, request, kwargs, backend, backend_options)
        second = _run(agent, request, kwargs, backend, backend_options)
        if [m.hash for m in first] != [m.hash for m in second]:
            reports.append(_report(agent, request, kwargs, first, second))
            raise AssertionError(reports[-1])

    __tracebackhide__ = True
    try:
        same_request_same_responses()
    except AssertionError as failure:
        if not (failure.args and failure.args[0] in reports):
            raise
        # Ours: the report says it all (the request, the kwargs, both runs); raised here,
        # with no traceback through Hypothesis and the event loop, the test shows just it.
        raise AssertionError(failure.args[0]) from None
    except Flaky:
        # The shrunk request failed, then passed when Hypothesis ran it again: state the
        # agent kept made the later runs agree. It is not stateless all the same.
        if not reports:
            raise
        raise AssertionError(
            f"{reports[-1]}\n\n(Asked again, this request got equal responses: the state "
            "the agent keeps changes its answers only some of the time.)"
        ) from None
