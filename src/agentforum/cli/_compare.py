"""The commands that compare two branches: ``merge-base A B`` and ``diff A B``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.text import Text

from ._app import EXIT_FAILURE, cli, db_option, emit, oneline_summary, run, stdout
from ._database import open_store
from ._history import Comparison, compare
from ._render import kind

if TYPE_CHECKING:
    from collections.abc import Iterator

    from agentforum import Message


def _no_base(a: str, b: str) -> str:
    return f"{a} and {b} share no message (their branches start at different roots)"


@cli.command(name="merge-base")
@click.argument("a")
@click.argument("b")
@db_option
def merge_base(a: str, b: str, db: str) -> None:
    """Print the full hash of the last message on both the branch of A and that of B.

    A and B are refs, hashes or unique prefixes. As in git, the merge base is where the
    two branches part. When they share no message (different roots), say so on standard
    error and exit with 1.
    """
    comparison, _ = run(_compare, db, a, b)
    if comparison.base is None:
        click.echo(f"agentforum: {_no_base(a, b)}", err=True)
        raise SystemExit(EXIT_FAILURE)
    click.echo(comparison.base.hash)


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--calls", is_flag=True, help="Show the call messages too.")
@db_option
def diff(a: str, b: str, calls: bool, db: str) -> None:
    """Show where the branches of A and B part, and what each holds after that.

    First the merge base (the last message of both), then the messages of A's branch after
    it (`---`), then those of B's (`+++`), oldest first, one line each as `log --oneline`
    shows them. Call messages are left out unless --calls is given.
    """
    comparison, refs = run(_compare, db, a, b)
    console = stdout()

    def shown(messages: list[Message]) -> list[Message]:
        return messages if calls else [message for message in messages if kind(message) != "call"]

    def side(mark: str, name: str, messages: list[Message]) -> Iterator[Text]:
        count = len(messages)
        yield Text(f"{mark} {name}: {count} message{'s' if count != 1 else ''} after it", "bold")
        for message in messages:
            line = Text("  ").append_text(
                oneline_summary(console, message, refs.get(message.hash, []), before=2)
            )
            yield line

    def lines() -> Iterator[Text]:
        base = comparison.base
        if base is None:
            yield Text(f"no merge base: {_no_base(a, b)}", "bold")
        else:
            line = Text("merge base ", "bold")
            yield line.append_text(
                oneline_summary(console, base, refs.get(base.hash, []), before=11)
            )
        yield from side("---", a, shown(comparison.left))
        yield from side("+++", b, shown(comparison.right))

    emit(console, lines())


async def _compare(db: str, a: str, b: str) -> tuple[Comparison, dict[str, list[str]]]:
    async with open_store(db) as store:
        comparison = await compare(store, a, b)
        refs: dict[str, list[str]] = {}
        for name, key in (await store.refs()).items():
            refs.setdefault(key, []).append(name)
        return comparison, refs
