"""The Anthropic adapter, driven by the real ``anthropic`` SDK against a loopback HTTP server.

Every test talks HTTP/1.1 over TCP on 127.0.0.1 to :mod:`anthropic_server`, which speaks
the Messages API's streaming protocol (``message_start``, ``content_block_*`` with
``text_delta`` and ``input_json_delta``, ``message_delta``, ``message_stop``, ``ping``,
``error`` events, and the API's error bodies): nothing is mocked between the adapter and
the socket. Each async test runs on asyncio and on Trio, under ``anyio.fail_after`` so that
none can hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anthropic
import anyio
import anyio.abc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    LLMToolLoopError,
    tool,
)
from agentforum.llms.anthropic import anthropic_agent, anthropic_messages
from anthropic_server import (
    SDK_GENERATOR_WARNING,
    Cut,
    Fail,
    Hang,
    MessagesServer,
    Stream,
    ToolUse,
    messages_server,
    using,
)
from llm_server import Stall

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from llm_server import Reply

pytestmark = [
    # On Trio, the SDK leaves the async generators under a finished stream for Trio to
    # close, which warns about each of them (see anthropic_server.SDK_GENERATOR_WARNING).
    pytest.mark.filterwarnings(f"ignore:{SDK_GENERATOR_WARNING}:ResourceWarning"),
]

#: Seconds any one test may take before it fails instead of hanging.
LIMIT = 5
QUESTION = "Weather in Paris?"
PARIS = ToolUse("toolu_1", "get_weather", '{"city": "Paris"}')
#: The environment variables by which the SDK finds credentials on its own.
CREDENTIALS = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_PROFILE",
    "ANTHROPIC_IDENTITY_TOKEN",
    "ANTHROPIC_IDENTITY_TOKEN_FILE",
    "ANTHROPIC_FEDERATION_RULE_ID",
    "ANTHROPIC_ORGANIZATION_ID",
)


@asynccontextmanager
async def serving(
    *, max_retries: int = 0, client_timeout: float | None = None
) -> AsyncIterator[tuple[MessagesServer, anthropic.AsyncAnthropic]]:
    """A loopback server and an SDK client pointed at it (closed on the way out)."""
    options: dict[str, Any] = {} if client_timeout is None else {"timeout": client_timeout}
    async with (
        messages_server() as server,
        anthropic.AsyncAnthropic(
            base_url=server.base_url, api_key="test-key", max_retries=max_retries, **options
        ) as client,
    ):
        yield server, client


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment where the SDK finds no credentials: no variables, no profile on disk."""
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ANTHROPIC_CONFIG_DIR", raising=False)
    # The SDK looks for profiles under ~/.config/anthropic: an empty home has none.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)


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


def recorded(*uses: ToolUse) -> tuple[dict[str, str], ...]:
    """What a tool-using turn's ``metadata["tool_calls"]`` holds."""
    return tuple({"id": use.id, "name": use.name, "arguments": use.input} for use in uses)


def assistant_turn(*uses: ToolUse, text: str = "") -> dict[str, Any]:
    """The assistant message that the SDK must send back for a turn that used tools."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content.extend(
        {"type": "tool_use", "id": use.id, "name": use.name, "input": json.loads(use.input)}
        for use in uses
    )
    return {"role": "assistant", "content": content}


def tool_results(*results: tuple[str, str, bool]) -> dict[str, Any]:
    """The user message of the results ``(id, content, is_error)`` of a turn's tool uses."""
    blocks = []
    for use_id, content, error in results:
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": use_id, "content": content}
        if error:
            block["is_error"] = True
        blocks.append(block)
    return {"role": "user", "content": blocks}


