"""The OpenAI adapter, driven by the real ``openai`` SDK against a loopback HTTP server.

Every test talks HTTP/1.1 over TCP on 127.0.0.1 to :mod:`llm_server`, which speaks the
Chat Completions streaming protocol (server-sent events, the usage chunk, ``[DONE]``, the
API's error bodies): nothing is mocked between the adapter and the socket. Each test runs
on asyncio and on Trio, under ``anyio.fail_after`` so that none can hang.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import openai
import pytest

from agentforum import (
    AgentCancelled,
    AgentError,
    CallMessage,
    ErrorMessage,
    Forum,
    ForwardedMessage,
    InteractionContext,
    Message,
    MessagePromise,
    MessageSequence,
)
from agentforum.llms import (
    LLMAuthenticationError,
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMRequestError,
    LLMServerError,
)
from agentforum.llms.openai import openai_agent
from llm_server import (
    SDK_GENERATOR_WARNING,
    ChatServer,
    Cut,
    Fail,
    Hang,
    Reply,
    Stall,
    Stream,
    chat_server,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

pytestmark = [
    pytest.mark.anyio,
    # On Trio, the SDK leaves the async generators under a finished stream for Trio to
    # close, which warns about each of them (see llm_server.SDK_GENERATOR_WARNING).
    pytest.mark.filterwarnings(f"ignore:{SDK_GENERATOR_WARNING}:ResourceWarning"),
]

#: Seconds any one test may take before it fails instead of hanging.
LIMIT = 5


@asynccontextmanager
async def serving(*, max_retries: int = 0) -> AsyncIterator[tuple[ChatServer, openai.AsyncOpenAI]]:
    """A loopback server and an SDK client pointed at it (closed on the way out)."""
    async with (
        chat_server() as server,
        openai.AsyncOpenAI(
            base_url=server.base_url, api_key="test-key", max_retries=max_retries
        ) as client,
    ):
        yield server, client


async def failure_of(sequence: MessageSequence) -> AgentError:
    """The AgentError a sequence ends with (the test observes it: no error at exit)."""
    with pytest.raises(AgentError) as info:
        await sequence.messages()
    return info.value


async def drain(sequence: MessageSequence) -> tuple[list[MessagePromise], AgentError]:
    """Iterate a sequence that must end in an AgentError; return its promises and the error."""
    promises: list[MessagePromise] = []
    try:
        async for promise in sequence:
            promises.append(promise)  # noqa: PERF401 - keep those before the error
    except AgentError as error:
        return promises, error
    raise AssertionError("the sequence ended without an AgentError")


def cause_chain(error: BaseException) -> list[type[BaseException]]:
    """The types of ``error`` and of its ``__cause__``, its cause's cause, and so on."""
    chain: list[type[BaseException]] = []
    current: BaseException | None = error
    while current is not None:
        chain.append(type(current))
        current = current.__cause__
    return chain


