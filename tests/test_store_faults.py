"""Real faults under the SQLite store: a damaged file, a full disk, a read-only place.

Each fault is real, and real for root, who ignores permission bits: bytes changed in the
file on disk; a full disk, as a small tmpfs filled to its last byte (ENOSPC) or as a file
size limit, ``RLIMIT_FSIZE``, in a subprocess (EFBIG); a read-only place, as a tmpfs
remounted read-only, or a directory or file with the immutable flag (``chattr +i``). A
tmpfs needs the right to mount, the immutable flag a filesystem that has it: where either
is missing, those variants skip saying so, and the file size limit and the other variant
still run. The commands run as the user runs them: ``agentforum`` in a subprocess, or in
this process through click's runner where a test runs many of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from agentforum import CallMessage, Forum, IntegrityError, Message, SQLiteStore, StoreError
from agentforum.cli._app import cli

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Iterator

pytestmark = pytest.mark.skipif(
    os.name != "posix", reason=f"the faults are POSIX ones (rlimits, mounts), not {os.name!r}'s"
)


def tree_of_messages() -> list[Message]:
    """A tree of 24 messages: two roots, branches, long chains, and a call with its answer
    (parents before children)."""
    messages: list[Message] = []
    for root in ("first", "second"):
        top = Message(content=f"{root} question", sender="user")
        messages.append(top)
        for branch in range(3):
            parent = top
            for depth in range(3):
                child = Message(
                    content=f"{root} {branch}.{depth} " + "words " * 20,
                    sender=f"agent{branch}",
                    parent=parent.hash,
                )
                messages.append(child)
                parent = child
        messages.append(Message(content=f"{root} aside", sender="user", parent=top.hash))
    call = CallMessage(receiver="agent0", kwargs={}, parent=messages[0].hash)
    messages += [call, Message(content="a cached answer", sender="agent0", parent=call.hash)]
    return messages


async def write_tree(path: pathlib.Path) -> list[Message]:
    """Store :func:`tree_of_messages` and two refs at ``path``; the file is closed after."""
    messages = tree_of_messages()
    store = SQLiteStore(path)
    try:
        await store.put_many(messages)
        await store.set_ref("main", messages[-1].hash)
        await store.set_ref("other", messages[3].hash)
        await store.put_cached(messages[-2].hash, [messages[-1].hash])
    finally:
        await store.aclose()
    return messages


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, list[Message]]:
    """A database holding :func:`tree_of_messages` (shared: copy it to damage it)."""
    path = tmp_path_factory.mktemp("pristine") / "tree.db"
    messages: list[Message] = anyio.run(write_tree, path)
    assert sorted(os.listdir(path.parent)) == ["tree.db"]  # checkpointed: no -wal left
    return path, messages


@pytest.fixture
def damaged(pristine: tuple[pathlib.Path, list[Message]], tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the pristine database, for the test to damage."""
    copy = tmp_path / "tree.db"
    shutil.copyfile(pristine[0], copy)
    return copy


def invoke(*args: str | pathlib.Path) -> Result:
    """Run ``agentforum ARGS`` in this process; stdout and stderr kept apart."""
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        runner = CliRunner()
    return runner.invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def agentforum(*args: str | pathlib.Path, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agentforum ARGS`` in a subprocess (the real entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "agentforum", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
        **options,
    )


def one_error_line(result: Result | subprocess.CompletedProcess[str]) -> str:
    """The one ``agentforum: error:`` line of a command that failed with status 1."""
    code = result.exit_code if isinstance(result, Result) else result.returncode
    assert code == 1, (code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("agentforum: error: "), lines
    return lines[0]


def page_of(path: pathlib.Path, name: str) -> tuple[int, int]:
    """The byte offset and size of the root page of the table or index ``name``."""
    connection = sqlite3.connect(path)
    try:
        (root,) = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)
        ).fetchone()
        (size,) = connection.execute("PRAGMA page_size").fetchone()
    finally:
        connection.close()
    return (root - 1) * size, size


