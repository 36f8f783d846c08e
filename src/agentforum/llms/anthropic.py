"""An agent for Anthropic's Messages API, streamed, on asyncio and Trio.

It asks Claude models through the official ``anthropic`` SDK's
:class:`anthropic.AsyncAnthropic`. Install it with ``pip install "agentforum[anthropic]"``::

    claude = forum.agent(anthropic_agent(model="claude-sonnet-4-5", client=client), alias="claude")

See ``docs/llms.md``.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, cast

import anyio

try:
    import anthropic
except ModuleNotFoundError as exc:
    if (exc.name or "").partition(".")[0] != "anthropic":
        raise
    raise ModuleNotFoundError(
        "agentforum.llms.anthropic needs the anthropic SDK: pip install 'agentforum[anthropic]'",
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
from ._observe import model_request, record_answer, server_of
from ._tools import Tool, as_tool, is_result, recorded_calls, thaw

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence

    from anthropic.types import MessageParam, RawMessageStreamEvent, ToolParam

    from .._runtime import InteractionContext

#: Messages API parameters that the agent sets itself: a call may not pass them.
RESERVED: Final = frozenset({"messages", "stream", "system", "tools"})

#: The ``type`` of an ``error`` event in a stream, and the error it is.
_EVENT_ERRORS: Final[dict[str, type[LLMError]]] = {
    "overloaded_error": LLMServerError,
    "api_error": LLMServerError,
    "timeout_error": LLMServerError,
    "rate_limit_error": LLMRateLimitError,
    "authentication_error": LLMAuthenticationError,
    "permission_error": LLMAuthenticationError,
    "billing_error": LLMAuthenticationError,
    "invalid_request_error": LLMRequestError,
    "not_found_error": LLMRequestError,
    "request_too_large": LLMRequestError,
}


def anthropic_messages(history: Sequence[Message], me: str) -> list[dict[str, Any]]:
    """Turn a branch into the ``messages`` of a Messages API request.

    Each message of ``history`` (root first): a message whose sender is ``me`` (the
    agent's alias) as ``assistant``, any other message (from the user, from other agents,
    forwards included) as ``user``, with its content as it is. :class:`ErrorMessage` nodes
    are left out (they record what failed, they are not part of the conversation), and so
    are messages with no content, which the API refuses. The system prompt is not a
    message in this API: the agent sends it apart, as ``system``.

    The tool calls of ``me`` go back as the API wants them: a message of ``me`` with
    ``metadata["tool_calls"]`` as an ``assistant`` message of its text (if any) and a
    ``tool_use`` block per call (``input``: the call's arguments, a JSON object; ``{}``
    for arguments that were not one), the results (``metadata["tool_call_id"]``) that
    follow it as one ``user`` message of ``tool_result`` blocks (``is_error`` for a failed
    call). A tool call with no result after it (a call cut short) is left out of its
    message, and a result with no call before it is left out. The tool calls and results
    of other agents are their own work: left out.

    Args:
        history: The branch, root first, as :meth:`InteractionContext.history` returns it.
        me: The alias of the agent the model speaks as.

    Raises:
        ValueError: a message of ``me`` whose tool metadata is not as the agent writes it.
    """
    messages: list[dict[str, Any]] = []
    kept = [message for message in history if not isinstance(message, ErrorMessage)]
    index = 0
    while index < len(kept):
        message = kept[index]
        index += 1
        metadata = message.metadata
        if "tool_calls" not in metadata and "tool_call_id" not in metadata:
            if message.content:
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
                    block: dict[str, Any] = {
                        "type": "tool_result",
                        "tool_use_id": result.metadata["tool_call_id"],
                    }
                    if result.content:
                        block["content"] = result.content
                    if result.metadata.get("error") is True:
                        block["is_error"] = True
                    results.append(block)
            answered = {result["tool_use_id"] for result in results}
            content: list[dict[str, Any]] = []
            if message.content:
                content.append({"type": "text", "text": message.content})
            content.extend(
                {"type": "tool_use", "id": call_id, "name": name, "input": _input(arguments)}
                for call_id, name, arguments in calls
                if call_id in answered
            )
            if content:
                messages.append({"role": "assistant", "content": content})
            if results:
                messages.append({"role": "user", "content": results})
    return messages


def _input(arguments: str) -> dict[str, Any]:
    """The ``input`` of a ``tool_use`` block: the arguments, if they are a JSON object."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


