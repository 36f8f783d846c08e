"""Regression tests: each pins a bug that was found and fixed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from agentforum import AgentError, Forum, InteractionContext

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


async def test_nested_call_does_not_hang_when_caller_fails_before_its_call_message() -> None:
    """A call nested in one whose requests failed continues after the caller's last request.

    It used to wait forever for the caller's CallMessage, which is never placed, so the
    forum never exited.
    """
    forum = Forum(strict_errors=False)

    @forum.agent
    async def inner(ctx: InteractionContext) -> None:
        ctx.respond("inner")

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        ctx.respond(inner.ask("x"))

    async def requests() -> AsyncIterator[str]:
        yield "ok"
        raise RuntimeError("requests broke")

    with anyio.fail_after(5):
        async with forum:
            with pytest.raises(AgentError, match="requests broke") as caught:
                await outer.ask(requests()).messages()
    error = caught.value.message
    branch = await forum.history(error)
    assert [message.content for message in branch] == ["ok", "requests broke"]
