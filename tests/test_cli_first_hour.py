"""What a user meets in the first hour: the missing-extra message, Ctrl-C, ``| head``, the
``LICENSE``, ``__version__``, the ``trio`` extra, ``AGENTFORUM_DB`` and ``agentforum refs``.

Everything runs as a user runs it: ``python -m agentforum`` (or an example) in a subprocess,
Ctrl-C typed into a pseudo-terminal that is the process's controlling terminal (so the
terminal, not the test, sends the SIGINT), and pipes that a reader closes.
"""

from __future__ import annotations

import importlib.metadata
import os
import select
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from packaging.requirements import Requirement

import agentforum
from agentforum import Message, SQLiteStore
from test_cli import entry_point, environment

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow


ROOT = Path(__file__).resolve().parent.parent
#: Seconds a process may stay silent before a test gives up on it (it hangs: a failure).
HANG = 60
#: The (deterministic) hashes of the messages that the demo's refs point at.
DEMO_FIRST = "8d39f9f2261a49b875758587342ed266aae4dbf5db6dddfb8adcbc0f3dfce0e1"
DEMO_SECOND = "416911fbf7"


def refs_and_branch(db: Path, ref: str) -> tuple[dict[str, str], list[str]]:
    """The refs of ``db``, and the branch ``ref`` ends (``sender: content``, calls left out)."""

    async def read() -> tuple[dict[str, str], list[str]]:
        store = SQLiteStore(db, create=False)
        try:
            refs = dict(await store.refs())
            if ref not in refs:
                return refs, []
            branch = await store.ancestors(refs[ref])
            return refs, [f"{m.sender}: {m.content}" for m in branch if m.sender]
        finally:
            await store.aclose()

    return anyio.run(read)


# -- a model set, but no openai SDK -------------------------------------------------------------

#: A ``sitecustomize`` that hides the installed openai package from the import system, which
#: then fails to find it (or any of its modules) as where openai is not installed.
NO_OPENAI = """
import sys
from importlib.machinery import PathFinder


class WithoutOpenAI(PathFinder):
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname.partition(".")[0] == "openai":
            return None
        return super().find_spec(fullname, path, target)


sys.meta_path[sys.meta_path.index(PathFinder)] = WithoutOpenAI
"""


