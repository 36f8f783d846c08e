"""One call of an agent: its task, its agent function's task, its cancellation, its nesting.

Every call's task runs in the forum's task group. A call made by an agent function is
nested in that function's call: it is one of its ``children``, cancelled with it, and the
call does not end before its children have (so an answer is cached only once everything it
asked has ended cleanly). The agent function runs in a task group of its call's own, and
the call's task writes the branch while it runs (``_writer.py``). A call through the cache
answers from the store, follows an identical call in flight, or leads (``_flight.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from anyio import BrokenResourceError, ClosedResourceError

from .._context import current_call
from .._json import EMPTY
from .._log import Feed
from .._promises import MessageSequence, RequestCursor, SequenceLog, StreamedMessage
from . import _flight
from ._interaction import InteractionContext
from ._writer import Entry, Writer

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._agents import Agent
    from .._content import Item
    from .._json import FrozenDict, JSONValue
    from .._messages import Message
    from .._promises import MessagePromise
    from ._flight import Flight
    from ._state import ForumState


class Call:
    """One call of an agent, from its first request to the end of its branch.

    Made by :func:`start`; its task is :meth:`run`, in the forum's task group. ``send``
    queues requests and responses for the writer, and never blocks.
    """

    #: How the cache answered a call through it: ``"hit"``, ``"miss"`` (it ran its agent)
    #: or ``"followed"`` (an identical call in flight answered it), set when the cache has
    #: answered (``_flight.py``, ``_claims.py``). Left unset, not set to ``None``, in
    #: ``__init__``, so that it costs nothing to a call that nobody traces: read it with
    #: ``getattr(call, "cache_result", None)``.
    cache_result: str

    __slots__ = (
        "_agent_scope",
        "_cancelled",
        "_joined",
        "_scope",
        "_unfinished",
        "_writer_scope",
        "_written",
        "agent",
        "agent_error",
        "blank_history",
        "branch_from",
        "cache_result",
        "cached",
        "caller",
        "caller_read",
        "children",
        "clean",
        "cursor",
        "detached",
        "flight",
        "following",
        "hand_streams",
        "key",
        "kwargs",
        "last_follower",
        "left",
        "mirrored",
        "open_calls",
        "request_feed",
        "requests",
        "requests_closed",
        "response_feed",
        "responses",
        "state",
        "write_error",
        "writer",
    )

    def __init__(
        self,
        agent: Agent,
        state: ForumState,
        kwargs: Mapping[str, JSONValue],
        branch_from: Message | MessagePromise | str | None,
        blank_history: bool,
        caller: Call | None,
        *,
        cached: bool,
    ) -> None:
        self.agent = agent
        self.state = state
        self.kwargs = kwargs
        self.branch_from = branch_from
        self.blank_history = blank_history
        self.caller = caller
        #: Answered through the cache: from the store, by following, or by leading.
        self.cached = cached
        #: What ask(), send_request() and respond() queue for the writer (see run()).
        self.request_feed: Feed[Entry] = Feed()
        self.response_feed: Feed[Entry] = Feed()
        self.requests = SequenceLog(owner=self)
        self.responses = SequenceLog(owner=self)
        #: How many of the requests this call's agent function has read (made when it runs).
        self.cursor: RequestCursor | None = None
        self.requests_closed = False
        # How many of the caller's requests its agent had read when this call was made, if
        # the caller's requests were still open then (see Writer.default_parent).
        self.caller_read = (
            caller.cursor.read
            if caller is not None and caller.cursor is not None and not caller.requests_closed
            else 0
        )
        self.writer = Writer(self, state.store)
        #: Cancelling it cancels the call (see cancel()); made when its task starts, and
        #: cancelled then if the call was cancelled before (``_cancelled``), so that calls
        #: waiting to start (thousands, made at once) hold no scope yet.
        self._scope: anyio.CancelScope | None = None
        self._cancelled = False
        #: Around the agent function while it runs (in this call's task): what a failure to
        #: write the branch cancels.
        self._agent_scope: anyio.CancelScope | None = None
        self.agent_error: Exception | None = None
        #: The writer's task, when the branch needs one (see _start_writer()): its cancel
        #: scope, the event set when it ends, and how writing failed, if it did.
        self._writer_scope: anyio.CancelScope | None = None
        self._written: anyio.Event | None = None
        self.write_error: Exception | None = None
        #: Streamed responses produced by hand, to end if the agent function leaves them open.
        self.hand_streams: list[StreamedMessage] | None = None
        #: The calls this call's agent started with start_asking(), made when there is one.
        self.open_calls: list[Call] | None = None
        #: The calls this call's agent made, made when there is one; and how many still run.
        self.children: list[Call] | None = None
        self._unfinished = 0
        self._joined: anyio.Event | None = None
        #: No call nested in this one (at any depth) ended in an error or was cancelled.
        self.clean = True
        #: When this call leads a flight: its key (the CallMessage hash), the flight once
        #: identical calls follow it, and whether its own consumers have left it.
        self.key: str | None = None
        self.flight: Flight | None = None
        self.left = False
        #: No longer waited for by its caller (it left the flight it leads to others).
        self.detached = False
        #: When it follows a flight: the flight, how many of its responses it gave its
        #: consumers, and whether it was the last caller to leave it (it cancelled it).
        self.following: Flight | None = None
        self.mirrored = 0
        self.last_follower = False

    # -- feeding ------------------------------------------------------------------------------

    def send(
        self,
        feed: str,
        items: list[Item],
        reply_to: str | Message | MessagePromise | None,
        metadata: FrozenDict,
    ) -> None:
        """Queue flattened content on the ``"requests"`` or ``"responses"`` feed (never blocks).

        Text responses are placed at once while nothing waits to be placed before them and
        the store allows it (``Writer.place_now``); the first item that has to wait (a
        streamed message, a promise, a store that waits) starts the writer's task, which
        places it and every item after it.
        """
        stream = self.request_feed if feed == "requests" else self.response_feed
        if feed == "responses":
            for item in items:
                if isinstance(item, StreamedMessage) and item._by_hand:
                    if self.hand_streams is None:
                        self.hand_streams = []
                    self.hand_streams.append(item)
            if self._written is None and not (stream.closed or stream.dropped):
                if self.writer.places_now and (reply_to is None or isinstance(reply_to, str)):
                    items = self._respond_now(items, reply_to, metadata)
                if items and self._written is None and not stream.dropped:
                    self._start_writer()
        try:
            for item in items:
                stream.send((item, reply_to, metadata))
        except ClosedResourceError:
            if feed == "responses":
                reason = "its agent function returned"
            elif self.requests_closed:
                reason = "response_sequence() was called"
            else:
                reason = "the call has ended; its response sequence tells how"
            raise ClosedResourceError(f"the {feed} of this call are closed ({reason})") from None
        except BrokenResourceError:
            # The call has already ended in an error, recorded in its branch.
            return

    def _respond_now(
        self, items: list[Item], reply_to: str | None, metadata: FrozenDict
    ) -> list[Item]:
        """Place the texts at the head of ``items`` at once; return the items after them."""
        writer = self.writer
        for index, item in enumerate(items):
            if not isinstance(item, str):
                return items[index:]
            try:
                writer.place_now(item, reply_to, metadata)
            except Exception as exc:
                self._writing_failed(exc)
                return []
        return []

    def _start_writer(self) -> None:
        """Start the task that places what is queued on the feeds, in the forum's task group.

        It runs beside the agent function (this call's task) until the function has ended
        and every response it queued is placed; cancelling the call cancels it too.
        """
        backend = self.state.backend
        self._written = backend.create_event()
        self._writer_scope = backend.create_cancel_scope()
        if self._cancelled:
            self._writer_scope.cancel()
        self.state.task_group.start_soon(self._write, name=f"writer of {self.agent.alias}")

    async def _write(self) -> None:
        current_call.set(None)  # it iterates sequences, but it is not the agent function
        assert self._writer_scope is not None
        assert self._written is not None
        writer = self.writer
        try:
            with self._writer_scope:
                try:
                    if writer.call_message is None:  # a leader has placed its requests already
                        await writer.write_requests()
                    await writer.write_responses()
                except Exception as exc:
                    self._writing_failed(exc)
        finally:
            self._written.set()

    def _writing_failed(self, exc: Exception) -> None:
        """The branch cannot be written further: stop the agent function, drop what comes.

        The failure is recorded once the function has ended (see :meth:`execute`).
        """
        # The agent function's scope is made before anything can write (execute()).
        assert self._agent_scope is not None
        self.write_error = exc
        self._agent_scope.cancel()
        self.response_feed.drop()

    async def _join_writer(self) -> None:
        if self._written is not None:
            await self._written.wait()

    def close_requests(self) -> None:
        self.requests_closed = True
        self.request_feed.close()

    # -- cancellation -------------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the call and every call nested in it, at their next checkpoint.

        The branch ends with an ErrorMessage of type ``agentforum.AgentCancelled`` (after
        the message being streamed, if any, recorded with ``incomplete: True``), once no
        code of the call runs any more. Cancelling a call that has ended does nothing but
        cancel the calls still running in it. A call that leads a flight that other calls
        follow goes on running for them: only its consumers leave (see ``_flight.leave``).
        """
        flight = self.flight
        if flight is not None and flight.followers and not flight.landed:
            if not self.left:
                _flight.leave(self)
            return
        self.cancel_run()

    def cancel_run(self) -> None:
        """Cancel what runs in this call: its task, its agent function, its nested calls."""
        self._cancelled = True
        if self._scope is not None:
            self._scope.cancel()
        if self._writer_scope is not None:
            self._writer_scope.cancel()
        for child in self.children or ():
            child.cancel()

    def adopt(self, child: Call) -> None:
        """``child`` was made by this call's agent function: it is nested in this call."""
        if self.children is None:
            self.children = []
        self.children.append(child)
        self._unfinished += 1
        if self._cancelled:
            child.cancel()

    def detach(self) -> None:
        """Its caller no longer waits for this call, which goes on for other calls."""
        if self.caller is not None and not self.detached:
            self.detached = True
            self.caller._child_ended()

    def _child_ended(self) -> None:
        self._unfinished -= 1
        if not self._unfinished and self._joined is not None:
            self._joined.set()

    async def _join_children(self) -> None:
        """Wait until every call nested in this one has ended."""
        while self._unfinished:
            self._joined = self.state.backend.create_event()
            await self._joined.wait()

    def taint(self) -> None:
        """This call and every call it is nested in got an error: none of them is cached."""
        call: Call | None = self
        while call is not None and call.clean:
            call.clean = False
            call = call.caller

    # -- the call's tasks ---------------------------------------------------------------------

    async def run(self) -> None:
        """The call's task: answers the call, and returns when its branch and children end."""
        current_call.set(None)
        scope = self._scope = self.state.backend.create_cancel_scope()
        if self._cancelled:
            scope.cancel()
        try:
            with scope:
                if self.cached:
                    await _flight.answer(self)
                else:
                    await self.execute()
                await self._join_children()
            if scope.cancelled_caught:
                await self._end_cancelled()
            elif self.key is not None and self.clean:
                await _flight.remember(self)
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside: the forum's own cancellation.
            with anyio.CancelScope(shield=True):
                await self._end_cancelled()
            raise
        finally:
            self._end()

    async def _end_cancelled(self) -> None:
        """Record the cancellation, once the calls nested in this one have ended too."""
        for child in self.children or ():
            child.cancel()
        await self._join_writer()
        await self._join_children()
        if self.requests.closed and self.writer.log.closed:
            return  # the branch was complete; only calls nested in it were cancelled
        self.taint()
        await _flight.record_cancellation(self)

    def _end(self) -> None:
        """Whatever happened, leave nothing waiting: feeds, streams, consumers, the caller."""
        for feed in (self.request_feed, self.response_feed):
            feed.close()
            feed.drop()
        streaming = self.writer.streaming
        if streaming is not None:
            streaming.message._finish()
        self.writer.fail_pending()
        state = self.state
        if self.key is not None:
            if state.flights.get(self.key) is self:
                del state.flights[self.key]
            if self.flight is not None:
                self.flight.land()
        state.calls_running -= 1
        if self.caller is not None and not self.detached:
            self.caller._child_ended()
        # Nothing runs in the call any more: its sequences, which consumers may keep for
        # long, no longer keep the call (its feeds, scopes and nested calls) alive, and the
        # call keeps no reference cycle (its writer, its request cursor): once nobody holds
        # it, it is freed at once, not by the cyclic garbage collector.
        self.requests.owner = self.responses.owner = None
        self.cursor = None
        self.writer.release()
        # The calls it made refer to it (their caller): it no longer refers to them. Any of
        # them still running was detached: it leads a flight for others, and cancelling
        # this call did not cancel it before either (see cancel()).
        self.children = self.open_calls = self.hand_streams = None

    async def execute(self) -> None:
        """Run the agent function in this task, while its branch is written.

        The text responses of the function are placed as it responds (``send``); anything
        else, and the requests of a call whose requests are still open, by a task of their
        own (:meth:`_start_writer`). If writing fails, the agent function is cancelled (not
        the calls nested in it), and the failure is recorded once its function has ended.
        """
        self.state.agents_run += 1
        writer = self.writer
        if writer.call_message is None:
            self._start_writer()  # the agent function may read the requests as they come
        await self._run_agent()
        await self._join_writer()
        cause = self.write_error if self.write_error is not None else self.agent_error
        if cause is None:
            writer.log.close()
        else:
            await writer.record_failure(cause)

    async def _run_agent(self) -> None:
        token = current_call.set(self)
        self.cursor = RequestCursor(self)
        context = InteractionContext(self, self.cursor)
        backend = self.state.backend
        # Made before this task first waits: the writer's task, started already or later,
        # finds it to cancel (_writing_failed).
        scope = self._agent_scope = backend.create_cancel_scope()
        cancelled = False
        try:
            with scope:
                try:
                    # A call cancelled before its task ran runs none of its agent's code.
                    await backend.checkpoint_if_cancelled()
                    await self.agent.function(context, **self.kwargs)
                except Exception as exc:
                    self.agent_error = exc
                except anyio.get_cancelled_exc_class():
                    cancelled = True
                    raise
        finally:
            current_call.reset(token)
            self.response_feed.close()
            for call in self.open_calls or ():
                call.close_requests()
            # A streamed response the function left open ends with it; if the function
            # failed or was cancelled, the message is incomplete.
            for stream in self.hand_streams or ():
                stream._end(self.agent_error, cancelled)


def start(
    agent: Agent,
    state: ForumState,
    items: list[Item],
    kwargs: Mapping[str, JSONValue],
    branch_from: Message | MessagePromise | str | None,
    blank_history: bool,
    *,
    cached: bool,
) -> Call:
    """Make a call of ``agent`` with the requests ``items`` and start its task."""
    caller = current_call.get()
    if caller is not None and caller.state is not state:
        caller = None  # an agent function of another forum (or of a past run of this one)
    call = Call(agent, state, kwargs, branch_from, blank_history, caller, cached=cached)
    if items:
        call.send("requests", items, None, EMPTY)
    if caller is not None:
        caller.adopt(call)
    state.calls_started += 1
    state.calls_running += 1
    tracer = state.tracer
    if tracer is None:
        state.task_group.start_soon(call.run, name=f"call of {agent.alias}")
    else:
        tracer.start(call)  # it starts the task, traced (``agentforum.otel``)
    return call


def sequence(call: Call) -> MessageSequence:
    """The responses of ``call``, as its consumers read them."""
    return MessageSequence(call.responses, call.state.forum)
