"""A model agent that uses the tools of an MCP server, next to a Python function.

The MCP server is this file too: run with --serve, it is a server of two tools (a
made-up weather service), written with the official SDK's MCPServer, that talks MCP on
its standard input and output. Run without it, the program starts itself as that server
(a subprocess, for as long as the `async with mcp_tools(...)` block runs), lists its
tools, and asks a model, which may call them and the Python function local_time. Then it
asks the same question again: the answer comes from the forum's cache, with the very same
messages, and neither the model nor the MCP server is called (the server counts its calls).

With a model (pip install "agentforum[mcp,openai]"), on OpenAI or a local server:

    OPENAI_API_KEY=sk-... OPENAI_MODEL=gpt-4o-mini python examples/mcp_tools.py "Weather in Paris?"
    OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_MODEL=llama3.2 python examples/mcp_tools.py

Without one (no OPENAI_API_KEY), it lists the tools and calls one itself, as a model
would (no network, no key):

    python examples/mcp_tools.py [--backend trio]

See docs/mcp.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import anyio

from agentforum import Forum, Message
from agentforum.mcp import MCPTool, StdioServer, mcp_tools

#: This file, which the program starts again as the MCP server.
HERE = os.path.abspath(__file__)
QUESTION = "What is the weather in Paris, and what time is it there?"
FORECASTS = {"paris": "sunny, 21 °C", "london": "rain, 14 °C", "tokyo": "cloudy, 18 °C"}


def serve() -> None:
    """Be the MCP server: two tools, on stdio, until the client closes the connection."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("weather", log_level="WARNING")
    calls = {"count": 0}

    @server.tool()
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        calls["count"] += 1
        return f"{city}: {FORECASTS.get(city.lower(), 'no forecast for this city')}"

    @server.tool()
    def calls_so_far() -> int:
        """How many times get_weather was called (for this demo)."""
        return calls["count"]

    server.run()


def local_time(city: str) -> str:
    """The local time in a city."""
    return {"london": "13:05", "tokyo": "22:05"}.get(city.lower(), "14:05")


def show(message: Message) -> None:
    """Print one message of the agent: a tool call, a tool result, or the answer."""
    if "tool_calls" in message.metadata:
        for call in message.metadata["tool_calls"]:
            print(f"  calls {call['name']}({call['arguments']})")
    elif "tool_call_id" in message.metadata:
        print(f"  {message.metadata['tool']} → {message.content}")
    else:
        print(f"answer: {message.content}")


async def ask_a_model(tools: tuple[MCPTool, ...], question: str) -> None:
    """Ask the model twice: the second time, the cache answers."""
    import openai

    from agentforum.llms.openai import openai_agent

    model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
    forum = Forum()
    async with openai.AsyncOpenAI() as client:
        agent = openai_agent(model=model, client=client, tools=[*tools, local_time])
        assistant = forum.agent(agent, alias="assistant")
        async with forum:
            print(f"you: {question}")
            first = await assistant.ask(question).messages()
            for message in first:
                show(message)
            again = await assistant.ask(question).messages()
    same = [message.hash for message in again] == [message.hash for message in first]
    print(f"asked again: {'the same messages, from the cache' if same else 'a new answer'}")


async def call_one(tools: tuple[MCPTool, ...]) -> None:
    """No model: call a tool as a model would, with JSON arguments."""
    get_weather = next(tool for tool in tools if tool.name == "get_weather")
    content, error = await get_weather.run('{"city": "Paris"}')
    print(f"get_weather(city='Paris') → {content}" + (" (an error)" if error else ""))
    print("(no OPENAI_API_KEY: no model asked; set it to let a model call the tools)")


async def main(question: str) -> None:
    server = StdioServer(sys.executable, [HERE, "--serve"])
    async with mcp_tools(server, timeout=60) as tools:
        for tool in tools:
            print(f"MCP tool {tool.name}: {tool.description}")
        if os.environ.get("OPENAI_API_KEY"):
            await ask_a_model(tools, question)
        else:
            await call_one(tools)
        counter = next(tool for tool in tools if tool.name == "calls_so_far")
        count, _ = await counter.run("{}")
        print(f"the MCP server ran get_weather {count} time(s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question", nargs="?", default=QUESTION, help="what to ask the model")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--serve", action="store_true", help="be the MCP server, on stdio")
    arguments = parser.parse_args()
    if arguments.serve:
        serve()
    else:
        anyio.run(main, arguments.question, backend=arguments.backend)
