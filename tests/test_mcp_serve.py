"""agentforum.mcp, the server side: a forum's agents as the tools of an MCP server.

The client is the SDK's own: :class:`mcp.Client` on the server of ``mcp_server`` in this
process, and :class:`mcp.ClientSession` over ``stdio_client`` on ``agentforum mcp serve``
run as a real subprocess. The agents are echo agents (``tests/mcp_forum.py``), no model.
Every async test runs on asyncio and on Trio.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import mcp
import mcp_types
import pytest
from click.testing import CliRunner
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError as SDKError

from agentforum import Forum, InteractionContext, Message, SQLiteStore
from agentforum.cli._app import cli
from agentforum.mcp import mcp_server, serve_stdio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.slow

#: Seconds any one test may take before it fails instead of hanging (a subprocess starts).
LIMIT = 60
TESTS = Path(__file__).resolve().parent
INPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "request": {"type": "string", "description": "What to ask the agent."},
        "branch_from": {
            "type": "string",
            "description": "Continue the conversation after this message: a ref, a message "
            "hash or a unique prefix of one (the hash of an earlier answer). Default: a new "
            "conversation.",
        },
        "kwargs": {
            "type": "object",
            "description": "Keyword arguments for the agent (JSON values).",
        },
    },
    "required": ["request"],
    "additionalProperties": False,
}


def echo_forum() -> Forum:
    """A forum of two agents: ``echo`` and ``broken``."""
    forum = Forum()

    @forum.agent
    async def echo(ctx: InteractionContext, shout: bool = False) -> None:
        """Repeats what it is told."""
        async for request in ctx.request_messages:
            text = f"You said: {(await request).content}"
            ctx.respond(text.upper() if shout else text)

    @forum.agent(description="Always fails.")
    async def broken(ctx: InteractionContext) -> None:
        raise ValueError("the broken agent is broken")

    return forum


def text_of(result: mcp_types.CallToolResult) -> str:
    (block,) = result.content
    assert isinstance(block, mcp_types.TextContent)
    return block.text


@asynccontextmanager
async def in_process(forum: Forum, **options: Any) -> AsyncIterator[mcp.Client]:
    """The SDK's client on ``mcp_server(forum)``, in this process, while the forum runs."""
    async with forum, mcp.Client(mcp_server(forum, **options)) as client:
        yield client


# -- the server, in this process ---------------------------------------------------------------


@pytest.mark.anyio
async def test_each_agent_is_a_tool_named_and_described_after_it() -> None:
    with anyio.fail_after(LIMIT):
        async with in_process(echo_forum()) as client:
            tools = (await client.list_tools()).tools
    assert [(tool.name, tool.description) for tool in tools] == [
        ("echo", "Repeats what it is told."),
        ("broken", "Always fails."),
    ]
    assert all(tool.input_schema == INPUT_SCHEMA for tool in tools)
    assert tools[0].output_schema is not None
    assert tools[0].output_schema["required"] == ["content", "hash"]


@pytest.mark.anyio
async def test_a_call_asks_the_agent_and_its_conversation_is_in_the_store() -> None:
    forum = echo_forum()
    with anyio.fail_after(LIMIT):
        async with in_process(forum) as client:
            result = await client.call_tool("echo", {"request": "Hello"})
            assert not result.is_error
            assert text_of(result) == "You said: Hello"
            answer = result.structured_content
            assert answer["content"] == "You said: Hello"
            history = await forum.history(answer["hash"])
    # A new conversation: its root is the request, then the answer.
    assert [(message.sender, message.content) for message in history] == [
        ("user", "Hello"),
        ("echo", "You said: Hello"),
    ]
    assert history[0].parent is None


@pytest.mark.anyio
async def test_branch_from_continues_a_conversation_and_kwargs_reach_the_agent() -> None:
    forum = echo_forum()
    with anyio.fail_after(LIMIT):
        async with in_process(forum) as client:
            first = await client.call_tool("echo", {"request": "one"})
            second = await client.call_tool(
                "echo",
                {
                    "request": "two",
                    "branch_from": first.structured_content["hash"][:12],
                    "kwargs": {"shout": True},
                },
            )
            assert text_of(second) == "YOU SAID: TWO"
            history = await forum.history(second.structured_content["hash"])
    assert [message.content for message in history] == [
        "one",
        "You said: one",
        "two",
        "YOU SAID: TWO",
    ]