@pytest.fixture
def without_openai(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import openai, as if it were not installed."""
    folder = tmp_path / "no-openai"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(NO_OPENAI, encoding="utf-8")
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = environment(PYTHONPATH=os.pathsep.join(paths))
    check = subprocess.run(
        [sys.executable, "-c", "import openai"], env=env, capture_output=True, text=True
    )
    assert check.returncode == 1
    assert check.stderr.endswith("ModuleNotFoundError: No module named 'openai'\n")
    return env


def assert_says_what_to_install(result: subprocess.CompletedProcess[str], prefix: str) -> None:
    """Status 1 and one line on standard error, with the pip command, and no traceback."""
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(prefix)
    assert "pip install 'agentforum[openai]'" in result.stderr


@pytest.mark.parametrize("variable", ["OPENAI_API_KEY", "OPENAI_BASE_URL"])
def test_chat_with_a_model_but_no_openai_sdk_says_what_to_install(
    variable: str, without_openai: dict[str, str], tmp_path: Path
) -> None:
    """A model is configured but the SDK is missing: one line that says what to install,
    status 1, and nothing done (no database created, no prompt shown)."""
    env = {**without_openai, variable: "http://127.0.0.1:9/v1"}
    db = tmp_path / "chat.db"
    result = entry_point("chat", "--db", db, input="Hello\n", env=env)
    assert_says_what_to_install(result, "agentforum: error: ")
    assert variable in result.stderr
    assert result.stdout == ""
    assert not db.exists()


def test_research_team_with_a_model_but_no_openai_sdk_says_what_to_install(
    without_openai: dict[str, str], tmp_path: Path
) -> None:
    """examples/research_team.py, a model configured, no SDK: one line, status 1."""
    env = {**without_openai, "OPENAI_API_KEY": "sk-test"}
    db = tmp_path / "team.db"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "research_team.py"), "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
        timeout=HANG,
        check=False,
    )
    assert_says_what_to_install(result, "research_team.py: error: ")
    assert not db.exists()


def test_the_openai_adapter_without_the_sdk_says_what_to_install(
    without_openai: dict[str, str],
) -> None:
    """Importing agentforum.llms.openai without the SDK: the error names the extra."""
    result = subprocess.run(
        [sys.executable, "-c", "import agentforum.llms.openai"],
        capture_output=True,
        text=True,
        env=without_openai,
        timeout=HANG,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.endswith(
        "ModuleNotFoundError: agentforum.llms.openai needs the openai SDK: "
        "pip install 'agentforum[openai]'\n"
    )


# -- Ctrl-C and closed pipes --------------------------------------------------------------------

#: Run by the child before it becomes ``python -m agentforum``: make the pseudo-terminal on
#: its standard input its controlling terminal (it leads a new session), as a shell does for
#: a foreground job, so that Ctrl-C typed there is a SIGINT to it.
CONTROLLING_TERMINAL = (
    "import fcntl, os, sys, termios; "
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'agentforum', *sys.argv[1:]])"
)


class Terminal:
    """``python -m agentforum ARGS`` in a pseudo-terminal of its own, typed at and read."""

    def __init__(self, *args: str | Path, env: dict[str, str]) -> None:
        pty = pytest.importorskip("pty", reason="a pseudo-terminal needs a POSIX system")
        self._master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-c", CONTROLLING_TERMINAL, *map(str, args)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "xterm", "COLUMNS": "100", "LINES": "40"},
            start_new_session=True,
        )
        os.close(slave)
        self._output = b""
        self._seen = 0

    def _read(self) -> bool:
        """Read what the process wrote; ``False`` once it is gone (the terminal hung up)."""
        ready, _, _ = select.select([self._master], [], [], HANG)
        if not ready:
            raise AssertionError(f"silent for {HANG} s; so far:\n{self.text()}")
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # EIO: every process on the terminal's side has closed it
            return False
        self._output += chunk
        return bool(chunk)

    def expect(self, text: str) -> None:
        """Wait until ``text`` appears (after what an earlier ``expect`` matched)."""
        wanted = text.encode("utf-8")
        while (found := self._output.find(wanted, self._seen)) < 0:
            if not self._read():
                raise AssertionError(f"ended without {text!r}:\n{self.text()}")
        self._seen = found + len(wanted)

    def type(self, keys: str) -> None:
        """Type ``keys`` at the terminal (``\\r`` is Enter, ``\\x03`` Ctrl-C)."""
        os.write(self._master, keys.encode("utf-8"))

    def finish(self) -> int:
        """Read until the process is gone, typing nothing; return its exit status."""
        while self._read():
            pass
        return self.process.wait(timeout=HANG)

    def text(self) -> str:
        """Everything the terminal showed, with its line ends as ``\\n``."""
        return self._output.decode("utf-8", errors="replace").replace("\r\n", "\n")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self._master)


@pytest.fixture
def terminal() -> Iterator[type[Terminal]]:
    """Open :class:`Terminal` objects that are closed (their process killed) at the end."""
    opened: list[Terminal] = []

    class Closing(Terminal):
        def __init__(self, *args: str | Path, env: dict[str, str]) -> None:
            super().__init__(*args, env=env)
            opened.append(self)

    yield Closing
    for each in opened:
        each.close()


def test_ctrl_c_at_the_chat_prompt_stops_at_once_with_the_resume_hint(
    terminal: type[Terminal], tmp_path: Path
) -> None:
    """Ctrl-C at the prompt: the chat stops without waiting for Enter, says how to resume,
    and exits with 130; what was said is kept, under the ref the hint names."""
    db = tmp_path / "chat.db"
    chat = terminal("chat", "--db", db, env=environment())
    chat.expect("A new conversation, chat/1")
    chat.expect("you ▸ ")
    chat.type("Hello\r")
    chat.expect("1 of them yours.")
    chat.expect("you ▸ ")
    chat.type("\x03")
    assert chat.finish() == 130  # with nothing more typed
    after = chat.text().rpartition("you ▸ ")[2]
    assert after == f"^C\nSaved. Resume with: agentforum chat --resume chat/1 --db {db}\n"
    answer = (
        "assistant: (scripted) You said 'Hello'. I see 1 messages of this chat, 1 of them yours."
    )
    refs, branch = refs_and_branch(db, "chat/1")
    assert refs["chat/latest"] == refs["chat/1"]
    # The answer had just ended: the refs point at it, or (Ctrl-C came before the chat
    # moved them) at the question, which a resumed chat answers first, from the cache.
    assert branch in (["user: Hello", answer], ["user: Hello"])
    resumed = entry_point("chat", "--resume", "chat/1", "--db", db, input="")
    assert resumed.returncode == 0, resumed.stderr
    assert f"you ▸ Hello\n{answer.replace(': ', ' ▸ ', 1)}\nyou ▸ \n" in resumed.stdout
    assert refs_and_branch(db, "chat/1")[1] == ["user: Hello", answer]


def test_ctrl_c_before_anything_is_said_names_no_ref(
    terminal: type[Terminal], tmp_path: Path
) -> None:
    """Ctrl-C at the first prompt of a new chat: status 130, and no hint to resume a ref
    that does not exist (nothing was said, so no ref was set)."""
    db = tmp_path / "chat.db"
    chat = terminal("chat", "--db", db, env=environment())
    chat.expect("you ▸ ")
    chat.type("\x03")
    assert chat.finish() == 130
    assert chat.text().rpartition("you ▸ ")[2] == "^C\nNothing was said, so nothing was saved.\n"
    assert refs_and_branch(db, "chat/1") == ({}, [])


def test_leaving_a_chat_where_nothing_was_said_names_no_ref(tmp_path: Path) -> None:
    """``exit`` at once: status 0, and no hint to resume a ref that was never set."""
    db = tmp_path / "chat.db"
    result = entry_point("chat", "--db", db, input="exit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("you ▸ exit\n\nNothing was said, so nothing was saved.\n")
    assert "Resume with" not in result.stdout


def test_ctrl_c_while_the_demo_streams_stops_it_with_status_130(
    terminal: type[Terminal], tmp_path: Path
) -> None:
    """Ctrl-C while the demo streams its first answer: it stops there, at once, quietly
    (no traceback, no "Aborted!"), with status 130.

    The terminal echoes ``^C`` the moment it reads the key, while the demo may be writing
    the next token: a token written before the interrupt reached the demo can follow the
    echo, but nothing after the line it was streaming."""
    demo = terminal("demo", "--db", tmp_path / "demo.db", env=environment(NO_COLOR="1"))
    demo.expect("you ▸ ")
    demo.expect("Let me ask")  # the first words the scripted model streams
    demo.type("\x03")
    assert demo.finish() == 130
    shown = demo.text()
    assert "Traceback" not in shown
    assert "Aborted" not in shown
    assert "The message tree" not in shown  # it did not go on to the end
    after = shown.rpartition("^C")[2]
    assert after.endswith("\n"), shown
    assert "\n" not in after[:-1], shown  # at most the rest of the line being streamed


def read_lines_then_close(
    args: list[str | Path], lines: int, env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    """``python -m agentforum ARGS | head -LINES``: read LINES lines, then close the pipe.

    The pipe holds one page (4 KiB): once its reader has the lines, the process, which
    writes more than that after them, is blocked on a full pipe (or has yet to write), so
    the close always comes before a write that then fails with EPIPE.
    """
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        pytest.skip("setting a pipe's size needs Linux (F_SETPIPE_SZ)")
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    process = subprocess.Popen(
        [sys.executable, "-m", "agentforum", *map(str, args)],
        stdout=write_end,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(write_end)
    taken = b""
    while taken.count(b"\n") < lines:
        byte = os.read(read_end, 1)  # one at a time: what is not read stays in the pipe
        assert byte, f"the output ended after {taken!r}"
        taken += byte
    os.close(read_end)
    _, stderr = process.communicate(timeout=HANG)
    return subprocess.CompletedProcess(process.args, process.returncode, taken, stderr)


@pytest.fixture(scope="module")
def long_branch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with a branch of 300 messages, ref ``long``: ``log`` prints 40 KiB of it."""
    path = tmp_path_factory.mktemp("long") / "long.db"

    async def write() -> None:
        store = SQLiteStore(path, create=True)
        try:
            parent = None
            messages = []
            for index in range(300):
                message = Message(content=f"line {index}", sender="s", parent=parent)
                messages.append(message)
                parent = message.hash
            await store.put_many(messages)
            await store.set_ref("long", messages[-1].hash)
        finally:
            await store.aclose()

    anyio.run(write)
    return path


def test_log_into_a_closed_pipe_exits_quietly(long_branch: Path) -> None:
    """``agentforum log long | head -3``: status 1 and nothing on standard error (click's
    way with a broken pipe), the convention the other commands follow."""
    result = read_lines_then_close(["log", "long", "--db", long_branch], 3, environment())
    assert result.stdout.decode().startswith("message ")
    assert result.stderr == b""
    assert result.returncode == 1


def test_demo_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """``agentforum demo | head -3``: the pipe breaks inside the forum's task group; the demo
    stops as ``log | head`` does, status 1, nothing on standard error.

    Coloured (FORCE_COLOR), the demo writes more than the pipe holds after its third line.
    """
    env = environment(FORCE_COLOR="1")
    result = read_lines_then_close(["demo", "--fast", "--db", tmp_path / "d.db"], 3, env)
    assert "agentforum demo" in result.stdout.decode()
    assert result.stderr == b""
    assert result.returncode == 1


# -- LICENSE, __version__, the trio extra -------------------------------------------------------


def test_the_license_is_mit_and_the_distribution_ships_it() -> None:
    """LICENSE is the MIT license, and the installed distribution's metadata carries it."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 agentforum developers\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
    distribution = importlib.metadata.distribution("agentforum")
    assert distribution.metadata["License-Expression"] == "MIT"
    assert distribution.metadata.get_all("License-File") == ["LICENSE"]
    shipped = [file for file in distribution.files or [] if file.name == "LICENSE"]
    assert [file.read_text(encoding="utf-8") for file in shipped] == [text]


def test_version_is_the_installed_distributions() -> None:
    """``agentforum.__version__`` is the installed version; like trio's and anyio's
    module attributes, it is not part of ``__all__``."""
    assert agentforum.__version__ == importlib.metadata.version("agentforum")
    assert "__version__" not in agentforum.__all__


def test_the_trio_extra_installs_trio() -> None:
    """``pip install 'agentforum[trio]'`` brings Trio (the version docs/trio.md needs)."""
    requirements = [Requirement(line) for line in importlib.metadata.requires("agentforum") or []]
    trio = [r for r in requirements if r.name == "trio" and r.marker is not None]
    assert [str(r.specifier) for r in trio] == [">=0.26"]
    assert trio[0].marker.evaluate({"extra": "trio"})  # type: ignore[union-attr]
    assert not trio[0].marker.evaluate({"extra": "cli"})  # type: ignore[union-attr]


# -- AGENTFORUM_DB ------------------------------------------------------------------------------

COMMANDS = ["chat", "demo", "export", "fsck", "graph", "import", "log", "refs", "show", "tree"]


def test_every_command_documents_agentforum_db() -> None:
    """``--help`` of each command shows that --db comes from AGENTFORUM_DB when not given."""
    for command in COMMANDS:
        result = entry_point(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "env var: AGENTFORUM_DB" in " ".join(result.stdout.split()), command


def test_the_database_comes_from_agentforum_db_unless_db_is_given(
    demo_db: Path, tmp_path: Path
) -> None:
    """AGENTFORUM_DB names the database when --db is not given; --db wins over it."""
    env = environment(AGENTFORUM_DB=str(demo_db))
    result = entry_point("tree", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{demo_db}  21 messages, 2 refs\n")
    missing = tmp_path / "other.db"
    result = entry_point("tree", "--db", missing, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert str(missing) in result.stderr
    assert not missing.exists()


def test_suggested_commands_name_the_database_when_the_environment_would_not(
    tmp_path: Path,
) -> None:
    """The demo's suggestions leave --db out only where a pasted command, in a shell without
    AGENTFORUM_DB too, would open the same file: the default one, with no AGENTFORUM_DB."""
    default = entry_point("demo", "--fast", cwd=tmp_path)
    assert "    agentforum log demo/second\n" in default.stdout
    elsewhere = environment(AGENTFORUM_DB="other.db")
    from_env = entry_point("demo", "--fast", env=elsewhere, cwd=tmp_path)
    assert "    agentforum log demo/second --db other.db\n" in from_env.stdout
    given = entry_point("demo", "--fast", "--db", "agentforum.db", env=elsewhere, cwd=tmp_path)
    assert "    agentforum log demo/second --db agentforum.db\n" in given.stdout


# -- refs ---------------------------------------------------------------------------------------


def test_refs_lists_each_ref_with_its_message(demo_db: Path) -> None:
    """``refs``: one line per ref, sorted by name, names aligned, then the message's short
    hash, kind, sender and first line, as ``log --oneline`` shows it (like ``git branch -v``)."""
    result = entry_point("refs", "--db", demo_db)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f'demo/first   {DEMO_FIRST[:10]} message assistant "My advice: stay on SQLite for now, '
        'set up nightly backups, and revisit …"',
        f"demo/second  {DEMO_SECOND} message assistant "
        '"So: SQLite today, Postgres at that size. Same question, two branches."',
    ]


def test_refs_of_a_database_without_refs_prints_nothing(tmp_path: Path) -> None:
    """No refs (as in git, with no branch): nothing printed, status 0."""
    db = tmp_path / "empty.db"

    async def create() -> None:
        store = SQLiteStore(db, create=True)
        await store.open()
        await store.aclose()

    anyio.run(create)
    result = entry_point("refs", "--db", db)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_refs_reports_a_ref_to_a_missing_message(demo_db: Path, tmp_path: Path) -> None:
    """A damaged database, a ref to a message that is not there: the other refs are listed,
    the damaged one is one error line that points to ``fsck``, and the status is 1."""
    db = tmp_path / "damaged.db"
    db.write_bytes(demo_db.read_bytes())
    nowhere = "ab" * 32
    with sqlite3.connect(db) as connection:  # no foreign key checks: as a bad tool would
        connection.execute(
            "UPDATE refs SET hash = ? WHERE name = 'demo/first'", (bytes.fromhex(nowhere),)
        )
    connection.close()
    result = entry_point("refs", "--db", db)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith(f"demo/second  {DEMO_SECOND} message")
    assert len(result.stdout.splitlines()) == 1
    assert result.stderr == (
        f"agentforum: error: ref demo/first points at {nowhere}, which is not in the database "
        "(run `agentforum fsck` for every problem)\n"
    )


def test_refs_does_not_create_a_database(tmp_path: Path) -> None:
    """``refs --db typo.db``: the one-line error of every reading command; no file made."""
    result = entry_point("refs", "--db", tmp_path / "typo.db")
    assert result.returncode == 1
    assert result.stderr.startswith("agentforum: error: ")
    assert not (tmp_path / "typo.db").exists()


def test_refs_reports_a_ref_to_a_tampered_message(demo_db: Path, tmp_path: Path) -> None:
    """A ref to a message whose stored fields were edited: reported as ``log`` reports it."""
    db = tmp_path / "tampered.db"
    db.write_bytes(demo_db.read_bytes())
    with sqlite3.connect(db) as connection:
        connection.execute(
            "UPDATE messages SET sender = 'nobody' WHERE hash = ?", (bytes.fromhex(DEMO_FIRST),)
        )
    connection.close()
    result = entry_point("refs", "--db", db)
    assert result.returncode == 1
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["demo/second"]
    [line] = result.stderr.splitlines()
    assert line.startswith("agentforum: error: ref demo/first: ")
    assert DEMO_FIRST in line
    assert line.endswith("(run `agentforum fsck` for every problem)")


def test_the_refs_example_of_the_docs_is_what_refs_prints(demo_db: Path) -> None:
    """docs/cli.md shows ``agentforum refs`` on the demo's database as it really prints."""
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    example = page.partition("```console\n$ agentforum refs\n")[2].partition("```")[0]
    assert example
    assert entry_point("refs", "--db", demo_db).stdout == example
