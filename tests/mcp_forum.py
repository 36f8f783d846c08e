"""A forum of echo agents, served by ``agentforum mcp serve mcp_forum:forum`` in the tests.

No model: ``echo`` repeats each request (in capitals with ``shout=True``), ``reverse``
reverses it, and ``broken`` always fails. ``not_a_forum`` is there for the command's
errors.
"""

from __future__ import annotations

from agentforum import Forum, InteractionContext

forum = Forum()
not_a_forum = "a string"


@forum.agent
async def echo(ctx: InteractionContext, shout: bool = False) -> None:
    """Repeats what it is told."""
    async for request in ctx.request_messages:
        text = f"You said: {(await request).content}"
        ctx.respond(text.upper() if shout else text)


@forum.agent
async def reverse(ctx: InteractionContext) -> None:
    """Says what it is told backwards."""
    async for request in ctx.request_messages:
        ctx.respond((await request).content[::-1])


@forum.agent
async def broken(ctx: InteractionContext) -> None:
    """Always fails."""
    raise ValueError("the broken agent is broken")
