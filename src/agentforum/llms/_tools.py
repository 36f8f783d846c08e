"""Tools: Python functions that a language model may call, described by JSON schemas.

A :class:`Tool` derives the JSON schema of its parameters from the function's signature
and type hints once, when it is declared, and checks (and converts) the arguments a model
sends against the same types when it is called. Running a tool never raises an
``Exception``: what went wrong (arguments that are not JSON, that do not fit, an exception
in the function) is the text of an error result, for the model to read.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, Union, cast

import anyio
import anyio.lowlevel
import anyio.to_thread

from .._json import FrozenDict, JSONValue, freeze_mapping
from .._messages import Message
from .._runtime import error_type_of

if TYPE_CHECKING:
    from collections.abc import Callable

#: What a tool's name may be (the Chat Completions API's own rule).
_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SUPPORTED: Final = (
    "str, int, float, bool, None, list[...], dict[str, ...], Literal[...] "
    "and unions of these (X | None, Optional[X])"
)


class _Invalid(Exception):
    """Arguments that do not fit the tool's signature; the text says why, for the model."""


class _Type:
    """One supported annotation: its JSON schema, and how a JSON value is checked against it."""

    __slots__ = ("convert", "describe", "schema")

    def __init__(
        self,
        schema: dict[str, JSONValue],
        describe: str,
        convert: Callable[[object, str], object],
    ) -> None:
        self.schema = schema
        #: What a fitting value is, in words ("an integer").
        self.describe = describe
        #: Return the value as the function receives it; raise _Invalid if it does not fit.
        self.convert = convert


def _mismatch(expected: str, value: object, path: str) -> _Invalid:
    return _Invalid(f"{path} must be {expected}, not {json.dumps(value)}")


def _scalar(json_type: str, describe: str, fits: Callable[[object], object]) -> _Type:
    def convert(value: object, path: str) -> object:
        converted = fits(value)
        if converted is _NO:
            raise _mismatch(describe, value, path)
        return converted

    return _Type({"type": json_type}, describe, convert)


_NO: Final = object()


def _as_str(value: object) -> object:
    return value if type(value) is str else _NO


def _as_bool(value: object) -> object:
    return value if type(value) is bool else _NO


def _as_int(value: object) -> object:
    if type(value) is int:
        return value
    # JSON Schema's "integer" is any number with no fractional part: 3.0 is 3.
    if type(value) is float and value.is_integer():
        return int(value)
    return _NO


def _as_float(value: object) -> object:
    if type(value) is int or type(value) is float:
        try:
            converted = float(value)
        except OverflowError:  # an integer beyond the floats
            return _NO
        # Python's JSON reads NaN and Infinity, which are not numbers in JSON.
        return converted if math.isfinite(converted) else _NO
    return _NO


def _as_none(value: object) -> object:
    return value if value is None else _NO


_SCALARS: Final[dict[object, _Type]] = {
    str: _scalar("string", "a string", _as_str),
    bool: _scalar("boolean", "a boolean", _as_bool),
    int: _scalar("integer", "an integer", _as_int),
    float: _scalar("number", "a number", _as_float),
    None: _scalar("null", "null", _as_none),
    type(None): _scalar("null", "null", _as_none),
}
_LITERAL_TYPES: Final = {str: "string", bool: "boolean", int: "integer", float: "number"}


def _list_of(item: _Type | None) -> _Type:
    def convert(value: object, path: str) -> object:
        if type(value) is not list:
            raise _mismatch("a list", value, path)
        if item is None:
            return value
        return [item.convert(element, f"{path}[{index}]") for index, element in enumerate(value)]

    schema: dict[str, JSONValue] = {"type": "array"}
    if item is not None:
        schema["items"] = item.schema
    return _Type(schema, "a list", convert)


def _dict_of(item: _Type | None) -> _Type:
    def convert(value: object, path: str) -> object:
        if type(value) is not dict:
            raise _mismatch("an object", value, path)
        if item is None:
            return value
        return {key: item.convert(element, f"{path}[{key!r}]") for key, element in value.items()}

    schema: dict[str, JSONValue] = {"type": "object"}
    if item is not None:
        schema["additionalProperties"] = item.schema
    return _Type(schema, "an object", convert)