@pytest.mark.anyio
async def test_a_call_asked_again_is_answered_from_the_cache() -> None:
    forum = Forum()
    runs: list[str] = []

    @forum.agent
    async def counted(ctx: InteractionContext) -> None:
        """Answers, and counts its runs."""
        async for request in ctx.request_messages:
            runs.append((await request).content)
            ctx.respond(f"run {len(runs)}")

    with anyio.fail_after(LIMIT):
        async with in_process(forum) as client:
            first = await client.call_tool("counted", {"request": "same"})
            again = await client.call_tool("counted", {"request": "same"})
            other = await client.call_tool("counted", {"request": "other"})
    assert [text_of(result) for result in (first, again, other)] == ["run 1", "run 1", "run 2"]
    assert first.structured_content == again.structured_content
    assert runs == ["same", "other"]


@pytest.mark.anyio
async def test_an_agent_error_is_an_error_result_and_the_server_goes_on() -> None:
    with anyio.fail_after(LIMIT):
        async with in_process(echo_forum()) as client:
            failed = await client.call_tool("broken", {"request": "Hi"})
            assert failed.is_error
            assert text_of(failed) == (
                "Error: agent 'broken' failed: ValueError: the broken agent is broken"
            )
            assert text_of(await client.call_tool("echo", {"request": "still"})) == (
                "You said: still"
            )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({}, "Error: the argument 'request' must be a string, not None"),
        ({"request": 3}, "Error: the argument 'request' must be a string, not 3"),
        (
            {"request": "x", "branch_from": 5},
            "Error: the argument 'branch_from' must be a ref or a message hash, not 5",
        ),
        (
            {"request": "x", "kwargs": [1]},
            "Error: the argument 'kwargs' must be an object, not [1]",
        ),
        (
            {"request": "x", "kwargs": {"blank_history": True}},
            "Error: 'kwargs' may not name blank_history",
        ),
        ({"request": "x", "other": 1}, "Error: unknown arguments: other"),
        ({"request": "x", "kwargs": {"shout": "yes", "nan": float("nan")}}, None),
        (
            {"request": "x", "branch_from": "nope"},
            "Error: the call of 'echo' was refused: 'nope' is not a message hash or a prefix of "
            "one (6 to 64 lowercase hexadecimal characters)",
        ),
        (
            {"request": "x", "branch_from": "abcdef"},
            "Error: agent 'echo' failed: agentforum.MessageNotFoundError: no message hash starts "
            "with abcdef",
        ),
    ],
)
async def test_arguments_the_call_refuses_are_error_results(
    arguments: dict[str, Any], error: str | None
) -> None:
    with anyio.fail_after(LIMIT):
        async with in_process(echo_forum()) as client:
            result = await client.call_tool("echo", arguments)
    assert result.is_error
    if error is not None:
        assert text_of(result).startswith(error)


@pytest.mark.anyio
async def test_an_unknown_tool_is_a_protocol_error() -> None:
    with anyio.fail_after(LIMIT):
        async with in_process(echo_forum()) as client:
            with pytest.raises(SDKError, match="there is no tool named 'nope'"):
                await client.call_tool("nope", {"request": "x"})


@pytest.mark.anyio
async def test_only_the_agents_named_are_served_in_their_order() -> None:
    forum = echo_forum()
    with anyio.fail_after(LIMIT):
        async with in_process(forum, agents=["broken", "echo"], name="echoes") as client:
            assert client.server_info is not None
            assert client.server_info.name == "echoes"
            assert [tool.name for tool in (await client.list_tools()).tools] == ["broken", "echo"]
        async with in_process(forum, agents=["echo"]) as client:
            assert [tool.name for tool in (await client.list_tools()).tools] == ["echo"]
            with pytest.raises(SDKError):
                await client.call_tool("broken", {"request": "x"})


