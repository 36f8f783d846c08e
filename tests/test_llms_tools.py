"""Tool calling in the OpenAI adapter, against the loopback server, and tools' schemas.

The server (:mod:`llm_server`) streams tool calls as the API does (``delta.tool_calls``
fragments, the ``"tool_calls"`` finish reason) and records every request body, so the
tests check both what the agent records in the tree and what the SDK sent back to the
model. Every async test runs on asyncio and on Trio, under ``anyio.fail_after``.
"""

from __future__ import annotations

import json
import math
import threading
import typing
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

import anyio
import anyio.from_thread
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentforum import (
    AgentCancelled,
    AgentError,
    CallMessage,
    ErrorMessage,
    Forum,
    Message,
    MessageSequence,
)
from agentforum.llms import LLMError, LLMToolLoopError, Tool, tool
from agentforum.llms.openai import chat_messages, openai_agent
from llm_server import SDK_GENERATOR_WARNING, ChatServer, Stream, ToolCall, calling, chat_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

pytestmark = [pytest.mark.filterwarnings(f"ignore:{SDK_GENERATOR_WARNING}:ResourceWarning")]

#: Seconds any one test may take before it fails instead of hanging.
LIMIT = 5
QUESTION = "Weather in Paris?"
PARIS = ToolCall("call_1", "get_weather", '{"city": "Paris"}')


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[ChatServer, openai.AsyncOpenAI]]:
    """A loopback server and an SDK client pointed at it (closed on the way out)."""
    async with (
        chat_server() as server,
        openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as client,
    ):
        yield server, client


async def failure_of(sequence: MessageSequence) -> AgentError:
    """The AgentError a sequence ends with (the test observes it: no error at exit)."""
    with pytest.raises(AgentError) as info:
        await sequence.messages()
    return info.value


def assistant_turn(*calls: ToolCall, content: str | None = None) -> dict[str, Any]:
    """The assistant message that the SDK must send back for a turn that called tools."""
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ],
    }


def tool_message(call_id: str, content: str) -> dict[str, str]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def plain(value: Any) -> Any:
    """A frozen JSON value (FrozenDicts, tuples) as plain dicts and lists."""
    if isinstance(value, typing.Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [plain(item) for item in value]
    return value


def recorded(*calls: ToolCall) -> tuple[dict[str, str], ...]:
    """What a tool-calling turn's ``metadata["tool_calls"]`` holds."""
    return tuple(call._asdict() for call in calls)


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_tool_round_trip_records_the_call_the_result_and_the_answer(kind: str) -> None:
    """The model calls a tool, the agent runs it and asks again with the result.

    The call's responses are the tool-calling turn (with the text the model said first,
    streamed, and the call in its metadata), the result (a dict as JSON), and the answer.
    The first request declares the tool with the schema of its signature; the second sends
    back the assistant's tool_calls and the tool message, as the API wants them. A sync
    tool runs in a worker thread, an async one in the event loop's thread.
    """
    threads: list[bool] = []

    def get_weather_sync(city: str, unit: Literal["C", "F"] = "C") -> dict[str, object]:
        """The weather in a city.

        More detail, which the model does not see.
        """
        threads.append(threading.current_thread() is threading.main_thread())
        return {"city": city, "temperature": 21, "unit": unit}

    async def get_weather_async(city: str, unit: Literal["C", "F"] = "C") -> dict[str, object]:
        """The weather in a city.

        More detail, which the model does not see.
        """
        threads.append(threading.current_thread() is threading.main_thread())
        return {"city": city, "temperature": 21, "unit": unit}

    function = get_weather_sync if kind == "sync" else get_weather_async
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(
                calling(PARIS, tokens=["Let me ", "check."]), Stream(["Sunny, ", "21 °C."])
            )
            agent = openai_agent(
                model="gpt-test", client=client, tools=[tool(function, name="get_weather")]
            )
            gpt = forum.agent(agent, alias="gpt")
            async with forum:
                sequence = gpt.ask(QUESTION)
                turn_promise = await anext(aiter(sequence))
                tokens = [token async for token in turn_promise]
                turn, result, answer = await sequence.messages()
                branch = await forum.history(answer, include_calls=True)
    assert threads == [kind == "async"]
    assert tokens == ["Let me ", "check."]
    assert (turn.sender, turn.content) == ("gpt", "Let me check.")
    assert turn.metadata["finish_reason"] == "tool_calls"
    assert turn.metadata["tool_calls"] == recorded(PARIS)
    content = '{"city": "Paris", "temperature": 21, "unit": "C"}'
    assert (result.sender, result.content) == ("gpt", content)
    assert dict(result.metadata) == {"tool_call_id": "call_1", "tool": "get_weather"}
    assert answer.content == "Sunny, 21 °C."
    assert "tool_calls" not in answer.metadata
    assert [type(message) for message in branch] == [
        Message,
        CallMessage,
        Message,
        Message,
        Message,
    ]
    assert branch[2:] == [turn, result, answer]

    first, second = server.bodies
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "unit": {"type": "string", "enum": ["C", "F"]},
                    },
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    assert first["messages"] == [{"role": "user", "content": QUESTION}]
    assert second["tools"] == first["tools"]
    assert second["messages"] == [
        {"role": "user", "content": QUESTION},
        assistant_turn(PARIS, content="Let me check."),
        tool_message("call_1", content),
    ]


