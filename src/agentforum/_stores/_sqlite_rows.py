"""The SQLite store's schema, and messages as its rows: written, and read back verified."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import AmbiguousHashError, IntegrityError, MessageNotFoundError
from .._hashing import FORMAT, hash_content, json_value
from .._messages import _KINDS, CallMessage, ErrorMessage, ForwardedMessage, Message, is_hash

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Iterable, Sequence

    from ._cache import Node

#: ``PRAGMA application_id`` of an agentforum database ("AFRM").
APPLICATION_ID: Final = 0x4146524D
#: ``PRAGMA user_version``: the schema version this code writes and reads. Schema 2 holds
#: messages of format ``agentforum/2``; schema 1 held format ``agentforum/1``.
SCHEMA_VERSION: Final = 2
#: The message format of each schema version (for the error that refuses an older database).
SCHEMA_FORMATS: Final = {1: "agentforum/1", 2: FORMAT}

# Hashes are stored as their 32 bytes. A message row holds its fields, not its document:
# the document names the content and the messages it links to by their hex hashes, which
# the columns hold already, so it is rebuilt (and its hash checked) on every read instead;
# a forward then costs about 300 bytes of the file (its row and its entries in the two
# indexes), against 800 with its document beside it. Each content is one row of
# `contents`, however many messages name it. `messages` is a rowid table, not WITHOUT
# ROWID: new rows go at its end, not at random places of a tree keyed by hash, which makes
# writing a branch half as fast again (measured: 37,000 against 23,000 messages a second).
SCHEMA: Final = """
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
);
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

# The claims on calls in flight (single flight across processes): the holder, and when its
# lease runs out (seconds since the epoch, by the clock of the machine, which every process
# sharing the file shares). Not part of the tree: nothing links to it, and neither
# `verify` nor `export` reads it. A database of schema 2 written before claims existed
# gets the table when it is first opened for writing; an older agentforum ignores it, so
# the schema version stays 2.
CLAIMS: Final = """
CREATE TABLE IF NOT EXISTS claims (
    call BLOB PRIMARY KEY NOT NULL CHECK (length(call) = 32),
    owner TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID
"""
#: The holder of a claim, when its lease runs out, and whether the call is answered.
CLAIM_HOLDER: Final = (
    "SELECT owner, expires, EXISTS (SELECT 1 FROM cache WHERE cache.call = claims.call) "
    "FROM claims WHERE call = ?"
)
#: Take, take over or renew a claim (the parameters: call, owner, expiry, now).
CLAIM: Final = (
    "INSERT INTO claims (call, owner, expires) VALUES (?, ?, ?) "
    "ON CONFLICT (call) DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
    "WHERE claims.owner = excluded.owner OR claims.expires <= ?"
)

#: The columns of a message row, in the order of :func:`row`.
COLUMNS: Final = (
    "hash",
    "kind",
    "parent",
    "reply_to",
    "original",
    "content",
    "sender",
    "metadata",
    "receiver",
    "kwargs",
    "error_type",
)
INSERT: Final = (
    f"INSERT OR IGNORE INTO messages ({', '.join(COLUMNS)}, written) "
    f"VALUES ({', '.join('?' * len(COLUMNS))}, CAST(strftime('%s', 'now') AS INTEGER))"
)

# The time each message row was written (seconds since the epoch), outside its fields and
# its hash: garbage collection keeps what was written within its grace period. Databases
# of schema 2 created before it get the column when opened where they can be written (an
# additive change: the schema version stays 2, and an older agentforum reads and writes
# the database as before, its rows without a time). A row without one is stamped by the
# next collection, which keeps it (see ``_garbage.py``).
ADD_WRITE_TIMES: Final = "ALTER TABLE messages ADD COLUMN written INTEGER"
STAMP: Final = "UPDATE messages SET written = ? WHERE written IS NULL"


def has_write_times(connection: sqlite3.Connection) -> bool:
    """Whether the database's messages have the column ``written``."""
    return any(
        column[1] == "written" for column in connection.execute("PRAGMA table_info(messages)")
    )


