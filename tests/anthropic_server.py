"""A real HTTP server on loopback that speaks the streaming protocol of Anthropic's Messages API.

For the tests of :mod:`agentforum.llms.anthropic` (and the ``docs/llms.md`` examples): the
official ``anthropic`` SDK talks to it over TCP, as to the real API, on asyncio and on Trio::

    async with messages_server() as server:
        server.reply(Stream(["Hel", "lo"]))
        client = anthropic.AsyncAnthropic(base_url=server.base_url, api_key="test-key")
        ...
        assert server.requests[0].body["model"] == "claude-test"

The HTTP machinery (connections kept alive, the requests recorded, the scripted replies,
:class:`~llm_server.Stall`) is that of :mod:`llm_server`; this module adds what differs:
the path (``POST /v1/messages``, the SDK's ``base_url`` being the server's origin), the
error bodies, and the events of a streamed answer, as the API documents them:

- :class:`Stream`: ``message_start`` (the model, the input tokens), a ``ping``, a text
  block (``content_block_start``, one ``content_block_delta`` with a ``text_delta`` per
  token, ``content_block_stop``), then for each :class:`ToolUse` a ``tool_use`` block
  whose input comes in ``input_json_delta`` fragments, then ``message_delta`` (the
  ``stop_reason`` and the usage) and ``message_stop``. Or, instead of the end, an
  ``error`` event (the way the API reports a failure, ``overloaded_error`` say, after the
  stream started). :func:`using` makes a stream that calls tools (``stop_reason``
  ``"tool_use"``).
- :class:`Cut`: a stream whose connection is closed after some tokens.
- :class:`Hang`: a stream that stops after some tokens until the client closes.
- :class:`Fail`: an HTTP error status with the API's error body
  ``{"type": "error", "error": {"type": ..., "message": ...}}``.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any, NamedTuple

import h11

import llm_server
from llm_server import ChatServer, Cutting, Hanging, Reply, TokenStream, _Exchange, run_server

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from contextlib import AbstractAsyncContextManager

_ids = itertools.count(1)

#: The API's error ``type`` for each HTTP status it documents.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class Fail(llm_server.Fail):
    """An HTTP error status with the Messages API's JSON error body.

    Args:
        status: The HTTP status (400, 401, 429, 500, 529, ...).
        message: The error's ``message``.
        type: The error's ``type`` (default: the one the API gives ``status``).
        headers: More response headers (``{"retry-after-ms": "1"}`` keeps retries fast).
    """

    def __init__(
        self,
        status: int,
        message: str = "something went wrong",
        *,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        kind = type if type is not None else ERROR_TYPES.get(status, "api_error")
        super().__init__(status, message, type=kind, headers=headers)

    def _body(self, message: str, type: str, code: str | None) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": type, "message": message},
            "request_id": f"req_{next(_ids)}",
        }


class ToolUse(NamedTuple):
    """A tool use that a :class:`Stream` makes: its id, the tool's name, its input as JSON."""

    id: str
    name: str
    input: str


