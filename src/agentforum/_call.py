"""The runtime of one agent call: the task that writes its branch and the agent's task."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Final

import anyio
import anyio.lowlevel
import attrs
from anyio import BrokenResourceError, ClosedResourceError

from . import _agents
from ._content import Item, flatten
from ._context import current_call
from ._exceptions import AgentError, IntegrityError, IntegrityWarning, MessageNotFoundError
from ._json import FrozenDict
from ._log import Feed
from ._messages import CallMessage, ErrorMessage, Message, forward_of
from ._promises import Failure, MessagePromise, MessageSequence, SequenceLog, StreamedMessage
from ._stores._cache import entry_problems

if TYPE_CHECKING:
    from collections.abc import Mapping

    from anyio.abc import TaskGroup

    from ._agents import Agent
    from ._forum import Forum
    from ._json import JSONValue

#: One entry of a call's request or response feed: content, its ``reply_to``, its metadata.
Entry = tuple[Item, "str | Message | MessagePromise | None", FrozenDict]


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Final = _Unset()

#: The feed of a call that never has anything to queue on it: closed, and not received.
NO_FEED: Final[Feed[Entry]] = Feed()
NO_FEED.close()
NO_FEED.drop()


def error_type_of(exception: BaseException) -> str:
    """Name an exception's type as ``module.QualName``, built-ins without their module."""
    cls = type(exception)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class Call:
    """One call of an agent: owned by the task group it runs in, done when its branch is.

    ``run`` is the call's task: it opens the call's task group (where the calls nested in it
    run), starts the agent function, and writes the branch in order: the requests, the
    :class:`CallMessage`, the responses, and an :class:`ErrorMessage` if the call failed.
    A cached call runs no agent function: after its requests and CallMessage it answers
    from the store, or gives the responses of the flight that runs the agent (``_answer``).
    Requests and responses reach it through two ``Feed`` queues (see ``_log.py``), so
    ``send_request`` and ``respond`` never block.
    """

    __slots__ = (
        "_call_placed",
        "_caller_read",
        "_following",
        "_last_follower",
        "_mirrored",
        "_parent",
        "_reply_default",
        "_scope",
        "_streaming",
        "agent",
        "agent_error",
        "blank_history",
        "branch_from",
        "cached",
        "call_message",
        "caller",
        "clean",
        "flight",
        "forum",
        "hand_streams",
        "kwargs",
        "open_calls",
        "request_feed",
        "requests",
        "requests_closed",
        "response_feed",
        "responses",
        "task_group",
    )

    def __init__(
        self,
        agent: Agent,
        kwargs: Mapping[str, JSONValue],
        branch_from: Message | MessagePromise | str | None,
        blank_history: bool,
        caller: Call | None,
        *,
        cached: bool = False,
        runner: bool = False,
    ) -> None:
        self.agent = agent
        self.forum: Forum = agent.forum
        self.kwargs = kwargs
        self.branch_from = branch_from
        self.blank_history = blank_history
        self.caller = caller
        #: What ask(), send_request() and respond() queue for the writer (see run()). A
        #: cached call runs no agent function, so it gets no responses to queue; a flight's
        #: runner gets no requests (its requests are those of the call that launched it).
        self.request_feed: Feed[Entry] = NO_FEED if runner else Feed()
        self.response_feed: Feed[Entry] = NO_FEED if cached else Feed()
        self.requests = SequenceLog(self, owner=self)
        self.responses = SequenceLog(owner=self)
        #: Cancelling it cancels the call and every call nested in it (see cancel()).
        self._scope = anyio.CancelScope()
        self.requests_closed = False
        # How many of the caller's requests its agent had read when this call was made, if
        # the caller's requests were still open then (see _default_parent).
        self._caller_read = (
            caller.requests.read if caller is not None and not caller.requests_closed else 0
        )
        self.call_message: CallMessage | None = None
        self._call_placed: anyio.Event | None = None
        #: The calls this call's agent started with start_asking(), made when there is one.
        self.open_calls: list[Call] | None = None
        self.task_group: TaskGroup | None = None
        self.agent_error: Exception | None = None
        self._parent: str | _Unset | None = UNSET
        self._reply_default: str | None = None
        # The streamed message being placed, with its promise and how to place it.
        self._streaming: _Streaming | None = None
        #: Streamed responses produced by hand, to close if the agent function leaves them open.
        self.hand_streams: list[StreamedMessage] | None = None
        #: Answered through the cache: from the store, or by a flight that runs the agent.
        self.cached = cached
        #: No call nested in this one (at any depth) ended in an error or was cancelled.
        self.clean = True
        #: The flight this call runs (it is a flight's runner), if any.
        self.flight: Flight | None = None
        # The flight this call follows, how many of its responses are mirrored, and whether
        # this call was its last follower when cancelled (see _follow).
        self._following: Flight | None = None
        self._mirrored = 0
        self._last_follower = False

    # -- feeding ------------------------------------------------------------------------------

    def send(
        self,
        feed: str,
        items: list[Item],
        reply_to: str | Message | MessagePromise | None,
        metadata: FrozenDict,
    ) -> None:
        """Queue flattened content on the ``"requests"`` or ``"responses"`` feed (never blocks)."""
        stream = self.request_feed if feed == "requests" else self.response_feed
        if feed == "responses":
            for item in items:
                if isinstance(item, StreamedMessage) and item._source is None:
                    if self.hand_streams is None:
                        self.hand_streams = []
                    self.hand_streams.append(item)
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

    def close_requests(self) -> None:
        self.requests_closed = True
        self.request_feed.close()

    # -- the call's tasks ---------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the call and every call nested in it, at their next checkpoint.

        The branch ends with an ErrorMessage of type ``agentforum.AgentCancelled`` (after
        the message being streamed, if any, recorded with ``incomplete: True``), once no
        code of the call runs any more. Cancelling a call that has ended does nothing but
        cancel the calls still running in it.
        """
        self._scope.cancel()

    async def run(self) -> None:
        """The call's task: runs the agent and writes the branch; returns when both are done."""
        current_call.set(None)
        try:
            with self._scope:
                if self.cached:
                    # No agent code runs in this task (a flight runs it): no nested calls.
                    await self._answer()
                else:
                    async with anyio.create_task_group() as call_group:
                        self.task_group = call_group
                        await self._run_and_write(call_group)
                        # The calls nested in this one may still run: the group waits.
            if self._scope.cancelled_caught:
                await self._record_cancellation()
            elif self.flight is not None and self.clean:
                await self._remember()
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside: by an enclosing call or the forum's own cancellation.
            with anyio.CancelScope(shield=True):
                await self._record_cancellation()
            raise
        finally:
            self._close_feeds()
            if self._streaming is not None:
                self._streaming.message._finish()
            self._fail_pending()
            if self.flight is not None:
                self.flight.land()
            # Nothing runs in the call any more: its sequences, which consumers may keep
            # for long, no longer keep the call (its feeds, scopes and task group) alive.
            self.requests.owner = self.responses.owner = self.requests.reader = None

    async def _run_and_write(self, call_group: TaskGroup) -> None:
        """Run the agent function in ``call_group`` while this task writes the branch.

        If writing fails, the agent function is cancelled (not the calls nested in it), and
        the failure is recorded once its function has ended.
        """
        agent_scope = anyio.CancelScope()
        call_group.start_soon(self._run_agent, agent_scope, name=f"agent {self.agent.alias}")
        try:
            await self._write()
        except Exception as exc:
            agent_scope.cancel()
            # The agent function closes the response feed when it ends.
            await self.response_feed.wait_closed()
            cause: Exception | None = exc
        else:
            # The response feed is closed: the agent function has ended.
            cause = self.agent_error
        if cause is None:
            self.responses.close()
        else:
            await self._record_failure(cause)

    async def _run_agent(self, scope: anyio.CancelScope) -> None:
        current_call.set(self)
        context = _agents.InteractionContext(self)
        cancelled = False
        try:
            with scope:
                try:
                    # A call cancelled before its task ran runs none of its agent's code.
                    await anyio.lowlevel.checkpoint_if_cancelled()
                    await self.agent.function(context, **self.kwargs)
                except Exception as exc:
                    self.agent_error = exc
                except anyio.get_cancelled_exc_class():
                    cancelled = True
                    raise
        finally:
            self.response_feed.close()
            for call in self.open_calls or ():
                call.close_requests()
            # A streamed response the function left open ends with it; if the function
            # failed or was cancelled, the message is incomplete.
            for stream in self.hand_streams or ():
                if not stream._log.closed:
                    if self.agent_error is not None and stream._error is None:
                        stream._error = self.agent_error
                    stream._cut = stream._cut or cancelled
                    stream._finish()

    def _close_feeds(self) -> None:
        self.request_feed.close()
        self.response_feed.close()
        self.request_feed.drop()
        self.response_feed.drop()

    # -- writing the branch -------------------------------------------------------------------

    async def _write(self) -> None:
        if self.call_message is None:  # a flight's runner starts with its CallMessage placed
            await self._write_requests()
        await self._write_responses()

    async def _write_requests(self) -> None:
        """Place the requests, then the :class:`CallMessage`; the responses will follow it."""
        agent = self.agent
        store = self.forum.store
        if self.branch_from is not None:
            self._parent = (await self._existing(self.branch_from)).hash
        elif self.blank_history:
            self._parent = None
        sender = self.caller.agent.alias if self.caller is not None else "user"
        try:
            async for item, reply_to, metadata in self.request_feed:
                await self._place(item, reply_to, metadata, sender, self.requests)
        finally:
            self.request_feed.drop()
        if isinstance(self._parent, _Unset):
            self._parent = await self._default_parent()
        last_request = self._parent if self.requests.items else None
        call_message = CallMessage(receiver=agent.alias, kwargs=self.kwargs, parent=self._parent)
        await store.put(call_message)
        self.call_message = call_message
        if self._call_placed is not None:
            self._call_placed.set()
        self.requests.close()

        self._parent = call_message.hash
        self._reply_default = last_request

    async def _write_responses(self) -> None:
        alias = self.agent.alias
        feed = self.response_feed
        # Not closed here when cancelled: the responses still queued may be placed then.
        async for item, reply_to, metadata in feed:
            if _is_text(item, reply_to):
                # Group commit: the texts queued behind this one are stored with it, in one
                # store operation (one transaction in SQLite). They stay queued until they
                # are stored, so that a cancellation still places them.
                batch = [(item, reply_to, metadata)]
                for entry in feed.queued():
                    if len(batch) == GROUP_COMMIT or not _is_text(entry[0], entry[1]):
                        break
                    batch.append(entry)
                if len(batch) > 1 and await self._place_texts(batch, alias):
                    feed.discard(len(batch) - 1)
                    continue
            await self._place(item, reply_to, metadata, alias, self.responses)

    async def _place_texts(self, batch: list[Entry], sender: str) -> bool:
        """Place responses that are texts (with no reply_to to wait for) in one store call.

        Each promise resolves once its message is stored, as when they are placed one by
        one; the messages and their hashes are the same too. Returns ``False``, placing
        none, if the store refuses the group (a reply_to not in the store, say): placed one
        by one, the branch then ends where it would have anyway.
        """
        parent = self._parent
        assert not isinstance(parent, _Unset)
        messages = []
        for content, reply_to, metadata in batch:
            assert isinstance(content, str)
            message = Message(
                content=content,
                sender=sender,
                metadata=metadata,
                parent=parent,
                reply_to=self._reply_now(reply_to),
            )
            messages.append(message)
            parent = message.hash
        try:
            await self.forum.store.put_many(messages)
        except Exception:
            return False
        for message in messages:
            self.responses.append(MessagePromise._of(message))
        self._parent = parent
        return True

    # -- caching ------------------------------------------------------------------------------

    async def _answer(self) -> None:
        """Answer a cached call: from the store, by following a flight, or by a new flight.

        The key is the hash of the call's :class:`CallMessage`, known once its requests are
        placed: the agent function of a cached call never sees an incomplete request.
        """
        try:
            await self._write_requests()
        except Exception as exc:
            await self._record_failure(exc)
            return
        assert self.call_message is not None
        key = self.call_message.hash
        flights = self.forum._flights
        flight = flights.get(key)
        if flight is not None and self._inside(flight):
            await self._record_failure(
                RecursionError(
                    f"this call of {self.agent.alias!r} is identical to a call it is nested "
                    "in (same history, requests and keyword arguments): waiting for that "
                    "call's answer would never end"
                )
            )
            return
        if flight is None:
            try:
                answer = await self._cached_answer(key)
            except Exception as exc:
                await self._record_failure(exc)
                return
            if answer is not None:
                self._replay(answer)
                return
            flight = flights.get(key)  # another identical call may have started one meanwhile
            if flight is None:
                flight = self._launch(key)
        await self._follow(flight)

    def _inside(self, flight: Flight) -> bool:
        """Whether this call is nested, at any depth, in the runner of ``flight``."""
        # Up the callers; at a flight's runner, up the callers of each call following it.
        pending = [self.caller]
        while pending:
            call = pending.pop()
            if call is None:
                continue
            if call is flight.runner:
                return True
            if call.flight is None:
                pending.append(call.caller)
            else:
                pending.extend(follower.caller for follower in call.flight.followers)
        return False

    async def _cached_answer(self, key: str) -> list[Message] | None:
        """The responses the cache index recorded for this call: a hit, or ``None``, a miss.

        An entry is believed only if its responses are stored, verify, and form this call's
        own branch, so that an edited or corrupted store never answers with another call's
        answer. Any other entry is a miss (the agent runs, and its answer replaces the entry)
        reported with an :class:`IntegrityWarning`.
        """
        assert self.call_message is not None
        store = self.forum.store
        try:
            answer = await store.get_cached(key)
            if answer is None:
                return None
            messages = [await store.get(response) for response in answer]
        except (IntegrityError, MessageNotFoundError) as exc:
            problem = str(exc)
        else:
            nodes = {m.hash: (m._kind, m.parent) for m in (self.call_message, *messages)}
            problems = entry_problems(key, answer, nodes.get)
            if not problems:
                return messages
            problem = problems[0]
        warnings.warn(
            IntegrityWarning(
                f"call {key} is not answered from the cache: {problem}; run "
                "`agentforum fsck` to check the whole store"
            ),
            stacklevel=1,
        )
        return None

    def _replay(self, answer: list[Message]) -> None:
        """Respond with the messages that answered this call before (the cache hit)."""
        for message in answer:
            self.responses.append(MessagePromise._of(message))
            self._parent = message.hash
        self.responses.close()

    def _launch(self, key: str) -> Flight:
        """Start the flight that runs the agent for every identical call, in the forum's group.

        The flight runs outside the task group of this call, so that cancelling this call
        does not cancel it for the other calls that follow it (see ``_leave``).
        """
        runner = Call(self.agent, self.kwargs, None, False, None, runner=True)
        for promise in self.requests.items:
            runner.requests.append(promise)
        runner.requests.close()
        runner.close_requests()
        runner.call_message = self.call_message
        runner._parent = key
        runner._reply_default = self._reply_default
        flight = runner.flight = Flight(key, runner)
        self.forum._flights[key] = flight
        group = self.forum._task_group
        assert group is not None  # this call runs in the forum: the forum runs
        group.start_soon(runner.run, name=f"flight of {self.agent.alias}")
        return flight

    async def _follow(self, flight: Flight) -> None:
        """Respond with the responses of ``flight`` as they come, then wait for it to land."""
        flight.followers.add(self)
        self._following = flight
        try:
            await self._mirror(flight.runner.responses)
            await flight.landed.wait()
        except BaseException:
            self._leave()
            raise
        self._following = None
        flight.followers.discard(self)
        if not flight.runner.clean:
            self._taint()

    def _leave(self) -> None:
        """Stop following the flight; the last follower to leave cancels it (never blocks)."""
        flight = self._following
        assert flight is not None
        flight.followers.discard(self)
        if not flight.followers and not flight.landed.is_set():
            self._last_follower = True
            flight.abandon()

    async def _mirror(self, source: SequenceLog) -> None:
        """Give this call's consumers the promises of ``source``, each as it settles.

        Each promise shares the token log of the flight's promise (tokens are live), but is
        this call's own: a follower that stops following fails its promises, not the
        flight's. Resumable: it goes on from the first promise not settled yet.
        """
        log = self.responses
        while True:
            index = self._mirrored
            await source.wait_beyond(index)
            if index == len(source.items):
                if source.failure is not None:
                    self._taint()
                    self._fail_logs(source.failure)
                else:
                    log.close()
                return
            shared = source.items[index]
            if len(log.items) == index:
                log.append(MessagePromise(shared._tokens))
            await shared._settled()
            promise = log.items[index]
            if shared._message is not None:
                promise._resolve(shared._message)
                self._parent = shared._message.hash
            else:
                assert shared._failure is not None
                promise._fail(shared._failure)
            self._mirrored = index + 1

    async def _remember(self) -> None:
        """Record in the store's cache index the responses of a flight that ended cleanly."""
        assert self.flight is not None
        answer = [promise._message.hash for promise in self.responses.items if promise._message]
        await self.forum.store.put_cached(self.flight.key, answer)

    def _taint(self) -> None:
        """This call and every call it is nested in got an error: none of them is cached."""
        call: Call | None = self
        while call is not None and call.clean:
            call.clean = False
            call = call.caller

    async def _existing(self, point: Message | MessagePromise | str) -> Message:
        if isinstance(point, str):
            return await self.forum.store.resolve(point)
        if isinstance(point, MessagePromise):
            return await point
        await self.forum.store.put(point)
        return point

    async def branch_end(self) -> str | None:
        """The hash of the message the call's :class:`CallMessage` continues (``None``: a root).

        For the call's own agent function: waits until the CallMessage is placed. If a
        request fails instead, the call cancels its agent function (in this wait) before it
        records the failure, so the wait never ends without a CallMessage.
        """
        if self.call_message is None:
            if self._call_placed is None:
                self._call_placed = anyio.Event()
            await self._call_placed.wait()
        assert self.call_message is not None
        return self.call_message.parent

    async def _default_parent(self) -> str | None:
        """Where a branch starts by default: after the caller's last request, or a new root.

        "The caller's last request" is decided by the caller's program order, never by timing:
        if the caller's requests were complete when this call was made, it is the last of
        them (placed before the caller's CallMessage). If they were still open (a full-duplex
        caller), it is the last request the caller's agent function had read from
        ``ctx.request_messages`` by then; when it had read none, this call waits for the
        caller's requests to be complete.
        """
        caller = self.caller
        if caller is None:
            return None
        if self._caller_read:
            return (await caller.requests.items[self._caller_read - 1]).hash
        if caller.call_message is None and not caller.requests.closed:
            if caller._call_placed is None:
                caller._call_placed = anyio.Event()
            await caller._call_placed.wait()
        if caller.call_message is not None:
            return caller.call_message.parent
        # The caller failed before its requests were complete: continue after the last one.
        return None if isinstance(caller._parent, _Unset) else caller._parent

    async def _place(
        self,
        item: Item,
        reply_to: str | Message | MessagePromise | None,
        metadata: FrozenDict,
        sender: str,
        log: SequenceLog,
    ) -> None:
        """Place one item at the end of the branch (``self._parent``) and advance it."""
        if isinstance(item, str):
            parent = await self._start() if isinstance(self._parent, _Unset) else self._parent
            message = Message(
                content=item,
                sender=sender,
                metadata=metadata,
                parent=parent,
                reply_to=await self._reply(reply_to),
            )
            await self.forum.store.put(message)
            log.append(MessagePromise._of(message))
            self._parent = message.hash
        elif isinstance(item, StreamedMessage):
            promise = MessagePromise(item._log)
            log.append(promise)
            self._streaming = _Streaming(item, promise, reply_to, metadata, sender)
            await item._complete()
            self._streaming = None
            parent = await self._start() if isinstance(self._parent, _Unset) else self._parent
            message = Message(
                content="".join(item._log.items),
                sender=sender,
                metadata=_streamed_metadata(
                    item, metadata, incomplete=item._error is not None or item._cut
                ),
                parent=parent,
                reply_to=await self._reply(reply_to),
            )
            await self.forum.store.put(message)
            promise._resolve(message)
            self._parent = message.hash
            if item._error is not None:
                raise item._error
        elif isinstance(item, MessagePromise):
            promise = MessagePromise(item._tokens)
            log.append(promise)
            message = await self._placed(await item, reply_to, metadata, sender, stored=True)
            promise._resolve(message)
        elif isinstance(item, Message):
            message = await self._placed(item, reply_to, metadata, sender, stored=False)
            log.append(MessagePromise._of(message))
        elif isinstance(item, MessageSequence):
            async for promise in item:
                await self._place(promise, reply_to, metadata, sender, log)
        else:
            where = "a request" if log is self.requests else "a response"
            async for element in item:
                for sub_item in flatten(element, f"an async iterable given as {where}"):
                    await self._place(sub_item, reply_to, metadata, sender, log)

    async def _start(self) -> str | None:
        self._parent = await self._default_parent()
        return self._parent

    async def _placed(
        self,
        message: Message,
        reply_to: str | Message | MessagePromise | None,
        metadata: FrozenDict,
        sender: str,
        *,
        stored: bool,
    ) -> Message:
        """Return ``message`` as it continues the branch: itself, or a forward of it."""
        store = self.forum.store
        if not stored:
            await store.put(message)
        if isinstance(self._parent, _Unset):
            self._parent = message.parent
        if message.parent != self._parent:
            message = forward_of(
                message,
                sender=sender,
                metadata=metadata,
                parent=self._parent,
                reply_to=await self._reply(reply_to),
            )
            await store.put(message)
        self._parent = message.hash
        return message

    async def _reply(self, reply_to: str | Message | MessagePromise | None) -> str | None:
        if reply_to is None:
            return self._reply_default
        if isinstance(reply_to, str):
            return reply_to
        if isinstance(reply_to, MessagePromise):
            reply_to = await reply_to
        await self.forum.store.put(reply_to)
        return reply_to.hash

    # -- endings ------------------------------------------------------------------------------

    async def _record_failure(self, cause: Exception) -> None:
        """End the branch with an :class:`ErrorMessage` for ``cause``."""
        self._taint()
        if isinstance(cause, AgentError):
            error_type, content = cause.message.error_type, cause.message.content
        else:
            error_type, content = error_type_of(cause), str(cause)
        parent = None if isinstance(self._parent, _Unset) else self._parent
        message = ErrorMessage(
            content=content,
            sender=self.agent.alias,
            error_type=error_type,
            parent=parent,
            reply_to=self._reply_default,
        )
        try:
            await self.forum.store.put(message)
        except Exception as exc:
            # The store failed again (the disk is full, say): the message is not in the
            # tree, but the consumers still get it and its cause, not a cancelled forum;
            # the forum raises the store's error when it exits.
            self.forum._store_errors.append(exc)
        failure = Failure(message, cause)
        self.forum._failures.append(failure)
        self._fail_logs(failure)

    async def _record_cancellation(self) -> None:
        """End the branch of a cancelled call: what was ready, the cut message, an error.

        It may run shielded from the cancellation of an enclosing scope, so it waits for
        nothing that may not end: the store, and, when this call was the last follower of a
        flight (so the flight is being cancelled), the flight's landing.
        """
        if self.requests.closed and self.responses.closed:
            return  # the branch was complete; only calls nested in it were cancelled
        self._taint()
        flight, self._following = self._following, None
        if flight is not None and self._last_follower:
            # This call cancelled the flight: its branch is the flight's, cancelled.
            await flight.landed.wait()
            await self._mirror(flight.runner.responses)
            return
        streaming, self._streaming = self._streaming, None
        if streaming is not None:
            await self._place_cut(streaming)
        await self._place_ready_responses()
        message = ErrorMessage(
            content="the call was cancelled",
            sender=self.agent.alias,
            error_type="agentforum.AgentCancelled",
            parent=None if isinstance(self._parent, _Unset) else self._parent,
            reply_to=self._reply_default,
        )
        await self.forum.store.put(message)
        # A cancellation is not an agent's error: it is never raised when the forum exits.
        self._fail_logs(Failure(message, None, observed=True))

    async def _place_cut(self, streaming: _Streaming) -> None:
        """Place a streamed message as far as it got: marked incomplete unless it had ended."""
        streamed = streaming.message
        incomplete = not streamed._log.closed or streamed._error is not None or streamed._cut
        streamed._finish()
        message = Message(
            content="".join(streamed._log.items),
            sender=streaming.sender,
            metadata=_streamed_metadata(streamed, streaming.metadata, incomplete=incomplete),
            parent=None if isinstance(self._parent, _Unset) else self._parent,
            reply_to=self._reply_now(streaming.reply_to),
        )
        await self.forum.store.put(message)
        streaming.promise._resolve(message)
        self._parent = message.hash

    async def _place_ready_responses(self) -> None:
        """Place, in order, the queued responses that need no waiting; drop the rest."""
        if self.call_message is None:
            return  # responses hang below the CallMessage: none can be placed
        alias = self.agent.alias
        while True:
            try:
                item, reply_to, metadata = self.response_feed.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
            if not _ready(reply_to):
                return
            if isinstance(item, StreamedMessage):
                promise = MessagePromise(item._log)
                self.responses.append(promise)
                await self._place_cut(_Streaming(item, promise, reply_to, metadata, alias))
            elif isinstance(item, (str, Message)) or (
                isinstance(item, MessagePromise) and item.is_resolved
            ):
                await self._place(item, reply_to, metadata, alias, self.responses)
            else:
                return  # a sequence or an async iterable: it would have to wait

    def _reply_now(self, reply_to: str | Message | MessagePromise | None) -> str | None:
        """``_reply`` without waiting: a promise not resolved yet counts as no reply_to."""
        if isinstance(reply_to, str):
            return reply_to
        if isinstance(reply_to, Message):
            return reply_to.hash
        if isinstance(reply_to, MessagePromise) and reply_to._message is not None:
            return reply_to._message.hash
        return self._reply_default

    def _fail_logs(self, failure: Failure) -> None:
        for log in (self.requests, self.responses):
            if not log.closed:
                _fail_log(log, failure)
        if self._call_placed is not None:
            # Wake the calls nested in this one that wait for its CallMessage (never placed).
            self._call_placed.set()

    def _fail_pending(self) -> None:
        """The call stopped before its branch was written: no consumer may wait forever."""
        if self.requests.closed and self.responses.closed:
            return
        self._taint()
        parent = None if isinstance(self._parent, _Unset) else self._parent
        message = ErrorMessage(
            content="the call stopped before it finished (its forum was cancelled)",
            sender=self.agent.alias,
            error_type="agentforum.AgentCancelled",
            parent=parent,
        )
        self._fail_logs(Failure(message, None, observed=True))


