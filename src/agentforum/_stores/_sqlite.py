"""The SQLite store: the message tree in one file, shared by processes, verified on read.

Its schema and how a message is a row are in ``_sqlite_rows.py``; what it checks and how it
reports a damaged file, in ``_sqlite_checks.py``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import time
import urllib.request
import weakref
from typing import TYPE_CHECKING, Final, TypeVar, cast

import anyio

from .._exceptions import IntegrityError, MessageNotFoundError, StoreError
from .._hashing import FORMAT
from .._messages import (
    ForwardedMessage,
    Message,
    check_prefix,
    check_ref_name,
    has_content,
    is_hash,
    links,
)
from . import _sqlite_checks as checks
from . import _sqlite_rows as rows
from ._cache import check_entry
from ._claims import check_call, check_claim, check_seconds
from ._garbage import DEFAULT_GRACE, GarbageReport, check_grace, collect_sqlite
from ._protocol import Claim, ClaimingStore, IntegrityProblem, MessageStore
from ._refs import ANY, check_current, check_expected
from ._sqlite_worker import Worker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    from ._refs import Expected
    from ._sqlite_worker import Put

T = TypeVar("T")

#: Kept here too, where they were first defined: the schema's marks (see ``_sqlite_rows``).
APPLICATION_ID: Final = rows.APPLICATION_ID
SCHEMA_VERSION: Final = rows.SCHEMA_VERSION


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """Run the block in one write transaction: committed at the end, rolled back on an error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        _roll_back(connection)
        raise


def _roll_back(connection: sqlite3.Connection) -> None:
    """Roll back the transaction that failed, if SQLite has not.

    SQLite itself rolls back a transaction that fails on a full disk or an I/O error: then
    there is nothing to roll back, and the error raised is the one that ended it, never a
    "cannot rollback" of a rollback that could not be done.
    """
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


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


def _write(connection: sqlite3.Connection, puts: Sequence[Put]) -> None:
    """Write the puts in one transaction: every row first, then the checks that need them.

    The transaction as :func:`_transaction` makes it, without a generator: every put runs
    this.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        for put in puts:
            put.insert(connection)
        for put in puts:
            put.check(connection)
        connection.execute("COMMIT")
    except BaseException:
        _roll_back(connection)
        raise


def _add_write_times(connection: sqlite3.Connection) -> None:
    """Add the column of write times to a database that lacks it (see ``_sqlite_rows``)."""
    try:
        _while_locked(lambda: connection.execute(rows.ADD_WRITE_TIMES))
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):
            raise  # another process added it first: nothing to do


class _Put:
    """The rows of one :meth:`SQLiteStore.put_many`, made in the caller's task, for the
    store's thread to write: alone, or in a transaction shared with other puts."""

    __slots__ = ("batch", "content_rows", "forwards", "message_rows")

    def __init__(self, messages: Iterable[Message]) -> None:
        self.batch = batch = {message.hash: message for message in messages}
        self.message_rows = [rows.row(message) for message in batch.values()]
        contents = {
            message.content_hash: message.content
            for message in batch.values()
            if has_content(message)
        }
        self.content_rows = [
            (rows.key(key), text.encode("utf-8")) for key, text in contents.items()
        ]
        self.forwards = [
            message for message in batch.values() if isinstance(message, ForwardedMessage)
        ]

    def insert(self, connection: sqlite3.Connection) -> None:
        connection.executemany(rows.INSERT_CONTENT, self.content_rows)
        connection.executemany(rows.INSERT, self.message_rows)

    def check(self, connection: sqlite3.Connection) -> None:
        for forward in self.forwards:
            self._check_forward(connection, forward)

    def write_alone(self, connection: sqlite3.Connection) -> None:
        """Write the rows in a transaction of their own, saying which link is missing."""
        try:
            _write(connection, (self,))
        except sqlite3.IntegrityError:
            raise self._missing_link(connection) or MessageNotFoundError(
                "a message links to one that is not in the store"
            ) from None

    def _check_forward(self, connection: sqlite3.Connection, forward: ForwardedMessage) -> None:
        """Refuse a forward whose content is not its original's (stored, or being stored).

        A link of the batch to a message that is not stored is reported first, as the
        commit would have, and as :class:`MemoryStore` does.
        """
        found = connection.execute(
            "SELECT content FROM messages WHERE hash = ?", (rows.key(forward.original),)
        ).fetchone()
        if found is not None and rows.content_of(found[0]) != forward.content_hash:
            missing = self._missing_link(connection)
            if missing is not None:
                raise missing
            raise ValueError(
                f"forward {forward.hash} does not hold the content of its original "
                f"{forward.original}: a forward's content is its original's"
            )

    def _missing_link(self, connection: sqlite3.Connection) -> MessageNotFoundError | None:
        """The error for the first link of the batch to a message neither stored nor in it."""
        batch = self.batch
        for message in batch.values():
            for field, value in links(message):
                if (
                    value not in batch
                    and connection.execute(
                        "SELECT 1 FROM messages WHERE hash = ?", (rows.key(value),)
                    ).fetchone()
                    is None
                ):
                    return MessageNotFoundError(f"{field} {value} is not in the store")
        return None