def _literal(choices: tuple[object, ...], where: str) -> _Type:
    for choice in choices:
        if choice is not None and type(choice) not in _LITERAL_TYPES:
            raise TypeError(
                f"{where}: Literal[...] may hold str, int, float, bool and None values, "
                f"not {choice!r}"
            )
    kinds = {type(choice) for choice in choices}
    schema: dict[str, JSONValue] = {"enum": cast("list[JSONValue]", list(choices))}
    if len(kinds) == 1 and None not in choices:
        schema = {"type": _LITERAL_TYPES[kinds.pop()], **schema}
    describe = "one of " + ", ".join(json.dumps(choice) for choice in choices)

    def convert(value: object, path: str) -> object:
        # By type too: True is not 1, and 1.0 is not 1, for a Literal.
        if any(type(value) is type(choice) and value == choice for choice in choices):
            return value
        raise _mismatch(describe, value, path)

    return _Type(schema, describe, convert)


def _union(alternatives: list[_Type]) -> _Type:
    describe = " or ".join(alternative.describe for alternative in alternatives)

    def convert(value: object, path: str) -> object:
        for alternative in alternatives:
            try:
                return alternative.convert(value, path)
            except _Invalid:  # noqa: PERF203 - the first alternative that fits wins
                continue
        raise _mismatch(describe, value, path)

    return _Type({"anyOf": [alternative.schema for alternative in alternatives]}, describe, convert)


def _translate(hint: object, where: str) -> _Type:
    """The :class:`_Type` of a type hint; TypeError for one that a tool cannot take."""
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if hint is list or origin is list:
        return _list_of(_translate(arguments[0], f"{where}'s items") if arguments else None)
    if hint is dict or origin is dict:
        if not arguments:
            return _dict_of(None)
        if arguments[0] is not str:
            raise TypeError(f"{where}: a JSON object's keys are strings: use dict[str, ...]")
        return _dict_of(_translate(arguments[1], f"{where}'s values"))
    if origin is Literal:
        return _literal(arguments, where)
    if origin is Union or origin is types.UnionType:
        return _union([_translate(argument, where) for argument in arguments])
    raise TypeError(f"{where} is annotated {hint!r}, which a tool cannot take: use {_SUPPORTED}")


def _description(function: Callable[..., Any]) -> str:
    """The first paragraph of the function's docstring, on one line ("" if it has none)."""
    doc = inspect.getdoc(function)
    if not doc:
        return ""
    paragraph = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    return " ".join(paragraph.split())


class Tool:
    """A Python function that a language model may call, with the JSON schema of its parameters.

    Made by :func:`tool` (or by the agents, from a plain function). The schema is derived
    from the signature and type hints when the tool is made; see :func:`tool` for the
    types a tool may take. Calling a :class:`Tool` calls its function, as before.
    """

    __slots__ = ("_types", "description", "function", "is_async", "name", "parameters")

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        if not callable(function):
            raise TypeError(f"a tool is a function, not {type(function).__qualname__}")
        if name is None:
            name = getattr(function, "__name__", "")
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise ValueError(
                f"a tool's name is 1 to 64 letters, digits, '_' or '-', not {name!r}: "
                "give one with name="
            )
        if description is not None and not isinstance(description, str):
            raise TypeError(f"description must be a str, not {type(description).__qualname__}")
        #: The function the model calls, sync (run in a worker thread) or async.
        self.function = function
        #: The name the model calls it by.
        self.name: str = name
        #: What it does, for the model: the docstring's first paragraph, unless given.
        self.description: str = _description(function) if description is None else description
        #: Whether :attr:`function` is a coroutine function (awaited, not run in a thread).
        self.is_async: bool = inspect.iscoroutinefunction(function) or (
            not inspect.isfunction(function)
            and inspect.iscoroutinefunction(type(function).__call__)
        )
        self._types, schema = _signature(function, f"tool {name!r}")
        #: The JSON schema of the arguments: an object with a property per parameter.
        self.parameters: FrozenDict = FrozenDict._trusted(freeze_mapping(schema, "parameters"))

    def __repr__(self) -> str:
        return f"<Tool {self.name!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function, as if it were not a tool."""
        return self.function(*args, **kwargs)

    async def run(self, arguments: str) -> tuple[str, bool]:
        """Run the function with a model's ``arguments``: a JSON object, as text.

        Returns the result's text and whether it is an error. The text of a ``str``
        result is itself, that of any other value its JSON (``None`` is ``"null"``).
        Arguments that are not a JSON object (``""`` counts as ``{}``) or do not fit the
        signature, an exception in the function and a result that is not JSON are
        errors, never raised: ``"Error: ..."``, saying what went wrong, for the model to
        read. Arguments are converted to the annotated types: a float with no fractional
        part for an ``int``, an ``int`` for a ``float``.

        A sync function runs in a worker thread (:func:`anyio.to_thread.run_sync`); when
        the caller is cancelled meanwhile, this waits for the function to return and
        returns its result, as :func:`anyio.to_thread.run_sync` does: the cancellation
        reaches the caller at its next checkpoint (the model's agent records no result
        that came after a cancellation). A cancellation is never caught: it propagates.
        """
        try:
            given = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return f"Error: the arguments are not valid JSON ({exc}): {arguments}", True
        try:
            keywords = _bind(self, given)
        except _Invalid as exc:
            return f"Error: wrong arguments for {self.name}: {exc}", True
        try:
            if self.is_async:
                result = await self.function(**keywords)
            else:
                call = functools.partial(self.function, **keywords)
                result = await anyio.to_thread.run_sync(call)
        except Exception as exc:
            return f"Error: {error_type_of(exc)}: {exc}", True
        if isinstance(result, str):
            return result, False
        try:
            return json.dumps(result, ensure_ascii=False, allow_nan=False), False
        except (TypeError, ValueError) as exc:
            return f"Error: the tool's result is not JSON: {exc}", True


