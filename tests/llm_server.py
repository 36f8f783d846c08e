"""A real HTTP server on loopback that speaks the Chat Completions streaming protocol.

For the tests of :mod:`agentforum.llms.openai` (and the ``docs/llms.md`` examples): the
official ``openai`` SDK talks to it over TCP, as to the real API, on asyncio and on Trio::

    async with chat_server() as server:
        server.reply(Stream(["Hel", "lo"]))
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key")
        ...
        assert server.requests[0].body["model"] == "gpt-test"

It runs in the test's task group (anyio, a TCP listener on 127.0.0.1 and an ephemeral
port); HTTP/1.1 is parsed and framed by ``h11``. Connections are kept alive between
requests (the SDK reuses them), and any number of them are served at once.

Each request is answered by the next scripted reply (:meth:`ChatServer.reply`), else by
the server's ``default`` reply, else by a 418 error that says no reply was scripted:

- :class:`Stream`: a streamed answer (``text/event-stream``), as the API documents it: a
  first chunk with the ``assistant`` role, one chunk per token, a chunk with the
  ``finish_reason``, then, when the request asked for ``stream_options.include_usage``, a
  chunk with ``choices: []`` and the ``usage``, then ``data: [DONE]``. Its tokens can be
  gated by events the test sets, to prove that they reach the consumer live.
  With ``tool_calls`` (:class:`ToolCall`), the stream then calls tools as the API does:
  for each call, a chunk with its ``index``, ``id``, ``type`` and ``function.name``, then
  its ``function.arguments`` in fragments (:func:`calling` makes such a stream, with the
  ``"tool_calls"`` finish reason).
- :class:`Cut`: a stream whose connection is closed after some tokens, without the
  terminating chunk, the ``[DONE]`` event or the end of the chunked body.
- :class:`Hang`: a stream that stops sending after some tokens and waits until the client
  closes the connection, which sets its :attr:`Hang.disconnected` event.
- :class:`Stall`: no response at all; waits until the client closes the connection.
- :class:`Fail`: an HTTP error status with an OpenAI-style JSON error body.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import anyio
import anyio.abc
import h11

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping
    from contextlib import AbstractAsyncContextManager

#: Errors that mean the client went away (or broke the protocol): the connection just ends.
_GONE = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    h11.ProtocolError,
)

_ids = itertools.count(1)

S = TypeVar("S", bound="ChatServer")

#: The message (a regular expression) of the ResourceWarning that Trio emits for each async
#: generator of the SDK's stream machinery that is collected while suspended. Every stream
#: that ends normally leaves some: when ``AsyncStream.__stream__`` reads ``data: [DONE]`` it
#: drains the response and ``break``s out of ``AsyncStream._iter_events()`` without closing
#: it, so that generator and those it iterates (``SSEDecoder.aiter_bytes``, httpx2's
#: ``Response.aiter_bytes``, httpcore2's ``PoolByteStream.__aiter__``) are dropped
#: unexhausted (a consumer that stops between two chunks leaves ``AsyncStream.__aiter__``
#: too: ``AsyncStream.close()`` closes the response, not the generators reading it).
#: Trio's asyncgen finalizer closes them in a system task, but warns first; asyncio's closes
#: them without a word. Nothing leaks, so the tests ignore these warnings, and only these.
SDK_GENERATOR_WARNING = (
    r"Async generator '(openai\._streaming|httpx2\._models|httpcore2\._async)\.[\w.]+' "
    r"was garbage collected before it had been exhausted"
)


class Request:
    """One request the server received."""

    __slots__ = ("body", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        #: ``"POST"``, say.
        self.method = method
        #: The request target: ``"/v1/chat/completions"``.
        self.path = path
        #: The headers, by lowercase name (a header sent twice keeps its last value).
        self.headers = headers
        #: The JSON body, parsed (``None`` for an empty body).
        self.body = body

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"


class _Exchange:
    """One request on one connection, and how to write its response."""

    def __init__(
        self, stream: anyio.abc.ByteStream, connection: h11.Connection, request: Request
    ) -> None:
        self.stream = stream
        self.connection = connection
        self.request = request

    async def send(self, event: h11.Event) -> None:
        data = self.connection.send(event)
        if data:
            await self.stream.send(data)

    async def start(self, status: int, headers: Mapping[str, str]) -> None:
        await self.send(
            h11.Response(
                status_code=status,
                headers=[(name.encode(), value.encode()) for name, value in headers.items()],
            )
        )


class Reply:
    """How the server answers one request; see the subclasses."""

    async def serve(self, exchange: _Exchange) -> bool:
        """Write the response; return whether the connection may serve another request."""
        raise NotImplementedError


class Fail(Reply):
    """An HTTP error status with the OpenAI-style JSON body ``{"error": {...}}``.

    Args:
        status: The HTTP status (401, 404, 429, 500, ...).
        message: The error's ``message``.
        type: The error's ``type`` (``"invalid_request_error"``, say).
        code: The error's ``code``, if any.
        headers: More response headers (``{"retry-after-ms": "1"}`` keeps retries fast).
    """

    def __init__(
        self,
        status: int,
        message: str = "something went wrong",
        *,
        type: str = "server_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = json.dumps(self._body(message, type, code)).encode()
        self.headers = dict(headers or {})

    def _body(self, message: str, type: str, code: str | None) -> dict[str, Any]:
        """The JSON body of the response: the API's error object."""
        return {"error": {"message": message, "type": type, "param": None, "code": code}}

    def __repr__(self) -> str:
        return f"<Fail {self.status}>"

    async def serve(self, exchange: _Exchange) -> bool:
        await exchange.start(
            self.status,
            {
                "content-type": "application/json",
                "content-length": str(len(self.body)),
                **self.headers,
            },
        )
        await exchange.send(h11.Data(data=self.body))
        await exchange.send(h11.EndOfMessage())
        return True


