"""A real MCP server, written with the SDK's ``MCPServer``, for the tests of agentforum.mcp.

Run as a subprocess: ``python mcp_server.py`` serves on stdin/stdout; ``python
mcp_server.py --http`` serves streamable HTTP on 127.0.0.1, on a port the system picks,
and prints ``PORT <n>`` on stdout once it listens (the tests read that line, never wait
for a time). Its tools:

- ``add``: the sum of two integers (structured output).
- ``shout``: its text in capitals (plain text).
- ``calls``: how many times the other tools were called, server side.
- ``fail``: raises, which the SDK turns into an ``isError`` result.
- ``die``: the server process exits while the call waits for its answer.
- ``hang``: never answers.
- ``media``: a result of every kind of content block, and one of structured content only.
- ``garble``: answers the call with a result that is not a ``CallToolResult``, or whose
  structured content does not fit the output schema (written straight to stdout as the
  server's JSON-RPC response; stdio only).
"""

from __future__ import annotations

import json
import os
import socket
import sys

import anyio
import mcp_types
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("agentforum-test-server", log_level="CRITICAL")
counted = {"calls": 0}
#: The pipe the client reads, as the process started with it (the SDK diverts file
#: descriptor 1 to stderr while it serves, and writes the protocol to a duplicate).
wire = os.dup(1)


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    counted["calls"] += 1
    return a + b


@server.tool()
def shout(text: str) -> str:
    """The text in capitals."""
    counted["calls"] += 1
    return text.upper()


@server.tool()
def calls() -> int:
    """How many times the other tools were called."""
    return counted["calls"]


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    counted["calls"] += 1
    raise ValueError(reason)


@server.tool()
def die() -> str:
    """The server exits while the call waits."""
    sys.stdout.flush()
    os._exit(3)


@server.tool()
async def hang() -> str:
    """Never answers."""
    await anyio.Event().wait()
    return "unreachable"


@server.tool()
def media(structured: bool) -> mcp_types.CallToolResult:
    """Content of every kind."""
    if structured:
        return mcp_types.CallToolResult(content=[], structured_content={"answer": 42})
    return mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(text="a text"),
            mcp_types.ImageContent(data="AAAA", mime_type="image/png"),
            mcp_types.AudioContent(data="AAAAAA==", mime_type="audio/wav"),
            mcp_types.ResourceLink(uri="file:///tmp/report.pdf", name="report"),
            mcp_types.EmbeddedResource(
                resource=mcp_types.TextResourceContents(uri="file:///notes.txt", text="notes")
            ),
            mcp_types.EmbeddedResource(
                resource=mcp_types.BlobResourceContents(uri="file:///data.bin", blob="AAAA")
            ),
        ]
    )


@server.tool()
def garble(ctx: Context, schema: bool = False) -> int:  # type: ignore[type-arg]
    """Answers with a malformed result: content that is not a list, or (``schema``) a
    structured content that does not fit the tool's output schema (an integer ``result``).
    """
    result: dict[str, object] = {"content": "not a list"}
    if schema:
        result = {"content": [], "structuredContent": {"result": "not an integer"}}
    try:
        request_id: object = int(ctx.request_id)
    except ValueError:
        request_id = ctx.request_id
    response = {"jsonrpc": "2.0", "id": request_id, "result": result}
    os.write(wire, (json.dumps(response) + "\n").encode())
    return 0  # after the client has read the malformed answer: it is not read


def serve_http() -> None:
    import uvicorn

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning", lifespan="on")
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    if sys.argv[1:] == ["--http"]:
        serve_http()
    else:
        server.run("stdio")
