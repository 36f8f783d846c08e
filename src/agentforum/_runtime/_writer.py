"""A call's branch: its requests, its CallMessage, its responses and its end, placed in order."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

import anyio
import attrs

from .._content import Item, flatten
from .._exceptions import AgentError
from .._json import FrozenDict
from .._messages import CallMessage, ErrorMessage, Message, forward_of
from .._promises import Failure, MessagePromise, MessageSequence, SequenceLog, StreamedMessage
from .._stores._memory import MemoryStore

if TYPE_CHECKING:
    from .._stores._protocol import MessageStore
    from ._call import Call

#: One entry of a call's request or response feed: content, its ``reply_to``, its metadata.
Entry = tuple[Item, "str | Message | MessagePromise | None", FrozenDict]

#: The most queued texts a call's writer stores in one store operation (group commit).
GROUP_COMMIT: Final = 256
#: The ``error_type`` of a call cancelled before it finished.
CANCELLED: Final = "agentforum.AgentCancelled"


class Stage(enum.Enum):
    """How far a call's branch is written."""

    #: Nothing placed yet: where the branch starts is not decided.
    OPENING = enum.auto()
    #: Placing the requests; the branch has a start (a message, or none: a new root).
    REQUESTS = enum.auto()
    #: The CallMessage is placed: placing the responses below it.
    RESPONSES = enum.auto()


def error_type_of(exception: BaseException) -> str:
    """Name an exception's type as ``module.QualName``, built-ins without their module."""
    cls = type(exception)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


@attrs.define
class _Streaming:
    """A streamed message while it is placed: it is the promise at ``index`` of the log."""

    message: StreamedMessage
    log: SequenceLog
    index: int
    reply_to: str | Message | MessagePromise | None
    metadata: FrozenDict
    sender: str


