"""The runtime of one agent call: the task that writes its branch and the agent's task."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import anyio
import anyio.lowlevel
import attrs
from anyio import BrokenResourceError, ClosedResourceError, create_memory_object_stream

from ._content import Item, flatten
from ._context import current_call
from ._exceptions import AgentError
from ._json import FrozenDict
from ._messages import CallMessage, ErrorMessage, ForwardedMessage, Message
from ._promises import Failure, MessagePromise, MessageSequence, SequenceLog, StreamedMessage

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
    Requests and responses reach it through memory object streams, so ``send_request`` and
    ``respond`` never block.
    """

    __slots__ = (
        "_call_placed",
        "_caller_read",
        "_parent",
        "_reply_default",
        "_requests_out",
        "_responses_out",
        "_scope",
        "_streaming",
        "agent",
        "agent_error",
        "blank_history",
        "branch_from",
        "call_message",
        "caller",
        "forum",
        "hand_streams",
        "kwargs",
        "open_calls",
        "requests",
        "requests_closed",
        "requests_in",
        "responses",
        "responses_in",
        "task_group",
    )

    def __init__(
        self,
        agent: Agent,
        kwargs: Mapping[str, JSONValue],
        branch_from: Message | MessagePromise | str | None,
        blank_history: bool,
        caller: Call | None,
    ) -> None:
        self.agent = agent
        self.forum: Forum = agent.forum
        self.kwargs = kwargs
        self.branch_from = branch_from
        self.blank_history = blank_history
        self.caller = caller
        self.requests_in, self._requests_out = create_memory_object_stream[Entry](math.inf)
        self.responses_in, self._responses_out = create_memory_object_stream[Entry](math.inf)
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
        self.open_calls: list[Call] = []
        self.task_group: TaskGroup | None = None
        self.agent_error: Exception | None = None
        self._parent: str | _Unset | None = UNSET
        self._reply_default: str | None = None
        # The streamed message being placed, with its promise and how to place it.
        self._streaming: _Streaming | None = None
        #: Streamed responses produced by hand, to close if the agent function leaves them open.
        self.hand_streams: list[StreamedMessage] = []

    # -- feeding ------------------------------------------------------------------------------

    def send(
        self,
        feed: str,
        items: list[Item],
        reply_to: str | Message | MessagePromise | None,
        metadata: FrozenDict,
    ) -> None:
        """Queue flattened content on the ``"requests"`` or ``"responses"`` feed (never blocks)."""
        stream = self.requests_in if feed == "requests" else self.responses_in
        if feed == "responses":
            self.hand_streams.extend(
                item for item in items if isinstance(item, StreamedMessage) and item._source is None
            )
        try:
            for item in items:
                stream.send_nowait((item, reply_to, metadata))
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
        self.requests_in.close()

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
                async with anyio.create_task_group() as call_group:
                    self.task_group = call_group
                    await self._run_and_write()
                    # The calls nested in this one may still run: the group waits for them.
            if self._scope.cancelled_caught:
                await self._record_cancellation()
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

    async def _run_and_write(self) -> None:
        cause: Exception | None = None
        async with anyio.create_task_group() as work_group:
            work_group.start_soon(self._run_agent, name=f"agent {self.agent.alias}")
            try:
                await self._write()
            except Exception as exc:
                cause = exc
                work_group.cancel_scope.cancel()
        if cause is None:
            cause = self.agent_error
        if cause is None:
            self.responses.close()
        else:
            await self._record_failure(cause)

    async def _run_agent(self) -> None:
        current_call.set(self)
        from ._agents import InteractionContext

        context = InteractionContext(self)
        try:
            # A call cancelled before its task ran runs none of its agent's code.
            await anyio.lowlevel.checkpoint_if_cancelled()
            await self.agent.function(context, **self.kwargs)
        except Exception as exc:
            self.agent_error = exc
        finally:
            self.responses_in.close()
            for call in self.open_calls:
                call.close_requests()
            # A streamed response the function left open ends with it; if the function
            # failed, the message is incomplete.
            for stream in self.hand_streams:
                if not stream._log.closed:
                    if self.agent_error is not None and stream._error is None:
                        stream._error = self.agent_error
                    stream._finish()

    def _close_feeds(self) -> None:
        self.requests_in.close()
        self.responses_in.close()
        self._requests_out.close()
        self._responses_out.close()

    # -- writing the branch -------------------------------------------------------------------

    async def _write(self) -> None:
        agent = self.agent
        store = self.forum.store
        if self.branch_from is not None:
            self._parent = (await self._existing(self.branch_from)).hash
        elif self.blank_history:
            self._parent = None
        sender = self.caller.agent.alias if self.caller is not None else "user"
        async with self._requests_out:
            async for item, reply_to, metadata in self._requests_out:
                await self._place(item, reply_to, metadata, sender, self.requests)
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
        async with self._responses_out:
            async for item, reply_to, metadata in self._responses_out:
                await self._place(item, reply_to, metadata, agent.alias, self.responses)

    async def _existing(self, point: Message | MessagePromise | str) -> Message:
        if isinstance(point, str):
            return await self.forum.store.resolve(point)
        if isinstance(point, MessagePromise):
            return await point
        await self.forum.store.put(point)
        return point

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
            original = message.original if isinstance(message, ForwardedMessage) else message.hash
            message = ForwardedMessage(
                content=message.content,
                sender=sender,
                metadata=metadata,
                parent=self._parent,
                reply_to=await self._reply(reply_to),
                original=original,
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
        await self.forum.store.put(message)
        failure = Failure(message, cause)
        self.forum._failures.append(failure)
        self._fail_logs(failure)

    async def _record_cancellation(self) -> None:
        """End the branch of a cancelled call: what was ready, the cut message, an error.

        Nothing here waits for anything but the store: it may run shielded from the
        cancellation of an enclosing scope.
        """
        if self.requests.closed and self.responses.closed:
            return  # the branch was complete; only calls nested in it were cancelled
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
                item, reply_to, metadata = self._responses_out.receive_nowait()
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


def _ready(reply_to: str | Message | MessagePromise | None) -> bool:
    """Whether ``reply_to`` names a message without waiting for one."""
    return not isinstance(reply_to, MessagePromise) or reply_to.is_resolved
