"""What the PostgreSQL store's ``verify()`` checks: every row, and the walk from the roots.

Everything is read in one read-only transaction at repeatable read: one state of the
database, whatever other workers write meanwhile. The message table is read twice: once
without its indexes (what it holds), and once by walking the tree from its roots through
the index of parents (what :meth:`PostgresStore.children` can reach); the two must agree.
As in the SQLite store's checks, nothing stored is ever quoted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from . import _postgres_rows as tables
from . import _sqlite_rows as rows
from ._cache import cache_problems
from ._protocol import IntegrityProblem
from ._sqlite_checks import (
    UNREFERENCED,
    content_problems,
    message_problems,
    printable,
    problem,
    ref_problems,
    walk_report,
)

if TYPE_CHECKING:
    import psycopg

    from .._messages import Message

    Connection = psycopg.Connection[tuple[object, ...]]
    #: A message's content hash, kind and parent, by its hash, as its row holds them.
    Table = dict[object, tuple[str | None, object, object]]

#: Read the table itself: no index of it is used while this is in force.
WITHOUT_INDEXES: Final = (
    "SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off; "
    "SET LOCAL enable_bitmapscan = off"
)
#: Walk through the index of parents: nothing else is used while this is in force.
THROUGH_INDEXES: Final = (
    "RESET enable_indexscan; RESET enable_indexonlyscan; RESET enable_bitmapscan; "
    "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; "
    "SET LOCAL enable_mergejoin = off"
)
# Each message reached, with the message it was reached from (`via`): the index says its
# parent is `via`, and its row says `parent`. UNION ends even on a damaged index.
WALK: Final = """
WITH RECURSIVE walk (hash, parent, via) AS (
    SELECT hash, parent, NULL::bytea FROM messages WHERE parent IS NULL
    UNION
    SELECT messages.hash, messages.parent, walk.hash
    FROM messages JOIN walk ON messages.parent = walk.hash
)
SELECT hash, parent, via FROM walk
"""


def problems(connection: Connection) -> list[IntegrityProblem]:
    """Every problem of the database, or the one that it cannot be read whole.

    Raises:
        psycopg.Error: the connection broke (the store runs the check again, once).
    """
    import psycopg

    try:
        with connection.transaction():
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            connection.execute(WITHOUT_INDEXES)
            table: Table = {
                key: (rows.content_of(content), kind, parent)
                for key, content, kind, parent in connection.execute(
                    "SELECT hash, content, kind, parent FROM messages"
                )
            }
            found = row_problems(connection, table)
            connection.execute(THROUGH_INDEXES)
            found += walk_problems(connection, table)
            return found
    except psycopg.Error as exc:
        if connection.broken:
            raise
        reason = printable(str(exc).strip())
        return [IntegrityProblem("", f"the database cannot be read whole: {reason}")]


def row_problems(connection: Connection, table: Table) -> list[IntegrityProblem]:
    """Check every message, content, ref and cache entry of the tables."""
    found: list[IntegrityProblem] = []
    content_of = {rows.hex_of(key): content for key, (content, _, _) in table.items()}
    # Cursors on the server: the rows come in batches, not all at once.
    with connection.cursor(name="agentforum_verify") as cursor:
        cursor.itersize = 1000
        cursor.execute(tables.SELECT)
        for stored in cursor:
            found.extend(message_problems(tables.as_sqlite(stored), _row_of, content_of))
    with connection.cursor(name="agentforum_verify_contents") as cursor:
        cursor.itersize = 1000
        cursor.execute("SELECT hash, text FROM contents")
        found.extend(content_problems(cursor))
    found.extend(
        problem(rows.hex_of(content_key), "a content is referenced by no message")
        for (content_key,) in connection.execute(UNREFERENCED)
    )
    found.extend(ref_problems(connection.execute("SELECT name, hash FROM refs"), content_of))
    nodes = {
        rows.hex_of(key): (str(kind), rows.hex_of(parent))
        for key, (_, kind, parent) in table.items()
    }
    entries = [
        (str(rows.hex_of(call)), rows.responses(responses))
        for call, responses in connection.execute("SELECT call, responses FROM cache")
    ]
    found.extend(
        problem(each.hash, printable(each.reason)) for each in cache_problems(entries, nodes.get)
    )
    return found


def walk_problems(connection: Connection, table: Table) -> list[IntegrityProblem]:
    """Compare the messages reached from the roots through the index of parents with the
    messages of the table itself."""
    stored = {key: parent for key, (_, _, parent) in table.items()}
    reached: set[object] = set()
    misfiled: dict[object, None] = {}
    for key, parent, via in connection.execute(WALK):
        if parent != via:
            misfiled[key] = None
        reached.add(key)
    return walk_report(stored, reached, misfiled)


def _row_of(message: Message) -> rows.Row:
    """The columns of ``message`` as :func:`message_problems` compares them: the SQLite
    store's, which :func:`tables.as_sqlite` makes of a row of this store."""
    return tables.as_sqlite(tables.row(message))
