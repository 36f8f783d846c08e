"""The Python code blocks of README.md and docs/*.md run, on asyncio and on Trio.

Convention for the Markdown files: a fenced block whose info string is exactly ``python``
is a complete program. It is run here on its own, in a fresh namespace with
``__name__ == "__main__"``, and must pass without help. Its ``anyio.run(main)`` runs on the
backend under test (asyncio in debug mode, then Trio), whatever backend it names.

A block that only illustrates (a fragment, pseudo-code, a signature) must use another info
string: ``py`` for Python that is shown highlighted but not run, ``console`` for shell
commands, ``text`` or none for output and data.

The blocks of the documents in ``LLM_DOCUMENTS`` (``docs/llms.md``,
``docs/observability.md``, ``docs/mcp.md``) ask a model through ``openai.AsyncOpenAI()`` or
``anthropic.AsyncAnthropic()`` configured from the environment: while one of them runs, a
loopback Chat Completions server (``tests/llm_server.py``) and a loopback Messages API
server (``tests/anthropic_server.py``) answer every request with ``LLM_REPLY``, streamed,
with usage, and ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``, ``ANTHROPIC_BASE_URL`` and
``ANTHROPIC_API_KEY`` point at them. A block that needs other answers (a model that calls
a tool) gets them from ``LLM_SCRIPTS`` (Chat Completions) or ``MESSAGES_SCRIPTS``
(Messages API), first, and must use them all. No block reaches the network.
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
import anyio.from_thread
import pytest

import anthropic_server
from anthropic_server import MessagesServer, ToolUse, messages_server, using
from llm_server import (
    SDK_GENERATOR_WARNING,
    ChatServer,
    Reply,
    Stream,
    ToolCall,
    calling,
    chat_server,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
BACKENDS: dict[str, dict[str, Any]] = {"asyncio": {"debug": True}, "trio": {}}

# An opening fence (``` or ~~~, three or more, up to three spaces in) and its info string.
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")

#: The names of the documents whose blocks run against a loopback LLM server.
LLM_DOCUMENTS = frozenset({"llms.md", "observability.md", "mcp.md"})
#: What the loopback server answers to every request, a word per token.
LLM_REPLY = "A streamed answer from the loopback server."
#: The replies scripted for the blocks of a document that contain a text, answered before
#: ``LLM_REPLY``: ``{(document name, text of the block): make the replies}``.
LLM_SCRIPTS: dict[tuple[str, str], Callable[[], list[Reply]]] = {
    # docs/llms.md, "Tools": the model calls get_weather, then answers with its result.
    ("llms.md", "def get_weather("): lambda: [
        calling(ToolCall("call_1", "get_weather", '{"city": "Paris"}')),
        Stream(["It is sunny", " in Paris", ", 21 °C."]),
    ],
    # docs/mcp.md: the model calls the MCP server's get_weather, then answers.
    ("mcp.md", "def get_weather("): lambda: [
        calling(ToolCall("call_1", "get_weather", '{"city": "Paris"}')),
        Stream(["It is sunny", " in Paris", ", 21 °C."]),
    ],
}
#: The same for the Messages API server (``anthropic_server``).
MESSAGES_SCRIPTS: dict[tuple[str, str], Callable[[], list[Reply]]] = {
    # docs/llms.md, "Tools with Anthropic": the model uses population, then answers.
    ("llms.md", "def population("): lambda: [
        using(ToolUse("toolu_1", "population", '{"city": "Paris"}')),
        anthropic_server.Stream(["About 2.1 million", " people live in Paris."]),
    ],
}


class LLMServers(NamedTuple):
    """The loopback servers a block of one of ``LLM_DOCUMENTS`` runs against."""

    chat: ChatServer
    messages: MessagesServer

    @property
    def pending(self) -> int:
        """How many scripted replies are left, on both servers."""
        return self.chat.pending + self.messages.pending


class Block(NamedTuple):
    """One fenced code block of a Markdown file."""

    path: Path
    index: int  # among the file's ``python`` blocks, from 0
    line: int  # of the opening fence, from 1
    source: str
    #: What the block prints, when the document says so: the ``text`` block that follows
    #: a paragraph that is exactly "It prints:".
    expected: str | None = None


def python_blocks(path: Path) -> Iterator[Block]:
    """Yield the blocks of ``path`` whose info string is exactly ``python``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    number = 0
    while number < len(lines):
        opening = _FENCE.match(lines[number])
        number += 1
        if opening is None:
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        start = number
        # The block ends at a closing fence of the same kind, at least as long, or at the end.
        while number < len(lines):
            closing = lines[number].strip()
            if closing.startswith(fence) and set(closing) == {fence[0]}:
                break
            number += 1
        body = [line[indent:] if line[:indent].isspace() else line for line in lines[start:number]]
        number += 1
        if opening["info"].strip() == "python":
            yield Block(path, index, start, "\n".join(body) + "\n", _printed(lines, number))
            index += 1