def edit_index_key(path: pathlib.Path, parent: str) -> None:
    """Change one character of the key ``parent`` in the index of parents, on disk.

    The key (the parent's 32 bytes) becomes the next greater hash, which no message has:
    the child filed under it is no longer found by its parent's hash, nor by any other, but
    SQLite opens and reads the file without an error. Only SQLite's integrity check sees
    that the index and the table disagree.
    """
    start, size = page_of(path, "messages_by_parent")
    data = bytearray(path.read_bytes())
    key = bytes.fromhex(parent)
    # An entry of the index is a record (parent, rowid): a header of 3 bytes (its size, the
    # serial type of a 32-byte blob, 76, and that of the rowid), then the parent.
    at = next(
        (
            found
            for found in range(start, start + size - len(key))
            if data[found : found + len(key)] == key and data[found - 3 : found - 1] == b"\x03\x4c"
        ),
        -1,
    )
    assert at >= 0, "the key is not in the index's root page"
    last = max(index for index, byte in enumerate(key) if byte != 0xFF)
    data[at + last] += 1
    path.write_bytes(bytes(data))


# -- a damaged file: fsck and export -------------------------------------------------------------


def test_fsck_reports_an_index_that_disagrees_with_the_table(
    damaged: pathlib.Path, pristine: tuple[pathlib.Path, list[Message]]
) -> None:
    """One byte changed in the index of parents: fsck names the problem and exits with 1."""
    root = pristine[1][0]
    edit_index_key(damaged, root.hash)
    result = agentforum("fsck", "--db", damaged)
    assert result.returncode == 1, result.stdout
    assert "sound" not in result.stdout
    assert "messages_by_parent" in result.stdout  # SQLite's own integrity check
    assert "does not reach it" in result.stdout  # the walk from the roots, against the table
    assert "problem" in result.stderr


def test_export_refuses_a_database_it_cannot_read_whole(
    damaged: pathlib.Path, pristine: tuple[pathlib.Path, list[Message]], tmp_path: pathlib.Path
) -> None:
    """export of a damaged database exits with 1 and writes nothing: no file, no stdout."""
    edit_index_key(damaged, pristine[1][0].hash)
    before = sorted(os.listdir(tmp_path))
    to_file = agentforum("export", "-o", tmp_path / "backup.jsonl", "--db", damaged)
    line = one_error_line(to_file)
    assert "messages_by_parent" in line  # the first problem
    assert "nothing was exported" in line
    assert "agentforum fsck" in line
    assert sorted(os.listdir(tmp_path)) == before
    to_stdout = agentforum("export", "--db", damaged)
    one_error_line(to_stdout)
    assert to_stdout.stdout == ""


@pytest.mark.anyio
async def test_verify_compares_the_walk_from_the_roots_with_the_table(
    damaged: pathlib.Path, pristine: tuple[pathlib.Path, list[Message]]
) -> None:
    """verify() names every message the walk from the roots misses, and SQLite's findings."""
    messages = pristine[1]
    root = messages[0]
    edit_index_key(damaged, root.hash)
    store = SQLiteStore(damaged, create=False)
    try:
        reached = {child.hash for child in await store.children(root.hash)}
        problems = await store.verify()
    finally:
        await store.aclose()
    missed = {m.hash for m in messages if m.parent == root.hash} - reached
    assert missed  # the damage hides a child of the root from children(), and its subtree
    hidden = set(missed)
    for message in messages:  # parents come before their children
        if message.parent in hidden:
            hidden.add(message.hash)
    unreached = {p.hash for p in problems if "does not reach it" in p.reason}
    assert unreached == hidden
    assert any("messages_by_parent" in p.reason and p.hash == "" for p in problems)


def printable(text: str) -> bool:
    """No control character (an escape sequence, a raw byte) in any line of ``text``."""
    return all(line.isprintable() for line in text.splitlines())


@st.composite
def damage(draw: st.DrawFn, size: int, hot: range) -> list[tuple[int, int]]:
    """A few bytes of a file of ``size`` bytes, each replaced by another value; half of
    them in the ``hot`` range (the index of parents, whose damage hides messages)."""
    where = st.one_of(st.integers(0, size - 1), st.integers(hot.start, hot.stop - 1))
    return draw(st.lists(st.tuples(where, st.integers(0, 255)), min_size=1, max_size=4))