# -- streaming ----------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["direct", "proxy"])
async def test_tokens_reach_the_consumer_live_and_the_message_records_the_metadata(
    via: str,
) -> None:
    """Each token reaches the consumer before the server sends the next one, through a proxy too.

    The server holds token i + 1 until the consumer has seen token i, so the test would hang
    (and fail) if the adapter or the forum buffered the answer. The recorded message has the
    whole content and, as metadata, the model the chunks name, the finish reason and the
    usage of the usage chunk.
    """
    reply = Stream(["Hel", "lo", " world"], gated=True, usage=(7, 3))
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(reply)
            gpt = forum.agent(openai_agent(model="gpt-test", client=client), alias="gpt")

            @forum.agent
            async def proxy(ctx: InteractionContext) -> None:
                ctx.respond(gpt.ask(ctx.request_messages))

            async with forum:
                sequence = (gpt if via == "direct" else proxy).ask("Say hello")
                promise = await anext(aiter(sequence))
                seen: list[str] = []
                async for token in promise:
                    seen.append(token)
                    # Token i is here, and the server has not sent token i + 1 yet.
                    assert reply.sent == len(seen)
                    if len(seen) <= len(reply.gates):
                        reply.gates[len(seen) - 1].set()
                message = await promise
                assert await sequence.messages() == [message]
    assert seen == ["Hel", "lo", " world"]
    assert message.content == "Hello world"
    if via == "proxy":
        assert isinstance(message, ForwardedMessage)
        assert message.sender == "proxy"
        message = await forum.get(message.original)
    assert message.sender == "gpt"
    assert dict(message.metadata) == {
        "model": "gpt-test",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    assert len(server.requests) == 1


async def test_without_include_usage_no_stream_options_are_sent_and_no_usage_recorded() -> None:
    """include_usage=False: the request has no stream_options, the metadata no usage key."""
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(Stream(["Hi"], finish_reason="length"))
            agent = openai_agent(model="gpt-test", client=client, include_usage=False)
            gpt = forum.agent(agent, alias="gpt")
            async with forum:
                message = await gpt.ask("hello").last()
    assert dict(message.metadata) == {"model": "gpt-test", "finish_reason": "length"}
    [body] = server.bodies
    assert body["stream"] is True
    assert "stream_options" not in body


async def test_the_request_carries_the_branch_the_parameters_and_the_key() -> None:
    """The request body is the branch as chat messages, with the defaults and the call kwargs.

    The system prompt comes first; the agent's own past messages are ``assistant`` after a
    ``branch_from`` continuation; the user's and other agents' messages are ``user``; an
    ErrorMessage on the branch is left out. Defaults are sent, a call kwarg overrides one,
    ``model=`` per call picks the model, and JSON lists and objects reach the server as
    such. The Authorization header carries the API key.
    """
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(Stream(["Paris."]), Stream(["It is big."]), Stream(["Yes."]))
            agent = openai_agent(
                model="gpt-test", client=client, system="Be brief.", temperature=0.2, max_tokens=50
            )
            gpt = forum.agent(agent, alias="gpt")

            @forum.agent
            async def critic(ctx: InteractionContext) -> None:
                ctx.respond("Too short.")

            @forum.agent
            async def failing(ctx: InteractionContext) -> None:
                raise ValueError("a broken tool")

            async with forum:
                first = await gpt.ask("Capital of France?").last()
                second = await gpt.ask(
                    "Tell me more.",
                    branch_from=first,
                    temperature=0.7,
                    model="gpt-other",
                    stop=["END"],
                    response_format={"type": "text"},
                ).last()
                critique = await critic.ask(branch_from=second).last()
                error = await failure_of(failing.ask("use the tool", branch_from=critique))
                third = await gpt.ask("Sure?", branch_from=error.message).last()

    assert [request.path for request in server.requests] == ["/v1/chat/completions"] * 3
    assert server.connections == 1  # the SDK kept the connection alive between requests
    assert {request.headers["authorization"] for request in server.requests} == {"Bearer test-key"}
    one, two, three = server.bodies
    assert one == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "max_tokens": 50,
    }
    assert two["model"] == "gpt-other"
    assert (two["temperature"], two["max_tokens"]) == (0.7, 50)
    assert (two["stop"], two["response_format"]) == (["END"], {"type": "text"})
    assert two["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Tell me more."},
    ]
    assert three["messages"] == [
        *two["messages"],
        {"role": "assistant", "content": "It is big."},
        {"role": "user", "content": "Too short."},  # another agent's message
        {"role": "user", "content": "use the tool"},  # the ErrorMessage after it is left out
        {"role": "user", "content": "Sure?"},
    ]
    assert (three["model"], three["temperature"]) == ("gpt-test", 0.2)
    assert "stop" not in three
    assert second.metadata["model"] == "gpt-other"
    assert third.content == "Yes."


# -- caching ------------------------------------------------------------------------------


async def test_an_identical_call_is_answered_from_the_cache_without_a_request() -> None:
    """A repeated call makes no second HTTP request and returns the very same messages.

    A call that differs only in a keyword argument (a Chat Completions parameter, part of
    the call's hash) is a new question: it makes a request.
    """
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(Stream(["Four."]), Stream(["Four!"]))
            gpt = forum.agent(openai_agent(model="gpt-test", client=client), alias="gpt")
            async with forum:
                first = await gpt.ask("2 + 2?", temperature=0).messages()
                again = await gpt.ask("2 + 2?", temperature=0).messages()
                assert len(server.requests) == 1
                warmer = await gpt.ask("2 + 2?", temperature=1).messages()
    assert [message.hash for message in again] == [message.hash for message in first]
    assert [message.content for message in again] == ["Four."]
    assert [message.content for message in warmer] == ["Four!"]
    assert len(server.requests) == 2
    assert [body["temperature"] for body in server.bodies] == [0, 1]


# -- errors -------------------------------------------------------------------------------