def _signature(
    function: Callable[..., Any], where: str
) -> tuple[dict[str, tuple[_Type, bool]], dict[str, JSONValue]]:
    """The parameters' types (and whether each is required), and the schema of them all."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: its signature cannot be read: {exc}") from exc
    owner = function if inspect.isfunction(function) or inspect.ismethod(function) else None
    try:
        hints = typing.get_type_hints(owner or type(function).__call__, include_extras=True)
    except Exception as exc:  # a forward reference that does not resolve, say
        raise TypeError(f"{where}: its type hints cannot be resolved: {exc}") from exc
    parameters: dict[str, tuple[_Type, bool]] = {}
    for parameter in signature.parameters.values():
        place = f"{where}, parameter {parameter.name!r},"
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            raise TypeError(
                f"{place} is {parameter.kind.description}: a tool is called with keyword "
                "arguments only, one per parameter"
            )
        if parameter.name not in hints:
            raise TypeError(f"{place} has no type annotation: the model needs its type")
        required = parameter.default is parameter.empty
        parameters[parameter.name] = (_translate(hints[parameter.name], place[:-1]), required)
    schema: dict[str, JSONValue] = {
        "type": "object",
        "properties": {name: kind.schema for name, (kind, _) in parameters.items()},
        "required": [name for name, (_, required) in parameters.items() if required],
        "additionalProperties": False,
    }
    return parameters, schema


@typing.overload
def tool(
    function: Callable[..., Any], /, *, name: str | None = ..., description: str | None = ...
) -> Tool: ...


@typing.overload
def tool(
    function: None = None, /, *, name: str | None = ..., description: str | None = ...
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Declare a function as a tool that a language model may call; usable as a decorator.

    ::

        @tool
        async def get_weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, float]:
            \"\"\"The current weather in a city.\"\"\"

        search_tool = tool(search, name="web_search", description="Search the web.")

    Plain functions given to an agent's ``tools=`` are made tools this way too: ``tool``
    is needed only to give another name or description. The JSON schema of the
    parameters comes from the type hints: ``str``, ``int``, ``float``, ``bool``, ``None``,
    ``list[X]`` (or ``list``), ``dict[str, X]`` (or ``dict``), ``Literal[...]`` of JSON
    scalars, and unions of these (``X | None``, ``Optional[X]``), nested as deep as you
    like. A parameter with a default value is not required.

    Args:
        function: A sync function (it runs in a worker thread, so it may block) or an
            async one (awaited), whose parameters are all annotated and can be passed by
            keyword.
        name: The name the model calls it by (default: the function's ``__name__``); 1
            to 64 letters, digits, ``_`` or ``-``.
        description: What it does, for the model (default: the first paragraph of the
            function's docstring).

    Raises:
        TypeError: a parameter without an annotation, or of a type a tool cannot take,
            or ``*args``, ``**kwargs``, or positional-only: at once, not when the model
            calls it.
        ValueError: a name the API would refuse (a lambda's ``<lambda>``, say).
    """
    if function is None:
        return functools.partial(Tool, name=name, description=description)
    return Tool(function, name=name, description=description)