class ToolCall(NamedTuple):
    """A tool call that a :class:`Stream` makes: its id, the tool's name, the arguments."""

    id: str
    name: str
    arguments: str


class TokenStream(Reply):
    """A streamed answer of ``tokens``, each of which may be held by a gate; the base of the
    streams of each API (:class:`Stream` here, ``anthropic_server.Stream`` for the Messages
    API), and of the :class:`Cutting` and :class:`Hanging` ways to break one off.

    A subclass writes its API's events in :meth:`serve`: before token ``i`` it awaits
    ``_may_send(exchange, i)`` (``False``: end the connection), then counts the token in
    :attr:`sent` before writing it; after the last token, ``_may_finish(exchange)``.

    Args:
        tokens: The content of the answer, one event per token.
        gated: Send each token after the first only once the test has opened its gate:
            ``gates[i]`` (an :class:`anyio.Event`) lets token ``i + 1`` go.
    """

    def __init__(self, tokens: Iterable[str], *, gated: bool = False) -> None:
        self.tokens = list(tokens)
        #: ``gates[i]`` lets token ``i + 1`` go (empty unless ``gated``).
        self.gates = [anyio.Event() for _ in self.tokens[1:]] if gated else []
        #: How many tokens the server has written, each counted as its write begins.
        self.sent = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self.tokens)} tokens, {self.sent} sent>"

    async def _may_send(self, exchange: _Exchange, index: int) -> bool:
        """Wait for the gate of token ``index``; ``False`` ends the connection instead."""
        if index and self.gates:
            await self.gates[index - 1].wait()
        return True

    async def _may_finish(self, exchange: _Exchange) -> bool:
        """After the last token: ``False`` ends the connection without finishing."""
        return True


