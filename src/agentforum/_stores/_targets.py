"""What a store argument may be: a store, a path of an SQLite database, a PostgreSQL URL."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import anyio

from ._postgres import PostgresStore
from ._postgres_connect import is_url
from ._protocol import MessageStore
from ._sqlite import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: A store, or where one is: the path of an SQLite database, or a ``postgresql://`` URL.
Target = MessageStore | str | os.PathLike[str]


def store_at(target: Target) -> tuple[MessageStore, bool]:
    """Return the store ``target`` names, and whether it was made here (then the caller
    closes it): a path opens an :class:`SQLiteStore` (created if missing), a
    ``postgresql://`` or ``postgres://`` URL a :class:`PostgresStore` (its schema created
    in an empty database); a store is itself.

    Raises:
        TypeError: ``target`` is none of these.
    """
    if isinstance(target, str) and is_url(target):
        return PostgresStore(target), True
    if isinstance(target, (str, os.PathLike)):
        return SQLiteStore(target), True
    if not isinstance(target, MessageStore):
        raise TypeError(
            f"a store must be a MessageStore (such as MemoryStore()), a path to an SQLite "
            f"database or a postgresql:// URL, not {type(target).__qualname__}"
        )
    return target, False


@contextlib.asynccontextmanager
async def opened(target: Target) -> AsyncIterator[MessageStore]:
    """The store ``target`` names, for the block; closed after it if it was opened here."""
    store, owned = store_at(target)
    try:
        yield store
    finally:
        if owned:
            with anyio.CancelScope(shield=True):
                await store.aclose()