class Stream(TokenStream):
    """A streamed answer: the Messages API's server-sent events for ``tokens``.

    Args:
        tokens: The text of the answer, one ``text_delta`` per token.
        model: The ``model`` of ``message_start`` (default: the model the request names).
        stop_reason: The ``stop_reason`` of ``message_delta``; ``None`` sends a
            ``message_delta`` without one (the stream still ends with ``message_stop``).
        usage: ``(input_tokens, output_tokens)`` (default: the number of the request's
            messages, the number of tokens).
        gated: Send each token after the first only once the test has opened its gate.
        error: Instead of ``message_delta`` and ``message_stop``, an ``error`` event with
            this object (``{"type": "overloaded_error", "message": "Overloaded"}``).
        tool_uses: Tool uses to make after the text, each a ``tool_use`` block whose
            input comes ``fragment`` characters at a time.
        fragment: The length of the pieces of each tool use's input.
        text_block: Whether to send the text block when there are no tokens (the API
            leaves it out of an answer that only uses tools).

    :attr:`sent` counts the tokens written so far, each counted as its write begins.
    """

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        model: str | None = None,
        stop_reason: str | None = "end_turn",
        usage: tuple[int, int] | None = None,
        gated: bool = False,
        error: Mapping[str, Any] | None = None,
        tool_uses: Iterable[ToolUse] = (),
        fragment: int = 4,
        text_block: bool = True,
    ) -> None:
        super().__init__(tokens, gated=gated)
        self.model = model
        self.stop_reason = stop_reason
        self.usage = usage
        self.error = error
        self.tool_uses = list(tool_uses)
        self.fragment = fragment
        self.text_block = text_block

    async def serve(self, exchange: _Exchange) -> bool:
        body = exchange.request.body if isinstance(exchange.request.body, dict) else {}
        input_tokens, output_tokens = self.usage or (
            len(body.get("messages") or []),
            len(self.tokens),
        )

        async def event(name: str, **data: Any) -> None:
            payload = json.dumps({"type": name, **data})
            await exchange.send(h11.Data(data=f"event: {name}\ndata: {payload}\n\n".encode()))

        await exchange.start(
            200,
            {
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "request-id": f"req_{next(_ids)}",
            },
        )
        await event(
            "message_start",
            message={
                "id": f"msg_{next(_ids)}",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": self.model if self.model is not None else body.get("model", "unknown"),
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            },
        )
        await event("ping")
        index = 0
        if self.tokens or self.text_block or not self.tool_uses:
            await event("content_block_start", index=0, content_block={"type": "text", "text": ""})
            for number, token in enumerate(self.tokens):
                if not await self._may_send(exchange, number):
                    return False
                # Counted before the write: once the bytes are out, the client may read them
                # before this task runs again.
                self.sent += 1
                await event(
                    "content_block_delta", index=0, delta={"type": "text_delta", "text": token}
                )
            await event("content_block_stop", index=0)
            index = 1
        for offset, use in enumerate(self.tool_uses):
            block = index + offset
            await event(
                "content_block_start",
                index=block,
                content_block={"type": "tool_use", "id": use.id, "name": use.name, "input": {}},
            )
            # As the API does: an empty fragment first, then the input in pieces.
            pieces = [
                "",
                *(
                    use.input[at : at + self.fragment]
                    for at in range(0, len(use.input), self.fragment)
                ),
            ]
            for piece in pieces:
                await event(
                    "content_block_delta",
                    index=block,
                    delta={"type": "input_json_delta", "partial_json": piece},
                )
            await event("content_block_stop", index=block)
        if not await self._may_finish(exchange):
            return False
        if self.error is not None:
            await event("error", error=dict(self.error))
        else:
            await event(
                "message_delta",
                delta={"stop_reason": self.stop_reason, "stop_sequence": None},
                usage={"output_tokens": output_tokens},
            )
            await event("message_stop")
        await exchange.send(h11.EndOfMessage())
        return True


def using(*uses: ToolUse, tokens: Iterable[str] = (), **options: Any) -> Stream:
    """A stream that uses tools (after ``tokens``, if any), stopping with ``"tool_use"``."""
    tokens = list(tokens)
    return Stream(
        tokens, tool_uses=uses, stop_reason="tool_use", text_block=bool(tokens), **options
    )


class Cut(Cutting, Stream):
    """A Messages stream whose connection closes after ``after`` tokens: no end events."""


class Hang(Hanging, Stream):
    """A Messages stream that stops after ``after`` tokens and waits for the client to close."""


class MessagesServer(ChatServer):
    """A :class:`~llm_server.ChatServer` for the Messages API: its ``base_url`` is the origin."""

    PREFIX = ""

    def _unscripted(self) -> Reply:
        return Fail(418, "the test scripted no reply for this request", type="test_error")


def messages_server(*, default: Reply | None = None) -> AbstractAsyncContextManager[MessagesServer]:
    """Run a Messages API server on 127.0.0.1 for the duration of the block.

    Args:
        default: The reply to requests that no scripted reply is left for (it is used
            again for each of them); ``None`` answers them with a 418 error.
    """
    return run_server(MessagesServer, default)


#: The message (a regular expression) of the ResourceWarning that Trio emits for each async
#: generator of the SDK's stream machinery collected while suspended: the same leftovers as
#: the openai SDK's (see :data:`llm_server.SDK_GENERATOR_WARNING`), under the names of the
#: anthropic SDK's modules. Nothing leaks; the tests ignore these warnings, and only these.
SDK_GENERATOR_WARNING = (
    r"Async generator '(anthropic\._streaming|httpx2\._models|httpcore2\._async)\.[\w.]+' "
    r"was garbage collected before it had been exhausted"
)
