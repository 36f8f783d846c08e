"""The programs in examples/ run as a user runs them, on asyncio and on Trio."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.py"


@functools.cache
def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    """Run an example with this interpreter, warnings as errors; return the finished process.

    Cached: each command line runs once per test session.
    """
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_quickstart_streams_and_branches(backend: str) -> None:
    """quickstart.py streams the stories, then prints two branches that share their start."""
    process = run_example(str(QUICKSTART), "--backend", backend)
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""
    output = process.stdout
    assert "editor: Once upon a time there was a dragon who collected teacups." in output
    assert "first branch" in output
    assert "second branch" in output
    branches = [
        re.findall(r"^  ([0-9a-f]{10})  +(\w+): (.*)$", part, flags=re.MULTILINE)
        for part in output.split("\n\n")[1:]
    ]
    assert len(branches) == 2
    first, second = branches
    assert [sender for _, sender, _ in first] == ["user", "editor", "user", "editor"]
    assert [sender for _, sender, _ in second] == ["user", "editor", "user", "editor"]
    # The backtrack: same first two messages (same hashes), then the branches part.
    assert first[:2] == second[:2]
    assert first[2][0] != second[2][0]


def test_quickstart_hashes_do_not_depend_on_the_backend() -> None:
    """The quickstart prints the same hashes on asyncio and on Trio."""
    outputs = [
        run_example(str(QUICKSTART), "--backend", name).stdout for name in ("asyncio", "trio")
    ]
    assert outputs[0] == outputs[1]
    assert re.search(r"\b[0-9a-f]{10}\b", outputs[0])


def test_quickstart_help() -> None:
    """``--help`` describes the example and its ``--backend`` option."""
    process = run_example(str(QUICKSTART), "--help")
    assert process.returncode == 0
    assert "--backend" in process.stdout


RESEARCH_TEAM = ROOT / "examples" / "research_team.py"
OTHER = {"asyncio": "trio", "trio": "asyncio"}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_research_team_streams_the_answer_then_the_tree(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """research_team.py, offline: the team's answer, then its tree; run again, the cache's."""
    for name in [name for name in os.environ if name.startswith("OPENAI_")]:
        monkeypatch.delenv(name)  # no OPENAI_API_KEY nor OPENAI_BASE_URL: scripted models
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # the tree in plain text, not for a terminal
        monkeypatch.delenv(name, raising=False)
    db = str(tmp_path / "team.db")
    first = run_example(str(RESEARCH_TEAM), "--fast", "--db", db, "--backend", backend)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    output = first.stdout
    assert output.startswith("model: scripted")
    assert "answered from the cache" not in output
    assert "you ▸ Why is the sky blue, and why are sunsets red?" in output
    plan, review, answer = output.split("\nlead ▸ ")[1:]
    assert plan.count("\n- ") == 3
    assert review.startswith("The critic asked for changes: ")
    # The revised answer: the writer's draft made from the three researchers' notes.
    assert answer.startswith("In one sentence: air scatters blue light far more than red")
    assert "This is Rayleigh scattering." in answer
    assert "the reds and oranges are left." in answer
    # The tree, as `agentforum tree` draws it: every agent's calls, the ref on the answer.
    tree = output.partition(f"$ agentforum tree --db {db}\n")[2]
    assert tree.startswith(f"{db}  23 messages, 1 ref\n")
    calls = re.findall(r"call → (\w+) model=\"scripted\"", tree)
    assert sorted(calls) == ["critic", "lead", "planner", *["researcher"] * 3, "writer", "writer"]
    assert re.search(r"\(research-team\) forward lead \"In one sentence: ", tree)

    # Started again on the same database, on the other backend: answered from the cache,
    # with the same answer and the same tree (the same messages, with the same hashes).
    again = run_example(str(RESEARCH_TEAM), "--fast", "--db", db, "--backend", OTHER[backend])
    assert again.returncode == 0, again.stderr
    note = f"\n(answered from the cache in {db}: no agent ran, no model was asked)\n"
    assert note in again.stdout
    assert again.stdout.replace(note, "") == output


MCP_TOOLS = ROOT / "examples" / "mcp_tools.py"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_mcp_tools_without_a_model_calls_a_tool_of_itself_as_a_server(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mcp_tools.py, offline: starts itself as an MCP server, lists its tools, calls one."""
    for name in [name for name in os.environ if name.startswith("OPENAI_")]:
        monkeypatch.delenv(name)
    process = run_example(str(MCP_TOOLS), "--backend", backend)
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""
    assert process.stdout == (
        "MCP tool get_weather: The current weather in a city.\n"
        "MCP tool calls_so_far: How many times get_weather was called (for this demo).\n"
        "get_weather(city='Paris') → Paris: sunny, 21 °C\n"
        "(no OPENAI_API_KEY: no model asked; set it to let a model call the tools)\n"
        "the MCP server ran get_weather 1 time(s)\n"
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_mcp_tools_with_a_model_records_the_calls_and_replays_them_from_the_cache(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mcp_tools.py with a (loopback) model: it calls the MCP tool and the Python one.

    Asked again, the cache answers: the server ran get_weather once.
    """
    import anyio.from_thread

    from llm_server import Stream, ToolCall, calling, chat_server

    weather = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    time = ToolCall("call_2", "local_time", '{"city": "Paris"}')
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(chat_server()) as server,
    ):
        server.reply(calling(weather, time), Stream(["Sunny, 21 °C; ", "it is 14:05."]))
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "examples-test-key")
        monkeypatch.setenv("OPENAI_MODEL", "gpt-test")
        process = run_example(str(MCP_TOOLS), "--backend", backend, f"Paris? ({backend})")
        assert server.pending == 0
        assert len(server.requests) == 2
    assert process.returncode == 0, process.stderr
    assert process.stdout == (
        "MCP tool get_weather: The current weather in a city.\n"
        "MCP tool calls_so_far: How many times get_weather was called (for this demo).\n"
        f"you: Paris? ({backend})\n"
        '  calls get_weather({"city": "Paris"})\n'
        '  calls local_time({"city": "Paris"})\n'
        "  get_weather → Paris: sunny, 21 °C\n"
        "  local_time → 14:05\n"
        "answer: Sunny, 21 °C; it is 14:05.\n"
        "asked again: the same messages, from the cache\n"
        "the MCP server ran get_weather 1 time(s)\n"
    )
