"""The PostgreSQL store: one message tree on a server, shared by workers on many machines.

Its schema and how a message is a row are in ``_postgres_rows.py``; reaching the server,
its connections and its errors in words, in ``_postgres_connect.py``; what ``verify()``
checks, in ``_postgres_checks.py``.

psycopg's asynchronous API runs on asyncio only, so the store runs psycopg's synchronous API
in AnyIO worker threads, which works the same on asyncio and on Trio: one thread per
operation at a time, each with a connection of the store's own pool, at most
``max_connections`` of them (a capacity limiter per event loop). The pool has no thread of
its own, so closing the store leaves none behind.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, TypeVar, cast

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

from .._exceptions import IntegrityError, MessageNotFoundError, StoreError
from .._messages import (
    ForwardedMessage,
    Message,
    check_prefix,
    check_ref_name,
    has_content,
    is_hash,
    links,
)
from . import _postgres_checks as checks
from . import _postgres_rows as tables
from . import _sqlite_rows as rows
from ._cache import check_entry
from ._claims import check_call, check_claim, check_seconds
from ._garbage import DEFAULT_GRACE, GarbageReport, check_grace, collect_postgres
from ._postgres_connect import Pool, Target
from ._postgres_listen import Listener
from ._protocol import Claim, ClaimingStore, IntegrityProblem, MessageStore
from ._refs import ANY, check_current, check_expected

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import TypeAlias

    import psycopg

    from ._cache import Node
    from ._refs import Expected

    Connection: TypeAlias = psycopg.Connection[tuple[object, ...]]

T = TypeVar("T")


class PostgresStore(MessageStore, ClaimingStore):
    """A :class:`MessageStore` in a PostgreSQL database, shared by any number of workers.

    The same store as :class:`SQLiteStore`, on a server: messages are rows holding their
    fields, each distinct content is one row, every read is checked against the message's
    hash and its content's; ``put_many`` stores a batch in one transaction, and each write
    is committed before the method returns. ``set_ref`` with ``expected`` is a
    compare-and-set that holds between processes on any number of machines. Needs the
    ``postgres`` extra (``pip install 'agentforum[postgres]'``: psycopg 3).

    Nothing is done until the first use (or :meth:`open`): then the first connection checks
    that the database is agentforum's, of a schema this version reads, and creates the
    schema in an empty database. The tables live in the first schema of the connection's
    ``search_path`` (``public`` unless the URL says otherwise). :meth:`aclose` closes every
    connection; the next use opens the store again.

    Operations run psycopg in AnyIO worker threads (so the store works on asyncio and on
    Trio), each with a connection of the store's pool, made when needed, at most
    ``max_connections`` at once per event loop: further operations wait for one, and that
    wait can be cancelled. Every method is a checkpoint; a cancelled call still completes
    the database operation it started before the cancellation is delivered. An operation
    whose connection breaks (the server restarted, a connection was terminated) is run
    again once on a new connection; every operation may be, since each is one transaction
    that gives the same result when run twice. When that fails too, it raises
    :exc:`StoreError`.

    Args:
        url: The database: ``postgresql://user:password@host:port/database`` (or
            ``postgres://``), with any parameter libpq reads (``?sslmode=require``,
            ``?host=/run/postgresql`` for a socket directory, ...). A connection attempt
            takes at most ``connect_timeout`` seconds (10 unless the URL says).
        create: Create the schema in a database that holds no tables. With ``False`` an
            empty database raises :exc:`StoreError`.
        max_connections: The most connections (and worker threads) the store uses at once.

    Opening raises :exc:`StoreError`, naming host, port and database but never the password,
    for a server that cannot be reached in time, a wrong password, a missing database; for a
    database of another application (tables of its own) or of a newer schema, which it
    leaves untouched.

    Raises:
        ValueError: ``url`` is not a PostgreSQL URL, or ``max_connections`` is not positive.
    """

    __slots__ = ("_create", "_limiter", "_listener", "_max_connections", "_pool", "_target")

    def __init__(self, url: str, *, create: bool = True, max_connections: int = 10) -> None:
        self._target = Target.of(url)
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be a positive int, not {max_connections!r}")
        self._create = create
        self._pool = Pool(self._target.connect, self._prepare)
        # One limiter per event loop: a limiter belongs to the loop that made it.
        self._limiter: RunVar[anyio.CapacityLimiter] = RunVar(f"PostgresStore {id(self)}")
        self._max_connections = max_connections
        self._listener: RunVar[Listener] = RunVar(f"PostgresStore {id(self)} listener")

    def __repr__(self) -> str:
        return f"<PostgresStore {self._target.display!r}>"

    @property
    def url(self) -> str:
        """The database's URL, without its password (the store keeps the password)."""
        return self._target.display

    async def open(self) -> None:
        """Connect and check the database now rather than on first use.

        Nothing happens if the store is open.

        Raises:
            StoreError: the server cannot be reached or refuses the connection, or the
                database cannot be an agentforum database (it is left untouched).
        """
        await self._run(lambda connection: None)

    # -- plumbing -----------------------------------------------------------------------------

    def _prepare(self, connection: Connection) -> None:
        import psycopg

        try:
            tables.prepare(connection, create=self._create, display=self._target.display)
        except psycopg.Error as exc:
            raise StoreError(
                f"{self._target.display}: cannot open: {self._target.scrub(str(exc))}"
            ) from None

    async def _run(self, operation: Callable[[Connection], T]) -> T:
        try:
            limiter = self._limiter.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self._max_connections)
            self._limiter.set(limiter)
        return await anyio.to_thread.run_sync(self._run_sync, operation, limiter=limiter)

    def _run_sync(self, operation: Callable[[Connection], T]) -> T:
        for attempt in (1, 2):
            connection, generation = self._pool.take()
            import psycopg  # only now: take() says what to install if it is missing

            try:
                result = operation(connection)
            except psycopg.Error as exc:
                if connection.broken:
                    self._pool.discard(connection)
                    if attempt == 1:
                        continue
                else:
                    self._pool.give_back(connection, generation)
                raise StoreError(f"{self._target.display}: {self._target.scrub(str(exc))}") from exc
            except BaseException:
                self._pool.give_back(connection, generation)
                raise
            self._pool.give_back(connection, generation)
            return result
        raise AssertionError("unreachable: the second attempt returns or raises")

    # -- messages -----------------------------------------------------------------------------

    async def put(self, message: Message) -> None:
        await self.put_many((message,))

    async def put_many(self, messages: Iterable[Message]) -> None:
        batch = {message.hash: message for message in messages}
        if not batch:
            await anyio.lowlevel.checkpoint()
            return
        contents = {
            rows.key(message.content_hash): message.content.encode("utf-8")
            for message in batch.values()
            if has_content(message)
        }
        parameters: list[list[object]] = [list(contents), list(contents.values())]
        parameters += tables.columns(list(batch.values()))
        forwards = [message for message in batch.values() if isinstance(message, ForwardedMessage)]

        def insert(connection: Connection) -> None:
            from psycopg.errors import ForeignKeyViolation

            if forwards:
                _check_forwards(connection, forwards, batch)
            try:
                connection.execute(tables.INSERT, parameters)
            except ForeignKeyViolation:
                raise _missing_link(connection, batch) or MessageNotFoundError(
                    "a message links to one that is not in the store"
                ) from None

        await self._run(insert)

    async def get(self, hash: str) -> Message:
        def select(connection: Connection) -> Message:
            found = connection.execute(
                f"{tables.SELECT} WHERE messages.hash = %s", (rows.key(hash),)
            ).fetchone()
            if found is None:
                raise MessageNotFoundError(f"message {hash} is not in the store")
            return tables.decode(found)

        if not is_hash(hash):
            raise MessageNotFoundError(f"message {hash!r} is not in the store")
        return await self._run(select)

    async def resolve(self, hash_or_prefix: str) -> Message:
        prefix = check_prefix(hash_or_prefix)
        low, high = rows.prefix_range(prefix)
        query = f"{tables.SELECT} WHERE messages.hash >= %s"
        bounds: tuple[bytes, ...] = (low,)
        if high is not None:
            query += " AND messages.hash < %s"
            bounds = (low, high)

        def select(connection: Connection) -> Message:
            found = connection.execute(f"{query} ORDER BY messages.hash LIMIT 2", bounds).fetchall()
            return rows.only_match(found, prefix, tables.decode)

        return await self._run(select)

    async def stored(self, hashes: Iterable[str]) -> set[str]:
        keys = list({rows.key(key) for key in hashes if is_hash(key)})
        if not keys:
            await anyio.lowlevel.checkpoint()
            return set()

        def select(connection: Connection) -> set[str]:
            found = connection.execute(
                "SELECT hash FROM messages WHERE hash = ANY(%s::bytea[])", (keys,)
            )
            return {str(rows.hex_of(stored[0])) for stored in found}

        return await self._run(select)

    async def ancestors(self, hash: str) -> list[Message]:
        def select(connection: Connection) -> list[Message]:
            found = connection.execute(tables.ANCESTORS, (rows.key(hash),))
            return rows.branch(hash, found, tables.decode)

        if not is_hash(hash):
            raise MessageNotFoundError(f"message {hash!r} is not in the store")
        return await self._run(select)

    async def children(self, hash: str | None) -> list[Message]:
        def select(connection: Connection) -> list[Message]:
            if hash is None:
                found = connection.execute(tables.ROOTS).fetchall()
            else:
                found = connection.execute(tables.CHILDREN, (rows.key(hash),)).fetchall()
            return rows.children(hash, found, tables.decode)

        if hash is not None and not is_hash(hash):
            await anyio.lowlevel.checkpoint()
            return []
        return await self._run(select)

    # -- refs ---------------------------------------------------------------------------------

    async def set_ref(self, name: str, hash: str, *, expected: Expected = ANY) -> None:
        """Point the ref ``name`` at the stored message ``hash``; see :meth:`MessageStore.set_ref`.

        One transaction, in which the ref's row is locked: a compare-and-set holds between
        every process and machine that shares the database. If the connection breaks after
        the transaction was sent, it is run again, and a ref that then points at ``hash``
        already counts as moved (by the first attempt, or by a writer that moved it to the
        same message).
        """
        check_ref_name(name)
        check_expected(expected)
        if not is_hash(hash):
            raise MessageNotFoundError(f"message {hash!r} is not in the store")
        key = rows.key(hash)
        attempts = 0

        def move(connection: Connection) -> None:
            nonlocal attempts
            attempts += 1
            with connection.transaction():
                found = connection.execute(tables.REF_FOR_UPDATE, (key, name)).fetchone()
                assert found is not None
                if not found[0]:
                    raise MessageNotFoundError(f"message {hash} is not in the store")
                actual = rows.hex_of(found[1])
                if attempts > 1 and actual == hash:
                    return
                check_current(name, expected, actual)
                if expected is None:
                    created = connection.execute(tables.CREATE_REF, (name, key)).fetchone()
                    assert created is not None
                    if not created[1]:  # another writer created it since
                        check_current(name, None, rows.hex_of(created[0]))
                else:
                    connection.execute(tables.UPSERT_REF, (name, key))

        await self._run(move)

    async def get_ref(self, name: str) -> str | None:
        check_ref_name(name)

        def select(connection: Connection) -> str | None:
            found = connection.execute("SELECT hash FROM refs WHERE name = %s", (name,)).fetchone()
            return None if found is None else rows.hex_of(found[0])

        return await self._run(select)

    async def delete_ref(self, name: str) -> None:
        check_ref_name(name)

        def delete(connection: Connection) -> None:
            connection.execute("DELETE FROM refs WHERE name = %s", (name,))

        await self._run(delete)

    async def refs(self) -> Mapping[str, str]:
        def select(connection: Connection) -> dict[str, str]:
            found = connection.execute("SELECT name, hash FROM refs")
            # Sorted here, by code point: the database's collation may sort otherwise.
            return dict(sorted((str(name), str(rows.hex_of(key))) for name, key in found))

        return await self._run(select)

    # -- the cache index ----------------------------------------------------------------------

    async def get_cached(self, call_hash: str) -> Sequence[str] | None:
        if not is_hash(call_hash):
            await anyio.lowlevel.checkpoint()
            return None

        def select(connection: Connection) -> tuple[str, ...] | None:
            found = connection.execute(
                "SELECT responses FROM cache WHERE call = %s", (rows.key(call_hash),)
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

        def upsert(connection: Connection) -> None:
            # Stored messages never change: what is checked here holds when it is written.
            check_entry(call_hash, responses, _nodes(connection, [call_hash, *responses]))
            key = rows.key(call_hash)
            with connection.transaction():
                connection.execute(
                    "INSERT INTO cache (call, responses) VALUES (%s, %s) "
                    "ON CONFLICT (call) DO UPDATE SET responses = excluded.responses",
                    (key, json.dumps(responses)),
                )
                # The answer is recorded: the claim on the call in flight is over.
                connection.execute(tables.RELEASE_ANSWERED, (key,))

        await self._run(upsert)

    # -- claims on calls in flight ------------------------------------------------------------

    async def claim(self, call_hash: str, owner: str, lease: float) -> Claim:
        """Claim a call for ``owner``; see :meth:`ClaimingStore.claim`.

        One transaction, in which the claim's row is locked; the lease is kept by the
        server's clock, the one clock every worker on every machine shares.
        """
        check_claim(call_hash, owner, lease)
        key = rows.key(call_hash)

        def upsert(connection: Connection) -> Claim:
            with connection.transaction():
                connection.execute(tables.CLAIM, (key, owner, float(lease)))
                found = connection.execute(tables.CLAIM_HOLDER, (key,)).fetchone()
            assert found is not None  # the row is locked by this transaction
            return Claim(str(found[0]), max(0.0, float(cast("float", found[1]))), bool(found[2]))

        return await self._run(upsert)

    async def release(self, call_hash: str, owner: str) -> None:
        """Release ``owner``'s claim; see :meth:`ClaimingStore.release`.

        The workers waiting for it (:meth:`wait_released`) are told with a ``NOTIFY`` on the
        channel ``agentforum_claims``, sent when the release commits.
        """
        check_call(call_hash)

        def delete(connection: Connection) -> None:
            connection.execute(tables.RELEASE, (rows.key(call_hash), owner))

        await self._run(delete)

    async def wait_released(self, call_hash: str, *, poll: float) -> None:
        """Wait until the claim on ``call_hash`` is released; see
        :meth:`ClaimingStore.wait_released`.

        Woken by the holder's release (``LISTEN agentforum_claims``), not by looking
        again: ``poll`` is not used, and a lease running out is not noticed. Every call
        waiting in one event loop shares one connection of the store's, which listens,
        beside its ``max_connections`` (made by the first wait, closed by :meth:`aclose`),
        and at most one worker thread at a time reads it. Cancelled, it returns within
        0.05 seconds. If that connection breaks, every wait returns early.

        Raises:
            StoreError: the listening connection cannot be made, or the claim cannot be
                read.
        """
        check_call(call_hash)
        check_seconds("poll", poll)
        await self.open()  # the database checked (and its schema made) as for any use
        key = rows.key(call_hash)

        def held(connection: Connection) -> bool:
            return connection.execute(tables.HELD, (key,)).fetchone() is not None

        try:
            listener = self._listener.get()
        except LookupError:
            listener = Listener(self._target)
            self._listener.set(listener)
        await listener.wait(call_hash, functools.partial(self._run, held))

    # -- integrity ----------------------------------------------------------------------------

    async def verify(self) -> list[IntegrityProblem]:
        """Check every message, content, link, ref and cache entry; return the problems.

        Besides what :meth:`MessageStore.verify` checks, the walk from the roots through
        the index of parents (as :meth:`MessageStore.children` reads it) must reach exactly the
        messages of the table, read without that index. Everything is read in one
        transaction, so the check sees one state of the database while others write. A
        database too damaged to read whole gives a problem that says so.
        """
        return await self._run(checks.problems)

    async def collect_garbage(
        self, *, grace: float = DEFAULT_GRACE, dry_run: bool = False
    ) -> GarbageReport:
        """Delete the messages no ref reaches that are older than ``grace`` seconds.

        What :meth:`SQLiteStore.collect_garbage` does, in one transaction that locks the
        tables against other writers (they wait for it; readers go on).
        """
        check_grace(grace)
        return await self._run(functools.partial(collect_postgres, grace=grace, dry_run=dry_run))

    async def aclose(self) -> None:
        """Close every connection of the store (those in use, when their operation ends).

        The next use opens the store again. Shielded from cancellation: the connections are
        closed even when the caller is cancelled.
        """
        with anyio.CancelScope(shield=True):
            listener = self._listener.get(None)
            if listener is not None:
                await listener.aclose()
            await anyio.to_thread.run_sync(self._pool.close)


def _check_forwards(
    connection: Connection, forwards: list[ForwardedMessage], batch: Mapping[str, Message]
) -> None:
    """Refuse a forward whose content is not its original's (stored, or in ``batch``).

    Stored messages never change, so this holds when the batch is written. A link of the
    batch to a message that is not stored is reported first, as :class:`MemoryStore` does.
    """
    outside = [rows.key(forward.original) for forward in forwards if forward.original not in batch]
    stored = {
        rows.hex_of(key): rows.content_of(content)
        for key, content in connection.execute(
            "SELECT hash, content FROM messages WHERE hash = ANY(%s)", (outside,)
        )
    }
    for forward in forwards:
        original = batch.get(forward.original)
        held = original.content_hash if original is not None else stored.get(forward.original)
        if held is not None and held != forward.content_hash:
            missing = _missing_link(connection, batch)
            if missing is not None:
                raise missing
            raise ValueError(
                f"forward {forward.hash} does not hold the content of its original "
                f"{forward.original}: a forward's content is its original's"
            )


def _missing_link(
    connection: Connection, batch: Mapping[str, Message]
) -> MessageNotFoundError | None:
    """The error for the first link of ``batch`` to a message neither stored nor in it."""
    outside = {value for message in batch.values() for _, value in links(message)} - batch.keys()
    stored = {
        rows.hex_of(key)
        for (key,) in connection.execute(
            "SELECT hash FROM messages WHERE hash = ANY(%s)",
            ([rows.key(value) for value in outside],),
        )
    }
    for message in batch.values():
        for field, value in links(message):
            if value not in batch and value not in stored:
                return MessageNotFoundError(f"{field} {value} is not in the store")
    return None


def _nodes(connection: Connection, hashes: list[str]) -> Callable[[str], Node | None]:
    """Look up the kind and parent of the stored messages ``hashes`` (by their columns)."""
    found = {
        rows.hex_of(key): (str(kind), rows.hex_of(parent))
        for key, kind, parent in connection.execute(
            "SELECT hash, kind, parent FROM messages WHERE hash = ANY(%s)",
            ([rows.key(key) for key in hashes if is_hash(key)],),
        )
    }
    return found.get
