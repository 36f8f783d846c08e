"""The SQLite store: the message tree in one file, shared by processes, verified on read."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Final, TypeVar

import anyio.to_thread

from .._exceptions import AmbiguousHashError, IntegrityError, MessageNotFoundError, StoreError
from .._messages import ForwardedMessage, Message, decode_message, encode_message, is_hash
from ._cache import Node, cache_problems, check_entry
from ._memory import check_prefix, check_ref_name, links
from ._protocol import IntegrityProblem, MessageStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

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


def _decode(key: str, encoding: bytes) -> Message:
    """Decode a stored row, refusing one whose fields do not hash to its key."""
    try:
        message = decode_message(bytes(encoding))
    except (TypeError, ValueError) as exc:
        raise IntegrityError(f"message {key} is stored corrupted: {exc}") from None
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
    return cache_problems(entries, _nodes(connection))


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

    Args:
        path: The database file.
        create: Create the database if the file does not exist (or is empty). With
            ``False`` a missing file raises :exc:`StoreError` and nothing is created.

    Opening raises :exc:`StoreError` for a file that is not an SQLite database, a database
    of another application, or a database of a newer schema version; in each case the file
    is left untouched.
    """

    __slots__ = ("_connection", "_create", "_lock", "_path")

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self._path = os.fspath(path)
        self._create = create
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SQLiteStore {self._path!r}>"

    @property
    def path(self) -> str:
        """The path of the database file."""
        return self._path

    async def open(self) -> None:
        """Open the database now rather than on first use (nothing happens if it is open).

        Raises:
            StoreError: the file is missing (with ``create=False``) or cannot be an
                agentforum database; it is left untouched.
        """
        await self._run(lambda connection: None)

    # -- plumbing -----------------------------------------------------------------------------

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._run_sync, operation)

    def _run_sync(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._connection is None:
                self._connection = self._open()
            try:
                return operation(self._connection)
            except sqlite3.Error as exc:
                raise StoreError(f"{self._path}: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        path = self._path
        exists = os.path.exists(path)
        if not exists and not self._create:
            raise StoreError(f"{path}: no such file")
        try:
            connection = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open: {exc}") from None
        try:
            self._check_and_prepare(connection)
        except BaseException:
            connection.close()
            raise
        return connection

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
        except sqlite3.OperationalError as exc:  # locked, unreadable, ...
            raise StoreError(f"{path}: cannot open: {exc}") from None
        except sqlite3.DatabaseError:
            raise StoreError(f"{path} is not an agentforum database (not SQLite)") from None
        if application_id == 0 and tables == 0:
            if not self._create:
                raise StoreError(f"{path} is not an agentforum database (it is empty)")
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
        connection.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created it while this one waited for the lock.
            if connection.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    # -- messages -----------------------------------------------------------------------------

    async def put(self, message: Message) -> None:
        await self.put_many((message,))

    async def put_many(self, messages: Iterable[Message]) -> None:
        rows = {message.hash: _row(message) for message in messages}

        def insert(connection: sqlite3.Connection) -> None:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(_INSERT, rows.values())
                connection.execute("COMMIT")
            except sqlite3.IntegrityError:
                connection.execute("ROLLBACK")
                raise self._missing_link(connection, rows) from None
            except BaseException:
                connection.execute("ROLLBACK")
                raise

        await self._run(insert)

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
            rows = connection.execute(
                "SELECT hash, encoding FROM messages WHERE parent IS ? ORDER BY hash", (hash,)
            ).fetchall()
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

        await self._run(upsert)

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

        await self._run(delete)

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

        await self._run(upsert)

    # -- integrity ----------------------------------------------------------------------------

    async def verify(self) -> list[IntegrityProblem]:
        return await self._run(self._verify)

    @staticmethod
    def _verify(connection: sqlite3.Connection) -> list[IntegrityProblem]:
        problems: list[IntegrityProblem] = []
        known = {key for (key,) in connection.execute("SELECT hash FROM messages")}
        rows = connection.execute(
            "SELECT hash, kind, sender, parent, reply_to, original, encoding FROM messages"
        )
        for key, *columns, encoding in rows:
            try:
                message = decode_message(bytes(encoding))
            except (TypeError, ValueError) as exc:
                problems.append(IntegrityProblem(key, f"its encoding is corrupted: {exc}"))
                continue
            if message.hash != key:
                problems.append(IntegrityProblem(key, "its fields do not hash to its hash"))
            elif list(_row(message)[1:6]) != columns:
                problems.append(IntegrityProblem(key, "its columns disagree with its encoding"))
            problems.extend(
                IntegrityProblem(key, f"its {field} {value} is not in the store")
                for field, value in links(message)
                if value not in known
            )
        problems.extend(
            IntegrityProblem(key, f"ref {name!r} points at a message that is not in the store")
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
