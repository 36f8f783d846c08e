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
a tool error the model reads, never a hang. See ``docs/mcp.md``.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

try:
    import httpx2
    import mcp_types
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError as SDKError
except ModuleNotFoundError as exc:
    if (exc.name or "").partition(".")[0] not in {"mcp", "mcp_types", "httpx2"}:
        raise
    raise ModuleNotFoundError(
        "agentforum.mcp needs the MCP SDK: pip install 'agentforum[mcp]'", name=exc.name
    ) from exc
from pydantic import ValidationError

from ._exceptions import AgentForumError
from ._json import FrozenDict, freeze_mapping
from ._runtime import error_type_of
from .llms._tools import _NAME, Tool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

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


__all__ = [
    "DEFAULT_TIMEOUT",
    "HTTPServer",
    "MCPError",
    "MCPTool",
    "MCPToolError",
    "StdioServer",
    "mcp_tools",
]
