"""The PostgreSQL store's schema, its marks, and messages as its rows.

A message row holds the message's fields, as in the SQLite store (``_sqlite_rows``, whose
encoding and verified decoding of a row this module reuses): the hash is computed from them
again, and checked, on every read. Two differences, both because a PostgreSQL ``text``
cannot hold the character NUL, which a message's free texts may: contents are ``bytea``
(their UTF-8 bytes, as SQLite's BLOBs), and so are ``sender``, ``receiver`` and
``error_type``. The JSON columns (``metadata``, ``kwargs``, the cache's ``responses``) are
``text``: canonical JSON escapes every control character.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from .._exceptions import StoreError
from .._hashing import FORMAT
from . import _sqlite_rows as rows
from ._sqlite_checks import printable

if TYPE_CHECKING:
    import psycopg

    from .._messages import Message

#: The table that marks a database as agentforum's: one row per mark, name to value.
META: Final = "agentforum_meta"
#: The value of the mark ``application``.
APPLICATION: Final = "agentforum"
#: The mark ``schema``: the schema version this code writes and reads. Schema 1 holds
#: messages of format ``agentforum/2`` (no PostgreSQL store ever held another format).
SCHEMA_VERSION: Final = 1
#: The mark ``format``: the message format of the schema, for people reading the table.
SCHEMA_FORMAT: Final = FORMAT
#: The key of the transaction-level advisory lock taken while the schema is created, so
#: that processes opening one new database at the same moment create it once ("AFRM").
CREATE_LOCK: Final = 0x4146524D

# The claims on calls in flight (single flight across processes and machines): the holder,
# and when its lease runs out, by the server's clock (one clock for every worker, whatever
# their own say). Not part of the tree: nothing links to it, and neither `verify` nor
# `export` reads it. A database made before claims existed gets the table when it is
# opened (by a user allowed to create tables); an older agentforum ignores it, so the
# schema version stays 1.
CLAIMS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS claims (
    call bytea PRIMARY KEY CHECK (length(call) = 32),
    owner text NOT NULL,
    expires timestamptz NOT NULL
)"""
#: Where a released claim is announced (``NOTIFY``), its payload the call's hex hash.
CLAIMS_CHANNEL: Final = "agentforum_claims"
#: Take, take over or renew a claim (the parameters: call, owner, lease in seconds).
CLAIM: Final = (
    "INSERT INTO claims (call, owner, expires) "
    "VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s)) "
    "ON CONFLICT (call) DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
    "WHERE claims.owner = excluded.owner OR claims.expires <= clock_timestamp()"
)
#: The claim's holder, the seconds its lease has left, and whether the call is answered.
CLAIM_HOLDER: Final = (
    "SELECT owner, extract(epoch FROM expires - clock_timestamp())::float8, "
    "EXISTS (SELECT 1 FROM cache WHERE cache.call = claims.call) "
    "FROM claims WHERE call = %s"
)
#: Release a claim held by an owner, and tell the listeners (when the transaction commits).
RELEASE: Final = (
    "WITH gone AS (DELETE FROM claims WHERE call = %s AND owner = %s RETURNING call) "
    f"SELECT pg_notify('{CLAIMS_CHANNEL}', encode(call, 'hex')) FROM gone"
)
#: Release a claim whoever holds it (its call is answered), and tell the listeners.
RELEASE_ANSWERED: Final = (
    "WITH gone AS (DELETE FROM claims WHERE call = %s RETURNING call) "
    f"SELECT pg_notify('{CLAIMS_CHANNEL}', encode(call, 'hex')) FROM gone"
)
#: Whether a live claim is held on a call.
HELD: Final = "SELECT 1 FROM claims WHERE call = %s AND expires > clock_timestamp()"

# Hashes are bytea of 32 bytes. The foreign keys are checked when a transaction commits,
# so that a batch may hold a child before its parent.
SCHEMA: Final = f"""
CREATE TABLE {META} (
    name text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE contents (
    hash bytea PRIMARY KEY CHECK (length(hash) = 32),
    text bytea NOT NULL
);
CREATE TABLE messages (
    hash bytea PRIMARY KEY CHECK (length(hash) = 32),
    kind text NOT NULL,
    parent bytea REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED,
    reply_to bytea REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED,
    original bytea REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED,
    content bytea REFERENCES contents (hash) DEFERRABLE INITIALLY DEFERRED,
    sender bytea,
    metadata text NOT NULL,
    receiver bytea,
    kwargs text,
    error_type bytea
);
CREATE INDEX messages_by_parent ON messages (parent, hash);
CREATE TABLE refs (
    name text PRIMARY KEY,
    hash bytea NOT NULL REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE cache (
    call bytea PRIMARY KEY REFERENCES messages (hash) DEFERRABLE INITIALLY DEFERRED,
    responses text NOT NULL
);
{CLAIMS_TABLE};
INSERT INTO {META} (name, value) VALUES
    ('application', '{APPLICATION}'),
    ('schema', '{SCHEMA_VERSION}'),
    ('format', '{SCHEMA_FORMAT}');
"""

