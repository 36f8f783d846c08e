"""A human in the loop: ``console_user_agent`` and ``UserProxy``."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import anyio
import pytest

from agentforum import (
    Agent,
    AgentCancelled,
    AgentError,
    Forum,
    InteractionContext,
    Message,
    SQLiteStore,
    StreamedMessage,
)
from agentforum.agents import ConsoleUser, UserProxy, console_user_agent, dialog_loop
from agentforum.testing import ScriptedModel

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio


def said(history: list[Message]) -> str:
    return f"You said {history[-1].content!r} ({len(history)} messages so far)."


def console_chat(
    typed: str, *, echo: bool | None = None
) -> tuple[Agent, io.StringIO, ScriptedModel]:
    forum = Forum()
    output = io.StringIO()
    user = forum.agent(console_user_agent(input=io.StringIO(typed), output=output, echo=echo))
    model = ScriptedModel(said)
    assistant = forum.agent(model, alias="assistant")
    return forum.agent(dialog_loop(user, assistant), alias="chat"), output, model


async def test_the_console_user_shows_its_requests_and_sends_what_is_typed() -> None:
    """Requests after the prefix, the prompt, the typed line (echoed: not a terminal)."""
    chat, output, model = console_chat("Hello\nexit\n")
    async with chat.forum:
        answers = await chat.ask("Welcome!").messages()
    assert [m.content for m in answers] == ["Hello", "You said 'Hello' (2 messages so far)."]
    assert output.getvalue() == (
        "» Welcome!\nyou ▸ Hello\n» You said 'Hello' (2 messages so far).\nyou ▸ exit\n"
    )
    assert model.requests == [["Hello"]]


async def test_backslash_continues_blank_asks_again_and_eof_ends() -> None:
    """Multi-line messages, blank input, and the end of the input."""
    chat, output, _ = console_chat("one\\\ntwo\n\n   \nlast")
    async with chat.forum:
        answers = await chat.ask().messages()
    assert [m.content for m in answers[::2]] == ["one\ntwo", "last"]
    assert output.getvalue() == (
        "you ▸ one\\\n"
        "..... two\n"
        "» You said 'one\\ntwo' (1 messages so far).\n"
        "you ▸ \n"
        "you ▸    \n"
        "you ▸ last\n"
        "» You said 'last' (3 messages so far).\n"
        "you ▸ \n"
    )


async def test_exit_only_ends_as_a_whole_first_line() -> None:
    """``exit`` inside a longer message is sent; ``  exit  `` alone ends."""
    chat, output, _ = console_chat("exit\\\nnow\n  exit  \n", echo=False)
    async with chat.forum:
        answers = await chat.ask().messages()
    assert [m.content for m in answers] == [
        "exit\nnow",
        "You said 'exit\\nnow' (1 messages so far).",
    ]
    assert output.getvalue() == ("you ▸ ..... » You said 'exit\\nnow' (1 messages so far).\nyou ▸ ")


class SignallingOutput(io.StringIO):
    """A text output that sets ``event`` when ``text`` is written to it."""

    def __init__(self, text: str, event: anyio.Event) -> None:
        super().__init__()
        self._text = text
        self._event = event

    def write(self, text: str) -> int:
        if text == self._text:
            self._event.set()
        return super().write(text)


async def test_the_console_user_prints_tokens_as_they_stream() -> None:
    """The first token is written before the assistant produces the second one."""
    forum = Forum()
    first_written = anyio.Event()
    output = SignallingOutput("one ", first_written)
    user = forum.agent(console_user_agent(input=io.StringIO("exit\n"), output=output))

    @forum.agent
    async def assistant(ctx: InteractionContext) -> None:
        message = StreamedMessage()
        ctx.respond(message)
        async with message:
            await message.send("one ")
            await first_written.wait()  # set by the console user's output only
            await message.send("two\n")

    async with forum:
        assert await user.ask(assistant.ask("go")).messages() == []
    assert output.getvalue() == "» one two\nyou ▸ exit\n"


async def test_in_a_dialog_the_console_user_prints_the_answer_as_it_streams() -> None:
    """A dialog asks the user with the assistant's answer while it streams."""
    forum = Forum()
    first_written = anyio.Event()
    output = SignallingOutput("one ", first_written)
    user = forum.agent(console_user_agent(input=io.StringIO("hi\nexit\n"), output=output))

    @forum.agent
    async def assistant(ctx: InteractionContext) -> None:
        message = StreamedMessage()
        ctx.respond(message)
        async with message:
            await message.send("one ")
            await first_written.wait()  # set by the console user's output only
            await message.send("two")

    chat = forum.agent(dialog_loop(user, assistant), alias="chat")
    async with forum:
        with anyio.fail_after(10):
            answers = await chat.ask().messages()
    assert [m.content for m in answers] == ["hi", "one two"]
    assert output.getvalue() == "you ▸ hi\n» one two\nyou ▸ exit\n"