@pytest.mark.anyio
async def test_parallel_tool_calls_run_concurrently_and_are_recorded_in_the_models_order() -> None:
    """Two calls in one turn (their fragments interleaved) run at the same time.

    The first tool waits until the second has started, so running them one after the
    other would hang. The results are recorded in the order of the model's calls, not in
    the order the tools finish (the second finishes first), so the hashes do not depend
    on timing; the tool messages are sent back in that order too.
    """
    started = anyio.Event()
    finished: list[str] = []

    async def slow(city: str) -> str:
        """Waits for fast."""
        await started.wait()
        finished.append("slow")
        return f"slow {city}"

    def fast(city: str) -> str:
        """Lets slow go."""
        finished.append("fast")
        anyio.from_thread.run_sync(started.set)
        return f"fast {city}"

    calls = (
        ToolCall("call_a", "slow", '{"city": "Oslo"}'),
        ToolCall("call_b", "fast", '{"city": "Rome"}'),
    )
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(calling(*calls, interleave=True, fragment=3), Stream(["Done."]))
            gpt = forum.agent(
                openai_agent(model="gpt-test", client=client, tools=[slow, fast]), alias="gpt"
            )
            async with forum:
                turn, one, two, answer = await gpt.ask("Both?").messages()
    assert finished == ["fast", "slow"]
    assert turn.metadata["tool_calls"] == recorded(*calls)
    assert [
        (one.content, one.metadata["tool_call_id"]),
        (two.content, two.metadata["tool_call_id"]),
    ] == [
        ("slow Oslo", "call_a"),
        ("fast Rome", "call_b"),
    ]
    assert answer.content == "Done."
    assert server.bodies[1]["messages"][1:] == [
        assistant_turn(*calls),
        tool_message("call_a", "slow Oslo"),
        tool_message("call_b", "fast Rome"),
    ]


# -- failures the model sees ----------------------------------------------------------------


