"""What the page's live feed reads: the messages stored since the last look.

A store keeps no log of its writes, so each store is read in the order it keeps its rows:
:class:`MemoryStore` in the order its messages were added, :class:`SQLiteStore` by row id
(SQLite gives a new row a larger id than any row committed before, in any process).
:class:`PostgresStore` by the time each row was written: whole seconds, and a row's time
is its transaction's start, so a transaction may commit after one that started later.
So each look reads again the hashes written in the last :data:`MARGIN` seconds before
the newest it has seen (through an index of the times) and reports those it has not
reported. Any other store has no such order here: its feed reports the refs only, and
new messages show when their branch is expanded again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeAlias, cast

import attrs

from agentforum._stores import _postgres_rows as tables
from agentforum._stores import _sqlite_rows as rows
from agentforum._stores._memory import MemoryStore
from agentforum._stores._postgres import PostgresStore
from agentforum._stores._sqlite import SQLiteStore

if TYPE_CHECKING:
    import sqlite3

    from agentforum import Message, MessageStore
    from agentforum._stores._postgres import Connection


@attrs.frozen
class Recent:
    """Where a PostgreSQL feed is: the newest write time seen, and the hashes written in
    the :data:`MARGIN` seconds before it that were reported (or there at the start)."""

    newest: int
    seen: frozenset[bytes]


#: Where a feed is: a row id or a count (SQLite, memory), or :class:`Recent` (PostgreSQL).
Position: TypeAlias = "int | Recent"
#: How many seconds before the newest write time seen a PostgreSQL feed reads again: a
#: transaction that commits this much after it started is still reported.
MARGIN: Final = 30
_RECENT: Final = "SELECT hash, written FROM messages WHERE written >= %s ORDER BY written, hash"

#: The most messages one look reads (the next look reads on from there).
BATCH: Final = 500

_SINCE: Final = (
    f"SELECT {', '.join(f'messages.{column}' for column in rows.COLUMNS)}, "
    "contents.hash, contents.text, messages.rowid "
    "FROM messages LEFT JOIN contents ON contents.hash = messages.content "
    "WHERE messages.rowid > ? ORDER BY messages.rowid LIMIT ?"
)
_LAST: Final = "SELECT coalesce(max(rowid), 0) FROM messages"


def can_follow(store: MessageStore) -> bool:
    """Whether :func:`since` finds the new messages of ``store``."""
    return isinstance(store, (MemoryStore, SQLiteStore, PostgresStore))


async def start(store: MessageStore) -> Position:
    """The position after the last message stored now (the feed reports what comes later)."""
    if isinstance(store, SQLiteStore):
        return await store._run(lambda connection: int(connection.execute(_LAST).fetchone()[0]))
    if isinstance(store, MemoryStore):
        return len(store._messages)
    if isinstance(store, PostgresStore):
        return await store._run(_recent_start)
    return 0


async def since(store: MessageStore, position: Position) -> tuple[list[Message], Position]:
    """The messages stored after ``position`` (at most :data:`BATCH`), and the next position."""
    if isinstance(store, PostgresStore) and isinstance(position, Recent):
        return await store._run(lambda connection: _recent_since(connection, position))
    if isinstance(position, Recent):
        return [], position
    if isinstance(store, SQLiteStore):

        def select(connection: sqlite3.Connection) -> tuple[list[Message], int]:
            found = connection.execute(_SINCE, (position, BATCH)).fetchall()
            if not found:
                return [], position
            return [rows.decode(row[:-1]) for row in found], int(found[-1][-1])

        return await store._run(select)
    if isinstance(store, MemoryStore):
        added = list(store._messages.values())[position : position + BATCH]
        return added, position + len(added)
    return [], position


def _recent_start(connection: Connection) -> Recent:
    found = connection.execute("SELECT coalesce(max(written), 0) FROM messages").fetchone()
    newest = int(cast("int", found[0])) if found is not None else 0
    rows_ = connection.execute(_RECENT, (newest - MARGIN,)).fetchall()
    return Recent(newest, frozenset(cast("bytes", row[0]) for row in rows_))


def _recent_since(connection: Connection, position: Recent) -> tuple[list[Message], Recent]:
    found = [
        (cast("bytes", row[0]), cast("int", row[1]))
        for row in connection.execute(_RECENT, (position.newest - MARGIN,))
    ]
    new = [key for key, _ in found if key not in position.seen][:BATCH]
    messages: list[Message] = []
    if new:
        by_key = {
            cast("bytes", row[0]): tables.decode(row)
            for row in connection.execute(
                f"{tables.SELECT} WHERE messages.hash = ANY(%s::bytea[])", (new,)
            )
        }
        messages = [by_key[key] for key in new if key in by_key]
    reported = position.seen | frozenset(new)
    newest = max([position.newest, *(written for key, written in found if key in reported)])
    seen = frozenset(
        key for key, written in found if key in reported and written >= newest - MARGIN
    )
    return messages, Recent(newest, seen)
