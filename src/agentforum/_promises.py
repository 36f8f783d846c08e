"""Promises of messages, sequences of them, and messages streamed token by token.

The runtime (``_runtime/``) makes and settles these objects through a small interface of
underscored methods, the only ones it uses, listed here:

- :class:`MessagePromise`: ``_of(message)`` (one already settled), ``_sharing(promise)``
  (another promise of the same tokens), ``_resolve(message)``, ``_fail(failure)``,
  ``await _settled()``, ``_outcome()``;
- :class:`StreamedMessage`: ``_by_hand``, ``_tokens``, ``await _complete()``, ``_finish()``,
  ``_end(error, cut)``, ``_is_cut_short()``, ``_text()``, ``_raise_error()``;
- :class:`SequenceLog` (internal to the package) and :class:`RequestCursor`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Generator, Iterable
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs
from anyio import ClosedResourceError
from anyio.lowlevel import checkpoint

from ._context import current_call
from ._exceptions import AgentCancelled, AgentError, EmptySequenceError
from ._json import EMPTY, FrozenDict, JSONValue, freeze_mapping
from ._log import Log

if TYPE_CHECKING:
    from ._forum import Forum
    from ._messages import ErrorMessage, Message
    from ._runtime import Call

#: While tokens are ready, token and promise iterators checkpoint once per this many items,
#: so a consumer that never has to wait still lets other tasks run and sees cancellation.
CHECKPOINT_EVERY: Final = 64


@attrs.define(eq=False)
class Failure:
    """How a branch ended in error: the recorded message and, in this process, the cause."""

    message: ErrorMessage
    cause: BaseException | None
    observed: bool = False

    @property
    def is_cancellation(self) -> bool:
        """Whether the branch ended cancelled: its call's, or a nested call's not handled."""
        return self.message.error_type == "agentforum.AgentCancelled"

    def exception(self) -> AgentError:
        """Return a new exception to raise to one consumer, and count the failure as seen."""
        self.observed = True
        error = (AgentCancelled if self.is_cancellation else AgentError)(self.message)
        error.__cause__ = self.cause
        return error


class SequenceLog(Log["MessagePromise"]):
    """The promises of a sequence; closed normally or with a :class:`Failure`."""

    __slots__ = ("backend", "failure", "owner")

    def __init__(self, *, owner: Call | None = None) -> None:
        super().__init__()
        self.failure: Failure | None = None
        #: The call these messages belong to (what ``MessageSequence.cancel`` cancels).
        self.owner = owner
        #: The AnyIO backend of the owner's forum, which makes the events its consumers
        #: wait on (see ``ForumState.backend``).
        self.backend = None if owner is None else owner.state.backend

    def _event(self) -> anyio.Event:
        return anyio.Event() if self.backend is None else self.backend.create_event()

    def fail(self, failure: Failure) -> None:
        self.failure = failure
        self.close()


class RequestCursor:
    """How many of its requests a call's agent function has read (``ctx.request_messages``).

    Where a call made by that agent function starts, while the requests are still open,
    depends on it (``docs/concepts.md``, section 3): the last request read by then. Only the
    agent function's own iteration of its ``ctx.request_messages`` advances it.
    """

    __slots__ = ("call", "read")

    def __init__(self, call: Call) -> None:
        #: The call whose agent function reads the requests.
        self.call = call
        #: How many requests it has read.
        self.read = 0

    def advance(self, index: int) -> None:
        """The request at ``index`` was handed out: count it if the agent function read it."""
        if index >= self.read and current_call.get() is self.call:
            self.read = index + 1


class MessagePromise:
    """A message that may not exist yet: await it for the :class:`Message`, iterate it for tokens.

    Created by the forum for every request and response as soon as it is known, before its
    content is complete. Any number of tasks may await it or iterate its tokens, at the same
    time or later: all of them see every token, in order, from the first (late consumers
    replay). The tokens are stored once, however many consumers there are.
    """

    __slots__ = ("_failure", "_message", "_tokens", "_waiter")

    def __init__(self, tokens: Log[str]) -> None:
        self._tokens = tokens
        self._message: Message | None = None
        self._failure: Failure | None = None
        self._waiter: Any = None

    def __repr__(self) -> str:
        if self._message is not None:
            return f"<MessagePromise resolved to {self._message.hash[:12]}>"
        state = "failed" if self._failure is not None else "pending"
        return f"<MessagePromise {state}, {len(self._tokens.items)} tokens so far>"

    @classmethod
    def _of(cls, message: Message) -> MessagePromise:
        tokens: Log[str] = Log()
        if message.content:
            tokens.items.append(message.content)
        tokens.closed = True  # nobody waits on a log made complete
        promise = cls(tokens)
        promise._message = message
        return promise

    @classmethod
    def _sharing(cls, promise: MessagePromise) -> MessagePromise:
        """A promise of its own that shares ``promise``'s tokens (they stream to both)."""
        return cls(promise._tokens)

    def _outcome(self) -> Message | Failure | None:
        """The message, the failure, or ``None`` while it is neither resolved nor failed."""
        return self._message if self._message is not None else self._failure

    def _resolve(self, message: Message) -> None:
        self._message = message
        self._wake()

    def _fail(self, failure: Failure) -> None:
        # The token log may be shared with the promise this one forwards: leave it open.
        self._failure = failure
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    @property
    def is_resolved(self) -> bool:
        """Whether the message is complete and recorded in the store."""
        return self._message is not None

    async def _settled(self) -> None:
        """Wait until the promise is resolved or failed, without raising the failure."""
        if self._message is None and self._failure is None:
            if self._waiter is None:
                self._waiter = anyio.Event()
            await self._waiter.wait()

    def __await__(self) -> Generator[Any, None, Message]:
        return self._wait().__await__()

    async def _wait(self) -> Message:
        await self._settled()
        if self._message is not None:
            return self._message
        assert self._failure is not None
        raise self._failure.exception()

    def __aiter__(self) -> TokenIterator:
        """Iterate the tokens (``str``) from the first; a message not streamed is one token.

        ``__anext__`` waits (a checkpoint) while the next token is not there yet.
        """
        return TokenIterator(self._tokens)