class Stream(TokenStream):
    """A streamed answer: the Chat Completions chunks of ``tokens``, as server-sent events.

    Args:
        tokens: The content of the answer, one chunk per token.
        model: The ``model`` of the chunks (default: the model the request names).
        finish_reason: The ``finish_reason`` of the last chunk; ``None`` sends no such
            chunk (the stream still ends with ``[DONE]``).
        usage: ``(prompt_tokens, completion_tokens)`` for the usage chunk (default: the
            number of the request's messages, the number of tokens).
        gated: Send each token after the first only once the test has opened its gate:
            ``gates[i]`` (an :class:`anyio.Event`) lets token ``i + 1`` go.
        error: Instead of the finishing chunk, an ``{"error": {...}}`` event with this
            object (the way a server reports a failure after the stream started).
        tool_calls: Tool calls to make after the tokens, each in several chunks: one that
            names it, then its arguments ``fragment`` characters at a time.
        fragment: The length of the pieces of each call's arguments.
        interleave: Send the fragments of the calls by turns (call 0, call 1, call 0,
            ...) rather than one call after the other, as a server may.

    :attr:`sent` counts the tokens written so far, each counted as its write begins.
    """

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        model: str | None = None,
        finish_reason: str | None = "stop",
        usage: tuple[int, int] | None = None,
        gated: bool = False,
        error: Mapping[str, Any] | None = None,
        tool_calls: Iterable[ToolCall] = (),
        fragment: int = 4,
        interleave: bool = False,
    ) -> None:
        super().__init__(tokens, gated=gated)
        self.tool_calls = list(tool_calls)
        self.fragment = fragment
        self.interleave = interleave
        self.model = model
        self.finish_reason = finish_reason
        self.usage = usage
        self.error = error

    async def serve(self, exchange: _Exchange) -> bool:
        body = exchange.request.body if isinstance(exchange.request.body, dict) else {}
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        base: dict[str, Any] = {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": self.model if self.model is not None else body.get("model", "unknown"),
            "system_fingerprint": "fp_loopback",
            "choices": [],
        }
        if include_usage:
            base["usage"] = None  # as the API does: null in every chunk but the last

        async def event(choices: list[Any], **more: Any) -> None:
            chunk = {**base, "choices": choices, **more}
            await exchange.send(h11.Data(data=f"data: {json.dumps(chunk)}\n\n".encode()))

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> list[Any]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

        await exchange.start(
            200,
            {
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "x-request-id": f"req_{next(_ids)}",
            },
        )
        await event(choice({"role": "assistant", "content": ""}))
        for index, token in enumerate(self.tokens):
            if not await self._may_send(exchange, index):
                return False
            # Counted before the write: once the bytes are out, the client may read them
            # before this task runs again.
            self.sent += 1
            await event(choice({"content": token}))
        for delta in self._tool_call_deltas():
            await event(choice({"tool_calls": [delta]}))
        if not await self._may_finish(exchange):
            return False
        if self.error is not None:
            await exchange.send(
                h11.Data(data=f"data: {json.dumps({'error': dict(self.error)})}\n\n".encode())
            )
        else:
            if self.finish_reason is not None:
                await event(choice({}, self.finish_reason))
            if include_usage:
                messages = body.get("messages") or []
                prompt, completion = self.usage or (len(messages), len(self.tokens))
                usage = {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                }
                await event([], usage=usage)
            await exchange.send(h11.Data(data=b"data: [DONE]\n\n"))
        await exchange.send(h11.EndOfMessage())
        return True

    def _tool_call_deltas(self) -> list[dict[str, Any]]:
        """The ``delta.tool_calls`` entries that make the calls, in the order they are sent."""
        per_call = []
        for index, call in enumerate(self.tool_calls):
            named = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            pieces = [
                call.arguments[start : start + self.fragment]
                for start in range(0, len(call.arguments), self.fragment)
            ]
            per_call.append(
                [named, *({"index": index, "function": {"arguments": p}} for p in pieces)]
            )
        if not self.interleave:
            return [delta for deltas in per_call for delta in deltas]
        return [
            delta for row in itertools.zip_longest(*per_call) for delta in row if delta is not None
        ]


def calling(*calls: ToolCall, tokens: Iterable[str] = (), **options: Any) -> Stream:
    """A stream that calls tools (after ``tokens``, if any), finishing with ``"tool_calls"``."""
    return Stream(tokens, tool_calls=calls, finish_reason="tool_calls", **options)


class Cutting(TokenStream):
    """A stream whose connection closes after ``after`` tokens, without the API's end.

    The chunked body is left unterminated, so the client sees the connection break. Mixed
    into each API's stream: ``class Cut(Cutting, Stream)``.
    """

    def __init__(self, tokens: Iterable[str], *, after: int | None = None, **options: Any) -> None:
        super().__init__(tokens, **options)
        self.after = len(self.tokens) if after is None else after

    async def _may_send(self, exchange: _Exchange, index: int) -> bool:
        return index < self.after and await super()._may_send(exchange, index)

    async def _may_finish(self, exchange: _Exchange) -> bool:
        return False


class Cut(Cutting, Stream):
    """A Chat Completions stream cut after ``after`` tokens: no finish, no ``[DONE]``."""


async def _wait_for_disconnect(stream: anyio.abc.ByteStream) -> None:
    """Return when the client has closed the connection (the end of what it sends)."""
    try:
        while True:
            # An HTTP/1.1 client sends nothing more while it waits for (or reads) a
            # response: what ends this is the end of the stream, or a reset, when it closes.
            await stream.receive()
    except _GONE:
        return


class Hanging(TokenStream):
    """A stream that stops after ``after`` tokens and waits for the client to close it.

    :attr:`disconnected` is set when the server sees the connection closed (the end of
    the stream it reads from). Mixed into each API's stream: ``class Hang(Hanging, Stream)``.
    """

    def __init__(self, tokens: Iterable[str], *, after: int | None = None, **options: Any) -> None:
        super().__init__(tokens, **options)
        self.after = len(self.tokens) if after is None else after
        #: Set when the client has closed the connection.
        self.disconnected = anyio.Event()

    async def _may_send(self, exchange: _Exchange, index: int) -> bool:
        if index >= self.after:
            await self._hang(exchange)
            return False
        return await super()._may_send(exchange, index)

    async def _may_finish(self, exchange: _Exchange) -> bool:
        await self._hang(exchange)
        return False

    async def _hang(self, exchange: _Exchange) -> None:
        await _wait_for_disconnect(exchange.stream)
        self.disconnected.set()


class Hang(Hanging, Stream):
    """A Chat Completions stream that stops after ``after`` tokens, until the client closes."""


