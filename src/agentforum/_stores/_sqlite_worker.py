"""The thread of an SQLite store: it holds the connection and runs the store's operations.

Every operation of an :class:`SQLiteStore` blocks (SQLite is a library, not a server), so
none runs in the event loop's thread. Handing each one to :func:`anyio.to_thread.run_sync`
cost about 250,000 instructions of AnyIO's thread pool (a capacity limiter, a cancel scope,
a worker chosen and woken) on top of SQLite's own 70,000 for a ``put``, which made a put
three times as slow as plain :mod:`sqlite3`. So a store has a thread of its own instead:

- **One thread, one connection.** The thread opens the connection on its first operation
  and is the only one ever to use it. It takes the operations queued for it in order. It
  ends when the connection is closed (:meth:`Worker.close`) or could not be opened, and the
  next operation starts a new one. It is a daemon thread, so it never keeps the process
  alive: if a store is garbage collected while its thread is running (it was never
  closed), a finalizer closes the connection in that thread, which then ends, and warns
  (:exc:`ResourceWarning`), as a file object does.
- **Coalesced writes.** The puts queued at one moment (by several tasks) are committed in
  one transaction, each caller's call returning once the commit that holds its rows is
  done. If that transaction fails (one put links to a message that is not stored, the
  disk is full...), it is rolled back whole and each put runs again in a transaction of its
  own: every caller gets the outcome its put would have had alone, and one caller's error
  never fails another's write.
- **Waking the event loop.** The thread tells an event loop's tasks that their operations
  are done by writing a byte into a socket that one of them waits on with
  :func:`anyio.wait_readable`, the one public AnyIO way for a foreign thread to wake a loop
  without waiting for it. Each thread that runs an event loop using the store has such a
  *channel* of its own; one task of the loop at a time (the *reader*) waits on it and wakes
  the others with :class:`anyio.Event`, and a reader that leaves hands its place to a task
  still waiting.
"""

from __future__ import annotations

import enum
import queue
import socket
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

#: The most operations the thread takes from its queue at once.
BATCH: Final = 256
#: The most puts committed in one transaction.
GROUP: Final = 64

#: An operation on the connection: it runs in the store's thread.
Operation = Callable[["sqlite3.Connection"], object]


class Put(Protocol):
    """The rows of one put, which the thread may write in a transaction shared with others."""

    def insert(self, connection: sqlite3.Connection) -> None:
        """Insert the rows."""
        ...

    def check(self, connection: sqlite3.Connection) -> None:
        """Check them once every put of the transaction is inserted (raise to refuse)."""
        ...


class Database(Protocol):
    """The store's connection, as its thread (and no other) uses it."""

    @property
    def is_open(self) -> bool:
        """Whether the connection is open."""
        ...

    def run(self, operation: Operation, write: bool) -> object:
        """Run ``operation`` on the connection, opened first if it is not."""
        ...

    def run_together(self, puts: Sequence[Put]) -> None:
        """Write several puts in one transaction: all of them committed, or none."""
        ...

    def close(self) -> None:
        """Close the connection, if it is open."""
        ...


class State(enum.Enum):
    """Where a job is. Every change happens under its worker's lock."""

    QUEUED = enum.auto()  # in the queue: its caller can still withdraw it
    RUNNING = enum.auto()  # taken by the thread: it will be done, completely
    DONE = enum.auto()  # done, its outcome kept; its channel tells its caller
    WITHDRAWN = enum.auto()  # its caller was cancelled while it was queued: never run


class Job:
    """One operation handed to the thread, and its outcome."""

    __slots__ = (
        "channel",
        "error",
        "operation",
        "put",
        "seen",
        "state",
        "stopped",
        "value",
        "write",
    )

    def __init__(
        self, operation: Operation | None, *, write: bool = False, put: Put | None = None
    ) -> None:
        # None closes the connection (without opening it first).
        self.operation = operation
        self.write = write
        # A put's rows, written in a transaction shared with the puts queued with it (else
        # ``operation`` writes them alone); None for any other operation.
        self.put = put
        # Where the caller waits; None for the finalizer's job, which nobody waits for.
        self.channel: Channel | None = None
        self.state = State.QUEUED
        self.value: object = None
        self.error: BaseException | None = None
        # Set in the caller's thread once its channel has delivered the outcome.
        self.seen = False
        # The thread, when this job was among the last it ran: its caller joins it.
        self.stopped: threading.Thread | None = None

    def run(self, database: Database) -> None:
        """Run the operation alone, keeping what it returned or raised for the caller."""
        try:
            if self.operation is None:
                database.close()
            else:
                self.value = database.run(self.operation, self.write)
        except BaseException as exc:  # raised again in the caller's task (outcome)
            self.error = exc

    def outcome(self) -> object:
        """What the operation returned; or raise what it raised."""
        error = self.error
        if error is not None:
            self.error = None  # the traceback would hold this job, and the job the error
            raise error
        return self.value


