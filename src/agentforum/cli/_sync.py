"""The commands that move a tree between databases: ``clone``, ``push`` and ``pull``.

Each end is an SQLite file, a PostgreSQL URL, or an export bundle. A bundle can be a source
(it is checked whole, as ``import`` checks it, then read from memory) and the destination
of ``clone`` (the bundle of what the refs reach, written whole or not at all); ``push``
and ``pull`` refuse to write into one, since a bundle is a file written once, not a
database.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio
import click

from agentforum import MemoryStore, MessageNotFoundError, MessageStore
from agentforum._sync import sync

from . import _bundle
from ._app import _write_atomically, cli, db_option, run
from ._database import UserError, is_url, load_tree, open_store, shown

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from agentforum import SyncReport

#: The suffix that makes a destination a bundle (the one ``export -o`` examples use).
BUNDLE_SUFFIX = ".jsonl"


def _force_option(function: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--force",
        is_flag=True,
        help="Move a ref even when its new message does not descend from its old one.",
    )(function)


@cli.command(short_help="Copy a database's refs, and what they reach, to a new one.")
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DEST")
def clone(source: str, destination: str) -> None:
    """Copy every ref of SRC, and every message they reach, to DEST, which must not exist
    (or, for PostgreSQL, hold nothing).

    SRC is an SQLite file, a postgresql:// URL or an export bundle; DEST an SQLite file, a
    postgresql:// URL, or a bundle (a name ending in .jsonl). Every message is checked
    against its hash before anything is written. Unlike `export`, messages no ref reaches
    stay behind.
    """
    report = run(_clone, source, destination)
    _print("cloned", f"from {shown(source)} into {shown(destination)}", report)


@cli.command(short_help="Send refs, and what they reach, to another database.")
@click.argument("destination", metavar="DEST")
@click.argument("names", metavar="[REF]...", nargs=-1)
@_force_option
@db_option
def push(destination: str, names: tuple[str, ...], force: bool, db: str) -> None:
    """Send the refs REF (default: every ref) of the database, and the messages they reach
    that DEST lacks, to DEST (an SQLite file or a postgresql:// URL), and move the refs there.

    Only the difference travels, every message is checked against its hash before anything
    is written, and a ref moves only forward (to a message that descends from its old one)
    unless --force. A push stopped midway leaves DEST sound; push again to complete it.
    """
    report = run(_push, db, destination, names, force)
    _print("pushed", f"to {shown(destination)}", report)


@cli.command(short_help="Fetch refs, and what they reach, from another database.")
@click.argument("source", metavar="SRC")
@click.argument("names", metavar="[REF]...", nargs=-1)
@_force_option
@db_option
def pull(source: str, names: tuple[str, ...], force: bool, db: str) -> None:
    """Fetch the refs REF (default: every ref) of SRC (an SQLite file, a postgresql:// URL
    or an export bundle), and the messages they reach that the database lacks, and move
    the refs here.

    The mirror of `push`: the same checks, and refs move only forward unless --force.
    """
    report = run(_pull, source, db, names, force)
    _print("pulled", f"from {shown(source)}", report)


def _print(verb: str, where: str, report: SyncReport) -> None:
    messages, contents = report.messages, report.contents
    click.echo(
        f"{verb} {messages} message{'s' if messages != 1 else ''} and {contents} "
        f"content{'s' if contents != 1 else ''} {where}"
    )
    width = max((len(update.name) for update in report.refs), default=0)
    for update in report.refs:
        if update.old is None:
            moved = f"(new) {update.new[:10]}"
        elif update.forced:
            moved = f"{update.old[:10]}...{update.new[:10]} (forced)"
        else:
            moved = f"{update.old[:10]}..{update.new[:10]}"
        click.echo(f"  {update.name:<{width}}  {moved}")
    if not report.refs:
        click.echo("  every ref was up to date")


async def _clone(source: str, destination: str) -> SyncReport:
    async with _source(source) as store:
        if _is_bundle_destination(destination):
            return await _clone_to_bundle(store, destination)
        if is_url(destination):
            async with open_store(destination, create=True) as target:
                if await target.refs() or await target.children(None):
                    raise UserError(
                        f"{shown(destination)} is not empty: `agentforum pull` fills a "
                        "database that holds messages"
                    )
                return await _sync(store, target, ())
        await _check_new(destination)
        try:
            async with open_store(destination, create=True) as target:
                return await _sync(store, target, ())
        except BaseException:
            # A clone that did not complete leaves no file behind (a push completes one).
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    await anyio.Path(f"{destination}{suffix}").unlink()
            raise


async def _clone_to_bundle(store: MessageStore, destination: str) -> SyncReport:
    await _check_new(destination)
    copy = MemoryStore()
    report = await _sync(store, copy, ())
    data = _bundle.encode_bundle(await load_tree(copy))
    await anyio.to_thread.run_sync(_write_atomically, destination, data)
    return report


async def _check_new(destination: str) -> None:
    if await anyio.Path(destination).exists():
        raise UserError(
            f"{destination} exists: clone makes a new database (`agentforum push` or "
            "`agentforum pull` add to one)"
        )


async def _push(db: str, destination: str, names: Sequence[str], force: bool) -> SyncReport:
    if _is_bundle_destination(destination) or await _is_bundle(destination):
        raise UserError(
            f"{destination} is a bundle, which is written whole, not added to: "
            f"`agentforum clone` or `agentforum export` write one"
        )
    async with open_store(db) as source, open_store(destination) as target:
        return await _sync(source, target, names, force=force)


async def _pull(source: str, db: str, names: Sequence[str], force: bool) -> SyncReport:
    async with _source(source) as store, open_store(db) as target:
        return await _sync(store, target, names, force=force)


async def _sync(
    source: MessageStore, target: MessageStore, names: Sequence[str], *, force: bool = False
) -> SyncReport:
    try:
        return await sync(source, target, names, force=force)
    except ValueError as exc:  # a ref name that the source lacks
        raise UserError(str(exc)) from None


@contextlib.asynccontextmanager
async def _source(path: str) -> AsyncIterator[MessageStore]:
    """The store to read from: a database, or the messages and refs of a checked bundle."""
    if not await _is_bundle(path):
        async with open_store(path) as store:
            yield store
        return
    bundle = _bundle.decode_bundle(await anyio.Path(path).read_bytes(), path)
    store = MemoryStore()
    try:
        await store.put_many(bundle.messages)
        for name, key in bundle.refs.items():
            await store.set_ref(name, key)
    except MessageNotFoundError:
        raise UserError(
            f"{path}: the bundle links to messages outside it, so it cannot be sent whole: "
            "`agentforum import` adds it to the database that holds them"
        ) from None
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    yield store


def _is_bundle_destination(path: str) -> bool:
    return not is_url(path) and path.endswith(BUNDLE_SUFFIX)


async def _is_bundle(path: str) -> bool:
    """Whether ``path`` is a file that starts as a bundle does (an SQLite file never does)."""
    if is_url(path) or not await anyio.Path(path).is_file():
        return False
    async with await anyio.open_file(path, "rb") as file:
        return (await file.read(1)) == b"{"
