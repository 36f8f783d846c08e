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


async def test_rejected_ask_schedules_nothing_and_forum_exits() -> None:
    """``ask`` with content of a wrong type raises before any call exists.

    The call used to be scheduled before the content was checked; its requests were never
    closed, so ``async with forum:`` waited for it forever.
    """
    forum = Forum()

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        ctx.respond("hi")

    with anyio.fail_after(5):
        async with forum:
            with pytest.raises(TypeError, match=r"^ask\(\): int is not message content"):
                echo.ask(42)
            with pytest.raises(TypeError, match=r"kwargs\['x'\]"):
                echo.ask("fine", x=object())
    assert await forum.store.children(None) == []


async def test_ask_without_content_is_a_call_without_requests() -> None:
    """``ask()`` and ``ask(None)`` make a call with no request: the CallMessage is a root."""
    forum = Forum()

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        ctx.respond("hi")

    with anyio.fail_after(5):
        async with forum:
            for sequence in (echo.ask(), echo.ask(None)):
                branch = await sequence.history(include_calls=True)
                assert [type(message).__name__ for message in branch] == [
                    "CallMessage",
                    "Message",
                ]
                assert branch[0].parent is None
                assert branch[1].reply_to is None


async def test_an_object_with_an_async_call_method_is_an_agent() -> None:
    """``forum.agent`` accepts an object whose ``__call__`` is ``async def``; a sync one not.

    It used to accept only ``async def`` functions (``inspect.iscoroutinefunction``).
    """
    forum = Forum()

    class Greeter:
        __name__ = "greeter"

        async def __call__(self, ctx: InteractionContext) -> None:
            ctx.respond("hi")

    class Sync:
        def __call__(self, ctx: InteractionContext) -> None:
            ctx.respond("hi")

    greeter = forum.agent(Greeter())
    assert greeter.alias == "greeter"
    with pytest.raises(TypeError, match="async def"):
        forum.agent(Sync(), alias="sync")
    async with forum:
        assert (await greeter.ask("hello").last()).content == "hi"
