"""Chains and loops of agents: one agent function that calls others in turn."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

import anyio

from .._agents import Agent
from .._exceptions import AgentError

if TYPE_CHECKING:
    from .._messages import Message
    from .._promises import MessageSequence
    from .._runtime import InteractionContext

StopCondition: TypeAlias = Callable[["Message"], "bool | Awaitable[bool]"]
"""A stop condition: a function of a turn's last message, true to stop there (sync or async)."""


class AgentLoop:
    """The agent function of :func:`agent_chain`, :func:`agent_loop` and :func:`dialog_loop`.

    Register it with ``forum.agent`` (its default alias is ``"chain"``, ``"loop"`` or
    ``"dialog"``). Each call of it runs turns, one at a time: a turn is one call of one of
    its ``agents``, asked with the previous turn's responses (the first turn with the
    loop's own requests), so that its call continues the previous turn's branch: the branch
    is the history. The loop responds with every turn's responses, in order, as they
    stream. A turn starts once the previous one has responded, and reads its responses as
    they stream; with a ``stop`` condition, once the previous one has ended. The loop never
    schedules work faster than it is consumed: with agents that read their requests before
    they answer, at most two turns run at once. See ``docs/agents.md``.

    Attributes:
        agents: The agents, called in this order (and round again, for a loop).
        cycle: Whether the turns go round the agents again (a loop) or end after the last
            (a chain).
        max_turns: The most turns a call runs (``None``: no limit).
        stop: The stop condition, called with each turn's last message (or ``None``).
        cache: Whether ``forum.agent`` caches the loop when not told otherwise: only if
            every one of its agents is cached. A loop that asks a human (an uncached
            agent) must run again every time.
    """

    def __init__(
        self,
        agents: Sequence[Agent],
        *,
        cycle: bool,
        max_turns: int | None,
        stop: StopCondition | None,
        name: str,
    ) -> None:
        agents = tuple(agents)
        if not agents:
            raise ValueError(f"{name} needs at least one agent")
        for agent in agents:
            if not isinstance(agent, Agent):
                raise TypeError(
                    f"{name} takes Agents (made by forum.agent), not {type(agent).__qualname__}"
                )
        if any(agent.forum is not agents[0].forum for agent in agents):
            raise ValueError(f"the agents of a {name} must belong to one forum")
        if max_turns is not None and (
            not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 1
        ):
            raise ValueError(f"max_turns must be a positive int or None, not {max_turns!r}")
        if stop is not None and not callable(stop):
            raise TypeError(f"stop must be a function of a message, not {stop!r}")
        self.agents: tuple[Agent, ...] = agents
        self.cycle = cycle
        self.max_turns = max_turns
        self.stop = stop
        self.cache = all(agent.cache for agent in agents)
        self.__name__ = name
        aliases = [agent.alias for agent in agents]
        if name == "dialog":
            doc = f"A conversation: {aliases[0]}, then {aliases[1]}, in turn."
        elif cycle:
            doc = f"Calls {', '.join(aliases)} in turn, and round again."
        else:
            doc = f"Calls {', then '.join(aliases)}."
        self.__doc__ = doc

    def __repr__(self) -> str:
        aliases = ", ".join(agent.alias for agent in self.agents)
        limit = "" if self.max_turns is None else f", max_turns={self.max_turns}"
        return f"<AgentLoop {self.__name__} of {aliases}{limit}>"

    async def __call__(self, ctx: InteractionContext) -> None:
        """Run the turns; stop after the last agent (a chain), a limit, a condition, or silence.

        Raises:
            ValueError: an agent of another forum than the loop's.
            AgentError: a turn failed (the loop's branch ends with its error).
        """
        if self.agents[0].forum is not ctx.forum:
            raise ValueError(
                f"the agents of {ctx.agent.alias!r} belong to another forum than the "
                f"{self.__name__} itself"
            )
        # Every turn started, in order: they all end before the loop does.
        turns: list[MessageSequence] = []
        try:
            await self._take_turns(ctx, turns)
            for responses in turns:
                await responses.messages()  # the last turns may still run, or fail
        except BaseException:
            # A turn failed, or the loop was cancelled: the loop ends with that. A turn
            # started on a failed turn's responses while they streamed is cancelled, or
            # fails on its requests with the same error: that is seen here, so that it is
            # not raised again as an error nobody observed.
            with anyio.CancelScope(shield=True):
                for responses in turns:
                    responses.cancel()
                for responses in turns:
                    with contextlib.suppress(AgentError):
                        await responses.messages()
            raise

    async def _take_turns(self, ctx: InteractionContext, turns: list[MessageSequence]) -> None:
        asked: MessageSequence | None = ctx.request_messages
        # The last turn that responded: where a chain goes on after a silent agent.
        previous: MessageSequence | None = None
        count = len(self.agents)
        while self.max_turns is None or len(turns) < self.max_turns:
            if not self.cycle and len(turns) == count:
                return
            agent = self.agents[len(turns) % count]
            if asked is not None:
                # Existing messages continue their own branch: the call is placed after them.
                responses = agent.ask(asked)
            elif previous is not None:
                responses = agent.ask(branch_from=await previous.last())
            else:
                responses = agent.ask()  # after the loop's last request, as any nested call
            turns.append(responses)
            ctx.respond(responses)  # the consumers see the turn's tokens live
            if self.stop is None:
                # Back-pressure: the next turn starts once this one has responded, and is
                # asked with its responses as they stream (so a console shows them live).
                responded = await _responds(responses)
            else:
                # The stop condition is asked with the turn's last message: the next turn
                # waits for the end of this one.
                messages = await responses.messages()
                responded = bool(messages)
                if responded and await _verdict(self.stop, messages[-1]):
                    return
            if not responded:
                if self.cycle:
                    return  # an agent with nothing to say ends the conversation
                asked = None  # the next agent of a chain continues from the same point
                continue
            asked = previous = responses


