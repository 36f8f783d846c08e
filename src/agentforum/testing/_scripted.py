"""A scripted stand-in for a language model: deterministic replies, streamed token by token."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import ClassVar, Final, Literal, TypeAlias

import anyio
import attrs

from agentforum import InteractionContext, JSONValue, Message, StreamedMessage

Replies: TypeAlias = "str | Sequence[str] | Callable[[list[Message]], str | Awaitable[str]]"
Chunking: TypeAlias = "Literal['words', 'characters'] | int"
Point: TypeAlias = "int | tuple[int, int]"

# A word with the white space before it, as language models' tokens often are; trailing
# white space is a token of its own. Joined, the tokens are the reply.
_WORDS: Final = re.compile(r"\s*\S+|\s+\Z")


@attrs.frozen
class ScriptedCall:
    """What a :class:`ScriptedModel` was asked in one call.

    Attributes:
        index: The call's number, from 0, in the order the calls started.
        requests: The call's request messages.
        history: The branch that ends with the last request, root first (``[]`` when the
            call had no request): what a language model would be shown.
        kwargs: The call's keyword arguments.
    """

    index: int
    requests: tuple[Message, ...]
    history: tuple[Message, ...]
    kwargs: Mapping[str, JSONValue]


def _check_point(value: Point | None, name: str) -> tuple[int, int | None] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return (value, None)
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value)
    ):
        return value
    raise ValueError(
        f"{name} must be a call number (int >= 0) or a (call number, token index) pair, "
        f"not {value!r}"
    )


def split_tokens(text: str, chunk: Chunking) -> list[str]:
    """Split ``text`` into the tokens a :class:`ScriptedModel` streams; joined, they are it."""
    if chunk == "words":
        return _WORDS.findall(text)
    if chunk == "characters":
        return list(text)
    assert isinstance(chunk, int)
    return [text[start : start + chunk] for start in range(0, len(text), chunk)]


class ScriptedModel:
    """A deterministic stand-in for a language model, to use as an agent function.

    ::

        model = forum.agent(ScriptedModel(["Hello!", "Goodbye."]), alias="model")

    Each call reads all its requests, picks its reply, and streams it as one
    :class:`StreamedMessage`, token by token. The reply depends on nothing but the script:

    - a ``str``: the same reply to every call;
    - a sequence of ``str``: reply ``i`` to call ``i`` (from 0); a call past the last reply
      fails with :exc:`IndexError`. Such a model keeps state (it counts its calls), which
      is what :func:`assert_stateless` detects;
    - a function of the history (``list[Message]``, the branch that ends with the call's
      last request, root first; ``[]`` for a call without requests) returning the reply, or
      an awaitable of it: the same history gives the same reply, a stateless model.

    Every call is recorded in :attr:`calls` (see :class:`ScriptedCall`); :attr:`requests`
    gives the request contents of each call.

    It can be told to fail or hang at one point, to test what happens around a model that
    breaks. A point is a call number (the call fails or hangs after reading its requests,
    before it responds) or a ``(call number, token index)`` pair (the call's message is
    streamed up to that token, which is not sent; an index past the last token stops after
    the last one, the message still incomplete). Failing raises ``error``; the message
    streamed so far is recorded with ``metadata={"incomplete": True}`` and the branch ends
    with an :class:`ErrorMessage`, as for any agent. Hanging waits until cancelled (use
    ``anyio.fail_after`` or a cancel scope around the forum).

    Registered without an ``alias``, the agent is called ``"model"``.

    Args:
        replies: The script: a ``str``, a sequence of ``str``, or a function of the history.
        chunk: How replies are cut into tokens: ``"words"`` (each word with the white space
            before it, the default), ``"characters"``, or a number of characters.
        delay: Seconds to sleep (``anyio.sleep``) before each token; 0 for none.
        fail_at: Where to raise ``error`` (a call number or a ``(call, token)`` pair).
        hang_at: Where to wait until cancelled (a call number or a ``(call, token)`` pair);
            if ``fail_at`` is the same point, the model fails there.
        error: The exception to raise at ``fail_at`` (default: a :exc:`RuntimeError` that
            says where).

    Raises:
        TypeError: ``replies`` is not one of the above.
        ValueError: a ``chunk``, ``delay`` or point out of range.
    """

    #: The default alias of a model registered with ``forum.agent`` (an agent's ``__name__``).
    __name__: ClassVar[str] = "model"

    def __init__(
        self,
        replies: Replies,
        *,
        chunk: Chunking = "words",
        delay: float = 0.0,
        fail_at: Point | None = None,
        hang_at: Point | None = None,
        error: BaseException | None = None,
    ) -> None:
        script: str | tuple[str, ...] | Callable[[list[Message]], str | Awaitable[str]]
        if isinstance(replies, str) or callable(replies):
            script = replies
        elif isinstance(replies, Sequence) and all(isinstance(r, str) for r in replies):
            script = tuple(replies)
        else:
            raise TypeError(
                "replies must be a str, a sequence of str, or a function of the history, "
                f"not {replies!r}"
            )
        if not (chunk in ("words", "characters") or (type(chunk) is int and chunk > 0)):
            raise ValueError(
                f"chunk must be 'words', 'characters' or a positive int, not {chunk!r}"
            )
        if not delay >= 0:
            raise ValueError(f"delay must be a number of seconds >= 0, not {delay!r}")
        self._replies = script
        self._chunk: Chunking = chunk
        self._delay = delay
        self._fail_at = _check_point(fail_at, "fail_at")
        self._hang_at = _check_point(hang_at, "hang_at")
        self._error = error
        self._started = 0
        self.__doc__ = "A scripted stand-in for a language model."
        #: Every call so far, in the order they read their requests.
        self.calls: list[ScriptedCall] = []

    def __repr__(self) -> str:
        return f"<ScriptedModel, {self._started} calls>"

    @property
    def requests(self) -> list[list[str]]:
        """The contents of each call's requests, one list per call, in :attr:`calls` order."""
        return [[message.content for message in call.requests] for call in self.calls]

    async def __call__(self, ctx: InteractionContext, **kwargs: JSONValue) -> None:
        """Read the requests, then stream the reply as one :class:`StreamedMessage`."""
        index = self._started
        self._started += 1
        requests = await ctx.request_messages.messages()
        history = await ctx.forum.history(requests[-1]) if requests else []
        self.calls.append(ScriptedCall(index, tuple(requests), tuple(history), kwargs))
        await self._interrupt(index, None)
        tokens = split_tokens(await self._reply(index, history), self._chunk)
        message = StreamedMessage()
        ctx.respond(message)
        async with message:
            for position, token in enumerate(tokens):
                await self._interrupt(index, position)
                if self._delay:
                    await anyio.sleep(self._delay)
                await message.send(token)
            await self._interrupt(index, len(tokens), at_end=True)

    async def _reply(self, index: int, history: list[Message]) -> str:
        replies = self._replies
        if isinstance(replies, str):
            return replies
        if callable(replies):
            reply = replies(list(history))
            if inspect.isawaitable(reply):
                reply = await reply
            if not isinstance(reply, str):
                raise TypeError(
                    f"the replies function of a ScriptedModel must return a str, not {reply!r}"
                )
            return reply
        if index >= len(replies):
            raise IndexError(
                f"this ScriptedModel has {len(replies)} replies: call {index} has none "
                "(calls are numbered from 0)"
            )
        return replies[index]

    async def _interrupt(self, index: int, token: int | None, *, at_end: bool = False) -> None:
        for point, hang in ((self._fail_at, False), (self._hang_at, True)):
            if point is None or point[0] != index:
                continue
            wanted = point[1]
            if token is None:
                hit = wanted is None
            else:
                hit = wanted is not None and (wanted == token or (at_end and wanted > token))
            if not hit:
                continue
            if hang:
                await anyio.sleep_forever()
            where = f"call {index}" if token is None else f"call {index}, token {wanted}"
            raise self._error or RuntimeError(f"ScriptedModel told to fail at {where}")
