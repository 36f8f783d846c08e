"""The tools of Model Context Protocol servers, as tools of the model agents.

Install it with ``pip install "agentforum[mcp]"`` (the official ``mcp`` SDK), then
connect to a server for as long as the agents may call its tools::

    from agentforum.mcp import StdioServer, mcp_tools

    async with mcp_tools(StdioServer("python", ["weather_server.py"])) as tools:
        agent = openai_agent(model="gpt-4o-mini", tools=[*tools, my_function])
        ...

An MCP tool is a :class:`~agentforum.llms.Tool`: the model sees the server's name,
description and input schema; its calls and results are messages in the tree, as those
of Python functions are, and so a call asked again is answered from the forum's cache
without the server being called. A server that fails, dies or does not answer in time is
a tool error the model reads, never a hang.

The other way round, :func:`mcp_server` makes an MCP server whose tools are a forum's
agents (a tool call asks the agent), and :func:`serve_stdio` serves it on standard input
and output while the forum runs, as ``agentforum mcp serve MODULE:FORUM`` does::

    anyio.run(serve_stdio, forum)

See ``docs/mcp.md``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import anyio

try:
    import httpx2
    import mcp_types
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server
    from mcp.shared.exceptions import MCPError as SDKError
except ModuleNotFoundError as exc:
    if (exc.name or "").partition(".")[0] not in {"mcp", "mcp_types", "httpx2"}:
        raise
    raise ModuleNotFoundError(
        "agentforum.mcp needs the MCP SDK: pip install 'agentforum[mcp]'", name=exc.name
    ) from exc
from pydantic import ValidationError

from ._agents import Agent
from ._exceptions import AgentError, AgentForumError, EmptySequenceError
from ._forum import Forum
from ._json import FrozenDict, freeze_mapping
from ._runtime import error_type_of
from ._stores._targets import opened
from .llms._tools import _NAME, Tool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from mcp.server.context import ServerRequestContext

    from ._stores._protocol import MessageStore

#: How long a server may take to start, and to answer one request, unless told otherwise.
DEFAULT_TIMEOUT: Final = 30.0


class MCPError(AgentForumError):
    """An MCP server could not be started, reached or understood when connecting to it.

    Once connected, what goes wrong in a tool call is the call's error result, for the
    model to read: never this exception.
    """


@dataclass(frozen=True)
class StdioServer:
    """An MCP server that :func:`mcp_tools` starts as a subprocess and talks to on its stdio.

    Args:
        command: The executable (looked up on ``PATH``).
        args: Its command line arguments.
        env: Environment variables for it, over the SDK's safe defaults (``PATH``,
            ``HOME``, ...: not the whole environment of this process).
        cwd: Its working directory (default: this process's).
        errlog: Where its standard error goes (default: ``sys.stderr``).
    """

    command: str
    args: Sequence[str] = ()
    env: Mapping[str, str] | None = None
    cwd: str | os.PathLike[str] | None = None
    errlog: TextIO | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return " ".join([self.command, *self.args])


@dataclass(frozen=True)
class HTTPServer:
    """An MCP server that :func:`mcp_tools` reaches over streamable HTTP.

    Args:
        url: Its endpoint (``http://127.0.0.1:8000/mcp``, say).
        headers: HTTP headers sent with every request (``Authorization``, say).
    """

    url: str
    headers: Mapping[str, str] | None = None

    def __str__(self) -> str:
        return self.url


class MCPTool(Tool):
    """A tool of an MCP server: a :class:`~agentforum.llms.Tool` that a model agent may call.

    Made by :func:`mcp_tools`, and callable while its ``async with`` block runs. Its
    ``name``, ``description`` and ``parameters`` (the input schema) are the server's;
    :meth:`run` sends a call to the server and returns the text of its result.
    """

    __slots__ = ("_session", "server", "timeout")

    def __init__(
        self,
        session: _Session,
        definition: mcp_types.Tool,
        server: StdioServer | HTTPServer,
        timeout: float,
    ) -> None:
        if _NAME.fullmatch(definition.name) is None:
            raise MCPError(
                f"the MCP server {server} has a tool named {definition.name!r}, which the model "
                "APIs refuse: a tool's name is 1 to 64 letters, digits, '_' or '-'"
            )
        self._session = session
        #: The server the tool is on.
        self.server = server
        #: How many seconds a call may wait for the server's answer.
        self.timeout = timeout
        self.name = definition.name
        self.description = definition.description or ""
        schema = dict(definition.input_schema)
        try:
            self.parameters = FrozenDict._trusted(freeze_mapping(schema, "inputSchema"))
        except (TypeError, ValueError) as exc:
            raise MCPError(
                f"the MCP server {server} sent an input schema for {definition.name!r} that "
                f"is not JSON: {exc}"
            ) from exc
        self.function = self._call
        self.is_async = True
        self._types = {}

    def __repr__(self) -> str:
        return f"<MCPTool {self.name!r} of {self.server}>"

    async def _call(self, **arguments: Any) -> str:
        content, error = await self.run(json.dumps(arguments))
        if error:
            raise MCPToolError(content)
        return content

    async def run(self, arguments: str) -> tuple[str, bool]:
        """Call the tool on the server with a model's ``arguments`` (a JSON object, as text).

        Returns the result's text and whether it is an error. The text of a result is
        that of its content blocks, one per line: a text block's text, an embedded text
        resource's text, and a line in brackets for what is not text (an image, audio, a
        link to a resource); a result with no content is its structured content, as
        JSON. Arguments that are not a JSON object, a result the server marks as an
        error, a server that has died, that does not answer within :attr:`timeout`
        seconds or that answers with a malformed result, and a call after the
        :func:`mcp_tools` block has ended, are errors, never raised: ``"Error: ..."``, for
        the model to read. A cancellation is never caught: it propagates.
        """
        try:
            given = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return f"Error: the arguments are not valid JSON ({exc}): {arguments}", True
        if type(given) is not dict:
            return f"Error: the arguments must be a JSON object, not {arguments}", True
        where = f"the MCP server {self.server}"
        session = self._session.current
        if session is None:
            return f"Error: the connection to {where} is closed", True
        try:
            result = await session.call_tool(self.name, given, read_timeout_seconds=self.timeout)
        except SDKError as exc:
            if exc.error.code == mcp_types.REQUEST_TIMEOUT:
                return f"Error: {where} did not answer within {self.timeout:g} seconds", True
            if exc.error.code == mcp_types.CONNECTION_CLOSED:
                return f"Error: {where} closed the connection{_closed(exc)} (has it died?)", True
            return f"Error: {where} refused the call: {exc.error.message}", True
        except ValidationError as exc:
            return f"Error: {where} sent a malformed result: {_first_error(exc)}", True
        except RuntimeError as exc:  # the SDK's check of the result against its output schema
            return f"Error: {where} sent a result that the MCP client refuses: {exc}", True
        except Exception as exc:  # whatever else the SDK raises: the model reads it
            return f"Error: the call to {where} failed: {error_type_of(exc)}: {exc}", True
        text = _text_of(result)
        if result.is_error:
            return f"Error: {text}", True
        return text, False


class MCPToolError(AgentForumError):
    """A call of an :class:`MCPTool` as a function (not by a model) that ended in an error."""


class _Session:
    """The session a connection's tools share, while it is open."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: ClientSession | None = None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "the result"
    return f"{where}: {first['msg']}"


def _text_of(result: mcp_types.CallToolResult) -> str:
    lines: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            lines.append(block.text)
        elif isinstance(block, (mcp_types.ImageContent, mcp_types.AudioContent)):
            size = len(block.data) * 3 // 4 - block.data[-2:].count("=")  # base64
            lines.append(f"[{block.type}: {block.mime_type}, {size} bytes]")
        elif isinstance(block, mcp_types.ResourceLink):
            lines.append(f"[resource: {block.uri}]")
        elif isinstance(block.resource, mcp_types.TextResourceContents):
            lines.append(block.resource.text)
        else:
            lines.append(
                f"[resource: {block.resource.uri}, {block.resource.mime_type or 'binary'}]"
            )
    if not lines and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(lines)


def mcp_tools(
    server: StdioServer | HTTPServer, *, timeout: float = DEFAULT_TIMEOUT
) -> AbstractAsyncContextManager[tuple[MCPTool, ...]]:
    """Connect to an MCP server; its tools, callable until the block ends.

    ::

        async with mcp_tools(StdioServer("python", ["server.py"])) as tools:
            agent = openai_agent(model="gpt-4o-mini", tools=[*tools, my_function])

    The connection (a subprocess for a :class:`StdioServer`, an HTTP session for an
    :class:`HTTPServer`) lives exactly as long as the ``async with`` block: it is opened,
    initialized and asked for its tools on the way in, and closed (the subprocess
    stopped) on the way out, in the task that entered it, with no task left behind. Use
    the tools inside the block: a call after it is an error result. Enter and exit it
    in one task, as any context manager (an ``AsyncExitStack`` in the same task is fine).
    An exception raised in the block leaves it as raised, not in an exception group.

    Args:
        server: The server to connect to.
        timeout: How many seconds the server may take to start and list its tools, and
            to answer each tool call (a call that takes longer is an error result).

    Raises:
        MCPError: the command does not exist or cannot run; the server cannot be reached,
            closes the connection, does not answer in time or answers with something
            that is not MCP while connecting; a tool's name or schema that the model
            APIs cannot take.
        TypeError, ValueError: a server that is neither kind, or a timeout that is not a
            positive number.
    """
    if not isinstance(server, (StdioServer, HTTPServer)):
        raise TypeError(f"server must be a StdioServer or an HTTPServer, not {server!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    return _connected(server, float(timeout))


@asynccontextmanager
async def _connected(
    server: StdioServer | HTTPServer, seconds: float
) -> AsyncIterator[tuple[MCPTool, ...]]:
    shared = _Session()
    async with AsyncExitStack() as stack:
        try:
            session = await _connect(stack, server, seconds)
            tools = await _list(session, server, seconds, shared)
        except MCPError:
            # Closed before the error is raised, so that it leaves the session's and the
            # transport's task groups as itself, not inside an exception group.
            await stack.aclose()
            raise
        shared.current = session
        failure: Exception | None = None
        try:
            yield tools
        except Exception as exc:
            # The block's own error leaves as the block raised it, not wrapped in the
            # exception groups of the SDK's task groups (the session's, the transport's):
            # they are closed first, as on a normal exit. A cancellation (a BaseException)
            # goes through them, to the scope that cancelled.
            failure = exc
        finally:
            shared.current = None
    if failure is not None:
        raise failure


async def _connect(
    stack: AsyncExitStack, server: StdioServer | HTTPServer, seconds: float
) -> ClientSession:
    """Open the transport and the session on ``stack``, and initialize the session."""
    where = f"the MCP server {server}"
    if isinstance(server, StdioServer):
        parameters = StdioServerParameters(
            command=server.command,
            args=list(server.args),
            env=dict(server.env) if server.env is not None else None,
            cwd=None if server.cwd is None else Path(server.cwd),
        )
        try:
            read, write = await stack.enter_async_context(
                stdio_client(parameters, errlog=server.errlog or _stderr(stack))
            )
        except FileNotFoundError as exc:
            raise MCPError(
                f"could not start {where}: there is no command {server.command!r}"
            ) from exc
        except OSError as exc:
            raise MCPError(f"could not start {where}: {exc}") from exc
    else:
        client = await stack.enter_async_context(
            httpx2.AsyncClient(
                headers=dict(server.headers or {}),
                # As the SDK's own client: a response stream may stay open a long time.
                timeout=httpx2.Timeout(seconds, read=max(seconds, _STREAM_READ_TIMEOUT)),
                transport=_Reachable(server.url),
            )
        )
        read, write = await stack.enter_async_context(
            streamable_http_client(server.url, http_client=client)
        )
    session = await stack.enter_async_context(
        ClientSession(read, write, read_timeout_seconds=seconds)
    )
    try:
        await session.initialize()
    except SDKError as exc:
        raise _startup_error(where, exc, seconds) from exc
    except ValidationError as exc:
        raise MCPError(
            f"{where} answered the initialization with something that is not MCP: "
            f"{_first_error(exc)}"
        ) from exc
    return session


def _stderr(stack: AsyncExitStack) -> TextIO:
    """Where a server's standard error goes by default: this process's, if it is a file.

    ``sys.stderr`` may be an object with no file descriptor (pytest's capture, a
    notebook's); then the process's original standard error, else ``os.devnull``.
    """
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):  # noqa: PERF203 - the first that works
            continue
    devnull = open(os.devnull, "w")
    stack.callback(devnull.close)
    return devnull


#: How long the HTTP client waits for more of a response stream (the SDK's default).
_STREAM_READ_TIMEOUT: Final = 300.0
#: The message of the SDK's error for a connection that ended.
_CLOSED: Final = "Connection closed"


class _Reachable(httpx2.AsyncBaseTransport):
    """An HTTP transport whose failure to reach the server is an answer to the request.

    The SDK's streamable HTTP transport runs each request's POST in a task of the
    transport's task group, and a connection error in one (the server is down, say)
    ends that group, and with it the whole ``mcp_tools`` block. Turned into a JSON-RPC
    error response (``CONNECTION_CLOSED``), the failure is the request's alone: a tool
    call's error result, or an :class:`MCPError` while connecting.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._transport = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return await self._transport.handle_async_request(request)
        except httpx2.TransportError as exc:
            if request.method != "POST":
                raise  # the SDK retries its GET stream and ignores a failed DELETE
            error = {"code": mcp_types.CONNECTION_CLOSED, "message": f"{exc or type(exc).__name__}"}
            return httpx2.Response(
                502, json={"jsonrpc": "2.0", "id": None, "error": error}, request=request
            )

    async def aclose(self) -> None:
        await self._transport.aclose()


def _closed(exc: SDKError) -> str:
    """What the SDK says of a closed connection, when it says more than that it closed."""
    return "" if exc.error.message == _CLOSED else f": {exc.error.message}"


def _startup_error(where: str, exc: SDKError, timeout: float) -> MCPError:
    if exc.error.code == mcp_types.REQUEST_TIMEOUT:
        return MCPError(f"{where} did not answer within {timeout:g} seconds: is it an MCP server?")
    if exc.error.code == mcp_types.CONNECTION_CLOSED:
        return MCPError(
            f"{where} closed the connection while connecting{_closed(exc)}: is it running, "
            "and an MCP server?"
        )
    return MCPError(f"{where} refused the connection: {exc.error.message}")


async def _list(
    session: ClientSession, server: StdioServer | HTTPServer, seconds: float, shared: _Session
) -> tuple[MCPTool, ...]:
    """The server's tools, every page of them, as MCPTools of ``shared``."""
    where = f"the MCP server {server}"
    definitions: list[mcp_types.Tool] = []
    cursor: str | None = None
    while True:
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        try:
            page = await session.list_tools(params=params)
        except SDKError as exc:
            raise _startup_error(where, exc, seconds) from exc
        except ValidationError as exc:
            raise MCPError(f"{where} sent a malformed list of tools: {_first_error(exc)}") from exc
        definitions.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    tools = tuple(MCPTool(shared, definition, server, seconds) for definition in definitions)
    names = [tool.name for tool in tools]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise MCPError(f"{where} lists more than one tool named {', '.join(map(repr, twice))}")
    return tools


# -- serving a forum's agents as the tools of an MCP server ------------------------------------

#: The name an MCP server made by :func:`mcp_server` gives itself, unless told otherwise.
DEFAULT_SERVER_NAME: Final = "agentforum"

#: The parameters of :meth:`Agent.ask` that ``kwargs`` may not name.
_ASK_PARAMETERS: Final = frozenset({"content", "branch_from", "blank_history"})


def mcp_server(
    forum: Forum,
    *,
    agents: Sequence[Agent | str] | None = None,
    name: str = DEFAULT_SERVER_NAME,
) -> Server[Any]:
    """An MCP server whose tools are agents of ``forum``: a tool call asks the agent.

    Each agent is a tool named after its alias, described by its description (the agent
    function's docstring, by default), whose input is ``request`` (a string, the
    request), optionally ``branch_from`` (a ref, a message hash or a unique prefix of one:
    continue that conversation) and ``kwargs`` (an object: keyword arguments for the agent
    function). A call is ``agent.ask(request, branch_from=..., **kwargs)``: a new
    conversation in the forum's store unless ``branch_from`` says where to go on, and
    answered from the cache as any call. Its result is the text of the agent's last message,
    and as structured content that text and the message's hash (``{"content": ...,
    "hash": ...}``), the ``branch_from`` of a call that continues the conversation.

    An agent's failure (:exc:`~agentforum.AgentError`), a call that the forum refuses (bad
    arguments, a ``branch_from`` that names no message, a forum that is not running) and an
    agent that answers nothing are the call's error result (``isError``), with a clear text,
    never an error of the server. A call that the client cancels, or that is still running
    when the server stops, is cancelled (see ``docs/cancellation.md``).

    The server is the SDK's low-level :class:`mcp.server.lowlevel.Server`: run it on any
    transport, while ``forum`` runs (``async with forum:`` around the server's run, as
    :func:`serve_stdio` does). The forum must be running for the calls to be answered.

    Args:
        forum: The forum whose agents are the tools.
        agents: The agents to serve (agents of ``forum``, or their aliases), in this order;
            by default every agent registered on ``forum`` so far, in the order they were.
        name: The server's name, as clients see it.

    Raises:
        TypeError: ``forum`` is not a :class:`~agentforum.Forum`, or an item of ``agents``
            is neither an agent nor a str.
        ValueError: an alias that is not an agent of ``forum``, an agent of another forum,
            an agent named twice, or an alias that MCP clients' models refuse as a tool name
            (1 to 64 letters, digits, ``_`` or ``-``).
    """
    if not isinstance(forum, Forum):
        raise TypeError(f"forum must be a Forum, not {type(forum).__qualname__}")
    served: dict[str, Agent] = {}
    for item in forum._agents.values() if agents is None else agents:
        if isinstance(item, str):
            agent = forum._agents.get(item)
            if agent is None:
                known = ", ".join(map(repr, forum._agents)) or "none"
                raise ValueError(f"the forum has no agent called {item!r} (its agents: {known})")
        elif isinstance(item, Agent):
            if item.forum is not forum:
                raise ValueError(f"{item!r} is an agent of another forum")
            agent = item
        else:
            raise TypeError(f"an agent to serve must be an Agent or its alias, not {item!r}")
        if agent.alias in served:
            raise ValueError(f"the agent {agent.alias!r} is named twice")
        if _NAME.fullmatch(agent.alias) is None:
            raise ValueError(
                f"the agent {agent.alias!r} cannot be an MCP tool: a tool's name is 1 to 64 "
                "letters, digits, '_' or '-' (give the agent such an alias)"
            )
        served[agent.alias] = agent
    tools = [
        mcp_types.Tool(
            name=alias,
            description=agent.description,
            input_schema=_input_schema(),
            output_schema=_output_schema(),
        )
        for alias, agent in served.items()
    ]

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=[tool.model_copy(deep=True) for tool in tools])

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        agent = served.get(params.name)
        if agent is None:
            raise SDKError(mcp_types.INVALID_PARAMS, f"there is no tool named {params.name!r}")
        return await _ask(agent, params.arguments or {})

    return Server(name, on_list_tools=list_tools, on_call_tool=call_tool)


