"""The SQLite store: the message tree in one file, shared by processes, verified on read."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio.to_thread

from .._exceptions import AmbiguousHashError, IntegrityError, MessageNotFoundError, StoreError
from .._hashing import FORMAT, canonical_json, hash_content
from .._messages import _KINDS, CallMessage, ErrorMessage, ForwardedMessage, Message, is_hash
from ._cache import Node, cache_problems, check_entry
from ._memory import check_forward, check_prefix, check_ref_name, has_content, links
from ._protocol import IntegrityProblem, MessageStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

T = TypeVar("T")

#: ``PRAGMA application_id`` of an agentforum database ("AFRM").
APPLICATION_ID: Final = 0x4146524D
#: ``PRAGMA user_version``: the schema version this code writes and reads. Schema 2 holds
#: messages of format ``agentforum/2``; schema 1 held format ``agentforum/1``.
SCHEMA_VERSION: Final = 2
#: The message format of each schema version (for the error that refuses an older database).
_SCHEMA_FORMATS: Final = {1: "agentforum/1", 2: FORMAT}

# Hashes are stored as their 32 bytes. A message row holds its fields, not its document:
# the document names the content and the messages it links to by their hex hashes, which
# the columns already hold, so it is rebuilt (and its hash checked) on every read instead.
# Each content is one row of `contents`, however many messages name it.
_SCHEMA: Final = """
CREATE TABLE contents (
    hash BLOB PRIMARY KEY NOT NULL CHECK (length(hash) = 32),
    text BLOB NOT NULL
);
CREATE TABLE messages (
    hash BLOB PRIMARY KEY NOT NULL CHECK (length(hash) = 32),
    kind TEXT NOT NULL,
    parent BLOB REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED,
    reply_to BLOB REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED,
    original BLOB REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED,
    content BLOB REFERENCES contents (hash) DEFERRABLE INITIALLY DEFERRED,
    sender TEXT,
    metadata TEXT NOT NULL,
    receiver TEXT,
    kwargs TEXT,
    error_type TEXT
) WITHOUT ROWID;
CREATE INDEX messages_by_parent ON messages (parent);
CREATE TABLE refs (
    name TEXT PRIMARY KEY NOT NULL,
    hash BLOB NOT NULL REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED
) WITHOUT ROWID;
CREATE TABLE cache (
    call BLOB PRIMARY KEY NOT NULL REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED,
    responses TEXT NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS: Final = (
    "hash, kind, parent, reply_to, original, content, sender, metadata, receiver, kwargs, "
    "error_type"
)
_INSERT: Final = (
    f"INSERT OR IGNORE INTO messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_CONTENT: Final = "INSERT OR IGNORE INTO contents (hash, text) VALUES (?, ?)"
# A message row with its content's row: what _decode takes.
_SELECT: Final = (
    "SELECT "
    + ", ".join(f"messages.{column}" for column in _COLUMNS.split(", "))
    + ", contents.hash, contents.text "
    "FROM messages LEFT JOIN contents ON contents.hash = messages.content"
)

# UNION (not UNION ALL): rows are visited once, so even a cycle of tampered parent columns
# ends. The branch is then rebuilt by following the *decoded* parents, never the column.
_ANCESTORS: Final = f"""
WITH RECURSIVE branch (hash, parent) AS (
    SELECT hash, parent FROM messages WHERE hash = ?
    UNION
    SELECT messages.hash, messages.parent
    FROM messages JOIN branch ON messages.hash = branch.parent
)
{_SELECT} JOIN branch ON branch.hash = messages.hash
"""

Row = tuple[object, ...]


def _key(hash: str) -> bytes:
    """A hash as the store keeps it: its 32 bytes."""
    return bytes.fromhex(hash)


def _link(hash: str | None) -> bytes | None:
    return None if hash is None else bytes.fromhex(hash)


def _hex(value: object) -> str | None:
    """A stored hash as 64 hex characters (``None`` stays ``None``).

    A value that is not bytes (a corrupted column) is returned as text, which names no
    message, so that what reads it reports the damage instead of failing on it.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.hex()
    return repr(value)


#: The content of a call: none, so the empty text (what a forward of a call holds).
_NO_CONTENT: Final = hash_content("")


def _content_of(column: object) -> str | None:
    """The content hash of a message by its ``content`` column (a call's is the empty text's)."""
    return _NO_CONTENT if column is None else _hex(column)


def _prefix_range(prefix: str) -> tuple[bytes, bytes | None]:
    """The keys of the hashes that start with the hex ``prefix``: ``low <= key < high``."""
    shift = 4 * (64 - len(prefix))
    low = int(prefix, 16) << shift
    high = (int(prefix, 16) + 1) << shift
    return low.to_bytes(32, "big"), high.to_bytes(32, "big") if high < 1 << 256 else None


def _row(message: Message) -> Row:
    """The ``messages`` row of ``message``."""
    original = message.original if isinstance(message, ForwardedMessage) else None
    call = isinstance(message, CallMessage)
    return (
        _key(message.hash),
        message._kind,
        _link(message.parent),
        _link(message.reply_to),
        _link(original),
        None if call else _key(message.content_hash),
        None if call else message.sender,
        canonical_json(message.metadata).decode("utf-8"),
        message.receiver if isinstance(message, CallMessage) else None,
        canonical_json(message.kwargs).decode("utf-8")
        if isinstance(message, CallMessage)
        else None,
        message.error_type if isinstance(message, ErrorMessage) else None,
    )


def _decode(row: Row) -> Message:
    """Rebuild the message of a stored row, refusing one that does not hash to its key.

    ``row`` is a row of :data:`_SELECT`: the message's columns, then its content's hash and
    text (``None`` when the content row is missing).
    """
    key = _hex(row[0])
    (
        _,
        kind,
        parent,
        reply_to,
        original,
        content,
        sender,
        metadata,
        receiver,
        kwargs,
        error_type,
        content_key,
        text,
    ) = row
    try:
        cls = _KINDS[kind]  # type: ignore[index]
        fields: dict[str, Any] = {
            "metadata": _load_json(metadata),
            "parent": _hex(parent),
            "reply_to": _hex(reply_to),
        }
        if cls is CallMessage:
            fields.update(receiver=receiver, kwargs=_load_json(kwargs))
            message: Message = cls(**fields)
        else:
            if content_key is None:
                raise IntegrityError(f"message {key}: its content {_hex(content)} is missing")
            content_hash = _hex(content_key)
            assert content_hash is not None
            if not isinstance(text, bytes):
                raise IntegrityError(f"content {content_hash} is stored corrupted: not bytes")
            try:
                decoded = text.decode("utf-8")
            except UnicodeDecodeError:
                raise IntegrityError(
                    f"content {content_hash} is stored corrupted: not UTF-8 text"
                ) from None
            if hash_content(decoded) != content_hash:
                raise IntegrityError(
                    f"content {content_hash} is stored with a text that hashes otherwise: "
                    "it was altered"
                )
            fields.update(content=decoded, sender=sender)
            if cls is ForwardedMessage:
                fields["original"] = _hex(original)
            elif cls is ErrorMessage:
                fields["error_type"] = error_type
            message = cls(**fields)
            object.__setattr__(message, "content_hash", content_hash)
    except IntegrityError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"message {key} is stored corrupted: {exc}") from None
    if message.hash != key:
        raise IntegrityError(
            f"message {key} is stored with fields that hash to {message.hash}: it was altered"
        )
    return message


def _content_hash_of(text: bytes) -> str | None:
    """The hash of a stored content's bytes, or ``None`` if they are not UTF-8 text."""
    try:
        return hash_content(text.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def _load_json(text: object) -> object:
    """A metadata or kwargs column, parsed (a corrupt one raises ValueError)."""
    if not isinstance(text, (str, bytes)):
        raise ValueError("a JSON column holds no text")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("a JSON column is nested too deeply") from None


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
        if not is_hash(hash):
            return None
        row = connection.execute(
            "SELECT kind, parent FROM messages WHERE hash = ?", (_key(hash),)
        ).fetchone()
        return None if row is None else (row[0], _hex(row[1]))

    return node


def _cache_problems(connection: sqlite3.Connection) -> list[IntegrityProblem]:
    """Check every row of the cache table (see ``_cache.entry_problems``)."""
    rows = connection.execute("SELECT call, responses FROM cache").fetchall()
    entries = [(str(_hex(call)), _responses(responses)) for call, responses in rows]
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
        elif version < SCHEMA_VERSION:
            written = _SCHEMA_FORMATS.get(version, f"schema {version}")
            raise StoreError(
                f"{path} holds messages of format {written}: this agentforum reads "
                f"{FORMAT} only (schema {SCHEMA_VERSION}); no released version wrote "
                f"{written}, so there is nothing to convert: create the database again"
            )
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
        batch = {message.hash: message for message in messages}
        rows = [_row(message) for message in batch.values()]
        contents = {
            message.content_hash: message.content
            for message in batch.values()
            if has_content(message)
        }
        content_rows = [(_key(key), text.encode("utf-8")) for key, text in contents.items()]
        forwards = [message for message in batch.values() if isinstance(message, ForwardedMessage)]

        def insert(connection: sqlite3.Connection) -> None:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(_INSERT_CONTENT, content_rows)
                connection.executemany(_INSERT, rows)
                for forward in forwards:
                    self._check_forward(connection, forward, batch)
                connection.execute("COMMIT")
            except sqlite3.IntegrityError:
                connection.execute("ROLLBACK")
                missing = self._missing_link(connection, batch)
                raise missing or MessageNotFoundError(
                    "a message links to one that is not in the store"
                ) from None
            except BaseException:
                connection.execute("ROLLBACK")
                raise

        await self._run(insert)

    @classmethod
    def _check_forward(
        cls,
        connection: sqlite3.Connection,
        forward: ForwardedMessage,
        batch: Mapping[str, Message],
    ) -> None:
        """Refuse a forward whose content is not that of its original (stored, or being so).

        A link missing from the batch is reported first, as the commit would have.
        """
        row = connection.execute(
            "SELECT content FROM messages WHERE hash = ?", (_key(forward.original),)
        ).fetchone()
        if row is not None and _content_of(row[0]) != forward.content_hash:
            missing = cls._missing_link(connection, batch)
            if missing is not None:
                raise missing
            raise ValueError(
                f"forward {forward.hash} does not hold the content of its original "
                f"{forward.original}: a forward's content is its original's"
            )

    @staticmethod
    def _missing_link(
        connection: sqlite3.Connection, batch: Mapping[str, Message]
    ) -> MessageNotFoundError | None:
        """The error for the first link of ``batch`` to a message neither stored nor in it."""
        for message in batch.values():
            for field, value in links(message):
                if (
                    value not in batch
                    and connection.execute(
                        "SELECT 1 FROM messages WHERE hash = ?", (_key(value),)
                    ).fetchone()
                    is None
                ):
                    return MessageNotFoundError(f"{field} {value} is not in the store")
        return None

    async def get(self, hash: str) -> Message:
        def select(connection: sqlite3.Connection) -> Message:
            row = connection.execute(f"{_SELECT} WHERE messages.hash = ?", (_key(hash),)).fetchone()
            if row is None:
                raise MessageNotFoundError(f"message {hash} is not in the store")
            return _decode(row)

        if not is_hash(hash):
            raise MessageNotFoundError(f"message {hash!r} is not in the store")
        return await self._run(select)

    async def resolve(self, hash_or_prefix: str) -> Message:
        prefix = check_prefix(hash_or_prefix)
        low, high = _prefix_range(prefix)

        def select(connection: sqlite3.Connection) -> Message:
            if high is None:
                query = f"{_SELECT} WHERE messages.hash >= ? ORDER BY messages.hash LIMIT 2"
                rows = connection.execute(query, (low,)).fetchall()
            else:
                query = (
                    f"{_SELECT} WHERE messages.hash >= ? AND messages.hash < ? "
                    "ORDER BY messages.hash LIMIT 2"
                )
                rows = connection.execute(query, (low, high)).fetchall()
            if not rows:
                raise MessageNotFoundError(f"no message hash starts with {prefix}")
            if len(rows) > 1:
                raise AmbiguousHashError(f"more than one message hash starts with {prefix}")
            return _decode(rows[0])

        return await self._run(select)

    async def ancestors(self, hash: str) -> list[Message]:
        def select(connection: sqlite3.Connection) -> list[Message]:
            rows = {_hex(row[0]): row for row in connection.execute(_ANCESTORS, (_key(hash),))}
            if not rows:
                raise MessageNotFoundError(f"message {hash} is not in the store")
            branch: list[Message] = []
            key: str | None = hash
            while key is not None:
                if key not in rows:
                    raise IntegrityError(
                        f"the branch of {hash} is broken at {branch[-1].hash}: its stored "
                        "parent column disagrees with its fields"
                    )
                message = _decode(rows[key])
                branch.append(message)
                key = message.parent
            branch.reverse()
            return branch

        if not is_hash(hash):
            raise MessageNotFoundError(f"message {hash!r} is not in the store")
        return await self._run(select)

    async def children(self, hash: str | None) -> list[Message]:
        def select(connection: sqlite3.Connection) -> list[Message]:
            rows = connection.execute(
                f"{_SELECT} WHERE messages.parent IS ? ORDER BY messages.hash",
                (None if hash is None else _key(hash),),
            ).fetchall()
            children = [_decode(row) for row in rows]
            for child in children:
                if child.parent != hash:
                    raise IntegrityError(
                        f"message {child.hash} is stored under parent {hash}, "
                        f"but its fields name {child.parent}"
                    )
            return children

        if hash is not None and not is_hash(hash):
            return []
        return await self._run(select)

    # -- refs ---------------------------------------------------------------------------------

    async def set_ref(self, name: str, hash: str) -> None:
        check_ref_name(name)
        if not is_hash(hash):
            raise MessageNotFoundError(f"message {hash!r} is not in the store")
        key = _key(hash)

        def upsert(connection: sqlite3.Connection) -> None:
            if connection.execute("SELECT 1 FROM messages WHERE hash = ?", (key,)).fetchone():
                connection.execute(
                    "INSERT INTO refs (name, hash) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash",
                    (name, key),
                )
            else:
                raise MessageNotFoundError(f"message {hash} is not in the store")

        await self._run(upsert)

    async def get_ref(self, name: str) -> str | None:
        check_ref_name(name)

        def select(connection: sqlite3.Connection) -> str | None:
            row = connection.execute("SELECT hash FROM refs WHERE name = ?", (name,)).fetchone()
            return None if row is None else _hex(row[0])

        return await self._run(select)

    async def delete_ref(self, name: str) -> None:
        check_ref_name(name)

        def delete(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM refs WHERE name = ?", (name,))

        await self._run(delete)

    async def refs(self) -> Mapping[str, str]:
        def select(connection: sqlite3.Connection) -> dict[str, str]:
            rows = connection.execute("SELECT name, hash FROM refs ORDER BY name")
            return {name: str(_hex(key)) for name, key in rows}

        return await self._run(select)

    # -- the cache index ----------------------------------------------------------------------

    async def get_cached(self, call_hash: str) -> Sequence[str] | None:
        if not is_hash(call_hash):
            return None
        key = _key(call_hash)

        def select(connection: sqlite3.Connection) -> tuple[str, ...] | None:
            row = connection.execute(
                "SELECT responses FROM cache WHERE call = ?", (key,)
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
                (_key(call_hash), json.dumps(responses)),
            )

        await self._run(upsert)

    # -- integrity ----------------------------------------------------------------------------

    async def verify(self) -> list[IntegrityProblem]:
        return await self._run(self._verify)

    @staticmethod
    def _verify(connection: sqlite3.Connection) -> list[IntegrityProblem]:
        problems: list[IntegrityProblem] = []
        # Every message's content column, by hex hash: what forwards are checked against.
        contents_of = {
            _hex(key): _content_of(content)
            for key, content in connection.execute("SELECT hash, content FROM messages")
        }
        for row in connection.execute(_SELECT):
            key = str(_hex(row[0]))
            try:
                message = _decode(row)
            except IntegrityError as exc:
                problems.append(IntegrityProblem(key, str(exc)))
                continue
            if _row(message) != row[:11]:
                problems.append(IntegrityProblem(key, "its columns disagree with its fields"))
            problems.extend(
                IntegrityProblem(key, f"its {field} {value} is not in the store")
                for field, value in links(message)
                if value not in contents_of
            )
            if (
                isinstance(message, ForwardedMessage)
                and message.original in contents_of
                and contents_of[message.original] != message.content_hash
            ):
                problems.append(
                    IntegrityProblem(key, "its content is not the content of its original")
                )
        for content_key, text in connection.execute("SELECT hash, text FROM contents"):
            key = str(_hex(content_key))
            if not isinstance(text, bytes) or _content_hash_of(text) != key:
                problems.append(IntegrityProblem(key, "a content does not hash to its hash"))
        problems.extend(
            IntegrityProblem(str(_hex(key)), "a content is referenced by no message")
            for (key,) in connection.execute(
                "SELECT hash FROM contents WHERE NOT EXISTS "
                "(SELECT 1 FROM messages WHERE messages.content = contents.hash)"
            )
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
