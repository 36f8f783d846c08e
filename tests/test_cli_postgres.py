"""The command line on a PostgreSQL database: ``--db URL`` (or ``$AGENTFORUM_DB``).

Messages are content-addressed, so the demo written into PostgreSQL is the demo written into
SQLite, hash for hash: every reading command prints the same on both, and ``export`` writes
the same bundle, byte for byte.
"""

from __future__ import annotations

import shlex
import socket
from typing import TYPE_CHECKING

import pytest

from agentforum import PostgresStore
from test_chat import chat
from test_cli import assert_one_line_error, entry_point, invoke

if TYPE_CHECKING:
    from pathlib import Path

    import pg_server


pytestmark = pytest.mark.slow


@pytest.fixture
def demo_url(postgres_url: str) -> str:
    """A database that ``agentforum demo --fast`` wrote."""
    result = invoke("demo", "--fast", "--db", postgres_url)
    assert result.exit_code == 0, result.stderr
    return postgres_url


READING = [
    ["log", "demo/second"],
    ["log", "--oneline", "--calls", "demo/first"],
    ["show", "demo/first"],
    ["show", "--json", "demo/second"],
    ["refs"],
    ["graph", "--format", "mermaid"],
    ["graph", "--format", "dot"],
]


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_reading_command_prints_the_same_on_postgres_as_on_sqlite(
    demo_db: Path, demo_url: str, command: list[str]
) -> None:
    """Each reading command prints, from the demo in PostgreSQL, what it prints from the
    demo in SQLite."""
    on_sqlite = invoke(*command, "--db", demo_db)
    on_postgres = invoke(*command, "--db", demo_url)
    assert on_sqlite.exit_code == on_postgres.exit_code == 0, on_postgres.stderr
    assert on_postgres.stdout == on_sqlite.stdout


def test_tree_fsck_and_export_work_on_postgres(
    demo_db: Path, demo_url: str, tmp_path: Path
) -> None:
    """tree and fsck name the database by its URL; export writes the SQLite demo's bundle,
    byte for byte; import of it into an empty database gives the same tree again."""
    tree = invoke("tree", "--db", demo_url)
    assert tree.exit_code == 0, tree.stderr
    assert tree.stdout.splitlines()[1:] == invoke("tree", "--db", demo_db).stdout.splitlines()[1:]
    shown = PostgresStore(demo_url).url  # without a password
    assert tree.stdout.startswith(f"{shown}  ")
    fsck = invoke("fsck", "--db", demo_url)
    assert fsck.exit_code == 0, fsck.stderr
    assert fsck.stdout.startswith(f"{shown}: sound (")
    bundle = tmp_path / "demo.jsonl"
    assert invoke("export", "-o", bundle, "--db", demo_url).exit_code == 0
    assert invoke("export", "-o", tmp_path / "sqlite.jsonl", "--db", demo_db).exit_code == 0
    assert bundle.read_bytes() == (tmp_path / "sqlite.jsonl").read_bytes()


def test_import_moves_an_sqlite_tree_into_postgres(
    demo_db: Path, postgres_url: str, tmp_path: Path
) -> None:
    """export from SQLite, import into an empty PostgreSQL database (its schema created),
    export from there: the same bundle."""
    bundle = tmp_path / "demo.jsonl"
    assert invoke("export", "-o", bundle, "--db", demo_db).exit_code == 0
    imported = invoke("import", bundle, "--db", postgres_url)
    assert imported.exit_code == 0, imported.stderr
    assert f"refs into {PostgresStore(postgres_url).url}" in imported.stderr
    again = tmp_path / "again.jsonl"
    assert invoke("export", "-o", again, "--db", postgres_url).exit_code == 0
    assert again.read_bytes() == bundle.read_bytes()


def test_agentforum_db_may_name_a_url(demo_url: str) -> None:
    """$AGENTFORUM_DB takes a URL as --db does (the real entry point, in a subprocess)."""
    result = entry_point("log", "--oneline", "demo/first", env={"AGENTFORUM_DB": demo_url})
    assert result.returncode == 0, result.stderr
    assert "demo/first" in result.stdout


def test_a_chat_in_postgres_is_saved_and_resumed(postgres_url: str) -> None:
    """chat keeps its conversation in PostgreSQL and resumes it; the hint names the URL."""
    first = chat(postgres_url, "Hello\nexit\n")
    assert first.returncode == 0, first.stderr
    [line] = [line for line in first.stdout.splitlines() if "Resume with:" in line]
    command = shlex.split(line.partition("Resume with: ")[2])
    shown = PostgresStore(postgres_url).url  # without a password
    assert command == ["agentforum", "chat", "--resume", "chat/1", "--db", shown]
    second = chat(postgres_url, "Again\nexit\n", "--resume", "chat/1")
    assert second.returncode == 0, second.stderr
    assert "you ▸ Hello" in second.stdout
    assert "I see 3 messages of this chat, 2 of them yours." in second.stdout


def test_a_server_that_cannot_be_reached_is_a_one_line_error_without_the_password() -> None:
    """A closed port: one error line naming host, port and database; never the password."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://alice:hunter2secret@127.0.0.1:{port}/chat"
    for command in (["log", "main"], ["fsck"], ["demo", "--fast"]):
        result = invoke(*command, "--db", url)
        assert_one_line_error(result, f"127.0.0.1, port {port}, database 'chat'")
        assert "hunter2secret" not in result.stderr + result.stdout


def test_an_empty_database_is_not_one_to_read(postgres_server: pg_server.Server) -> None:
    """Reading commands refuse an empty database (nothing is created in it)."""
    with postgres_server.database() as url:
        assert_one_line_error(invoke("log", "main", "--db", url), "(it is empty)")
        assert_one_line_error(invoke("fsck", "--db", url), "(it is empty)")