def get_weather(city: str, days: int = 1) -> str:
    """The forecast for a city."""
    if city == "Atlantis":
        raise ValueError("no such city: Atlantis")
    if city == "Nowhere":
        return {"not", "JSON"}  # type: ignore[return-value]
    return f"{city}: sunny for {days} days"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        pytest.param(
            "get_weather",
            '{"city": "Atlantis"}',
            "Error: ValueError: no such city: Atlantis",
            id="the-tool-raises",
        ),
        pytest.param(
            "get_forecast",
            '{"city": "Paris"}',
            "Error: there is no tool named 'get_forecast' (the tools are: get_weather)",
            id="unknown-tool",
        ),
        pytest.param(
            "get_weather",
            '{"city": "Par',
            "Error: the arguments are not valid JSON (Unterminated string starting at: line 1 "
            'column 10 (char 9)): {"city": "Par',
            id="not-json",
        ),
        pytest.param(
            "get_weather",
            '["Paris"]',
            'Error: wrong arguments for get_weather: they must be a JSON object, not ["Paris"]',
            id="not-an-object",
        ),
        pytest.param(
            "get_weather",
            '{"city": "Paris", "days": "two"}',
            'Error: wrong arguments for get_weather: days must be an integer, not "two"',
            id="wrong-type",
        ),
        pytest.param(
            "get_weather",
            '{"days": 2}',
            "Error: wrong arguments for get_weather: missing 'city'",
            id="missing",
        ),
        pytest.param(
            "get_weather",
            '{"city": "Paris", "country": "FR"}',
            "Error: wrong arguments for get_weather: no parameter named 'country'",
            id="unexpected",
        ),
        pytest.param(
            "get_weather",
            '{"city": "Nowhere"}',
            "Error: the tool's result is not JSON: Object of type set is not JSON serializable",
            id="result-not-json",
        ),
    ],
)
async def test_a_failing_tool_call_is_a_result_the_model_sees(
    name: str, arguments: str, expected: str
) -> None:
    """What goes wrong in a tool call is its result, marked ``error``, and the model goes on.

    An exception in the tool, a tool that does not exist, arguments that are not JSON, not
    an object, of the wrong type, missing or unexpected, a result that is not JSON: each
    is a tool message saying so, and the model, asked again, answers.
    """
    call = ToolCall("call_x", name, arguments)
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(calling(call), Stream(["Sorry."]))
            gpt = forum.agent(
                openai_agent(model="gpt-test", client=client, tools=[get_weather]), alias="gpt"
            )
            async with forum:
                _, result, answer = await gpt.ask(QUESTION).messages()
    assert result.content == expected
    assert dict(result.metadata) == {"tool_call_id": "call_x", "tool": name, "error": True}
    assert answer.content == "Sorry."
    assert server.bodies[1]["messages"][-1] == tool_message("call_x", expected)


@pytest.mark.anyio
async def test_arguments_are_converted_to_the_annotated_types() -> None:
    """Integral floats for int, ints for float, defaults for omitted arguments, "" for {}."""
    seen: list[tuple[object, ...]] = []

    def convert(count: int, ratio: float, flag: bool = False) -> str:
        """Records its arguments."""
        seen.append((count, ratio, flag))
        return "ok"

    def nothing() -> None:
        """Takes nothing, returns nothing."""
        seen.append(())

    calls = (
        ToolCall("call_1", "convert", '{"count": 3.0, "ratio": 2}'),
        ToolCall("call_2", "nothing", ""),
    )
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(calling(*calls), Stream(["Done."]))
            gpt = forum.agent(
                openai_agent(model="gpt-test", client=client, tools=[convert, nothing]),
                alias="gpt",
            )
            async with forum:
                _, one, two, _ = await gpt.ask("go").messages()
    assert seen == [(3, 2.0, False), ()] or seen == [(), (3, 2.0, False)]
    assert [type(value) for value in seen[seen.index((3, 2.0, False))]] == [int, float, bool]
    assert (one.content, two.content) == ("ok", "null")
    assert "error" not in one.metadata


@pytest.mark.anyio
async def test_cancelling_a_call_while_a_tool_runs_is_not_a_tool_result() -> None:
    """A cancellation reaches the tool, is never turned into a result, and ends the call.

    The branch keeps the tool-calling turn and ends with AgentCancelled; the server is
    asked once.
    """
    running = anyio.Event()
    cancelled: list[bool] = []

    async def wait_forever(city: str) -> str:
        """Never answers."""
        running.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise
        raise AssertionError("unreachable")

    call = ToolCall("call_1", "wait_forever", '{"city": "Paris"}')
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(calling(call))
            gpt = forum.agent(
                openai_agent(model="gpt-test", client=client, tools=[wait_forever]), alias="gpt"
            )
            async with forum:
                sequence = gpt.ask(QUESTION)
                await running.wait()
                sequence.cancel()
                with pytest.raises(AgentCancelled) as info:
                    await sequence.messages()
                branch = await forum.history(info.value.message, include_calls=True)
    assert cancelled == [True]
    assert [type(message) for message in branch] == [Message, CallMessage, Message, ErrorMessage]
    assert branch[2].metadata["tool_calls"] == recorded(call)
    assert len(server.requests) == 1