class _Database:
    """The file of an :class:`SQLiteStore` and its connection, which only the store's
    thread (``_sqlite_worker``) uses: opened on the first operation, closed by ``close``."""

    __slots__ = ("_connection", "_create", "_path", "_read_only")

    def __init__(self, path: str, *, create: bool) -> None:
        self._path = path
        self._create = create
        self._connection: sqlite3.Connection | None = None
        # Why the open database cannot be written here, or None when it can.
        self._read_only: str | None = None

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    def run(self, operation: Callable[[sqlite3.Connection], T], write: bool) -> T:
        if self._connection is None:
            self._connection = self._open()
        if write and self._read_only is not None:
            raise StoreError(
                f"{self._path} is read-only here ({self._read_only}): it can be read, not written"
            )
        try:
            return operation(self._connection)
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise StoreError(f"{self._path}: {checks.describe(exc)}") from exc

    def run_together(self, puts: Sequence[Put]) -> None:
        self.run(lambda connection: _write(connection, puts), write=True)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

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
        self._read_only = checks.read_only_reason(path) if exists else None
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
            raise StoreError(f"{path}: {doing}: {checks.describe(exc)}") from exc
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
            raise StoreError(checks.not_a_database(path, exc)) from None
        if application_id == 0 and tables == 0:
            if not self._create:
                raise StoreError(f"{path} is not an agentforum database (it is empty)")
            if self._read_only is not None:
                raise StoreError(
                    f"{path}: cannot create the database: the file is empty and read-only "
                    f"here ({self._read_only})"
                )
        elif application_id != rows.APPLICATION_ID:
            raise StoreError(f"{path} is not an agentforum database")
        elif version < rows.SCHEMA_VERSION:
            written = rows.SCHEMA_FORMATS.get(version, f"schema {version}")
            raise StoreError(
                f"{path} holds messages of format {written}, which this agentforum does not "
                f"read (it reads {FORMAT}, schema {rows.SCHEMA_VERSION}); no released version "
                f"wrote {written}: create the database again"
            )
        elif version > rows.SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer agentforum (schema {version}; this one reads "
                f"{rows.SCHEMA_VERSION}): upgrade agentforum"
            )
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        if application_id == 0:
            # Switching a new file to WAL can fail at once with "database is locked" when
            # another process opens the same new file at the same moment, without waiting
            # for the busy timeout: try again until it is done or the timeout is over.
            _while_locked(lambda: connection.execute("PRAGMA journal_mode = WAL"))
            self._create_schema(connection)
        elif (
            self._read_only is None
            and not connection.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'claims'"
            ).fetchone()
        ):
            connection.execute(rows.CLAIMS)  # a database written before claims existed
        # WAL with synchronous=NORMAL: a committed transaction survives the process being
        # killed (it is in the WAL file); only a power loss can undo the last ones.
        connection.execute("PRAGMA synchronous = NORMAL")
        if self._read_only is None and not rows.has_write_times(connection):
            _add_write_times(connection)

    @staticmethod
    def _create_schema(connection: sqlite3.Connection) -> None:
        with _transaction(connection):
            # Another process may have created it while this one waited for the lock.
            if connection.execute("PRAGMA application_id").fetchone()[0] != rows.APPLICATION_ID:
                for statement in rows.SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(rows.CLAIMS)
                connection.execute(f"PRAGMA application_id = {rows.APPLICATION_ID}")
                connection.execute(f"PRAGMA user_version = {rows.SCHEMA_VERSION}")


