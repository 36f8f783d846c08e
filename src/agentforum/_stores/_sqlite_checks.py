"""What the SQLite store checks and reports: a damaged file, its rows, truthful errors.

Nothing here quotes what a damaged file holds: the texts are shown to people, and a damaged
row may hold anything, escape sequences included.
"""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING, Final

from .._messages import ForwardedMessage, is_hash, links
from . import _sqlite_rows as rows
from ._cache import cache_problems
from ._protocol import IntegrityProblem

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from .._messages import Message

#: The first bytes of every SQLite database file.
SQLITE_MAGIC: Final = b"SQLite format 3\x00"


def describe(exc: BaseException) -> str:
    """What an error of the sqlite3 module says, without quoting bytes of the file."""
    text = str(exc)
    # sqlite3 quotes the text it could not decode, and fails to decode an error message of
    # SQLite's that quotes bytes of a damaged schema.
    if isinstance(exc, UnicodeDecodeError) or text.startswith("Could not decode to UTF-8"):
        return "it holds text that is not UTF-8 (the file is damaged)"
    if text.startswith("malformed database schema"):
        return "its schema is damaged (the file is damaged)"
    return printable(text)


def printable(text: str) -> str:
    """``text`` with every control character escaped: nothing in it can drive a terminal."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def problem(key: object, reason: str) -> IntegrityProblem:
    """The problem ``reason`` of the row stored under ``key`` (hex), which is shown only if it
    is a hash: the key of a damaged row may hold anything."""
    if is_hash(key):
        assert isinstance(key, str)
        return IntegrityProblem(key, reason)
    return IntegrityProblem("", f"a row stored under a damaged hash: {reason}")


def unless_unreadable(
    check: Callable[[sqlite3.Connection], list[IntegrityProblem]], connection: sqlite3.Connection
) -> list[IntegrityProblem]:
    """The problems ``check`` finds, or the one that the file is too damaged to read."""
    try:
        return check(connection)
    except (sqlite3.DatabaseError, UnicodeDecodeError, OSError) as exc:
        reason = exc.strerror or str(exc) if isinstance(exc, OSError) else describe(exc)
        return [IntegrityProblem("", f"the database cannot be read whole: {reason}")]


def file_problems(path: str, connection: sqlite3.Connection) -> list[IntegrityProblem]:
    """What is wrong with the file: cut short, or damaged pages, records, indexes."""
    problems = []
    # A checkpoint makes the file as long as the pages it copies before it writes the
    # header that counts them: a file shorter than its header says was cut short.
    with open(path, "rb") as file:
        truncated = truncation(file.read(100), os.fstat(file.fileno()).st_size)
    if truncated is not None:
        problems.append(IntegrityProblem("", f"the file is truncated: {truncated}"))
    # integrity_check, not quick_check: only it compares every index with its table.
    found = [
        line
        for (text,) in connection.execute("PRAGMA integrity_check")
        for line in str(text).splitlines()
        if not line.startswith("*** in database")
    ]
    if found != ["ok"]:
        problems.extend(
            IntegrityProblem("", f"SQLite's integrity check: {printable(line)}") for line in found
        )
    return problems


def row_problems(connection: sqlite3.Connection) -> list[IntegrityProblem]:
    """Check every message, content, ref and cache entry of the tables."""
    problems: list[IntegrityProblem] = []
    # Every message's content hash, by its hash: what links and forwards are checked against.
    content_of = {
        rows.hex_of(key): rows.content_of(content)
        for key, content in connection.execute("SELECT hash, content FROM messages")
    }
    for stored in connection.execute(rows.SELECT):
        problems.extend(message_problems(stored, rows.row, content_of))
    problems.extend(content_problems(connection.execute("SELECT hash, text FROM contents")))
    problems.extend(
        problem(rows.hex_of(content_key), "a content is referenced by no message")
        for (content_key,) in connection.execute(UNREFERENCED)
    )
    problems.extend(ref_problems(connection.execute("SELECT name, hash FROM refs"), content_of))
    problems.extend(_cache_problems(connection))
    return problems


#: The contents that no message names.
UNREFERENCED: Final = (
    "SELECT hash FROM contents WHERE NOT EXISTS "
    "(SELECT 1 FROM messages WHERE messages.content = contents.hash)"
)


def message_problems(
    stored: rows.Row,
    row_of: Callable[[Message], rows.Row],
    content_of: Mapping[str | None, str | None],
) -> list[IntegrityProblem]:
    """What is wrong with the message of the row ``stored`` (as :func:`rows.rebuild` takes it).

    Args:
        stored: The row, as the SQLite store's decoder takes it.
        row_of: The columns a message is stored as (compared with those of ``stored``).
        content_of: The content hash of every stored message, by its hash.
    """
    key = rows.hex_of(stored[0])
    message, wrong = rows.rebuild(stored)
    if message is None:
        return [problem(key, str(wrong))]
    found = []
    if row_of(message) != stored[: len(rows.COLUMNS)]:
        found.append(problem(key, "its columns are not stored as its fields are"))
    found.extend(
        problem(key, f"its {field} {value} is not in the store")
        for field, value in links(message)
        if value not in content_of
    )
    if (
        isinstance(message, ForwardedMessage)
        and message.original in content_of
        and content_of[message.original] != message.content_hash
    ):
        found.append(problem(key, "its content is not the content of its original"))
    return found


def content_problems(stored: Iterable[Sequence[object]]) -> list[IntegrityProblem]:
    """What is wrong with the rows ``(hash, text)`` of the contents table."""
    found = []
    for content_key, text in stored:
        wrong = rows.content_problem(content_key, text)
        if wrong is not None:
            found.append(problem(rows.hex_of(content_key), wrong))
    return found


def ref_problems(
    stored: Iterable[Sequence[object]], content_of: Mapping[str | None, str | None]
) -> list[IntegrityProblem]:
    """The refs, rows ``(name, hash)``, that point at a message that is not stored."""
    return [
        problem(
            rows.hex_of(target),
            f"ref {printable(str(name))!r} points at a message that is not in the store",
        )
        for name, target in stored
        if rows.hex_of(target) not in content_of
    ]


def _cache_problems(connection: sqlite3.Connection) -> list[IntegrityProblem]:
    """Check every row of the cache table (see ``_cache.entry_problems``)."""
    entries = [
        (str(rows.hex_of(call)), rows.responses(responses))
        for call, responses in connection.execute("SELECT call, responses FROM cache")
    ]
    # A damaged row's key or columns may hold anything: shown only as the problems allow.
    return [
        problem(found.hash, printable(found.reason))
        for found in cache_problems(entries, rows.nodes(connection))
    ]


def walk_problems(connection: sqlite3.Connection) -> list[IntegrityProblem]:
    """Compare the messages reached by walking the tree from its roots, as ``children``
    reads them (through the index of parents), with the messages of the table itself."""
    # The table itself, not the index of parents: that index holds both columns, and SQLite
    # reads a WITHOUT ROWID table's columns from a covering index even when told NOT INDEXED;
    # a column the index lacks (kind) makes it read the table.
    stored = {
        key: parent
        for key, parent, _ in connection.execute(
            "SELECT hash, parent, kind FROM messages NOT INDEXED"
        )
    }
    reached: set[object] = set()
    misfiled: dict[object, None] = {}
    pending: list[object] = [None]
    while pending:
        parent = pending.pop()
        # The very query children() runs: another one could take another path through a
        # damaged index and reach messages that children() does not.
        for key, *_ in connection.execute(rows.CHILDREN, (parent,)):
            if key in stored and stored[key] != parent:
                misfiled[key] = None
            elif key not in reached:
                reached.add(key)
                pending.append(key)
    return walk_report(stored, reached, misfiled)


def walk_report(
    stored: Mapping[object, object], reached: set[object], misfiled: Iterable[object]
) -> list[IntegrityProblem]:
    """The problems of a walk from the roots through the index of parents.

    Args:
        stored: The parent of every message of the table (read without the index), by key.
        reached: The keys the walk reached.
        misfiled: The keys the index files under a message that is not their parent.
    """
    problems = [
        problem(
            rows.hex_of(key),
            "the index of parents files it under a message that is not its parent",
        )
        for key in misfiled
    ]
    # A message whose parent is missing is reported as such; those below it are not reached.
    problems.extend(
        problem(
            rows.hex_of(key), "it is stored, but walking the tree from its roots does not reach it"
        )
        for key, parent in stored.items()
        if key not in reached and (parent is None or parent in stored)
    )
    problems.extend(
        problem(
            rows.hex_of(key),
            "walking the tree from its roots reaches it, but the table does not hold it",
        )
        for key in sorted(reached - stored.keys(), key=repr)
    )
    return problems


def not_a_database(path: str, exc: BaseException) -> str:
    """Why SQLite refuses the file at ``path``: not SQLite, or SQLite but truncated or damaged."""
    try:
        with open(path, "rb") as file:
            header = file.read(100)
        size = os.path.getsize(path)
    except OSError as error:
        return f"{path}: cannot open: {error.strerror}"
    if not header.startswith(SQLITE_MAGIC):
        return f"{path} is not an agentforum database (not SQLite)"
    restore = "restore it from a backup (a bundle of `agentforum export`)"
    truncated = truncation(header, size)
    if truncated is not None:
        return f"{path} is a truncated SQLite database ({truncated}): {restore}"
    return f"{path} is a damaged SQLite database ({describe(exc)}): {restore}"


def truncation(header: bytes, size: int) -> str | None:
    """How a database file of ``size`` bytes is shorter than its ``header`` says, if it is."""
    if len(header) < 100:
        return f"the file ends within its 100-byte header, after {size} bytes"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count of the header is valid when its change counter is that of the count.
    if pages and header[24:28] == header[92:96] and size < pages * page_size:
        return f"the file holds {size} bytes; its header announces {pages} pages of {page_size}"
    if page_size and size % page_size:
        return f"the file holds {size} bytes, not a whole number of {page_size}-byte pages"
    return None


def read_only_reason(path: str) -> str | None:
    """Why the existing database at ``path`` cannot be written here, or None if it can.

    ``os.access`` answers for the filesystem too: a read-only mount or an immutable file
    cannot be written even by root, who ignores the permission bits.
    """
    if not os.access(path, os.W_OK):
        return "the file cannot be written"
    directory = os.path.dirname(path) or "."
    # A WAL database needs its -wal and -shm files: a directory that cannot be written can
    # hold them already, writable, as a database being written to does.
    if not os.access(directory, os.W_OK) and not all(
        os.access(f"{path}{suffix}", os.W_OK) for suffix in ("-wal", "-shm")
    ):
        return f"its directory, {directory}, cannot be written"
    return None
