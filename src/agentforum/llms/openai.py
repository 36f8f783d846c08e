"""An agent for the OpenAI-compatible Chat Completions API, streamed, on asyncio and Trio.

One adapter covers OpenAI and the servers that speak its API (Ollama, vLLM, llama.cpp's
server, LM Studio), through the official ``openai`` SDK's :class:`openai.AsyncOpenAI` and its
``base_url``. Install it with ``pip install "agentforum[openai]"``::

    gpt = forum.agent(openai_agent(model="gpt-4o-mini", client=client), alias="gpt")

See ``docs/llms.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, cast

import anyio

try:
    import openai
    from openai.lib.streaming.chat import ChatCompletionStreamState
except ModuleNotFoundError as exc:
    if (exc.name or "").partition(".")[0] != "openai":
        raise
    raise ModuleNotFoundError(
        "agentforum.llms.openai needs the openai SDK: pip install 'agentforum[openai]'",
        name=exc.name,
    ) from exc

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
from ._loop import tool_loop
from ._observe import ModelRequest, model_request, record_answer, server_of
from ._tools import Tool, as_tool, is_result, recorded_calls, thaw

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

    from .._runtime import InteractionContext

#: Chat Completions parameters that the agent sets itself: a call may not pass them.
RESERVED: Final = frozenset({"messages", "stream", "stream_options", "tools"})


def chat_messages(
    history: Sequence[Message], me: str, *, system: str | None = None
) -> list[dict[str, Any]]:
    """Turn a branch into the ``messages`` of a Chat Completions request.

    In order: the ``system`` prompt, if any; then each message of ``history`` (root first):
    a message whose sender is ``me`` (the agent's alias) as ``assistant``, any other message
    (from the user, from other agents, forwards included) as ``user``, with its content as
    it is. :class:`ErrorMessage` nodes are left out: they record what failed, they are not
    part of the conversation.

    The tool calls of ``me`` go back as the API wants them: a message of ``me`` with
    ``metadata["tool_calls"]`` as an ``assistant`` message with ``tool_calls``, each
    result (``metadata["tool_call_id"]``) that follows it as a ``tool`` message. A tool
    call with no result after it (a call cut short) is left out of its message, and a
    result with no call before it is left out. The tool calls and results of other
    agents are their own work: left out.

    Args:
        history: The branch, root first, as :meth:`InteractionContext.history` returns it.
        me: The alias of the agent the model speaks as.
        system: The system prompt.

    Raises:
        ValueError: a message of ``me`` whose tool metadata is not as the agent writes it.
    """
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    kept = [message for message in history if not isinstance(message, ErrorMessage)]
    index = 0
    while index < len(kept):
        message = kept[index]
        index += 1
        metadata = message.metadata
        if "tool_calls" not in metadata and "tool_call_id" not in metadata:
            role = "assistant" if message.sender == me else "user"
            messages.append({"role": role, "content": message.content})
        elif message.sender != me or "tool_calls" not in metadata:
            continue  # another agent's tool work, or a result with no call before it
        else:
            calls = recorded_calls(message)
            results: list[dict[str, Any]] = []
            while index < len(kept) and is_result(kept[index], me):
                result = kept[index]
                index += 1
                if result.metadata["tool_call_id"] in {call[0] for call in calls}:
                    results.append(
                        {
                            "role": "tool",
                            "tool_call_id": result.metadata["tool_call_id"],
                            "content": result.content,
                        }
                    )
            answered = {result["tool_call_id"] for result in results}
            turn: dict[str, Any] = {"role": "assistant", "content": message.content or None}
            if answered:
                turn["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                    for call_id, name, arguments in calls
                    if call_id in answered
                ]
            if answered or message.content:
                messages.append(turn)
                messages.extend(results)
    return messages


class OpenAIAgent:
    """The agent function :func:`openai_agent` returns; give it to ``forum.agent``.

    Each call sends the branch it continues (:meth:`InteractionContext.history`, mapped by
    :func:`chat_messages`) to the Chat Completions API with ``stream=True``, and responds
    with one :class:`StreamedMessage` whose tokens reach every consumer as the server sends
    them. Its metadata records the ``model`` the server names, the ``finish_reason`` and,
    when the server sends it, the token ``usage`` (``prompt_tokens``,
    ``completion_tokens``, ``total_tokens``).

    With :attr:`tools`, a model's answer that calls tools records them
    (``metadata["tool_calls"]``); the agent runs them, concurrently, responds with one
    message per result (``metadata["tool_call_id"]``, ``"tool"``, and ``"error": True``
    for a failure) and asks the model again, with the results, until it answers without
    calling a tool: at most :attr:`max_tool_rounds` rounds of tools, or the call ends with
    :exc:`~agentforum.llms.LLMToolLoopError`. See ``docs/llms.md``.

    The call's keyword arguments are Chat Completions parameters (``temperature``,
    ``max_tokens``, ``model``, ``tool_choice``, ...): they override the agent's defaults
    and, being part of the call's hash, of its cache key.
    """

    __slots__ = (
        "__name__",
        "_client",
        "_tools",
        "defaults",
        "include_usage",
        "max_tool_rounds",
        "model",
        "system",
    )

    def __init__(
        self,
        model: str,
        client: openai.AsyncOpenAI | None,
        system: str | None,
        include_usage: bool,
        defaults: Mapping[str, JSONValue],
        tools: Mapping[str, Tool] | None = None,
        max_tool_rounds: int = 8,
    ) -> None:
        #: The model asked when a call does not name one.
        self.model = model
        #: The system prompt put before the history, if any.
        self.system = system
        #: Whether the server is asked for the token usage (``stream_options``).
        self.include_usage = include_usage
        #: Chat Completions parameters for every call, which a call's own override.
        self.defaults = defaults
        #: How many rounds of tool calls one call may run before it fails.
        self.max_tool_rounds = max_tool_rounds
        self._client = client
        self._tools: Mapping[str, Tool] = dict(tools or {})
        #: The agent's default alias in ``forum.agent``: the model's name.
        self.__name__ = model

    def __repr__(self) -> str:
        return f"<OpenAIAgent model={self.model!r}>"

    @property
    def client(self) -> openai.AsyncOpenAI | None:
        """The client given to :func:`openai_agent`, or ``None`` (a new one for each call)."""
        return self._client

    @property
    def tools(self) -> tuple[Tool, ...]:
        """The tools the model may call, in the order given."""
        return tuple(self._tools.values())

    async def __call__(self, ctx: InteractionContext, **kwargs: JSONValue) -> None:
        reserved = sorted(RESERVED.intersection(kwargs))
        if reserved:
            raise TypeError(f"the agent sets {', '.join(reserved)} itself: don't pass them")
        parameters = {key: thaw(value) for key, value in {**self.defaults, **kwargs}.items()}
        if parameters.get("n", 1) != 1:
            raise ValueError("a call answers with one message: n must be 1")
        model = parameters.pop("model", self.model)
        if self.include_usage:
            parameters["stream_options"] = {"include_usage": True}
        if self._tools:
            parameters["tools"] = [_declaration(tool) for tool in self._tools.values()]
        me = ctx.agent.alias
        history = await ctx.history()
        async with self._connect() as client:
            where = str(client.base_url)

            async def ask(turns: list[Message]) -> Message:
                messages = chat_messages([*history, *turns], me, system=self.system)
                return await self._ask(ctx, client, where, model, messages, parameters)

            await tool_loop(ctx, self._tools, self.max_tool_rounds, ask)

    async def _ask(
        self,
        ctx: InteractionContext,
        client: openai.AsyncOpenAI,
        where: str,
        model: str,
        messages: list[dict[str, Any]],
        parameters: dict[str, Any],
    ) -> Message:
        """Ask the model once; respond with its answer, streamed, and return it (no parent).

        The request is a span when the forum is traced (:func:`model_request`).
        """
        host, port = server_of(client.base_url)
        with model_request(
            ctx, provider="openai", model=model, server_address=host, server_port=port
        ) as request:
            return await self._stream(ctx, client, where, model, messages, parameters, request)

    async def _stream(
        self,
        ctx: InteractionContext,
        client: openai.AsyncOpenAI,
        where: str,
        model: str,
        messages: list[dict[str, Any]],
        parameters: dict[str, Any],
        request: ModelRequest,
    ) -> Message:
        """Send the request and relay its answer (see :meth:`_ask`); record it on ``request``."""
        try:
            stream: openai.AsyncStream[ChatCompletionChunk] = await client.chat.completions.create(
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
        try:
            async with streamed:
                try:
                    tokens, calls = await _relay(stream, streamed, where)
                finally:
                    # At once, even when cancelled: the server sees the connection close.
                    with anyio.CancelScope(shield=True):
                        await stream.close()
                if calls:
                    streamed.add_metadata(tool_calls=calls)
        finally:
            # What the answer said, as far as it got (a stream cut short has its model).
            record_answer(
                request,
                streamed.metadata,
                reason="finish_reason",
                input_tokens="prompt_tokens",
                output_tokens="completion_tokens",
            )
        return Message(content="".join(tokens), sender=ctx.agent.alias, metadata=streamed.metadata)

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
) -> tuple[list[str], list[dict[str, JSONValue]]]:
    """Send the stream's tokens to ``streamed``, and its metadata as soon as it is known.

    The model is known from the first chunk, so a message cut short records it too.
    Returns the tokens and the tool calls (``id``, ``name``, ``arguments``) the model
    made, whose fragments the SDK's :class:`ChatCompletionStreamState` puts together.
    """
    tokens: list[str] = []
    finished = False
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    try:
        async for chunk in stream:
            state.handle_chunk(chunk)
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
                    tokens.append(choice.delta.content)
                if choice.finish_reason is not None:
                    streamed.add_metadata(finish_reason=choice.finish_reason)
                    finished = True
    except openai.APIConnectionError as exc:
        raise LLMConnectionError(
            f"the stream from {where} broke off after {len(tokens)} tokens: {exc}"
        ) from exc
    except openai.APIError as exc:
        raise _clear_error(exc, where, len(tokens)) from exc
    except LLMError:
        raise
    except Exception as exc:
        raise LLMConnectionError(
            f"the stream from {where} broke off after {len(tokens)} tokens: {exc}"
        ) from exc
    if not finished:
        raise LLMConnectionError(
            f"the stream from {where} ended after {len(tokens)} tokens without a finish reason"
        )
    return tokens, _tool_calls(state)


#: The port of a URL that names none, by scheme (``server.port`` of a model request's span).


def _tool_calls(state: ChatCompletionStreamState[Any]) -> list[dict[str, JSONValue]]:
    """The function calls of the first choice of a finished stream, as the agent records them."""
    choices = state.current_completion_snapshot.choices
    made = (choices[0].message.tool_calls if choices else None) or []
    # A server that sends no id (some local ones) gets one made from the call's place.
    return [
        {
            "id": call.id or f"call_{index}",
            "name": call.function.name or "",
            "arguments": call.function.arguments or "",
        }
        for index, call in enumerate(made)
        if call.type == "function"
    ]


def _declaration(tool: Tool) -> dict[str, Any]:
    """The ``tools`` entry of a request that declares ``tool``."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = thaw(tool.parameters)
    return {"type": "function", "function": function}


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
    tools: Iterable[Tool | Callable[..., Any]] = (),
    max_tool_rounds: int = 8,
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
        tools: Functions the model may call: :class:`~agentforum.llms.Tool` objects, or
            plain functions, made tools with :func:`~agentforum.llms.tool`.
        max_tool_rounds: How many rounds of tool calls one call may run; a model that
            calls tools once more ends the call with
            :exc:`~agentforum.llms.LLMToolLoopError`.
        defaults: Chat Completions parameters for every call (``temperature=0``, say).

    The model, the system prompt, the tools and these defaults are not part of the
    calls' hashes:
    the agent's alias names them. Under one alias, keep them fixed, or cached answers of
    the old settings answer the new ones; give the agent a new alias when they change, or
    pass what varies as call keyword arguments. See ``docs/llms.md``.

    Raises:
        TypeError: a default that is not JSON, or one the agent sets itself; a function
            that cannot be a tool (see :func:`~agentforum.llms.tool`).
        ValueError: two tools of one name, or ``max_tool_rounds`` below 1.
    """
    if not isinstance(model, str) or not model:
        raise TypeError(f"model must be a non-empty str, got {model!r}")
    reserved = sorted(RESERVED.intersection(defaults))
    if reserved:
        raise TypeError(f"the agent sets {', '.join(reserved)} itself: don't pass them")
    if isinstance(max_tool_rounds, bool) or not isinstance(max_tool_rounds, int):
        raise TypeError(f"max_tool_rounds must be an int, got {max_tool_rounds!r}")
    if max_tool_rounds < 1:
        raise ValueError(f"max_tool_rounds must be at least 1, got {max_tool_rounds}")
    frozen = FrozenDict._trusted(freeze_mapping(defaults, "defaults"))
    named: dict[str, Tool] = {}
    for declared in map(as_tool, tools):
        if declared.name in named:
            raise ValueError(f"two tools are named {declared.name!r}: give one another name")
        named[declared.name] = declared
    return OpenAIAgent(model, client, system, include_usage, frozen, named, max_tool_rounds)


__all__ = ["OpenAIAgent", "chat_messages", "openai_agent"]
