"""The tokens of a running forum's calls in progress, for the page's live feed.

:func:`agentforum.ui.serve` given a forum installs a :class:`TokenTracer` on it (the hook
that ``agentforum.otel`` uses to trace calls): each call then runs in a task group of its
own task, next to a watcher that reads the call's responses token by token and publishes
them to every open feed. The watcher ends with the call (structured: it never outlives
the call's task).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import anyio

from agentforum import AgentForumError
from agentforum._promises import PromiseIterator
from agentforum.llms._observe import ModelRequest

if TYPE_CHECKING:
    from agentforum._runtime._call import Call

#: What a token tracer hands out for a request to a model: a request that is not traced.
_UNTRACED = ModelRequest()


class Subscriber:
    """One feed's queue of token events: filled by :meth:`Live.publish`, drained by the feed."""

    __slots__ = ("event", "items")

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.event = anyio.Event()

    def drain(self) -> list[dict[str, Any]]:
        """Return the events queued since the last drain."""
        items, self.items = self.items, []
        self.event = anyio.Event()
        return items

    async def wait(self) -> None:
        """Return when an event is queued (or the hub closes)."""
        await self.event.wait()


class Live:
    """The hub of token events: the calls publish, each open feed subscribes."""

    __slots__ = ("_ids", "subscribers")

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self._ids = itertools.count(1)

    def subscribe(self) -> Subscriber:
        """A new queue, receiving every event published from now on."""
        subscriber = Subscriber()
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop filling ``subscriber``."""
        self.subscribers.discard(subscriber)

    def publish(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every subscriber, and wake them."""
        for subscriber in self.subscribers:
            subscriber.items.append(event)
            subscriber.event.set()

    def close(self) -> None:
        """Wake every subscriber (their feeds are ending)."""
        for subscriber in self.subscribers:
            subscriber.event.set()

    def next_id(self) -> int:
        """A new number for a call (the page groups its tokens by it)."""
        return next(self._ids)


class TokenTracer:
    """The call tracer that runs each call next to a watcher publishing its tokens."""

    __slots__ = ("live",)

    def __init__(self, live: Live) -> None:
        self.live = live

    def start(self, call: Call) -> None:
        """Start the call's task, in its forum's task group, with its watcher."""
        call.state.task_group.start_soon(self._run, call, name=f"call of {call.agent.alias}")

    def model_request(self, call: Call, **details: Any) -> ModelRequest:
        """Requests to models are not traced here."""
        return _UNTRACED

    async def _run(self, call: Call) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch, call)
            try:
                await call.run()
            finally:
                group.cancel_scope.cancel()

    async def _watch(self, call: Call) -> None:
        number = self.live.next_id()
        agent = call.agent.alias
        index = 0
        try:
            async for promise in PromiseIterator(call.responses):
                async for token in promise:
                    self.live.publish(
                        {"call": number, "agent": agent, "response": index, "text": token}
                    )
                index += 1
        except AgentForumError:
            pass  # the call failed: its error message is stored, and the feed reports it
        finally:
            self.live.publish({"call": number, "agent": agent, "ended": True})