class AnthropicAgent:
    """The agent function :func:`anthropic_agent` returns; give it to ``forum.agent``.

    Each call sends the branch it continues (:meth:`InteractionContext.history`, mapped by
    :func:`anthropic_messages`) to the Messages API with ``stream=True``, and responds
    with one :class:`StreamedMessage` whose tokens (the text of the answer) reach every
    consumer as the server sends them. Its metadata records the ``model`` the server
    names, the ``stop_reason`` (and the ``stop_sequence`` that stopped it, if one did)
    and the token ``usage`` (``input_tokens``, ``output_tokens``, and the prompt cache's
    ``cache_creation_input_tokens`` and ``cache_read_input_tokens`` when the server
    counts them).

    With :attr:`tools`, an answer that uses tools records them
    (``metadata["tool_calls"]``, as :class:`~agentforum.llms.openai.OpenAIAgent` does);
    the agent runs them, concurrently, responds with one message per result
    (``metadata["tool_call_id"]``, ``"tool"``, and ``"error": True`` for a failure) and
    asks the model again, with the results, until it answers without using a tool: at
    most :attr:`max_tool_rounds` rounds of tools, or the call ends with
    :exc:`~agentforum.llms.LLMToolLoopError`. See ``docs/llms.md``.

    The call's keyword arguments are Messages API parameters (``max_tokens``, ``model``,
    ``temperature``, ``stop_sequences``, ``tool_choice``, ...), sent in the request's
    body: they override the agent's defaults and, being part of the call's hash, of its
    cache key.
    """

    __slots__ = (
        "__name__",
        "_client",
        "_tools",
        "defaults",
        "max_tokens",
        "max_tool_rounds",
        "model",
        "system",
    )

    def __init__(
        self,
        model: str,
        client: anthropic.AsyncAnthropic | None,
        system: str | None,
        max_tokens: int,
        defaults: Mapping[str, JSONValue],
        tools: Mapping[str, Tool] | None = None,
        max_tool_rounds: int = 8,
    ) -> None:
        #: The model asked when a call does not name one.
        self.model = model
        #: The system prompt, sent as the request's ``system``, if any.
        self.system = system
        #: The most tokens an answer may have when a call does not say (``max_tokens``).
        self.max_tokens = max_tokens
        #: Messages API parameters for every call, which a call's own override.
        self.defaults = defaults
        #: How many rounds of tool calls one call may run before it fails.
        self.max_tool_rounds = max_tool_rounds
        self._client = client
        self._tools: Mapping[str, Tool] = dict(tools or {})
        #: The agent's default alias in ``forum.agent``: the model's name.
        self.__name__ = model

    def __repr__(self) -> str:
        return f"<AnthropicAgent model={self.model!r}>"

    @property
    def client(self) -> anthropic.AsyncAnthropic | None:
        """The client given to :func:`anthropic_agent`, or ``None`` (a new one each call)."""
        return self._client

    @property
    def tools(self) -> tuple[Tool, ...]:
        """The tools the model may use, in the order given."""
        return tuple(self._tools.values())

    async def __call__(self, ctx: InteractionContext, **kwargs: JSONValue) -> None:
        reserved = sorted(RESERVED.intersection(kwargs))
        if reserved:
            raise TypeError(f"the agent sets {', '.join(reserved)} itself: don't pass them")
        parameters = {key: thaw(value) for key, value in {**self.defaults, **kwargs}.items()}
        model = parameters.pop("model", self.model)
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a non-empty str, got {model!r}")
        max_tokens = _max_tokens(parameters.pop("max_tokens", self.max_tokens))
        request: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
        if self.system is not None:
            request["system"] = self.system
        if self._tools:
            request["tools"] = [_declaration(tool) for tool in self._tools.values()]
        if parameters:
            request["extra_body"] = parameters
        me = ctx.agent.alias
        history = await ctx.history()
        async with self._connect() as client:
            where = str(client.base_url)

            async def ask(turns: list[Message]) -> Message:
                messages = anthropic_messages([*history, *turns], me)
                return await self._ask(ctx, client, where, messages, request)

            await tool_loop(ctx, self._tools, self.max_tool_rounds, ask)

    async def _ask(
        self,
        ctx: InteractionContext,
        client: anthropic.AsyncAnthropic,
        where: str,
        messages: list[dict[str, Any]],
        request: dict[str, Any],
    ) -> Message:
        """Ask the model once; respond with its answer, streamed, and return it (no parent).

        The request is a span when the forum is traced (:func:`model_request`).
        """
        host, port = server_of(client.base_url)
        with model_request(
            ctx,
            provider="anthropic",
            model=str(request["model"]),
            server_address=host,
            server_port=port,
        ) as traced:
            try:
                stream: anthropic.AsyncStream[RawMessageStreamEvent] = await client.messages.create(
                    messages=cast("list[MessageParam]", messages), stream=True, **request
                )
            except anthropic.APIError as exc:
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
                    traced,
                    streamed.metadata,
                    reason="stop_reason",
                    input_tokens="input_tokens",
                    output_tokens="output_tokens",
                )
        return Message(content="".join(tokens), sender=ctx.agent.alias, metadata=streamed.metadata)

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[anthropic.AsyncAnthropic]:
        """The client to use: the user's (left open), or one made for the call and closed."""
        if self._client is not None:
            yield self._client
            return
        try:
            made = anthropic.AsyncAnthropic()
        except (anthropic.AnthropicError, ValueError) as exc:  # a broken configuration
            raise LLMAuthenticationError(
                f"no client was given and anthropic.AsyncAnthropic() could not be made: {exc}"
            ) from exc
        async with made as client:
            if client.api_key is None and client.auth_token is None and client.credentials is None:
                raise LLMAuthenticationError(
                    "no client was given and anthropic.AsyncAnthropic() found no credentials: "
                    "set ANTHROPIC_API_KEY, or give a client"
                )
            yield client


