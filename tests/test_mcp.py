"""agentforum.mcp: the tools of real MCP servers as tools of the model agents.

The MCP server (:mod:`mcp_server`, written with the SDK's ``MCPServer``) runs as a real
subprocess, on stdio or on streamable HTTP on loopback; the models are the loopback
Chat Completions and Messages API servers. Every async test runs on asyncio and on Trio.
"""

from __future__ import annotations

import io
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anthropic
import anyio
import anyio.abc
import openai
import pytest

from agentforum import Forum
from agentforum.llms.anthropic import anthropic_agent
from agentforum.llms.openai import openai_agent
from agentforum.mcp import HTTPServer, MCPError, MCPTool, MCPToolError, StdioServer, mcp_tools
from anthropic_server import Stream as AnthropicStream
from anthropic_server import ToolUse, messages_server, using
from llm_server import SDK_GENERATOR_WARNING, Stream, ToolCall, calling, chat_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: On Trio, the MCP SDK's streamable HTTP client leaves the async generators that read a
#: response's server-sent events (httpx2's ``EventSource``, and those under it) for Trio to
#: close once the response is read, which warns about each, as the model SDKs' streams do
#: (see ``llm_server.SDK_GENERATOR_WARNING``): nothing leaks, so these warnings are ignored.
MCP_GENERATOR_WARNING = (
    r"Async generator '(httpx2|httpcore2|mcp)\.[\w.]+' was garbage collected before it had "
    r"been exhausted"
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(f"ignore:{SDK_GENERATOR_WARNING}:ResourceWarning"),
    pytest.mark.filterwarnings(f"ignore:{MCP_GENERATOR_WARNING}:ResourceWarning"),
]

#: Seconds any one test may take before it fails instead of hanging (a subprocess starts).
LIMIT = 60
SCRIPT = Path(__file__).with_name("mcp_server.py")
STDIO = StdioServer(sys.executable, [str(SCRIPT)])
ADD_SCHEMA = {
    "type": "object",
    "title": "addArguments",
    "properties": {
        "a": {"title": "A", "type": "integer"},
        "b": {"title": "B", "type": "integer"},
    },
    "required": ["a", "b"],
}


@asynccontextmanager
async def http_server() -> AsyncIterator[HTTPServer]:
    """The test server on streamable HTTP, in a subprocess; its address once it listens."""
    process = await anyio.open_process([sys.executable, str(SCRIPT), "--http"])
    try:
        assert process.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            line += await process.stdout.receive()
        port = int(line.split()[1])
        yield HTTPServer(f"http://127.0.0.1:{port}/mcp")
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()


@asynccontextmanager
async def connected(kind: str) -> AsyncIterator[dict[str, MCPTool]]:
    """The test server's tools, by name, over stdio or HTTP."""
    if kind == "stdio":
        async with mcp_tools(STDIO) as tools:
            yield {tool.name: tool for tool in tools}
    else:
        async with http_server() as server, mcp_tools(server) as tools:
            yield {tool.name: tool for tool in tools}


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[Any, openai.AsyncOpenAI]]:
    """A loopback Chat Completions server and an SDK client pointed at it."""
    async with (
        chat_server() as server,
        openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as client,
    ):
        yield server, client


def tool_message(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def double(n: int) -> int:
    """Twice n."""
    return 2 * n


TRANSPORTS = pytest.mark.parametrize("kind", ["stdio", "http"])


@pytest.mark.anyio
@TRANSPORTS
async def test_the_servers_tools_are_declared_to_the_model_with_python_ones(kind: str) -> None:
    """The model sees each MCP tool's name, description and input schema, as listed."""
    forum = Forum()
    with anyio.fail_after(LIMIT):
        async with connected(kind) as tools, serving() as (server, client):
            assert set(tools) == {
                *("add", "shout", "calls", "fail", "die", "hang", "media", "garble")
            }
            server.reply(Stream(["Hello."]))
            agent = openai_agent(
                model="gpt-test", client=client, tools=[tools["add"], tools["shout"], double]
            )
            async with forum:
                await forum.agent(agent, alias="gpt").ask("Hi").messages()
    (body,) = server.bodies
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add two integers.",
                "parameters": ADD_SCHEMA,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "shout",
                "description": "The text in capitals.",
                "parameters": {
                    "type": "object",
                    "title": "shoutArguments",
                    "properties": {"text": {"title": "Text", "type": "string"}},
                    "required": ["text"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "double",
                "description": "Twice n.",
                "parameters": {
                    "type": "object",
                    "properties": {"n": {"type": "integer"}},
                    "required": ["n"],
                    "additionalProperties": False,
                },
            },
        },
    ]


