"""The database the commands work on: opening it, naming messages in it, walking its tree."""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
from typing import TYPE_CHECKING, Final

import anyio
import attrs

from agentforum import AgentForumError, Message, MessageStore, PostgresStore, SQLiteStore
from agentforum._stores._postgres_connect import is_url as is_url
from agentforum._stores._postgres_connect import redact
from agentforum._stores._refs import lookup

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

#: Where the commands look for the database when neither ``--db`` nor
#: :data:`DB_VARIABLE` names one.
DEFAULT_DB: Final = "agentforum.db"
#: The environment variable that names the database when ``--db`` is not given.
DB_VARIABLE: Final = "AGENTFORUM_DB"
#: The fewest hex characters a short hash has (as in git).
MIN_SHORT: Final = 7


def shown(db: str) -> str:
    """The database ``db`` as the commands name it: a path as given, a URL without its
    password (which never appears in what a command prints)."""
    return redact(db) if is_url(db) else db


def db_hint(path: str) -> str:
    """What a suggested command adds to name the database ``path``: ``--db PATH``, quoted
    for a POSIX shell when it must be, or nothing for the default one when
    :data:`DB_VARIABLE` is not set (where it is, the command may be pasted later into a
    shell where it is not, or the other way round). A URL is given without its password:
    the command then finds it in ``PGPASSWORD`` or ``~/.pgpass``."""
    if path == DEFAULT_DB and not os.environ.get(DB_VARIABLE):
        return ""
    return f" --db {shlex.quote(shown(path))}"


class UserError(AgentForumError):
    """A mistake of the user's (a bad name, a missing file): one line, no traceback."""


def make_store(path: str, *, create: bool) -> MessageStore:
    """Return the store ``path`` names: the one place where the commands choose a store class.

    A ``postgresql://`` (or ``postgres://``) URL is a :class:`PostgresStore`, anything else
    the path of an :class:`SQLiteStore`. With ``create=False`` (every command but ``demo``,
    ``chat`` and ``import``) a missing file or an empty PostgreSQL database, or one that is
    not an agentforum database, raises :exc:`StoreError` and is left as it was.
    """
    if is_url(path):
        return PostgresStore(path, create=create)
    return SQLiteStore(path, create=create)


@contextlib.asynccontextmanager
async def open_store(path: str, *, create: bool = False) -> AsyncIterator[MessageStore]:
    """Open the store at ``path`` for the duration of the block, and close it afterwards.

    Raises:
        UserError: the directory of ``path`` does not exist, or ``create`` is false and
            there is no file at ``path``.
        StoreError: the file is not an agentforum database (it is left untouched); the
            PostgreSQL server cannot be reached, or its database is not agentforum's (or,
            with ``create`` false, is empty).
    """
    if is_url(path):
        async with _opened(make_store(path, create=create)) as store:
            yield store
        return
    directory = os.path.dirname(path)
    if directory and not await anyio.Path(directory).is_dir():
        missing = "is not a directory" if await anyio.Path(directory).exists() else "does not exist"
        raise UserError(f"{path}: the directory {directory} {missing}")
    if not create and not await anyio.Path(path).exists():
        raise UserError(
            f"{path}: no such database (pass --db PATH, or run `agentforum demo` to write one)"
        )
    async with _opened(make_store(path, create=create)) as store:
        yield store


@contextlib.asynccontextmanager
async def _opened(store: MessageStore) -> AsyncIterator[MessageStore]:
    try:
        # Open now, so that a file that is not a database (or a server that cannot be
        # reached) is reported before anything else.
        await store.refs()
        yield store
    finally:
        await store.aclose()


async def find(store: MessageStore, name: str) -> Message:
    """Return the message that a ref, a full hash or a unique hash prefix names.

    Refs are looked up first, as :meth:`Forum.get` does (``_stores._refs.lookup``).

    Raises:
        UserError: ``name`` is neither a ref nor 6 to 64 lowercase hexadecimal characters.
        MessageNotFoundError: no message matches.
        AmbiguousHashError: several messages match.
    """
    try:
        return await lookup(store, name)
    except ValueError:
        raise UserError(
            f"{name!r} is neither a ref nor a message hash (6 to 64 lowercase hex characters)"
        ) from None


@attrs.frozen
class Tree:
    """Every message of a store, and who is whose child.

    Attributes:
        messages: Every message, by hash.
        children: The hashes of each message's children, by hash (``None``: the roots).
        order: Every hash, parents before their children (depth first, children by hash).
        refs: Every ref, name to hash.
    """

    messages: Mapping[str, Message]
    children: Mapping[str | None, list[str]]
    order: list[str]
    refs: Mapping[str, str]

    def refs_of(self) -> dict[str, list[str]]:
        """Return the ref names pointing at each message that has any, by hash."""
        names: dict[str, list[str]] = {}
        for name, key in self.refs.items():
            names.setdefault(key, []).append(name)
        return names


async def load_tree(store: MessageStore) -> Tree:
    """Walk the whole store from its roots (iteratively: a branch may be very long)."""
    messages: dict[str, Message] = {}
    children: dict[str | None, list[str]] = {}
    order: list[str] = []
    stack: list[str | None] = [None]
    while stack:
        key = stack.pop()
        found = await store.children(key)
        children[key] = [child.hash for child in found]
        for child in found:
            messages[child.hash] = child
        stack.extend(reversed(children[key]))
        if key is not None:
            order.append(key)
    return Tree(messages, children, order, dict(await store.refs()))


def short_length(hashes: list[str]) -> int:
    """Return the shortest length, at least :data:`MIN_SHORT`, at which no two hashes agree."""
    length = MIN_SHORT
    ordered = sorted(hashes)
    for before, after in itertools.pairwise(ordered):
        common = 0
        while common < len(before) and before[common] == after[common]:
            common += 1
        length = max(length, common + 1)
    return min(length, 64)