# The time each message row was written (seconds since the epoch), outside its fields and
# its hash, for garbage collection's grace period: added, as its own statement, to a
# database that lacks it (one created before it, or by the schema above), when a store
# first connects; the schema version stays 1, and rows written before get the time the
# column was added. Whole seconds, rounded down as in SQLite: a row is never younger
# than it is.
ADD_WRITE_TIMES: Final = (
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS written bigint "
    "DEFAULT floor(extract(epoch FROM now()))::bigint"
)
HAS_WRITE_TIMES: Final = (
    "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() "
    "AND table_name = 'messages' AND column_name = 'written'"
)
#: An index of the write times, for reading what was written lately (the web view's live
#: feed), made with the column.
INDEX_WRITE_TIMES: Final = (
    "CREATE INDEX IF NOT EXISTS messages_by_written ON messages (written, hash)"
)

#: The columns of a message row (those of the SQLite store, in the same order).
COLUMNS: Final = rows.COLUMNS
#: The PostgreSQL type of each column, for the arrays a batch is inserted from.
TYPES: Final = (
    "bytea",
    "text",
    "bytea",
    "bytea",
    "bytea",
    "bytea",
    "bytea",
    "text",
    "bytea",
    "text",
    "bytea",
)
#: The columns that hold a free text as its UTF-8 bytes (indexes into :data:`COLUMNS`).
TEXTS: Final = (6, 8, 10)

#: A batch in one statement, so one transaction: each column is an array parameter, and
#: the contents are inserted by a data-modifying WITH, whose rows the deferred foreign
#: keys of the messages see when the statement commits. Rows go in in the order of their
#: hashes: two writers storing the same messages (identical calls on two workers) then
#: wait for each other's rows in one order, and never deadlock.
INSERT: Final = f"""
WITH new_contents AS (
    INSERT INTO contents (hash, text)
    SELECT * FROM unnest(%s::bytea[], %s::bytea[]) ORDER BY 1
    ON CONFLICT DO NOTHING
)
INSERT INTO messages ({", ".join(COLUMNS)})
SELECT * FROM unnest({", ".join(f"%s::{type}[]" for type in TYPES)}) ORDER BY 1
ON CONFLICT DO NOTHING
"""
#: A message row, then its content's hash and text: what :func:`decode` takes.
SELECT: Final = rows.SELECT
ROOTS: Final = f"{SELECT} WHERE messages.parent IS NULL ORDER BY messages.hash"
CHILDREN: Final = f"{SELECT} WHERE messages.parent = %s ORDER BY messages.hash"
# UNION (not UNION ALL): a row is visited once, so even a cycle of tampered parent columns
# ends; the branch is then rebuilt by following the decoded parents, never the column.
ANCESTORS: Final = rows.ANCESTORS.replace("?", "%s")

#: A row of :data:`SELECT`.
Row = tuple[Any, ...]


def row(message: Message) -> Row:
    """The ``messages`` row of ``message``, in the order of :data:`COLUMNS`."""
    fields = list(rows.row(message))
    for index in TEXTS:
        if fields[index] is not None:
            fields[index] = fields[index].encode("utf-8")
    return tuple(fields)


def as_sqlite(stored: Row) -> Row:
    """A row of :data:`SELECT` as the SQLite store's decoder takes it (its texts as str).

    A text column that is not UTF-8 is passed on as bytes, which the decoder refuses as a
    damaged row.
    """
    fields = list(stored)
    for index in TEXTS:
        if isinstance(fields[index], bytes):
            try:
                fields[index] = fields[index].decode("utf-8")
            except UnicodeDecodeError:
                pass  # left as bytes: decoding the row reports it as damaged
    return tuple(fields)


def decode(stored: Row) -> Message:
    """Rebuild the message of a row of :data:`SELECT`, checked against both its hashes.

    Raises:
        IntegrityError: the row is damaged or altered (see ``_sqlite_rows.decode``).
    """
    return rows.decode(as_sqlite(stored))


def columns(messages: list[Message]) -> list[list[object]]:
    """The rows of ``messages`` as one list per column: the parameters of :data:`INSERT`."""
    found: list[list[object]] = [[] for _ in COLUMNS]
    for message in messages:
        for column, value in zip(found, row(message), strict=True):
            column.append(value)
    return found