@pytest.mark.anyio
@TRANSPORTS
async def test_a_call_round_trip_is_recorded_in_the_tree(kind: str) -> None:
    """The model calls an MCP tool and a Python one; the results go back to it, in the tree."""
    forum = Forum()
    add = ToolCall("call_1", "add", '{"a": 2, "b": 3}')
    twice = ToolCall("call_2", "double", '{"n": 4}')
    with anyio.fail_after(LIMIT):
        async with connected(kind) as tools, serving() as (server, client):
            server.reply(calling(add, twice), Stream(["5 and 8."]))
            agent = openai_agent(model="gpt-test", client=client, tools=[*tools.values(), double])
            async with forum:
                turn, added, doubled, answer = (
                    await forum.agent(agent, alias="gpt").ask("Sums?").messages()
                )
                branch = await forum.history(answer)
    assert turn.metadata["tool_calls"] == (
        {"id": "call_1", "name": "add", "arguments": add.arguments},
        {"id": "call_2", "name": "double", "arguments": twice.arguments},
    )
    assert (added.sender, added.content) == ("gpt", "5")
    assert dict(added.metadata) == {"tool_call_id": "call_1", "tool": "add"}
    assert (doubled.content, dict(doubled.metadata)) == (
        "8",
        {"tool_call_id": "call_2", "tool": "double"},
    )
    assert answer.content == "5 and 8."
    assert branch[1:] == [turn, added, doubled, answer]
    assert server.bodies[1]["messages"][2:] == [
        tool_message("call_1", "5"),
        tool_message("call_2", "8"),
    ]


@pytest.mark.anyio
async def test_an_anthropic_agent_uses_mcp_tools() -> None:
    """The Anthropic agent declares an MCP tool with its input schema and uses it."""
    forum = Forum()
    use = ToolUse("toolu_1", "shout", '{"text": "hello"}')
    with anyio.fail_after(LIMIT):
        async with (
            connected("stdio") as tools,
            messages_server() as server,
            anthropic.AsyncAnthropic(
                base_url=server.base_url, api_key="test-key", max_retries=0
            ) as client,
        ):
            server.reply(using(use), AnthropicStream(["It says HELLO."]))
            agent = anthropic_agent(model="claude-test", client=client, tools=[tools["shout"]])
            async with forum:
                _, result, answer = (
                    await forum.agent(agent, alias="claude").ask("Shout hello").messages()
                )
    assert (result.content, dict(result.metadata)) == (
        "HELLO",
        {"tool_call_id": "toolu_1", "tool": "shout"},
    )
    assert answer.content == "It says HELLO."
    first, second = server.bodies
    assert first["tools"] == [
        {
            "name": "shout",
            "description": "The text in capitals.",
            "input_schema": {
                "type": "object",
                "title": "shoutArguments",
                "properties": {"text": {"title": "Text", "type": "string"}},
                "required": ["text"],
            },
        }
    ]
    assert second["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "HELLO"}],
    }


@pytest.mark.anyio
@TRANSPORTS
async def test_a_question_asked_again_is_answered_from_the_cache_without_the_server(
    kind: str,
) -> None:
    """The second identical call replays the tree: neither the model nor the server is called.

    The server counts the calls of its tools itself (its ``calls`` tool, not counted).
    """
    forum = Forum()
    add = ToolCall("call_1", "add", '{"a": 2, "b": 3}')
    with anyio.fail_after(LIMIT):
        async with connected(kind) as tools, serving() as (server, client):
            server.reply(calling(add), Stream(["5."]))
            agent = forum.agent(
                openai_agent(model="gpt-test", client=client, tools=[tools["add"]]), alias="gpt"
            )
            async with forum:
                first = await agent.ask("2 + 3?").messages()
                again = await agent.ask("2 + 3?").messages()
            counted = await tools["calls"].run("{}")
    assert len(server.requests) == 2
    assert counted == ("1", False)
    assert [message.hash for message in again] == [message.hash for message in first]
    assert [message.content for message in again] == ["", "5", "5."]