def _max_tokens(value: object) -> int:
    """``value`` as the request's ``max_tokens``, which the API requires: an int, at least 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_tokens must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"max_tokens must be at least 1, got {value}")
    return value


async def _relay(
    stream: anthropic.AsyncStream[RawMessageStreamEvent], streamed: StreamedMessage, where: str
) -> tuple[list[str], list[dict[str, JSONValue]]]:
    """Send the stream's text to ``streamed``, and its metadata as soon as it is known.

    The model is known from ``message_start``, so a message cut short records it too; the
    ``stop_reason`` and the usage come with ``message_delta``. Returns the tokens and the
    tool calls (``id``, ``name``, ``arguments``: the input's JSON, as the model sent it,
    put together from its ``input_json_delta`` fragments).
    """
    tokens: list[str] = []
    # By the index of their block: id, name, the input's fragments, the block's own input.
    uses: dict[int, tuple[str, str, list[str], object]] = {}
    usage: dict[str, JSONValue] = {}
    stopped = False
    try:
        async for event in stream:
            if event.type == "message_start":
                streamed.add_metadata(model=event.message.model)
                usage = _usage(event.message.usage, usage)
            elif event.type == "content_block_start":
                block = event.content_block
                if block.type == "tool_use":
                    uses[event.index] = (block.id, block.name, [], block.input)
            elif event.type == "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta" and delta.text:
                    await streamed.send(delta.text)
                    tokens.append(delta.text)
                elif delta.type == "input_json_delta" and event.index in uses:
                    uses[event.index][2].append(delta.partial_json)
            elif event.type == "message_delta":
                usage = _usage(event.usage, usage)
                if event.delta.stop_reason is not None:
                    streamed.add_metadata(stop_reason=event.delta.stop_reason)
                    stopped = True
                if event.delta.stop_sequence is not None:
                    streamed.add_metadata(stop_sequence=event.delta.stop_sequence)
                streamed.add_metadata(usage=usage)
    except anthropic.APIConnectionError as exc:
        raise LLMConnectionError(
            f"the stream from {where} broke off after {len(tokens)} tokens: {exc}"
        ) from exc
    except anthropic.APIError as exc:
        raise _clear_error(exc, where, len(tokens)) from exc
    except LLMError:
        raise
    except Exception as exc:
        raise LLMConnectionError(
            f"the stream from {where} broke off after {len(tokens)} tokens: {exc}"
        ) from exc
    if not stopped:
        raise LLMConnectionError(
            f"the stream from {where} ended after {len(tokens)} tokens without a stop reason"
        )
    calls: list[dict[str, JSONValue]] = []
    for _, (call_id, name, fragments, given) in sorted(uses.items()):
        arguments = "".join(fragments)
        if not fragments and given:  # an input given whole, in the block's start
            arguments = json.dumps(given, ensure_ascii=False)
        calls.append({"id": call_id, "name": name, "arguments": arguments})
    return tokens, calls


def _usage(counts: object, known: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    """The usage so far: ``known``, with the counts the server gives now (cumulative)."""
    usage = dict(known)
    for key in (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ):
        value = getattr(counts, key, None)
        if isinstance(value, int):
            usage[key] = value
    return usage


def _declaration(tool: Tool) -> ToolParam:
    """The ``tools`` entry of a request that declares ``tool``."""
    declared: dict[str, Any] = {"name": tool.name}
    if tool.description:
        declared["description"] = tool.description
    declared["input_schema"] = thaw(tool.parameters)
    return cast("ToolParam", declared)


def _clear_error(exc: anthropic.APIError, where: str, count: int | None = None) -> LLMError:
    """The agentforum error that says what went wrong, in words a user can act on."""
    after = "" if count is None else f" after {count} tokens"
    detail = exc.message
    if isinstance(exc, anthropic.APITimeoutError):
        return LLMConnectionError(f"{where} did not answer in time{after}: {detail}")
    if isinstance(exc, anthropic.APIConnectionError):
        return LLMConnectionError(f"could not reach {where}{after}: {detail}")
    if not isinstance(exc, anthropic.APIStatusError):
        return LLMError(f"{where} sent an error{after}: {detail}")
    status = exc.status_code
    if status < 400:  # an error event in a stream that had begun well
        kind = str(exc.type or "")
        error_class = _EVENT_ERRORS.get(kind, LLMError)
        return error_class(f"the stream from {where} ended in an error{after}: {detail}")
    if isinstance(exc, (anthropic.AuthenticationError, anthropic.PermissionDeniedError)):
        return LLMAuthenticationError(
            f"{where} refused the credentials ({status}): check the API key. {detail}"
        )
    if isinstance(exc, anthropic.RateLimitError):
        return LLMRateLimitError(
            f"{where} answered 429 (too many requests), after the client's retries. {detail}"
        )
    if isinstance(exc, anthropic.OverloadedError):
        return LLMServerError(
            f"{where} is overloaded ({status}), after the client's retries{after}. {detail}"
        )
    if isinstance(exc, anthropic.InternalServerError):
        return LLMServerError(
            f"{where} failed ({status}), after the client's retries{after}. {detail}"
        )
    return LLMRequestError(f"{where} refused the request ({status}). {detail}")


def anthropic_agent(
    *,
    model: str,
    client: anthropic.AsyncAnthropic | None = None,
    system: str | None = None,
    max_tokens: int = 4096,
    tools: Iterable[Tool | Callable[..., Any]] = (),
    max_tool_rounds: int = 8,
    **defaults: JSONValue,
) -> AnthropicAgent:
    """Make an agent function that asks a model through Anthropic's Messages API.

    ::

        async with anthropic.AsyncAnthropic() as client:  # ANTHROPIC_API_KEY from the environment
            agent = anthropic_agent(model="claude-sonnet-4-5", client=client)
            claude = forum.agent(agent, alias="claude")

    Args:
        model: The model to ask (a call may name another with ``model=``). It is the
            agent's default alias.
        client: The :class:`anthropic.AsyncAnthropic` to use (its ``base_url`` picks the
            server, its ``max_retries`` the retries), closed by you. ``None``: each call
            opens ``anthropic.AsyncAnthropic()`` (configured by ``ANTHROPIC_API_KEY``,
            ``ANTHROPIC_BASE_URL``) and closes it.
        system: A system prompt, sent as the request's ``system``.
        max_tokens: The most tokens an answer may have (the API requires a limit); a call
            may give another with ``max_tokens=``.
        tools: Functions the model may use: :class:`~agentforum.llms.Tool` objects, or
            plain functions, made tools with :func:`~agentforum.llms.tool`.
        max_tool_rounds: How many rounds of tool calls one call may run; a model that
            uses tools once more ends the call with
            :exc:`~agentforum.llms.LLMToolLoopError`.
        defaults: Messages API parameters for every call (``temperature=0``, say), sent
            in the request's body.

    The model, the system prompt, ``max_tokens``, the tools and these defaults are not
    part of the calls' hashes: the agent's alias names them. Under one alias, keep them
    fixed, or cached answers of the old settings answer the new ones; give the agent a new
    alias when they change, or pass what varies as call keyword arguments. See
    ``docs/llms.md``.

    Raises:
        TypeError: a model that is not a non-empty str, a default that is not JSON, or
            one the agent sets itself; a function that cannot be a tool (see
            :func:`~agentforum.llms.tool`).
        ValueError: two tools of one name, ``max_tool_rounds`` or ``max_tokens`` below 1.
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
    _max_tokens(max_tokens)
    frozen = FrozenDict._trusted(freeze_mapping(defaults, "defaults"))
    named: dict[str, Tool] = {}
    for declared in map(as_tool, tools):
        if declared.name in named:
            raise ValueError(f"two tools are named {declared.name!r}: give one another name")
        named[declared.name] = declared
    return AnthropicAgent(model, client, system, max_tokens, frozen, named, max_tool_rounds)


__all__ = ["AnthropicAgent", "anthropic_agent", "anthropic_messages"]