async def test_a_failed_request_fails_the_console_user() -> None:
    """A request that ends in an error: the console user's call fails with it."""
    forum = Forum(strict_errors=False)
    output = io.StringIO()
    user = forum.agent(console_user_agent(input=io.StringIO("hi\n"), output=output))

    @forum.agent
    async def broken(ctx: InteractionContext) -> None:
        ctx.respond("partial")
        raise ValueError("broken")

    async with forum:
        with pytest.raises(AgentError, match="broken"):
            await user.ask(broken.ask("go")).messages()


def test_console_user_agent_defaults() -> None:
    """Uncached, alias ``user``, a description; standard streams when none are given."""
    forum = Forum()
    function = console_user_agent()
    assert isinstance(function, ConsoleUser)
    user = forum.agent(function)
    assert (user.alias, user.cache, user.description) == ("user", False, "A human at the console.")
    assert repr(function) == "<ConsoleUser>"
    assert (function.prompt, function.prefix) == ("you ▸ ", "» ")


async def test_the_console_user_reads_standard_input_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without streams, ``sys.stdin`` and ``sys.stdout`` at the time of the call."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin\n"))
    forum = Forum()
    user = forum.agent(console_user_agent())
    async with forum:
        assert [m.content for m in await user.ask("q?").messages()] == ["from stdin"]
    assert capsys.readouterr().out == "» q?\nyou ▸ from stdin\n"


CHAT_SCRIPT = """
import sys

import anyio

from agentforum import Forum
from agentforum.agents import console_user_agent, dialog_loop
from agentforum.testing import ScriptedModel


async def main() -> None:
    forum = Forum()
    user = forum.agent(console_user_agent())
    assistant = forum.agent(
        ScriptedModel(lambda h: f"echo: {h[-1].content}", chunk="characters"),
        alias="assistant",
    )
    chat = forum.agent(dialog_loop(user, assistant), alias="chat")
    async with forum:
        turns = await chat.ask().messages()
    print(f"[{len(turns)} turns]")


anyio.run(main, backend=sys.argv[1])
"""


@pytest.mark.skipif(os.name != "posix", reason="pseudo-terminals are POSIX")
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_console_user_in_a_real_terminal(tmp_path: pathlib.Path, backend: str) -> None:
    """Through a pseudo-terminal: the terminal echoes, Ctrl-D ends the conversation cleanly."""
    import pty

    script = tmp_path / "chat.py"
    script.write_text(textwrap.dedent(CHAT_SCRIPT))
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, str(script), backend], stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    received = b""

    def read_until(marker: bytes) -> None:
        nonlocal received
        while marker not in received:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, f"no {marker!r} in {received!r}"
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other end is closed
                chunk = b""
            assert chunk, f"the terminal closed before {marker!r}: {received!r}"
            received += chunk

    prompt = "you ▸ ".encode()
    try:
        read_until(prompt)
        os.write(master, b"hello\n")
        read_until(b"echo: hello\r\n" + prompt)
        os.write(master, b"two\\\n")
        read_until(b"..... ")
        os.write(master, b"lines\n")
        read_until(b"echo: two\r\nlines\r\n" + prompt)
        os.write(master, b"\x04")  # Ctrl-D: the end of the input
        read_until(b"[4 turns]\r\n")
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    text = received.decode().replace("\r\n", "\n")
    assert text == (
        "you ▸ hello\n"  # typed: the terminal's echo
        "» echo: hello\n"
        "you ▸ two\\\n"
        "..... lines\n"
        "» echo: two\nlines\n"
        "you ▸ \n"
        "[4 turns]\n"
    )


# -- UserProxy ------------------------------------------------------------------------------


def proxy_chat(forum: Forum) -> tuple[UserProxy, Agent]:
    proxy = UserProxy(forum)
    assistant = forum.agent(ScriptedModel(said), alias="assistant")
    return proxy, forum.agent(dialog_loop(proxy.agent, assistant), alias="dialog")


