"""What the PostgreSQL store's ``verify()`` checks: every row, and the walk from the roots.

Everything is read in one read-only transaction at repeatable read: one state of the
database, whatever other workers write meanwhile. The message table is read twice: once
without its indexes (what it holds), and once by walking the tree from its roots through
the index of parents (what :meth:`PostgresStore.children` can reach); the two must agree.
As in the SQLite store's checks, nothing stored is ever quoted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .._messages import ForwardedMessage, links
from . import _postgres_rows as tables
from . import _sqlite_rows as rows
from ._cache import cache_problems
from ._protocol import IntegrityProblem
from ._sqlite_checks import printable, problem

if TYPE_CHECKING:
    import psycopg

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
    # A cursor on the server: the rows come in batches, not all at once.
    with connection.cursor(name="agentforum_verify") as cursor:
        cursor.itersize = 1000
        cursor.execute(tables.SELECT)
        for stored in cursor:
            key = rows.hex_of(stored[0])
            message, wrong = rows.rebuild(tables.as_sqlite(stored))
            if message is None:
                found.append(problem(key, str(wrong)))
                continue
            if tables.row(message) != stored[: len(tables.COLUMNS)]:
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
    with connection.cursor(name="agentforum_verify_contents") as cursor:
        cursor.itersize = 1000
        cursor.execute("SELECT hash, text FROM contents")
        for content_key, text in cursor:
            wrong = rows.content_problem(content_key, text)
            if wrong is not None:
                found.append(problem(rows.hex_of(content_key), wrong))
    found.extend(
        problem(rows.hex_of(content_key), "a content is referenced by no message")
        for (content_key,) in connection.execute(
            "SELECT hash FROM contents WHERE NOT EXISTS "
            "(SELECT 1 FROM messages WHERE messages.content = contents.hash)"
        )
    )
    for name, target in connection.execute("SELECT name, hash FROM refs"):
        if rows.hex_of(target) not in content_of:
            found.append(
                problem(
                    rows.hex_of(target),
                    f"ref {printable(str(name))!r} points at a message that is not in the store",
                )
            )
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
    found = [
        problem(
            rows.hex_of(key),
            "the index of parents files it under a message that is not its parent",
        )
        for key in misfiled
    ]
    # A message whose parent is missing is reported as such; those below it are not reached.
    found.extend(
        problem(
            rows.hex_of(key), "it is stored, but walking the tree from its roots does not reach it"
        )
        for key, parent in stored.items()
        if key not in reached and (parent is None or parent in stored)
    )
    found.extend(
        problem(
            rows.hex_of(key),
            "walking the tree from its roots reaches it, but the table does not hold it",
        )
        for key in sorted(reached - stored.keys(), key=repr)
    )
    return found