def _printed(lines: list[str], number: int) -> str | None:
    """The output stated after the block that ends before line ``number`` (from 0), if any.

    That is the body of a ``text`` block that follows a paragraph that is exactly
    "It prints:" (only blank lines between them). Any other wording ("It prints something
    like:") states no exact output.
    """
    following = [line for line in lines[number : number + 6] if line.strip()]
    if len(following) < 2 or following[0].strip() != "It prints:":
        return None
    if following[1].strip() != "```text":
        return None
    start = lines.index(following[1], number) + 1
    end = start
    while end < len(lines) and lines[end].strip() != "```":
        end += 1
    return "\n".join(lines[start:end])


def _normalized(text: str) -> str:
    """Text without trailing white space on its lines, nor blank lines at its ends."""
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def _cases() -> list[Any]:
    cases = []
    for path in DOCUMENTS:
        for block in python_blocks(path):
            name = f"{path.relative_to(ROOT).as_posix()}-{block.index}"
            # A block that starts no event loop is run once, not once per backend.
            backends = list(BACKENDS) if "anyio.run(" in block.source else [None]
            cases.extend(
                pytest.param(block, backend, id=f"{name}-{backend}" if backend else name)
                for backend in backends
            )
    return cases


@pytest.fixture
def run_on(monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None], list[str]]:
    """Make ``anyio.run`` run on the given backend, whatever backend its caller names.

    Returns the list of the backends that ``anyio.run`` was then called with.
    """
    original = anyio.run

    def select(chosen: str | None) -> list[str]:
        used: list[str] = []
        if chosen is None:
            return used

        def run(func: Callable[..., Any], *args: object, **_backend: object) -> Any:
            used.append(chosen)
            return original(func, *args, backend=chosen, backend_options=dict(BACKENDS[chosen]))

        monkeypatch.setattr(anyio, "run", run)
        return used

    return select


@contextmanager
def llm_environment(block: Block) -> Iterator[LLMServers | None]:
    """What ``block`` needs to run: loopback LLM servers if its document asks a model.

    For a block of one of ``LLM_DOCUMENTS``, runs :func:`llm_server.chat_server` and
    :func:`anthropic_server.messages_server` in a background thread (the block starts its
    own event loop, on either backend) and points ``OPENAI_BASE_URL`` and
    ``OPENAI_API_KEY``, ``ANTHROPIC_BASE_URL`` and ``ANTHROPIC_API_KEY`` at them for the
    duration of the block; yields the servers, with the block's ``LLM_SCRIPTS`` and
    ``MESSAGES_SCRIPTS`` queued. For any other block, does nothing and yields ``None``.
    """
    if block.path.name not in LLM_DOCUMENTS:
        yield None
        return
    words = re.findall(r"\s*\S+", LLM_REPLY)
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(chat_server(default=Stream(words))) as chat,
        portal.wrap_async_context_manager(
            messages_server(default=anthropic_server.Stream(words))
        ) as messages,
        pytest.MonkeyPatch.context() as patch,
        warnings.catch_warnings(),
    ):
        for scripts, server in ((LLM_SCRIPTS, chat), (MESSAGES_SCRIPTS, messages)):
            for (document, text), script in scripts.items():
                if block.path.name == document and text in block.source:
                    server.reply(*script())
        patch.setenv("OPENAI_BASE_URL", chat.base_url)
        patch.setenv("OPENAI_API_KEY", "docs-test-key")
        patch.setenv("ANTHROPIC_BASE_URL", messages.base_url)
        patch.setenv("ANTHROPIC_API_KEY", "docs-test-key")
        # The SDKs leave async generators for Trio to close, which warns (see llm_server).
        warnings.filterwarnings("ignore", SDK_GENERATOR_WARNING, ResourceWarning)
        warnings.filterwarnings("ignore", anthropic_server.SDK_GENERATOR_WARNING, ResourceWarning)
        yield LLMServers(chat, messages)


