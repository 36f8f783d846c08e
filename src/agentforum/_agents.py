"""Agents, their calls, and the context an agent function receives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from ._call import Call
from ._content import flatten
from ._context import current_call
from ._exceptions import ForumNotRunningError
from ._json import EMPTY, FrozenDict, JSONValue, freeze_mapping
from ._messages import Message, is_hash
from ._promises import MessagePromise, MessageSequence
from ._stores._memory import check_prefix

if TYPE_CHECKING:
    from ._forum import Forum


AgentFunction: TypeAlias = Callable[..., Awaitable[None]]
"""An agent function: ``async def f(ctx: InteractionContext, **kwargs) -> None``."""


def _check_point(value: object, name: str) -> None:
    if value is None or isinstance(value, (Message, MessagePromise)):
        return
    if isinstance(value, str):
        if name == "reply_to" and not is_hash(value):
            raise ValueError(f"reply_to must be a full message hash, got {value!r}")
        if name == "branch_from":
            check_prefix(value)
        return
    raise TypeError(
        f"{name} must be a Message, a MessagePromise or a message hash (str), "
        f"not {type(value).__qualname__}"
    )


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
        return MessageSequence(call.responses, self.forum)

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
            self.forum._open_calls.append(call)
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
    ) -> Call:
        """Check every argument, then schedule the call: nothing happens if a check fails."""
        forum = self.forum
        group = forum._task_group
        if group is None:
            raise ForumNotRunningError(
                f"agent {self.alias!r} was called while its forum is not running: "
                "call agents inside `async with forum:`"
            )
        _check_point(branch_from, "branch_from")
        if branch_from is not None and blank_history:
            raise ValueError("give branch_from or blank_history=True, not both")
        frozen = self._merged(freeze_mapping(kwargs, "kwargs")) if kwargs else self.kwargs
        items = [] if content is None else flatten(content, "ask()")
        caller = current_call.get()
        if caller is not None and caller.forum is not forum:
            caller = None
        cached = cacheable and self.cache and forum.cache
        call = Call(self, frozen, branch_from, blank_history, caller, cached=cached)
        call.send("requests", items, None, EMPTY)
        if caller is not None and caller.task_group is not None:
            group = caller.task_group
        group.start_soon(call.run, name=f"call of {self.alias}")
        return call


class AgentCall:
    """A call started by :meth:`Agent.start_asking`, whose requests are still being sent."""

    __slots__ = ("_call",)

    def __init__(self, call: Call) -> None:
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
        return MessageSequence(self._call.responses, self._call.forum)

    def cancel(self) -> None:
        """Cancel the call and every call nested in it; as :meth:`MessageSequence.cancel`."""
        self._call.cancel()


class InteractionContext:
    """What an agent function receives: its requests, a way to respond, its agent and forum."""

    __slots__ = ("_call", "agent", "forum", "request_messages")

    def __init__(self, call: Call) -> None:
        self._call = call
        #: The agent being called.
        self.agent: Agent = call.agent
        #: The agent's forum.
        self.forum: Forum = call.forum
        #: The requests, as promises, as they arrive (full duplex: before they all exist).
        self.request_messages = MessageSequence(call.requests, call.forum)

    def __repr__(self) -> str:
        return f"<InteractionContext of {self.agent.alias!r}>"

    async def history(self, *, include_calls: bool = False) -> list[Message]:
        """Return the branch this call continues: from the root to its last request, root first.

        For a call without requests, the branch above its :class:`CallMessage` (``[]`` for
        a call at a new root). It is the input of the call: what a model is prompted with.
        Waits until every request is placed; an agent called with
        :meth:`Agent.start_asking` waits until its caller closes the requests.

        If a request fails instead, the agent function is cancelled in this wait, and the
        call's branch ends with the request's error.

        Args:
            include_calls: Keep the :class:`CallMessage` nodes (left out by default).
        """
        parent = await self._call.branch_end()
        if parent is None:
            return []
        return await self.forum._branch(parent, include_calls=include_calls)

    def respond(
        self,
        content: object,
        *,
        reply_to: Message | MessagePromise | str | None = None,
        **metadata: JSONValue,
    ) -> None:
        """Queue ``content`` as responses, in order. Never blocks.

        Content is as for :meth:`Agent.ask`; responding with another call's
        :class:`MessageSequence` passes its messages, and their tokens live, to this call's
        consumers. New messages reply to ``reply_to`` (default: the call's last request) and
        carry ``metadata``; a message that already continues the branch is reused as it is.

        Raises:
            TypeError: content or metadata that is not allowed, as for :meth:`Agent.ask`.
            ValueError: a metadata value out of range (a NaN, say).
            anyio.ClosedResourceError: the agent function has returned.
        """
        if content is None:
            raise TypeError("respond() got None, which is not message content")
        _check_point(reply_to, "reply_to")
        frozen = FrozenDict._trusted(freeze_mapping(metadata, "metadata")) if metadata else EMPTY
        self._call.send("responses", flatten(content, "respond()"), reply_to, frozen)