@settings(max_examples=60, derandomize=True, database=None)
@given(data=st.data())
def test_fsck_is_never_sound_while_export_would_lose_messages(
    pristine: tuple[pathlib.Path, list[Message]], tmp_path: pathlib.Path, data: st.DataObject
) -> None:
    """For any bytes changed anywhere in the file: fsck reports a problem, or export writes
    every message; export never writes a partial bundle; no output quotes raw bytes."""
    path, messages = pristine
    original = path.read_bytes()
    start, page_size = page_of(path, "messages_by_parent")
    edits = data.draw(damage(len(original), range(start, start + page_size)))
    changed = bytearray(original)
    for at, value in edits:
        changed[at] = value
    target = tmp_path / "random.db"
    for leftover in tmp_path.glob("random.*"):
        leftover.unlink()
    target.write_bytes(bytes(changed))
    fsck = invoke("fsck", "--db", target)
    assert fsck.exit_code in (0, 1), fsck.stderr
    bundle = tmp_path / "random.jsonl"
    export = invoke("export", "-o", bundle, "--db", target)
    assert export.exit_code in (0, 1), export.stderr
    assert printable(fsck.stdout + fsck.stderr + export.stderr)
    if fsck.exit_code == 0:
        assert export.exit_code == 0, export.stderr
    if export.exit_code == 0:
        lines = bundle.read_bytes().splitlines()
        assert json.loads(lines[0])["messages"] == len(messages)
        exported = {hashlib.sha256(line).hexdigest() for line in lines[1:] if line.startswith(b"{")}
        assert exported == {message.hash for message in messages}
    else:
        assert not bundle.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- errors a user can act on ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_database_in_a_missing_directory_says_so(tmp_path: pathlib.Path) -> None:
    """Forum(path) and SQLiteStore name the directory that does not exist; nothing is made."""
    path = tmp_path / "no" / "such" / "dir" / "chat.db"
    with pytest.raises(StoreError, match=r"the directory .*no/such/dir does not exist"):
        async with Forum(path):
            pass
    for create in (True, False):
        store = SQLiteStore(path, create=create)
        with pytest.raises(StoreError, match=r"the directory .*no/such/dir does not exist"):
            await store.refs()
        await store.aclose()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "command", [("tree",), ("fsck",), ("log", "main"), ("import", "BUNDLE"), ("demo", "--fast")]
)
def test_commands_on_a_missing_directory_say_so(
    pristine: tuple[pathlib.Path, list[Message]], tmp_path: pathlib.Path, command: tuple[str, ...]
) -> None:
    """`--db no/such/dir/x.db` names the missing directory, in one line; nothing is made."""
    bundle = tmp_path / "bundle.jsonl"
    assert invoke("export", "-o", bundle, "--db", pristine[0]).exit_code == 0
    args = [str(bundle) if arg == "BUNDLE" else arg for arg in command]
    result = agentforum(*args, "--db", "no/such/dir/x.db", cwd=tmp_path)
    assert "directory no/such/dir does not exist" in one_error_line(result)
    assert not (tmp_path / "no").exists()


def truncate(path: pathlib.Path, size: int) -> None:
    """Cut the file at ``path`` to its first ``size`` bytes (a negative size: from its end)."""
    data = path.read_bytes()
    path.write_bytes(data[:size])


@pytest.mark.parametrize("size", [50, 2000, 4096, 10_000, -100], ids=lambda size: f"cut{size}")
def test_a_truncated_database_is_reported_as_truncated(damaged: pathlib.Path, size: int) -> None:
    """A database cut short, in its header, mid-page or at a page boundary, is "truncated"
    (restore it), never "not SQLite"; cut in its last page, it opens and fsck says so."""
    truncate(damaged, size)
    result = agentforum("fsck", "--db", damaged)
    assert result.returncode == 1
    assert "not SQLite" not in result.stdout + result.stderr
    if size > 0:
        line = one_error_line(result)
        assert "truncated SQLite database" in line
        assert "restore it from a backup" in line
    else:
        assert "the file is truncated" in result.stdout


#: A row's metadata replaced by JSON that quotes terminal escape sequences and bad UTF-8.
EVIL = b'{"content":"\x1b[2J\x1b[31mpwned","format":"agentforum/1","kind":"\x1b]0;x\x07"}\xff'


