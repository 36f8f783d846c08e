"""The SQLite store: the message tree in one file, shared by processes, verified on read."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Final, TypeVar

import anyio.to_thread

from .._exceptions import AmbiguousHashError, IntegrityError, MessageNotFoundError, StoreError
from .._messages import ForwardedMessage, Message, decode_message, encode_message, is_hash
from ._cache import Node, cache_problems, check_entry
from ._memory import check_prefix, check_ref_name, links
from ._protocol import IntegrityProblem, MessageStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

T = TypeVar("T")

#: ``PRAGMA application_id`` of an agentforum database ("AFRM").
APPLICATION_ID: Final = 0x4146524D
#: ``PRAGMA user_version``: the schema version this code writes and reads.
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE messages (
    hash TEXT PRIMARY KEY NOT NULL CHECK (length(hash) = 64),
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    parent TEXT REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED,
    reply_to TEXT REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED,
    original TEXT REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED,
    encoding BLOB NOT NULL
);
CREATE INDEX messages_by_parent ON messages (parent);
CREATE TABLE refs (
    name TEXT PRIMARY KEY NOT NULL,
    hash TEXT NOT NULL REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED
) WITHOUT ROWID;
CREATE TABLE cache (
    call TEXT PRIMARY KEY NOT NULL REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED,
    responses TEXT NOT NULL
) WITHOUT ROWID;
"""

_INSERT: Final = (
    "INSERT OR IGNORE INTO messages (hash, kind, sender, parent, reply_to, original, encoding) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)

# UNION (not UNION ALL): rows are visited once, so even a cycle of tampered parent columns
# ends. The branch is then rebuilt by following the *decoded* parents, never the column.
_ANCESTORS: Final = """
WITH RECURSIVE branch (hash, parent, encoding) AS (
    SELECT hash, parent, encoding FROM messages WHERE hash = ?
    UNION
    SELECT messages.hash, messages.parent, messages.encoding
    FROM messages JOIN branch ON messages.hash = branch.parent
)
SELECT hash, encoding FROM branch
"""


def _row(message: Message) -> tuple[str, str, str, str | None, str | None, str | None, bytes]:
    original = message.original if isinstance(message, ForwardedMessage) else None
    return (
        message.hash,
        message._kind,
        message.sender,
        message.parent,
        message.reply_to,
        original,
        encode_message(message),
    )


#: The children of a message, as ``children`` reads them, through the index of parents;
#: their hashes, as ``verify`` walks them to check that the index leads to every message.
_CHILDREN: Final = "SELECT hash, encoding FROM messages WHERE parent IS ? ORDER BY hash"
_CHILD_HASHES: Final = "SELECT hash FROM messages WHERE parent IS ? ORDER BY hash"

#: The first bytes of every SQLite database file.
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"


def _decode(key: str, encoding: bytes) -> Message:
    """Decode a stored row, refusing one whose fields do not hash to its key.

    The error never quotes the stored bytes: a damaged row may hold anything, escape
    sequences included, and the message is shown to people.
    """
    if not is_hash(key):
        raise IntegrityError("a message is stored under a damaged hash: the file is damaged")
    try:
        message = decode_message(_blob(encoding))
    except (TypeError, ValueError):
        raise IntegrityError(
            f"message {key} is stored corrupted: its stored encoding is not the canonical "
            "encoding of a message"
        ) from None
    if message.hash != key:
        raise IntegrityError(
            f"message {key} is stored with fields that hash to {message.hash}: it was altered"
        )
    return message


def _responses(text: object) -> tuple[str, ...] | None:
    """The hashes of a cache row's ``responses``; ``None`` if it is not a JSON list of them."""
    try:
        responses = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError, RecursionError):
        return None
    if not isinstance(responses, list) or not all(map(is_hash, responses)):
        return None
    return tuple(responses)