# -- the limit ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_exceeding_max_tool_rounds_keeps_the_messages_and_ends_in_an_error() -> None:
    """A model that calls tools a third time with max_tool_rounds=2 ends the call in an error.

    The two rounds (each turn and result) and the third turn stay in the tree; the branch
    ends with an LLMToolLoopError, which is not cached. A later call on that branch sends
    the rounds that have results, and leaves out the third turn's unanswered call (the
    API refuses a tool call without its result).
    """
    counted: list[int] = []

    def count(n: int) -> int:
        """Counts."""
        counted.append(n)
        return n + 1

    rounds = [ToolCall(f"call_{n}", "count", json.dumps({"n": n})) for n in range(3)]
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(*(calling(call) for call in rounds))
            agent = openai_agent(model="gpt-test", client=client, tools=[count], max_tool_rounds=2)
            gpt = forum.agent(agent, alias="gpt")
            async with forum:
                error = await failure_of(gpt.ask("Count."))
                branch = await forum.history(error.message, include_calls=True)
                server.reply(Stream(["Stopped."]))
                after = await gpt.ask("Stop counting.", branch_from=error.message).last()
                server.reply(Stream(["Fine."]))
                again = await gpt.ask("Count.").last()
    assert counted == [0, 1]
    end = error.message
    assert end.error_type == "agentforum.llms.LLMToolLoopError"
    assert "after 2 rounds" in end.content
    assert "max_tool_rounds=2" in end.content
    assert isinstance(error.__cause__, LLMToolLoopError)
    assert isinstance(error.__cause__, LLMError)
    kinds = [type(message) for message in branch]
    assert kinds == [Message, CallMessage, *[Message] * 5, ErrorMessage]
    assert [message.metadata.get("tool_call_id") for message in branch[2:7]] == [
        None,
        "call_0",
        None,
        "call_1",
        None,
    ]
    assert branch[6].metadata["tool_calls"] == recorded(rounds[2])
    assert after.content == "Stopped."
    assert server.bodies[3]["messages"] == [
        {"role": "user", "content": "Count."},
        assistant_turn(rounds[0]),
        tool_message("call_0", "1"),
        assistant_turn(rounds[1]),
        tool_message("call_1", "2"),
        {"role": "user", "content": "Stop counting."},
    ]
    # Not cached: the same question reached the server again.
    assert again.content == "Fine."
    assert len(server.requests) == 5


# -- the cache and later calls --------------------------------------------------------------


@pytest.mark.anyio
async def test_a_question_asked_again_replays_the_tool_calls_from_the_cache() -> None:
    """The second identical call is answered from the store: no request, no tool run.

    Its responses are the very same messages: the turn, the result and the answer.
    """
    ran: list[str] = []

    def get_weather(city: str) -> str:
        """The weather."""
        ran.append(city)
        return "sunny"

    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(calling(PARIS), Stream(["Sunny."]))
            gpt = forum.agent(
                openai_agent(model="gpt-test", client=client, tools=[get_weather]), alias="gpt"
            )
            async with forum:
                first = await gpt.ask(QUESTION).messages()
                again = await gpt.ask(QUESTION).messages()
    assert len(server.requests) == 2
    assert ran == ["Paris"]
    assert [message.hash for message in again] == [message.hash for message in first]
    assert [message.content for message in again] == ["", "sunny", "Sunny."]