INSERT_CONTENT: Final = "INSERT OR IGNORE INTO contents (hash, text) VALUES (?, ?)"
#: A message row, then its content's hash and text: what :func:`decode` takes.
SELECT: Final = (
    f"SELECT {', '.join(f'messages.{column}' for column in COLUMNS)}, "
    "contents.hash, contents.text "
    "FROM messages LEFT JOIN contents ON contents.hash = messages.content"
)
#: The children of a message, through the index of parents, as ``children`` reads them.
CHILDREN: Final = f"{SELECT} WHERE messages.parent IS ? ORDER BY messages.hash"
# UNION (not UNION ALL): rows are visited once, so even a cycle of tampered parent columns
# ends. The branch is then rebuilt by following the *decoded* parents, never the column.
ANCESTORS: Final = f"""
WITH RECURSIVE branch (hash, parent) AS (
    SELECT hash, parent FROM messages WHERE hash = ?
    UNION
    SELECT messages.hash, messages.parent
    FROM messages JOIN branch ON messages.hash = branch.parent
)
{SELECT} JOIN branch ON branch.hash = messages.hash
"""

#: The most hashes that :meth:`SQLiteStore.stored` looks up in one query (SQLite's
#: default limit of parameters is 32,766 since 3.32, 999 before).
LOOKUP_BATCH: Final = 900

#: A row of :data:`SELECT`.
Row = tuple[Any, ...]


def key(hash: str) -> bytes:
    """A full hash as the store keeps it: its 32 bytes."""
    return bytes.fromhex(hash)


def link(hash: str | None) -> bytes | None:
    """An optional hash (a link) as the store keeps it."""
    return None if hash is None else bytes.fromhex(hash)


def hex_of(value: object) -> str | None:
    """A stored hash as 64 hex characters (``None`` stays ``None``).

    A value that is not 32 bytes (a damaged column) comes back as a text that is not a hash,
    so that whatever reads it reports the damage instead of failing on it.
    """
    if value is None:
        return None
    if isinstance(value, bytes) and len(value) == 32:
        return value.hex()
    return f"<a damaged hash of type {type(value).__name__}>"


def prefix_range(prefix: str) -> tuple[bytes, bytes | None]:
    """The keys of the hashes that start with the hex ``prefix``: ``low <= key < high``."""
    shift = 4 * (64 - len(prefix))
    low = int(prefix, 16) << shift
    high = (int(prefix, 16) + 1) << shift
    return low.to_bytes(32, "big"), high.to_bytes(32, "big") if high < 1 << 256 else None


#: What a forward of a call holds: a call has no content, so the empty text.
NO_CONTENT: Final = hash_content("")


def content_of(column: object) -> str | None:
    """The content hash of a message by its ``content`` column (a call's: the empty text's)."""
    return NO_CONTENT if column is None else hex_of(column)


def row(message: Message) -> Row:
    """The ``messages`` row of ``message``, in the order of :data:`COLUMNS`."""
    call = message if isinstance(message, CallMessage) else None
    return (
        key(message.hash),
        message._kind,
        link(message.parent),
        link(message.reply_to),
        link(message.original) if isinstance(message, ForwardedMessage) else None,
        None if call else key(message.content_hash),
        None if call else message.sender,
        json_value(message.metadata),  # type: ignore[arg-type]
        call.receiver if call else None,
        json_value(call.kwargs) if call else None,  # type: ignore[arg-type]
        message.error_type if isinstance(message, ErrorMessage) else None,
    )


def decode(stored: Row) -> Message:
    """Rebuild the message of a row of :data:`SELECT`, refusing one not stored as it was.

    The content must hash to its key, and the message's fields to the message's key.

    Raises:
        IntegrityError: the row is damaged or altered; the error says how (see
            :func:`rebuild`), never quoting what is stored.
    """
    message, problem = rebuild(stored)
    if message is None:
        hash = hex_of(stored[0])
        if not is_hash(hash):
            raise IntegrityError(f"a message is {problem}: the file is damaged")
        raise IntegrityError(f"message {hash}: {problem}")
    return message


def only_match(found: Sequence[Row], prefix: str, decode: Callable[[Row], Message]) -> Message:
    """The message of the one row that a prefix's look-up found (at most 2 asked for).

    Raises:
        MessageNotFoundError: no row.
        AmbiguousHashError: two rows.
    """
    if not found:
        raise MessageNotFoundError(f"no message hash starts with {prefix}")
    if len(found) > 1:
        raise AmbiguousHashError(f"more than one message hash starts with {prefix}")
    return decode(found[0])