def _nodes(connection: sqlite3.Connection) -> Callable[[str], Node | None]:
    """Look up the kind and parent of a stored message (by its columns) in ``connection``."""

    def node(hash: str) -> Node | None:
        row = connection.execute(
            "SELECT kind, parent FROM messages WHERE hash = ?", (hash,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    return node


def _cache_problems(connection: sqlite3.Connection) -> list[IntegrityProblem]:
    """Check every row of the cache table (see ``_cache.entry_problems``)."""
    rows = connection.execute("SELECT call, responses FROM cache").fetchall()
    entries = [(str(call), _responses(responses)) for call, responses in rows]
    # A damaged row's key or columns may hold anything: shown only as the problems allow.
    return [
        _problem(problem.hash, _printable(problem.reason))
        for problem in cache_problems(entries, _nodes(connection))
    ]


def _blob(value: object) -> bytes:
    """The stored encoding ``value``, which a damaged row may hold as text or a number."""
    if not isinstance(value, bytes):
        # Never bytes(value): bytes(2**60) would try to allocate an exbibyte.
        raise TypeError(f"an encoding is stored as bytes, not {type(value).__name__}")
    return value


def _describe(exc: BaseException) -> str:
    """What an error of the sqlite3 module says, without quoting bytes of the file."""
    text = str(exc)
    # sqlite3 quotes the text it could not decode, and fails to decode an error message of
    # SQLite's that quotes bytes of a damaged schema.
    if isinstance(exc, UnicodeDecodeError) or text.startswith("Could not decode to UTF-8"):
        return "it holds text that is not UTF-8 (the file is damaged)"
    if text.startswith("malformed database schema"):
        return "its schema is damaged (the file is damaged)"
    return _printable(text)


def _printable(text: str) -> str:
    """``text`` with every control character escaped: nothing in it can drive a terminal."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _problem(key: object, reason: str) -> IntegrityProblem:
    """The problem ``reason`` of the row stored under ``key``, which is shown only if it is a
    hash: the key of a damaged row may hold anything."""
    if is_hash(key):
        assert isinstance(key, str)
        return IntegrityProblem(key, reason)
    return IntegrityProblem("", f"a row stored under a damaged hash: {reason}")


def _unless_unreadable(
    check: Callable[[sqlite3.Connection], list[IntegrityProblem]], connection: sqlite3.Connection
) -> list[IntegrityProblem]:
    """The problems ``check`` finds, or the one that the file is too damaged to read."""
    try:
        return check(connection)
    except (sqlite3.DatabaseError, UnicodeDecodeError, OSError) as exc:
        reason = exc.strerror or str(exc) if isinstance(exc, OSError) else _describe(exc)
        return [IntegrityProblem("", f"the database cannot be read whole: {reason}")]


def _walk_problems(connection: sqlite3.Connection) -> list[IntegrityProblem]:
    """Compare the messages reached by walking the tree from its roots, as ``children``
    reads them (through the index of parents), with the messages of the table itself."""
    stored = dict(connection.execute("SELECT hash, parent FROM messages NOT INDEXED"))
    reached: set[object] = set()
    misfiled: dict[object, None] = {}
    pending: list[object] = [None]
    while pending:
        parent = pending.pop()
        for (key,) in connection.execute(_CHILD_HASHES, (parent,)):
            if key in stored and stored[key] != parent:
                misfiled[key] = None
            elif key not in reached:
                reached.add(key)
                pending.append(key)
    problems = [
        _problem(key, "the index of parents files it under a message that is not its parent")
        for key in misfiled
    ]
    # A message whose parent is missing is reported as such; those below it are not reached.
    problems.extend(
        _problem(key, "it is stored, but walking the tree from its roots does not reach it")
        for key, parent in stored.items()
        if key not in reached and (parent is None or parent in stored)
    )
    problems.extend(
        _problem(key, "walking the tree from its roots reaches it, but the table does not hold it")
        for key in sorted(reached - stored.keys(), key=repr)
    )
    return problems


def _not_a_database(path: str, exc: BaseException) -> str:
    """Why SQLite refuses the file at ``path``: not SQLite, or SQLite but truncated or damaged."""
    try:
        with open(path, "rb") as file:
            header = file.read(100)
        size = os.path.getsize(path)
    except OSError as error:
        return f"{path}: cannot open: {error.strerror}"
    if not header.startswith(_SQLITE_MAGIC):
        return f"{path} is not an agentforum database (not SQLite)"
    restore = "restore it from a backup (a bundle of `agentforum export`)"
    truncated = _truncation(header, size)
    if truncated is not None:
        return f"{path} is a truncated SQLite database ({truncated}): {restore}"
    return f"{path} is a damaged SQLite database ({_describe(exc)}): {restore}"


def _truncation(header: bytes, size: int) -> str | None:
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


def _read_only_reason(path: str) -> str | None:
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


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """Run the block in one write transaction: committed at the end, rolled back on an error.

    SQLite itself rolls back a transaction that fails on a full disk or an I/O error: then
    there is nothing to roll back, and the error raised is the one that ended it, never a
    "cannot rollback" of a rollback that could not be done.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        raise


#: Seconds a connection waits for another process's lock before "database is locked".
BUSY_TIMEOUT: Final = 30.0


def _while_locked(action: Callable[[], object], timeout: float = BUSY_TIMEOUT) -> None:
    """Run ``action`` (in a worker thread) until SQLite stops answering "database is locked"."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while (locked := _attempt(action)) is not None:
        if time.monotonic() + delay > deadline:
            raise locked
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _attempt(action: Callable[[], object]) -> sqlite3.OperationalError | None:
    """Run ``action``; return the "database is locked" error it raised, if it did."""
    try:
        action()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            return exc
        raise
    return None


class SQLiteStore(MessageStore):
    """A :class:`MessageStore` in an SQLite database file (the stdlib :mod:`sqlite3`).

    Messages are rows holding their canonical encoding (``docs/hashing.md``) and the columns
    that queries need; nothing executable is ever stored. The database runs in WAL mode, so
    any number of processes can read and write the same file at once. Each write is its own
    transaction, committed before the method returns: a message that ``put`` stored
    survives the process being killed. Every message read is checked against its hash.

    The file is opened on first use, in a worker thread (:func:`anyio.to_thread.run_sync`),
    so the store works on asyncio and on Trio; :meth:`aclose` closes it, and the next use
    opens it again. Every method is a checkpoint; a cancelled call still completes the
    database operation it started before the cancellation is delivered.

    A database that cannot be written here (the file, or its directory, is read-only: a
    read-only filesystem, say) is opened read-only: reading works, and every method that
    writes raises :exc:`StoreError`, saying so.

    Args:
        path: The database file.
        create: Create the database if the file does not exist (or is empty). With
            ``False`` a missing file raises :exc:`StoreError` and nothing is created.

    Opening raises :exc:`StoreError` for a file that is not an SQLite database, a damaged or
    truncated one, a database of another application, or a database of a newer schema
    version (in each case the file is left untouched); and when the file cannot be opened
    or created: its directory does not exist or cannot be written, or the disk is full.
    """

    __slots__ = ("_connection", "_create", "_lock", "_path", "_read_only")

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self._path = os.fspath(path)
        self._create = create
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # Why the open database cannot be written here, or None when it can.
        self._read_only: str | None = None

    def __repr__(self) -> str:
        return f"<SQLiteStore {self._path!r}>"

    @property
    def path(self) -> str:
        """The path of the database file."""
        return self._path

    async def open(self) -> None:
        """Open the database now rather than on first use (nothing happens if it is open).

        Raises:
            StoreError: the file is missing (with ``create=False``), cannot be an agentforum
                database (it is left untouched), or cannot be opened or created.
        """
        await self._run(lambda connection: None)

    # -- plumbing -----------------------------------------------------------------------------

    async def _run(self, operation: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        return await anyio.to_thread.run_sync(self._run_sync, operation, write)

    def _run_sync(self, operation: Callable[[sqlite3.Connection], T], write: bool) -> T:
        with self._lock:
            if self._connection is None:
                self._connection = self._open()
            if write and self._read_only is not None:
                raise StoreError(
                    f"{self._path} is read-only here ({self._read_only}): it can be read, "
                    "not written"
                )
            try:
                return operation(self._connection)
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                raise StoreError(f"{self._path}: {_describe(exc)}") from exc

    def _open(self) -> sqlite3.Connection:
        path = self._path
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            missing = "is not a directory" if os.path.exists(directory) else "does not exist"
            raise StoreError(f"{path}: the directory {directory} {missing}")
        exists = os.path.exists(path)
        if not exists and not self._create:
            raise StoreError(f"{path}: no such file")
        if not exists and not os.access(directory, os.W_OK):
            raise StoreError(
                f"{path}: cannot create the database: the directory {directory} cannot be written"
            )
        self._read_only = _read_only_reason(path) if exists else None
        new = not exists or os.path.getsize(path) == 0
        try:
            connection = self._connect()
            try:
                self._check_and_prepare(connection)
            except BaseException:
                connection.close()
                raise
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # the disk is full, say
            doing = "cannot create the database" if new else "cannot open"
            raise StoreError(f"{path}: {doing}: {_describe(exc)}") from exc
        return connection

    def _connect(self) -> sqlite3.Connection:
        """Connect to the file: for reading and writing, or read-only when it must be."""
        path = target = self._path
        if self._read_only is not None:
            target = f"file:{urllib.request.pathname2url(os.path.abspath(path))}?mode=ro"
            # A reader of a WAL database needs its -shm file, which a directory that cannot
            # be written cannot get. Without one, no process is writing to the database
            # (every writer has one): the file alone holds it, unless a -wal file holds
            # changes too, which only a -shm lets SQLite read; an immutable reader, which
            # needs no -shm, would read the file without them.
            if not os.path.exists(f"{path}-shm") and not os.access(
                os.path.dirname(path) or ".", os.W_OK
            ):
                if os.path.exists(f"{path}-wal") and os.path.getsize(f"{path}-wal") > 0:
                    raise StoreError(
                        f"{path} cannot be read here: its write-ahead log, {path}-wal, holds "
                        f"changes that SQLite reads only with a {path}-shm file, which "
                        "cannot be created in this directory (it cannot be written): open "
                        "the database once where it can be written, or copy it with its "
                        "-wal file to such a place"
                    )
                target += "&immutable=1"
        return sqlite3.connect(
            target,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
            uri=self._read_only is not None,
        )

    def _check_and_prepare(self, connection: sqlite3.Connection) -> None:
        path = self._path
        try:
            # One read transaction: another process may be creating the schema right now.
            connection.execute("BEGIN")
            try:
                application_id = connection.execute("PRAGMA application_id").fetchone()[0]
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            finally:
                connection.execute("COMMIT")
        except sqlite3.OperationalError:
            raise  # locked, unreadable, the disk is full: _open reports the cause
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            raise StoreError(_not_a_database(path, exc)) from None
        if application_id == 0 and tables == 0:
            if not self._create:
                raise StoreError(f"{path} is not an agentforum database (it is empty)")
            if self._read_only is not None:
                raise StoreError(
                    f"{path}: cannot create the database: the file is empty and read-only "
                    f"here ({self._read_only})"
                )
        elif application_id != APPLICATION_ID:
            raise StoreError(f"{path} is not an agentforum database")
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer agentforum (schema {version}; this one reads "
                f"{SCHEMA_VERSION}): upgrade agentforum"
            )
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        if application_id == 0:
            # Switching a new file to WAL can fail at once with "database is locked" when
            # another process opens the same new file at the same moment, without waiting
            # for the busy timeout: try again until it is done or the timeout is over.
            _while_locked(lambda: connection.execute("PRAGMA journal_mode = WAL"))
            self._create_schema(connection)
        # WAL with synchronous=NORMAL: a committed transaction survives the process being
        # killed (it is in the WAL file); only a power loss can undo the last ones.
        connection.execute("PRAGMA synchronous = NORMAL")

    @staticmethod
    def _create_schema(connection: sqlite3.Connection) -> None:
        with _transaction(connection):
            # Another process may have created it while this one waited for the lock.
            if connection.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- messages -----------------------------------------------------------------------------

    async def put(self, message: Message) -> None:
        await self.put_many((message,))

    async def put_many(self, messages: Iterable[Message]) -> None:
        rows = {message.hash: _row(message) for message in messages}

        def insert(connection: sqlite3.Connection) -> None:
            try:
                with _transaction(connection):
                    connection.executemany(_INSERT, rows.values())
            except sqlite3.IntegrityError:
                raise self._missing_link(connection, rows) from None

        await self._run(insert, write=True)

    @staticmethod
    def _missing_link(
        connection: sqlite3.Connection, rows: Mapping[str, tuple[object, ...]]
    ) -> MessageNotFoundError:
        for row in rows.values():
            for field, value in zip(("parent", "reply_to", "original"), row[3:6], strict=True):
                if (
                    value is not None
                    and value not in rows
                    and connection.execute(
                        "SELECT 1 FROM messages WHERE hash = ?", (value,)
                    ).fetchone()
                    is None
                ):
                    return MessageNotFoundError(f"{field} {value} is not in the store")
        return MessageNotFoundError("a message links to one that is not in the store")

    async def get(self, hash: str) -> Message:
        def select(connection: sqlite3.Connection) -> Message:
            row = connection.execute(
                "SELECT encoding FROM messages WHERE hash = ?", (hash,)
            ).fetchone()
            if row is None:
                raise MessageNotFoundError(f"message {hash} is not in the store")
            return _decode(hash, row[0])

        return await self._run(select)

    async def resolve(self, hash_or_prefix: str) -> Message:
        prefix = check_prefix(hash_or_prefix)

        def select(connection: sqlite3.Connection) -> Message:
            rows = connection.execute(
                "SELECT hash, encoding FROM messages WHERE hash >= ? AND hash < ? LIMIT 2",
                (prefix, prefix + "g"),
            ).fetchall()
            if not rows:
                raise MessageNotFoundError(f"no message hash starts with {prefix}")
            if len(rows) > 1:
                raise AmbiguousHashError(f"more than one message hash starts with {prefix}")
            return _decode(*rows[0])

        return await self._run(select)

    async def ancestors(self, hash: str) -> list[Message]:
        def select(connection: sqlite3.Connection) -> list[Message]:
            encodings = dict(connection.execute(_ANCESTORS, (hash,)).fetchall())
            if not encodings:
                raise MessageNotFoundError(f"message {hash} is not in the store")
            branch: list[Message] = []
            key: str | None = hash
            while key is not None:
                if key not in encodings:
                    raise IntegrityError(
                        f"the branch of {hash} is broken at {branch[-1].hash}: its stored "
                        "parent column disagrees with its fields"
                    )
                message = _decode(key, encodings[key])
                branch.append(message)
                key = message.parent
            branch.reverse()
            return branch

        return await self._run(select)

    async def children(self, hash: str | None) -> list[Message]:
        def select(connection: sqlite3.Connection) -> list[Message]:
            rows = connection.execute(_CHILDREN, (hash,)).fetchall()
            children = [_decode(key, encoding) for key, encoding in rows]
            for child in children:
                if child.parent != hash:
                    raise IntegrityError(
                        f"message {child.hash} is stored under parent {hash}, "
                        f"but its fields name {child.parent}"
                    )
            return children

        return await self._run(select)

    # -- refs ---------------------------------------------------------------------------------

    async def set_ref(self, name: str, hash: str) -> None:
        check_ref_name(name)

        def upsert(connection: sqlite3.Connection) -> None:
            if connection.execute("SELECT 1 FROM messages WHERE hash = ?", (hash,)).fetchone():
                connection.execute(
                    "INSERT INTO refs (name, hash) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash",
                    (name, hash),
                )
            else:
                raise MessageNotFoundError(f"message {hash} is not in the store")

        await self._run(upsert, write=True)

    async def get_ref(self, name: str) -> str | None:
        check_ref_name(name)

        def select(connection: sqlite3.Connection) -> str | None:
            row = connection.execute("SELECT hash FROM refs WHERE name = ?", (name,)).fetchone()
            return None if row is None else str(row[0])

        return await self._run(select)

    async def delete_ref(self, name: str) -> None:
        check_ref_name(name)

        def delete(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM refs WHERE name = ?", (name,))

        await self._run(delete, write=True)

    async def refs(self) -> Mapping[str, str]:
        def select(connection: sqlite3.Connection) -> dict[str, str]:
            return dict(connection.execute("SELECT name, hash FROM refs ORDER BY name"))

        return await self._run(select)

    # -- the cache index ----------------------------------------------------------------------

    async def get_cached(self, call_hash: str) -> Sequence[str] | None:
        def select(connection: sqlite3.Connection) -> tuple[str, ...] | None:
            row = connection.execute(
                "SELECT responses FROM cache WHERE call = ?", (call_hash,)
            ).fetchone()
            if row is None:
                return None
            responses = _responses(row[0])
            if responses is None:
                raise IntegrityError(
                    f"the cache entry of call {call_hash} is corrupted: its responses are "
                    "not a JSON list of message hashes"
                )
            return responses

        return await self._run(select)

    async def put_cached(self, call_hash: str, response_hashes: Sequence[str]) -> None:
        responses = list(response_hashes)

        def upsert(connection: sqlite3.Connection) -> None:
            check_entry(call_hash, responses, _nodes(connection))
            connection.execute(
                "INSERT INTO cache (call, responses) VALUES (?, ?) "
                "ON CONFLICT (call) DO UPDATE SET responses = excluded.responses",
                (call_hash, json.dumps(responses)),
            )

        await self._run(upsert, write=True)

    # -- integrity ----------------------------------------------------------------------------

    async def verify(self) -> list[IntegrityProblem]:
        """Check the file, every message, link, ref and cache entry; return the problems.

        Besides what :meth:`MessageStore.verify` checks, SQLite's own ``PRAGMA
        integrity_check`` examines every page, record and index of the file, and the
        walk from the roots (the index of parents that :meth:`children` reads) must reach
        exactly the messages of the table. A problem of the file, not of one message, has
        an empty ``hash``. A file too damaged to read whole gives a problem that says so.
        """
        return await self._run(self._check)

    def _check(self, connection: sqlite3.Connection) -> list[IntegrityProblem]:
        checks = (self._file_problems, self._verify, _walk_problems)
        return [problem for check in checks for problem in _unless_unreadable(check, connection)]

    def _file_problems(self, connection: sqlite3.Connection) -> list[IntegrityProblem]:
        """What is wrong with the file: cut short, or damaged pages, records, indexes."""
        problems = []
        # A checkpoint makes the file as long as the pages it copies before it writes the
        # header that counts them: a file shorter than its header says was cut short.
        with open(self._path, "rb") as file:
            truncated = _truncation(file.read(100), os.fstat(file.fileno()).st_size)
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
                IntegrityProblem("", f"SQLite's integrity check: {_printable(line)}")
                for line in found
            )
        return problems

    @staticmethod
    def _verify(connection: sqlite3.Connection) -> list[IntegrityProblem]:
        problems: list[IntegrityProblem] = []
        known = {key for (key,) in connection.execute("SELECT hash FROM messages")}
        rows = connection.execute(
            "SELECT hash, kind, sender, parent, reply_to, original, encoding FROM messages"
        )
        for key, *columns, encoding in rows:
            try:
                message = decode_message(_blob(encoding))
            except (TypeError, ValueError):
                problems.append(_problem(key, "its encoding is corrupted (not a message's)"))
                continue
            if message.hash != key:
                problems.append(_problem(key, "its fields do not hash to its hash"))
            elif list(_row(message)[1:6]) != columns:
                problems.append(_problem(key, "its columns disagree with its encoding"))
            problems.extend(
                _problem(key, f"its {field} {value} is not in the store")
                for field, value in links(message)
                if value not in known
            )
        problems.extend(
            _problem(key, f"ref {name!r} points at a message that is not in the store")
            for name, key in connection.execute("SELECT name, hash FROM refs")
            if key not in known
        )
        problems.extend(_cache_problems(connection))
        return problems

    async def aclose(self) -> None:
        def close(_: object) -> None:
            with self._lock:
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None

        await anyio.to_thread.run_sync(close, None)