@pytest.mark.anyio
async def test_errors_never_quote_the_bytes_of_a_damaged_row(damaged: pathlib.Path) -> None:
    """IntegrityError and verify describe damaged fields, a hash or a text; never quote them."""
    connection = sqlite3.connect(damaged)
    with connection:
        (victim,) = connection.execute(
            "SELECT hash FROM messages WHERE parent IS NULL ORDER BY hash LIMIT 1"
        ).fetchone()
        connection.execute("UPDATE messages SET metadata = ? WHERE hash = ?", (EVIL, victim))
        connection.execute(
            "UPDATE refs SET hash = CAST(? AS TEXT) WHERE name = 'main'", (b"\x1b[31m\xfe",)
        )
    connection.close()
    store = SQLiteStore(damaged, create=False)
    try:
        with pytest.raises(IntegrityError) as caught:
            await store.get(victim.hex())
        texts = [str(caught.value)]
        with pytest.raises(StoreError) as unreadable:
            await store.refs()  # a ref's hash is not UTF-8
        texts.append(str(unreadable.value))
        texts.extend(f"{p.hash}: {p.reason}" for p in await store.verify())
    finally:
        await store.aclose()
    assert any(victim.hex() in text and "damaged" in text for text in texts)
    assert any("not UTF-8" in text for text in texts)
    for text in texts:
        assert printable(text), text
        assert "pwned" not in text
        assert "\\x1b" not in text


# -- places that cannot be written ----------------------------------------------------------------


def run_tool(*command: str | pathlib.Path) -> subprocess.CompletedProcess[str]:
    """Run a system tool (mount, chattr); its failure is the caller's to judge."""
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=60, check=False
    )


@contextlib.contextmanager
def tmpfs(directory: pathlib.Path, size: str) -> Iterator[pathlib.Path]:
    """A tmpfs of ``size`` mounted at ``directory`` for the block (skip if mounting fails)."""
    directory.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: a tmpfs cannot be mounted")
    mounted = run_tool("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", directory)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        unmounted = run_tool("umount", directory)
        assert unmounted.returncode == 0, unmounted.stderr


@contextlib.contextmanager
def immutable(paths: list[pathlib.Path]) -> Iterator[None]:
    """Make ``paths`` immutable (``chattr +i``: not even root may change them) for the block.

    Skips the test where the filesystem or the user cannot set the flag.
    """
    if shutil.which("chattr") is None:
        pytest.skip("no chattr command here: the immutable flag cannot be set")
    sealed: list[pathlib.Path] = []
    try:
        for path in paths:
            result = run_tool("chattr", "+i", path)
            if result.returncode != 0:
                pytest.skip(f"chattr +i is not possible here: {result.stderr.strip()}")
            sealed.append(path)
        yield
    finally:
        for path in sealed:
            run_tool("chattr", "-i", path)


#: How a place is made read-only: a read-only filesystem (a tmpfs remounted read-only, which
#: needs mount privileges), an immutable directory (a file can be changed, none created),
#: an immutable database file (in a directory that can be written).
READ_ONLY = ["read-only filesystem", "immutable directory", "immutable file"]


class Place:
    """A directory that ``seal()`` makes read-only, in one of the ways of :data:`READ_ONLY`."""

    def __init__(self, kind: str, directory: pathlib.Path, stack: contextlib.ExitStack) -> None:
        self.kind = kind
        self.directory = directory
        self._stack = stack

    def seal(self) -> None:
        """Make the place read-only: from now on nothing in it can change."""
        if self.kind == "read-only filesystem":
            result = run_tool("mount", "-o", "remount,ro", self.directory)
            assert result.returncode == 0, result.stderr
        elif self.kind == "immutable directory":
            self._stack.enter_context(immutable([self.directory]))
        else:
            self._stack.enter_context(immutable(sorted(self.directory.iterdir())))


@pytest.fixture(params=READ_ONLY)
def place(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Place]:
    """A directory to fill, then seal read-only."""
    with contextlib.ExitStack() as stack:
        if request.param == "read-only filesystem":
            directory = stack.enter_context(tmpfs(tmp_path / "mount", "4m"))
        else:
            directory = tmp_path / "place"
            directory.mkdir()
        yield Place(request.param, directory, stack)


