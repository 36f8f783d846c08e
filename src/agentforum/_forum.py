"""The forum: the task group every agent call runs in, and the store of its message tree."""

from __future__ import annotations

import inspect
import os
import sys
from typing import TYPE_CHECKING, overload

import anyio

from ._agents import Agent, AgentFunction
from ._branches import merge_base
from ._messages import Message
from ._promises import MessagePromise
from ._runtime import ForumState, ForumStatistics, branch_of
from ._runtime._claims import HEARTBEAT, LEASE
from ._stores._claims import check_seconds
from ._stores._memory import MemoryStore
from ._stores._postgres import PostgresStore
from ._stores._protocol import MessageStore
from ._stores._refs import ANY, check_expected, lookup
from ._stores._sqlite import SQLiteStore
from ._stores._targets import opened, store_at
from ._sync import sync

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    from anyio.abc import TaskGroup
    from typing_extensions import Self

    from ._runtime._state import CallTracer
    from ._stores._refs import Expected
    from ._sync import SyncReport


class Forum:
    """A message tree, its store, and the agents that converse in it.

    A forum runs inside ``async with forum:``, which opens the AnyIO task group that every
    agent call runs in. Leaving the block waits for every call still running. A forum can be
    entered again after it exits, but not while it runs. An exception the body raises
    leaves the block as it was raised, not wrapped in an exception group, unless agent
    errors nobody observed join it (see ``strict_errors``).

    Args:
        store: Where messages are kept: a :class:`MessageStore`; a path (``str`` or
            :class:`os.PathLike`), which opens an :class:`SQLiteStore` there (created if
            missing) that the forum closes when it exits; a ``postgresql://`` (or
            ``postgres://``) URL, which opens a :class:`PostgresStore` on that database
            (its schema created if the database is empty), closed the same way; or
            ``None`` for a new :class:`MemoryStore`.
        cache: Answer a call whose :class:`CallMessage` hash the store's cache index already
            answers with the very same responses, without running the agent; run identical
            calls in flight at the same time once (see ``docs/caching.md``). ``False`` runs
            every call.
        strict_errors: Raise, when the ``async with`` block exits, the errors of agents that
            no consumer observed, as an :exc:`ExceptionGroup` of :exc:`AgentError` (after
            the body's exception, if it raised an :exc:`Exception`; a cancellation or
            another :exc:`BaseException` from the body leaves alone). A cancellation is
            never one of them. With ``False`` they are only recorded in the tree. Whatever
            its value, when the store failed to record a call's :class:`ErrorMessage` (a
            full disk, say), the exit raises that store error: by itself, or first of the
            agent errors (after the body's exception) when there are any.

        lease: Seconds that a claim on a call in flight holds without a heartbeat, in a
            store that processes share (single flight across processes, see
            ``docs/caching.md``): a call whose process died is taken over by another
            process this long after its last heartbeat. 60 by default.
        heartbeat: Seconds between two renewals of a claim by the process that runs the
            call (20 by default, less than ``lease``); on SQLite, a process waiting for
            another's call also looks at its claim 80 times per heartbeat.

    Raises:
        TypeError: ``store`` is not a store.
        ValueError: ``lease`` or ``heartbeat`` is not a positive number of seconds, or the
            heartbeat is not shorter than the lease.
    """

    __slots__ = (
        "_agents",
        "_last",
        "_owns_store",
        "_state",
        "_store",
        "_task_group",
        "_tracer",
        "cache",
        "heartbeat",
        "lease",
        "strict_errors",
    )

    def __init__(
        self,
        store: MessageStore | str | os.PathLike[str] | None = None,
        *,
        cache: bool = True,
        strict_errors: bool = True,
        lease: float = LEASE,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        check_seconds("lease", lease)
        check_seconds("heartbeat", heartbeat)
        if heartbeat >= lease:
            raise ValueError(
                f"the heartbeat ({heartbeat} s) must be shorter than the lease ({lease} s): a "
                "claim would run out between two renewals"
            )
        self._owns_store = False
        if store is None:
            store = MemoryStore()
        elif isinstance(store, (str, os.PathLike, MessageStore)):
            store, self._owns_store = store_at(store)
        else:
            raise TypeError(
                f"store must be a MessageStore (such as MemoryStore()), a path to an SQLite "
                f"database, a postgresql:// URL, or None, not {type(store).__qualname__}"
            )
        self._store: MessageStore = store
        #: Whether calls are answered through the cache (see ``docs/caching.md``).
        self.cache = cache
        #: Whether unobserved agent errors are raised when the forum exits.
        self.strict_errors = strict_errors
        #: Seconds a claim on a call in flight holds without a heartbeat.
        self.lease = lease
        #: Seconds between two renewals of a claim on a call this forum runs.
        self.heartbeat = heartbeat
        self._agents: dict[str, Agent] = {}
        self._task_group: TaskGroup | None = None
        # What the calls of the running block share (see _runtime.ForumState); the last
        # one is kept after the block, for statistics().
        self._state: ForumState | None = None
        self._last: ForumState | None = None
        #: What traces the calls, once ``agentforum.otel.instrument`` set it.
        self._tracer: CallTracer | None = None

    def __repr__(self) -> str:
        state = "running" if self._task_group is not None else "not running"
        return f"<Forum {state}, store={self._store!r}>"

    @property
    def store(self) -> MessageStore:
        """The :class:`MessageStore` that holds this forum's messages."""
        return self._store

    def _swap_store(self, store: MessageStore) -> MessageStore:
        """Replace the store of a forum that is not running; return the previous one.

        For agentforum's own tools (``agentforum.testing`` runs an agent system against a
        fresh store per trial); not part of the public API.
        """
        if self._task_group is not None:
            raise RuntimeError("the store of a running forum cannot be replaced")
        previous, self._store = self._store, store
        return previous

    def _set_tracer(self, tracer: CallTracer | None) -> None:
        """Trace the calls made from now on with ``tracer`` (``None``: trace none).

        For ``agentforum.otel``; not part of the public API.
        """
        self._tracer = tracer
        if self._state is not None:
            self._state.tracer = tracer

    @property
    def is_running(self) -> bool:
        """Whether the forum is inside its ``async with`` block (agents can be called)."""
        return self._task_group is not None

    @overload
    def agent(
        self,
        function: AgentFunction,
        /,
        *,
        alias: str | None = None,
        description: str | None = None,
        cache: bool | None = None,
    ) -> Agent: ...

    @overload
    def agent(
        self,
        function: None = None,
        /,
        *,
        alias: str | None = None,
        description: str | None = None,
        cache: bool | None = None,
    ) -> Callable[[AgentFunction], Agent]: ...

    def agent(
        self,
        function: AgentFunction | None = None,
        /,
        *,
        alias: str | None = None,
        description: str | None = None,
        cache: bool | None = None,
    ) -> Agent | Callable[[AgentFunction], Agent]:
        """Make an :class:`Agent` of an agent function; a decorator, bare or with options.

        Called with the function (and options) it returns the agent at once:
        ``forum.agent(openai_agent(model="gpt-4o-mini"), alias="gpt")``.

        ::

            @forum.agent
            async def echo(ctx: InteractionContext) -> None: ...

            @forum.agent(alias="Researcher", description="Finds sources.")
            async def researcher(ctx: InteractionContext) -> None: ...

        Args:
            alias: The agent's name in the tree (default: the function's ``__name__``);
                unique in the forum.
            description: What the agent does (default: the function's docstring).
            cache: Answer the agent's calls through the cache when the forum's ``cache`` is
                on too. Turn it off for an agent whose answers must not be replayed: one
                that reads the world (a human, a clock, a search) or that must see its
                requests while they stream. Default: the function's own ``cache``
                attribute when it has a ``bool`` one (the agents of
                :mod:`agentforum.agents` that involve a human set it to ``False``), else
                ``True``.

        Raises:
            TypeError: the function is not an ``async def`` function.
            ValueError: the alias is empty or taken by another agent of this forum.
        """

        def decorate(function: AgentFunction) -> Agent:
            if not (
                inspect.iscoroutinefunction(function)
                or (
                    callable(function)
                    and not inspect.isroutine(function)
                    and inspect.iscoroutinefunction(type(function).__call__)
                )
            ):
                raise TypeError(
                    "an agent function must be an `async def` function (or an object whose "
                    f"__call__ is one), got {function!r}"
                )
            name = alias if alias is not None else getattr(function, "__name__", "")
            if not isinstance(name, str) or not name:
                raise ValueError(f"an agent's alias must be a non-empty str, got {name!r}")
            if name in self._agents:
                raise ValueError(f"this forum already has an agent called {name!r}")
            text = description if description is not None else inspect.getdoc(function) or ""
            cached = cache
            if cached is None:
                default = getattr(function, "cache", True)
                cached = default if isinstance(default, bool) else True
            agent = Agent(self, function, name, text, cache=cached)
            self._agents[name] = agent
            return agent

        if function is not None:
            return decorate(function)
        return decorate

    async def get(self, name: str) -> Message:
        """Return the message a ref, a hash or a hash prefix names.

        A ref (see :meth:`set_ref`) is looked up first, then a full hash or a unique prefix
        of at least 6 hex characters, as in git.

        Raises:
            ValueError: no such ref, and not 6 to 64 lowercase hexadecimal characters.
            MessageNotFoundError: no message matches.
            AmbiguousHashError: more than one message matches.
        """
        if not isinstance(name, str):
            raise TypeError(
                f"get() takes a ref, hash or hash prefix (str), not {type(name).__qualname__}"
            )
        return await lookup(self._store, name)

    async def set_ref(
        self,
        name: str,
        message: Message | MessagePromise | str,
        *,
        expected: Message | MessagePromise | Expected = ANY,
    ) -> None:
        """Point the ref ``name`` at ``message`` (a message, a promise, or a ref, hash or prefix).

        Refs are named pointers to messages, like git branches: the only thing in a store
        that changes. Setting an existing ref moves it.

        With ``expected``, a compare-and-set, atomic in every store (and between the
        processes that share one): the ref moves only if it points at ``expected`` now (a
        message, a promise of one, or a full hash), or, with ``expected=None``, only if it
        does not exist yet. Two workers that continue one branch (read the ref, add to the
        branch, move the ref) then never silently overwrite each other: the second gets
        :exc:`RefConflictError` and can read the ref again.

        Raises:
            ValueError: ``name`` is not a valid ref name (no white space or ``~^:?*[\\``),
                or ``expected`` is a str that is not a full hash.
            MessageNotFoundError: the message is not in the store.
            RefConflictError: the ref is not where ``expected`` says; it is left alone.
        """
        if isinstance(expected, MessagePromise):
            expected = await expected
        if isinstance(expected, Message):
            expected = expected.hash
        check_expected(expected)
        if isinstance(message, MessagePromise):
            message = await message
        if isinstance(message, Message):
            await self._store.put(message)
            key = message.hash
        else:
            key = (await self.get(message)).hash
        if expected is ANY:
            # A store of another library may predate compare-and-set: ask it for none.
            await self._store.set_ref(name, key)
        else:
            await self._store.set_ref(name, key, expected=expected)

    async def delete_ref(self, name: str) -> None:
        """Delete the ref ``name`` (the message stays); deleting a missing ref does nothing."""
        await self._store.delete_ref(name)

    async def refs(self) -> Mapping[str, str]:
        """Return every ref of the store, name to hash, sorted by name."""
        return await self._store.refs()

    async def history(
        self, message: Message | MessagePromise | str, *, include_calls: bool = False
    ) -> list[Message]:
        """Return the branch from its root to ``message``, oldest first.

        Args:
            message: A message, a promise of one, or a ref, hash or hash prefix.
            include_calls: Keep the :class:`CallMessage` nodes (left out by default).

        Raises:
            MessageNotFoundError: the message is not in the store.
        """
        key = await self._key(message)
        return await branch_of(self._store, key, include_calls=include_calls)

    async def merge_base(
        self, a: Message | MessagePromise | str, b: Message | MessagePromise | str
    ) -> Message | None:
        """Return the last message on both the branch of ``a`` and the branch of ``b``.

        Each is a message, a promise of one, or a ref, hash or hash prefix. As in git, the
        merge base is where the two branches part: the branches share every message from
        their root down to it, and none after it. When one is an ancestor of the other, it
        is the merge base; when the two branches start at different roots, there is none
        (``None``). Only the messages after the merge base are read (and as many again on
        the longer side), never the part the branches share.

        Raises:
            MessageNotFoundError: a message is not in the store.
        """
        base = await merge_base(self._store, await self._key(a), await self._key(b))
        return None if base is None else await self._store.get(base)

    async def push(
        self, destination: MessageStore | str | os.PathLike[str], *refs: str, force: bool = False
    ) -> SyncReport:
        """Send the messages that ``refs`` reach to ``destination``, and move the refs there.

        As ``git push`` does: only what the destination lacks travels (the sync walks down
        from the refs' tips until messages the destination has, so pushing a few messages
        onto a long branch reads only those), every message and content is hashed again
        before anything is written, and the messages go in parents first, in batches that
        are each one transaction. A ref is created, or moved when the message it moves to
        descends from the one it points at (a fast-forward, by compare-and-set: a move that
        another writer made meanwhile is never lost); otherwise the push raises
        :exc:`NonFastForwardError` and writes nothing, unless ``force``. Refs of the
        destination that the push does not name are left alone; the cache index does not
        travel. The forum need not be running.

        Args:
            destination: A :class:`MessageStore`, the path of an SQLite database (created if
                missing), or a ``postgresql://`` URL; a store opened here is closed after.
            refs: The names of the refs to push; none means every ref of this forum's store.
            force: Move the refs even when the move is not a fast-forward (the messages of
                the destination's branch that the new place lacks stay stored, but no
                longer on that ref).

        Returns:
            What was sent and which refs moved (:class:`SyncReport`).

        Raises:
            ValueError: a ref of ``refs`` is not in this forum's store (nothing is sent).
            IntegrityError: a message to send, or its content, does not hash to its hash:
                this forum's store is damaged; nothing is sent.
            NonFastForwardError: a ref would not move forward and ``force`` is false.
            StoreError: a store cannot be opened or written.

        Cancellation: the batches written before it stay written, each whole, and the
        destination stays sound; refs are moved only after every message is in, so a
        cancelled push moves none, or some of them. Pushing again completes it.
        """
        async with opened(destination) as store:
            return await sync(self._store, store, refs, force=force)

    async def pull(
        self, source: MessageStore | str | os.PathLike[str], *refs: str, force: bool = False
    ) -> SyncReport:
        """Fetch the messages that ``refs`` of ``source`` reach, and move the refs here.

        The mirror of :meth:`push`, with ``source`` (a store, an SQLite path or a
        ``postgresql://`` URL) sending to this forum's store: the same promises (only the
        difference travels, everything is verified before it is written, refs move forward
        only), arguments, errors and cancellation. ``refs`` names refs of ``source``;
        none means all of them.
        """
        async with opened(source) as store:
            return await sync(store, self._store, refs, force=force)

    async def _key(self, message: Message | MessagePromise | str) -> str:
        """The hash of a message, a promise of one, or what a ref, hash or prefix names."""
        if isinstance(message, MessagePromise):
            message = await message
        return message.hash if isinstance(message, Message) else (await self.get(message)).hash

    def statistics(self) -> ForumStatistics:
        """Return what the forum's calls have done since it was last entered.

        Cheap counters kept as the calls run (see :class:`ForumStatistics`): read them
        while the forum runs, or after it exits for its last run. Before the forum was
        ever entered, every counter is 0.
        """
        state = self._last
        if state is None:
            return ForumStatistics(0, 0, 0, 0, 0, 0, 0, 0)
        return state.statistics()

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("this forum is running already: it cannot be entered twice")
        if isinstance(self._store, (SQLiteStore, PostgresStore)) and self._owns_store:
            # A file that cannot be opened, or a server that cannot be reached, is reported
            # here, not by the first agent call.
            await self._store.open()
        group = anyio.create_task_group()
        await group.__aenter__()
        self._task_group = group
        self._state = self._last = ForumState(self, self._store, group, self._tracer)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        group, state = self._task_group, self._state
        assert group is not None
        assert state is not None
        # The block is over: nobody can send more requests to the calls it started.
        for call in state.open_calls:
            call.close_requests()
        state.open_calls = []
        try:
            try:
                suppress = await group.__aexit__(exc_type, exc, tb)
            finally:
                self._task_group = self._state = None
                if self._owns_store:
                    with anyio.CancelScope(shield=True):
                        await self._store.aclose()
        except BaseExceptionGroup as failed:
            if exc is None or len(failed.exceptions) != 1 or failed.exceptions[0] is not exc:
                raise  # a task of the forum failed: its group, as the task groups made it
            # Only the body raised. The task group is the forum's implementation detail, so
            # the exception leaves as the body raised it: returning False re-raises it, with
            # its own traceback and context.
            suppress = False
        # A cancellation is not an agent error, not even when an agent passed on one of a
        # call nested in it: it is never raised here.
        unobserved = [
            failure
            for failure in state.failures
            if not (failure.observed or failure.is_cancellation)
        ]
        state.failures = []
        store_errors, state.store_errors = state.store_errors, []
        if not (store_errors or (self.strict_errors and unobserved)):
            return suppress
        if exc is not None and not isinstance(exc, Exception):
            # A cancellation, KeyboardInterrupt or SystemExit leaves alone, as it came.
            return suppress
        errors: list[Exception] = (
            [failure.exception() for failure in unobserved] if self.strict_errors else []
        )
        if exc is None and not errors:
            # The tree lacks what the store could not record (a full disk, say).
            raise store_errors[0]
        what = [f"{len(errors)} agent error(s) that no consumer observed"] if errors else []
        if store_errors:
            # What the store could not record comes first, whatever strict_errors says.
            errors.insert(0, store_errors[0])
            what.insert(0, "the store failed to record an agent error")
        unseen = ", and ".join(what)
        if exc is None:
            raise ExceptionGroup(unseen, errors)
        # The body's exception first, then the agent errors in the order they were recorded.
        raise ExceptionGroup(f"the body raised, and {unseen}", [exc, *errors]) from None
