"""An agent for the OpenAI-compatible Chat Completions API, streamed, on asyncio and Trio.

One adapter covers OpenAI and the servers that speak its API (Ollama, vLLM, llama.cpp's
server, LM Studio), through the official ``openai`` SDK's :class:`openai.AsyncOpenAI` and its
``base_url``. Install it with ``pip install "agentforum[openai]"``::

    gpt = forum.agent(openai_agent(model="gpt-4o-mini", client=client), alias="gpt")

See ``docs/llms.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
import openai

from .._json import FrozenDict, JSONValue, freeze_mapping
from .._messages import ErrorMessage, Message
from .._promises import StreamedMessage
from . import (
    LLMAuthenticationError,
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMRequestError,
    LLMServerError,
)

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

    from .._agents import InteractionContext

#: Chat Completions parameters that the agent sets itself: a call may not pass them.
RESERVED: Final = frozenset({"messages", "stream", "stream_options"})


def chat_messages(
    history: Sequence[Message], me: str, *, system: str | None = None
) -> list[dict[str, str]]:
    """Turn a branch into the ``messages`` of a Chat Completions request.

    In order: the ``system`` prompt, if any; then each message of ``history`` (root first):
    a message whose sender is ``me`` (the agent's alias) as ``assistant``, any other message
    (from the user, from other agents, forwards included) as ``user``, with its content as
    it is. :class:`ErrorMessage` nodes are left out: they record what failed, they are not
    part of the conversation.

    Args:
        history: The branch, root first, as :meth:`InteractionContext.history` returns it.
        me: The alias of the agent the model speaks as.
        system: The system prompt.
    """
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.extend(
        {"role": "assistant" if message.sender == me else "user", "content": message.content}
        for message in history
        if not isinstance(message, ErrorMessage)
    )
    return messages


def _thaw(value: JSONValue) -> Any:
    """A frozen JSON value (tuples, FrozenDicts) as the plain one the SDK sends."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


class OpenAIAgent:
    """The agent function :func:`openai_agent` returns; give it to ``forum.agent``.

    Each call sends the branch it continues (:meth:`InteractionContext.history`, mapped by
    :func:`chat_messages`) to the Chat Completions API with ``stream=True``, and responds
    with one :class:`StreamedMessage` whose tokens reach every consumer as the server sends
    them. Its metadata records the ``model`` the server names, the ``finish_reason`` and,
    when the server sends it, the token ``usage`` (``prompt_tokens``,
    ``completion_tokens``, ``total_tokens``).

    The call's keyword arguments are Chat Completions parameters (``temperature``,
    ``max_tokens``, ``model``, ...): they override the agent's defaults and, being part of
    the call's hash, of its cache key.
    """

    __slots__ = ("__name__", "_client", "defaults", "include_usage", "model", "system")

    def __init__(
        self,
        model: str,
        client: openai.AsyncOpenAI | None,
        system: str | None,
        include_usage: bool,
        defaults: Mapping[str, JSONValue],
    ) -> None:
        #: The model asked when a call does not name one.
        self.model = model
        #: The system prompt put before the history, if any.
        self.system = system
        #: Whether the server is asked for the token usage (``stream_options``).
        self.include_usage = include_usage
        #: Chat Completions parameters for every call, which a call's own override.
        self.defaults = defaults
        self._client = client
        #: The agent's default alias in ``forum.agent``: the model's name.
        self.__name__ = model

    def __repr__(self) -> str:
        return f"<OpenAIAgent model={self.model!r}>"

    @property
    def client(self) -> openai.AsyncOpenAI | None:
        """The client given to :func:`openai_agent`, or ``None`` (a new one for each call)."""
        return self._client

    async def __call__(self, ctx: InteractionContext, **kwargs: JSONValue) -> None:
        reserved = sorted(RESERVED.intersection(kwargs))
        if reserved:
            raise TypeError(f"the agent sets {', '.join(reserved)} itself: don't pass them")
        parameters = {key: _thaw(value) for key, value in {**self.defaults, **kwargs}.items()}
        if parameters.get("n", 1) != 1:
            raise ValueError("a call answers with one message: n must be 1")
        model = parameters.pop("model", self.model)
        messages = chat_messages(await ctx.history(), ctx.agent.alias, system=self.system)
        if self.include_usage:
            parameters["stream_options"] = {"include_usage": True}
        async with self._connect() as client:
            where = str(client.base_url)
            try:
                stream: openai.AsyncStream[
                    ChatCompletionChunk
                ] = await client.chat.completions.create(
                    model=model,
                    messages=cast("list[ChatCompletionMessageParam]", messages),
                    stream=True,
                    **parameters,
                )
            except openai.APIError as exc:
                raise _clear_error(exc, where) from exc
            # Responded only once the server has accepted the request: an error before
            # that is an ErrorMessage alone, not an empty message cut short.
            streamed = StreamedMessage()
            ctx.respond(streamed)
            async with streamed:
                try:
                    await _relay(stream, streamed, where)
                finally:
                    # At once, even when cancelled: the server sees the connection close.
                    with anyio.CancelScope(shield=True):
                        await stream.close()

    def _connect(self) -> AbstractAsyncContextManager[openai.AsyncOpenAI]:
        if self._client is not None:
            return _Borrowed(self._client)
        try:
            return openai.AsyncOpenAI()
        except openai.OpenAIError as exc:  # no API key in the environment
            raise LLMAuthenticationError(
                f"no client was given and openai.AsyncOpenAI() could not be made: {exc}"
            ) from exc


class _Borrowed:
    """A client given by the user: used as it is, closed by its owner."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self._client = client

    async def __aenter__(self) -> openai.AsyncOpenAI:
        return self._client

    async def __aexit__(self, *exc_info: object) -> None:
        return None


async def _relay(
    stream: openai.AsyncStream[ChatCompletionChunk], streamed: StreamedMessage, where: str
) -> None:
    """Send the stream's tokens to ``streamed``, and its metadata as soon as it is known.

    The model is known from the first chunk, so a message cut short records it too.
    """
    count = 0
    finished = False
    try:
        async for chunk in stream:
            if chunk.model and streamed.metadata.get("model") != chunk.model:
                streamed.add_metadata(model=chunk.model)
            if chunk.usage is not None:
                streamed.add_metadata(
                    usage={
                        "prompt_tokens": chunk.usage.prompt_tokens,
                        "completion_tokens": chunk.usage.completion_tokens,
                        "total_tokens": chunk.usage.total_tokens,
                    }
                )
            for choice in chunk.choices:
                if choice.index != 0:
                    continue
                if choice.delta is not None and choice.delta.content:
                    await streamed.send(choice.delta.content)
                    count += 1
                if choice.finish_reason is not None:
                    streamed.add_metadata(finish_reason=choice.finish_reason)
                    finished = True
    except openai.APIConnectionError as exc:
        raise LLMConnectionError(
            f"the stream from {where} broke off after {count} tokens: {exc}"
        ) from exc
    except openai.APIError as exc:
        raise _clear_error(exc, where, count) from exc
    except LLMError:
        raise
    except Exception as exc:
        raise LLMConnectionError(
            f"the stream from {where} broke off after {count} tokens: {exc}"
        ) from exc
    if not finished:
        raise LLMConnectionError(
            f"the stream from {where} ended after {count} tokens without a finish reason"
        )


def _clear_error(exc: openai.APIError, where: str, count: int | None = None) -> LLMError:
    """The agentforum error that says what went wrong, in words a user can act on."""
    after = "" if count is None else f" after {count} tokens"
    detail = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, openai.APIConnectionError):
        return LLMConnectionError(f"could not reach {where}{after}: {detail}")
    status = getattr(exc, "status_code", None)
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return LLMAuthenticationError(
            f"{where} refused the credentials ({status}): check the API key. {detail}"
        )
    if isinstance(exc, openai.RateLimitError):
        return LLMRateLimitError(
            f"{where} answered 429 (too many requests), after the client's retries. {detail}"
        )
    if isinstance(exc, openai.InternalServerError):
        return LLMServerError(
            f"{where} failed ({status}), after the client's retries{after}. {detail}"
        )
    if status is not None:
        return LLMRequestError(f"{where} refused the request ({status}). {detail}")
    return LLMError(f"{where} sent an error{after}: {detail}")


def openai_agent(
    *,
    model: str,
    client: openai.AsyncOpenAI | None = None,
    system: str | None = None,
    include_usage: bool = True,
    **defaults: JSONValue,
) -> OpenAIAgent:
    """Make an agent function that asks a model through the Chat Completions API.

    ::

        async with openai.AsyncOpenAI() as client:  # OPENAI_API_KEY from the environment
            gpt = forum.agent(openai_agent(model="gpt-4o-mini", client=client), alias="gpt")

    Args:
        model: The model to ask (a call may name another with ``model=``). It is the
            agent's default alias.
        client: The :class:`openai.AsyncOpenAI` to use (its ``base_url`` picks the server,
            its ``max_retries`` the retries), closed by you. ``None``: each call opens
            ``openai.AsyncOpenAI()`` (configured by ``OPENAI_API_KEY``,
            ``OPENAI_BASE_URL``) and closes it.
        system: A system prompt, put before the history.
        include_usage: Ask the server for the token usage of each answer
            (``stream_options``); turn it off for a server that refuses the option.
        defaults: Chat Completions parameters for every call (``temperature=0``, say).

    The model, the system prompt and these defaults are not part of the calls' hashes:
    the agent's alias names them. Under one alias, keep them fixed, or cached answers of
    the old settings answer the new ones; give the agent a new alias when they change, or
    pass what varies as call keyword arguments. See ``docs/llms.md``.

    Raises:
        TypeError: a default that is not JSON, or one the agent sets itself.
    """
    if not isinstance(model, str) or not model:
        raise TypeError(f"model must be a non-empty str, got {model!r}")
    reserved = sorted(RESERVED.intersection(defaults))
    if reserved:
        raise TypeError(f"the agent sets {', '.join(reserved)} itself: don't pass them")
    frozen = FrozenDict._trusted(freeze_mapping(defaults, "defaults"))
    return OpenAIAgent(model, client, system, include_usage, frozen)


__all__ = ["OpenAIAgent", "chat_messages", "openai_agent"]
