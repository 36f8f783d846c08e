"""The ``agentforum`` command line, on real databases written by real conversations.

Most commands run in-process through click's ``CliRunner``; a few run the real entry point
(``python -m agentforum``) in a subprocess, one of them in a pseudo-terminal for colour.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import runpy
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

import agentforum
from agentforum import (
    CallMessage,
    ErrorMessage,
    Forum,
    ForwardedMessage,
    Message,
    SQLiteStore,
    StoreError,
    decode_message,
    encode_message,
    hash_content,
)
from agentforum.cli import main
from agentforum.cli._app import CommandError, cli, user_errors
from agentforum.cli._demo import (
    ASSISTANT,
    CRITIC,
    CRITIC_REQUEST,
    FOLLOW_UP,
    QUESTION,
    RESEARCHER,
    TOKEN_DELAY,
    Typewriter,
    build,
)

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def invoke(*args: str | Path, input: bytes | None = None) -> Result:
    """Run ``agentforum ARGS`` in this process; stdout and stderr kept apart."""
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        runner = CliRunner()
    return runner.invoke(cli, [str(arg) for arg in args], input=input, catch_exceptions=False)


def environment(**changes: str) -> dict[str, str]:
    """This process's environment, changed, without the variables that would change what
    the command line does: colour, a model, a database of the user's."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("OPENAI_")
        and name not in ("AGENTFORUM_DB", "AGENTFORUM_MODEL", "NO_COLOR", "FORCE_COLOR")
    }
    env.update(changes)
    return env