def test_agents_that_cannot_be_served_are_refused_at_once() -> None:
    forum = echo_forum()
    other = echo_forum()
    with pytest.raises(ValueError, match="the forum has no agent called 'nope'"):
        mcp_server(forum, agents=["nope"])
    with pytest.raises(ValueError, match="is an agent of another forum"):
        mcp_server(forum, agents=[other._agents["echo"]])
    with pytest.raises(ValueError, match="named twice"):
        mcp_server(forum, agents=["echo", forum._agents["echo"]])
    with pytest.raises(TypeError, match="must be an Agent or its alias"):
        mcp_server(forum, agents=[3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="forum must be a Forum"):
        mcp_server("forum")  # type: ignore[arg-type]

    @forum.agent(alias="an agent")
    async def spaced(ctx: InteractionContext) -> None: ...

    with pytest.raises(ValueError, match="cannot be an MCP tool"):
        mcp_server(forum)


@pytest.mark.anyio
async def test_a_call_while_the_forum_is_not_running_is_an_error_result() -> None:
    forum = echo_forum()
    with anyio.fail_after(LIMIT):
        async with mcp.Client(mcp_server(forum)) as client:
            result = await client.call_tool("echo", {"request": "x"})
    assert result.is_error
    assert "was called while its forum is not running" in text_of(result)


@pytest.mark.anyio
async def test_a_call_still_running_when_the_server_stops_is_cancelled() -> None:
    forum = Forum()
    started = anyio.Event()

    @forum.agent
    async def waits(ctx: InteractionContext) -> None:
        """Never answers."""
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(LIMIT):
        async with forum:
            with anyio.CancelScope() as scope:
                async with (
                    mcp.Client(mcp_server(forum)) as client,
                    anyio.create_task_group() as group,
                ):
                    group.start_soon(client.call_tool, "waits", {"request": "x"})
                    await started.wait()
                    scope.cancel()
        # The forum exited (it waited for the call): the call's branch ends cancelled.
        (root,) = await forum.store.children(None)
        branch = [message async for message in _descendants(forum, root.hash)]
    assert branch[0].content == "x"
    assert branch[-1].error_type == "agentforum.AgentCancelled"  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_call_the_client_cancels_is_cancelled_and_the_server_goes_on() -> None:
    forum = echo_forum()
    started, ended = anyio.Event(), anyio.Event()

    @forum.agent
    async def waits(ctx: InteractionContext) -> None:
        """Never answers."""
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            ended.set()

    with anyio.fail_after(LIMIT):
        async with in_process(forum) as client:
            async with anyio.create_task_group() as group:
                group.start_soon(client.call_tool, "waits", {"request": "x"})
                await started.wait()
                group.cancel_scope.cancel()
            await ended.wait()  # the agent was cancelled while the forum runs on
            assert text_of(await client.call_tool("echo", {"request": "on"})) == "You said: on"
        (root,) = [
            message for message in await forum.store.children(None) if message.content == "x"
        ]
        branch = [message async for message in _descendants(forum, root.hash)]
    assert branch[-1].error_type == "agentforum.AgentCancelled"  # type: ignore[attr-defined]


async def _descendants(forum: Forum, key: str) -> AsyncIterator[Message]:
    """The message ``key`` and every message under it, depth first."""
    stack = [key]
    while stack:
        current = stack.pop()
        yield await forum.store.get(current)
        stack.extend(child.hash for child in await forum.store.children(current))


@pytest.mark.anyio
async def test_serve_stdio_refuses_a_running_forum() -> None:
    forum = echo_forum()
    async with forum:
        with pytest.raises(RuntimeError, match="running already"):
            await serve_stdio(forum)


# -- agentforum mcp serve, a real subprocess -------------------------------------------------------


def serve_command(db: Path, *options: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "agentforum", "mcp", "serve", "mcp_forum:forum", "--db", str(db), *options],
        cwd=TESTS,
    )