# -- streaming ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("via", ["direct", "proxy"])
async def test_tokens_reach_the_consumer_live_and_the_message_records_the_metadata(
    via: str,
) -> None:
    """Each token reaches the consumer before the server sends the next one, through a proxy too.

    The server holds token i + 1 until the consumer has seen token i, so the test would hang
    (and fail) if the adapter or the forum buffered the answer. The recorded message has the
    whole content and, as metadata, the model of ``message_start``, the ``stop_reason`` and
    the usage (input tokens from ``message_start``, output tokens from ``message_delta``).
    """
    reply = Stream(["Hel", "lo", " world"], gated=True, usage=(7, 3))
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(reply)
            claude = forum.agent(
                anthropic_agent(model="claude-test", client=client), alias="claude"
            )

            @forum.agent
            async def proxy(ctx: InteractionContext) -> None:
                ctx.respond(claude.ask(ctx.request_messages))

            async with forum:
                sequence = (claude if via == "direct" else proxy).ask("Say hello")
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
    assert message.sender == "claude"
    assert dict(message.metadata) == {
        "model": "claude-test",
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_the_request_carries_the_system_prompt_the_branch_and_the_parameters() -> None:
    """The request body: ``system`` at the top level, the branch as messages, the parameters.

    The system prompt is the API's ``system``, never a message; the agent's own past
    messages are ``assistant`` after a ``branch_from`` continuation; the user's and other
    agents' messages are ``user``; an ErrorMessage on the branch is left out. ``max_tokens``
    is the agent's, or the call's; defaults and call kwargs (any Messages API parameter)
    are in the body, a call's overriding the agent's; ``model=`` per call picks the model.
    The Authorization header carries the API key; the path is ``/v1/messages``.
    """
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(
                Stream(["Paris."]),
                Stream(["It is big."], model="claude-other-2026"),
                Stream(["Yes."]),
            )
            agent = anthropic_agent(
                model="claude-test",
                client=client,
                system="Be brief.",
                max_tokens=50,
                temperature=0.2,
                metadata={"user_id": "u-1"},
            )
            claude = forum.agent(agent, alias="claude")

            @forum.agent
            async def critic(ctx: InteractionContext) -> None:
                ctx.respond("Too short.")

            @forum.agent
            async def failing(ctx: InteractionContext) -> None:
                raise ValueError("a broken tool")

            async with forum:
                first = await claude.ask("Capital of France?").last()
                second = await claude.ask(
                    "Tell me more.",
                    branch_from=first,
                    temperature=0.7,
                    model="claude-other",
                    max_tokens=200,
                    stop_sequences=["END"],
                ).last()
                critique = await critic.ask(branch_from=second).last()
                error = await failure_of(failing.ask("use the tool", branch_from=critique))
                third = await claude.ask("Sure?", branch_from=error.message).last()

    assert [request.path for request in server.requests] == ["/v1/messages"] * 3
    assert server.connections == 1  # the SDK kept the connection alive between requests
    assert {request.headers["authorization"] for request in server.requests} == {"Bearer test-key"}
    one, two, three = server.bodies
    assert one == {
        "model": "claude-test",
        "max_tokens": 50,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Capital of France?"}],
        "stream": True,
        "temperature": 0.2,
        "metadata": {"user_id": "u-1"},
    }
    assert (two["model"], two["max_tokens"], two["temperature"]) == ("claude-other", 200, 0.7)
    assert (two["system"], two["stop_sequences"]) == ("Be brief.", ["END"])
    assert two["messages"] == [
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
    assert (three["model"], three["max_tokens"], three["temperature"]) == ("claude-test", 50, 0.2)
    assert "stop_sequences" not in three
    assert second.metadata["model"] == "claude-other-2026"  # as the server names it
    assert third.content == "Yes."


# -- caching ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_identical_call_is_answered_from_the_cache_without_a_request() -> None:
    """A repeated call makes no second HTTP request and returns the very same messages.

    A call that differs only in a keyword argument (a Messages API parameter, part of the
    call's hash) is a new question: it makes a request.
    """
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(Stream(["Four."]), Stream(["Four!"]))
            claude = forum.agent(
                anthropic_agent(model="claude-test", client=client), alias="claude"
            )
            async with forum:
                first = await claude.ask("2 + 2?", temperature=0).messages()
                again = await claude.ask("2 + 2?", temperature=0).messages()
                assert len(server.requests) == 1
                warmer = await claude.ask("2 + 2?", temperature=1).messages()
    assert [message.hash for message in again] == [message.hash for message in first]
    assert [message.content for message in again] == ["Four."]
    assert [message.content for message in warmer] == ["Four!"]
    assert len(server.requests) == 2
    assert [body["temperature"] for body in server.bodies] == [0, 1]


# -- errors -------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error_class", "sdk_error", "max_retries", "requests"),
    [
        pytest.param(400, LLMRequestError, anthropic.BadRequestError, 2, 1, id="400"),
        pytest.param(401, LLMAuthenticationError, anthropic.AuthenticationError, 2, 1, id="401"),
        pytest.param(403, LLMAuthenticationError, anthropic.PermissionDeniedError, 2, 1, id="403"),
        pytest.param(404, LLMRequestError, anthropic.NotFoundError, 2, 1, id="404"),
        pytest.param(429, LLMRateLimitError, anthropic.RateLimitError, 2, 3, id="429"),
        pytest.param(500, LLMServerError, anthropic.InternalServerError, 1, 2, id="500"),
        pytest.param(529, LLMServerError, anthropic.OverloadedError, 1, 2, id="529"),
    ],
)
async def test_an_http_error_ends_the_branch_with_its_llm_error(
    status: int,
    error_class: type[LLMError],
    sdk_error: type[anthropic.APIStatusError],
    max_retries: int,
    requests: int,
) -> None:
    """An HTTP error status ends the branch with the LLM error for it, after the SDK's retries.

    400 and 404 are LLMRequestError, 401/403 LLMAuthenticationError, 429
    LLMRateLimitError, 500 and 529 (overloaded) LLMServerError (the last three retried by
    the SDK: the server gets ``max_retries + 1`` requests). No response message is
    recorded: the branch is the request, the CallMessage, the ErrorMessage, whose text has
    the API's message and names the server. The consumer's AgentError has the LLM error as
    its cause, and that one the SDK's exception. The failure is not cached.
    """
    text = f"the API's own words for a {status}"
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving(max_retries=max_retries) as (server, client):
            # A server-directed delay of 1 ms keeps the SDK's retries fast.
            fail = Fail(status, text, headers={"retry-after-ms": "1"})
            server.reply(*[fail] * requests)
            claude = forum.agent(
                anthropic_agent(model="claude-nope", client=client), alias="claude"
            )
            async with forum:
                error = await failure_of(claude.ask("hello"))
                branch = await forum.history(error.message, include_calls=True)
                assert len(server.requests) == requests
                # A failed call is not cached: asking again asks the server again.
                server.reply(Stream(["Hi."]))
                again = await claude.ask("hello").last()
    assert again.content == "Hi."
    assert len(server.requests) == requests + 1
    end = error.message
    assert end.error_type == f"agentforum.llms.{error_class.__name__}"
    assert text in end.content
    assert str(status) in end.content
    assert server.base_url in end.content
    assert [type(message) for message in branch] == [Message, CallMessage, ErrorMessage]
    assert end.parent == branch[1].hash
    assert cause_chain(error)[:3] == [AgentError, error_class, sdk_error]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "error_class"),
    [
        pytest.param("overloaded_error", LLMServerError, id="overloaded"),
        pytest.param("api_error", LLMServerError, id="api-error"),
        pytest.param("rate_limit_error", LLMRateLimitError, id="rate-limit"),
        pytest.param("invalid_request_error", LLMRequestError, id="invalid-request"),
        pytest.param("something_new", LLMError, id="unknown"),
    ],
)
async def test_an_error_event_mid_stream_keeps_the_tokens_and_ends_in_its_llm_error(
    kind: str, error_class: type[LLMError]
) -> None:
    """An ``error`` event after some tokens: an incomplete message, then the LLM error of its type.

    The HTTP status was 200 when the stream began; the event's ``error.type`` says what
    failed (``overloaded_error`` is the server's, ``rate_limit_error`` a rate limit, ...).
    An unknown type is a plain LLMError. The error is not retried.
    """
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving(max_retries=2) as (server, client):
            server.reply(Stream(["Hel", "lo"], error={"type": kind, "message": "Stopped here"}))
            claude = forum.agent(
                anthropic_agent(model="claude-test", client=client), alias="claude"
            )
            async with forum:
                promises, error = await drain(claude.ask("Say hello"))
                [promise] = promises
                tokens = [token async for token in promise]
                cut = await promise
    assert tokens == ["Hel", "lo"]
    assert cut.content == "Hello"
    assert dict(cut.metadata) == {"model": "claude-test", "incomplete": True}
    end = error.message
    assert end.error_type == f"agentforum.llms.{error_class.__name__}"
    assert type(error.__cause__) is error_class
    assert "Stopped here" in end.content
    assert "after 2 tokens" in end.content
    assert end.parent == cut.hash
    assert cause_chain(error)[:3] == [AgentError, error_class, anthropic.APIStatusError]
    assert len(server.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "make_reply",
    [
        pytest.param(lambda: Cut(["Hel", "lo", " world"], after=2), id="connection-cut"),
        pytest.param(lambda: Stream(["Hel", "lo"], stop_reason=None), id="no-stop-reason"),
    ],
)
async def test_a_stream_that_breaks_off_keeps_its_tokens_then_ends_in_a_connection_error(
    make_reply: Callable[[], Reply],
) -> None:
    """A stream cut mid-way (the connection closes), or that ends without a stop reason.

    The consumer saw the tokens live; the message is recorded with them and
    ``incomplete: True``, and the branch ends with an LLMConnectionError after it.
    """
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(make_reply())
            claude = forum.agent(
                anthropic_agent(model="claude-test", client=client), alias="claude"
            )
            async with forum:
                promises, error = await drain(claude.ask("Say hello"))
                [promise] = promises
                tokens = [token async for token in promise]
                cut = await promise
    assert tokens == ["Hel", "lo"]
    assert cut.content == "Hello"
    assert (cut.metadata["model"], cut.metadata["incomplete"]) == ("claude-test", True)
    assert "stop_reason" not in cut.metadata
    end = error.message
    assert end.error_type == "agentforum.llms.LLMConnectionError"
    assert "after 2 tokens" in end.content
    assert end.parent == cut.hash


