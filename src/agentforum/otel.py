"""OpenTelemetry traces of a forum: a span per agent call, and per request to a model.

Install it with ``pip install "agentforum[otel]"`` (the OpenTelemetry API; an SDK and an
exporter are the application's choice), then turn it on for a forum::

    from agentforum.otel import instrument

    instrument(forum)  # the global tracer provider, or tracer_provider=...

Nothing is traced, and nothing of OpenTelemetry imported, in a forum that is not
instrumented. See ``docs/observability.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ModuleNotFoundError as exc:
    if (exc.name or "").partition(".")[0] != "opentelemetry":
        raise
    raise ModuleNotFoundError(
        "agentforum.otel needs the OpenTelemetry API: pip install 'agentforum[otel]'",
        name=exc.name,
    ) from exc

from ._forum import Forum
from ._public import claim
from ._runtime import error_type_of
from .llms._observe import ModelRequest

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from opentelemetry.trace import Span, Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue
    from typing_extensions import Self

    from ._runtime import Call

#: The name of the tracer (the instrumentation scope) that makes agentforum's spans.
TRACER_NAME: Final = "agentforum"

#: What the ``agentforum.cache`` attribute of a call's span says of a call that does not go
#: through the cache (its agent's or its forum's ``cache`` is off).
_NOT_CACHED: Final = "off"


def instrument(forum: Forum, *, tracer_provider: TracerProvider | None = None) -> None:
    """Trace the calls of ``forum``, and the requests to models its agents make.

    From now on (in a running forum, from its next call on), each call of an agent is a
    span, a child of the span of the call it is nested in, or, for a call made outside any
    agent function, of the span current where it was made. A request that a model
    adapter makes (:func:`agentforum.llms.model_request`) is a span too, a child of its
    call's. While an agent function runs, its call's span is the current span, so spans
    that the function (or a library it uses) starts are children of it. See
    ``docs/observability.md`` for the spans and their attributes.

    Instrumenting a forum again replaces its tracer provider.

    Args:
        forum: The forum to trace.
        tracer_provider: Where the spans go; ``None`` (the default) means OpenTelemetry's
            global tracer provider (``opentelemetry.trace.set_tracer_provider``).

    Raises:
        TypeError: ``forum`` is not a :class:`~agentforum.Forum`.
    """
    if not isinstance(forum, Forum):
        raise TypeError(f"instrument() traces a Forum, not {type(forum).__qualname__}")
    version = _version()
    tracer = _CallTracer(trace.get_tracer(TRACER_NAME, version, tracer_provider=tracer_provider))
    forum._set_tracer(tracer)


def uninstrument(forum: Forum) -> None:
    """Stop tracing the calls of ``forum`` (from its next call on); nothing if it was not.

    Raises:
        TypeError: ``forum`` is not a :class:`~agentforum.Forum`.
    """
    if not isinstance(forum, Forum):
        raise TypeError(f"uninstrument() takes a Forum, not {type(forum).__qualname__}")
    forum._set_tracer(None)


def _version() -> str:
    from . import __version__

    return __version__


class _CallTracer:
    """The spans of one instrumented forum's calls (the forum's ``tracer``).

    The runtime hands it every call it makes (:meth:`start`) instead of starting the
    call's task itself: one check per call, and nothing else, when a forum is not traced.
    """

    __slots__ = ("_spans", "_tracer")

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        #: The span of each call whose task runs, by call: where a nested call, or a
        #: request to a model, finds its parent.
        self._spans: dict[Call, Span] = {}

    def start(self, call: Call) -> None:
        """Open the span of a new call, and start the call's task in its forum's task group.

        The parent comes from the structure of the calls, never from the context the task
        inherits (calls run in the forum's task group): the span of the call's caller, or,
        for a call made outside any agent function, the span current where it was made.
        """
        caller = call.caller
        parent = self._spans.get(caller) if caller is not None else None
        alias = call.agent.alias
        span = self._tracer.start_span(
            f"invoke_agent {alias}",
            context=None if parent is None else trace.set_span_in_context(parent),
            kind=SpanKind.INTERNAL,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": alias},
        )
        self._spans[call] = span
        try:
            call.state.task_group.start_soon(self._run, call, span, name=f"call of {alias}")
        except BaseException:
            # No task: the call never runs (the forum is closing), so neither does its span.
            del self._spans[call]
            span.end()
            raise

    async def _run(self, call: Call, span: Span) -> None:
        """The call's task, with its span current while it runs; then the span ends."""
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await call.run()
        finally:
            otel_context.detach(token)
            del self._spans[call]
            _end(call, span)

    def model_request(
        self,
        call: Call,
        *,
        provider: str,
        model: str,
        operation: str,
        server_address: str | None,
        server_port: int | None,
    ) -> ModelRequest:
        """A span for a request to a model that the agent function of ``call`` makes."""
        parent = self._spans.get(call)
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
        }
        if server_address is not None:
            attributes["server.address"] = server_address
        if server_port is not None:
            attributes["server.port"] = server_port
        span = self._tracer.start_span(
            f"{operation} {model}",
            context=None if parent is None else trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        return _TracedModelRequest(span)


def _end(call: Call, span: Span) -> None:
    """Set what the call's run came to on its span, and end it."""
    call_message = call.writer.call_message
    if call_message is not None:
        span.set_attribute("agentforum.call.hash", call_message.hash)
    if not call.cached:
        span.set_attribute("agentforum.cache", _NOT_CACHED)
    else:
        # Unset if the call failed or was cancelled before the cache could answer it.
        result = getattr(call, "cache_result", None)
        if result is not None:
            span.set_attribute("agentforum.cache", result)
    failure = call.writer.log.failure
    if failure is not None and failure.is_cancellation:
        span.set_attribute("agentforum.cancelled", True)
    elif failure is not None:
        message = failure.message
        span.set_attribute("error.type", message.error_type)
        if failure.cause is not None:  # in this process, an error always has its cause
            span.record_exception(failure.cause)
        span.set_status(Status(StatusCode.ERROR, f"{message.error_type}: {message.content}"))
    span.end()


class _TracedModelRequest(ModelRequest):
    """A request to a model in a traced forum: its span (see :func:`model_request`)."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            span.set_attribute("agentforum.cancelled", True)
        elif exc is not None:
            error_type = error_type_of(exc)
            span.set_attribute("error.type", error_type)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{error_type}: {exc}"))
        span.end()

    def record(
        self,
        *,
        response_model: str | None = None,
        finish_reasons: Sequence[str] | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        span = self._span
        if response_model is not None:
            span.set_attribute("gen_ai.response.model", response_model)
        if finish_reasons is not None:
            span.set_attribute("gen_ai.response.finish_reasons", list(finish_reasons))
        if input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        if output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)


__all__ = ["TRACER_NAME", "instrument", "uninstrument"]


claim(globals(), __all__)
del claim
