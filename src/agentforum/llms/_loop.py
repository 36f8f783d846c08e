"""The tool loop of the model agents: ask the model, run the tools it calls, ask again."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from . import LLMToolLoopError
from ._tools import recorded_calls, run_tools

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from .._messages import Message
    from .._runtime import InteractionContext
    from ._tools import Tool


async def tool_loop(
    ctx: InteractionContext,
    tools: Mapping[str, Tool],
    max_tool_rounds: int,
    ask: Callable[[list[Message]], Awaitable[Message]],
) -> None:
    """Ask the model until it answers without calling a tool.

    ``ask(turns)`` asks the model once, ``turns`` being this call's own responses so far
    (the answers that called tools, and the tools' results), responds with the answer and
    returns it. An answer whose metadata has ``tool_calls`` has its tools run
    concurrently, each result responded as a message of the agent, and the model is asked
    again.

    Raises:
        LLMToolLoopError: the model still calls tools after ``max_tool_rounds`` rounds.
    """
    me = ctx.agent.alias
    turns: list[Message] = []
    rounds = 0
    while True:
        turn = await ask(turns)
        if "tool_calls" not in turn.metadata:
            return
        turns.append(turn)
        if rounds == max_tool_rounds:
            raise LLMToolLoopError(
                f"the model still calls tools after {rounds} rounds of them "
                f"(max_tool_rounds={max_tool_rounds}): it may be stuck in a loop"
            )
        rounds += 1
        for result in await run_tools(tools, recorded_calls(turn), me):
            ctx.respond(result.content, **cast("dict[str, Any]", result.metadata))
            turns.append(result)
