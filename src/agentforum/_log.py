"""An append-only log that any number of tasks read at their own pace.

Memory object streams are point-to-point: each item goes to one receiver. Promises need a
broadcast where every consumer sees every item and late consumers replay from the start, so
each stream of tokens (or of promises) is kept once, in a list, and each consumer holds an
index into it. A waiting consumer sleeps on an :class:`anyio.Event` that the next append (or
the close) sets; the event is created only when somebody waits, so a producer whose consumers
keep up pays one list append per item.

A :class:`Feed` is the other direction: items from any number of producers to one consumer
(a call's requests and responses, to the task that writes its branch), an unbounded queue
that waits the same way.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class _Waitable:
    """Where consumers wait for a change: one event, made when the first of them waits."""

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: anyio.Event | None = None

    async def _wait(self) -> None:
        """Wait for the next :meth:`_wake` (a checkpoint)."""
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = self._event()
        await waiter.wait()

    def _event(self) -> anyio.Event:
        """A new event to wait on (subclasses that know their backend make it with it)."""
        return anyio.Event()

    def _wake(self) -> None:
        """Wake every consumer that waits; the next one to wait gets a new event."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()


class Log(_Waitable, Generic[T]):
    """Items appended by one producer, read by any number of consumers; closed once."""

    __slots__ = ("closed", "items")

    def __init__(self) -> None:
        super().__init__()
        self.items: list[T] = []
        self.closed = False

    def append(self, item: T) -> None:
        """Append ``item`` and wake the waiting consumers. The log must not be closed."""
        self.items.append(item)
        if self._waiter is not None:
            self._wake()

    def close(self) -> None:
        """Mark the end of the log and wake the waiting consumers; closing twice is harmless."""
        self.closed = True
        if self._waiter is not None:
            self._wake()

    async def wait_beyond(self, index: int) -> None:
        """Wait until the log has more than ``index`` items or is closed.

        A checkpoint only when it has to wait; cancellation leaves the log unchanged.
        """
        if index < len(self.items) or self.closed:
            return
        await self._wait()


class Feed(_Waitable, Generic[T]):
    """Items sent by any number of producers, received in order by one consumer.

    An unbounded memory object stream without its per-item costs: sending never blocks,
    and receiving an item that is already there is no checkpoint (the consumer's work on
    the item has its own). The consumer waits on an :class:`anyio.Event`, created only when
    the feed is empty.
    """

    __slots__ = ("_items", "closed", "dropped")

    def __init__(self) -> None:
        super().__init__()
        self._items: deque[T] = deque()
        #: No more items will be sent (the producers' end is closed).
        self.closed = False
        #: The consumer has stopped receiving: items sent now are dropped.
        self.dropped = False

    def send(self, item: T) -> None:
        """Queue ``item`` for the consumer.

        Raises:
            anyio.ClosedResourceError: the feed is closed.
            anyio.BrokenResourceError: the consumer has stopped receiving.
        """
        if self.closed:
            raise anyio.ClosedResourceError
        if self.dropped:
            raise anyio.BrokenResourceError
        self._items.append(item)
        if self._waiter is not None:
            self._wake()

    def close(self) -> None:
        """End the feed: the consumer receives what is queued, then the end."""
        self.closed = True
        if self._waiter is not None:
            self._wake()

    def drop(self) -> None:
        """Stop receiving: discard what is queued; producers get BrokenResourceError."""
        self.dropped = True
        self._items.clear()
        if self._waiter is not None:
            self._wake()

    def receive_nowait(self) -> T:
        """Return the next item.

        Raises:
            anyio.WouldBlock: no item yet.
            anyio.EndOfStream: the feed is closed and every item was received.
            anyio.ClosedResourceError: the consumer has stopped receiving.
        """
        if self.dropped:
            raise anyio.ClosedResourceError
        if self._items:
            return self._items.popleft()
        if self.closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    def queued(self) -> deque[T]:
        """The items queued now, in order, to look at: :meth:`discard` takes them off."""
        return self._items

    def discard(self, count: int) -> None:
        """Take the first ``count`` queued items off the feed (they were handled)."""
        for _ in range(count):
            self._items.popleft()

    async def wait(self) -> None:
        """Wait until an item is queued or the feed is closed or dropped (a checkpoint only
        when it has to wait)."""
        if not (self._items or self.closed or self.dropped):
            await self._wait()

    async def wait_closed(self) -> None:
        """Discard what is queued, and what comes, until the producers close the feed."""
        while not self.closed:
            self._items.clear()
            await self._wait()
        self._items.clear()

    def __aiter__(self) -> Feed[T]:
        return self

    async def __anext__(self) -> T:
        """The next item, waiting for it if needed (a checkpoint only when it waits)."""
        items = self._items
        while not items:
            if self.dropped:
                raise anyio.ClosedResourceError
            if self.closed:
                raise StopAsyncIteration
            await self._wait()
        return items.popleft()
