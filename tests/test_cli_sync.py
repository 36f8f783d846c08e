"""``agentforum clone``, ``push`` and ``pull`` between SQLite files, PostgreSQL and bundles."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import anyio
import pytest

from agentforum import Forum, Message, SQLiteStore
from test_branches import chain
from test_cli import environment, invoke, refs_of, stored, tamper

if TYPE_CHECKING:
    from pathlib import Path


pytestmark = pytest.mark.slow


def test_clone_copies_what_the_refs_reach_to_a_file_and_a_bundle(
    demo_db: Path, tmp_path: Path
) -> None:
    """`clone` into a new SQLite file and into a bundle, and from the bundle again: each
    holds the refs and what they reach, and says so; an existing destination is refused."""
    copy, bundle, again = tmp_path / "copy.db", tmp_path / "copy.jsonl", tmp_path / "again.db"
    result = invoke("clone", demo_db, copy)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    count = len(anyio.run(stored, copy))
    assert lines[0] == f"cloned {count} messages and 10 contents from {demo_db} into {copy}"
    assert [line.split()[:2] for line in lines[1:]] == [
        ["demo/first", "(new)"],
        ["demo/second", "(new)"],
    ]
    assert invoke("fsck", "--db", copy).exit_code == 0
    assert invoke("clone", copy, bundle).exit_code == 0
    assert invoke("clone", bundle, again).exit_code == 0
    assert anyio.run(stored, again) == anyio.run(stored, copy)
    assert anyio.run(refs_of, again) == anyio.run(refs_of, demo_db)
    refused = invoke("clone", demo_db, copy)
    assert refused.exit_code == 1
    assert "exists: clone makes a new database" in refused.stderr


def test_push_sends_the_difference_and_refuses_to_go_back(demo_db: Path, tmp_path: Path) -> None:
    """`push` of two new messages sends those two and moves the ref forward; a push that
    would move a ref off its branch fails with one line and changes nothing; --force moves
    it; `pull` brings a ref back."""
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    assert invoke("clone", demo_db, ours).exit_code == 0
    assert invoke("clone", demo_db, theirs).exit_code == 0
    tip = anyio.run(refs_of, ours)["demo/first"]
    more = chain(2, tip, "more")

    async def grow(path: Path, messages: list[Message], ref: str) -> None:
        async with Forum(path) as forum:
            await forum.store.put_many(messages)
            await forum.set_ref(ref, messages[-1])

    anyio.run(grow, ours, more, "demo/first")
    result = invoke("push", theirs, "demo/first", "--db", ours)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"pushed 2 messages and 2 contents to {theirs}",
        f"  demo/first  {tip[:10]}..{more[-1].hash[:10]}",
    ]
    assert invoke("push", theirs, "--db", ours).stdout.splitlines()[1] == (
        "  every ref was up to date"
    )

    other = chain(1, tip, "other")
    anyio.run(grow, theirs, other, "demo/first")
    before = anyio.run(stored, theirs), anyio.run(refs_of, theirs)
    refused = invoke("push", theirs, "--db", ours)
    assert refused.exit_code == 1
    assert refused.stderr.startswith("agentforum: error: ref 'demo/first' (")
    assert "--force" in refused.stderr
    assert (anyio.run(stored, theirs), anyio.run(refs_of, theirs)) == before
    forced = invoke("push", theirs, "demo/first", "--force", "--db", ours)
    assert forced.stdout.splitlines()[1] == (
        f"  demo/first  {other[-1].hash[:10]}...{more[-1].hash[:10]} (forced)"
    )
    pulled = invoke("pull", theirs, "demo/second", "--db", ours)
    assert pulled.stdout.splitlines() == [
        f"pulled 0 messages and 0 contents from {theirs}",
        "  every ref was up to date",
    ]
    missing = invoke("pull", theirs, "nothing", "--db", ours)
    assert missing.exit_code == 1
    assert "the source has no ref 'nothing'" in missing.stderr
    into_bundle = invoke("push", tmp_path / "x.jsonl", "--db", ours)
    assert "is a bundle, which is written whole" in into_bundle.stderr


def test_a_tampered_source_is_refused_whole(demo_db: Path, tmp_path: Path) -> None:
    """A source with one edited row: `push` fails naming the message, and the destination
    holds what it held, refs included."""
    source, destination = tmp_path / "source.db", tmp_path / "destination.db"
    source.write_bytes(demo_db.read_bytes())
    messages = anyio.run(stored, source)
    tip = anyio.run(refs_of, source)["demo/second"]
    victim = messages[messages[tip].parent or ""]
    tamper(source, victim)
    trunk = chain(1)

    async def write() -> None:
        async with Forum(destination) as forum:
            await forum.store.put_many(trunk)
            await forum.set_ref("keep", trunk[0])

    anyio.run(write)
    result = invoke("push", destination, "--db", source)
    assert result.exit_code == 1
    assert victim.hash in result.stderr
    assert "nothing was sent" in result.stderr
    assert set(anyio.run(stored, destination)) == {trunk[0].hash}
    assert anyio.run(refs_of, destination) == {"keep": trunk[0].hash}


def test_sqlite_to_postgres_and_back(demo_db: Path, postgres_url: str, tmp_path: Path) -> None:
    """`clone` into PostgreSQL and from it again gives the same tree, byte for byte in a
    bundle; `clone` refuses a PostgreSQL database that holds messages."""
    here, there = tmp_path / "here.jsonl", tmp_path / "there.jsonl"
    assert invoke("clone", demo_db, postgres_url).exit_code == 0
    assert invoke("clone", demo_db, here).exit_code == 0
    assert invoke("clone", postgres_url, there).exit_code == 0
    assert here.read_bytes() == there.read_bytes()
    refused = invoke("clone", demo_db, postgres_url)
    assert refused.exit_code == 1
    assert "is not empty" in refused.stderr
    back = tmp_path / "back.db"
    assert invoke("clone", here, back).exit_code == 0
    assert invoke("pull", postgres_url, "--db", back).stdout.endswith("up to date\n")


#: A push into an SQLite store that says, through its standard output, when each batch is
#: committed, then waits to be told to go on: the test kills it instead.
STOPPING = textwrap.dedent(
    """
    import sys

    import anyio

    from agentforum import Forum, SQLiteStore


    class Stopping(SQLiteStore):
        async def put_many(self, messages):
            await super().put_many(messages)
            print("committed", flush=True)
            sys.stdin.readline()


    async def main():
        destination = Stopping(sys.argv[2])
        try:
            await Forum(SQLiteStore(sys.argv[1])).push(destination)
        finally:
            await destination.aclose()


    anyio.run(main)
    """
)


def test_a_push_killed_midway_leaves_a_sound_destination_and_a_retry_completes_it(
    tmp_path: Path,
) -> None:
    """A push of 2,500 messages killed (SIGKILL) right after its first batch committed:
    the destination is sound and holds that batch, no ref moved; pushing again sends the
    rest and moves the ref."""
    source, destination = tmp_path / "source.db", tmp_path / "destination.db"
    trunk = chain(2500)

    async def write() -> None:
        store = SQLiteStore(source)
        try:
            await store.put_many(trunk)
            await store.set_ref("main", trunk[-1].hash)
        finally:
            await store.aclose()

    anyio.run(write)
    with subprocess.Popen(
        [sys.executable, "-c", STOPPING, str(source), str(destination)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=environment(),
        text=True,
    ) as process:
        assert process.stdout is not None
        try:
            assert process.stdout.readline() == "committed\n"
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    fsck = invoke("fsck", "--db", destination)
    assert fsck.exit_code == 0, fsck.stdout
    assert "sound (1000 messages" in fsck.stdout
    assert anyio.run(refs_of, destination) == {}
    again = invoke("push", destination, "--db", source)
    assert again.stdout.splitlines() == [
        f"pushed 1500 messages and 1500 contents to {destination}",
        f"  main  (new) {trunk[-1].hash[:10]}",
    ]
    assert "sound (2500 messages" in invoke("fsck", "--db", destination).stdout


@pytest.mark.parametrize("command", ["clone", "push", "pull"])
def test_help_names_the_ends(command: str) -> None:
    """Each command's help says what SRC and DEST may be."""
    assert "postgresql://" in invoke(command, "--help").stdout