def _fail_log(log: SequenceLog, failure: Failure) -> None:
    for promise in log.items:
        if not promise.is_resolved:
            promise._fail(failure)
    log.fail(failure)


class Flight:
    """The one run of the agent that answers identical calls in flight at the same time.

    Its runner is a :class:`Call` whose branch (requests and :class:`CallMessage`) is
    already placed, run in the forum's task group. The calls it answers follow it: each
    gives its consumers the runner's responses. It is cancelled only when every one of them
    has left it (see ``Call._leave``).
    """

    __slots__ = ("followers", "key", "landed", "runner")

    def __init__(self, key: str, runner: Call) -> None:
        #: The cache key: the hash of the call's CallMessage.
        self.key = key
        self.runner = runner
        #: The calls that give their consumers its responses.
        self.followers: set[Call] = set()
        #: Set when the runner's task is done (its nested calls too) and the cache written.
        self.landed = anyio.Event()

    def abandon(self) -> None:
        """Cancel the flight; calls made from now on with the same key start a new one."""
        self._forget()
        self.runner.cancel()

    def land(self) -> None:
        self._forget()
        self.landed.set()

    def _forget(self) -> None:
        flights = self.runner.forum._flights
        if flights.get(self.key) is self:
            del flights[self.key]


@attrs.define
class _Streaming:
    """A streamed message while the call's writer places it."""

    message: StreamedMessage
    promise: MessagePromise
    reply_to: str | Message | MessagePromise | None
    metadata: FrozenDict
    sender: str


def _streamed_metadata(
    message: StreamedMessage, metadata: FrozenDict, *, incomplete: bool
) -> FrozenDict:
    """The metadata of a streamed message: its own, the responder's, and ``incomplete``."""
    if not (message.metadata or metadata or incomplete):
        return metadata
    merged = {**message.metadata, **metadata}
    if incomplete:
        merged["incomplete"] = True
    return FrozenDict(merged)


#: The most queued texts a call's writer stores in one store operation (see _write_responses).
GROUP_COMMIT: Final = 256


def _is_text(item: Item, reply_to: str | Message | MessagePromise | None) -> bool:
    """Whether a queued item is a new message's text whose reply_to needs no waiting."""
    return isinstance(item, str) and (reply_to is None or isinstance(reply_to, str))


def _ready(reply_to: str | Message | MessagePromise | None) -> bool:
    """Whether ``reply_to`` names a message without waiting for one."""
    return not isinstance(reply_to, MessagePromise) or reply_to.is_resolved
