"""OpenTelemetry traces (agentforum.otel): the spans of calls and of model requests.

With the real OpenTelemetry SDK: each test instruments its forum with a tracer provider of
its own whose spans go, as each ends, to an in-memory exporter (a simple span processor);
the test then reads them. On asyncio and on Trio, as every async test here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import anyio
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import anthropic_server
from agentforum import (
    AgentCancelled,
    AgentError,
    CallMessage,
    Forum,
    InteractionContext,
    MemoryStore,
    StreamedMessage,
)
from agentforum.llms import ModelRequest, model_request
from agentforum.llms.anthropic import anthropic_agent
from agentforum.llms.openai import openai_agent
from agentforum.otel import TRACER_NAME, instrument, uninstrument
from llm_server import SDK_GENERATOR_WARNING, Cut, Stream, chat_server
from test_claims import Pair

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

#: Seconds any one test may take before it fails instead of hanging.
LIMIT = 10


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def traced_forum(provider: TracerProvider, **options: Any) -> Forum:
    forum = Forum(**options)
    instrument(forum, tracer_provider=provider)
    return forum


def calls_of(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name.startswith("invoke_")]


def by_agent(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        assert span.attributes is not None
        found.setdefault(str(span.attributes["gen_ai.agent.name"]), []).append(span)
    return found


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


# -- the spans of calls ------------------------------------------------------------------------


async def test_nested_calls_nest_their_spans_three_levels_deep(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """top asks middle twice (concurrently), each middle asks leaf: one trace, nested as
    the calls are, whatever span the forum's task group would have handed down; each span
    names its agent and the hash of its CallMessage, and ended cleanly."""
    forum = traced_forum(provider, cache=False)

    @forum.agent
    async def leaf(ctx: InteractionContext) -> None:
        ctx.respond("leaf")

    @forum.agent
    async def middle(ctx: InteractionContext) -> None:
        ctx.respond(leaf.ask("down"))

    @forum.agent
    async def top(ctx: InteractionContext) -> None:
        first, second = middle.ask("one"), middle.ask("two")
        ctx.respond(first)
        ctx.respond(second)

    outer = provider.get_tracer("test").start_span("the application's span")
    with anyio.fail_after(LIMIT), trace.use_span(outer, end_on_exit=True):
        async with forum:
            await top.ask("go").messages()
    spans = by_agent(calls_of(exporter))
    [top_span] = spans["top"]
    middles = spans["middle"]
    leaves = spans["leaf"]
    assert (len(middles), len(leaves)) == (2, 2)
    assert parent_id(top_span) == span_id(outer)
    assert {parent_id(span) for span in middles} == {span_id(top_span)}
    assert sorted(parent_id(span) or 0 for span in leaves) == sorted(map(span_id, middles))
    assert {span.context.trace_id for span in [top_span, *middles, *leaves]} == {  # type: ignore[union-attr]
        outer.get_span_context().trace_id
    }
    for span in [top_span, *middles, *leaves]:
        assert span.kind is SpanKind.INTERNAL
        assert span.status.status_code is StatusCode.UNSET
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == TRACER_NAME
        assert span.attributes is not None
        assert span.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert span.attributes["agentforum.cache"] == "off"
        assert span.name == f"invoke_agent {span.attributes['gen_ai.agent.name']}"
        call = await forum.get(str(span.attributes["agentforum.call.hash"]))
        assert isinstance(call, CallMessage)
        assert call.receiver == span.attributes["gen_ai.agent.name"]


async def test_the_call_span_is_current_in_the_agent_function(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A span the agent function starts is a child of its call's span; a call it makes
    inside that span is still a child of the call's span: the parent of a call's span is
    its caller's call, not whatever span is current where it is made."""
    forum = traced_forum(provider)
    tracer = provider.get_tracer("test")

    @forum.agent
    async def helper(ctx: InteractionContext) -> None:
        ctx.respond("helped")

    @forum.agent
    async def worker(ctx: InteractionContext) -> None:
        with tracer.start_as_current_span("inside"):
            ctx.respond(await helper.ask("help").messages())

    with anyio.fail_after(LIMIT):
        async with forum:
            await worker.ask("go").messages()
    [inside] = [span for span in exporter.get_finished_spans() if span.name == "inside"]
    spans = by_agent(calls_of(exporter))
    [call] = spans["worker"]
    [nested] = spans["helper"]
    assert parent_id(inside) == span_id(call)
    assert parent_id(nested) == span_id(call)