@asynccontextmanager
async def served(db: Path, *options: str) -> AsyncIterator[ClientSession]:
    # The server's standard error, a file the subprocess writes (opened once, before it).
    with open(db.with_suffix(".stderr"), "w") as errors:  # noqa: ASYNC230
        async with (
            stdio_client(serve_command(db, *options), errlog=errors) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


@pytest.mark.anyio
async def test_the_command_serves_the_forums_agents_and_stores_the_conversations(
    tmp_path: Path,
) -> None:
    db = tmp_path / "served.db"
    with anyio.fail_after(LIMIT):
        async with served(db) as session:
            tools = (await session.list_tools()).tools
            assert [(tool.name, tool.description) for tool in tools] == [
                ("echo", "Repeats what it is told."),
                ("reverse", "Says what it is told backwards."),
                ("broken", "Always fails."),
            ]
            assert tools[0].input_schema == INPUT_SCHEMA
            result = await session.call_tool("reverse", {"request": "stressed"})
            assert (result.is_error, text_of(result)) == (False, "desserts")
            key = result.structured_content["hash"]
            failed = await session.call_tool("broken", {"request": "Hi"})
            assert failed.is_error
            assert text_of(failed) == (
                "Error: agent 'broken' failed: ValueError: the broken agent is broken"
            )
            shouted = await session.call_tool(
                "echo", {"request": "again", "branch_from": key, "kwargs": {"shout": True}}
            )
            assert text_of(shouted) == "YOU SAID: AGAIN"
            last = shouted.structured_content["hash"]
    # The client closed the server's stdin: it exited, its database holds the conversations.
    assert (
        "serving echo, reverse, broken of mcp_forum:forum" in db.with_suffix(".stderr").read_text()
    )
    with anyio.fail_after(LIMIT):
        log = await anyio.run_process(
            [sys.executable, "-m", "agentforum", "log", "--oneline", last, "--db", str(db)]
        )
    lines = log.stdout.decode().splitlines()
    assert [line.split(maxsplit=3)[-1].strip('"') for line in lines] == [
        "YOU SAID: AGAIN",
        "again",
        "desserts",
        "stressed",
    ]
    store = SQLiteStore(db, create=False)
    try:
        assert len(await store.children(None)) == 2  # two conversations: reverse's and broken's
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_the_command_serves_only_the_agents_named(tmp_path: Path) -> None:
    with anyio.fail_after(LIMIT):
        async with served(tmp_path / "some.db", "--agent", "reverse", "--name", "r") as session:
            assert [tool.name for tool in (await session.list_tools()).tools] == ["reverse"]


def test_the_command_ends_when_its_standard_input_closes(tmp_path: Path) -> None:
    db = tmp_path / "eof.db"
    process = subprocess.run(
        [sys.executable, "-m", "agentforum", "mcp", "serve", "mcp_forum:forum", "--db", str(db)],
        cwd=TESTS,
        input="",
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )
    assert (process.returncode, process.stdout) == (0, "")
    assert db.exists()


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("no_such_module:forum", "there is no module no_such_module"),
        ("mcp_forum:nope", "the module mcp_forum has no attribute nope"),
        ("mcp_forum:not_a_forum", "mcp_forum:not_a_forum is a str, not a Forum"),
        ("mcp_forum", "'mcp_forum' is not MODULE:FORUM"),
    ],
)
def test_a_bad_module_forum_is_a_one_line_error(
    target: str, error: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(TESTS)
    result = CliRunner().invoke(cli, ["mcp", "serve", target, "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith(f"agentforum: error: {error}")
    assert not (tmp_path / "x.db").exists()


def test_an_unknown_agent_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(TESTS)
    result = CliRunner().invoke(
        cli, ["mcp", "serve", "mcp_forum:forum", "--agent", "zz", "--db", str(tmp_path / "x.db")]
    )
    assert result.exit_code == 1
    assert result.output == (
        "agentforum: error: mcp_forum:forum: the forum has no agent called 'zz' (its agents: "
        "'echo', 'reverse', 'broken')\n"
    )


def test_the_command_without_the_mcp_extra_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['mcp'] = None; "
        "sys.argv = ['agentforum', 'mcp', 'serve', 'mcp_forum:forum']; "
        "from agentforum.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "agentforum: error: agentforum mcp serve needs the MCP SDK: pip install 'agentforum[mcp]'\n"
    )


@pytest.mark.anyio
async def test_ctrl_c_stops_the_command_while_its_client_is_connected(tmp_path: Path) -> None:
    """SIGINT with the standard input still open: the command ends at once, status 130."""
    command = [
        *(sys.executable, "-m", "agentforum", "mcp", "serve", "mcp_forum:forum"),
        *("--db", str(tmp_path / "interrupted.db")),
    ]
    with anyio.fail_after(LIMIT):
        async with await anyio.open_process(command, cwd=TESTS) as process:
            assert process.stderr is not None
            said = b""
            while not said.endswith(b"\n"):  # the signal is watched before it says this
                said += await process.stderr.receive()
            assert said.startswith(b"agentforum: serving echo, reverse, broken")
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
async def test_serve_stdio_serves_on_either_backend_into_the_store_given(
    backend: str, tmp_path: Path
) -> None:
    """``serve_stdio(forum, store=...)`` in a program of its own, run on either backend."""
    db = tmp_path / "program.db"
    program = (
        "import sys, anyio; from agentforum.mcp import serve_stdio; from mcp_forum import forum; "
        f"anyio.run(lambda: serve_stdio(forum, agents=['echo'], store=sys.argv[1]), "
        f"backend={backend!r})"
    )
    parameters = StdioServerParameters(
        command=sys.executable, args=["-c", program, str(db)], cwd=TESTS
    )
    with anyio.fail_after(LIMIT):
        async with (
            stdio_client(parameters) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            assert [tool.name for tool in (await session.list_tools()).tools] == ["echo"]
            result = await session.call_tool("echo", {"request": "Hi"})
            assert text_of(result) == "You said: Hi"
    forum = Forum(db)
    async with forum:
        history = await forum.history(result.structured_content["hash"])
    assert [message.content for message in history] == ["Hi", "You said: Hi"]