def _input_schema() -> dict[str, Any]:
    """The input schema of every agent's tool: the request, and optionally where to go on
    and the agent function's keyword arguments."""
    return {
        "type": "object",
        "properties": {
            "request": {"type": "string", "description": "What to ask the agent."},
            "branch_from": {
                "type": "string",
                "description": "Continue the conversation after this message: a ref, a "
                "message hash or a unique prefix of one (the hash of an earlier answer). "
                "Default: a new conversation.",
            },
            "kwargs": {
                "type": "object",
                "description": "Keyword arguments for the agent (JSON values).",
            },
        },
        "required": ["request"],
        "additionalProperties": False,
    }


def _output_schema() -> dict[str, Any]:
    """The output schema of every agent's tool: the answer's text and its message's hash."""
    return {
        "type": "object",
        "properties": {
            "content": {"type": "string", "description": "The agent's last message."},
            "hash": {
                "type": "string",
                "description": "That message's hash: the branch_from that continues there.",
            },
        },
        "required": ["content", "hash"],
    }


def _failed(text: str) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(content=[mcp_types.TextContent(text=text)], is_error=True)


async def _ask(agent: Agent, arguments: Mapping[str, Any]) -> mcp_types.CallToolResult:
    """Ask ``agent`` as a tool call with ``arguments`` asks it: its result, or its error."""
    request = arguments.get("request")
    if not isinstance(request, str):
        return _failed(f"Error: the argument 'request' must be a string, not {request!r}")
    branch_from = arguments.get("branch_from")
    if branch_from is not None and not isinstance(branch_from, str):
        return _failed(
            f"Error: the argument 'branch_from' must be a ref or a message hash, not "
            f"{branch_from!r}"
        )
    kwargs = arguments.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        return _failed(f"Error: the argument 'kwargs' must be an object, not {kwargs!r}")
    unknown = sorted(set(arguments) - {"request", "branch_from", "kwargs"})
    if unknown:
        return _failed(f"Error: unknown arguments: {', '.join(unknown)}")
    taken = sorted(_ASK_PARAMETERS & set(kwargs))
    if taken:
        return _failed(f"Error: 'kwargs' may not name {', '.join(taken)}")
    try:
        sequence = agent.ask(request, branch_from=branch_from, **kwargs)
    except (AgentForumError, TypeError, ValueError) as exc:
        return _failed(f"Error: the call of {agent.alias!r} was refused: {exc}")
    try:
        last = await sequence.last()
    except AgentError as exc:
        return _failed(f"Error: {exc}")
    except EmptySequenceError:
        return _failed(f"Error: the agent {agent.alias!r} answered nothing")
    except AgentForumError as exc:  # a branch_from that names no message, say
        return _failed(f"Error: the call of {agent.alias!r} failed: {exc}")
    except BaseException:
        # A cancelled request (or the server stopping): the call is cancelled too.
        sequence.cancel()
        raise
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(text=last.content)],
        structured_content={"content": last.content, "hash": last.hash},
    )


