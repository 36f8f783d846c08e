"""``agentforum gc``: delete the messages that no ref reaches, after a grace period."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

import click

from agentforum import PostgresStore, SQLiteStore

from ._app import cli, db_option, run
from ._database import UserError, open_store, shown

if TYPE_CHECKING:
    from agentforum._stores._garbage import GarbageReport

#: Seconds in each unit of a duration.
UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


def duration(context: click.Context, parameter: click.Parameter, value: str) -> float:
    """The seconds of a duration such as ``0``, ``90s``, ``30m``, ``12h``, ``14d`` or ``2w``.

    Raises:
        click.BadParameter: ``value`` is not one (a usage error).
    """
    found = _DURATION.fullmatch(value.strip())
    if found is None:
        raise click.BadParameter(
            f"{value!r} is not a duration: a number and a unit, s, m, h, d or w "
            "(such as 0, 30m, 14d)"
        )
    return float(found[1]) * UNITS[found[2]]


@cli.command(short_help="Delete the messages that no ref reaches.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@click.option(
    "--grace",
    callback=duration,
    default="14d",
    show_default=True,
    metavar="DURATION",
    help="Keep what was written this recently, such as 0, 30m, 12h, 14d or 2w.",
)
@db_option
def gc(dry_run: bool, grace: float, db: str) -> None:
    """Delete the messages that no ref reaches, and were written before the grace period.

    Kept are the messages a ref reaches (through parent, reply_to and original links),
    those written within the grace period (default: 14 days) and whatever they reach, and
    the responses cached for kept calls. The rest goes, with the contents only it named
    and the cache entries of its calls, in one transaction; the database stays sound (see
    `agentforum fsck`). Claims on calls in flight whose lease ran out (their worker died)
    go too. --dry-run only counts.
    """
    report = run(_gc, db, grace, dry_run)
    verb = "would delete" if dry_run else "deleted"
    claims = f", {_count(report.claims, 'expired claim')}" if report.claims else ""
    click.echo(
        f"{shown(db)}: {verb} {_count(report.messages, 'message')}, "
        f"{_count(report.contents, 'content')} and {_count(report.cache_entries, 'cache entry')}"
        f"{claims}; {_count(report.kept, 'message')} kept"
    )


def _count(number: int, noun: str) -> str:
    if number == 1:
        return f"1 {noun}"
    return f"{number} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


async def _gc(db: str, grace: float, dry_run: bool) -> GarbageReport:
    async with open_store(db) as store:
        if not isinstance(store, (SQLiteStore, PostgresStore)):  # pragma: no cover
            raise UserError(f"{shown(db)}: gc works on SQLite and PostgreSQL databases")
        return await store.collect_garbage(grace=grace, dry_run=dry_run)