@pytest.fixture
def read_only(place: Place, pristine: tuple[pathlib.Path, list[Message]]) -> pathlib.Path:
    """The pristine database, copied to a place where it cannot be written."""
    path = place.directory / "tree.db"
    shutil.copyfile(pristine[0], path)
    place.seal()
    return path


def listing(directory: pathlib.Path) -> dict[str, bytes]:
    """Every file of ``directory`` and its bytes."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.mark.anyio
async def test_a_database_that_cannot_be_written_can_be_read(
    read_only: pathlib.Path, pristine: tuple[pathlib.Path, list[Message]]
) -> None:
    """Reading works where the database cannot be written; every write raises StoreError
    saying it is read-only; the database file is left as it was."""
    messages = pristine[1]
    before = await anyio.Path(read_only).read_bytes()
    store = SQLiteStore(read_only, create=False)
    try:
        assert (await store.get(messages[5].hash)) == messages[5]
        assert [m.hash for m in await store.ancestors(messages[3].hash)] == [
            m.hash for m in messages[:4]
        ]
        assert len(await store.children(None)) == 2
        assert set(await store.refs()) == {"main", "other"}
        assert await store.get_cached(messages[-2].hash) == (messages[-1].hash,)
        assert await store.verify() == []
        extra = Message(content="more", sender="s", parent=messages[0].hash)
        writes = [
            store.put(extra),
            store.put_many([extra]),
            store.set_ref("new", messages[0].hash),
            store.delete_ref("main"),
            store.put_cached(messages[0].hash, []),
        ]
        for write in writes:
            with pytest.raises(StoreError, match="read-only"):
                await write
    finally:
        await store.aclose()
    assert await anyio.Path(read_only).read_bytes() == before


def test_commands_read_a_database_that_cannot_be_written(
    read_only: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """fsck, log, tree, graph and export work; import fails in one line: it is read-only."""
    before = listing(read_only.parent)
    for command in (("fsck",), ("log", "main"), ("tree",), ("graph",)):
        result = invoke(*command, "--db", read_only)
        assert result.exit_code == 0, (command, result.stderr)
    bundle = tmp_path / "bundle.jsonl"
    assert invoke("export", "-o", bundle, "--db", read_only).exit_code == 0
    assert "read-only" in one_error_line(agentforum("import", bundle, "--db", read_only))
    after = listing(read_only.parent)
    if os.access(read_only.parent, os.W_OK):
        # The immutable file: SQLite made the -wal (empty) and -shm that a reader needs.
        assert after.pop(f"{read_only.name}-wal") == b""
        after.pop(f"{read_only.name}-shm")
    assert after == before


async def copy_while_written(directory: pathlib.Path, *suffixes: str) -> list[Message]:
    """Write :func:`tree_of_messages` in a database and copy its files (those of
    ``suffixes``) to ``directory`` while it is open: its changes are in its -wal file, as
    when the process writing it was killed."""
    messages = tree_of_messages()
    live = directory.parent / "live"
    live.mkdir()
    store = SQLiteStore(live / "tree.db")
    try:
        await store.put_many(messages)
        for suffix in suffixes:
            shutil.copyfile(live / f"tree.db{suffix}", directory / f"tree.db{suffix}")
    finally:
        await store.aclose()
    return messages


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("place", "with_shm"),
    [
        ("read-only filesystem", True),
        ("read-only filesystem", False),
        ("immutable directory", False),
        ("immutable file", True),
    ],
    indirect=["place"],
)
async def test_changes_in_the_write_ahead_log_are_read_or_refused(
    place: Place, with_shm: bool
) -> None:
    """A database whose changes are still in its -wal file, in a read-only place, is read
    whole if its -shm file is there; without one (a directory that cannot be written cannot
    get one) it is refused with a StoreError that says why, never read without its changes."""
    suffixes = ("", "-wal", "-shm") if with_shm else ("", "-wal")
    messages = await copy_while_written(place.directory, *suffixes)
    place.seal()
    store = SQLiteStore(place.directory / "tree.db", create=False)
    try:
        if with_shm:
            assert await store.verify() == []
            assert [m.hash for m in await store.children(None)] == sorted(
                m.hash for m in messages if m.parent is None
            )
        else:
            with pytest.raises(StoreError, match=r"-wal, holds changes .*-shm file"):
                await store.refs()
    finally:
        await store.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("place", ["read-only filesystem", "immutable directory"], indirect=True)
async def test_no_database_is_created_where_nothing_can_be(place: Place) -> None:
    """A new database in a directory that cannot be written: StoreError, saying so."""
    place.seal()
    with pytest.raises(StoreError, match=r"cannot create the database: the directory .* cannot"):
        async with Forum(place.directory / "new.db"):
            pass
    assert list(place.directory.iterdir()) == []


# -- a full disk ----------------------------------------------------------------------------------

#: How a disk becomes full: a small tmpfs filled to its last byte (a real ENOSPC, which
#: needs mount privileges), or a file size limit, RLIMIT_FSIZE, in the subprocess (EFBIG:
#: SQLite reports it as a disk I/O error). Both fail SQLite's writes mid-transaction.
FAULTS = ["full filesystem", "file size limit"]

#: What the error says of each fault.
CAUSES = {"full filesystem": "database or disk is full", "file size limit": "disk I/O error"}

#: Run first by every scenario: it ignores SIGXFSZ (a write past RLIMIT_FSIZE then fails
#: with EFBIG instead of killing the process), and defines how the disk fills and frees.
PRELUDE = """
import errno, os, resource, signal, sys

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
FAULT, DIRECTORY = sys.argv[1], sys.argv[2]
FILLER = os.path.join(DIRECTORY, "filler")