class _LogIterator:
    """The items of a log from the first: a checkpoint while waiting for the next one, and
    once in :data:`CHECKPOINT_EVERY` items while they are ready (so a consumer that never
    waits still lets other tasks run and sees cancellation)."""

    __slots__ = ("_index", "_log")

    def __init__(self, log: Log[Any]) -> None:
        self._log = log
        self._index = 0

    async def _next(self) -> int:
        """Wait for the next item; return its index, or -1 at the end of a closed log."""
        log = self._log
        index = self._index
        if index < len(log.items):
            if index % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                await checkpoint()
        else:
            await log.wait_beyond(index)
            if index >= len(log.items):
                return -1
        self._index = index + 1
        return index


class TokenIterator(_LogIterator):
    """An iterator over the tokens of one :class:`MessagePromise`, from the first."""

    __slots__ = ()

    def __aiter__(self) -> TokenIterator:
        return self

    async def __anext__(self) -> str:
        index = await self._next()
        if index < 0:
            raise StopAsyncIteration
        token: str = self._log.items[index]
        return token


class MessageSequence:
    """The promises of a call's responses (or requests), in order, as they become known.

    Iterate it for :class:`MessagePromise` objects; any number of tasks may iterate it, each
    from the first promise. When the branch ends with an :class:`ErrorMessage`, iteration
    raises :exc:`AgentError` after the last message instead of stopping.
    """

    __slots__ = ("_cursor", "_forum", "_log")

    def __init__(self, log: SequenceLog, forum: Forum, cursor: RequestCursor | None = None) -> None:
        self._log = log
        self._forum = forum
        # The requests of an agent function: iterating them advances its cursor.
        self._cursor = cursor

    def __repr__(self) -> str:
        state = "complete" if self._log.closed else "open"
        return f"<MessageSequence of {len(self._log.items)} promises, {state}>"

    def __aiter__(self) -> PromiseIterator:
        """Iterate the promises from the first; a checkpoint while waiting for the next one.

        Raises:
            AgentError: after the last promise, when the branch ended in an error.
        """
        return PromiseIterator(self._log, self._cursor)

    def cancel(self) -> None:
        """Cancel the call these messages belong to, and every call nested in it.

        Never blocks. The call stops at its next checkpoint; its branch then ends with an
        :class:`ErrorMessage` of type ``agentforum.AgentCancelled`` (a message cut while
        streaming is recorded first, with the tokens it had and ``incomplete: True``), and
        consumers that reach that end get :exc:`AgentCancelled`. Cancelling a call that has
        ended does nothing to its branch. See ``docs/cancellation.md``.
        """
        if self._log.owner is not None:
            self._log.owner.cancel()

    async def messages(self) -> list[Message]:
        """Wait for every message and return them in order.

        Raises:
            AgentError: the branch ended in an error.
        """
        return [await promise async for promise in self]

    async def last(self) -> Message:
        """Wait for the end of the sequence and return its last message.

        Raises:
            EmptySequenceError: the sequence ended without a message.
            AgentError: the branch ended in an error.
        """
        last: MessagePromise | None = None
        async for promise in self:
            last = promise
        if last is None:
            raise EmptySequenceError(
                "the sequence ended without any message: there is no last message"
            )
        return await last

    async def history(self, *, include_calls: bool = False) -> list[Message]:
        """Return the branch that ends with :meth:`last`, oldest message first.

        ``CallMessage`` nodes are left out unless ``include_calls`` is true.

        Raises:
            EmptySequenceError: the sequence ended without a message.
            AgentError: the branch ended in an error.
        """
        return await self._forum.history(await self.last(), include_calls=include_calls)