class Writer:
    """Places one call's branch in the store, in order, and settles its promises.

    The requests, then the :class:`CallMessage`, then the responses, each continuing the
    message before it (``end``); then, if the call failed or was cancelled, an
    :class:`ErrorMessage`. A promise of the call's logs resolves once its message is stored.
    The writer runs in the call's task; nothing else places messages of the branch.
    """

    __slots__ = (
        "_call",
        "_call_placed",
        "_memory",
        "_state",
        "_store",
        "call_message",
        "end",
        "log",
        "reply_default",
        "stage",
        "streaming",
    )

    def __init__(self, call: Call, store: MessageStore) -> None:
        #: The call whose branch this is, until it ends (see :meth:`release`).
        self._call = call
        #: The forum's run, for what may still be stored after the call has ended (the
        #: ErrorMessage of a leader's consumers that left, ``_flight.leave``).
        self._state = call.state
        self._store = store
        self.stage = Stage.OPENING
        #: The hash of the last message of the branch (``None``: the branch is a new root).
        self.end: str | None = None
        self.call_message: CallMessage | None = None
        #: What a new response replies to by default: the call's last request, if any.
        self.reply_default: str | None = None
        #: The streamed message being placed, if any.
        self.streaming: _Streaming | None = None
        #: Where the responses go: the call's own, or, once its consumers left a flight that
        #: others follow, the log those others read (see ``_flight.leave``).
        self.log: SequenceLog = call.responses
        self._call_placed: anyio.Event | None = None
        #: The store, if it stores without waiting (``MemoryStore._put_now``): a
        #: MemoryStore whose puts are its own (a subclass that overrides them is used
        #: through them).
        self._memory: MemoryStore | None = (
            store
            if isinstance(store, MemoryStore)
            and type(store).put is MemoryStore.put
            and type(store).put_many is MemoryStore.put_many
            else None
        )

    def release(self) -> None:
        """The call has ended: drop the link back to it.

        A call and its writer refer to each other; without this, every call that ended
        would wait for the cyclic garbage collector to be freed, and each collection would
        trace them all (with 10,000 calls in flight, the collector took half of the time).
        Nothing of the writer that needs its call runs once the call has ended.
        """
        del self._call

    # -- storing ------------------------------------------------------------------------------

    async def put(self, message: Message) -> None:
        memory = self._memory
        if memory is not None:
            # MemoryStore.put, with the checkpoint made by the forum's backend.
            await memory._checkpoint(self._state.backend)
            memory._put_now(message)
        else:
            await self._store.put(message)
        self._state.messages_stored += 1

    async def put_many(self, messages: list[Message]) -> None:
        await self._store.put_many(messages)
        self._state.messages_stored += len(messages)

    # -- the requests and the CallMessage -----------------------------------------------------

    async def write_requests(self) -> None:
        """Place the requests, then the :class:`CallMessage`; the responses will follow it."""
        call = self._call
        if call.branch_from is not None:
            self._start_at((await self._existing(call.branch_from)).hash)
        elif call.blank_history:
            self._start_at(None)
        sender = call.caller.agent.alias if call.caller is not None else "user"
        feed = call.request_feed
        try:
            async for item, reply_to, metadata in feed:
                await self.place(item, reply_to, metadata, sender, call.requests)
        finally:
            feed.drop()
        if self.stage is Stage.OPENING:
            self._start_at(await self.default_parent())
        last_request = self.end if call.requests.items else None
        call_message = CallMessage(receiver=call.agent.alias, kwargs=call.kwargs, parent=self.end)
        await self.put(call_message)
        self.call_message = call_message
        self.stage = Stage.RESPONSES
        if self._call_placed is not None:
            self._call_placed.set()
        call.requests.close()
        self.end = call_message.hash
        self.reply_default = last_request

    def _start_at(self, parent: str | None) -> None:
        self.end = parent
        self.stage = Stage.REQUESTS

    async def _existing(self, point: Message | MessagePromise | str) -> Message:
        if isinstance(point, str):
            return await self._store.resolve(point)
        if isinstance(point, MessagePromise):
            return await point
        await self.put(point)
        return point

    async def branch_end(self) -> str | None:
        """The hash of the message the call's :class:`CallMessage` continues (``None``: a root).

        For the call's own agent function: waits until the CallMessage is placed. If a
        request fails instead, the call cancels its agent function (in this wait) before it
        records the failure, so the wait never ends without a CallMessage.
        """
        if self.call_message is None:
            if self._call_placed is None:
                self._call_placed = self._state.backend.create_event()
            await self._call_placed.wait()
        assert self.call_message is not None
        return self.call_message.parent

    async def default_parent(self) -> str | None:
        """Where a branch starts by default: after the caller's last request, or a new root.

        "The caller's last request" is decided by the caller's program order, never by timing:
        if the caller's requests were complete when this call was made, it is the last of
        them (placed before the caller's CallMessage). If they were still open (a full-duplex
        caller), it is the last request the caller's agent function had read from
        ``ctx.request_messages`` by then; when it had read none, this call waits for the
        caller's requests to be complete.
        """
        call = self._call
        caller = call.caller
        if caller is None:
            return None
        if call.caller_read:
            return (await caller.requests.items[call.caller_read - 1]).hash
        branch = caller.writer
        if branch.call_message is None and not caller.requests.closed:
            if branch._call_placed is None:
                branch._call_placed = call.state.backend.create_event()
            await branch._call_placed.wait()
        if branch.call_message is not None:
            return branch.call_message.parent
        # The caller failed before its requests were complete: continue after the last one.
        return branch.end if branch.stage is not Stage.OPENING else None

    # -- the responses ------------------------------------------------------------------------

    async def write_responses(self) -> None:
        """Place the responses queued by the agent function, in order, until it has ended."""
        alias = self._call.agent.alias
        feed = self._call.response_feed
        # Not closed here when cancelled: the responses still queued may be placed then.
        while True:
            try:
                item, reply_to, metadata = feed.receive_nowait()
            except anyio.WouldBlock:
                await feed.wait()
                continue
            except anyio.EndOfStream:
                return
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
            await self.place(item, reply_to, metadata, alias, self.log)

    @property
    def places_now(self) -> bool:
        """Whether a text response can be placed at once, without waiting (:meth:`place_now`).

        When the store stores without waiting and the CallMessage is placed (responses
        hang below it).
        """
        return self._memory is not None and self.stage is Stage.RESPONSES

    def place_now(self, content: str, reply_to: str | None, metadata: FrozenDict) -> None:
        """Place a text response at once, as :meth:`place` would (see :attr:`places_now`).

        The runtime places a call's text responses this way while nothing is queued before
        them, so that an agent function that responds with texts needs no task to write
        them: its promise resolves as the message is stored, before ``respond()`` returns.
        """
        message = Message(
            content=content,
            sender=self._call.agent.alias,
            metadata=metadata,
            parent=self.end,
            reply_to=self.reply_default if reply_to is None else reply_to,
        )
        assert self._memory is not None
        self._memory._put_now(message)
        self._state.messages_stored += 1
        self.log.append(MessagePromise._of(message))
        self.end = message.hash

    async def _place_texts(self, batch: list[Entry], sender: str) -> bool:
        """Place responses that are texts (with no reply_to to wait for) in one store call.

        Each promise resolves once its message is stored, as when they are placed one by
        one; the messages and their hashes are the same too. Returns ``False``, placing
        none, if the store refuses the group (a reply_to not in the store, say): placed one
        by one, the branch then ends where it would have anyway.
        """
        parent = self.end
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
            await self.put_many(messages)
        except Exception:
            return False
        for message in messages:
            self.log.append(MessagePromise._of(message))
        self.end = parent
        return True

    async def place(
        self,
        item: Item,
        reply_to: str | Message | MessagePromise | None,
        metadata: FrozenDict,
        sender: str,
        log: SequenceLog,
    ) -> None:
        """Place one item at the end of the branch and advance it.

        A promise handed out while its message is placed is settled by its place in ``log``:
        the writer's log may be replaced meanwhile (``_flight.leave``), by a copy.
        """
        if isinstance(item, str):
            parent = await self._start()
            message = Message(
                content=item,
                sender=sender,
                metadata=metadata,
                parent=parent,
                reply_to=await self._reply(reply_to),
            )
            await self.put(message)
            log.append(MessagePromise._of(message))
            self.end = message.hash
        elif isinstance(item, StreamedMessage):
            index = len(log.items)
            log.append(MessagePromise(item._tokens))
            self.streaming = _Streaming(item, log, index, reply_to, metadata, sender)
            await item._complete()
            self.streaming = None
            parent = await self._start()
            message = Message(
                content=item._text(),
                sender=sender,
                metadata=_streamed_metadata(item, metadata, incomplete=item._is_cut_short()),
                parent=parent,
                reply_to=await self._reply(reply_to),
            )
            await self.put(message)
            self._settle(log, index, message)
            self.end = message.hash
            item._raise_error()
        elif isinstance(item, MessagePromise):
            index = len(log.items)
            log.append(MessagePromise._sharing(item))
            message = await self._placed(await item, reply_to, metadata, sender, stored=True)
            self._settle(log, index, message)
        elif isinstance(item, Message):
            message = await self._placed(item, reply_to, metadata, sender, stored=False)
            log.append(MessagePromise._of(message))
        elif isinstance(item, MessageSequence):
            async for promise in item:
                await self.place(promise, reply_to, metadata, sender, log)
        else:
            where = "a request" if log is self._call.requests else "a response"
            async for element in item:
                for sub_item in flatten(element, f"an async iterable given as {where}"):
                    await self.place(sub_item, reply_to, metadata, sender, log)

    def _settle(self, log: SequenceLog, index: int, message: Message) -> None:
        """Resolve the promise at ``index`` of ``log``, or of the log that replaced it."""
        if log is self._call.responses and self.log is not log:
            log = self.log
        log.items[index]._resolve(message)

    async def _start(self) -> str | None:
        if self.stage is Stage.OPENING:
            self._start_at(await self.default_parent())
        return self.end

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
        if not stored:
            await self.put(message)
        if self.stage is Stage.OPENING:
            self._start_at(message.parent)
        if message.parent != self.end:
            message = forward_of(
                message,
                sender=sender,
                metadata=metadata,
                parent=self.end,
                reply_to=await self._reply(reply_to),
            )
            await self.put(message)
        self.end = message.hash
        return message

    async def _reply(self, reply_to: str | Message | MessagePromise | None) -> str | None:
        if reply_to is None:
            return self.reply_default
        if isinstance(reply_to, str):
            return reply_to
        if isinstance(reply_to, MessagePromise):
            reply_to = await reply_to
        await self.put(reply_to)
        return reply_to.hash

    def _reply_now(self, reply_to: str | Message | MessagePromise | None) -> str | None:
        """``_reply`` without waiting: a promise not resolved yet counts as no reply_to."""
        if isinstance(reply_to, str):
            return reply_to
        if isinstance(reply_to, Message):
            return reply_to.hash
        if isinstance(reply_to, MessagePromise):
            outcome = reply_to._outcome()
            if isinstance(outcome, Message):
                return outcome.hash
        return self.reply_default

    # -- endings ------------------------------------------------------------------------------

    def ending(self, error_type: str, content: str) -> ErrorMessage:
        """The :class:`ErrorMessage` that would end the branch now."""
        return ErrorMessage(
            content=content,
            sender=self._call.agent.alias,
            error_type=error_type,
            parent=self.end if self.stage is not Stage.OPENING else None,
            reply_to=self.reply_default,
        )

    async def record_failure(self, cause: Exception) -> None:
        """End the branch with an :class:`ErrorMessage` for ``cause``."""
        call = self._call
        call.taint()
        if isinstance(cause, AgentError):
            message = self.ending(cause.message.error_type, cause.message.content)
        else:
            message = self.ending(error_type_of(cause), str(cause))
        try:
            await self.put(message)
        except Exception as exc:
            # The store failed again (the disk is full, say): the message is not in the
            # tree, but the consumers still get it and its cause, not a cancelled forum;
            # the forum raises the store's error when it exits.
            call.state.store_errors.append(exc)
        failure = Failure(message, cause)
        call.state.failures.append(failure)
        self.fail_logs(failure)

    async def record_cancellation(self) -> None:
        """End the branch of a cancelled call: what was ready, the cut message, an error.

        It may run shielded from the cancellation of an enclosing scope, so it waits for
        nothing that may not end: only the store.
        """
        streaming, self.streaming = self.streaming, None
        try:
            if streaming is not None:
                await self._place_cut(streaming)
            await self._place_ready_responses()
            message = self.ending(CANCELLED, "the call was cancelled")
            await self.put(message)
        except Exception as exc:
            # The store failed: the consumers still learn that the call was cancelled, and
            # the forum raises the store's error when it exits.
            self._state.store_errors.append(exc)
            message = self.ending(CANCELLED, "the call was cancelled")
        # A cancellation is not an agent's error: it is never raised when the forum exits.
        self.fail_logs(Failure(message, None, observed=True))

    async def _place_cut(self, streaming: _Streaming) -> None:
        """Place a streamed message as far as it got: marked incomplete unless it had ended."""
        streamed = streaming.message
        incomplete = streamed._is_cut_short()
        streamed._finish()
        message = Message(
            content=streamed._text(),
            sender=streaming.sender,
            metadata=_streamed_metadata(streamed, streaming.metadata, incomplete=incomplete),
            parent=self.end if self.stage is not Stage.OPENING else None,
            reply_to=self._reply_now(streaming.reply_to),
        )
        await self.put(message)
        self._settle(streaming.log, streaming.index, message)
        self.end = message.hash

    async def _place_ready_responses(self) -> None:
        """Place, in order, the queued responses that need no waiting; drop the rest."""
        if self.call_message is None:
            return  # responses hang below the CallMessage: none can be placed
        call = self._call
        alias = call.agent.alias
        while True:
            try:
                item, reply_to, metadata = call.response_feed.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
            if not _ready(reply_to):
                return
            if isinstance(item, StreamedMessage):
                index = len(self.log.items)
                self.log.append(MessagePromise(item._tokens))
                await self._place_cut(_Streaming(item, self.log, index, reply_to, metadata, alias))
            elif isinstance(item, (str, Message)) or (
                isinstance(item, MessagePromise) and item.is_resolved
            ):
                await self.place(item, reply_to, metadata, alias, self.log)
            else:
                return  # a sequence or an async iterable: it would have to wait

    def fail_logs(self, failure: Failure) -> None:
        """End the call's logs still open with ``failure``; wake the waits for the CallMessage."""
        call = self._call
        for log in {id(log): log for log in (call.requests, call.responses, self.log)}.values():
            if not log.closed:
                fail_log(log, failure)
        if self._call_placed is not None:
            # Wake the calls nested in this one that wait for its CallMessage (never placed).
            self._call_placed.set()

    def fail_pending(self) -> None:
        """The call stopped before its branch was written: no consumer may wait forever."""
        call = self._call
        if call.requests.closed and call.responses.closed and self.log.closed:
            return
        call.taint()
        message = self.ending(
            CANCELLED, "the call stopped before it finished (its forum was cancelled)"
        )
        self.fail_logs(Failure(message, None, observed=True))


def fail_log(log: SequenceLog, failure: Failure) -> None:
    """Fail every promise of ``log`` not resolved yet, then ``log`` itself."""
    for promise in log.items:
        if not promise.is_resolved:
            promise._fail(failure)
    log.fail(failure)


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


def _is_text(item: Item, reply_to: str | Message | MessagePromise | None) -> bool:
    """Whether a queued item is a new message's text whose reply_to needs no waiting."""
    return isinstance(item, str) and (reply_to is None or isinstance(reply_to, str))


def _ready(reply_to: str | Message | MessagePromise | None) -> bool:
    """Whether ``reply_to`` names a message without waiting for one."""
    return not isinstance(reply_to, MessagePromise) or reply_to.is_resolved
