"""An append-only log that any number of tasks read at their own pace.

Memory object streams are point-to-point: each item goes to one receiver. Promises need a
broadcast where every consumer sees every item and late consumers replay from the start, so
each stream of tokens (or of promises) is kept once, in a list, and each consumer holds an
index into it. A waiting consumer sleeps on an :class:`anyio.Event` that the next append (or
the close) sets; the event is created only when somebody waits, so a producer whose consumers
keep up pays one list append per item.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class Log(Generic[T]):
    """Items appended by one producer, read by any number of consumers; closed once."""

    __slots__ = ("_waiter", "closed", "items")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.closed = False
        self._waiter: anyio.Event | None = None

    def append(self, item: T) -> None:
        """Append ``item`` and wake the waiting consumers. The log must not be closed."""
        self.items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    def close(self) -> None:
        """Mark the end of the log and wake the waiting consumers; closing twice is harmless."""
        self.closed = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    async def wait_beyond(self, index: int) -> None:
        """Wait until the log has more than ``index`` items or is closed.

        A checkpoint only when it has to wait; cancellation leaves the log unchanged.
        """
        if index < len(self.items) or self.closed:
            return
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = anyio.Event()
        await waiter.wait()