def disk_full():
    '''From now on, a write that makes a file of DIRECTORY longer fails.'''
    if FAULT == "full filesystem":
        handle = os.open(FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(handle, bytes(65536))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(handle)
    else:
        sizes = [os.path.getsize(os.path.join(DIRECTORY, name)) for name in os.listdir(DIRECTORY)]
        resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes, default=0), resource.RLIM_INFINITY))


def disk_freed():
    if FAULT == "full filesystem":
        os.unlink(FILLER)
    else:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
"""


@pytest.fixture(params=FAULTS)
def disk(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[tuple[str, str]]:
    """A fault and the directory where it strikes (a 1 MiB tmpfs for a full filesystem)."""
    if request.param == "full filesystem":
        with tmpfs(tmp_path / "disk", "1m") as directory:
            yield request.param, str(directory)
    else:
        directory = tmp_path / "disk"
        directory.mkdir()
        yield request.param, str(directory)


def scenario(script: str, disk: tuple[str, str], *args: str | pathlib.Path) -> list[str]:
    """Run ``script`` after :data:`PRELUDE` in a subprocess; return the lines it printed."""
    result = run_faulty(script, disk, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def run_faulty(
    script: str, disk: tuple[str, str], *args: str | pathlib.Path
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` after :data:`PRELUDE` in a subprocess, with ``disk``'s fault."""
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + script, *disk, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


PUT_ON_A_FULL_DISK = """
import anyio
from agentforum import Message, SQLiteStore, StoreError


async def main():
    store = SQLiteStore(os.path.join(DIRECTORY, "tree.db"))
    root = Message(content="root", sender="s")
    batch = [Message(content=f"{i} " + "x" * 4000, sender="s", parent=root.hash) for i in range(20)]
    try:
        await store.put(root)
        disk_full()
        try:
            await store.put_many(batch)
        except StoreError as exc:
            print(f"error: {exc}")
        print(f"read: {len(await store.children(None))} {len(await store.children(root.hash))}")
        disk_freed()
        await store.put_many(batch)
        print(f"then: {len(await store.children(root.hash))} {await store.verify()}")
    finally:
        await store.aclose()


anyio.run(main, backend=sys.argv[3])
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_full_disk_is_reported_as_what_it_is(disk: tuple[str, str], backend: str) -> None:
    """A write on a full disk raises StoreError with SQLite's own reason, not a failed
    rollback's; nothing of it is stored, and the store writes again once there is room."""
    error, read, then = scenario(PUT_ON_A_FULL_DISK, disk, backend)
    assert error.startswith("error: ")
    assert CAUSES[disk[0]] in error
    assert "rollback" not in error
    assert read == "read: 1 0"
    assert then == "then: 20 []"