async def test_a_repeated_call_is_a_hit_and_its_span_says_so(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The first call misses and runs; the same call again is answered from the cache: two
    spans of one call hash, ``miss`` then ``hit``; the hit runs nothing nested."""
    forum = traced_forum(provider)

    @forum.agent
    async def leaf(ctx: InteractionContext) -> None:
        ctx.respond("leaf")

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        ctx.respond(leaf.ask("down"))

    with anyio.fail_after(LIMIT):
        async with forum:
            first = await echo.ask("same").messages()
            second = await echo.ask("same").messages()
    assert first == second
    spans = by_agent(calls_of(exporter))
    results = {str((span.attributes or {})["agentforum.cache"]): span for span in spans["echo"]}
    assert sorted(results) == ["hit", "miss"]
    miss, hit = results["miss"], results["hit"]
    assert miss.attributes is not None
    assert hit.attributes is not None
    assert miss.attributes["agentforum.call.hash"] == hit.attributes["agentforum.call.hash"]
    assert [parent_id(span) for span in spans["leaf"]] == [span_id(miss)]
    assert forum.statistics().cache_hits == 1


async def test_an_identical_call_in_flight_is_followed_and_its_span_says_so(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Two identical calls at once: one leads (a miss, its agent runs), the other follows."""
    forum = traced_forum(provider)
    release = anyio.Event()

    @forum.agent
    async def slow(ctx: InteractionContext) -> None:
        await release.wait()
        ctx.respond("answer")

    with anyio.fail_after(LIMIT):
        async with forum:
            leader = slow.ask("same")
            follower = slow.ask("same")
            while forum.statistics().calls_followed == 0:
                await anyio.lowlevel.checkpoint()
            release.set()
            assert await leader.messages() == await follower.messages()
    spans = calls_of(exporter)
    results = sorted(str((span.attributes or {})["agentforum.cache"]) for span in spans)
    assert results == ["followed", "miss"]
    assert len({(span.attributes or {})["agentforum.call.hash"] for span in spans}) == 1


async def test_a_call_that_waits_for_another_forums_claim_is_followed(
    provider: TracerProvider, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    """Single flight across processes (two forums on one SQLite file): the call that runs
    is a miss; the call of the other forum that waits for its claim, and the one that
    follows that call in its own forum, are both ``followed``."""
    pair = Pair(tmp_path / "shared.db")
    for forum in pair.forums:
        instrument(forum, tracer_provider=provider)
    try:
        with anyio.fail_after(LIMIT):
            async with pair.forums[0], pair.forums[1]:
                first, others = await pair.one_runs_others_wait(2)
                pair.go.set()
                for call in (first, *others):
                    await call.messages()
    finally:
        await pair.aclose()
    results = sorted(
        str((span.attributes or {})["agentforum.cache"]) for span in calls_of(exporter)
    )
    assert results == ["followed", "followed", "miss"]


async def test_an_error_is_recorded_on_the_span_of_its_call(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """An agent that raises: its span has status ERROR, ``error.type``, and the exception
    recorded as an event; its caller, which handled the error, ended cleanly."""
    forum = traced_forum(provider)

    @forum.agent
    async def broken(ctx: InteractionContext) -> None:
        raise ValueError("no such thing")

    @forum.agent
    async def careful(ctx: InteractionContext) -> None:
        try:
            await broken.ask("go").messages()
        except AgentError:
            ctx.respond("handled")

    with anyio.fail_after(LIMIT):
        async with forum:
            await careful.ask("go").messages()
    spans = by_agent(calls_of(exporter))
    [failed] = spans["broken"]
    [caller] = spans["careful"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError: no such thing"
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "ValueError"
    [event] = failed.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "no such thing"
    assert "agentforum.cancelled" not in failed.attributes
    assert caller.status.status_code is StatusCode.UNSET
    assert parent_id(failed) == span_id(caller)


async def test_a_cancelled_call_and_the_calls_nested_in_it_are_marked_cancelled(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Cancelling a call mid-stream: its span and its nested call's say ``cancelled``; a
    cancellation is not an error (status UNSET, as the forum never raises it)."""
    forum = traced_forum(provider)
    started = anyio.Event()

    @forum.agent
    async def inner(ctx: InteractionContext) -> None:
        streamed = StreamedMessage()
        ctx.respond(streamed)
        async with streamed:
            await streamed.send("partial")
            started.set()
            await anyio.sleep_forever()

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        ctx.respond(inner.ask("go"))

    with anyio.fail_after(LIMIT):
        async with forum:
            sequence = outer.ask("go")
            await started.wait()
            sequence.cancel()
            with pytest.raises(AgentCancelled):
                await sequence.messages()
    spans = by_agent(calls_of(exporter))
    for alias in ("outer", "inner"):
        [span] = spans[alias]
        assert span.attributes is not None
        assert span.attributes["agentforum.cancelled"] is True
        assert span.status.status_code is StatusCode.UNSET
        assert "error.type" not in span.attributes
        assert span.attributes["agentforum.cache"] == "miss"


async def test_cancelling_the_forum_ends_every_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A cancel scope around the forum: every call's span still ends, marked cancelled."""
    forum = traced_forum(provider)
    started = anyio.Event()

    @forum.agent
    async def forever(ctx: InteractionContext) -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(LIMIT), anyio.CancelScope() as scope:
        async with forum:
            forever.ask("go")
            await started.wait()
            scope.cancel()
    [span] = calls_of(exporter)
    assert span.attributes is not None
    assert span.attributes["agentforum.cancelled"] is True


class _Refusing:
    """A task group that starts nothing, as a closed one does."""

    def start_soon(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("this task group is not active")


async def test_a_call_whose_task_cannot_start_ends_its_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """If the forum's task group refuses the call's task, the error reaches the caller and
    the call's span ends at once (nothing is left open)."""
    forum = traced_forum(provider)

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        ctx.respond("never")

    with anyio.fail_after(LIMIT):
        async with forum:
            state = forum._state
            assert state is not None
            group, state.task_group = state.task_group, _Refusing()  # type: ignore[assignment]
            try:
                with pytest.raises(RuntimeError, match="not active"):
                    echo.ask("go")
            finally:
                state.task_group = group
                state.calls_running -= 1  # the call that never ran
    [span] = calls_of(exporter)
    assert span.attributes is not None
    assert span.attributes["gen_ai.agent.name"] == "echo"


async def test_uninstrument_stops_the_spans_and_instrument_starts_them_while_running(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A forum instrumented while it runs traces its calls from then on; uninstrumented,
    none; a call made before tracing began has no span, and its nested calls are roots."""
    forum = Forum()

    @forum.agent
    async def echo(ctx: InteractionContext, *, n: int) -> None:
        ctx.respond(f"echo {n}")

    with anyio.fail_after(LIMIT):
        async with forum:
            await echo.ask(n=1).messages()
            instrument(forum, tracer_provider=provider)
            await echo.ask(n=2).messages()
            uninstrument(forum)
            await echo.ask(n=3).messages()
    [span] = calls_of(exporter)
    assert span.attributes is not None
    call = await forum.get(str(span.attributes["agentforum.call.hash"]))
    assert isinstance(call, CallMessage)
    assert dict(call.kwargs) == {"n": 2}


async def test_instrument_with_the_global_provider() -> None:
    """Without a tracer provider, the global one is used (the API's no-op one here: it
    makes non-recording spans, and the forum runs as ever)."""
    forum = Forum()
    instrument(forum)

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        ctx.respond("fine")

    with anyio.fail_after(LIMIT):
        async with forum:
            assert [m.content for m in await echo.ask("go").messages()] == ["fine"]


def test_instrument_takes_a_forum() -> None:
    with pytest.raises(TypeError, match="traces a Forum"):
        instrument(MemoryStore())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a Forum"):
        uninstrument("forum")  # type: ignore[arg-type]


async def test_the_spans_leave_the_hashes_alone(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The same program, traced and not, writes the very same messages."""

    async def program(forum: Forum) -> list[str]:
        @forum.agent
        async def leaf(ctx: InteractionContext) -> None:
            ctx.respond("leaf")

        @forum.agent
        async def root(ctx: InteractionContext) -> None:
            ctx.respond(leaf.ask(ctx.request_messages))

        async with forum:
            return [message.hash for message in await root.ask("go").messages()]

    assert await program(traced_forum(provider)) == await program(Forum())
    assert len(calls_of(exporter)) == 2


# -- for all trees of calls ---------------------------------------------------------------


#: A tree of calls: each node a list of its children.
trees = st.recursive(st.just([]), lambda children: st.lists(children, max_size=3), max_leaves=8)


def _numbered(tree: list[Any], numbers: Iterator[int]) -> dict[str, Any]:
    """The tree as the agent's kwargs: each node with a number of its own, so no two calls
    are identical (each runs its agent), and its children."""
    return {"n": next(numbers), "children": [_numbered(child, numbers) for child in tree]}


def _parents(node: dict[str, Any], parent: int | None, found: dict[int, int | None]) -> None:
    found[node["n"]] = parent
    for child in node["children"]:
        _parents(child, node["n"], found)


@given(tree=trees, concurrent=st.booleans())
async def test_for_any_tree_of_calls_the_span_tree_is_the_call_tree(
    tree: list[Any], concurrent: bool
) -> None:
    """For all trees of nested calls, made one after the other or all at once: one span
    per call, and each span's parent is the span of the call that made it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    forum = traced_forum(provider)

    @forum.agent
    async def node(ctx: InteractionContext, *, n: int, children: list[Any]) -> None:
        if concurrent:
            sequences = [node.ask(**child) for child in children]
            for sequence in sequences:
                ctx.respond(sequence)
        else:
            for child in children:
                ctx.respond(await node.ask(**child).messages())
        ctx.respond(f"node {n}")

    root = _numbered(tree, iter(range(1000)))
    with anyio.fail_after(LIMIT):
        async with forum:
            await node.ask(**root).messages()
    provider.shutdown()
    expected: dict[int, int | None] = {}
    _parents(root, None, expected)
    spans = calls_of(exporter)
    number_of_span: dict[int, int] = {}
    for span in spans:
        assert span.attributes is not None
        call = await forum.get(str(span.attributes["agentforum.call.hash"]))
        assert isinstance(call, CallMessage)
        n = call.kwargs["n"]
        assert isinstance(n, int)
        number_of_span[span_id(span)] = n
    found = {
        number_of_span[span_id(span)]: (
            None if span.parent is None else number_of_span[span.parent.span_id]
        )
        for span in spans
    }
    assert len(spans) == len(expected)
    assert found == expected


# -- the spans of model requests ------------------------------------------------------------


@pytest.mark.filterwarnings(f"ignore:{SDK_GENERATOR_WARNING}:ResourceWarning")
async def test_a_model_request_is_a_genai_span_child_of_its_call(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The OpenAI adapter, through the real SDK to the loopback server: the request is a
    ``chat`` span of the GenAI conventions, a child of the call's span (nested in a
    proxy's), with the model asked and the one that answered, the token usage and the
    finish reason."""
    forum = traced_forum(provider)
    with anyio.fail_after(LIMIT):
        async with (
            chat_server() as server,
            openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client,
        ):
            server.reply(Stream(["Hel", "lo"], model="gpt-test-0613", usage=(12, 2)))
            gpt = forum.agent(openai_agent(model="gpt-test", client=client), alias="gpt")

            @forum.agent
            async def proxy(ctx: InteractionContext) -> None:
                ctx.respond(gpt.ask(ctx.request_messages))

            async with forum:
                await proxy.ask("Say hello").messages()
    spans = by_agent(calls_of(exporter))
    [gpt_span] = spans["gpt"]
    [proxy_span] = spans["proxy"]
    assert parent_id(gpt_span) == span_id(proxy_span)
    [request] = [span for span in exporter.get_finished_spans() if span.name == "chat gpt-test"]
    assert parent_id(request) == span_id(gpt_span)
    assert request.kind is SpanKind.CLIENT
    assert request.status.status_code is StatusCode.UNSET
    assert request.attributes is not None
    host, _, port = server.base_url.split("//")[1].split("/")[0].partition(":")
    assert dict(request.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.response.model": "gpt-test-0613",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 2,
        "server.address": host,
        "server.port": int(port),
    }


async def test_a_request_of_the_anthropic_agent_is_a_genai_span_of_its_call(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The Anthropic adapter, through the real SDK to the loopback Messages API server: the
    request is a ``chat`` span of provider ``anthropic``, a child of the call's span, with
    the model that answered, the stop reason and the token usage."""
    import anthropic

    forum = traced_forum(provider)
    with anyio.fail_after(LIMIT):
        async with (
            anthropic_server.messages_server() as server,
            anthropic.AsyncAnthropic(
                base_url=server.base_url, api_key="k", max_retries=0
            ) as client,
        ):
            server.reply(anthropic_server.Stream(["Hel", "lo"], model="claude-t-1", usage=(9, 2)))
            claude = forum.agent(anthropic_agent(model="claude-t", client=client), alias="claude")
            async with forum:
                await claude.ask("Say hello").messages()
    [call] = calls_of(exporter)
    [request] = [span for span in exporter.get_finished_spans() if span.name == "chat claude-t"]
    assert parent_id(request) == span_id(call)
    assert request.kind is SpanKind.CLIENT
    assert request.attributes is not None
    host, _, port = server.base_url.split("//")[1].split("/")[0].partition(":")
    assert dict(request.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-t",
        "gen_ai.response.model": "claude-t-1",
        "gen_ai.response.finish_reasons": ("end_turn",),
        "gen_ai.usage.input_tokens": 9,
        "gen_ai.usage.output_tokens": 2,
        "server.address": host,
        "server.port": int(port),
    }


@pytest.mark.filterwarnings(f"ignore:{SDK_GENERATOR_WARNING}:ResourceWarning")
async def test_a_broken_model_request_is_an_error_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A stream cut after one token: the request's span is an error with the adapter's
    exception, and still records the model that answered; so is the call's span."""
    forum = traced_forum(provider)
    with anyio.fail_after(LIMIT):
        async with (
            chat_server() as server,
            openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client,
        ):
            server.reply(Cut(["Hel", "lo"], after=1))
            gpt = forum.agent(openai_agent(model="gpt-test", client=client), alias="gpt")
            async with forum:
                with pytest.raises(AgentError):
                    await gpt.ask("Say hello").messages()
    [request] = [span for span in exporter.get_finished_spans() if span.name == "chat gpt-test"]
    [call] = calls_of(exporter)
    assert parent_id(request) == span_id(call)
    for span in (request, call):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"] == "agentforum.llms.LLMConnectionError"
    assert request.attributes is not None
    assert request.attributes["gen_ai.response.model"] == "gpt-test"
    assert "gen_ai.usage.input_tokens" not in request.attributes


async def test_model_request_in_an_untraced_forum_does_nothing() -> None:
    """Not traced: model_request() hands out a ModelRequest that records nothing."""
    forum = Forum()
    seen: list[ModelRequest] = []

    @forum.agent
    async def asker(ctx: InteractionContext) -> None:
        with model_request(ctx, provider="openai", model="m") as request:
            request.record(response_model="m", finish_reasons=["stop"], input_tokens=1)
            seen.append(request)
        ctx.respond("ok")

    with anyio.fail_after(LIMIT):
        async with forum:
            await asker.ask("go").messages()
    assert [type(request) for request in seen] == [ModelRequest]


async def test_a_cancelled_model_request_is_marked_cancelled(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """An agent function that asks a model by itself, cancelled mid-request: the request's
    span says ``cancelled`` and is not an error; what it recorded before stays."""
    forum = traced_forum(provider)
    started = anyio.Event()

    @forum.agent
    async def asker(ctx: InteractionContext) -> None:
        with model_request(
            ctx, provider="anthropic", model="claude-test", server_address="localhost"
        ) as request:
            request.record(response_model="claude-test-1", input_tokens=5)
            started.set()
            await anyio.sleep_forever()

    with anyio.fail_after(LIMIT):
        async with forum:
            sequence = asker.ask("go")
            await started.wait()
            sequence.cancel()
            with pytest.raises(AgentCancelled):
                await sequence.messages()
    [request] = [span for span in exporter.get_finished_spans() if span.name.startswith("chat")]
    [call] = calls_of(exporter)
    assert parent_id(request) == span_id(call)
    assert request.status.status_code is StatusCode.UNSET
    assert dict(request.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-test",
        "server.address": "localhost",
        "gen_ai.response.model": "claude-test-1",
        "gen_ai.usage.input_tokens": 5,
        "agentforum.cancelled": True,
    }


# -- off ----------------------------------------------------------------------------------

_UNTRACED_RUN = textwrap.dedent(
    """
    import json, sys

    import anyio

    import agentforum
    from agentforum import Forum, InteractionContext
    from agentforum.llms import model_request

    forum = Forum()


    @forum.agent
    async def leaf(ctx: InteractionContext) -> None:
        with model_request(ctx, provider="openai", model="m") as request:
            request.record(input_tokens=1)
        ctx.respond("leaf")


    @forum.agent
    async def root(ctx: InteractionContext) -> None:
        ctx.respond(leaf.ask("down"))


    async def main() -> None:
        async with forum:
            await root.ask("go").messages()
            await root.ask("go").messages()


    anyio.run(main, backend=sys.argv[1])
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry")
    print(json.dumps({"loaded": loaded, "otel": "agentforum.otel" in sys.modules}))
    """
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_untraced_forum_imports_nothing_of_opentelemetry(backend: str) -> None:
    """``import agentforum`` and a run of nested calls (a cache hit, a model request) in a
    forum that is not instrumented: no module of OpenTelemetry, nor agentforum.otel, is
    imported (in a fresh interpreter, where the OpenTelemetry packages are installed)."""
    result = subprocess.run(
        [sys.executable, "-c", _UNTRACED_RUN, backend],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == {"loaded": [], "otel": False}


async def test_an_untraced_forum_makes_no_span(exporter: InMemorySpanExporter) -> None:
    """A forum not instrumented makes no span, even while a recording span of the
    application is current where its calls are made."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    forum = Forum()

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        ctx.respond("fine")

    with anyio.fail_after(LIMIT), trace.use_span(provider.get_tracer("t").start_span("app")):
        async with forum:
            await echo.ask("go").messages()
    assert exporter.get_finished_spans() == ()


def test_without_the_extra_the_import_says_what_to_install() -> None:
    """Where OpenTelemetry is not installed, ``import agentforum.otel`` names the extra."""
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if it were not installed\n"
        "try:\n"
        "    import agentforum.otel\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc.name, exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == (
        "opentelemetry agentforum.otel needs the OpenTelemetry API: pip install 'agentforum[otel]'"
    )