async def test_a_proxy_call_waits_for_the_reply() -> None:
    """``pending`` shows the conversation so far; ``reply`` answers; ``end`` ends it."""
    forum = Forum()
    proxy, dialog = proxy_chat(forum)
    assert proxy.agent.alias == "user"
    assert proxy.agent.cache is False
    async with forum:
        responses = dialog.ask("Welcome")
        history = await proxy.pending()
        assert [m.content for m in history] == ["Welcome"]
        assert await proxy.pending() == history  # still the same call, still waiting
        assert proxy.waiting == 1
        assert repr(proxy) == "<UserProxy 'user', 1 waiting>"
        proxy.reply("Hi")
        history = await proxy.pending()
        assert [m.content for m in history] == [
            "Welcome",
            "Hi",
            "You said 'Hi' (2 messages so far).",
        ]
        proxy.end()
        answers = await responses.messages()
    assert [m.content for m in answers] == ["Hi", "You said 'Hi' (2 messages so far)."]
    assert proxy.waiting == 0


async def test_waiting_calls_are_answered_in_order() -> None:
    """Two calls waiting at once: replies go to the one that started first."""
    forum = Forum()
    proxy = UserProxy(forum, alias="human", description="Our tester.")
    assert proxy.agent.description == "Our tester."
    async with forum:
        first = proxy.agent.ask("first?")
        assert [m.content for m in await proxy.pending()] == ["first?"]
        second = proxy.agent.ask("second?")
        while proxy.waiting < 2:
            await anyio.wait_all_tasks_blocked()
        proxy.reply("one")
        assert [m.content for m in await proxy.pending()] == ["second?"]
        proxy.reply("two")
        assert [m.content for m in await first.messages()] == ["one"]
        assert [m.content for m in await second.messages()] == ["two"]
        assert (await first.last()).sender == "human"


async def test_replying_with_no_call_waiting_is_an_error() -> None:
    """``reply`` and ``end`` never queue: they need a waiting call; replies are str."""
    forum = Forum()
    proxy = UserProxy(forum)
    with pytest.raises(RuntimeError, match="pending"):
        proxy.reply("too early")
    with pytest.raises(RuntimeError, match="pending"):
        proxy.end()
    async with forum:
        responses = proxy.agent.ask("q")
        await proxy.pending()
        with pytest.raises(TypeError, match="not int"):
            proxy.reply(42)  # type: ignore[arg-type]
        proxy.reply("fine")
        await responses.messages()


async def test_a_cancelled_proxy_call_stops_waiting() -> None:
    """Cancelling a waiting call removes it: the next reply goes to the next call."""
    forum = Forum()
    proxy = UserProxy(forum)
    async with forum:
        first = proxy.agent.ask("first?")
        await proxy.pending()
        first.cancel()
        with pytest.raises(AgentCancelled):
            await first.messages()
        assert proxy.waiting == 0
        second = proxy.agent.ask("second?")
        assert [m.content for m in await proxy.pending()] == ["second?"]
        proxy.reply("ok")
        assert [m.content for m in await second.messages()] == ["ok"]


async def test_pending_waits_for_a_call_and_can_be_cancelled() -> None:
    """``pending`` waits until a call waits; cancelling it cancels the wait only."""
    forum = Forum()
    proxy = UserProxy(forum)
    async with forum:
        with anyio.move_on_after(0) as scope:
            await proxy.pending()
        assert scope.cancelled_caught
        got: list[list[Message]] = []
        async with anyio.create_task_group() as group:

            async def wait() -> None:
                got.append(await proxy.pending())

            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            responses = proxy.agent.ask("now?")
        assert [m.content for m in got[0]] == ["now?"]
        proxy.reply("yes")
        await responses.messages()


RESUME_SCRIPT = """
import sys

import anyio

from agentforum import Forum
from agentforum.agents import UserProxy, dialog_loop
from agentforum.testing import ScriptedModel


def said(history):
    return f"You said {history[-1].content!r} ({len(history)} messages so far)."


async def main() -> None:
    path, step = sys.argv[1], sys.argv[2]
    forum = Forum(path)
    proxy = UserProxy(forum)
    assistant = forum.agent(ScriptedModel(said), alias="assistant")
    dialog = forum.agent(dialog_loop(proxy.agent, assistant), alias="dialog")
    async with forum:
        if step == "start":
            responses = dialog.ask("Welcome")
            await proxy.pending()
            proxy.reply("Hello")
            history = await proxy.pending()
            # Pause: remember where the conversation waits, and stop.
            await forum.set_ref("waiting", history[-1])
            responses.cancel()
        else:
            waiting = await forum.get("waiting")
            responses = dialog.ask(waiting)  # resume: the same question, asked again
            history = await proxy.pending()
            assert history[-1] == waiting, history
            proxy.reply("And then?")
            history = await proxy.pending()
            proxy.end()
            await responses.messages()
            await forum.set_ref("done", history[-1])
    print("ok", flush=True)


anyio.run(main, backend=sys.argv[3])
"""