def prepare(connection: psycopg.Connection[Row], *, create: bool, display: str) -> None:
    """Check that the database is agentforum's, of a schema this code reads; or create it.

    The store's tables live in the first schema of the connection's ``search_path``
    (``public`` by default). The schema is created only in a database whose schema holds
    no table yet, in one transaction, under an advisory lock, so that processes opening
    one new database at the same moment create it once. A database that is refused is
    left untouched.

    Raises:
        StoreError: the ``search_path`` names no schema that exists; the database holds
            tables of another application, or agentforum tables of a newer schema; it is
            empty and ``create`` is false.
    """
    schema = _one(connection, "SELECT current_schema()")
    if schema is None:
        raise StoreError(
            f"{display}: its search_path names no schema that exists: create one, or name "
            "one in the URL (options=-csearch_path%3DNAME)"
        )
    marks = _marks(connection)
    if marks is None:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK,))
            marks = _marks(connection)
            if marks is None:
                _check_empty(connection, schema, create=create, display=display)
                connection.execute(SCHEMA)
    if marks is not None:
        _check_marks(marks, display)
        if not has_table(connection, "claims"):
            with connection.transaction():  # a database made before claims existed
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK,))
                connection.execute(CLAIMS_TABLE)
    if not _one(connection, HAS_WRITE_TIMES):
        _add_write_times(connection)


def _add_write_times(connection: psycopg.Connection[Row]) -> None:
    """Add the column of write times (see :data:`ADD_WRITE_TIMES`), where the user may."""
    import psycopg.errors

    try:
        # Under the lock of the schema's creation: "IF NOT EXISTS" does not keep two
        # processes that open one database at once from both creating the index.
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK,))
            connection.execute(ADD_WRITE_TIMES)
            connection.execute(INDEX_WRITE_TIMES)
    except psycopg.errors.InsufficientPrivilege:
        pass  # a user who may not change the table writes no message either


def _one(connection: psycopg.Connection[Row], query: str, *args: object) -> Any:
    found = connection.execute(query, args or None).fetchone()
    return None if found is None else found[0]


def has_table(connection: psycopg.Connection[Row], name: str) -> bool:
    """Whether the current schema holds a table ``name``."""
    return bool(
        _one(
            connection,
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = %s",
            name,
        )
    )


def _marks(connection: psycopg.Connection[Row]) -> dict[str, str] | None:
    """The rows of the marks table of the current schema, or None if it has none."""
    if not has_table(connection, META):
        return None
    return {
        str(name): str(value)
        for name, value in connection.execute(f"SELECT name, value FROM {META}")
    }


def _check_empty(
    connection: psycopg.Connection[Row], schema: str, *, create: bool, display: str
) -> None:
    """Raise unless the schema ``schema`` holds nothing and a database may be created."""
    others = [
        printable(str(name))
        for (name,) in connection.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
            "AND relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY relname LIMIT 4"
        )
    ]
    if others:
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise StoreError(
            f"{display} is not an agentforum database: its schema {printable(schema)!r} holds "
            f"tables of another application ({listed}); use an empty database, or another "
            "schema (options=-csearch_path%3DNAME in the URL)"
        )
    if not create:
        raise StoreError(f"{display} is not an agentforum database (it is empty)")


def _check_marks(marks: dict[str, str], display: str) -> None:
    if marks.get("application") != APPLICATION:
        raise StoreError(
            f"{display} is not an agentforum database (its {META} table is another application's)"
        )
    version = marks.get("schema", "")
    if not version.isdigit() or int(version) < SCHEMA_VERSION:
        raise StoreError(
            f"{display} is not an agentforum database this version can read: its schema "
            f"version is {printable(version)!r}, not one agentforum wrote"
        )
    if int(version) > SCHEMA_VERSION:
        raise StoreError(
            f"{display} was written by a newer agentforum (schema {version}; this one reads "
            f"{SCHEMA_VERSION}): upgrade agentforum"
        )


#: Whether the message exists, and where the ref points now, its row locked (if it exists)
#: until the transaction ends: no other writer moves it in between.
REF_FOR_UPDATE: Final = (
    "SELECT EXISTS (SELECT 1 FROM messages WHERE hash = %s), "
    "(SELECT hash FROM refs WHERE name = %s FOR UPDATE)"
)
#: Create a ref that must not exist. If another writer created it meanwhile, its row is
#: locked and its hash returned, with ``false``: ``xmax`` is 0 only for a new row.
CREATE_REF: Final = (
    "INSERT INTO refs (name, hash) VALUES (%s, %s) "
    "ON CONFLICT (name) DO UPDATE SET hash = refs.hash RETURNING hash, xmax = 0"
)
UPSERT_REF: Final = (
    "INSERT INTO refs (name, hash) VALUES (%s, %s) "
    "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash"
)