@pytest.mark.anyio
@TRANSPORTS
async def test_a_server_that_dies_mid_call_is_an_error_result_the_model_sees(kind: str) -> None:
    forum = Forum()
    die = ToolCall("call_1", "die", "{}")
    with anyio.fail_after(LIMIT):
        async with connected(kind) as tools, serving() as (server, client):
            server.reply(calling(die), Stream(["The server died."]))
            agent = openai_agent(model="gpt-test", client=client, tools=[tools["die"]])
            async with forum:
                _, result, answer = await forum.agent(agent, alias="gpt").ask("Die").messages()
            after = await tools["add"].run('{"a": 1, "b": 1}')
    assert result.metadata["error"] is True
    assert result.content.startswith(f"Error: the MCP server {STDIO if kind == 'stdio' else ''}")
    assert "closed the connection" in result.content
    assert "(has it died?)" in result.content
    assert answer.content == "The server died."
    assert server.bodies[1]["messages"][2] == tool_message("call_1", result.content)
    # The connection stays closed: a later call is an error too, not a hang.
    assert after[1] is True
    assert "closed the connection" in after[0]


@pytest.mark.anyio
@TRANSPORTS
async def test_a_server_that_does_not_answer_in_time_is_an_error_result(kind: str) -> None:
    forum = Forum()
    hang = ToolCall("call_1", "hang", "")
    with anyio.fail_after(LIMIT):
        async with connected(kind) as tools, serving() as (server, client):
            tools["hang"].timeout = 0.5
            server.reply(calling(hang), Stream(["Too slow."]))
            agent = openai_agent(model="gpt-test", client=client, tools=[tools["hang"]])
            async with forum:
                _, result, _ = await forum.agent(agent, alias="gpt").ask("Hang").messages()
            # The connection outlives a timeout: the server still answers other calls.
            after = await tools["add"].run('{"a": 1, "b": 1}')
    assert result.metadata["error"] is True
    assert result.content.endswith("did not answer within 0.5 seconds")
    assert after == ("2", False)


@pytest.mark.anyio
async def test_every_kind_of_content_is_text_for_the_model() -> None:
    """Text is itself, what is not text a line in brackets; structured content alone, JSON."""
    with anyio.fail_after(LIMIT):
        async with connected("stdio") as tools:
            blocks = await tools["media"].run('{"structured": false}')
            structured = await tools["media"].run('{"structured": true}')
    assert blocks == (
        "a text\n"
        "[image: image/png, 3 bytes]\n"
        "[audio: audio/wav, 4 bytes]\n"
        "[resource: file:///tmp/report.pdf]\n"
        "notes\n"
        "[resource: file:///data.bin, binary]",
        False,
    )
    assert structured == ('{"answer": 42}', False)


@pytest.mark.anyio
async def test_a_malformed_result_is_a_clear_error_result() -> None:
    """A result that is not a CallToolResult (its content not a list) is an error result."""
    with anyio.fail_after(LIMIT):
        async with connected("stdio") as tools:
            content, error = await tools["garble"].run("{}")
    assert error is True
    assert content == (
        f"Error: the MCP server {STDIO} sent a malformed result: content: Input should be a "
        "valid list"
    )


@pytest.mark.anyio
async def test_a_result_that_does_not_fit_the_output_schema_is_an_error_result() -> None:
    with anyio.fail_after(LIMIT):
        async with connected("stdio") as tools:
            content, error = await tools["garble"].run('{"schema": true}')
    assert error is True
    assert content.startswith(
        f"Error: the MCP server {STDIO} sent a result that the MCP client refuses: "
    )
    assert "not an integer" in content


@pytest.mark.anyio
async def test_an_error_in_the_block_leaves_it_as_itself() -> None:
    """Not inside the exception groups of the SDK's task groups; the server is stopped."""
    with anyio.fail_after(LIMIT):
        with pytest.raises(ValueError, match=r"^mine$"):
            async with connected("stdio") as tools:
                raise ValueError("mine")
        assert await tools["add"].run('{"a": 1, "b": 1}') == (
            f"Error: the connection to the MCP server {STDIO} is closed",
            True,
        )


@pytest.mark.anyio
async def test_a_cancelled_block_is_cancelled() -> None:
    """A cancellation goes through the block to the scope that cancelled it."""
    with anyio.fail_after(LIMIT):
        with anyio.CancelScope() as scope:
            async with connected("stdio"):
                scope.cancel()
                await anyio.sleep_forever()
    assert scope.cancelled_caught