@pytest.mark.anyio
async def test_a_later_call_sends_the_tool_messages_of_its_history() -> None:
    """A follow-up on the branch sends the earlier tool calls and results back as such.

    For another model agent on the same branch, they are the first agent's own work: left
    out, while its answer is a user message.
    """

    def get_weather(city: str) -> str:
        """The weather."""
        return f"sunny in {city}"

    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            server.reply(calling(PARIS), Stream(["Sunny."]), Stream(["Rain."]), Stream(["Ok."]))
            gpt = forum.agent(
                openai_agent(model="gpt-test", client=client, tools=[get_weather]), alias="gpt"
            )
            critic = forum.agent(openai_agent(model="gpt-test", client=client), alias="critic")
            async with forum:
                answer = await gpt.ask(QUESTION).last()
                await gpt.ask("And tomorrow?", branch_from=answer).last()
                await critic.ask("Review.", branch_from=answer).last()
    later, review = server.bodies[2:]
    assert later["messages"] == [
        {"role": "user", "content": QUESTION},
        assistant_turn(PARIS),
        tool_message("call_1", "sunny in Paris"),
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert review["messages"] == [
        {"role": "user", "content": QUESTION},
        {"role": "user", "content": "Sunny."},
        {"role": "user", "content": "Review."},
    ]
    assert "tools" not in review


def test_chat_messages_pairs_calls_with_their_results() -> None:
    """Only answered calls are sent; a turn with text but no answered call is plain text.

    A result with no call before it is left out; tool metadata that the agent would not
    write is a ValueError that names the message.
    """
    one = ToolCall("c1", "f", "{}")
    two = ToolCall("c2", "f", "{}")
    history = [
        Message(content="q", sender="user"),
        Message(content="", sender="me", metadata={"tool_calls": [one._asdict(), two._asdict()]}),
        Message(content="r1", sender="me", metadata={"tool_call_id": "c1", "tool": "f"}),
        Message(content="stray", sender="me", metadata={"tool_call_id": "c9", "tool": "f"}),
        Message(content="thinking", sender="me", metadata={"tool_calls": [two._asdict()]}),
        Message(content="", sender="me", metadata={"tool_calls": [two._asdict()]}),
    ]
    assert chat_messages(history, "me") == [
        {"role": "user", "content": "q"},
        assistant_turn(one),
        tool_message("c1", "r1"),
        {"role": "assistant", "content": "thinking"},
    ]
    for bad in ("oops", [{"id": "c1", "name": "f"}], ["c1"]):
        broken = Message(content="", sender="me", metadata={"tool_calls": bad})
        with pytest.raises(ValueError, match=broken.hash[:12]):
            chat_messages([broken], "me")
    # Another agent's metadata is not checked: its tool work is left out.
    assert (
        chat_messages([Message(content="x", sender="other", metadata={"tool_calls": 1})], "me")
        == []
    )


# -- declaring tools ------------------------------------------------------------------------


def test_the_agent_refuses_bad_tool_settings() -> None:
    """Two tools of one name, max_tool_rounds below 1 or not an int, a bad function."""

    def f(x: int) -> int:
        """Doubles."""
        return 2 * x

    with pytest.raises(ValueError, match="two tools are named 'f'"):
        openai_agent(model="m", tools=[f, tool(f)])
    openai_agent(model="m", tools=[f, tool(f, name="g")])
    with pytest.raises(ValueError, match="at least 1"):
        openai_agent(model="m", tools=[f], max_tool_rounds=0)
    with pytest.raises(TypeError, match="max_tool_rounds"):
        openai_agent(model="m", max_tool_rounds=True)
    with pytest.raises(TypeError, match="positional-only"):
        openai_agent(model="m", tools=[_positional])
    agent = openai_agent(model="m", tools=[f])
    assert [t.name for t in agent.tools] == ["f"]
    assert agent.max_tool_rounds == 8


@pytest.mark.anyio
async def test_a_call_may_not_pass_tools() -> None:
    """`tools=` as a call keyword argument is refused before any request."""
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with serving() as (server, client):
            gpt = forum.agent(openai_agent(model="gpt-test", client=client), alias="gpt")
            async with forum:
                error = await failure_of(gpt.ask("hi", tools=[]))
    assert error.message.error_type == "TypeError"
    assert server.requests == []


def test_tool_takes_name_and_description_and_stays_callable() -> None:
    """`tool` as a function, a bare decorator and a decorator with options."""

    @tool
    def add(a: int, b: int = 2) -> int:
        """Add two numbers.

        The rest of the docstring is not the description.
        """
        return a + b

    @tool(name="sum-of", description="Sums.")
    async def plus(a: float, b: float) -> float:
        return a + b

    def undocumented(flag: bool) -> bool:
        return flag

    assert isinstance(add, Tool)
    assert add(1) == 3
    assert (add.name, add.description, add.is_async) == ("add", "Add two numbers.", False)
    assert (plus.name, plus.description, plus.is_async) == ("sum-of", "Sums.", True)
    assert tool(undocumented).description == ""
    assert repr(add) == "<Tool 'add'>"
    assert Tool.__module__ == tool.__module__ == "agentforum.llms"

    class Callable_:
        async def __call__(self, query: str) -> str:
            """Searches."""
            return query

    searcher = tool(Callable_(), name="search")
    assert searcher.is_async
    assert dict(searcher.parameters)["required"] == ("query",)


def test_schemas_of_the_supported_types() -> None:
    """Every supported annotation, with `from __future__ import annotations` strings too."""

    def everything(
        text: str,
        count: int,
        ratio: float,
        flag: bool,
        nothing: None,
        maybe: int | None,
        old_maybe: Optional[str],  # noqa: UP045 - the typing spelling is supported too
        either: Union[int, str],  # noqa: UP007
        names: list[str],
        anything: list,  # type: ignore[type-arg]
        table: dict[str, list[float]],
        mapping: dict,  # type: ignore[type-arg]
        mode: Literal["fast", "slow"],
        mixed: Literal[1, "one", None],
        default: int = 3,
        *,
        keyword: bool = False,
    ) -> None:
        """Everything."""

    schema = plain(tool(everything).parameters)
    assert schema == {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "flag": {"type": "boolean"},
            "nothing": {"type": "null"},
            "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "old_maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "names": {"type": "array", "items": {"type": "string"}},
            "anything": {"type": "array"},
            "table": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "number"}},
            },
            "mapping": {"type": "object"},
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "mixed": {"enum": [1, "one", None]},
            "default": {"type": "integer"},
            "keyword": {"type": "boolean"},
        },
        "required": [
            "text",
            "count",
            "ratio",
            "flag",
            "nothing",
            "maybe",
            "old_maybe",
            "either",
            "names",
            "anything",
            "table",
            "mapping",
            "mode",
            "mixed",
        ],
        "additionalProperties": False,
    }