def as_tool(value: Tool | Callable[..., Any]) -> Tool:
    """``value`` if it is a :class:`Tool`, else a tool made of the function."""
    return value if isinstance(value, Tool) else Tool(value)


def _bind(tool: Tool, given: object) -> dict[str, object]:
    if type(given) is not dict:
        raise _Invalid(f"they must be a JSON object, not {json.dumps(given)}")
    unknown = sorted(set(given) - set(tool._types))
    if unknown:
        raise _Invalid(f"no parameter named {', '.join(map(repr, unknown))}")
    missing = [
        name for name, (_, required) in tool._types.items() if required and name not in given
    ]
    if missing:
        raise _Invalid(f"missing {', '.join(map(repr, missing))}")
    return {name: tool._types[name][0].convert(value, name) for name, value in given.items()}


def unknown_tool(name: str, tools: Mapping[str, Tool]) -> str:
    """The error result for a call of a tool that does not exist."""
    offered = ", ".join(tools) or "none"
    return f"Error: there is no tool named {name!r} (the tools are: {offered})"


# -- what the agents of every API share: the recorded calls, running them ------------------


def is_result(message: Message, me: str) -> bool:
    """Whether ``message`` is the result of a tool call of ``me`` (its agent's alias)."""
    return message.sender == me and "tool_call_id" in message.metadata


def recorded_calls(message: Message) -> list[tuple[str, str, str]]:
    """The tool calls a message records, as ``(id, name, arguments)``, checked.

    Raises:
        ValueError: ``metadata["tool_calls"]`` is not as the agents write it.
    """
    recorded = message.metadata["tool_calls"]
    calls: list[tuple[str, str, str]] = []
    if isinstance(recorded, tuple):
        for call in recorded:
            if not isinstance(call, Mapping):
                break
            call_id, name, arguments = (call.get(key) for key in ("id", "name", "arguments"))
            if not (
                isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, str)
            ):
                break
            calls.append((call_id, name, arguments))
        else:
            return calls
    raise ValueError(
        f"message {message.hash[:12]} has metadata['tool_calls'] = {recorded!r}: expected "
        "a list of objects with the str keys 'id', 'name' and 'arguments'"
    )


def thaw(value: JSONValue) -> Any:
    """A frozen JSON value (tuples, FrozenDicts) as the plain one an SDK sends."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


async def run_tools(
    tools: Mapping[str, Tool], calls: list[tuple[str, str, str]], me: str
) -> list[Message]:
    """Run the tool calls concurrently; their results, as messages of ``me``, in the calls' order.

    Each result's metadata is ``tool_call_id``, ``tool`` and, for a failure, ``error: True``.
    """
    results: list[tuple[str, bool]] = [("", False)] * len(calls)

    async def run(index: int, name: str, arguments: str) -> None:
        tool = tools.get(name)
        if tool is None:
            results[index] = (unknown_tool(name, tools), True)
        else:
            results[index] = await tool.run(arguments)

    async with anyio.create_task_group() as group:
        for index, (_, name, arguments) in enumerate(calls):
            group.start_soon(run, index, name, arguments, name=f"tool {name}")
    # A result that came after the call was cancelled (a sync tool's thread runs to its
    # end) is not a result. AnyIO's task group raises the cancellation on its way out
    # on asyncio, but a Trio nursery whose children all returned exits quietly (Trio's
    # gh-1457): checking here makes both backends record the same tree.
    await anyio.lowlevel.checkpoint_if_cancelled()
    messages = []
    for (call_id, name, _), (content, error) in zip(calls, results, strict=True):
        metadata: dict[str, JSONValue] = {"tool_call_id": call_id, "tool": name}
        if error:
            metadata["error"] = True
        messages.append(Message(content=content, sender=me, metadata=metadata))
    return messages


__all__ = [
    "Tool",
    "as_tool",
    "is_result",
    "recorded_calls",
    "run_tools",
    "thaw",
    "tool",
    "unknown_tool",
]