class Channel:
    """How the thread tells the tasks of one event-loop thread that their jobs are done.

    The thread appends each job it has done to :attr:`finished` and writes a byte into a
    socket pair; one task at a time reads it (:meth:`wait_for`).
    """

    __slots__ = ("finished", "ident", "reading", "receiver", "sender", "unseen", "waiting")

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.receiver, self.sender = socket.socketpair()
        self.receiver.setblocking(False)
        self.sender.setblocking(False)
        # The jobs done whose callers have not been told (guarded by the worker's lock).
        self.finished: list[Job] = []
        # The jobs submitted through this channel, neither seen nor withdrawn (same lock).
        self.unseen = 0
        # Whether a task waits on the socket now; the others wait for their events. Only
        # the tasks of the channel's own thread touch these two.
        self.reading = False
        self.waiting: dict[Job, anyio.Event] = {}

    def notify(self) -> None:
        """Wake the reader (from the store's thread)."""
        try:  # not contextlib.suppress: this runs once per operation
            self.sender.send(b"\0")
        except BlockingIOError:  # a full buffer holds unread bytes: the reader wakes anyway
            pass

    async def wait_for(self, job: Job, collect: Callable[[Channel], None]) -> None:
        """Return once ``job`` is seen: as the reader, or woken by the task that read.

        Cancellable. A reader that leaves, for whatever reason, hands its place over to the
        first task still waiting, so that the socket is read as long as anyone waits.
        """
        try:
            while not job.seen:
                if self.reading:
                    event = self.waiting[job] = anyio.Event()
                    try:
                        await event.wait()
                    finally:
                        self.waiting.pop(job, None)
                    continue
                self.reading = True
                try:
                    await anyio.wait_readable(self.receiver)
                finally:
                    self.reading = False
                collect(self)
        finally:
            if not self.reading and self.waiting:
                self.waiting.pop(next(iter(self.waiting))).set()

    def drain(self) -> None:
        """Read the bytes written so far: each only says "look at :attr:`finished`"."""
        try:
            self.receiver.recv(4096)
        except BlockingIOError:  # read with the bytes before
            pass

    def close(self) -> None:
        self.receiver.close()
        self.sender.close()