async def serve_stdio(
    forum: Forum,
    *,
    agents: Sequence[Agent | str] | None = None,
    name: str = DEFAULT_SERVER_NAME,
    store: MessageStore | str | os.PathLike[str] | None = None,
) -> None:
    """Serve ``forum``'s agents as MCP tools on this process's standard input and output.

    Runs ``forum`` (``async with forum:``) for as long as it serves, around the server of
    :func:`mcp_server` on the SDK's stdio transport; returns when the client closes the
    standard input (after the calls still running are cancelled and the forum has
    exited), and ends the same way when cancelled. While it serves, the standard output
    is the protocol's: what the agents print goes to standard error.

    Args:
        forum: The forum whose agents are the tools; not running.
        agents, name: As for :func:`mcp_server`.
        store: Where the conversations are kept while it serves, instead of the forum's
            own store: a :class:`~agentforum.MessageStore`, the path of an SQLite database
            (created if missing) or a ``postgresql://`` URL; a store opened here is closed
            after. The forum's own store is back in place when it returns.

    Raises:
        RuntimeError: ``forum`` is running already.
        TypeError, ValueError: as for :func:`mcp_server`.
        StoreError: the store cannot be opened.
    """
    server = mcp_server(forum, agents=agents, name=name)
    if forum.is_running:
        raise RuntimeError("the forum is running already: serve_stdio runs it")
    if store is None:
        async with forum:
            await _serve_stdio(server)
        return
    async with opened(store) as target:
        await target.refs()  # a store that cannot be opened is reported before serving
        previous = forum._swap_store(target)
        owned, forum._owns_store = forum._owns_store, False
        try:
            async with forum:
                await _serve_stdio(server)
        finally:
            forum._swap_store(previous)
            forum._owns_store = owned


