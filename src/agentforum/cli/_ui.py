"""The command ``agentforum ui``: serve the read-only web view of a database."""

from __future__ import annotations

import webbrowser

import anyio
import click

from ._app import CommandError, cli, db_option, run
from ._database import open_store, shown


@cli.command(short_help="Serve a read-only web view of the database.")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="The port to listen on (0: any free port).",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
@db_option
def ui(host: str, port: int, open_browser: bool, db: str) -> None:
    """Serve a web page showing the database's refs, tree, messages, histories and diffs.

    The page is read-only and, unless --host says otherwise, reachable from this machine
    only. New messages appear as they are stored, also by other processes. Stop with
    Ctrl-C. Needs the ui extra: pip install 'agentforum[ui]'.
    """
    try:
        import agentforum.ui  # noqa: F401
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        raise CommandError(f"agentforum ui needs {missing}: pip install 'agentforum[ui]'") from None
    run(_serve, db, host, port, open_browser)


async def _serve(db: str, host: str, port: int, open_browser: bool) -> None:
    from agentforum import ui as view

    async with open_store(db) as store, view.serve(store, host=host, port=port) as server:
        click.echo(f"Serving {shown(db)} on {server.url} (read-only; Ctrl-C stops it)")
        if open_browser:
            await anyio.to_thread.run_sync(webbrowser.open, server.url)
        await anyio.sleep_forever()