class Worker:
    """A store's thread, its queue of operations, and the channels that answer the callers.

    Owned by one :class:`SQLiteStore`. It holds no reference to the store, so a store that
    was never closed can be garbage collected, and :meth:`abandon` (its finalizer) ends the
    thread.
    """

    __slots__ = ("_channels", "_database", "_lock", "_name", "_queue", "_thread")

    def __init__(self, database: Database, name: str) -> None:
        self._database = database
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        # The running thread; None when none runs (nothing queued, no connection open).
        self._thread: threading.Thread | None = None
        # The channel of each thread whose event loop uses the store, by thread id.
        self._channels: dict[int, Channel] = {}

    @property
    def thread(self) -> threading.Thread | None:
        """The running thread, if one runs."""
        return self._thread

    # -- the event loop's side ------------------------------------------------------------------

    async def run(self, operation: Operation, *, write: bool = False) -> object:
        """Run ``operation`` in the thread, after the operations queued before it.

        A checkpoint: a cancellation pending on entry is raised before anything is queued.
        Cancelled while the operation is queued, it is withdrawn (it never runs) and the
        cancellation is raised at once; cancelled once the thread has taken it, the call
        waits (shielded) until it is done, then raises the cancellation. An operation is
        done completely or not at all, and never left running with nobody waiting for it.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        return await self._outcome(Job(operation, write=write))

    async def put(self, put: Put, alone: Operation) -> None:
        """Write ``put``: in a transaction shared with the puts queued with it, or, when
        that fails, with ``alone`` (a transaction of its own). Cancelled as :meth:`run`."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        await self._outcome(Job(alone, write=True, put=put))

    async def close(self) -> None:
        """Close the connection and end the thread, once what was queued before is done.

        Shielded: a store being closed is closed, and a cancellation is raised after (a
        checkpoint). With no thread running, nothing is open: only the checkpoint.
        """
        if self._thread is not None:
            with anyio.CancelScope(shield=True):
                await self._outcome(Job(None))
        await anyio.lowlevel.checkpoint()

    async def _outcome(self, job: Job) -> object:
        channel = self._submit(job)
        try:
            await channel.wait_for(job, self._collect)
        except BaseException:  # a cancellation: the job is withdrawn, or seen done first
            if not self._withdraw(job):
                with anyio.CancelScope(shield=True):
                    await channel.wait_for(job, self._collect)
                self._join(job)
            raise
        self._join(job)
        return job.outcome()

    def _submit(self, job: Job) -> Channel:
        ident = threading.get_ident()
        with self._lock:
            channel = self._channels.get(ident)
            if channel is None:
                channel = self._channels[ident] = Channel(ident)
            job.channel = channel
            channel.unseen += 1
            self._queue.put(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()
        return channel

    def _withdraw(self, job: Job) -> bool:
        """Withdraw a job whose caller gave up, unless the thread has taken it."""
        with self._lock:
            if job.state is not State.QUEUED:
                return False
            job.state = State.WITHDRAWN
            assert job.channel is not None
            job.channel.unseen -= 1
            self._close_if_idle(job.channel)
            return True

    def _collect(self, channel: Channel) -> None:
        """Mark the jobs the thread has done as seen, and wake their callers (the reader)."""
        channel.drain()
        with self._lock:
            finished, channel.finished = channel.finished, []
            channel.unseen -= len(finished)
            self._close_if_idle(channel)
        for job in finished:
            job.seen = True
            event = channel.waiting.pop(job, None)
            if event is not None:
                event.set()

    def _close_if_idle(self, channel: Channel) -> None:
        """Close a channel that nobody waits on, once no thread runs (under the lock)."""
        if channel.unseen == 0 and self._thread is None:
            del self._channels[channel.ident]
            channel.close()

    @staticmethod
    def _join(job: Job) -> None:
        """Join the thread if ``job`` was among its last: it has nothing left but to end."""
        if job.stopped is not None:
            job.stopped.join()

    def abandon(self, name: str) -> None:
        """The finalizer of a store garbage collected unclosed: end its thread, and warn.

        Takes no lock: the collection may run in the thread itself, holding it.
        """
        if self._thread is not None:
            self._queue.put(Job(None))
            warnings.warn(
                f"{name} was never closed: close it with `await store.aclose()` (a forum "
                "closes the store it opened)",
                ResourceWarning,
                stacklevel=1,
            )

    # -- the thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        """The thread: run what is queued, in order, until the connection is closed."""
        jobs = self._queue
        while True:
            batch = [jobs.get()]
            while len(batch) < BATCH and not jobs.empty():  # the only consumer
                batch.append(jobs.get_nowait())
            start = 0
            while start < len(batch):
                end = self._group_end(batch, start)
                taken = self._take(batch[start:end])
                self._execute(taken)
                if self._finish(taken, last=end == len(batch)):
                    return
                start = end

    @staticmethod
    def _group_end(batch: list[Job], start: int) -> int:
        """Where the group that starts at ``start`` ends: a put takes the puts after it."""
        end = start + 1
        if batch[start].put is not None:
            limit = min(len(batch), start + GROUP)
            while end < limit and batch[end].put is not None:
                end += 1
        return end

    def _take(self, group: list[Job]) -> list[Job]:
        """The jobs of ``group`` not withdrawn, now running (their callers cannot withdraw
        them any more)."""
        with self._lock:
            taken = [job for job in group if job.state is State.QUEUED]
            for job in taken:
                job.state = State.RUNNING
        return taken

    def _execute(self, jobs: list[Job]) -> None:
        """Run the jobs: several puts in one transaction, or, if that fails, each alone."""
        if len(jobs) > 1 and self._write_together(jobs):
            return
        for job in jobs:
            job.run(self._database)

    def _write_together(self, jobs: list[Job]) -> bool:
        """Write the puts in one transaction; whether it was committed."""
        try:
            self._database.run_together([job.put for job in jobs if job.put is not None])
        except Exception:  # rolled back whole: each put runs again alone, for its own outcome
            return False
        return True

    def _finish(self, jobs: list[Job], *, last: bool) -> bool:
        """Mark the jobs done and tell their callers; return whether the thread ends now.

        It ends after its last group when nothing more is queued and the connection is not
        open (closed, or it could not be opened); the callers of that group join it.
        """
        with self._lock:
            stopping = last and self._queue.empty() and not self._database.is_open
            told: dict[Channel, None] = {}
            for job in jobs:
                job.state = State.DONE
                if stopping:
                    job.stopped = threading.current_thread()
                if job.channel is not None:
                    job.channel.finished.append(job)
                    told[job.channel] = None
            if stopping:
                self._thread = None
                for channel in list(self._channels.values()):
                    self._close_if_idle(channel)
                # From now on a caller may close its channel once it has read: write first.
                for channel in told:
                    channel.notify()
                return True
        # Outside the lock: writing lets the event loop's thread take the GIL, and it would
        # wait for the lock, then this thread for the GIL. While this thread runs, no
        # channel is closed (_close_if_idle).
        for channel in told:
            channel.notify()
        return False
