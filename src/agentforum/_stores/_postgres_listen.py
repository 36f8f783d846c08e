"""Waiting for released claims on PostgreSQL: one ``LISTEN`` connection per store and loop.

A call that waits for another worker's claim (:meth:`PostgresStore.wait_released`) wakes
when the holder's release is announced (``NOTIFY agentforum_claims``, the payload the call's
hex hash). A connection of its own for each waiting call would cost the server one
connection per call: a worker with a thousand distinct calls waiting would exhaust its
``max_connections``. So every call waiting in one event loop shares one connection of
the store's, which listens:

- **One reader at a time.** One of the waiting calls (the *driver*) reads the connection's
  notifications in a worker thread, for at most :data:`LISTEN_CHECK` seconds per read, and
  wakes each call whose claim they release. When its own claim is released, or it is
  cancelled, it hands the reading to another waiting call. No task of its own: the reading
  lives in the calls that wait.
- **Listening before looking.** A call registers, makes sure the connection listens, then
  looks whether the claim is held: a release announced after the look arrives on the
  connection (the server keeps it until it is read), so it is never missed.
- **A broken connection** (the server restarted, a network failure) is closed and every
  waiting call returns early, as :meth:`ClaimingStore.wait_released` allows: each reads the
  cache and claims again, and the next wait makes a new connection (or raises the
  :class:`StoreError` that making it gives).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio
import anyio.lowlevel
import anyio.to_thread

from .._exceptions import StoreError
from . import _postgres_rows as tables

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._postgres_connect import Connection, Target

#: The longest a read of the notifications blocks its worker thread: how soon a cancelled
#: wait returns (a thread blocked on a socket cannot be interrupted).
LISTEN_CHECK: Final = 0.05


class _Waiter:
    """A call waiting for the release of a claim."""

    __slots__ = ("event", "released")

    def __init__(self) -> None:
        #: Set when the claim is released, or when this call is to take over the reading.
        self.event = anyio.Event()
        #: Whether the claim was released (or the wait is to end early).
        self.released = False

    def wake(self, *, released: bool) -> None:
        self.released = self.released or released
        self.event.set()


class Listener:
    """A store's listening connection in one event loop, and the calls waiting on it."""

    __slots__ = ("_connection", "_driver", "_opening", "_target", "_waiters")

    def __init__(self, target: Target) -> None:
        self._target = target
        self._connection: Connection | None = None
        self._opening = anyio.Lock()
        #: The calls waiting, by the hex hash of the call whose claim they wait on.
        self._waiters: dict[str, list[_Waiter]] = {}
        self._driver: _Waiter | None = None

    async def wait(self, call_hash: str, held: Callable[[], Awaitable[bool]]) -> None:
        """Wait until the claim on ``call_hash`` is released, if ``held()`` says it is held.

        Raises:
            StoreError: no connection can be made, or ``held()`` raised it.
        """
        waiter = _Waiter()
        waiters = self._waiters.setdefault(call_hash, [])
        waiters.append(waiter)
        try:
            await self._listen()
            if not await held():
                return
            while not waiter.released:
                if self._driver is None:
                    await self._drive(waiter)
                else:
                    await waiter.event.wait()
                    if not waiter.released:
                        waiter.event = anyio.Event()  # woken to read: read, or wait again
        finally:
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[call_hash]
            if self._driver is None:
                self._hand_off()

    async def aclose(self) -> None:
        """Close the connection; calls still waiting return early."""
        connection, self._connection = self._connection, None
        self._wake_all()
        if connection is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(connection.close)

    async def _listen(self) -> None:
        """Make the connection and listen on it, unless that is done."""
        if self._connection is not None:
            return
        async with self._opening:
            if self._connection is None:
                # Shielded: a connection made is always kept, so always closed.
                with anyio.CancelScope(shield=True):
                    self._connection = await anyio.to_thread.run_sync(self._connect)

    def _connect(self) -> Connection:
        import psycopg

        connection = self._target.connect()
        try:
            connection.execute(f"LISTEN {tables.CLAIMS_CHANNEL}")
        except psycopg.Error as exc:
            connection.close()
            raise StoreError(
                f"{self._target.display}: listening for released claims: "
                f"{self._target.scrub(str(exc))}"
            ) from exc
        return connection

    async def _drive(self, waiter: _Waiter) -> None:
        """Read the notifications, waking whom they release, until ``waiter``'s is among
        them (or the connection broke)."""
        import psycopg

        self._driver = waiter
        try:
            while not waiter.released:
                connection = self._connection
                if connection is None:  # closed meanwhile: every wait ended early
                    return
                try:
                    # Shielded: what a read takes off the connection is handed out even if
                    # this call is cancelled meanwhile (a read lasts 0.05 s at most).
                    with anyio.CancelScope(shield=True):
                        released = await anyio.to_thread.run_sync(_receive, connection)
                except psycopg.Error:
                    # Releases may have gone unread: every waiting call looks again.
                    if self._connection is connection:
                        self._connection = None
                        await anyio.to_thread.run_sync(connection.close)
                    self._wake_all()
                    return
                for call_hash in released:
                    for other in self._waiters.get(call_hash, ()):
                        other.wake(released=True)
                await anyio.lowlevel.checkpoint_if_cancelled()
        finally:
            self._driver = None

    def _hand_off(self) -> None:
        """Wake a waiting call to take over the reading, if any waits."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.released:
                    waiter.wake(released=False)
                    return

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.wake(released=True)


def _receive(connection: Connection) -> list[str]:
    """The payloads of the notifications that arrive within :data:`LISTEN_CHECK` seconds
    (those of the first packet that brings any)."""
    return [notify.payload for notify in connection.notifies(timeout=LISTEN_CHECK, stop_after=1)]