OPEN_ON_A_FULL_DISK = """
import anyio
from agentforum import Forum, StoreError


async def main():
    path = os.path.join(DIRECTORY, "new.db")
    disk_full()
    try:
        async with Forum(path):
            pass
    except StoreError as exc:
        print(f"error: {exc}")
    disk_freed()
    async with Forum(path) as forum:
        print(f"then: {dict(await forum.refs())}")


anyio.run(main, backend=sys.argv[3])
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_new_database_on_a_full_disk_raises_store_error(
    disk: tuple[str, str], backend: str
) -> None:
    """Creating a database on a full disk raises StoreError naming the file and the cause
    (no raw sqlite3 error); once there is room, the same path becomes a database."""
    error, then = scenario(OPEN_ON_A_FULL_DISK, disk, backend)
    assert error.startswith(f"error: {disk[1]}/new.db: cannot create the database: ")
    assert CAUSES[disk[0]] in error
    assert then == "then: {}"


IMPORT_ON_A_FULL_DISK = """
import runpy

if sys.argv[4] == "at once":
    disk_full()
elif FAULT == "file size limit":  # a full filesystem has 1 MiB for a bundle of 2.4 MB
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
sys.argv = ["agentforum", "import", sys.argv[3], "--db", os.path.join(DIRECTORY, "new.db")]
try:
    runpy.run_module("agentforum", run_name="__main__", alter_sys=True)
finally:  # what runs at exit (coverage, when it measures the subprocess) writes files
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
"""


@pytest.fixture(scope="module")
def big_bundle(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """An export bundle of 600 messages of 4 kB each: more than 1 MiB."""
    directory = tmp_path_factory.mktemp("big")

    async def write() -> None:
        store = SQLiteStore(directory / "big.db")
        parent = None
        messages = []
        for index in range(600):
            message = Message(content=f"{index} " + "y" * 4000, sender="s", parent=parent)
            messages.append(message)
            parent = message.hash
        try:
            await store.put_many(messages)
        finally:
            await store.aclose()

    anyio.run(write)
    bundle = directory / "big.jsonl"
    assert invoke("export", "-o", bundle, "--db", directory / "big.db").exit_code == 0
    return bundle


@pytest.mark.parametrize("when", ["at once", "midway"])
def test_import_on_a_full_disk_leaves_no_database(
    disk: tuple[str, str], big_bundle: pathlib.Path, when: str
) -> None:
    """`import` into a new file fails in one line naming the cause, whether the disk fills
    as the database is created or while the messages are written; no file is left."""
    result = run_faulty(IMPORT_ON_A_FULL_DISK, disk, big_bundle, when)
    assert CAUSES[disk[0]] in one_error_line(result)
    left = sorted(os.listdir(disk[1]))
    assert left == (["filler"] if disk[0] == "full filesystem" and when == "at once" else [])


CALL_ON_A_FULL_DISK = """
import anyio
from agentforum import AgentCancelled, AgentError, Forum, InteractionContext, StoreError


async def main():
    forum = Forum(os.path.join(DIRECTORY, "chat.db"))
    placed, freed = anyio.Event(), anyio.Event()

    @forum.agent
    async def talker(ctx: InteractionContext) -> None:
        await ctx.history()  # its requests and CallMessage are placed
        disk_full()  # neither the response nor the ErrorMessage can be stored now
        ctx.respond("x" * 10_000)

    @forum.agent
    async def patient(ctx: InteractionContext) -> None:
        await ctx.history()
        placed.set()
        await freed.wait()
        ctx.respond("still here")

    try:
        async with forum:
            other = patient.ask("wait")
            await placed.wait()
            try:
                await talker.ask("hello").last()
            except AgentCancelled as exc:
                print(f"consumer: cancelled: {exc}")
            except AgentError as exc:
                cause = exc.__cause__
                print(f"consumer: {exc.message.error_type}: {type(cause).__name__}: {cause}")
            else:
                print("consumer: answered")
            disk_freed()
            freed.set()
            print(f"other: {(await other.last()).content}")
    except StoreError as exc:
        print(f"exit: StoreError: {exc}")
    except BaseException as exc:
        print(f"exit: {exc!r}")
    else:
        print("exit: none")