class PromiseIterator(_LogIterator):
    """An iterator over the promises of one :class:`MessageSequence`, from the first."""

    __slots__ = ("_cursor",)

    def __init__(self, log: SequenceLog, cursor: RequestCursor | None = None) -> None:
        super().__init__(log)
        self._cursor = cursor

    def __aiter__(self) -> PromiseIterator:
        return self

    async def __anext__(self) -> MessagePromise:
        log: SequenceLog = self._log  # type: ignore[assignment]
        index = await self._next()
        if index < 0:
            if log.failure is not None:
                raise log.failure.exception()
            raise StopAsyncIteration
        if self._cursor is not None:
            self._cursor.advance(index)
        promise: MessagePromise = log.items[index]
        return promise


class StreamedMessage:
    """A message produced token by token, passed to ``ctx.respond`` (or ``ask``) at once.

    Either from an iterable of tokens, sync or async (an LLM SDK's stream, say), which the
    forum iterates when it places the message::

        ctx.respond(StreamedMessage(llm_stream(), model="gpt"))

    or by hand, sending each token; leaving the ``async with`` block ends the message::

        message = StreamedMessage()
        ctx.respond(message)
        async with message:
            await message.send("Hel")
            await message.send("lo")

    Consumers of the message's promise see each token as soon as it is produced, through any
    number of nested agents. When the tokens stop with an exception, the message is recorded
    with the tokens it had and ``metadata["incomplete"] = True``, and the branch then ends
    with an :class:`ErrorMessage`. A message ended by a cancellation is recorded the same
    way (``incomplete``), and the call goes on unless the call itself was cancelled.

    Args:
        tokens: The tokens (``str``), or ``None`` to send them by hand.
        metadata: The message's metadata (JSON values).

    Raises:
        TypeError: ``tokens`` is not an iterable of tokens, or metadata is not JSON.
    """

    __slots__ = ("_cut", "_error", "_log", "_placed", "_source", "_waiter", "metadata")

    def __init__(
        self,
        tokens: AsyncIterable[str] | Iterable[str] | None = None,
        /,
        **metadata: JSONValue,
    ) -> None:
        if tokens is not None and (
            isinstance(tokens, (str, bytes)) or not isinstance(tokens, (AsyncIterable, Iterable))
        ):
            raise TypeError(
                "StreamedMessage takes an iterable or async iterable of str tokens, "
                f"not {type(tokens).__qualname__}"
            )
        self._source = tokens
        #: The message's metadata, frozen.
        self.metadata: FrozenDict = (
            FrozenDict._trusted(freeze_mapping(metadata, "metadata")) if metadata else EMPTY
        )
        self._log: Log[str] = Log()
        self._error: BaseException | None = None
        # Ended by a cancellation: recorded as incomplete, the cancellation never re-raised.
        self._cut = False
        self._placed = False
        self._waiter: Any = None

    def __repr__(self) -> str:
        state = "complete" if self._log.closed else "streaming"
        return f"<StreamedMessage {state}, {len(self._log.items)} tokens>"

    async def send(self, token: str) -> None:
        """Append ``token`` to the message (a checkpoint). Consumers see it at once.

        Equivalent to :meth:`send_nowait` after a checkpoint: other tasks run, and a
        cancellation is delivered, before the token is appended.

        Raises:
            TypeError: ``token`` is not a ``str``, or the message streams from an iterable.
            anyio.ClosedResourceError: the message is complete.
        """
        self._check_sendable(token)
        await checkpoint()
        self.send_nowait(token)

    def send_nowait(self, token: str) -> None:
        """Append ``token`` to the message at once, without a checkpoint.

        For a producer whose tokens are at hand (a batch from a model's buffer, say): it
        never blocks and never lets other tasks run, as AnyIO's
        ``MemoryObjectSendStream.send_nowait`` does. Consumers see the token when they next
        run; a producer that sends many tokens this way should yield now and then
        (``await anyio.lowlevel.checkpoint()``), or use :meth:`send`.

        Raises:
            TypeError: ``token`` is not a ``str``, or the message streams from an iterable.
            anyio.ClosedResourceError: the message is complete.
        """
        self._check_sendable(token)
        self._log.append(token)

    def _check_sendable(self, token: object) -> None:
        if self._source is not None:
            raise TypeError("this StreamedMessage takes its tokens from an iterable: don't send")
        if type(token) is not str and not isinstance(token, str):
            raise TypeError(f"a token must be a str, not {type(token).__qualname__}")
        if self._log.closed:
            raise ClosedResourceError("this StreamedMessage is complete: it takes no more tokens")

    def add_metadata(self, **metadata: JSONValue) -> None:
        """Add to the message's metadata what is known only once it is produced.

        A model's finish reason or token usage, say: call it before the message ends (in
        the ``async with`` block, or from the iterable before its last token). Keys given
        again replace the earlier values.

        Raises:
            TypeError: metadata that is not JSON.
            anyio.ClosedResourceError: the message is complete (its metadata is recorded).
        """
        if self._log.closed:
            raise ClosedResourceError(
                "this StreamedMessage is complete: its metadata is recorded and cannot change"
            )
        more = freeze_mapping(metadata, "metadata")
        self.metadata = FrozenDict._trusted({**self.metadata, **more})

    async def aclose(self) -> None:
        """End the message (a checkpoint); what was sent is its content. Closing twice is fine."""
        self._finish()
        await checkpoint()

    async def __aenter__(self) -> StreamedMessage:
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        # An exception cuts the message short; cancellation only ends it (the canceller
        # decides what happens next), and is never kept to be raised again elsewhere.
        if isinstance(exc, Exception) and self._error is None:
            self._error = exc
        elif isinstance(exc, anyio.get_cancelled_exc_class()):
            self._cut = True
        self._finish()

    # -- the runtime's interface (see the module docstring) -----------------------------------

    @property
    def _by_hand(self) -> bool:
        """Whether its tokens are sent by hand (no iterable)."""
        return self._source is None

    @property
    def _tokens(self) -> Log[str]:
        """Its tokens, which the promise of the message shares."""
        return self._log

    def _end(self, error: BaseException | None, cut: bool) -> None:
        """End it if its producer left it open: with ``error``, or cut by a cancellation."""
        if not self._log.closed:
            if error is not None and self._error is None:
                self._error = error
            self._cut = self._cut or cut
            self._finish()

    def _is_cut_short(self) -> bool:
        """Whether it ended before its producer finished it: an error, or a cancellation."""
        return self._error is not None or self._cut or not self._log.closed

    def _text(self) -> str:
        """The content so far: its tokens, joined."""
        return "".join(self._log.items)

    def _raise_error(self) -> None:
        """Raise the exception that cut it short, if one did."""
        if self._error is not None:
            raise self._error

    def _finish(self) -> None:
        self._log.close()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    async def _complete(self) -> None:
        """Produce the tokens (from the iterable) or wait for them (by hand); forum-only."""
        if self._source is None:
            if not self._log.closed:
                self._waiter = anyio.Event()
                await self._waiter.wait()
            return
        log = self._log
        try:
            if isinstance(self._source, AsyncIterable):
                count = 0
                async for token in self._source:
                    log.append(_check_token(token))
                    count += 1
                    if count % CHECKPOINT_EVERY == 0:
                        await checkpoint()
            else:
                for count, token in enumerate(self._source):
                    log.append(_check_token(token))
                    if count % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                        await checkpoint()
        except Exception as exc:
            self._error = exc
        except anyio.get_cancelled_exc_class():
            # The call was cancelled while the tokens came: the message is cut short, not
            # complete, although its log is closed below.
            self._cut = True
            raise
        finally:
            self._finish()
            aclose = getattr(self._source, "aclose", None)
            if aclose is not None:
                # Close an async generator (an HTTP stream, say) now, not when collected.
                with anyio.CancelScope(shield=True):
                    await aclose()


def _check_token(token: object) -> str:
    if not isinstance(token, str):
        raise TypeError(f"a token must be a str, not {type(token).__qualname__}")
    return token