def _where(block: Block) -> str:
    path = block.path.relative_to(ROOT) if block.path.is_relative_to(ROOT) else block.path
    return f"{path.as_posix()} (python block {block.index})"


def run_block(block: Block) -> None:
    """Run ``block`` as a program of its own, in a fresh namespace."""
    # Blank lines first, so that tracebacks give the line numbers of the Markdown file.
    code = compile("\n" * block.line + block.source, _where(block), "exec", dont_inherit=True)
    exec(code, {"__name__": "__main__"})


def test_readme_has_python_examples() -> None:
    """README.md is where this test looks for it, and it has a ``python`` block to run."""
    assert list(python_blocks(ROOT / "README.md"))


def test_only_exact_python_fences_are_programs(tmp_path: Path) -> None:
    """Blocks fenced ``python`` are collected; ``py``, ``console``, ``text`` and bare are not."""
    document = tmp_path / "doc.md"
    document.write_text(
        "```py\nfragment()\n```\n"
        "```python\nprint(1)\n```\n"
        "````python\nprint('```')\n```\n````\n"
        "```console\n$ python\n```\n"
        "```\nplain\n```\n"
        "  ```python\n  print(2)\n  ```\n",
        encoding="utf-8",
    )
    blocks = list(python_blocks(document))
    assert [block.source for block in blocks] == ["print(1)\n", "print('```')\n```\n", "print(2)\n"]
    assert [block.line for block in blocks] == [4, 7, 17]


def test_the_stated_output_is_taken_only_after_it_prints(tmp_path: Path) -> None:
    """A block's output is stated by a ``text`` block after exactly "It prints:"."""
    document = tmp_path / "doc.md"
    document.write_text(
        "```python\nprint('a')\n```\n\nIt prints:\n\n```text\na\n  b\n```\n\n"
        "```python\nprint('c')\n```\n\nIt prints something like:\n\n```text\nc\n```\n\n"
        "```python\nprint('d')\n```\n\nIt prints:\n\n```console\nd\n```\n",
        encoding="utf-8",
    )
    assert [block.expected for block in python_blocks(document)] == ["a\n  b", None, None]


@pytest.mark.parametrize(
    ("printed", "stated", "same"),
    [
        ("x  \ny\n\n", "x\ny", True),  # trailing white space and blank lines do not count
        ("x\n", "x\ny", False),
        ("  x\n", "x", False),  # leading white space does
    ],
)
def test_the_output_is_compared_line_by_line(printed: str, stated: str, same: bool) -> None:
    assert (_normalized(printed) == _normalized(stated)) is same