async def test_a_paused_conversation_resumes_in_another_process(tmp_path: pathlib.Path) -> None:
    """A UserProxy conversation paused in one process goes on in another, from the database.

    The resumed branch is the very branch an uninterrupted conversation writes: the same
    hashes.
    """
    script = tmp_path / "resume.py"
    script.write_text(textwrap.dedent(RESUME_SCRIPT))
    path = tmp_path / "chat.db"
    with anyio.fail_after(60):
        for step, backend in (("start", "asyncio"), ("resume", "trio")):
            result = await anyio.run_process(
                [sys.executable, str(script), str(path), step, backend], check=False
            )
            assert result.returncode == 0, result.stderr.decode()
            assert result.stdout == b"ok\n"
            assert result.stderr == b""

    store = SQLiteStore(path, create=False)
    try:
        done = await store.get_ref("done")
        assert done is not None
        stored = [m for m in await store.ancestors(done) if m.sender]
    finally:
        await store.aclose()
    assert [m.content for m in stored] == [
        "Welcome",
        "Hello",
        "You said 'Hello' (2 messages so far).",
        "And then?",
        "You said 'And then?' (4 messages so far).",
    ]

    # The same conversation without a pause, in memory.
    forum = Forum()
    proxy, dialog = proxy_chat(forum)
    async with forum:
        responses = dialog.ask("Welcome")
        await proxy.pending()
        proxy.reply("Hello")
        await proxy.pending()
        proxy.reply("And then?")
        history = await proxy.pending()
        proxy.end()
        await responses.messages()
    assert history[-1].hash == done


# -- at a real terminal, in this process ----------------------------------------------------


@pytest.fixture
def terminal_user() -> Iterator[tuple[int, Agent]]:
    """A console user at a pseudo-terminal, in a forum of its own: the descriptor to type
    into, and the user's agent."""
    pty = pytest.importorskip("pty", reason="pseudo-terminals are POSIX")
    master, slave = pty.openpty()
    typed = open(slave, encoding="utf-8")  # closed below, after the master
    user = Forum().agent(console_user_agent(input=typed, output=io.StringIO()))
    try:
        yield master, user
    finally:
        # The master first: a read still blocked on the terminal then ends (EIO).
        os.close(master)
        typed.close()


async def test_a_call_cancelled_at_a_terminal_leaves_the_next_line_to_the_next_call(
    terminal_user: tuple[int, Agent],
) -> None:
    """Cancelled while it waits at a terminal (Ctrl-C), a call has read nothing: the line
    typed next is the next call's, not swallowed by a read left behind."""
    master, user = terminal_user
    with anyio.fail_after(10):
        async with user.forum:
            first = user.ask("first?")
            await anyio.wait_all_tasks_blocked()  # it waits for a line
            first.cancel()
            with pytest.raises(AgentCancelled):
                await first.messages()
            os.write(master, b"kept\n")
            second = user.ask("second?")
            assert [m.content for m in await second.messages()] == ["kept"]


async def test_calls_at_a_terminal_take_turns(terminal_user: tuple[int, Agent]) -> None:
    """Two calls that wait at the same terminal: each reads a line of its own, whole."""
    master, user = terminal_user
    with anyio.fail_after(10):
        async with user.forum:
            calls = [user.ask("first?"), user.ask("second?")]
            await anyio.wait_all_tasks_blocked()
            os.write(master, b"one\\\nstill one\ntwo\n")
            replies = [[m.content for m in await call.messages()] for call in calls]
    assert sorted(replies) == [["one\nstill one"], ["two"]]


async def test_the_end_of_a_terminals_input_ends_the_call(terminal_user: tuple[int, Agent]) -> None:
    """Ctrl-D at the start of a line: the call responds nothing; a line cut by Ctrl-D (then
    ended by another) is read as ``readline`` would."""
    master, user = terminal_user
    with anyio.fail_after(10):
        async with user.forum:
            first = user.ask("first?")
            await anyio.wait_all_tasks_blocked()
            os.write(master, b"half\x04")  # Ctrl-D mid-line: the terminal hands over "half"
            await anyio.wait_all_tasks_blocked()
            os.write(master, b" more\n")
            assert [m.content for m in await first.messages()] == ["half more"]
            second = user.ask("second?")
            await anyio.wait_all_tasks_blocked()
            os.write(master, b"\x04")
            assert await second.messages() == []