async def _serve_stdio(server: Server[Any]) -> None:
    async with AsyncExitStack() as stack:
        lines = _stdin_lines(stack)
        # The SDK reads its standard input in a worker thread, which a cancellation waits
        # for: until the client sends a line. Read without a thread where it can be done.
        stdin: Any = lines
        read, write = await stack.enter_async_context(stdio_server(stdin=stdin))
        await server.run(read, write, server.create_initialization_options())


def _stdin_lines(stack: AsyncExitStack) -> _Lines | None:
    """The lines of the standard input, read without a thread, if it is a pipe, a socket or
    a terminal (what can be waited for) on POSIX; else ``None``, the SDK's own reader."""
    if sys.platform == "win32":  # pragma: no cover - no waiting for a pipe there
        return None
    try:
        mode = os.fstat(0).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0)):
            return None
        fd = os.dup(0)
    except OSError:
        return None
    stack.callback(os.close, fd)
    return _Lines(fd)


class _Lines:
    """The lines of a file descriptor (a pipe, a socket, a terminal), decoded as UTF-8.

    Each read waits until the descriptor is readable, then reads what is there: never a
    blocked thread, so a cancellation ends it at once.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._ended = False

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        start = 0
        while True:
            newline = self._buffer.find(b"\n", start)
            if newline >= 0:
                line = bytes(self._buffer[: newline + 1])
                del self._buffer[: newline + 1]
                return line.decode("utf-8", "replace")
            if self._ended:
                if not self._buffer:
                    raise StopAsyncIteration
                line = bytes(self._buffer)
                self._buffer.clear()
                return line.decode("utf-8", "replace")
            start = len(self._buffer)
            await anyio.wait_readable(self._fd)
            chunk = os.read(self._fd, _CHUNK)
            if chunk:
                self._buffer += chunk
            else:
                self._ended = True


#: The most bytes read from the standard input at once.
_CHUNK: Final = 65536


__all__ = [
    "DEFAULT_SERVER_NAME",
    "DEFAULT_TIMEOUT",
    "HTTPServer",
    "MCPError",
    "MCPTool",
    "MCPToolError",
    "StdioServer",
    "mcp_server",
    "mcp_tools",
    "serve_stdio",
]