class Opaque:
    pass


def _positional(x: int, /) -> None: ...
def _star(*args: int) -> None: ...
def _stars(**kwargs: int) -> None: ...
def _bare(x) -> None: ...  # type: ignore[no-untyped-def]
def _set(x: set[str]) -> None: ...
def _tuple(x: tuple[int, int]) -> None: ...
def _bytes(x: bytes) -> None: ...
def _any(x: Any) -> None: ...
def _class(x: Opaque) -> None: ...
def _int_keys(x: dict[int, str]) -> None: ...
def _nested(x: list[set[int]]) -> None: ...
def _literal_float_enum(x: Literal[b"x"]) -> None: ...
def _unresolved(x: "Missing") -> None: ...  # type: ignore[name-defined]  # noqa: F821, UP037


@pytest.mark.parametrize(
    ("function", "match"),
    [
        (_positional, "positional-only"),
        (_star, "variadic positional"),
        (_stars, "variadic keyword"),
        (_bare, "no type annotation"),
        (_set, "set"),
        (_tuple, "tuple"),
        (_bytes, "bytes"),
        (_any, "Any"),
        (_class, "Opaque"),
        (_int_keys, r"dict\[str, \.\.\.\]"),
        (_nested, "items"),
        (_literal_float_enum, "Literal"),
        (_unresolved, "cannot be resolved"),
    ],
)
def test_an_unsupported_signature_is_a_type_error_when_declared(
    function: Callable[..., Any], match: str
) -> None:
    """A function that cannot be a tool fails when it is declared, saying why."""
    with pytest.raises(TypeError, match=match):
        tool(function, name="f")


@pytest.mark.parametrize("name", ["<lambda>", "", "a b", "x" * 65, "é"])
def test_a_name_the_api_refuses_is_a_value_error(name: str) -> None:
    def f() -> None:
        """Nothing."""

    with pytest.raises(ValueError, match="name"):
        tool(f, name=name)
    with pytest.raises(ValueError, match="name="):
        tool(lambda: None)


# -- the schema and the arguments agree, for all supported types --------------------------------

_SCALARS: list[object] = [str, int, float, bool, None]


def _literals() -> st.SearchStrategy[object]:
    choice = st.one_of(
        st.text(max_size=3), st.integers(-5, 5), st.booleans(), st.none(), st.floats(-2, 2)
    )
    return st.lists(choice, min_size=1, max_size=3, unique_by=lambda v: (type(v), v)).map(
        lambda values: Literal.__getitem__(tuple(values))
    )


annotations: st.SearchStrategy[object] = st.recursive(
    st.one_of(st.sampled_from(_SCALARS), _literals(), st.sampled_from([list, dict])),
    lambda inner: st.one_of(
        inner.map(lambda t: list[t]),  # type: ignore[valid-type]
        inner.map(lambda t: dict[str, t]),  # type: ignore[valid-type]
        inner.map(lambda t: Optional[t]),  # noqa: UP045
        st.tuples(inner, inner).map(lambda ts: Union[ts]),  # noqa: UP007
    ),
    max_leaves=6,
)