@pytest.mark.parametrize(("block", "backend"), _cases())
def test_python_block_runs(
    block: Block,
    backend: str | None,
    run_on: Callable[[str | None], list[str]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``python`` block of the docs runs on its own and prints what it says it prints.

    Exactly, when the document states it (``It prints:`` and a ``text`` block); otherwise
    (a model's answer, a time) the block must print something.
    """
    # In an empty working directory of its own: the files a block writes (the tutorial's
    # tutorial.db) are the test's, and blocks run at once never share one.
    monkeypatch.chdir(tmp_path)
    used = run_on(backend)
    where = _where(block)
    with llm_environment(block) as server:
        run_block(block)
        if server is not None:
            assert server.pending == 0, f"{where}: the block left scripted replies unused"
    output = capsys.readouterr().out
    if backend is not None:
        assert used, f"{where}: anyio.run was not called"
    if "print(" in block.source:
        assert output.strip(), f"{where}, line {block.line}: printed nothing"
    if block.expected is not None:
        assert _normalized(output) == _normalized(block.expected), (
            f"{where}, line {block.line}: prints something else than the document says"
        )


_LLM_EXAMPLE = """\
# A block as docs/llms.md has them: the client from the environment.
import anyio
import openai

from agentforum import Forum
from agentforum.llms.openai import openai_agent


async def main() -> None:
    forum = Forum()
    async with openai.AsyncOpenAI() as client:
        gpt = forum.agent(openai_agent(model="gpt-4o-mini", client=client), alias="gpt")
        async with forum:
            sequence = gpt.ask("Hello?")
            async for promise in sequence:
                async for token in promise:
                    print(token, end="", flush=True)
            message = await sequence.last()
    print()
    print(message.metadata["model"], dict(message.metadata["usage"]))


anyio.run(main)
"""


_ANTHROPIC_EXAMPLE = """\
# The same with the Anthropic SDK: the client from the environment too.
import anthropic
import anyio

from agentforum import Forum
from agentforum.llms.anthropic import anthropic_agent


async def main() -> None:
    forum = Forum()
    async with anthropic.AsyncAnthropic() as client:
        agent = anthropic_agent(model="claude-test", client=client, system="Be brief.")
        claude = forum.agent(agent, alias="claude")
        async with forum:
            message = await claude.ask("Hello?").last()
    print(message.content)
    print(message.metadata["model"], dict(message.metadata["usage"]))


anyio.run(main)
"""


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_llm_documents_run_against_a_loopback_server(
    backend: str,
    tmp_path: Path,
    run_on: Callable[[str | None], list[str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A block of a document named in LLM_DOCUMENTS gets servers and the environment for them.

    The block's ``openai.AsyncOpenAI()`` or ``anthropic.AsyncAnthropic()`` reaches its
    loopback server through the environment, on either backend, and streams its reply;
    the environment is as it was once the block is done. A block of another document gets
    neither.
    """
    for variable in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "the user's own")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "the user's own too")
    (tmp_path / "llms.md").write_text(
        f"# LLMs\n\n```python\n{_LLM_EXAMPLE}```\n\n```python\n{_ANTHROPIC_EXAMPLE}```\n",
        encoding="utf-8",
    )
    (tmp_path / "other.md").write_text("```python\nprint('plain')\n```\n", encoding="utf-8")
    [block, anthropic_block] = python_blocks(tmp_path / "llms.md")
    [other] = python_blocks(tmp_path / "other.md")

    used = run_on(backend)
    with llm_environment(block) as servers:
        assert servers is not None
        run_block(block)
        assert [request.body["model"] for request in servers.chat.requests] == ["gpt-4o-mini"]
        assert servers.chat.requests[0].headers["authorization"] == "Bearer docs-test-key"
        assert servers.messages.requests == []
    with llm_environment(anthropic_block) as servers:
        assert servers is not None
        run_block(anthropic_block)
        [request] = servers.messages.requests
        assert (request.body["model"], request.body["system"]) == ("claude-test", "Be brief.")
        assert request.headers["authorization"] == "Bearer docs-test-key"
        assert servers.chat.requests == []
    assert used == [backend, backend]
    assert capsys.readouterr().out.splitlines() == [
        LLM_REPLY,
        "gpt-4o-mini {'prompt_tokens': 1, 'completion_tokens': 7, 'total_tokens': 8}",
        LLM_REPLY,
        "claude-test {'input_tokens': 1, 'output_tokens': 7}",
    ]
    assert "OPENAI_BASE_URL" not in os.environ
    assert "ANTHROPIC_BASE_URL" not in os.environ
    assert os.environ["OPENAI_API_KEY"] == "the user's own"
    assert os.environ["ANTHROPIC_API_KEY"] == "the user's own too"
    with llm_environment(other) as nothing:
        assert nothing is None