anyio.run(main, backend=sys.argv[3])
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_consumers_of_a_call_the_store_fails_get_the_store_error(
    disk: tuple[str, str], backend: str
) -> None:
    """When the store fails as a call writes its branch, and fails again to record the
    ErrorMessage, the call's consumer gets the store's error as the cause (not a cancelled
    forum); another call goes on; leaving ``async with forum:`` raises the StoreError."""
    lines = scenario(CALL_ON_A_FULL_DISK, disk, backend)
    assert len(lines) == 3, lines
    consumer, other, exit = lines
    assert consumer.startswith("consumer: agentforum.StoreError: StoreError: "), consumer
    assert CAUSES[disk[0]] in consumer
    assert other == "other: still here"
    assert exit.startswith("exit: StoreError: "), exit
    assert CAUSES[disk[0]] in exit


@pytest.mark.anyio
async def test_fields_damaged_into_a_number_are_an_integrity_error(
    damaged: pathlib.Path, pristine: tuple[pathlib.Path, list[Message]]
) -> None:
    """A row whose metadata became a number (a damaged record header can do that) is an
    IntegrityError on read and a problem for verify, not a crash."""
    victim = pristine[1][4]
    connection = sqlite3.connect(damaged)
    with connection:
        connection.execute(
            "UPDATE messages SET metadata = ? WHERE hash = ?", (2**62, bytes.fromhex(victim.hash))
        )
    connection.close()
    store = SQLiteStore(damaged, create=False)
    try:
        with pytest.raises(IntegrityError, match="damaged"):
            await store.get(victim.hash)
        problems = await store.verify()
    finally:
        await store.aclose()
    assert [(p.hash, "damaged" in p.reason) for p in problems] == [(victim.hash, True)]


@pytest.mark.parametrize("where", ["missing directory", "full filesystem"])
def test_export_that_cannot_be_written_names_the_file_and_leaves_none(
    pristine: tuple[pathlib.Path, list[Message]], tmp_path: pathlib.Path, where: str
) -> None:
    """`export -o FILE` where FILE cannot be written says why, naming FILE (not its
    temporary file), and leaves nothing behind."""
    with contextlib.ExitStack() as stack:
        if where == "full filesystem":
            directory = stack.enter_context(tmpfs(tmp_path / "disk", "64k"))
            (directory / "filler").write_bytes(bytes(60 * 1024))  # a bundle needs more
            expected = "No space left on device"
        else:
            directory = tmp_path / "no" / "such"
            expected = "No such file or directory"
        output = directory / "backup.jsonl"
        line = one_error_line(invoke("export", "-o", output, "--db", pristine[0]))
        assert f"{output}: {expected}" in line
        if directory.exists():
            assert sorted(os.listdir(directory)) == ["filler"]


TELL_ON_A_FULL_DISK = """
import anyio
from agentforum import Forum, InteractionContext

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup


async def main():
    forum = Forum(os.path.join(DIRECTORY, "chat.db"))

    @forum.agent
    async def talker(ctx: InteractionContext) -> None:
        await ctx.history()
        disk_full()
        ctx.respond("x" * 10_000)

    try:
        async with forum:
            talker.tell("hello")  # nobody observes how it ends
    except ExceptionGroup as group:
        for error in group.exceptions:
            print(f"{type(error).__name__}: {type(error.__cause__).__name__}: {error}")
    finally:
        disk_freed()


anyio.run(main, backend=sys.argv[3])
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_unobserved_call_the_store_fails_leaves_with_the_store_error_first(
    disk: tuple[str, str], backend: str
) -> None:
    """A `tell` whose branch and ErrorMessage the store cannot write: leaving the forum
    raises the StoreError first, then the call's AgentError that nobody observed."""
    lines = scenario(TELL_ON_A_FULL_DISK, disk, backend)
    assert len(lines) == 2, lines
    assert lines[0].startswith("StoreError: "), lines
    assert lines[1].startswith("AgentError: StoreError: agent 'talker' failed: "), lines
    assert all(CAUSES[disk[0]] in line for line in lines)