def branch(hash: str, found: Iterable[Row], decode: Callable[[Row], Message]) -> list[Message]:
    """The branch of ``hash``, root first, from the rows of its ancestors (in any order).

    Raises:
        MessageNotFoundError: no row (``hash`` is not stored).
        IntegrityError: the rows do not link up through their messages' parents.
    """
    by_hash = {hex_of(stored[0]): stored for stored in found}
    if not by_hash:
        raise MessageNotFoundError(f"message {hash} is not in the store")
    messages: list[Message] = []
    at: str | None = hash
    while at is not None:
        if at not in by_hash:
            raise IntegrityError(
                f"the branch of {hash} is broken at {messages[-1].hash}: its stored "
                "parent column disagrees with its fields"
            )
        message = decode(by_hash[at])
        messages.append(message)
        at = message.parent
    messages.reverse()
    return messages


def children(
    parent: str | None, found: Iterable[Row], decode: Callable[[Row], Message]
) -> list[Message]:
    """The messages of the rows stored under ``parent``, which their fields must name.

    Raises:
        IntegrityError: a row's message names another parent.
    """
    messages = [decode(stored) for stored in found]
    for child in messages:
        if child.parent != parent:
            raise IntegrityError(
                f"message {child.hash} is stored under parent {parent}, "
                f"but its fields name {child.parent}"
            )
    return messages


def rebuild(stored: Row) -> tuple[Message, None] | tuple[None, str]:
    """The message of a row of :data:`SELECT`, or what is wrong with the row, in words.

    What is wrong is never said by quoting what is stored: a damaged row may hold anything,
    escape sequences included, and the words are shown to people.
    """
    hash = hex_of(stored[0])
    if not is_hash(hash):
        return None, "stored under a damaged hash"
    kind = stored[1]
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    text: str | None = ""
    if cls is not None and cls is not CallMessage:
        content_key = hex_of(stored[11])
        if stored[11] is None:
            return None, f"its content {hex_of(stored[5])} is missing"
        text = _text(stored[12])
        if text is None or hash_content(text) != content_key:
            return None, f"its content {content_key} does not hash to its hash (it was altered)"
    try:
        if cls is None:
            raise ValueError("an unknown kind")
        assert text is not None
        message = _build(cls, stored, text)
    except (TypeError, ValueError, RecursionError):
        return None, "its stored fields are not those of a message (the row is damaged)"
    if message.hash != hash:
        return None, "its fields do not hash to its hash (it was altered)"
    return message, None


def _build(cls: type[Message], stored: Row, text: str) -> Message:
    """The message of class ``cls`` that the columns of ``stored`` hold."""
    fields: dict[str, Any] = {
        "metadata": _json(stored[7]),
        "parent": _hash_or_none(stored[2]),
        "reply_to": _hash_or_none(stored[3]),
    }
    if cls is CallMessage:
        return CallMessage(receiver=stored[8], kwargs=_json(stored[9]), **fields)
    fields.update(content=text, sender=stored[6])
    if cls is ForwardedMessage:
        fields["original"] = _hash_or_none(stored[4])
    elif cls is ErrorMessage:
        fields["error_type"] = stored[10]
    message = cls(**fields)
    # Checked by decode against the stored text: not computed again.
    object.__setattr__(message, "content_hash", hex_of(stored[11]))
    return message


def _hash_or_none(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes) and len(value) == 32:
        return value.hex()
    raise ValueError("a damaged link")


def _text(value: object) -> str | None:
    """A stored content's text, or ``None`` if it is not UTF-8 bytes."""
    if not isinstance(value, bytes):
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def content_problem(stored_key: object, value: object) -> str | None:
    """What is wrong with a row of ``contents``, in words, or ``None``."""
    text = _text(value)
    if text is None or hash_content(text) != hex_of(stored_key):
        return "a content does not hash to its hash (it was altered)"
    return None


def _json(value: object) -> object:
    """A metadata or kwargs column, parsed (a damaged one raises ValueError)."""
    if not isinstance(value, str):
        raise ValueError("a JSON column holds no text")
    return json.loads(value)


def responses(text: object) -> tuple[str, ...] | None:
    """The hashes of a cache row's ``responses``; ``None`` if it is not a JSON list of them."""
    try:
        found = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError, RecursionError):
        return None
    if not isinstance(found, list) or not all(map(is_hash, found)):
        return None
    return tuple(found)


def nodes(connection: sqlite3.Connection) -> Callable[[str], Node | None]:
    """Look up the kind and parent of a stored message (by its columns) in ``connection``."""

    def node(hash: str) -> Node | None:
        if not is_hash(hash):
            return None
        found = connection.execute(
            "SELECT kind, parent FROM messages WHERE hash = ?", (key(hash),)
        ).fetchone()
        return None if found is None else (found[0], hex_of(found[1]))

    return node
