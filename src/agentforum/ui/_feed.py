"""What the page's live feed reads: the messages stored since the last look.

A store keeps no log of its writes, so each store is read in the order it keeps its rows:
:class:`MemoryStore` in the order its messages were added, :class:`SQLiteStore` by row id
(SQLite gives a new row a larger id than any row committed before, in any process). Any
other store (PostgreSQL) has no such order here: its feed reports the refs only, and new
messages show when their branch is expanded again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from agentforum._stores import _sqlite_rows as rows
from agentforum._stores._memory import MemoryStore
from agentforum._stores._sqlite import SQLiteStore

if TYPE_CHECKING:
    import sqlite3

    from agentforum import Message, MessageStore

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
    return isinstance(store, (MemoryStore, SQLiteStore))


async def start(store: MessageStore) -> int:
    """The position after the last message stored now (the feed reports what comes later)."""
    if isinstance(store, SQLiteStore):
        return await store._run(lambda connection: int(connection.execute(_LAST).fetchone()[0]))
    if isinstance(store, MemoryStore):
        return len(store._messages)
    return 0


async def since(store: MessageStore, position: int) -> tuple[list[Message], int]:
    """The messages stored after ``position`` (at most :data:`BATCH`), and the next position."""
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
