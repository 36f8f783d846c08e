"""Agents, their calls, and the context an agent function receives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from . import _runtime
from ._content import check_point, flatten
from ._exceptions import ForumNotRunningError
from ._json import EMPTY, FrozenDict, JSONValue, freeze_mapping

if TYPE_CHECKING:
    from ._forum import Forum
    from ._messages import Message
    from ._promises import MessagePromise, MessageSequence


AgentFunction: TypeAlias = Callable[..., Awaitable[None]]
"""An agent function: ``async def f(ctx: InteractionContext, **kwargs) -> None``."""


class Agent:
    """An agent of a :class:`Forum`: an agent function with a name. Made by ``@forum.agent``.

    Calling it (:meth:`ask`, :meth:`tell`, :meth:`start_asking`) starts the function in the
    forum's task group, nested in the task group of the calling agent's call, and returns at
    once. Keyword arguments of a call go to the function and are part of its
    :class:`CallMessage` (JSON values; they reach the function frozen: lists as tuples).

    :meth:`with_kwargs` makes a copy with preset keyword arguments: the same agent of the
    tree (same alias), whose calls add the presets to their own. Agents compare by
    identity: each :meth:`with_kwargs` copy is an object of its own.
    """

    __slots__ = ("alias", "cache", "description", "forum", "function", "kwargs")

    def __init__(
        self,
        forum: Forum,
        function: AgentFunction,
        alias: str,
        description: str,
        *,
        cache: bool = True,
    ) -> None:
        #: The forum the agent belongs to.
        self.forum = forum
        #: The agent function.
        self.function = function
        #: The agent's name in the tree: the sender of its messages, the receiver of its calls.
        self.alias = alias
        #: What the agent does, in words (from the decorator or the function's docstring).
        self.description = description
        #: Whether calls of this agent are answered through the cache (when the forum's
        #: ``cache`` is on too). See ``docs/caching.md``.
        self.cache = cache
        #: The preset keyword arguments of every call (see :meth:`with_kwargs`), frozen.
        self.kwargs: FrozenDict = EMPTY

    def __repr__(self) -> str:
        if self.kwargs:
            presets = ", ".join(f"{key}={value!r}" for key, value in sorted(self.kwargs.items()))
            return f"<Agent {self.alias!r} with {presets}>"
        return f"<Agent {self.alias!r}>"

    def with_kwargs(self, **kwargs: JSONValue) -> Agent:
        """Return this agent with preset keyword arguments for every call.

        The copy is the same agent of the tree (same alias, function, forum, description and
        ``cache``); it is not registered again. A call of the copy is the call with the
        presets added to its keyword arguments, and a keyword argument given to the call
        overrides the preset of the same name. The effective keyword arguments are what the
        agent function receives and what the :class:`CallMessage` records, so
        ``a.with_kwargs(x=1).ask(q)`` and ``a.ask(q, x=1)`` are the same call: same hash,
        same cache entry. Presets of presets add up, later ones overriding earlier ones.

        Raises:
            TypeError: a keyword argument of a type that is not a JSON value, or nested
                more than 100 levels deep.
            ValueError: a JSON value out of range (a NaN, say), as for :meth:`ask`.
        """
        preset = Agent(self.forum, self.function, self.alias, self.description, cache=self.cache)
        preset.kwargs = self._merged(freeze_mapping(kwargs, "kwargs"))
        return preset

    def _merged(self, frozen: dict[str, JSONValue]) -> FrozenDict:
        """The presets with the frozen keyword arguments ``frozen`` added over them."""
        if not frozen:
            return self.kwargs
        return FrozenDict._trusted({**self.kwargs, **frozen})

    def ask(
        self,
        content: object = None,
        *,
        branch_from: Message | MessagePromise | str | None = None,
        blank_history: bool = False,
        **kwargs: JSONValue,
    ) -> MessageSequence:
        """Call the agent with ``content`` as the requests; return the responses at once.

        Args:
            content: The requests: a ``str``, :class:`Message`, :class:`MessagePromise`,
                :class:`StreamedMessage`, :class:`MessageSequence`, or a sync or async
                iterable of these (flattened in order); ``None`` for no request.
            branch_from: Continue the branch after this message (or hash, or hash prefix).
            blank_history: Start a new tree (the first request becomes a root).
            kwargs: Keyword arguments for the agent function (JSON values), added to the
                agent's presets (:meth:`with_kwargs`) and overriding them.

        Raises:
            ForumNotRunningError: the forum is not running.
            TypeError: content or a keyword argument of a type that is not allowed, nested
                more than 100 levels deep, or a str of content that is not valid Unicode
                (a lone surrogate); nothing is scheduled.
            ValueError: a keyword argument out of range (a NaN, say).
        """
        call = self._start(content, branch_from, blank_history, kwargs, cacheable=True)
        call.close_requests()
        return _runtime.sequence(call)

    def tell(
        self,
        content: object = None,
        *,
        branch_from: Message | MessagePromise | str | None = None,
        blank_history: bool = False,
        **kwargs: JSONValue,
    ) -> None:
        """Call the agent like :meth:`ask`, without its responses.

        The responses are still recorded in the tree. If the call fails, nobody observes its
        error, so with ``strict_errors`` the forum raises it when it exits.
        """
        self.ask(content, branch_from=branch_from, blank_history=blank_history, **kwargs)

    def start_asking(
        self,
        *,
        branch_from: Message | MessagePromise | str | None = None,
        blank_history: bool = False,
        **kwargs: JSONValue,
    ) -> AgentCall:
        """Start a call whose requests are sent later, while the agent may already read them.

        Returns an :class:`AgentCall`: send requests with :meth:`AgentCall.send_request`,
        then get the responses with :meth:`AgentCall.response_sequence`, which closes the
        requests. Requests left open are closed when the agent function (or the
        ``async with forum:`` block) that started the call ends.
        """
        call = self._start(None, branch_from, blank_history, kwargs, cacheable=False)
        owner = call.caller
        if owner is None:
            call.state.open_calls.append(call)
        elif owner.open_calls is None:
            owner.open_calls = [call]
        else:
            owner.open_calls.append(call)
        return AgentCall(call)

    def _start(
        self,
        content: object,
        branch_from: Message | MessagePromise | str | None,
        blank_history: bool,
        kwargs: dict[str, JSONValue],
        *,
        cacheable: bool,
    ) -> _runtime.Call:
        """Check every argument, then start the call: nothing happens if a check fails."""
        forum = self.forum
        state = forum._state
        if state is None:
            raise ForumNotRunningError(
                f"agent {self.alias!r} was called while its forum is not running: "
                "call agents inside `async with forum:`"
            )
        check_point(branch_from, "branch_from")
        if branch_from is not None and blank_history:
            raise ValueError("give branch_from or blank_history=True, not both")
        frozen = self._merged(freeze_mapping(kwargs, "kwargs")) if kwargs else self.kwargs
        items = [] if content is None else flatten(content, "ask()")
        cached = cacheable and self.cache and forum.cache
        return _runtime.start(self, state, items, frozen, branch_from, blank_history, cached=cached)


class AgentCall:
    """A call started by :meth:`Agent.start_asking`, whose requests are still being sent."""

    __slots__ = ("_call",)

    def __init__(self, call: _runtime.Call) -> None:
        self._call = call

    def __repr__(self) -> str:
        return f"<AgentCall of {self._call.agent.alias!r}>"

    def send_request(self, content: object) -> AgentCall:
        """Queue ``content`` as more requests (never blocks); return this call, for chaining.

        Raises:
            TypeError: content that is not allowed, as for :meth:`Agent.ask`.
            anyio.ClosedResourceError: the requests are closed.
        """
        self._call.send("requests", flatten(content, "send_request()"), None, EMPTY)
        return self

    def response_sequence(self) -> MessageSequence:
        """Close the requests and return the responses (the same sequence every time)."""
        self._call.close_requests()
        return _runtime.sequence(self._call)

    def cancel(self) -> None:
        """Cancel the call and every call nested in it; as :meth:`MessageSequence.cancel`."""
        self._call.cancel()