@pytest.mark.anyio
@TRANSPORTS
async def test_what_the_server_or_the_model_gets_wrong_is_an_error_result(kind: str) -> None:
    with anyio.fail_after(LIMIT):
        async with connected(kind) as tools:
            failed = await tools["fail"].run('{"reason": "no"}')
            not_json = await tools["add"].run("{1")
            not_object = await tools["add"].run("[1]")
            wrong = await tools["add"].run('{"a": "x"}')
            direct = await tools["shout"](text="direct")
            with pytest.raises(MCPToolError, match="Error executing tool fail"):
                await tools["fail"](reason="no")
        closed = await tools["add"].run('{"a": 1, "b": 1}')
    assert failed == ("Error: Error executing tool fail", True)
    assert not_json[1] is True
    assert not_json[0].startswith("Error: the arguments are not valid JSON")
    assert not_object == ("Error: the arguments must be a JSON object, not [1]", True)
    assert wrong[1] is True
    assert "a" in wrong[0]
    assert direct == "DIRECT"
    assert closed[1] is True
    assert closed[0].endswith("is closed")


@pytest.mark.anyio
async def test_a_command_that_does_not_exist_is_a_clear_error() -> None:
    with anyio.fail_after(LIMIT), pytest.raises(MCPError) as info:
        async with mcp_tools(StdioServer("agentforum-no-such-mcp-server", ["--x"])):
            pass
    assert str(info.value) == (
        "could not start the MCP server agentforum-no-such-mcp-server --x: there is no command "
        "'agentforum-no-such-mcp-server'"
    )


@pytest.mark.anyio
async def test_a_program_that_is_not_an_mcp_server_is_a_clear_error() -> None:
    """A program that prints something else and exits fails the connection, at once."""
    server = StdioServer(sys.executable, ["-c", "print('hello')"])
    with anyio.fail_after(LIMIT), pytest.raises(MCPError) as info:
        async with mcp_tools(server):
            pass
    assert str(info.value) == (
        f"the MCP server {server} closed the connection while connecting: is it running, and "
        "an MCP server?"
    )


@pytest.mark.anyio
async def test_a_program_that_never_answers_is_a_timeout_when_connecting() -> None:
    """A program that reads its stdin and says nothing: the initialization times out."""
    server = StdioServer(sys.executable, ["-c", "import sys; sys.stdin.read()"])
    with anyio.fail_after(LIMIT), pytest.raises(MCPError) as info:
        async with mcp_tools(server, timeout=0.5):
            pass
    assert str(info.value) == (
        f"the MCP server {server} did not answer within 0.5 seconds: is it an MCP server?"
    )


@pytest.mark.anyio
async def test_an_http_server_that_is_not_there_is_a_clear_error() -> None:
    """Nothing listens on the port any more: MCPError, not an exception group."""
    with anyio.fail_after(LIMIT):
        async with http_server() as server:
            pass  # stopped on the way out
        with pytest.raises(MCPError) as info:
            async with mcp_tools(server):
                pass
    assert str(info.value).startswith(f"the MCP server {server} closed the connection")
    assert str(info.value).endswith(": is it running, and an MCP server?")


def test_bad_arguments_are_refused_at_once() -> None:
    with pytest.raises(TypeError, match="StdioServer or an HTTPServer"):
        mcp_tools("python server.py")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        mcp_tools(STDIO, timeout=0)
    with pytest.raises(TypeError, match="number of seconds"):
        mcp_tools(STDIO, timeout="1")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_cancelling_a_call_while_the_server_works_propagates() -> None:
    """A cancelled call is cancelled: no result is recorded; the connection is still usable."""
    with anyio.fail_after(LIMIT):
        async with connected("stdio") as tools:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as group:

                    async def call() -> None:
                        await tools["hang"].run("{}")
                        pytest.fail("the call returned")

                    group.start_soon(call)
                    await anyio.wait_all_tasks_blocked()
                    scope.cancel()
            after = await tools["add"].run('{"a": 2, "b": 2}')
    assert scope.cancelled_caught
    assert after == ("4", False)


@pytest.mark.anyio
@pytest.mark.parametrize("original", [True, False])
async def test_a_stderr_that_is_no_file_is_not_the_servers(
    original: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``sys.stderr`` not a file (a notebook's), the server's goes to the process's own.

    And with neither a file, to ``os.devnull``: the server starts either way.
    """
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    if not original:
        monkeypatch.setattr(sys, "__stderr__", None)
    with anyio.fail_after(LIMIT):
        async with connected("stdio") as tools:
            assert await tools["add"].run('{"a": 1, "b": 2}') == ("3", False)