def entry_point(*args: str | Path, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agentforum ARGS`` in a subprocess (the real entry point), in
    :func:`environment` changed by ``env``."""
    env = environment(**options.pop("env", {}))
    return subprocess.run(
        [sys.executable, "-m", "agentforum", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=60,
        check=False,
        **options,
    )


def arun(function: Callable[..., Awaitable[Any]], *args: object) -> Any:
    """Run an async helper to completion on asyncio (the CLI's own backend)."""
    return anyio.run(function, *args, backend="asyncio")


async def stored(path: Path) -> dict[str, Message]:
    """Every message of the database at ``path``, by hash (read with SQLiteStore)."""
    store = SQLiteStore(path, create=False)
    try:
        found: dict[str, Message] = {}
        pending: list[str | None] = [None]
        while pending:
            for child in await store.children(pending.pop()):
                found[child.hash] = child
                pending.append(child.hash)
        return found
    finally:
        await store.aclose()


async def refs_of(path: Path) -> dict[str, str]:
    """The refs of the database at ``path``."""
    store = SQLiteStore(path, create=False)
    try:
        return dict(await store.refs())
    finally:
        await store.aclose()


async def branch_of(path: Path, key: str) -> list[Message]:
    """The branch that ends with ``key`` in the database at ``path``, root first."""
    store = SQLiteStore(path, create=False)
    try:
        return await store.ancestors(key)
    finally:
        await store.aclose()


def assert_one_line_error(result: Result | subprocess.CompletedProcess[str], *words: str) -> None:
    """The command failed with status 1 and one ``agentforum: error:`` line, no traceback."""
    code = result.exit_code if isinstance(result, Result) else result.returncode
    stderr = result.stderr
    assert code == 1, (code, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("agentforum: error: ")
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of ``directory`` and its bytes."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.fixture
def db(demo_db: Path, tmp_path: Path) -> Path:
    """A copy of the demo's database that the test may change."""
    copy = tmp_path / "chat.db"
    shutil.copyfile(demo_db, copy)
    return copy


@pytest.fixture
def demo(demo_db: Path) -> dict[str, Message]:
    """The messages of the demo's database, by hash."""
    messages: dict[str, Message] = arun(stored, demo_db)
    return messages


def find(messages: dict[str, Message], predicate: Callable[[Message], bool]) -> Message:
    """The one message that satisfies ``predicate``."""
    (found,) = [message for message in messages.values() if predicate(message)]
    return found


# -- demo -----------------------------------------------------------------------------------------


def test_demo_records_the_whole_scenario(demo_db: Path, demo: dict[str, Message]) -> None:
    """The demo writes a question, nested calls, forwards, an error and two ref'd branches."""
    receivers = sorted(m.receiver for m in demo.values() if isinstance(m, CallMessage))
    assert receivers == ["assistant", "assistant", "critic", "researcher", "researcher", "search"]
    errors = [m for m in demo.values() if isinstance(m, ErrorMessage)]
    assert [(e.sender, e.error_type) for e in errors] == [("search", "ConnectionError")]
    forwards = [m for m in demo.values() if isinstance(m, ForwardedMessage)]
    assert {demo[f.original].sender for f in forwards} == {"researcher", "critic"}
    refs = arun(refs_of, demo_db)
    assert set(refs) == {"demo/first", "demo/second"}
    # The second branch leaves the first at the researcher's answer (the backtrack).
    first = arun(branch_of, demo_db, refs["demo/first"])
    second = arun(branch_of, demo_db, refs["demo/second"])
    shared = [a for a, b in zip(first, second, strict=False) if a == b]
    assert shared[-1].content.startswith("Not yet.")
    assert isinstance(shared[-1], ForwardedMessage)
    assert second[len(shared)].content == FOLLOW_UP
    assert first[0].content == QUESTION


@pytest.mark.anyio
async def test_demo_agents_stream_through_the_assistant_on_any_store(demo_db: Path) -> None:
    """The researcher's tokens reach the caller live, via the assistant; same hashes anywhere."""
    forum = Forum()  # a MemoryStore, on asyncio or Trio: the demo's agents need no SQLite
    assistant = build(forum, delay=0.001)
    async with forum:
        responses = assistant.ask(QUESTION, review=True)
        iterator = aiter(responses)
        await anext(iterator)  # the assistant's introduction
        research = await anext(iterator)  # the researcher's answer, passed on
        tokens = []
        async for token in research:
            if not tokens:
                live = not research.is_resolved
            tokens.append(token)
        message = await research
        last = await responses.last()
    assert isinstance(message, ForwardedMessage)
    assert live
    assert len(tokens) > 10
    assert "".join(tokens) == message.content
    assert last.hash == (await refs_of(demo_db))["demo/first"]


def test_demo_prints_the_conversation_the_tree_and_what_to_try(tmp_path: Path) -> None:
    """The demo narrates the conversation, then prints the tree, the database and commands."""
    path = tmp_path / "my chat.db"
    result = invoke("demo", "--fast", "--db", path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"you ▸ {QUESTION}" in out
    assert f"you ▸ {FOLLOW_UP}" in out
    assert "passed on by assistant" in out
    assert "ConnectionError" in out
    assert "backtrack" in out
    assert str(path) in out
    assert f"agentforum log demo/second --db '{path}'" in out  # quoted for the shell
    for message in arun(stored, path).values():
        assert message.hash[:7] in out
    assert not ANSI.search(out)


def test_demo_twice_writes_the_same_messages(demo_db: Path, tmp_path: Path) -> None:
    """Running the demo again on the same database adds nothing: same messages, same hashes."""
    path = tmp_path / "again.db"
    for _ in range(2):
        assert invoke("demo", "--fast", "--db", path).exit_code == 0
        assert arun(stored, path).keys() == arun(stored, demo_db).keys()
        assert arun(refs_of, path) == arun(refs_of, demo_db)


def test_demo_with_delays_runs_through_the_entry_point(tmp_path: Path) -> None:
    """``python -m agentforum demo`` (with its token delays) runs to the end, plain when piped;
    its delays add up to the "about 4 seconds" of docs/cli.md (counted, not timed)."""
    result = entry_point("demo", "--db", tmp_path / "slow.db")
    assert result.returncode == 0, result.stderr
    assert "demo/first" in result.stdout
    assert not ANSI.search(result.stdout)  # piped: plain text
    # The scripted model sleeps TOKEN_DELAY before each token of these, one after the other.
    streamed = [
        ASSISTANT["intro"],
        RESEARCHER[QUESTION],
        CRITIC[CRITIC_REQUEST],
        ASSISTANT[QUESTION],
        RESEARCHER[FOLLOW_UP],
        ASSISTANT[FOLLOW_UP],
    ]
    delays = sum(len(re.findall(r"\s*\S+", text)) for text in streamed) * TOKEN_DELAY
    assert 3 <= delays <= 5


def test_demo_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    """``demo --db notes.txt`` fails in one line and leaves the text file as it was."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n" * 100)
    before = snapshot(tmp_path)
    assert_one_line_error(invoke("demo", "--fast", "--db", notes), "not an agentforum database")
    assert snapshot(tmp_path) == before


# -- log ------------------------------------------------------------------------------------------


def test_log_shows_the_branch_newest_first(demo_db: Path) -> None:
    """``log REF`` prints every non-call message of the branch, newest first, git style."""
    refs = arun(refs_of, demo_db)
    branch = arun(branch_of, demo_db, refs["demo/second"])
    branch = [message for message in branch if not isinstance(message, CallMessage)]
    result = invoke("log", "demo/second", "--db", demo_db)
    assert result.exit_code == 0
    headers = [line for line in result.stdout.splitlines() if re.match(r"^\w+ [0-9a-f]{64}", line)]
    assert [line.split()[1] for line in headers] == [m.hash for m in reversed(branch)]
    assert headers[0].endswith("(demo/second)")
    assert f"    {QUESTION}" in result.stdout
    assert "Original: " in result.stdout


def test_log_oneline_count_and_calls(demo_db: Path) -> None:
    """``--oneline`` gives one line each, ``-n`` limits them, ``--calls`` adds call nodes."""
    refs = arun(refs_of, demo_db)
    branch = arun(branch_of, demo_db, refs["demo/first"])
    plain = invoke("log", "--oneline", "demo/first", "--db", demo_db).stdout.splitlines()
    calls = invoke("log", "--oneline", "--calls", "demo/first", "--db", demo_db)
    limited = invoke("log", "--oneline", "-n", "2", "demo/first", "--db", demo_db)
    assert len(calls.stdout.splitlines()) == len(branch)
    assert len(plain) == len([m for m in branch if not isinstance(m, CallMessage)])
    assert " call → assistant review=true" in calls.stdout
    assert " call " not in "\n".join(plain)
    assert limited.stdout.splitlines() == plain[:2]
    assert plain[0].startswith(f"{refs['demo/first'][:10]} (demo/first) message assistant ")


@pytest.mark.parametrize("length", [6, 9, 64])
def test_log_takes_a_hash_or_a_prefix(demo_db: Path, length: int) -> None:
    """``log`` accepts a full hash or any unique prefix of at least 6 characters."""
    key = arun(refs_of, demo_db)["demo/first"]
    by_ref = invoke("log", "demo/first", "--db", demo_db).stdout
    by_hash = invoke("log", key[:length], "--db", demo_db)
    assert by_hash.exit_code == 0
    assert by_hash.stdout == by_ref


# -- show -----------------------------------------------------------------------------------------


def test_show_prints_every_field_of_a_forward(demo_db: Path, demo: dict[str, Message]) -> None:
    """``show`` prints kind, hash, parent, reply_to, sender, original, the content's hash,
    metadata, then the content."""
    forward = find(demo, lambda m: isinstance(m, ForwardedMessage) and m.content[:3] == "Not")
    assert isinstance(forward, ForwardedMessage)
    result = invoke("show", forward.hash[:8], "--db", demo_db)
    assert result.exit_code == 0
    fields = dict(
        re.match(r"(\w+):\s+(.*)", line).groups()  # type: ignore[union-attr]
        for line in result.stdout.splitlines()
        if re.match(r"\w+:\s+\S", line)
    )
    assert fields["kind"] == "forward"
    assert fields["hash"] == forward.hash
    assert fields["parent"] == forward.parent
    assert fields["reply_to"] == forward.reply_to
    assert fields["original"] == forward.original
    assert fields["content_hash"] == forward.content_hash
    assert fields["sender"] == "assistant"
    assert fields["metadata"] == "{}"
    assert fields["children"] == "2"
    assert result.stdout.splitlines()[-1] == "    " + forward.content


def test_show_prints_calls_errors_and_refs(demo_db: Path, demo: dict[str, Message]) -> None:
    """A call shows its receiver and kwargs as JSON; an error its type; a ref'd message refs."""
    call = find(demo, lambda m: isinstance(m, CallMessage) and m.kwargs == {"review": True})
    out = invoke("show", call.hash, "--db", demo_db).stdout
    assert "receiver:     assistant" in out
    assert 'kwargs:       {"review": true}' in out
    assert "content" not in out
    assert "sender" not in out
    error = find(demo, lambda m: isinstance(m, ErrorMessage))
    out = invoke("show", error.hash[:7], "--db", demo_db).stdout
    assert "error_type:   ConnectionError" in out
    assert "kind:         error" in out
    out = invoke("show", "demo/second", "--db", demo_db).stdout
    assert "refs:         demo/second" in out
    assert (
        "parent:       none (a root)"
        in invoke("show", find(demo, lambda m: m.parent is None).hash, "--db", demo_db).stdout
    )


def test_show_json_is_the_canonical_encoding(demo_db: Path, demo: dict[str, Message]) -> None:
    """``show --json`` prints the bytes the hash is computed from."""
    for message in demo.values():
        out = invoke("show", "--json", message.hash, "--db", demo_db).stdout
        line = out.removesuffix("\n").encode()
        assert line == encode_message(message)
        assert hashlib.sha256(line).hexdigest() == message.hash


# -- tree -----------------------------------------------------------------------------------------


def test_tree_shows_every_message_once(demo_db: Path, demo: dict[str, Message]) -> None:
    """``tree`` has a header, then one line per message with its short hash, plain when piped."""
    result = invoke("tree", "--db", demo_db)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{demo_db}  {len(demo)} messages, 2 refs")
    assert len(lines) == 1 + len(demo)
    for message in demo.values():
        (line,) = [line for line in lines if f" {message.hash[:7]} " in line]
        if not isinstance(message, CallMessage):
            assert f" {message.sender} " in line
            assert '"' + message.content[:20] in line
    assert lines[1].startswith("└── ")
    assert any(line.startswith("    ├── ") for line in lines)
    assert not ANSI.search(result.stdout)


def test_tree_draws_a_lone_child_in_the_column_of_its_parent(tmp_path: Path) -> None:
    """A chain reads as a column; a fork starts ├──/└── branches; roots are branches too."""

    def sorting_after(make: Callable[[int], Message], other: Message) -> Message:
        # Roots and children are drawn in hash order: pick a content that sorts after other.
        return next(m for n in range(1000) if (m := make(n)).hash > other.hash)

    a = Message(content="a", sender="u")
    root = sorting_after(lambda n: Message(content=f"root {n}", sender="u"), a)
    b = Message(content="b", sender="u", parent=a.hash)
    c1 = Message(content="c1", sender="u", parent=b.hash)
    c2 = sorting_after(lambda n: Message(content=f"c2 {n}", sender="u", parent=b.hash), c1)
    d = Message(content="d", sender="u", parent=c1.hash)
    path = tmp_path / "t.db"

    async def write() -> None:
        store = SQLiteStore(path)
        await store.put_many([a, b, c1, c2, d, root])
        await store.aclose()

    arun(write)

    def line(guide: str, message: Message) -> str:
        return f'{guide}{message.hash[:7]} message u "{message.content}"'

    assert invoke("tree", "--db", path).stdout.splitlines()[1:] == [
        line("├── ", a),
        line("│   ", b),
        line("│   ├── ", c1),
        line("│   │   ", d),
        line("│   └── ", c2),
        line("└── ", root),
    ]


def test_tree_escapes_control_characters_and_markup(tmp_path: Path) -> None:
    """Content cannot colour the terminal or inject rich markup: it is shown escaped."""
    path = tmp_path / "evil.db"
    nasty = Message(content="\x1b[31mred[/] [bold]x[/bold]\x07\nline 2", sender="\x1b]0;t\x07")

    async def write() -> None:
        store = SQLiteStore(path)
        await store.put(nasty)
        await store.aclose()

    arun(write)
    for args in (
        ("tree",),
        ("log", nasty.hash),
        ("show", nasty.hash),
        ("log", "--oneline", nasty.hash),
    ):
        out = invoke(*args, "--db", path).stdout
        assert "\x1b" not in out
        assert "\x07" not in out
        assert "\\x1b[31mred[/] [bold]x[/bold]\\x07" in out


@pytest.mark.parametrize(
    "args", [("tree",), ("log", "--oneline", "demo/first")], ids=["tree", "log-oneline"]
)
def test_output_is_coloured_in_a_terminal_unless_no_color(
    demo_db: Path, args: tuple[str, ...]
) -> None:
    """In a (pseudo-)terminal the output is coloured and fits its width; NO_COLOR: no colour."""
    pty = pytest.importorskip("pty")

    def run_in_terminal(extra: dict[str, str]) -> str:
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
        env.update({"TERM": "xterm-256color", "COLUMNS": "72", **extra})
        process = subprocess.Popen(
            [sys.executable, "-m", "agentforum", *args, "--db", str(demo_db)],
            stdout=slave,
            stderr=slave,
            env=env,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal's other end is closed: the process is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        assert process.wait(timeout=60) == 0
        return b"".join(chunks).decode("utf-8").replace("\r\n", "\n")

    yellow = re.compile(r"\x1b\[(?:[0-9]+;)*33m")  # the colour of short hashes
    coloured = run_in_terminal({})
    assert yellow.search(coloured)
    plain = run_in_terminal({"NO_COLOR": "1"})
    assert not yellow.search(plain)
    assert ANSI.sub("", plain) == ANSI.sub("", coloured)
    # Content is shortened to fit 72 columns (it is cut at 20 characters at the least).
    piped = invoke(*args, "--db", demo_db).stdout
    width = max(len(line) for line in ANSI.sub("", coloured).splitlines())
    assert width < max(len(line) for line in piped.splitlines())
    assert width <= 72 or '…"' in coloured


# -- fsck -----------------------------------------------------------------------------------------


def test_fsck_passes_on_a_sound_database(demo_db: Path, demo: dict[str, Message]) -> None:
    """``fsck`` exits 0 on the demo's database and says how much it checked."""
    result = invoke("fsck", "--db", demo_db)
    assert result.exit_code == 0
    contents = {m.content_hash for m in demo.values() if not isinstance(m, CallMessage)}
    assert f"sound ({len(demo)} messages, {len(contents)} contents and 2 refs checked)" in (
        result.stdout
    )


def tamper(path: Path, message: Message) -> Message:
    """Replace the stored fields of ``message`` by those of an edited copy (a valid one)."""
    edited = attrs.evolve(message, sender=message.sender + " (edited)")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE messages SET sender = ? WHERE hash = ?",
            (edited.sender, bytes.fromhex(message.hash)),
        )
    connection.close()
    return edited


def test_fsck_lists_a_tampered_row_and_exits_1(db: Path, demo: dict[str, Message]) -> None:
    """A row whose fields were edited is listed by ``fsck`` (``hash: reason``), status 1."""
    victim = find(demo, lambda m: m.content.startswith("It skips") and m.sender == "critic")
    tamper(db, victim)
    result = invoke("fsck", "--db", db)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{victim.hash}: its fields do not hash to its hash (it was altered)"
    ]
    assert "1 problem found" in result.stderr


def test_reading_a_tampered_message_fails_in_one_line(db: Path, demo: dict[str, Message]) -> None:
    """``log``/``show``/``tree``/``export`` refuse a tampered row, pointing to ``fsck``."""
    victim = find(demo, lambda m: m.content.startswith("My advice"))
    tamper(db, victim)
    for args in (("log", "demo/first"), ("show", victim.hash[:8]), ("tree",), ("export",)):
        result = invoke(*args, "--db", db)
        assert_one_line_error(result, victim.hash, "agentforum fsck")
        assert result.stdout == ""


# -- user errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("log", "abcdef12"), ("show", "abcdef"), ("log", "main")],
    ids=["log-prefix", "show-prefix", "unknown-name"],
)
def test_unknown_names_fail_in_one_line(demo_db: Path, args: tuple[str, ...]) -> None:
    """An unknown hash, prefix or ref name is one error line, status 1."""
    result = invoke(*args, "--db", demo_db)
    assert_one_line_error(result, args[1])


def test_a_prefix_that_is_too_short_or_not_hex_fails_in_one_line(demo_db: Path) -> None:
    """``show 12ab`` (too short) and ``show XYZ!`` say what a name must be."""
    for name in ("12ab", "Not a hash"):
        assert_one_line_error(invoke("show", name, "--db", demo_db), "neither a ref nor")


def test_an_ambiguous_prefix_fails_in_one_line(tmp_path: Path) -> None:
    """Two messages sharing a 6-character prefix: that prefix is ambiguous, longer ones work."""
    seen: dict[str, Message] = {}
    for number in range(1_000_000):
        message = Message(content=f"message {number}", sender="user")
        other = seen.setdefault(message.hash[:6], message)
        if other is not message:
            break
    path = tmp_path / "ambiguous.db"

    async def write() -> None:
        store = SQLiteStore(path)
        await store.put_many([message, other])
        await store.aclose()

    arun(write)
    assert_one_line_error(invoke("show", message.hash[:6], "--db", path), "more than one")
    assert invoke("show", message.hash[:12], "--db", path).exit_code == 0
    # The tree's short hashes are long enough to tell them apart (7 characters at least).
    common = next(n for n in range(64) if message.hash[n] != other.hash[n])
    length = max(7, common + 1)
    tree = invoke("tree", "--db", path).stdout
    for each in (message, other):
        assert f" {each.hash[:length]} message" in tree
        assert invoke("show", each.hash[:length], "--db", path).exit_code == 0


COMMANDS = [
    ("log", "demo/first"),
    ("show", "abcdef"),
    ("tree",),
    ("fsck",),
    ("export",),
    ("graph",),
    ("graph", "--format", "dot"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: "-".join(args))
def test_a_text_file_is_not_a_database_and_stays_untouched(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Every reading command refuses a file that is not a database and leaves it byte-identical."""
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"SQLite format 2? no: just notes\n" * 50)
    before = snapshot(tmp_path)
    result = invoke(*args, "--db", notes)
    assert_one_line_error(result, "not an agentforum database")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: "-".join(args))
def test_a_missing_database_is_reported_and_not_created(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Every reading command on a missing file fails in one line and creates nothing."""
    result = invoke(*args, "--db", tmp_path / "missing.db")
    assert_one_line_error(result, "missing.db", "no such database")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_argument_is_a_usage_error(demo_db: Path) -> None:
    """``log`` without REF is a usage error: status 2, as click reports it."""
    result = invoke("log", "--db", demo_db)
    assert result.exit_code == 2
    assert "Missing argument 'REF'" in result.stderr


def test_the_entry_point_reports_errors_without_traceback(tmp_path: Path) -> None:
    """``python -m agentforum`` prints one error line and exits 1 for a missing database."""
    result = entry_point("tree", "--db", tmp_path / "nope.db")
    assert_one_line_error(result, "nope.db")
    assert not (tmp_path / "nope.db").exists()


@pytest.mark.parametrize("module", ["click", "rich"])
def test_without_click_or_rich_the_command_says_what_to_install(
    module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the ``cli`` extra, the command prints how to install it and exits 1."""
    for name in list(sys.modules):
        if name.startswith((f"{module}.", "agentforum.cli._")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # importing it raises ModuleNotFoundError
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        f"agentforum: error: the command line needs {module}: pip install 'agentforum[cli]'\n"
    )


def test_other_import_errors_are_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ImportError that is not about click or rich is a bug: it propagates."""
    monkeypatch.setitem(sys.modules, "agentforum.cli._app", None)
    with pytest.raises(ImportError):
        main()


def test_python_m_agentforum_runs_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m agentforum`` is ``agentforum``: ``agentforum/__main__.py`` calls main()."""
    monkeypatch.setattr(sys, "argv", ["agentforum", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(Path(agentforum.__file__).parent / "__main__.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("agentforum, version ")


def test_help_lists_every_command() -> None:
    """``python -m agentforum --help`` lists the ten commands."""
    result = entry_point("--help")
    assert result.returncode == 0
    commands = (
        *("demo", "chat", "log", "show", "tree", "refs", "fsck", "export", "import", "graph"),
        "mcp",
    )
    for command in commands:
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command


# -- export and import ----------------------------------------------------------------------------


def test_export_import_round_trip(demo_db: Path, demo: dict[str, Message], tmp_path: Path) -> None:
    """Export, import into a fresh database: fsck passes, same hashes and refs, same bundle."""
    bundle = tmp_path / "demo.jsonl"
    result = invoke("export", "-o", bundle, "--db", demo_db)
    assert result.exit_code == 0
    assert f"exported {len(demo)} messages and 2 refs to {bundle}" in result.stderr
    assert invoke("export", "--db", demo_db).stdout_bytes == bundle.read_bytes()
    fresh = tmp_path / "fresh.db"
    result = invoke("import", bundle, "--db", fresh)
    assert result.exit_code == 0, result.stderr
    assert invoke("fsck", "--db", fresh).exit_code == 0
    assert arun(stored, fresh).keys() == arun(stored, demo_db).keys()
    assert arun(refs_of, fresh) == arun(refs_of, demo_db)
    assert invoke("export", "--db", fresh).stdout_bytes == bundle.read_bytes()
    # Importing again changes nothing.
    assert invoke("import", bundle, "--db", fresh).exit_code == 0
    assert arun(stored, fresh).keys() == arun(stored, demo_db).keys()


def test_export_format(demo_db: Path, demo: dict[str, Message]) -> None:
    """Header first (format, counts, refs, sha256 of the rest); then one canonical message a
    line, each content once, as a JSON string on a line of its own before its first message."""
    data = invoke("export", "--db", demo_db).stdout_bytes
    first, body = data.split(b"\n", 1)
    header = json.loads(first)
    contents = {m.content_hash for m in demo.values() if not isinstance(m, CallMessage)}
    assert header == {
        "contents": len(contents),
        "format": "agentforum-export/2",
        "messages": len(demo),
        "refs": arun(refs_of, demo_db),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    lines = body.split(b"\n")
    assert lines[-1] == b""
    seen: set[str] = set()
    texts: dict[str, str] = {}
    for line in lines[:-1]:
        if line.startswith(b'"'):
            text = json.loads(line)
            assert hash_content(text) not in texts  # each content once
            texts[hash_content(text)] = text
            continue
        content = json.loads(line).get("content")
        message = decode_message(line, None if content is None else texts[content])
        assert hashlib.sha256(line).hexdigest() == message.hash
        assert message.parent is None or message.parent in seen  # parents first
        seen.add(message.hash)
    assert seen == demo.keys()
    assert texts.keys() == contents


def test_import_reads_standard_input(demo_db: Path, tmp_path: Path) -> None:
    """``import -`` reads the bundle from standard input."""
    data = invoke("export", "--db", demo_db).stdout_bytes
    result = invoke("import", "-", "--db", tmp_path / "in.db", input=data)
    assert result.exit_code == 0, result.stderr
    assert arun(stored, tmp_path / "in.db").keys() == arun(stored, demo_db).keys()


def bad_bundles(data: bytes) -> dict[str, tuple[bytes, str]]:
    """Ways to spoil a bundle, each with a word of the error it must give."""
    first, body = data.split(b"\n", 1)
    lines = body.split(b"\n")
    header = json.loads(first)

    def with_header(new_body: bytes, **changes: object) -> bytes:
        fields = {**header, "sha256": hashlib.sha256(new_body).hexdigest(), **changes}
        return json.dumps(fields).encode() + b"\n" + new_body

    # The researcher's first answer: it has a child, and a forward of it follows. Its content
    # comes on a line of its own, before the first message that names it.
    text = next(i for i, line in enumerate(lines) if line.startswith(b'"Not yet'))
    named = f'"content":"{hash_content(json.loads(lines[text]))}"'.encode()
    index = next(i for i, line in enumerate(lines) if named in line and b'"kind":"message"' in line)

    def replaced(line: bytes, at: int = index) -> bytes:
        return b"\n".join([*lines[:at], line, *lines[at + 1 :]])

    edited = replaced(lines[text].replace(b"Not yet", b"Not now"), text)
    return {
        "edited line": (first + b"\n" + edited, "altered"),
        "non-canonical line, sha256 recomputed": (
            with_header(replaced(lines[index].replace(b'{"content"', b'{ "content"'))),
            f"line {index + 2} is not a canonical message",
        ),
        "edited line, sha256 recomputed": (with_header(edited), "is not on an earlier line"),
        "cut at a line boundary": (first + b"\n" + b"\n".join(lines[:5]) + b"\n", "truncated"),
        "cut inside a line": (data[: len(data) // 2], "truncated"),
        "cut inside the header": (first[:40], "truncated"),
        "header only": (first + b"\n", "truncated"),
        "one line too many": (data + lines[1] + b"\n", f"announces {header['messages']} messages"),
        "repeated line, sha256 recomputed": (
            with_header(body + lines[1] + b"\n", messages=header["messages"] + 1),
            "repeats message",
        ),
        "not a bundle": (b"hello\nworld\n", "not an agentforum export bundle"),
        "empty file": (b"", "not an agentforum export bundle"),
        "newer format": (
            with_header(body, format="agentforum-export/3"),
            "this agentforum reads agentforum-export/2",
        ),
        "format 1": (
            with_header(body, format="agentforum-export/1"),
            "a bundle of format 'agentforum-export/1': this agentforum reads agentforum-export/2",
        ),
        "foreign format": (with_header(body, format="gitbundle/2"), "format 'gitbundle/2'"),
        "malformed header": (with_header(body, messages="21"), "header line is malformed"),
        "bad ref name": (with_header(body, refs={"no spaces": "a" * 64}), "invalid ref"),
        "ref to nowhere": (with_header(body, refs={"lost": "b" * 64}), "ref 'lost'"),
    }


BAD_BUNDLES = [
    "edited line",
    "non-canonical line, sha256 recomputed",
    "edited line, sha256 recomputed",
    "cut at a line boundary",
    "cut inside a line",
    "cut inside the header",
    "header only",
    "one line too many",
    "repeated line, sha256 recomputed",
    "not a bundle",
    "empty file",
    "newer format",
    "format 1",
    "foreign format",
    "malformed header",
    "bad ref name",
    "ref to nowhere",
]


@pytest.mark.parametrize("case", BAD_BUNDLES)
def test_a_bad_bundle_is_refused_whole(demo_db: Path, tmp_path: Path, case: str) -> None:
    """A tampered, truncated or foreign bundle is refused in one line; nothing is written."""
    cases = bad_bundles(invoke("export", "--db", demo_db).stdout_bytes)
    assert list(cases) == BAD_BUNDLES
    data, words = cases[case]
    bundle = tmp_path / "bad.jsonl"
    bundle.write_bytes(data)
    # Into a database that does not exist: it is not created.
    fresh = tmp_path / "fresh.db"
    assert_one_line_error(invoke("import", bundle, "--db", fresh), words, "nothing was imported")
    assert not fresh.exists()
    # Into a database of another conversation: it stays as it was, to the byte.
    other = tmp_path / "other.db"
    note = Message(content="another conversation", sender="user")

    async def write() -> None:
        forum = Forum(other)
        async with forum:
            await forum.set_ref("demo/first", note)

    arun(write)
    before = other.read_bytes()
    assert_one_line_error(invoke("import", bundle, "--db", other), "nothing was imported")
    assert other.read_bytes() == before
    assert arun(stored, other).keys() == {note.hash}
    assert arun(refs_of, other) == {"demo/first": note.hash}


def test_import_accepts_links_to_messages_already_stored(tmp_path: Path) -> None:
    """A bundle may continue branches that the database already holds, and not otherwise."""
    path = tmp_path / "base.db"

    async def write(messages: list[Message]) -> None:
        store = SQLiteStore(path)
        await store.put_many(messages)
        await store.aclose()

    root = Message(content="root", sender="user")
    child = Message(content="child", sender="user", parent=root.hash)
    arun(write, [root])
    body = b'"child"\n' + encode_message(child) + b"\n"
    header = {
        "contents": 1,
        "format": "agentforum-export/2",
        "messages": 1,
        "refs": {"tip": child.hash},
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    bundle = tmp_path / "child.jsonl"
    bundle.write_bytes(json.dumps(header).encode() + b"\n" + body)
    assert_one_line_error(invoke("import", bundle, "--db", tmp_path / "empty.db"), root.hash)
    result = invoke("import", bundle, "--db", path)
    assert result.exit_code == 0, result.stderr
    assert arun(refs_of, path) == {"tip": child.hash}
    assert arun(stored, path).keys() == {root.hash, child.hash}


def test_import_reports_the_refs_it_moves(demo_db: Path, db: Path, tmp_path: Path) -> None:
    """A ref of the bundle that exists elsewhere in the database is moved, and said so."""
    bundle = tmp_path / "demo.jsonl"
    invoke("export", "-o", bundle, "--db", demo_db)
    refs = arun(refs_of, db)

    async def move() -> None:
        forum = Forum(db)
        async with forum:
            await forum.set_ref("demo/first", refs["demo/second"])

    arun(move)
    result = invoke("import", bundle, "--db", db)
    assert result.exit_code == 0
    assert f"ref demo/first: {refs['demo/second'][:10]} -> {refs['demo/first'][:10]}" in (
        result.stderr
    )
    assert arun(refs_of, db) == refs


def test_import_of_a_missing_file_fails_in_one_line(tmp_path: Path) -> None:
    """``import nothing.jsonl`` says the file is missing; no database is created."""
    result = invoke("import", tmp_path / "nothing.jsonl", "--db", tmp_path / "x.db")
    assert_one_line_error(result, "nothing.jsonl", "No such file")
    assert list(tmp_path.iterdir()) == []


# -- graph ----------------------------------------------------------------------------------------


def test_graph_mermaid_has_every_node_and_edge(demo_db: Path, demo: dict[str, Message]) -> None:
    """Mermaid output: ``graph TD``, a node per message, an edge per parent link."""
    out = invoke("graph", "--db", demo_db).stdout
    lines = out.splitlines()
    assert lines[0] == "graph TD"
    nodes = {
        m.group(1) for line in lines if (m := re.fullmatch(r'    (m[0-9a-f]+)\["[^"]*"\]', line))
    }
    assert nodes == {f"m{key[:7]}" for key in demo}
    edges = [
        re.fullmatch(r"    (m[0-9a-f]+) (-->|-\.->\|original\|) (m[0-9a-f]+)", line)
        for line in lines
        if "->" in line
    ]
    assert all(edges)
    parent_edges = {(e.group(1), e.group(3)) for e in edges if e and e.group(2) == "-->"}
    assert parent_edges == {
        (f"m{m.parent[:7]}", f"m{m.hash[:7]}") for m in demo.values() if m.parent is not None
    }
    forwards = sum(isinstance(m, ForwardedMessage) for m in demo.values())
    assert sum(1 for e in edges if e and e.group(2) != "-->") == forwards
    assert re.search(r"^    class [m0-9a-f,]+ error$", out, re.MULTILINE)
    for line in lines[1:]:
        assert line.startswith("    ")


def test_graph_dot_is_valid_graphviz(demo_db: Path, demo: dict[str, Message]) -> None:
    """DOT output names every message and parses with Graphviz when it is installed."""
    out = invoke("graph", "--format", "dot", "--db", demo_db).stdout
    assert out.startswith("digraph agentforum {\n")
    assert out.endswith("}\n")
    for key in demo:
        assert f'"{key[:7]}" [label="{key[:7]} ' in out
    if shutil.which("dot") is None:
        pytest.skip("Graphviz (dot) is not installed: the structure was checked")
    check = subprocess.run(
        ["dot", "-Tsvg"], input=out, capture_output=True, text=True, check=False, timeout=60
    )
    assert check.returncode == 0, check.stderr
    assert check.stderr == ""


def test_graph_labels_are_escaped(tmp_path: Path) -> None:
    """Quotes, brackets, HTML and backslashes in content cannot break out of a label."""
    path = tmp_path / "quotes.db"
    nasty = Message(content='He said "hi" <b>[x]</b> {y} #1 a\\nb `z` |w| end', sender='a"b')

    async def write() -> None:
        store = SQLiteStore(path)
        await store.put(nasty)
        await store.aclose()

    arun(write)
    mermaid = invoke("graph", "--db", path).stdout
    (node,) = [line for line in mermaid.splitlines() if nasty.hash[:7] in line]
    label = node.split('["', 1)[1].removesuffix('"]').replace("<br/>", "")
    assert not set(label) & set('"<>[]{}|`\\'), label
    assert "#34;" in label
    dot = invoke("graph", "--format", "dot", "--db", path).stdout
    assert '\\"hi\\"' in dot
    assert "a\\\\nb" in dot
    if shutil.which("dot") is not None:
        svg = subprocess.run(
            ["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True
        ).stdout
        assert "He said &quot;hi&quot;" in svg


# -- details --------------------------------------------------------------------------------------


def test_log_shows_kwargs_errors_metadata_and_every_ref(tmp_path: Path) -> None:
    """``log --calls`` prints kwargs, error types and metadata as JSON, and all refs of a tip."""
    question = Message(content="q\u2028", sender="user", metadata={"tags": ["a", {"b": None}]})
    call = CallMessage(receiver="tool", kwargs={"depth": 2, "mode": "fast"}, parent=question.hash)
    error = ErrorMessage(
        content="boom",
        sender="tool",
        error_type="ValueError",
        parent=call.hash,
        reply_to=question.hash,
        metadata={"retry": 1.5},
    )
    path = tmp_path / "details.db"

    async def write() -> None:
        forum = Forum(path)
        async with forum:
            await forum.store.put_many([question, call, error])
            await forum.set_ref("z", error)
            await forum.set_ref("a", error)

    arun(write)
    out = invoke("log", "--calls", "z", "--db", path).stdout
    assert f"error {error.hash} (a, z)" in out
    assert "Error:    ValueError" in out
    assert 'Metadata: {"retry": 1.5}' in out
    kwargs = '{"depth": 2, "mode": "fast"}'
    assert f"call {call.hash}\nReceiver: tool\nKwargs:   {kwargs}\n" in out
    assert 'Metadata: {"tags": ["a", {"b": null}]}' in out
    assert "    q\\u2028" in out
    oneline = invoke("log", "--oneline", "--calls", "a", "--db", path).stdout.splitlines()
    assert oneline[0].startswith(f'{error.hash[:10]} (a, z) error tool ValueError: "boom"')
    assert oneline[1] == f'{call.hash[:10]} call → tool depth=2 mode="fast"'
    assert oneline[2].endswith('"q\\u2028"  {"tags": ["a", {"b": null}]}')


def test_typewriter_wraps_between_words_and_keeps_every_word() -> None:
    """The demo's live printer breaks lines between words, indents them, and loses nothing."""
    file = io.StringIO()
    console = Console(file=file, width=50, color_system=None)
    writer = Typewriter(console, indent=4)
    tokens = [
        "Hello",
        " ",
        "world,",
        " a",
        " rather",
        " long",
        " line of text that goes on",
        "\nand",
        " a new one",
        " " * 3,
        "unbreakable" * 5,
        " end",
    ]
    for token in tokens:
        writer.write(token)
    writer.end()
    lines = file.getvalue().splitlines()
    assert all(line.startswith("    ") and not line.startswith("     ") for line in lines)
    assert all(len(line) <= 50 for line in lines if "unbreakable" not in line)
    assert " ".join(line.strip() for line in lines).split() == "".join(tokens).split()
    assert lines[-1] == "    end"


def test_a_failed_export_leaves_no_file(
    demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If writing the bundle fails, ``export -o`` reports it and leaves no file behind."""

    def fail(source: str, target: str) -> None:
        raise PermissionError(13, "Permission denied", target)

    monkeypatch.setattr(os, "replace", fail)
    result = invoke("export", "-o", tmp_path / "out.jsonl", "--db", demo_db)
    assert_one_line_error(result, "out.jsonl: Permission denied")
    assert list(tmp_path.iterdir()) == []


def test_errors_inside_a_task_group_are_reported_in_one_line() -> None:
    """A user error wrapped in an ExceptionGroup is still one line; anything else is a bug."""
    group = ExceptionGroup("x", [StoreError("db.sqlite is not an agentforum database")])
    with pytest.raises(CommandError, match=r"^db\.sqlite is not an agentforum database$"):
        with user_errors():
            raise group
    mixed = ExceptionGroup("x", [StoreError("a"), KeyError("b")])
    with pytest.raises(ExceptionGroup), user_errors():
        raise mixed
    with pytest.raises(CommandError, match=r"^boom$"), user_errors():
        raise OSError("boom")