async def _verdict(stop: StopCondition, message: Message) -> bool:
    verdict = stop(message)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return bool(verdict)


async def _responds(responses: MessageSequence) -> bool:
    """Wait for the first message of ``responses``: whether there is one."""
    async for _ in responses:
        return True
    return False


def agent_chain(agents: Sequence[Agent], *, stop: StopCondition | None = None) -> AgentLoop:
    """Return an agent function that calls ``agents`` in turn, each with the previous one's answer.

    ::

        pipeline = forum.agent(agent_chain([researcher, writer, critic]), alias="pipeline")

    The first agent is asked with the chain's requests, each next one with the previous
    one's responses, continuing its branch (so each sees the whole conversation in
    :meth:`InteractionContext.history`). The chain responds with every agent's responses,
    in order. An agent that responds nothing is skipped: the next one continues from the
    same point, without requests. The chain ends after the last agent, or earlier when
    ``stop`` is true of an agent's last message.

    Args:
        agents: The agents, of one forum (the chain's), in order.
        stop: A function of a turn's last message (sync or async): true ends the chain.

    Raises:
        ValueError: no agents, or agents of several forums.
        TypeError: something else than an :class:`Agent`.
    """
    return AgentLoop(
        agents,
        cycle=False,
        max_turns=None,
        stop=stop,
        name="chain",
    )


def agent_loop(
    agents: Sequence[Agent], *, max_turns: int | None = None, stop: StopCondition | None = None
) -> AgentLoop:
    """Return an agent function that calls ``agents`` round and round, each with the last answer.

    ::

        debate = forum.agent(agent_loop([pro, con], max_turns=6), alias="debate")

    As :func:`agent_chain`, going back to the first agent after the last, until
    ``max_turns`` turns (calls of an agent) have run, ``stop`` is true of a turn's last
    message, or an agent responds nothing; or until the call is cancelled.

    Args:
        agents: The agents, of one forum, in turn order.
        max_turns: The most turns (``None``: no limit).
        stop: A function of a turn's last message (sync or async): true ends the loop.

    Raises:
        ValueError: no agents, agents of several forums, or ``max_turns`` not a positive int.
        TypeError: something else than an :class:`Agent`, or a ``stop`` not callable.
    """
    return AgentLoop(
        agents,
        cycle=True,
        max_turns=max_turns,
        stop=stop,
        name="loop",
    )


def dialog_loop(
    user: Agent,
    assistant: Agent,
    *,
    max_turns: int | None = None,
    stop: StopCondition | None = None,
) -> AgentLoop:
    """Return an agent function for a conversation: ``user``, then ``assistant``, in turn.

    ::

        chat = forum.agent(dialog_loop(user, assistant), alias="chat")

    :func:`agent_loop` of ``[user, assistant]``: the user (a :func:`console_user_agent`, a
    :class:`UserProxy`'s agent, or any agent) is asked first, with the dialog's requests;
    the conversation ends when the user (or the assistant) responds nothing, after
    ``max_turns`` turns (each answer of either is a turn), or when ``stop`` is true of a
    turn's last message.

    Raises:
        ValueError: agents of two forums, or ``max_turns`` not a positive int.
        TypeError: something else than an :class:`Agent`, or a ``stop`` not callable.
    """
    return AgentLoop(
        (user, assistant),
        cycle=True,
        max_turns=max_turns,
        stop=stop,
        name="dialog",
    )