class SQLiteStore(MessageStore, ClaimingStore):
    """A :class:`MessageStore` in an SQLite database file (the stdlib :mod:`sqlite3`).

    Messages are rows holding their fields (``docs/hashing.md``; the message's hash is
    computed from them and checked on every read), and each distinct content is one row,
    however many messages name it; nothing executable is ever stored. The database runs in
    WAL mode, so any number of processes can read and write the same file at once. Each
    write is its own transaction, committed before the method returns: a message that
    ``put`` stored survives the process being killed. Every message read is checked against
    its hash, and its content against the content's.

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

    __slots__ = ("_path", "_worker")

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self._path = os.fspath(path)
        self._worker = Worker(_Database(self._path, create=create), f"agentforum {self!r}")
        # A store dropped unclosed: its thread closes the connection and ends (and warns).
        weakref.finalize(self, self._worker.abandon, repr(self)).atexit = False

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

    async def _run(self, operation: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        return cast("T", await self._worker.run(operation, write=write))

    # -- messages -----------------------------------------------------------------------------

    async def put(self, message: Message) -> None:
        put = _Put((message,))
        await self._worker.put(put, put.write_alone)

    async def put_many(self, messages: Iterable[Message]) -> None:
        put = _Put(messages)
        await self._worker.put(put, put.write_alone)

    async def get(self, hash: str) -> Message:
        def select(connection: sqlite3.Connection) -> Message:
            found = connection.execute(
                f"{rows.SELECT} WHERE messages.hash = ?", (rows.key(hash),)
            ).fetchone()
            if found is None:
                raise MessageNotFoundError(f"message {hash} is not in the store")
            return rows.decode(found)

        if not is_hash(hash):
            raise MessageNotFoundError(f"message {hash!r} is not in the store")
        return await self._run(select)

    async def resolve(self, hash_or_prefix: str) -> Message:
        prefix = check_prefix(hash_or_prefix)
        low, high = rows.prefix_range(prefix)
        query = f"{rows.SELECT} WHERE messages.hash >= ?"
        bounds: tuple[bytes, ...] = (low,)
        if high is not None:
            query += " AND messages.hash < ?"
            bounds = (low, high)

        def select(connection: sqlite3.Connection) -> Message:
            found = connection.execute(f"{query} ORDER BY messages.hash LIMIT 2", bounds).fetchall()
            return rows.only_match(found, prefix, rows.decode)

        return await self._run(select)

    async def stored(self, hashes: Iterable[str]) -> set[str]:
        keys = list({rows.key(key) for key in hashes if is_hash(key)})

        def select(connection: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(keys), rows.LOOKUP_BATCH):
                chunk = keys[start : start + rows.LOOKUP_BATCH]
                found.update(
                    str(rows.hex_of(stored[0]))
                    for stored in connection.execute(
                        f"SELECT hash FROM messages WHERE hash IN ({', '.join('?' * len(chunk))})",
                        chunk,
                    )
                )
            return found

        return await self._run(select)

    async def ancestors(self, hash: str) -> list[Message]:
        def select(connection: sqlite3.Connection) -> list[Message]:
            found = connection.execute(rows.ANCESTORS, (rows.key(hash),))
            return rows.branch(hash, found, rows.decode)

        if not is_hash(hash):
            raise MessageNotFoundError(f"message {hash!r} is not in the store")
        return await self._run(select)

    async def children(self, hash: str | None) -> list[Message]:
        def select(connection: sqlite3.Connection) -> list[Message]:
            found = connection.execute(rows.CHILDREN, (rows.link(hash),)).fetchall()
            return rows.children(hash, found, rows.decode)

        if hash is not None and not is_hash(hash):
            return []
        return await self._run(select)

    # -- refs ---------------------------------------------------------------------------------

    async def set_ref(self, name: str, hash: str, *, expected: Expected = ANY) -> None:
        check_ref_name(name)
        check_expected(expected)
        if not is_hash(hash):
            raise MessageNotFoundError(f"message {hash!r} is not in the store")
        key = rows.key(hash)

        def upsert(connection: sqlite3.Connection) -> None:
            # One write transaction: no other writer, in this process or another, moves the
            # ref between the comparison and the move.
            with _transaction(connection):
                if not connection.execute(
                    "SELECT 1 FROM messages WHERE hash = ?", (key,)
                ).fetchone():
                    raise MessageNotFoundError(f"message {hash} is not in the store")
                found = connection.execute(
                    "SELECT hash FROM refs WHERE name = ?", (name,)
                ).fetchone()
                check_current(name, expected, None if found is None else rows.hex_of(found[0]))
                connection.execute(
                    "INSERT INTO refs (name, hash) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash",
                    (name, key),
                )

        await self._run(upsert, write=True)

    async def get_ref(self, name: str) -> str | None:
        check_ref_name(name)

        def select(connection: sqlite3.Connection) -> str | None:
            found = connection.execute("SELECT hash FROM refs WHERE name = ?", (name,)).fetchone()
            return None if found is None else rows.hex_of(found[0])

        return await self._run(select)

    async def delete_ref(self, name: str) -> None:
        check_ref_name(name)

        def delete(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM refs WHERE name = ?", (name,))

        await self._run(delete, write=True)

    async def refs(self) -> Mapping[str, str]:
        def select(connection: sqlite3.Connection) -> dict[str, str]:
            found = connection.execute("SELECT name, hash FROM refs ORDER BY name")
            return {name: str(rows.hex_of(key)) for name, key in found}

        return await self._run(select)

    # -- the cache index ----------------------------------------------------------------------

    async def get_cached(self, call_hash: str) -> Sequence[str] | None:
        if not is_hash(call_hash):
            return None
        key = rows.key(call_hash)

        def select(connection: sqlite3.Connection) -> tuple[str, ...] | None:
            found = connection.execute(
                "SELECT responses FROM cache WHERE call = ?", (key,)
            ).fetchone()
            if found is None:
                return None
            responses = rows.responses(found[0])
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
            check_entry(call_hash, responses, rows.nodes(connection))
            key = rows.key(call_hash)
            with _transaction(connection):
                connection.execute(
                    "INSERT INTO cache (call, responses) VALUES (?, ?) "
                    "ON CONFLICT (call) DO UPDATE SET responses = excluded.responses",
                    (key, json.dumps(responses)),
                )
                # The answer is recorded: the claim on the call in flight is over.
                connection.execute("DELETE FROM claims WHERE call = ?", (key,))

        await self._run(upsert, write=True)

    # -- claims on calls in flight ------------------------------------------------------------

    async def claim(self, call_hash: str, owner: str, lease: float) -> Claim:
        """Claim a call for ``owner``; see :meth:`ClaimingStore.claim`.

        The lease is kept by this machine's clock, which every process sharing the file
        reads (a clock set back or forward moves every lease with it).
        """
        check_claim(call_hash, owner, lease)
        key = rows.key(call_hash)

        def upsert(connection: sqlite3.Connection) -> Claim:
            with _transaction(connection):
                now = time.time()
                connection.execute(rows.CLAIM, (key, owner, now + lease, now))
                found = connection.execute(rows.CLAIM_HOLDER, (key,)).fetchone()
            return Claim(str(found[0]), max(0.0, float(found[1]) - now), bool(found[2]))

        return await self._run(upsert, write=True)

    async def release(self, call_hash: str, owner: str) -> None:
        check_call(call_hash)

        def delete(connection: sqlite3.Connection) -> None:
            connection.execute(
                "DELETE FROM claims WHERE call = ? AND owner = ?", (rows.key(call_hash), owner)
            )

        await self._run(delete, write=True)

    async def wait_released(self, call_hash: str, *, poll: float) -> None:
        """Wait until the claim on ``call_hash`` is released or its lease has run out.

        Looks every ``poll`` seconds (nothing wakes a reader of an SQLite file); see
        :meth:`ClaimingStore.wait_released`.
        """
        check_call(call_hash)
        check_seconds("poll", poll)
        key = rows.key(call_hash)

        def is_held(connection: sqlite3.Connection) -> bool:
            return (
                connection.execute(
                    "SELECT 1 FROM claims WHERE call = ? AND expires > ?", (key, time.time())
                ).fetchone()
                is not None
            )

        # Nothing wakes a reader of an SQLite file: looking again is all there is.
        while await self._run(is_held):  # noqa: ASYNC110
            await anyio.sleep(poll)

    # -- garbage ------------------------------------------------------------------------------

    async def collect_garbage(
        self, *, grace: float = DEFAULT_GRACE, dry_run: bool = False
    ) -> GarbageReport:
        """Delete the messages no ref reaches that are older than ``grace`` seconds.

        Kept are the messages that a ref reaches through its links (``parent``,
        ``reply_to``, ``original``), those written in the last ``grace`` seconds (default:
        two weeks) and whatever they reach, and the responses of the cache entries of
        kept calls; the rest is deleted, with the contents that only it named and the
        cache entries of its calls, in one transaction (other writers wait for it). The
        store stays sound (:meth:`MessageStore.verify`). The file does not shrink: SQLite
        reuses the space.

        Args:
            grace: Keep what was written this many seconds ago or since (``0``: only what
                refs reach). A row written by an agentforum that did not record write
                times is stamped now and kept.
            dry_run: Count what would be deleted, and delete nothing.

        Raises:
            ValueError: ``grace`` is negative.
            StoreError: the database cannot be written (except for a dry run).
        """
        check_grace(grace)
        return await self._run(
            functools.partial(collect_sqlite, grace=grace, dry_run=dry_run), write=not dry_run
        )

    # -- integrity ----------------------------------------------------------------------------

    async def verify(self) -> list[IntegrityProblem]:
        """Check the file, every message, content, link, ref and cache entry; return the problems.

        Besides what :meth:`MessageStore.verify` checks, SQLite's own ``PRAGMA
        integrity_check`` examines every page, record and index of the file, and the
        walk from the roots (the index of parents that :meth:`children` reads) must reach
        exactly the messages of the table. A problem of the file, not of one message, has
        an empty ``hash``. A file too damaged to read whole gives a problem that says so.
        """
        return await self._run(self._check)

    def _check(self, connection: sqlite3.Connection) -> list[IntegrityProblem]:
        found: list[IntegrityProblem] = []
        for check in (self._file_problems, checks.row_problems, checks.walk_problems):
            found.extend(checks.unless_unreadable(check, connection))
        return found

    def _file_problems(self, connection: sqlite3.Connection) -> list[IntegrityProblem]:
        return checks.file_problems(self._path, connection)

    async def aclose(self) -> None:
        """Close the database, once the operations started before are done, and end the
        store's thread (the next use opens the database again in a new one).

        Shielded from cancellation: the database is closed, and a cancellation is raised
        afterwards.
        """
        await self._worker.close()