json_values: st.SearchStrategy[object] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**20), 10**20),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


def _instance_of(annotation: object) -> st.SearchStrategy[object]:
    """JSON values that fit ``annotation``."""
    if annotation is None or annotation is type(None):
        return st.none()
    if annotation is str:
        return st.text(max_size=5)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(-(10**20), 10**20)
    if annotation is float:
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-100, 100)
    if annotation is list:
        return st.lists(json_values, max_size=3)
    if annotation is dict:
        return st.dictionaries(st.text(max_size=3), json_values, max_size=3)
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return st.lists(_instance_of(arguments[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=3), _instance_of(arguments[1]), max_size=3)
    if origin is Literal:
        return st.sampled_from(arguments)
    return st.one_of([_instance_of(argument) for argument in arguments])


def _validates(schema: Any, value: object) -> bool:
    """A JSON Schema validator for what tools emit (type, enum, anyOf, items, ...)."""
    if "anyOf" in schema:
        return any(_validates(option, value) for option in schema["anyOf"])
    if "enum" in schema and not any(
        type(value) is type(choice) and value == choice for choice in schema["enum"]
    ):
        return False
    kind = schema.get("type")
    if kind is None:
        return True
    if kind == "array":
        return type(value) is list and all(_validates(schema.get("items", {}), v) for v in value)
    if kind == "object":
        return type(value) is dict and all(
            _validates(schema.get("additionalProperties", {}), v) for v in value.values()
        )
    number = type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]
    return {
        "string": type(value) is str,
        "boolean": type(value) is bool,
        "null": value is None,
        "number": number,
        "integer": number and float(value).is_integer(),  # type: ignore[arg-type]
    }[kind]


def _fits(annotation: object, value: object) -> bool:
    """Whether ``value`` is what a function annotated ``annotation`` may receive."""
    if annotation is None or annotation is type(None):
        return value is None
    if annotation in (str, bool, int, float, list, dict):
        return type(value) is annotation
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return type(value) is list and all(_fits(arguments[0], v) for v in value)
    if origin is dict:
        return type(value) is dict and all(_fits(arguments[1], v) for v in value.values())
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in arguments)
    return any(_fits(argument, value) for argument in arguments)


def _tool_of(annotation: object) -> tuple[Tool, list[object]]:
    received: list[object] = []

    async def f(x: Any) -> str:
        """Receives x."""
        received.append(x)
        return "ok"

    f.__annotations__ = {"x": annotation, "return": str}
    return tool(f), received


@given(annotation=annotations, data=st.data())
def test_for_all_supported_types_the_schema_and_the_checks_agree(
    annotation: object, data: st.DataObject
) -> None:
    """For all annotations and JSON values: the tool takes a value iff its schema validates it.

    The values are drawn both from those that fit the annotation and from any JSON; a
    value the tool takes reaches the function as the annotated type, equal to the value
    sent (3.0 is an int 3 for ``int``, 3 a float 3.0 for ``float``).
    """
    made, received = _tool_of(annotation)
    schema = plain(made.parameters)["properties"]["x"]
    value = data.draw(_instance_of(annotation) | json_values, label="value")
    arguments = json.dumps({"x": value})
    content, error = anyio.run(_call, made, arguments)
    valid = _validates(schema, json.loads(arguments)["x"])
    assert error is not valid, content
    if valid:
        [got] = received
        assert _fits(annotation, got)
        assert got == json.loads(arguments)["x"]
    else:
        assert content.startswith("Error: wrong arguments for f: x")
        assert " must be " in content
        assert received == []


async def _call(made: Tool, arguments: str) -> tuple[str, bool]:
    return await made.run(arguments)


@given(json_values)
def test_for_all_values_an_int_parameter_takes_exactly_the_integral_numbers(value: object) -> None:
    """`int` takes ints and integral floats (as ints), never bools or other values."""
    made, received = _tool_of(int)
    _, error = anyio.run(_call, made, json.dumps({"x": value}))
    integral = type(value) is int or (type(value) is float and value.is_integer())
    assert error is not integral
    if integral:
        assert received == [value]
        assert type(received[0]) is int
