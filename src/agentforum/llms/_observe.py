"""The hook of the model adapters for tracing: one request to a model, a span when traced.

Any adapter (``openai.py``, and whichever comes next) wraps each request it sends in
:func:`model_request` and records what the answer says with :meth:`ModelRequest.record`.
When the call's forum is not traced (the default), this costs one attribute check and
hands back a :class:`ModelRequest` that does nothing; nothing of OpenTelemetry is imported.
When it is (:func:`agentforum.otel.instrument`), the request is a span of the GenAI
semantic conventions, a child of the call's span.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from typing_extensions import Self

    from .._json import JSONValue
    from .._runtime import InteractionContext


class ModelRequest:
    """One request of an agent function to a language model, as :func:`model_request` opens it.

    A context manager around the request, from sending it to the end of its answer (its
    stream read to the end, or broken off). In a forum that is not traced, it does nothing.
    In a traced one, it is a span: an exception that leaves the ``with`` block marks it as
    an error (a cancellation, as cancelled), and :meth:`record` sets what the answer says.
    """

    __slots__ = ()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def record(
        self,
        *,
        response_model: str | None = None,
        finish_reasons: Sequence[str] | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """Record what the answer says, as far as it is known; ``None`` records nothing.

        May be called any number of times (a later value replaces an earlier one), so an
        adapter can record the model as soon as the first chunk names it, and the usage
        when the last one brings it.

        Args:
            response_model: The model that answered, as the server names it
                (``gen_ai.response.model``).
            finish_reasons: Why the model stopped, one reason per choice
                (``gen_ai.response.finish_reasons``).
            input_tokens: The tokens of the prompt (``gen_ai.usage.input_tokens``).
            output_tokens: The tokens of the answer (``gen_ai.usage.output_tokens``).
        """
        return None


class _URL(Protocol):
    """A client's base URL, as the SDKs hold it (``httpx.URL``)."""

    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int | None: ...


_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


def server_of(url: _URL) -> tuple[str | None, int | None]:
    """The host and the port that a client's base URL names (the scheme's, if none)."""
    return url.host or None, url.port or _DEFAULT_PORTS.get(url.scheme)


def record_answer(
    request: ModelRequest,
    metadata: Mapping[str, JSONValue],
    *,
    reason: str,
    input_tokens: str,
    output_tokens: str,
) -> None:
    """Record on ``request`` what the metadata of its answer says, as far as it got: its
    ``model``, the reason under the key ``reason``, and the tokens under the keys
    ``input_tokens`` and ``output_tokens`` of its ``usage`` (what is missing, or not of
    its type, is not recorded)."""
    model = metadata.get("model")
    stopped = metadata.get(reason)
    usage = metadata.get("usage")
    tokens: Mapping[str, JSONValue] = usage if isinstance(usage, Mapping) else {}
    prompt, completion = tokens.get(input_tokens), tokens.get(output_tokens)
    request.record(
        response_model=model if isinstance(model, str) else None,
        finish_reasons=[stopped] if isinstance(stopped, str) else None,
        input_tokens=prompt if isinstance(prompt, int) else None,
        output_tokens=completion if isinstance(completion, int) else None,
    )


#: What model_request() hands out in a forum that is not traced.
_UNTRACED = ModelRequest()


def model_request(
    ctx: InteractionContext,
    *,
    provider: str,
    model: str,
    operation: str = "chat",
    server_address: str | None = None,
    server_port: int | None = None,
) -> ModelRequest:
    """Open a request of the agent function of ``ctx`` to a model: a span, when traced.

    For the authors of model adapters (the OpenAI adapter uses it; so can an agent
    function that asks a model by itself)::

        with model_request(ctx, provider="openai", model=model) as request:
            answer = await send(...)
            request.record(response_model=answer.model, input_tokens=answer.usage.input)

    In a forum that :func:`agentforum.otel.instrument` traces, the span follows the
    OpenTelemetry GenAI semantic conventions: named ``"{operation} {model}"``, of kind
    ``CLIENT``, with ``gen_ai.operation.name``, ``gen_ai.provider.name``,
    ``gen_ai.request.model``, and ``server.address`` and ``server.port`` when given; it
    is a child of the span of the call whose agent function makes the request. Otherwise
    the request is not traced, and this returns a :class:`ModelRequest` that does nothing.

    Args:
        ctx: The context of the agent function that sends the request.
        provider: Who serves the model, as the conventions name providers: ``"openai"``
            (also for the servers that speak its API), ``"anthropic"``, ...
        model: The model asked (``gen_ai.request.model``).
        operation: What is asked: ``"chat"`` (the default), ``"text_completion"``,
            ``"embeddings"``, ...
        server_address: The host the request goes to.
        server_port: Its port.
    """
    tracer = ctx._call.state.tracer
    if tracer is None:
        return _UNTRACED
    return tracer.model_request(
        ctx._call,
        provider=provider,
        model=model,
        operation=operation,
        server_address=server_address,
        server_port=server_port,
    )