class Stall(Reply):
    """No answer at all, not even the status line: wait for the client to close.

    :attr:`arrived` is set when the request has been read, :attr:`disconnected` when the
    server sees the connection closed.
    """

    def __init__(self) -> None:
        #: Set when the server has read the request (and starts to say nothing).
        self.arrived = anyio.Event()
        #: Set when the client has closed the connection.
        self.disconnected = anyio.Event()

    def __repr__(self) -> str:
        return "<Stall>"

    async def serve(self, exchange: _Exchange) -> bool:
        self.arrived.set()
        await _wait_for_disconnect(exchange.stream)
        self.disconnected.set()
        return False


class ChatServer:
    """The running server: where it listens, what it received, what it will answer.

    Subclasses speak other APIs over the same HTTP machinery (``anthropic_server``): they
    set :attr:`PREFIX` and :meth:`_unscripted`.
    """

    #: The path of :attr:`base_url`, that the SDK puts before the API's paths.
    PREFIX = "/v1"

    def __init__(self, port: int, default: Reply | None) -> None:
        #: The port it listens on, on 127.0.0.1.
        self.port = port
        #: ``http://127.0.0.1:PORT``, without a path.
        self.origin = f"http://127.0.0.1:{port}"
        #: The SDK's ``base_url``.
        self.base_url = f"{self.origin}{self.PREFIX}"
        #: Every request received, in order.
        self.requests: list[Request] = []
        #: The reply for requests that no scripted reply is left for (``None``: a 418).
        self.default = default
        #: How many connections were accepted, and how many are still open.
        self.connections = 0
        self.open_connections = 0
        self._replies: deque[Reply] = deque()
        self._idle: anyio.Event | None = None
        self._arrival: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<ChatServer {self.base_url}, {len(self.requests)} requests>"

    def reply(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order (after those queued)."""
        self._replies.extend(replies)

    @property
    def pending(self) -> int:
        """How many scripted replies are left (not counting the default)."""
        return len(self._replies)

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies of the requests received, in order."""
        return [request.body for request in self.requests]

    async def wait_for_requests(self, count: int) -> None:
        """Wait until the server has received ``count`` requests in all."""
        while len(self.requests) < count:
            if self._arrival is None:
                self._arrival = anyio.Event()
            await self._arrival.wait()

    async def wait_closed(self) -> None:
        """Wait until no connection is open (the clients have closed theirs)."""
        while self.open_connections:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    def _next_reply(self) -> Reply:
        if self._replies:
            return self._replies.popleft()
        if self.default is not None:
            return self.default
        return self._unscripted()

    def _unscripted(self) -> Reply:
        """The reply to a request that the test scripted no reply for: an error."""
        return Fail(418, "the test scripted no reply for this request", type="test_error")

    async def _serve_connection(self, stream: anyio.abc.ByteStream) -> None:
        self.connections += 1
        self.open_connections += 1
        try:
            async with stream:
                connection = h11.Connection(h11.SERVER)
                while True:
                    try:
                        request = await self._receive_request(stream, connection)
                        if request is None:
                            return
                        self.requests.append(request)
                        if self._arrival is not None:
                            self._arrival.set()
                            self._arrival = None
                        exchange = _Exchange(stream, connection, request)
                        if not await self._next_reply().serve(exchange):
                            return
                    except _GONE:
                        return
                    if connection.our_state is not h11.DONE:
                        return
                    # Keep-alive: serve the connection's next request.
                    connection.start_next_cycle()
        finally:
            self.open_connections -= 1
            if not self.open_connections and self._idle is not None:
                self._idle.set()
                self._idle = None

    async def _receive_request(
        self, stream: anyio.abc.ByteStream, connection: h11.Connection
    ) -> Request | None:
        """Read one whole request; ``None`` when the client closed the connection first."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    data = b""
                connection.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = {name.decode().lower(): value.decode() for name, value in head.headers}
                return Request(
                    head.method.decode(),
                    head.target.decode(),
                    headers,
                    json.loads(body) if body else None,
                )
            else:  # ConnectionClosed, or PAUSED (a client that pipelines: not the SDK)
                return None


def chat_server(*, default: Reply | None = None) -> AbstractAsyncContextManager[ChatServer]:
    """Run a Chat Completions server on 127.0.0.1 for the duration of the block.

    Args:
        default: The reply to requests that no scripted reply is left for (it is used
            again for each of them); ``None`` answers them with a 418 error.
    """
    return run_server(ChatServer, default)


@asynccontextmanager
async def run_server(kind: type[S], default: Reply | None) -> AsyncIterator[S]:
    """Run a server of ``kind`` on 127.0.0.1 and an ephemeral port, for the block."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server = kind(port, default)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, server._serve_connection)
        try:
            yield server
        finally:
            group.cancel_scope.cancel()
