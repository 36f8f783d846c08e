"""``agentforum chat``: a terminal chat kept in the database, resumed by ref or hash."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from typing import TYPE_CHECKING

import anyio
import pytest

from agentforum import SQLiteStore
from llm_server import Stream, chat_server

if TYPE_CHECKING:
    from pathlib import Path


def chat(db: Path | str, typed: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agentforum chat`` with ``typed`` as its (piped) standard input."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "agentforum", "chat", "--db", str(db), *args],
        input=typed,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=60,
        check=False,
    )


def branch(db: Path, ref: str) -> list[str]:
    async def read() -> list[str]:
        store = SQLiteStore(db, create=False)
        try:
            key = await store.get_ref(ref)
            assert key is not None
            return [f"{m.sender}: {m.content}" for m in await store.ancestors(key) if m.sender]
        finally:
            await store.aclose()

    return anyio.run(read)


def test_the_resume_hint_quotes_a_database_path_for_the_shell(tmp_path: Path) -> None:
    """The printed command works when pasted, whatever the path holds (a space, a quote)."""
    folder = tmp_path / "my chats"
    folder.mkdir()
    db = folder / "it's.db"
    result = chat(db, "Hi\nexit\n")
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if "Resume with:" in line]
    command = shlex.split(line.partition("Resume with: ")[2])
    assert command == ["agentforum", "chat", "--resume", "chat/1", "--db", str(db)]


def test_a_chat_is_saved_and_resumed_by_ref_and_by_hash(tmp_path: Path) -> None:
    """A first session makes chat/1; resuming it by ref goes on where it stopped."""
    db = tmp_path / "chat.db"
    first = chat(db, "Hello\nexit\n")
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    assert "A new conversation, chat/1" in first.stdout
    assert "you ▸ Hello\nassistant ▸ (scripted) You said 'Hello'." in first.stdout
    assert f"Resume with: agentforum chat --resume chat/1 --db {db}" in first.stdout
    assert branch(db, "chat/1") == [
        "user: Hello",
        "assistant: (scripted) You said 'Hello'. I see 1 messages of this chat, 1 of them yours.",
    ]
    assert branch(db, "chat/latest") == branch(db, "chat/1")

    second = chat(db, "Again\n", "--resume", "chat/1")  # ends at the end of the input
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("Resuming chat/1")))
    assert lines[start + 2 : start + 6] == [
        "you ▸ Hello",
        "assistant ▸ (scripted) You said 'Hello'. I see 1 messages of this chat, 1 of them yours.",
        "you ▸ Again",
        "assistant ▸ (scripted) You said 'Again'. I see 3 messages of this chat, 2 of them yours.",
    ]
    resumed = branch(db, "chat/1")
    assert resumed[-2:] == [
        "user: Again",
        "assistant: (scripted) You said 'Again'. I see 3 messages of this chat, 2 of them yours.",
    ]

    # A hash prefix in the middle of chat/1: a new branch, a new ref.
    async def first_answer() -> str:
        store = SQLiteStore(db, create=False)
        try:
            key = await store.get_ref("chat/1")
            assert key is not None
            return next(m.hash for m in await store.ancestors(key) if m.sender == "assistant")
        finally:
            await store.aclose()

    middle = anyio.run(first_answer)
    third = chat(db, "Other way\nexit\n", "--resume", middle[:10])
    assert third.returncode == 0, third.stderr
    assert "Resuming chat/2" in third.stdout
    assert branch(db, "chat/2")[:2] == resumed[:2]
    assert branch(db, "chat/2")[2] == "user: Other way"
    assert branch(db, "chat/1") == resumed  # untouched
    assert branch(db, "chat/latest") == branch(db, "chat/2")


def test_resuming_after_the_users_message_lets_the_assistant_answer_first(tmp_path: Path) -> None:
    """Resumed at a message of the user's, the assistant answers it before the user types."""
    db = tmp_path / "chat.db"
    assert chat(db, "Hi\nexit\n").returncode == 0
    user_message = branch(db, "chat/1")[0]
    assert user_message == "user: Hi"

    async def hash_of_first() -> str:
        store = SQLiteStore(db, create=False)
        try:
            key = await store.get_ref("chat/1")
            assert key is not None
            return next(m.hash for m in await store.ancestors(key) if m.sender == "user")
        finally:
            await store.aclose()

    key = anyio.run(hash_of_first)
    result = chat(db, "", "--resume", key)
    assert result.returncode == 0, result.stderr
    assert "you ▸ Hi\nassistant ▸ (scripted) You said 'Hi'." in result.stdout


def test_resuming_what_does_not_exist_is_a_one_line_error(tmp_path: Path) -> None:
    """A ref that names nothing: exit status 1, one line on standard error."""
    db = tmp_path / "chat.db"
    assert chat(db, "exit\n").returncode == 0
    result = chat(db, "", "--resume", "chat/9")
    assert result.returncode == 1
    assert result.stderr.startswith("agentforum: error: ")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.anyio
async def test_a_chat_with_a_model_server_streams_its_answers(tmp_path: Path) -> None:
    """With OPENAI_BASE_URL set, the chat asks that server (the real SDK, on loopback) with
    the whole conversation and the chosen model, and prints the streamed answers."""
    db = tmp_path / "chat.db"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "AGENTFORUM_MODEL")}
    async with chat_server() as server:
        server.reply(Stream(["Bonjour", " !"]), Stream(["Au", " revoir"]))
        env["OPENAI_BASE_URL"] = server.base_url
        with anyio.fail_after(60):
            result = await anyio.run_process(
                [sys.executable, "-m", "agentforum", "chat", "--db", str(db), "--model", "m1"],
                input=b"Hello\nBye\nexit\n",
                env=env,
                check=False,
            )
        bodies = server.bodies
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "agentforum chat: model m1 at " in out
    assert "you ▸ Hello\nassistant ▸ Bonjour !\nyou ▸ Bye\nassistant ▸ Au revoir\n" in out
    assert [body["model"] for body in bodies] == ["m1", "m1"]
    assert [(m["role"], m["content"]) for m in bodies[1]["messages"]] == [
        ("user", "Hello"),
        ("assistant", "Bonjour !"),
        ("user", "Bye"),
    ]
    store = SQLiteStore(db, create=False)
    try:
        key = await store.get_ref("chat/1")
        assert key is not None
        assert (await store.get(key)).content == "Au revoir"
    finally:
        await store.aclose()