@pytest.mark.anyio
async def test_a_server_that_cannot_be_reached_is_an_llm_connection_error() -> None:
    """Connection refused (a port nobody listens on) ends the branch with LLMConnectionError."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0) as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
    # The port is closed now: connecting to it is refused.
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with anthropic.AsyncAnthropic(
            base_url=f"http://127.0.0.1:{port}", api_key="test-key", max_retries=0
        ) as client:
            claude = forum.agent(
                anthropic_agent(model="claude-test", client=client), alias="claude"
            )
            async with forum:
                error = await failure_of(claude.ask("anyone there?"))
                branch = await forum.history(error.message, include_calls=True)
    assert error.message.error_type == "agentforum.llms.LLMConnectionError"
    assert f"could not reach http://127.0.0.1:{port}" in error.message.content
    assert [type(message) for message in branch] == [Message, CallMessage, ErrorMessage]
    assert cause_chain(error)[:3] == [
        AgentError,
        LLMConnectionError,
        anthropic.APIConnectionError,
    ]


@pytest.mark.anyio
async def test_a_server_that_does_not_answer_in_time_is_an_llm_connection_error() -> None:
    """The SDK's timeout expires (the server never answers): LLMConnectionError, no message.

    The server reads the request and says nothing, ever; whatever the timing, the client's
    0.2-second timeout is what ends the wait.
    """
    reply = Stall()
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving(client_timeout=0.2) as (server, client):
            server.reply(reply)
            claude = forum.agent(
                anthropic_agent(model="claude-test", client=client), alias="claude"
            )
            async with forum:
                error = await failure_of(claude.ask("anyone there?"))
                branch = await forum.history(error.message, include_calls=True)
            await reply.disconnected.wait()
    assert error.message.error_type == "agentforum.llms.LLMConnectionError"
    assert "did not answer in time" in error.message.content
    assert [type(message) for message in branch] == [Message, CallMessage, ErrorMessage]
    assert cause_chain(error)[:3] == [AgentError, LLMConnectionError, anthropic.APITimeoutError]


@pytest.mark.anyio
@pytest.mark.usefixtures("no_credentials")
@pytest.mark.parametrize(
    ("config_dir", "says"),
    [
        pytest.param(False, "found no credentials: set ANTHROPIC_API_KEY", id="none"),
        pytest.param(True, "could not be made: Config file not found", id="broken-config"),
    ],
)
async def test_without_a_client_or_a_key_the_call_fails_with_an_authentication_error(
    config_dir: bool, says: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """client=None and no credentials: LLMAuthenticationError that says why, no request.

    Either the environment has none at all, or it names a config directory with no profile
    in it (the SDK's own error, which the message quotes).
    """
    if config_dir:
        monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with messages_server() as server:
            monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
            claude = forum.agent(anthropic_agent(model="claude-test"), alias="claude")
            async with forum:
                error = await failure_of(claude.ask("hello?"))
    assert error.message.error_type == "agentforum.llms.LLMAuthenticationError"
    assert says in error.message.content
    assert error.message.content.startswith("no client was given and anthropic.AsyncAnthropic()")
    assert server.requests == []


# -- cancellation -------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("own_client", [False, True], ids=["client", "client=None"])
async def test_cancelling_mid_stream_closes_the_connection_at_once(
    own_client: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """seq.cancel() after a token: AgentCancelled, the connection closed, the message cut.

    The server has sent one token and then sends nothing; the consumer cancels the call as
    soon as it sees that token. The server must see the client close the connection while
    the forum still runs (the adapter closes the HTTP stream, shielded, even though it is
    cancelled), with a client of the user's or one the call opened itself. The message is
    recorded with the token it had, ``incomplete: True``.
    """
    reply = Hang(["Hel", "lo"], after=1)
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(reply)
            if own_client:
                monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
                monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
            agent = anthropic_agent(model="claude-test", client=None if own_client else client)
            claude = forum.agent(agent, alias="claude")
            async with forum:
                sequence = claude.ask("Say hello")
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
    assert dict(cut.metadata) == {"model": "claude-test", "incomplete": True}
    assert error.message.parent == cut.hash
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_cancelling_before_the_server_answers_records_no_message() -> None:
    """seq.cancel() while the server has not answered yet: no message, the connection closed."""
    reply = Stall()
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(reply)
            claude = forum.agent(
                anthropic_agent(model="claude-test", client=client), alias="claude"
            )
            async with forum:
                sequence = claude.ask("Say hello")
                await reply.arrived.wait()
                sequence.cancel()
                await reply.disconnected.wait()  # the adapter closes it (the client is open)
                promises, error = await drain(sequence)
                branch = await forum.history(error.message, include_calls=True)
    assert promises == []
    assert isinstance(error, AgentCancelled)
    assert [type(message) for message in branch] == [Message, CallMessage, ErrorMessage]


# -- a client per call --------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.usefixtures("no_credentials")
async def test_without_a_client_each_call_opens_and_closes_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """client=None: each call makes an AsyncAnthropic from the environment, and closes it."""
    made: list[anthropic.AsyncAnthropic] = []

    class Recorded(anthropic.AsyncAnthropic):
        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            made.append(self)

    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with messages_server() as server:
            monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
            monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
            monkeypatch.setattr(anthropic, "AsyncAnthropic", Recorded)
            server.reply(Stream(["One."]), Stream(["Two."]))
            agent = anthropic_agent(model="claude-test")
            assert agent.client is None
            claude = forum.agent(agent, alias="claude")
            async with forum:
                first = await claude.ask("first").last()
                second = await claude.ask("second").last()
            assert (first.content, second.content) == ("One.", "Two.")
            assert len(made) == 2
            assert all(client.is_closed() for client in made)
            await server.wait_closed()
            assert server.connections == 2
    assert [request.headers["authorization"] for request in server.requests] == [
        "Bearer env-key"
    ] * 2


# -- tools --------------------------------------------------------------------------------


def get_weather(city: str, days: int = 1) -> str:
    """The forecast for a city.

    More detail, which the model does not see.
    """
    if city == "Atlantis":
        raise ValueError("no such city: Atlantis")
    return f"{city}: sunny for {days} days"


@pytest.mark.anyio
async def test_a_tool_round_trip_records_the_call_the_result_and_the_answer() -> None:
    """The model uses a tool, the agent runs it and asks again with the result.

    The call's responses are the tool-using turn (its text streamed, the call in its
    metadata, with the input as the model sent it, from its ``input_json_delta``
    fragments), the result, and the answer. The first request declares the tool with
    ``input_schema``; the second sends back the ``tool_use`` block and a ``tool_result``.
    """
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(
                using(PARIS, tokens=["Let me ", "check."], fragment=3),
                Stream(["Sunny, ", "21 °C."]),
            )
            agent = anthropic_agent(model="claude-test", client=client, tools=[get_weather])
            claude = forum.agent(agent, alias="claude")
            async with forum:
                sequence = claude.ask(QUESTION)
                turn_promise = await anext(aiter(sequence))
                tokens = [token async for token in turn_promise]
                turn, result, answer = await sequence.messages()
                branch = await forum.history(answer, include_calls=True)
    assert tokens == ["Let me ", "check."]
    assert (turn.sender, turn.content) == ("claude", "Let me check.")
    assert turn.metadata["stop_reason"] == "tool_use"
    assert turn.metadata["tool_calls"] == recorded(PARIS)
    assert (result.sender, result.content) == ("claude", "Paris: sunny for 1 days")
    assert dict(result.metadata) == {"tool_call_id": "toolu_1", "tool": "get_weather"}
    assert answer.content == "Sunny, 21 °C."
    assert answer.metadata["stop_reason"] == "end_turn"
    assert "tool_calls" not in answer.metadata
    assert [type(message) for message in branch] == [Message, CallMessage, *[Message] * 3]

    first, second = server.bodies
    assert first["tools"] == [
        {
            "name": "get_weather",
            "description": "The forecast for a city.",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        }
    ]
    assert first["messages"] == [{"role": "user", "content": QUESTION}]
    assert second["tools"] == first["tools"]
    assert second["messages"] == [
        {"role": "user", "content": QUESTION},
        assistant_turn(PARIS, text="Let me check."),
        tool_results(("toolu_1", "Paris: sunny for 1 days", False)),
    ]


@pytest.mark.anyio
async def test_tool_uses_in_one_turn_run_and_failures_are_error_results() -> None:
    """Several tool uses in one turn: each runs, its result in the model's order.

    A tool that raises, a tool that does not exist and arguments that do not fit are
    results marked ``error`` (``is_error`` in the ``tool_result`` block), which the model
    reads, and answers.
    """
    uses = (
        ToolUse("toolu_a", "get_weather", '{"city": "Atlantis"}'),
        ToolUse("toolu_b", "get_forecast", '{"city": "Paris"}'),
        ToolUse("toolu_c", "get_weather", '{"city": "Rome", "days": "two"}'),
        ToolUse("toolu_d", "get_weather", '{"city": "Oslo", "days": 2}'),
    )
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(using(*uses), Stream(["Sorry."]))
            agent = anthropic_agent(model="claude-test", client=client, tools=[get_weather])
            claude = forum.agent(agent, alias="claude")
            async with forum:
                turn, *results, answer = await claude.ask(QUESTION).messages()
    assert turn.content == ""
    assert turn.metadata["tool_calls"] == recorded(*uses)
    expected = [
        ("toolu_a", "Error: ValueError: no such city: Atlantis", True),
        (
            "toolu_b",
            "Error: there is no tool named 'get_forecast' (the tools are: get_weather)",
            True,
        ),
        (
            "toolu_c",
            'Error: wrong arguments for get_weather: days must be an integer, not "two"',
            True,
        ),
        ("toolu_d", "Oslo: sunny for 2 days", False),
    ]
    assert [
        (r.metadata["tool_call_id"], r.content, r.metadata.get("error", False)) for r in results
    ] == expected
    assert answer.content == "Sorry."
    assert server.bodies[1]["messages"][1:] == [assistant_turn(*uses), tool_results(*expected)]


@pytest.mark.anyio
async def test_a_question_asked_again_replays_the_tool_uses_from_the_cache() -> None:
    """The second identical call is answered from the store: no request, no tool run."""
    ran: list[str] = []

    def weather(city: str) -> str:
        """The weather."""
        ran.append(city)
        return "sunny"

    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(
                using(ToolUse("toolu_1", "weather", '{"city": "Paris"}')), Stream(["Sunny."])
            )
            agent = anthropic_agent(model="claude-test", client=client, tools=[weather])
            claude = forum.agent(agent, alias="claude")
            async with forum:
                first = await claude.ask(QUESTION).messages()
                again = await claude.ask(QUESTION).messages()
    assert len(server.requests) == 2
    assert ran == ["Paris"]
    assert [message.hash for message in again] == [message.hash for message in first]
    assert [message.content for message in again] == ["", "sunny", "Sunny."]


@pytest.mark.anyio
async def test_exceeding_max_tool_rounds_keeps_the_messages_and_ends_in_an_error() -> None:
    """A model that uses tools a third time with max_tool_rounds=2 ends the call in an error."""

    def count(n: int) -> int:
        """Counts."""
        return n + 1

    rounds = [ToolUse(f"toolu_{n}", "count", json.dumps({"n": n})) for n in range(3)]
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(*(using(use) for use in rounds))
            agent = anthropic_agent(
                model="claude-test", client=client, tools=[count], max_tool_rounds=2
            )
            claude = forum.agent(agent, alias="claude")
            async with forum:
                error = await failure_of(claude.ask("Count."))
                branch = await forum.history(error.message, include_calls=True)
    assert error.message.error_type == "agentforum.llms.LLMToolLoopError"
    assert "max_tool_rounds=2" in error.message.content
    assert isinstance(error.__cause__, LLMToolLoopError)
    assert [type(message) for message in branch] == [
        Message,
        CallMessage,
        *[Message] * 5,
        ErrorMessage,
    ]
    assert branch[6].metadata["tool_calls"] == recorded(rounds[2])
    assert server.bodies[2]["messages"][1:] == [
        assistant_turn(rounds[0]),
        tool_results(("toolu_0", "1", False)),
        assistant_turn(rounds[1]),
        tool_results(("toolu_1", "2", False)),
    ]


def test_anthropic_messages_pairs_tool_uses_with_their_results() -> None:
    """Only answered tool uses are sent; messages without content are left out.

    A result with no call before it is left out; arguments that are not a JSON object go
    back as ``input: {}``; an empty result has no ``content``; tool metadata that the
    agent would not write is a ValueError that names the message; another agent's tool
    work is left out.
    """
    one = {"id": "t1", "name": "f", "arguments": "{}"}
    two = {"id": "t2", "name": "f", "arguments": "not json"}
    history = [
        Message(content="q", sender="user"),
        Message(content="", sender="user"),
        Message(content="", sender="me", metadata={"tool_calls": [one, two]}),
        Message(content="r1", sender="me", metadata={"tool_call_id": "t1", "tool": "f"}),
        Message(content="", sender="me", metadata={"tool_call_id": "t2", "tool": "f"}),
        Message(content="stray", sender="me", metadata={"tool_call_id": "t9", "tool": "f"}),
        Message(content="thinking", sender="me", metadata={"tool_calls": [one]}),
        Message(content="", sender="me", metadata={"tool_calls": [one]}),
        Message(content="x", sender="other", metadata={"tool_calls": 1}),
        Message(content="y", sender="other", metadata={"tool_call_id": "t1"}),
    ]
    assert anthropic_messages(history, "me") == [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                {"type": "tool_use", "id": "t2", "name": "f", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "r1"},
                {"type": "tool_result", "tool_use_id": "t2"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "thinking"}]},
    ]
    for bad in ("oops", [{"id": "t1", "name": "f"}], ["t1"]):
        broken = Message(content="", sender="me", metadata={"tool_calls": bad})
        with pytest.raises(ValueError, match=broken.hash[:12]):
            anthropic_messages([broken], "me")


# -- arguments ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_arguments_the_agent_refuses() -> None:
    """Bad inputs fail clearly: at once for the agent's settings, before any request for a call.

    No model (a TypeError that names it), an empty or non-str model, reserved parameters,
    a ``max_tokens`` that is not a positive int, two tools of one name; in a call's
    kwargs, a reserved parameter, a bad ``max_tokens`` or ``model``.
    """
    with pytest.raises(TypeError, match="model"):
        anthropic_agent()  # type: ignore[call-arg]
    for model in ("", None, 3):
        with pytest.raises(TypeError, match="model must be a non-empty str"):
            anthropic_agent(model=model)  # type: ignore[arg-type]
    for reserved in ("messages", "stream"):
        options: dict[str, Any] = {reserved: None}
        with pytest.raises(TypeError, match=reserved):
            anthropic_agent(model="claude-test", **options)
    with pytest.raises(TypeError, match="max_tokens must be an int"):
        anthropic_agent(model="claude-test", max_tokens="many")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        anthropic_agent(model="claude-test", max_tokens=0)
    with pytest.raises(ValueError, match="at least 1"):
        anthropic_agent(model="claude-test", max_tool_rounds=0)
    with pytest.raises(ValueError, match="two tools are named 'get_weather'"):
        anthropic_agent(model="claude-test", tools=[get_weather, tool(get_weather)])
    agent = anthropic_agent(model="claude-test", tools=[get_weather])
    assert (agent.max_tokens, agent.max_tool_rounds, agent.__name__) == (4096, 8, "claude-test")
    assert [t.name for t in agent.tools] == ["get_weather"]
    assert repr(agent) == "<AnthropicAgent model='claude-test'>"

    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(Stream(["Hi."]))
            claude = forum.agent(
                anthropic_agent(model="claude-test", client=client), alias="claude"
            )
            async with forum:
                errors = [
                    await failure_of(claude.ask("hi", **{name: value}))
                    for name, value in [
                        ("stream", False),
                        ("system", "Be rude."),
                        ("tools", []),
                        ("max_tokens", 0),
                        ("max_tokens", 1.5),
                        ("model", ""),
                    ]
                ]
                one = await claude.ask("hi", max_tokens=1).last()
    assert [error.message.error_type for error in errors] == [
        "TypeError",
        "TypeError",
        "TypeError",
        "ValueError",
        "TypeError",
        "TypeError",
    ]
    assert "the agent sets system itself" in errors[1].message.content
    # Only the call with valid arguments reached the server.
    assert one.content == "Hi."
    assert [body["max_tokens"] for body in server.bodies] == [1]


def test_the_adapter_without_the_sdk_says_what_to_install(tmp_path: Path) -> None:
    """Importing agentforum.llms.anthropic without the SDK: the error names the extra."""
    folder = tmp_path / "no-anthropic"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        "from importlib.machinery import PathFinder\n\n\n"
        "class WithoutAnthropic(PathFinder):\n"
        "    @classmethod\n"
        "    def find_spec(cls, fullname, path=None, target=None):\n"
        "        if fullname.partition('.')[0] == 'anthropic':\n"
        "            return None\n"
        "        return super().find_spec(fullname, path, target)\n\n\n"
        "sys.meta_path[sys.meta_path.index(PathFinder)] = WithoutAnthropic\n",
        encoding="utf-8",
    )
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    result = subprocess.run(
        [sys.executable, "-c", "import agentforum.llms.anthropic"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "ModuleNotFoundError: agentforum.llms.anthropic needs the anthropic SDK: "
        "pip install 'agentforum[anthropic]'"
    )


# -- for all splits -----------------------------------------------------------------------


async def _ask_once(tokens: list[str], use: ToolUse, fragment: int) -> tuple[list[str], Message]:
    """Ask once against a fresh server whose answer is ``tokens``, then uses ``use``."""

    def echo(value: str = "") -> str:
        """Echoes."""
        return value

    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(
                Stream(tokens, tool_uses=[use], fragment=fragment, stop_reason="tool_use"),
                Stream(["Done."]),
            )
            agent = anthropic_agent(model="claude-test", client=client, tools=[echo])
            claude = forum.agent(agent, alias="claude")
            async with forum:
                sequence = claude.ask("go")
                promise = await anext(aiter(sequence))
                seen = [token async for token in promise]
                turn, _, answer = await sequence.messages()
    assert answer.content == "Done."
    return seen, turn


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tokens=st.lists(st.text(min_size=1, max_size=6), max_size=6),
    value=st.dictionaries(
        st.text(max_size=4), st.integers() | st.text(max_size=4) | st.none(), max_size=3
    ),
    fragment=st.integers(1, 12),
)
def test_for_all_splits_the_message_is_the_concatenation_and_the_input_is_whole(
    backend: str, tokens: list[str], value: dict[str, object], fragment: int
) -> None:
    """For all tokens and all fragment sizes: the consumer gets each token as it was sent,
    the recorded content is their concatenation, and the tool use's arguments are the JSON
    the server sent, put together from its fragments, whatever their size."""
    use = ToolUse("toolu_x", "echo", json.dumps(value, ensure_ascii=False))
    seen, turn = anyio.run(_ask_once, tokens, use, fragment, backend=backend)
    assert seen == tokens
    assert turn.content == "".join(tokens)
    assert turn.metadata["tool_calls"] == recorded(use)
    assert json.loads(turn.metadata["tool_calls"][0]["arguments"]) == value


# -- concurrency --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_calls_stream_at_the_same_time_on_their_own_connections() -> None:
    """Two calls at once stream side by side, each on its own connection, without mixing.

    Both streams are held after their first token until both consumers have seen theirs:
    neither call waits for the other.
    """
    replies = {"red": Stream(["Red", "!"], gated=True), "blue": Stream(["Blue", "?"], gated=True)}
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            claude = forum.agent(
                anthropic_agent(model="claude-test", client=client), alias="claude"
            )
            async with forum:
                sequences = {}
                for colour, reply in replies.items():
                    server.reply(reply)
                    sequences[colour] = claude.ask(f"Say {colour}")
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
