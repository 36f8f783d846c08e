"""What a running forum hands its calls: one record, so that calls never reach into a Forum."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs
from anyio.lowlevel import current_token

if TYPE_CHECKING:
    from anyio.abc import AsyncBackend, TaskGroup

    from .._forum import Forum
    from .._promises import Failure
    from .._stores._protocol import MessageStore
    from ..llms._observe import ModelRequest
    from ._call import Call


@attrs.frozen
class ForumStatistics:
    """A snapshot of what a forum has done since it was entered (:meth:`Forum.statistics`).

    Cheap counters, kept as calls run; read them to see where a program's calls go.

    Attributes:
        calls_started: Calls made (``ask``, ``tell``, ``start_asking``), at any depth.
        calls_running: Calls whose task has not ended yet.
        agents_run: Calls that ran their agent function.
        cache_hits: Calls answered from the store's cache index, without running the agent.
        cache_misses: Calls through the cache that found no answer, so ran their agent.
        calls_followed: Calls that followed an identical call in flight (single flight)
            instead of running the agent again.
        flights: Calls in flight now that identical calls could follow.
        messages_stored: Messages the forum handed its store to store (requests, call
            messages, responses, errors; one stored already counts again).
    """

    calls_started: int
    calls_running: int
    agents_run: int
    cache_hits: int
    cache_misses: int
    calls_followed: int
    flights: int
    messages_stored: int


class CallTracer(Protocol):
    """What traces a forum's calls, when something does (``agentforum.otel``).

    A forum that is not traced has none (``ForumState.tracer`` is ``None``): then nothing
    of this runs, and the runtime's only cost is checking that, once per call.
    """

    def start(self, call: Call) -> None:
        """Trace ``call``, a new call, and start its task (``call.run``) in the forum's group."""

    def model_request(
        self,
        call: Call,
        *,
        provider: str,
        model: str,
        operation: str,
        server_address: str | None,
        server_port: int | None,
    ) -> ModelRequest:
        """Trace a request to a model that the agent function of ``call`` makes."""


class ForumState:
    """The state of one run of a forum (one ``async with forum:``), owned by the forum.

    The calls of that run read and write it: the task group they run in, the store, the
    errors they recorded, the flights in progress, and the counters of
    :class:`ForumStatistics`. The forum makes a new one each time it is entered.
    """

    __slots__ = (
        "agents_run",
        "backend",
        "cache_hits",
        "cache_misses",
        "calls_followed",
        "calls_running",
        "calls_started",
        "failures",
        "flights",
        "forum",
        "messages_stored",
        "open_calls",
        "store",
        "store_errors",
        "task_group",
        "tracer",
    )

    def __init__(
        self,
        forum: Forum,
        store: MessageStore,
        task_group: TaskGroup,
        tracer: CallTracer | None = None,
    ) -> None:
        #: The forum, for the public objects that calls hand out (sequences, contexts).
        self.forum = forum
        self.store = store
        #: Where every call's task runs.
        self.task_group = task_group
        #: What traces the calls (``agentforum.otel.instrument``), or ``None``: not traced.
        self.tracer = tracer
        #: The AnyIO backend the forum runs on (it runs in one event loop from its entry to
        #: its exit): the calls make their cancel scopes and events with it, instead of
        #: asking which library runs (``sniffio``) for each one as ``anyio.Event()`` does.
        self.backend: type[AsyncBackend] = current_token().backend_class
        #: How the calls' branches ended in error, for ``strict_errors``.
        self.failures: list[Failure] = []
        #: The store's errors that kept a call's ErrorMessage out of the tree.
        self.store_errors: list[Exception] = []
        #: The calls started with ``start_asking`` at top level, closed when the block ends.
        self.open_calls: list[Call] = []
        #: The calls that run their agent through the cache, by CallMessage hash: what an
        #: identical call made meanwhile follows (single flight).
        self.flights: dict[str, Call] = {}
        self.calls_started = 0
        self.calls_running = 0
        self.agents_run = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.calls_followed = 0
        self.messages_stored = 0

    def statistics(self) -> ForumStatistics:
        """A snapshot of the counters."""
        return ForumStatistics(
            calls_started=self.calls_started,
            calls_running=self.calls_running,
            agents_run=self.agents_run,
            cache_hits=self.cache_hits,
            cache_misses=self.cache_misses,
            calls_followed=self.calls_followed,
            flights=len(self.flights),
            messages_stored=self.messages_stored,
        )
