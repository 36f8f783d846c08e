"""Garbage collection: which messages of a store nothing needs any more.

A message is kept when a ref reaches it, when it was written within the grace period
(a writer may be about to point a ref at it, or to write its children), or when a kept
message links to it (``parent``, ``reply_to``, ``original``): what is kept is closed under
the links, so the store stays sound. A kept call keeps the responses of its cache entry,
so that the entry stays valid; a deleted call takes its cache entry with it. Contents that
no kept message names go too. Both stores compute this from their rows, here, and delete
in the same transaction, which other writers wait for.

A row written by a version of agentforum that did not record write times has none: the
first collection that sees it stamps it with its own time and keeps it, so it is deleted
only a grace period later.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final, cast

import attrs

from . import _postgres_rows as tables
from . import _sqlite_rows as rows

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterable, Mapping
    from typing import TypeAlias

    import psycopg

    Connection: TypeAlias = psycopg.Connection[tuple[object, ...]]

#: The grace period when none is given: two weeks, in seconds.
DEFAULT_GRACE: Final = 14 * 24 * 3600.0

#: A message row as the collection reads it: hash, parent, reply_to, original, content,
#: and the time it was written (seconds since the epoch; ``None`` when not recorded). The
#: hashes are the stores' 32 bytes.
Node = tuple[bytes, bytes | None, bytes | None, bytes | None, bytes | None, int | None]


@attrs.frozen
class GarbageReport:
    """What a garbage collection deleted (or, in a dry run, would delete).

    Attributes:
        messages: The messages that no ref reaches and that are older than the grace period.
        contents: The contents that only those messages named.
        cache_entries: The cache entries of the calls among those messages.
        kept: The messages kept.
        claims: The claims on calls in flight whose lease had run out (their holders
            died, and no process made the call since): they hold nothing any more.
    """

    messages: int
    contents: int
    cache_entries: int
    kept: int
    claims: int = 0


@attrs.frozen
class Garbage:
    """The rows to delete, as the stores key them (32-byte hashes)."""

    messages: set[bytes]
    contents: set[bytes]
    calls: set[bytes]
    kept: int

    def report(self, claims: int) -> GarbageReport:
        """The counts of :class:`GarbageReport`, with the ``claims`` that ran out."""
        return GarbageReport(
            len(self.messages), len(self.contents), len(self.calls), self.kept, claims
        )


def find_garbage(
    nodes: Iterable[Node],
    refs: Iterable[bytes],
    cache: Mapping[bytes, Iterable[bytes]],
    cutoff: float,
) -> Garbage:
    """The messages, contents and cache entries to delete.

    Args:
        nodes: Every message row.
        refs: The hash every ref points at.
        cache: Every cache entry: the call's hash to its responses' hashes.
        cutoff: Messages written after this time (seconds since the epoch) are kept; so
            are those with no recorded time.
    """
    rows = {node[0]: node for node in nodes}
    pending = [key for key in refs if key in rows]
    pending += [key for key, node in rows.items() if node[5] is None or node[5] > cutoff]
    reached: set[bytes] = set()
    while pending:
        key = pending.pop()
        if key in reached or key not in rows:
            continue
        reached.add(key)
        _, parent, reply_to, original, _, _ = rows[key]
        pending.extend(link for link in (parent, reply_to, original) if link is not None)
        pending.extend(cache.get(key, ()))
    doomed = rows.keys() - reached
    named = {rows[key][4] for key in reached}
    contents = {rows[key][4] for key in doomed} - named
    contents.discard(None)
    return Garbage(
        set(doomed),
        {content for content in contents if content is not None},
        {call for call in cache if call in doomed},
        len(reached),
    )


def check_grace(grace: float) -> float:
    """Return ``grace`` if it is a number of seconds, 0 or more.

    Raises:
        ValueError: it is negative (or not a number).
    """
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace >= 0:
        raise ValueError(f"grace must be a number of seconds, 0 or more, not {grace!r}")
    return grace


def _cache(entries: Iterable[tuple[bytes, object]]) -> dict[bytes, list[bytes]]:
    """The cache entries as :func:`find_garbage` takes them; an unreadable one (which
    ``verify`` reports) keeps nothing."""
    cache: dict[bytes, list[bytes]] = {}
    for call, text in entries:
        responses = rows.responses(text) or ()
        cache[bytes(call)] = [rows.key(response) for response in responses]
    return cache


def collect_sqlite(connection: sqlite3.Connection, *, grace: float, dry_run: bool) -> GarbageReport:
    """Collect the garbage of an SQLite store in one write transaction (a dry run: one
    read transaction, which writes nothing)."""
    now = time.time()
    connection.execute("BEGIN" if dry_run else "BEGIN IMMEDIATE")
    try:
        written = "written" if rows.has_write_times(connection) else "NULL"
        garbage = find_garbage(
            connection.execute(
                f"SELECT hash, parent, reply_to, original, content, {written} FROM messages"
            ),
            [key for (key,) in connection.execute("SELECT hash FROM refs")],
            _cache(connection.execute("SELECT call, responses FROM cache")),
            now - grace,
        )
        # A database read-only here, written before claims existed, has no such table.
        has_claims = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'claims'"
        ).fetchone()
        expired = 0
        if has_claims:
            query = "SELECT count(*) FROM claims WHERE expires <= ?"
            expired = connection.execute(query, (now,)).fetchone()[0]
        if not dry_run:
            # Rows without a time were kept above; from now on they have one.
            connection.execute(rows.STAMP, (int(now),))
            if has_claims:
                connection.execute("DELETE FROM claims WHERE expires <= ?", (now,))
            for table, column, keys in (
                ("cache", "call", garbage.calls),
                ("messages", "hash", garbage.messages),
                ("contents", "hash", garbage.contents),
            ):
                ordered = list(keys)
                for start in range(0, len(ordered), rows.LOOKUP_BATCH):
                    chunk = ordered[start : start + rows.LOOKUP_BATCH]
                    connection.execute(
                        f"DELETE FROM {table} WHERE {column} IN ({', '.join('?' * len(chunk))})",
                        chunk,
                    )
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return garbage.report(int(expired))


def collect_postgres(connection: Connection, *, grace: float, dry_run: bool) -> GarbageReport:
    """Collect the garbage of a PostgreSQL store in one transaction, during which other
    writers wait (a dry run: one repeatable-read snapshot, which writes nothing)."""
    now = time.time()
    with connection.transaction():
        if dry_run:
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        else:
            # Writers wait until the collection commits: none can link to a message that
            # is being deleted, or move a ref, meanwhile. Readers go on.
            connection.execute("LOCK TABLE messages, refs, cache IN SHARE ROW EXCLUSIVE MODE")
        garbage = find_garbage(
            (
                cast("Node", tuple(row))
                for row in connection.execute(
                    "SELECT hash, parent, reply_to, original, content, written FROM messages"
                )
            ),
            [cast("bytes", key) for (key,) in connection.execute("SELECT hash FROM refs")],
            _cache(
                (cast("bytes", call), text)
                for call, text in connection.execute("SELECT call, responses FROM cache")
            ),
            now - grace,
        )
        # A database whose user may not create tables, made before claims existed, has none.
        has_claims = tables.has_table(connection, "claims")
        found = (
            connection.execute(
                "SELECT count(*) FROM claims WHERE expires <= clock_timestamp()"
            ).fetchone()
            if has_claims
            else None
        )
        expired = int(cast("int", found[0])) if found is not None else 0
        if not dry_run and has_claims:
            connection.execute("DELETE FROM claims WHERE expires <= clock_timestamp()")
        if not dry_run:
            connection.execute(rows.STAMP.replace("?", "%s"), (int(now),))
            for table, column, keys in (
                ("cache", "call", garbage.calls),
                ("messages", "hash", garbage.messages),
                ("contents", "hash", garbage.contents),
            ):
                connection.execute(
                    f"DELETE FROM {table} WHERE {column} = ANY(%s::bytea[])", (list(keys),)
                )
    return garbage.report(int(expired))