#: What the API says with each error status: the error's message, type and code.
API_ERRORS = {
    401: ("Incorrect API key provided: test-key.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: ("The model `gpt-nope` does not exist.", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
}


@pytest.mark.parametrize(
    ("status", "error_class", "sdk_error", "max_retries", "requests"),
    [
        pytest.param(401, LLMAuthenticationError, openai.AuthenticationError, 2, 1, id="401"),
        pytest.param(403, LLMAuthenticationError, openai.PermissionDeniedError, 2, 1, id="403"),
        pytest.param(429, LLMRateLimitError, openai.RateLimitError, 2, 3, id="429"),
        pytest.param(500, LLMServerError, openai.InternalServerError, 1, 2, id="500"),
        pytest.param(404, LLMRequestError, openai.NotFoundError, 2, 1, id="404"),
    ],
)
async def test_an_http_error_ends_the_branch_with_its_llm_error(
    status: int,
    error_class: type[LLMError],
    sdk_error: type[openai.APIStatusError],
    max_retries: int,
    requests: int,
) -> None:
    """An HTTP error status ends the branch with the LLM error for it, after the SDK's retries.

    401/403 are LLMAuthenticationError, 429 LLMRateLimitError, 5xx LLMServerError (the last
    two retried by the SDK: the server gets ``max_retries + 1`` requests), another 4xx (an
    unknown model) LLMRequestError. No response message is recorded: the branch is the
    request, the CallMessage, the ErrorMessage. The consumer's AgentError has the LLM error
    as its cause, and that one the SDK's exception. The failure is not cached: the same
    question asked again reaches the server again.
    """
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving(max_retries=max_retries) as (server, client):
            text, kind, code = API_ERRORS[status]
            # A server-directed delay of 1 ms keeps the SDK's retries fast.
            fail = Fail(status, text, type=kind, code=code, headers={"retry-after-ms": "1"})
            server.reply(*[fail] * requests)
            gpt = forum.agent(openai_agent(model="gpt-nope", client=client), alias="gpt")
            async with forum:
                error = await failure_of(gpt.ask("hello"))
                branch = await forum.history(error.message, include_calls=True)
                assert len(server.requests) == requests
                # A failed call is not cached: asking again asks the server again.
                server.reply(Stream(["Hi."]))
                again = await gpt.ask("hello").last()
    assert again.content == "Hi."
    assert len(server.requests) == requests + 1
    end = error.message
    assert end.error_type == f"agentforum.llms.{error_class.__name__}"
    assert text in end.content
    assert str(server.base_url) in end.content
    assert [type(message) for message in branch] == [Message, CallMessage, ErrorMessage]
    assert end.parent == branch[1].hash
    assert cause_chain(error)[:3] == [AgentError, error_class, sdk_error]


async def test_a_server_that_cannot_be_reached_is_an_llm_connection_error() -> None:
    """Connection refused (a port nobody listens on) ends the branch with LLMConnectionError."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0) as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
    # The port is closed now: connecting to it is refused.
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="test-key", max_retries=0
        ) as client:
            gpt = forum.agent(openai_agent(model="gpt-test", client=client), alias="gpt")
            async with forum:
                error = await failure_of(gpt.ask("anyone there?"))
                branch = await forum.history(error.message, include_calls=True)
    assert error.message.error_type == "agentforum.llms.LLMConnectionError"
    assert f"127.0.0.1:{port}" in error.message.content
    assert [type(message) for message in branch] == [Message, CallMessage, ErrorMessage]
    assert cause_chain(error)[:3] == [AgentError, LLMConnectionError, openai.APIConnectionError]


async def test_without_a_client_or_a_key_the_call_fails_with_an_authentication_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """client=None and no OPENAI_API_KEY: LLMAuthenticationError, before any request."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    forum = Forum()
    gpt = forum.agent(openai_agent(model="gpt-test"), alias="gpt")
    with anyio.fail_after(LIMIT):
        async with forum:
            error = await failure_of(gpt.ask("hello?"))
    assert error.message.error_type == "agentforum.llms.LLMAuthenticationError"
    assert "could not be made" in error.message.content
    assert cause_chain(error)[:3] == [AgentError, LLMAuthenticationError, openai.OpenAIError]


@pytest.mark.parametrize(
    ("make_reply", "error_class"),
    [
        pytest.param(
            lambda: Cut(["Hel", "lo", " world"], after=2), LLMConnectionError, id="connection-cut"
        ),
        pytest.param(
            lambda: Stream(["Hel", "lo"], finish_reason=None),
            LLMConnectionError,
            id="no-finish-reason",
        ),
        pytest.param(
            lambda: Stream(["Hel", "lo"], error={"message": "overloaded", "type": "server_error"}),
            LLMError,
            id="error-event",
        ),
    ],
)
async def test_a_stream_that_breaks_off_keeps_its_tokens_then_ends_in_an_error(
    make_reply: Callable[[], Reply], error_class: type[LLMError]
) -> None:
    """A stream that stops mid-way keeps the tokens it had: an incomplete message, then the error.

    Three ways a stream breaks off: the connection closes without the end of the chunked
    body; the stream ends ([DONE]) with no finish reason; the server sends an error event.
    The consumer saw the tokens live; the message is recorded with them and
    ``incomplete: True``, and the branch ends with an ErrorMessage after it.
    """
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(make_reply())
            gpt = forum.agent(openai_agent(model="gpt-test", client=client), alias="gpt")
            async with forum:
                promises, error = await drain(gpt.ask("Say hello"))
                [promise] = promises
                tokens = [token async for token in promise]
                cut = await promise
    assert tokens == ["Hel", "lo"]
    assert cut.content == "Hello"
    # The model is recorded as soon as the first chunk names it: a cut message keeps it
    # (and the usage, if the server sent it before the stream broke off).
    assert {key: cut.metadata[key] for key in ("model", "incomplete")} == {
        "model": "gpt-test",
        "incomplete": True,
    }
    assert "finish_reason" not in cut.metadata
    end = error.message
    assert end.error_type == f"agentforum.llms.{error_class.__name__}"
    assert "after 2 tokens" in end.content
    assert end.parent == cut.hash
    assert cause_chain(error)[:2] == [AgentError, error_class]


# -- cancellation -------------------------------------------------------------------------


@pytest.mark.parametrize("own_client", [False, True], ids=["client", "client=None"])
async def test_cancelling_mid_stream_closes_the_connection_at_once(
    own_client: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """seq.cancel() after a token: AgentCancelled, the connection closed, the message cut.

    The server has sent one token and then sends nothing; the consumer cancels the call as
    soon as it sees that token. The server must see the client close the connection while
    the forum still runs (the adapter closes the HTTP stream, shielded, even though it is
    cancelled), with a client of the user's or one the call opened itself. The message is recorded
    with the token it had, ``incomplete: True``.
    """
    reply = Hang(["Hel", "lo"], after=1)
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(reply)
            if own_client:
                monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
                monkeypatch.setenv("OPENAI_API_KEY", "env-key")
            agent = openai_agent(model="gpt-test", client=None if own_client else client)
            gpt = forum.agent(agent, alias="gpt")
            async with forum:
                sequence = gpt.ask("Say hello")
                promise = await anext(aiter(sequence))
                assert await anext(aiter(promise)) == "Hel"
                sequence.cancel()
                # Only the adapter closes this connection before serving() ends (the
                # user's client stays open until then): else the wait ends at LIMIT.
                await reply.disconnected.wait()
                promises, error = await drain(sequence)
                cut = await promises[0]
            await server.wait_closed()
    assert isinstance(error, AgentCancelled)
    assert error.message.error_type == "agentforum.AgentCancelled"
    assert cut.content == "Hel"
    assert dict(cut.metadata) == {"model": "gpt-test", "incomplete": True}
    assert error.message.parent == cut.hash
    assert len(server.requests) == 1


async def test_cancelling_before_the_server_answers_records_no_message() -> None:
    """seq.cancel() while the server has not answered yet: no message, the connection closed.

    The adapter responds only once the server accepted the request, so the branch is the
    request, the CallMessage and the AgentCancelled ErrorMessage; the SDK's request is
    abandoned and its connection closed at once.
    """
    reply = Stall()
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(reply)
            gpt = forum.agent(openai_agent(model="gpt-test", client=client), alias="gpt")
            async with forum:
                sequence = gpt.ask("Say hello")
                await reply.arrived.wait()
                sequence.cancel()
                await reply.disconnected.wait()  # the adapter closes it (the client is open)
                promises, error = await drain(sequence)
                branch = await forum.history(error.message, include_calls=True)
    assert promises == []
    assert isinstance(error, AgentCancelled)
    assert [type(message) for message in branch] == [Message, CallMessage, ErrorMessage]


async def test_concurrent_calls_stream_at_the_same_time_on_their_own_connections() -> None:
    """Two calls at once stream side by side, each on its own connection, without mixing.

    Both servers' streams are held after their first token until both consumers have seen
    theirs: neither call waits for the other.
    """
    replies = {"red": Stream(["Red", "!"], gated=True), "blue": Stream(["Blue", "?"], gated=True)}
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            gpt = forum.agent(openai_agent(model="gpt-test", client=client), alias="gpt")
            async with forum:
                sequences = {}
                for colour, reply in replies.items():
                    server.reply(reply)
                    sequences[colour] = gpt.ask(f"Say {colour}")
                    # Wait for this request to arrive, so the replies go to the right call.
                    await server.wait_for_requests(len(sequences))
                promises = {
                    colour: await anext(aiter(sequence)) for colour, sequence in sequences.items()
                }
                firsts = {
                    colour: await anext(aiter(promise)) for colour, promise in promises.items()
                }
                assert firsts == {"red": "Red", "blue": "Blue"}
                assert server.open_connections == 2
                for reply in replies.values():
                    reply.gates[0].set()
                messages = {colour: await sequence.last() for colour, sequence in sequences.items()}
    assert {colour: message.content for colour, message in messages.items()} == {
        "red": "Red!",
        "blue": "Blue?",
    }
    assert [body["messages"][-1]["content"] for body in server.bodies] == ["Say red", "Say blue"]
    assert server.connections == 2


# -- a client per call --------------------------------------------------------------------


async def test_without_a_client_each_call_opens_and_closes_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """client=None: each call makes an AsyncOpenAI from the environment, and closes it.

    OPENAI_BASE_URL and OPENAI_API_KEY point the default client at the loopback server.
    Two calls make two clients (two connections), both closed when their call ends.
    """
    made: list[openai.AsyncOpenAI] = []

    class Recorded(openai.AsyncOpenAI):
        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            made.append(self)

    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with chat_server() as server:
            monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
            monkeypatch.setenv("OPENAI_API_KEY", "env-key")
            monkeypatch.setattr(openai, "AsyncOpenAI", Recorded)
            server.reply(Stream(["One."]), Stream(["Two."]))
            agent = openai_agent(model="gpt-test")
            assert agent.client is None
            gpt = forum.agent(agent, alias="gpt")
            async with forum:
                first = await gpt.ask("first").last()
                second = await gpt.ask("second").last()
            assert (first.content, second.content) == ("One.", "Two.")
            assert len(made) == 2
            assert all(client.is_closed() for client in made)
            await server.wait_closed()
            assert server.connections == 2
    assert [request.headers["authorization"] for request in server.requests] == [
        "Bearer env-key"
    ] * 2


# -- arguments ----------------------------------------------------------------------------


async def test_arguments_the_agent_refuses() -> None:
    """Reserved parameters are TypeErrors, n != 1 a ValueError, an empty model a TypeError.

    In the agent's defaults they are refused at once; in a call's kwargs the call ends
    with the error, before any request is sent.
    """
    for reserved in ("messages", "stream", "stream_options"):
        options: dict[str, Any] = {reserved: None}
        with pytest.raises(TypeError, match=reserved):
            openai_agent(model="gpt-test", **options)
    for model in ("", None, 3):
        with pytest.raises(TypeError, match="model"):
            openai_agent(model=model)  # type: ignore[arg-type]
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(Stream(["Hi."]))
            gpt = forum.agent(openai_agent(model="gpt-test", client=client), alias="gpt")
            many = forum.agent(openai_agent(model="gpt-test", client=client, n=2), alias="many")
            async with forum:
                streaming = await failure_of(gpt.ask("hi", stream=False))
                messages = await failure_of(gpt.ask("hi", messages=[]))
                two = await failure_of(gpt.ask("hi", n=2))
                default_two = await failure_of(many.ask("hi"))
                one = await gpt.ask("hi", n=1).last()
    assert (streaming.message.error_type, messages.message.error_type) == ("TypeError",) * 2
    assert "stream" in streaming.message.content
    assert "messages" in messages.message.content
    assert (two.message.error_type, default_two.message.error_type) == ("ValueError",) * 2
    # Only the call with n=1 reached the server.
    assert one.content == "Hi."
    assert [body["n"] for body in server.bodies] == [1]
