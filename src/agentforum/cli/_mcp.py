"""The commands ``agentforum mcp ...``: ``mcp serve`` serves a forum's agents as MCP tools."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

import click

from agentforum import Forum

from ._app import CommandError, cli, db_option, run
from ._database import open_store, shown

if TYPE_CHECKING:
    from types import ModuleType


@cli.group(short_help="Serve a forum's agents as the tools of an MCP server.")
def mcp() -> None:
    """Model Context Protocol: serve a forum's agents to MCP clients (an IDE, a desktop
    assistant, another agent system). Needs the mcp extra: pip install 'agentforum[mcp]'.
    """


@mcp.command(short_help="Serve a forum's agents as MCP tools on stdio.")
@click.argument("target", metavar="MODULE:FORUM")
@click.option(
    "--agent",
    "agents",
    multiple=True,
    metavar="ALIAS",
    help="Serve only this agent (repeat for several; default: every agent of the forum).",
)
@click.option(
    "--name",
    default="agentforum",
    show_default=True,
    help="The server's name, as the clients see it.",
)
@db_option
def serve(target: str, agents: tuple[str, ...], name: str, db: str) -> None:
    """Serve the agents of a forum as the tools of an MCP server, on stdin and stdout.

    MODULE:FORUM names the forum: the module is imported (from the working directory
    too), and FORUM is its attribute, a Forum whose agents are registered. Each agent is
    a tool named after its alias, described by its docstring; a tool call asks it, and the
    result is its last message. The conversations are kept in the database (created if
    missing), instead of the forum's own store: `agentforum log HASH` shows them. The
    server stops when the client closes its standard input, or on Ctrl-C.
    """
    try:
        from agentforum.mcp import mcp_server
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in {"mcp", "mcp_types", "httpx2"}:
            raise
        raise CommandError(
            "agentforum mcp serve needs the MCP SDK: pip install 'agentforum[mcp]'"
        ) from None
    forum = load_forum(target)
    chosen = list(agents) or None
    try:
        mcp_server(forum, agents=chosen, name=name)  # the agents are checked before serving
    except (TypeError, ValueError) as exc:
        raise CommandError(f"{target}: {exc}") from None
    if forum.is_running:
        raise CommandError(f"{target} is running already")
    run(_serve, forum, chosen, name, db, target)


async def _serve(forum: Forum, agents: list[str] | None, name: str, db: str, target: str) -> None:
    from agentforum.mcp import serve_stdio

    async with open_store(db, create=True) as store:
        served = agents or list(forum._agents)
        click.echo(
            f"agentforum: serving {', '.join(served) or 'no agents'} of {target} as MCP tools "
            f"on stdio; conversations in {shown(db)}",
            err=True,
        )
        await serve_stdio(forum, agents=agents, name=name, store=store)


def load_forum(target: str) -> Forum:
    """The forum that ``MODULE:FORUM`` names, the module imported from the working
    directory too.

    Raises:
        CommandError: ``target`` is not of that form, the module cannot be imported, has
            no such attribute, or the attribute is not a :class:`Forum`.
    """
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise CommandError(
            f"{target!r} is not MODULE:FORUM (a module and the name of a Forum in it, such "
            "as myapp.agents:forum)"
        )
    module = _import(module_name)
    value: object = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise CommandError(f"the module {module_name} has no attribute {attribute}")
        value = getattr(value, part)
    if not isinstance(value, Forum):
        raise CommandError(f"{target} is a {type(value).__qualname__}, not a Forum")
    return value


def _import(name: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise CommandError(
                f"there is no module {name} (looked for from {cwd} and sys.path)"
            ) from None
        raise CommandError(f"importing {name} failed: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise CommandError(f"importing {name} failed: {type(exc).__name__}: {exc}") from None
