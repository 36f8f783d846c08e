"""Errors: agent failures as ErrorMessages, strict errors at exit, and every bad input."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

import anyio
import pytest

from agentforum import (
    Agent,
    AgentCall,
    AgentCancelled,
    AgentError,
    AgentForumError,
    ErrorMessage,
    Forum,
    ForumNotRunningError,
    InteractionContext,
    MemoryStore,
    Message,
    MessagePromise,
    MessageSequence,
    StoreError,
    StreamedMessage,
)

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

pytestmark = pytest.mark.anyio


class MyError(Exception):
    """An exception class defined outside the builtins."""

    class Nested(Exception):
        """An exception class nested in another class."""


class Stop(BaseException):
    """A BaseException that is not an Exception: it must never be swallowed."""


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc``, with every (nested) exception group flattened away."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def make_echo(forum: Forum) -> Agent:
    """Register an agent that answers each request with "re: <content>"."""

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for promise in ctx.request_messages:
            ctx.respond(f"re: {(await promise).content}")

    return echo


async def assert_forum_works(forum: Forum, echo: Agent) -> None:
    """A normal call of ``echo`` in the running ``forum`` succeeds."""
    messages = await echo.ask("still there?").messages()
    assert [m.content for m in messages] == ["re: still there?"]


async def drain(seq: MessageSequence) -> tuple[list[str], AgentError]:
    """Iterate a sequence that must fail: the contents before the error, and the error."""
    seen: list[str] = []

    async def consume() -> None:
        async for promise in seq:
            seen.append((await promise).content)  # noqa: PERF401 - kept when the error comes

    with pytest.raises(AgentError) as info:
        await consume()
    return seen, info.value


# -- an agent that raises -----------------------------------------------------------------------


async def test_agent_exception_ends_the_branch_with_an_error_message() -> None:
    """ValueError("boom") after two responses: ErrorMessage at the end, AgentError to consumers."""
    forum = Forum()
    raised: list[ValueError] = []

    @forum.agent
    async def failing(ctx: InteractionContext) -> None:
        ctx.respond("r1")
        ctx.respond("r2")
        exc = ValueError("boom")
        raised.append(exc)
        raise exc

    with anyio.fail_after(5):
        async with forum:
            seq = failing.ask("q")
            seen, error = await drain(seq)
            seen_again, error_again = await drain(seq)
            with pytest.raises(AgentError) as from_messages:
                await seq.messages()
            with pytest.raises(AgentError):
                await seq.last()
            with pytest.raises(AgentError):
                await seq.history()
            branch = await forum.history(error.message)
    assert seen == seen_again == ["r1", "r2"]
    message = error.message
    assert isinstance(message, ErrorMessage)
    assert message.error_type == "ValueError"
    assert message.content == "boom"
    assert message.sender == "failing"
    assert [m.content for m in branch] == ["q", "r1", "r2", "boom"]
    assert message.parent == branch[2].hash
    assert message.reply_to == branch[0].hash
    assert error.__cause__ is raised[0]
    assert error_again.__cause__ is raised[0]
    assert error is not error_again  # a fresh exception for every consumer
    assert from_messages.value.message == message
    assert isinstance(error, AgentForumError)
    assert "failing" in str(error)
    assert "ValueError: boom" in str(error)


async def test_agent_exception_before_any_response_is_the_only_response() -> None:
    """An agent raising before responding: the branch is the requests, the call, the error."""
    forum = Forum()

    @forum.agent
    async def failing(ctx: InteractionContext) -> None:
        raise RuntimeError

    with anyio.fail_after(5):
        async with forum:
            seq = failing.ask("q")
            seen, error = await drain(seq)
            branch = await forum.history(error.message, include_calls=True)
    assert seen == []
    assert error.message.error_type == "RuntimeError"
    assert error.message.content == ""
    assert str(error) == "agent 'failing' failed: RuntimeError"
    assert [type(m).__name__ for m in branch] == ["Message", "CallMessage", "ErrorMessage"]


async def test_custom_exception_type_is_named_module_and_qualname() -> None:
    """error_type of a non-builtin exception is "module.QualName"."""
    forum = Forum(strict_errors=False)

    @forum.agent
    async def failing(ctx: InteractionContext, nested: bool) -> None:
        raise MyError.Nested("deep") if nested else MyError("mine")

    with anyio.fail_after(5):
        async with forum:
            _, error = await drain(failing.ask("q", nested=False))
            _, nested_error = await drain(failing.ask("q", nested=True))
    assert error.message.error_type == f"{MyError.__module__}.MyError"
    assert error.message.error_type.endswith("test_errors.MyError")
    assert nested_error.message.error_type == f"{MyError.__module__}.MyError.Nested"
    assert isinstance(nested_error.__cause__, MyError.Nested)


async def test_an_inner_error_propagates_transparently_through_an_outer_agent() -> None:
    """Outer awaits a failing inner call: outer's ErrorMessage carries the inner type and text."""
    forum = Forum()

    @forum.agent
    async def inner(ctx: InteractionContext) -> None:
        raise MyError("inner broke")

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        ctx.respond("before")
        await inner.ask("sub").messages()
        ctx.respond("never")

    with anyio.fail_after(5):
        async with forum:
            seen, error = await drain(outer.ask("q"))
    assert seen == ["before"]
    assert error.message.sender == "outer"
    assert error.message.error_type == f"{MyError.__module__}.MyError"
    assert error.message.content == "inner broke"
    assert isinstance(error.__cause__, AgentError)
    assert error.__cause__.message.sender == "inner"
    assert isinstance(error.__cause__.__cause__, MyError)


async def test_responding_with_a_failing_sequence_fails_the_outer_call() -> None:
    """An outer agent responding with a failing inner sequence fails after the inner's messages."""
    forum = Forum()

    @forum.agent
    async def inner(ctx: InteractionContext) -> None:
        ctx.respond("partial")
        raise KeyError("missing")

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        ctx.respond(inner.ask("sub"))

    with anyio.fail_after(5):
        async with forum:
            seen, error = await drain(outer.ask("q"))
    assert seen == ["partial"]
    assert error.message.sender == "outer"
    assert error.message.error_type == "KeyError"
    assert error.message.content == "'missing'"


async def test_outer_agent_that_catches_the_inner_error_succeeds() -> None:
    """An outer agent that catches AgentError responds normally; no strict error at exit."""
    forum = Forum()

    @forum.agent
    async def inner(ctx: InteractionContext) -> None:
        raise ValueError("inner broke")

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        try:
            await inner.ask("sub").messages()
        except AgentError as exc:
            ctx.respond(f"handled {exc.message.error_type}")

    with anyio.fail_after(5):
        async with forum:
            messages = await outer.ask("q").messages()
    assert [m.content for m in messages] == ["handled ValueError"]


# -- strict errors ------------------------------------------------------------------------------


async def test_unobserved_error_is_raised_when_the_forum_exits() -> None:
    """strict_errors: an error nobody observed is raised at exit, in an ExceptionGroup."""
    forum = Forum()

    @forum.agent
    async def failing(ctx: InteractionContext) -> None:
        raise ValueError("unseen")

    def is_unseen(exc: AgentError) -> bool:
        return exc.message.content == "unseen" and isinstance(exc.__cause__, ValueError)

    with anyio.fail_after(5), pytest.RaisesGroup(pytest.RaisesExc(AgentError, check=is_unseen)):
        async with forum:
            failing.tell("q")
    assert not forum.is_running


async def test_only_the_unobserved_errors_are_raised_at_exit() -> None:
    """Of two failed calls, only the one nobody observed is in the group raised at exit."""
    forum = Forum()

    @forum.agent
    async def failing(ctx: InteractionContext, name: str) -> None:
        raise ValueError(name)

    def named(name: str) -> pytest.RaisesExc[AgentError]:
        return pytest.RaisesExc(AgentError, check=lambda exc: exc.message.content == name)

    with anyio.fail_after(5), pytest.RaisesGroup(named("told")):
        async with forum:
            failing.tell("q", name="told")
            await drain(failing.ask("q", name="asked"))


async def test_unobserved_error_of_a_nested_call_is_raised_at_exit() -> None:
    """An error of a call told by an agent, observed by nobody, is raised at exit too."""
    forum = Forum()

    @forum.agent
    async def inner(ctx: InteractionContext) -> None:
        raise ValueError("nested")

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        inner.tell("sub")
        ctx.respond("done")

    with anyio.fail_after(5), pytest.RaisesGroup(AgentError):
        async with forum:
            assert [m.content for m in await outer.ask("q").messages()] == ["done"]


async def test_without_strict_errors_the_error_is_only_recorded() -> None:
    """strict_errors=False: nothing raised at exit, the ErrorMessage is still in the store."""
    forum = Forum(strict_errors=False)
    echo = make_echo(forum)

    @forum.agent
    async def failing(ctx: InteractionContext) -> None:
        raise ValueError("quiet")

    with anyio.fail_after(5):
        async with forum:
            failing.tell("q")
            await assert_forum_works(forum, echo)
    (question,) = [m for m in await forum.store.children(None) if m.content == "q"]
    (call,) = await forum.store.children(question.hash)
    (error,) = await forum.store.children(call.hash)
    assert isinstance(error, ErrorMessage)
    assert (error.error_type, error.content, error.sender) == ("ValueError", "quiet", "failing")


async def test_error_consumed_by_the_body_is_not_raised_at_exit() -> None:
    """An error a consumer observed (messages() raised) is not raised again at exit."""
    forum = Forum()

    @forum.agent
    async def failing(ctx: InteractionContext) -> None:
        raise ValueError("seen")

    with anyio.fail_after(5):
        async with forum:
            with pytest.raises(AgentError):
                await failing.ask("q").messages()


async def test_awaiting_a_promise_that_was_never_placed_raises_and_observes_the_error() -> None:
    """A response that could not be placed: awaiting its promise raises AgentError (observed)."""
    forum = Forum()

    @forum.agent
    async def misplaced(ctx: InteractionContext) -> None:
        ctx.respond(StreamedMessage(["tok"]), reply_to="0" * 64)

    with anyio.fail_after(5):
        async with forum:
            seq = misplaced.ask("q")
            promise = await anext(aiter(seq))
            with pytest.raises(AgentError) as info:
                await promise
            assert not promise.is_resolved
            assert [token async for token in promise] == ["tok"]
    assert info.value.message.error_type == "agentforum.MessageNotFoundError"


async def test_a_base_exception_from_an_agent_is_not_swallowed() -> None:
    """A BaseException that is not an Exception, raised by an agent, leaves `async with forum`."""
    forum = Forum()
    echo = make_echo(forum)

    @forum.agent
    async def stopper(ctx: InteractionContext) -> None:
        raise Stop

    with anyio.fail_after(5), pytest.raises(BaseException) as info:  # noqa: PT011
        async with forum:
            stopper.tell("q")
    assert [type(exc) for exc in leaves(info.value)] == [Stop]
    assert not forum.is_running
    with anyio.fail_after(5):
        async with forum:
            await assert_forum_works(forum, echo)


async def test_a_base_exception_from_a_nested_agent_is_not_swallowed() -> None:
    """A BaseException raised by a nested call leaves the forum, past the agent awaiting it."""
    forum = Forum()

    @forum.agent
    async def inner(ctx: InteractionContext) -> None:
        raise Stop

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        try:
            await inner.ask("sub").messages()
        except AgentError:
            ctx.respond("must not be caught as an agent error")

    with anyio.fail_after(5), pytest.raises(BaseException) as info:  # noqa: PT011
        async with forum:
            await outer.ask("q").messages()
    assert Stop in [type(exc) for exc in leaves(info.value)]


# -- the forum's state --------------------------------------------------------------------------


async def test_calls_outside_the_forum_raise_forum_not_running() -> None:
    """ask/tell/start_asking before `async with forum:` and after it raise ForumNotRunningError."""
    forum = Forum()
    echo = make_echo(forum)
    calls = (
        lambda: echo.ask("q"),
        lambda: echo.tell("q"),
        lambda: echo.start_asking(),
    )
    for call in calls:
        with pytest.raises(ForumNotRunningError, match="async with forum:"):
            call()
    with anyio.fail_after(5):
        async with forum:
            await assert_forum_works(forum, echo)
    for call in calls:
        with pytest.raises(ForumNotRunningError, match="async with forum:") as info:
            call()
        assert isinstance(info.value, RuntimeError)
        assert isinstance(info.value, AgentForumError)
        assert "echo" in str(info.value)


async def test_forum_can_be_entered_again_after_it_exits() -> None:
    """A forum that exited can be entered again; the store keeps the earlier messages."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            first = await echo.ask("one").last()
        assert not forum.is_running
        async with forum:
            assert forum.is_running
            second = await echo.ask("two").last()
            assert await forum.get(first.hash) == first
    assert await forum.get(second.hash) == second


async def test_entering_a_running_forum_is_a_runtime_error() -> None:
    """Entering a forum while it runs raises RuntimeError; the running forum is unaffected."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            with pytest.raises(RuntimeError, match="running"):
                await forum.__aenter__()

            async def enter_from_another_task() -> None:
                with pytest.raises(RuntimeError, match="running"):
                    async with forum:
                        pass  # pragma: no cover

            async with anyio.create_task_group() as group:
                group.start_soon(enter_from_another_task)
            assert forum.is_running
            await assert_forum_works(forum, echo)
    assert not forum.is_running


# -- bad inputs, each with a clear error; the forum keeps working -------------------------------


@pytest.mark.parametrize(
    ("content", "type_name"),
    [
        pytest.param(123, "int", id="int"),
        pytest.param(["ok", 1.5], "float", id="float-in-list"),
        pytest.param(b"x", "bytes", id="bytes"),
        pytest.param(bytearray(b"x"), "bytearray", id="bytearray"),
        pytest.param({"a": 1}, "dict", id="dict"),
        pytest.param([["nested", object()]], "object", id="nested-object"),
    ],
)
async def test_ask_with_content_of_a_wrong_type_is_a_type_error(
    content: object, type_name: str
) -> None:
    """ask() with content that is not message content raises TypeError naming the type."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            with pytest.raises(TypeError, match=type_name):
                echo.ask(content)
            with pytest.raises(TypeError, match=type_name):
                echo.tell(content)
            await assert_forum_works(forum, echo)


async def test_a_refused_ask_leaves_no_call_behind() -> None:
    """A call refused for its content adds nothing to the store and doesn't block the exit."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            with pytest.raises(TypeError):
                echo.ask(["fine", 3])
    assert await forum.store.children(None) == []


async def test_ask_without_content_makes_a_call_without_requests() -> None:
    """ask() and ask(None) (and tell()) make a call with no request: the CallMessage is a root."""
    forum = Forum()

    @forum.agent
    async def greeter(ctx: InteractionContext) -> None:
        assert await ctx.request_messages.messages() == []
        ctx.respond("hello")

    with anyio.fail_after(5):
        async with forum:
            first = await greeter.ask().history(include_calls=True)
            second = await greeter.ask(None).history(include_calls=True)
            greeter.tell()
    assert first == second
    call, response = first
    assert call.parent is None
    assert response.content == "hello"
    assert response.reply_to is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"x": {1, 2}}, TypeError, r"kwargs\['x'\]", id="set"),
        pytest.param(
            {"x": [1, {"y": object()}]}, TypeError, r"kwargs\['x'\]\[1\]\['y'\]", id="deep"
        ),
        pytest.param({"x": {1: "a"}}, TypeError, r"kwargs\['x'\]", id="int-key"),
        pytest.param({"x": math.nan}, ValueError, r"kwargs\['x'\]", id="nan"),
        pytest.param({"x": [math.inf]}, ValueError, r"kwargs\['x'\]\[0\]", id="inf"),
        pytest.param({"x": "\ud800"}, ValueError, r"kwargs\['x'\]", id="surrogate"),
    ],
)
async def test_kwargs_that_are_not_json_are_refused(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """Call kwargs that JSON cannot hold raise at once, naming the key path."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            with pytest.raises(error, match=match):
                echo.ask("q", **kwargs)  # type: ignore[arg-type]
            with pytest.raises(error, match=match):
                echo.start_asking(**kwargs)  # type: ignore[arg-type]
            await assert_forum_works(forum, echo)
    assert len(await forum.store.children(None)) == 1


async def test_respond_refuses_wrong_content_and_metadata_inside_the_agent() -> None:
    """respond(None), respond(3) and respond with non-JSON metadata raise TypeError in the agent."""
    forum = Forum()
    echo = make_echo(forum)

    def attempt(ctx: InteractionContext, content: object, **metadata: object) -> str:
        try:
            ctx.respond(content, **metadata)  # type: ignore[arg-type]
        except TypeError as exc:
            return f"caught TypeError: {exc}"
        return "accepted"

    @forum.agent
    async def careless(ctx: InteractionContext) -> None:
        ctx.respond(attempt(ctx, None))
        ctx.respond(attempt(ctx, 3))
        ctx.respond(attempt(ctx, ["fine", b"raw"]))
        ctx.respond(attempt(ctx, "text", bad=object()))
        ctx.respond(attempt(ctx, "text", bad={"k": {1, 2}}))

    with anyio.fail_after(5):
        async with forum:
            messages = await careless.ask("q").messages()
            await assert_forum_works(forum, echo)
    texts = [m.content for m in messages]
    assert all(text.startswith("caught TypeError") for text in texts)
    assert "None" in texts[0]
    assert "int" in texts[1]
    assert "bytes" in texts[2]
    assert "metadata['bad']" in texts[3]
    assert "metadata['bad']['k']" in texts[4]


async def test_respond_after_the_agent_returned_is_a_closed_resource_error() -> None:
    """respond() on a context whose agent function returned raises anyio.ClosedResourceError."""
    forum = Forum()
    echo = make_echo(forum)
    stashed: list[InteractionContext] = []

    @forum.agent
    async def quick(ctx: InteractionContext) -> None:
        stashed.append(ctx)
        ctx.respond("only")

    with anyio.fail_after(5):
        async with forum:
            messages = await quick.ask("q").messages()
            with pytest.raises(anyio.ClosedResourceError, match="returned"):
                stashed[0].respond("late")
            await assert_forum_works(forum, echo)
    with pytest.raises(anyio.ClosedResourceError):
        stashed[0].respond("later still")
    assert [m.content for m in messages] == ["only"]


async def test_send_request_after_response_sequence_is_a_closed_resource_error() -> None:
    """send_request() after response_sequence() closed the requests raises ClosedResourceError."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            call = echo.start_asking()
            call.send_request("one")
            seq = call.response_sequence()
            with pytest.raises(anyio.ClosedResourceError, match="response_sequence"):
                call.send_request("two")
            assert [m.content for m in await seq.messages()] == ["re: one"]
            await assert_forum_works(forum, echo)


async def test_send_request_of_a_wrong_type_is_a_type_error_and_the_call_goes_on() -> None:
    """send_request(3) raises TypeError; the call keeps its other requests."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            call = echo.start_asking()
            call.send_request("one")
            with pytest.raises(TypeError, match="int"):
                call.send_request(3)
            with pytest.raises(TypeError, match="float"):
                call.send_request(["two", 2.0])
            call.send_request("three")
            messages = await call.response_sequence().messages()
    assert [m.content for m in messages] == ["re: one", "re: three"]


@pytest.mark.parametrize("point", [123, 1.5, b"ab" * 32, ["x"]])
async def test_branch_from_of_a_wrong_type_is_a_type_error(point: object) -> None:
    """branch_from= something that is not a message, promise or hash raises TypeError at once."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            with pytest.raises(TypeError, match="branch_from"):
                echo.ask("q", branch_from=point)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="branch_from"):
                echo.start_asking(branch_from=point)  # type: ignore[arg-type]
            await assert_forum_works(forum, echo)


@pytest.mark.parametrize("point", ["xyz", "abc", "ABCDEF", "g" * 64, ""])
async def test_branch_from_a_malformed_hash_is_a_value_error(point: str) -> None:
    """branch_from= a string that cannot be a hash prefix raises ValueError at once."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            with pytest.raises(ValueError, match="hex"):
                echo.ask("q", branch_from=point)
            await assert_forum_works(forum, echo)


async def test_branch_from_an_unknown_hash_ends_the_branch_with_an_error() -> None:
    """branch_from= a well-formed prefix that matches nothing: MessageNotFoundError ErrorMessage."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            marker = await echo.ask("marker").last()
            unknown = "0123456789abcdef" if not marker.hash.startswith("012345") else "fedcba"
            seen, error = await drain(echo.ask("q", branch_from=unknown))
            await assert_forum_works(forum, echo)
    assert seen == []
    assert error.message.error_type == "agentforum.MessageNotFoundError"
    assert unknown in error.message.content


async def test_branch_from_with_blank_history_is_a_value_error() -> None:
    """branch_from and blank_history=True together raise ValueError at once."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            base = await echo.ask("base").last()
            with pytest.raises(ValueError, match="blank_history"):
                echo.ask("q", branch_from=base, blank_history=True)
            with pytest.raises(ValueError, match="blank_history"):
                echo.start_asking(branch_from=base.hash, blank_history=True)
            await assert_forum_works(forum, echo)


async def test_reply_to_an_unknown_hash_ends_the_branch_with_an_error() -> None:
    """respond(reply_to=<well-formed hash not stored>) ends the branch with an ErrorMessage."""
    forum = Forum()
    echo = make_echo(forum)

    @forum.agent
    async def replier(ctx: InteractionContext) -> None:
        ctx.respond("x", reply_to="0" * 64)

    with anyio.fail_after(5):
        async with forum:
            seen, error = await drain(replier.ask("q"))
            await assert_forum_works(forum, echo)
    assert seen == []
    assert error.message.error_type == "agentforum.MessageNotFoundError"


async def test_wrong_item_in_an_async_iterable_of_requests_ends_the_branch() -> None:
    """An int yielded by an async iterable of requests: the branch ends with a TypeError."""
    forum = Forum()
    echo = make_echo(forum)

    async def requests() -> AsyncIterator[object]:
        yield "fine"
        yield 42

    with anyio.fail_after(5):
        async with forum:
            seq = echo.ask(requests())
            seen, error = await drain(seq)
            branch = await forum.history(error.message, include_calls=True)
            await assert_forum_works(forum, echo)
    assert seen == []
    assert error.message.error_type == "TypeError"
    assert "int" in error.message.content
    assert [m.content for m in branch] == ["fine", error.message.content]


async def test_wrong_item_in_an_async_iterable_of_responses_ends_the_branch() -> None:
    """An async iterable given to respond() that yields a dict ends the branch with a TypeError."""
    forum = Forum()

    async def responses() -> AsyncIterator[object]:
        yield "fine"
        yield ["also fine", {"not": "content"}]

    @forum.agent
    async def streaming(ctx: InteractionContext) -> None:
        ctx.respond(responses())

    with anyio.fail_after(5):
        async with forum:
            seen, error = await drain(streaming.ask("q"))
    assert seen == ["fine"]
    assert error.message.error_type == "TypeError"
    assert "dict" in error.message.content


async def test_agent_function_must_be_async() -> None:
    """@forum.agent on a plain function, a lambda or an async generator raises TypeError."""
    forum = Forum()

    def plain(ctx: InteractionContext) -> None:
        pass  # pragma: no cover

    async def generator(ctx: InteractionContext) -> AsyncIterator[str]:
        yield "x"  # pragma: no cover

    for function in (plain, lambda ctx: None, generator):
        with pytest.raises(TypeError, match="async def"):
            forum.agent(function)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="async def"):
            forum.agent(alias="named")(function)  # type: ignore[arg-type]


async def test_agent_aliases_must_be_unique_and_non_empty() -> None:
    """A duplicate or empty alias raises ValueError; the first agent keeps the alias."""
    forum = Forum()
    echo = make_echo(forum)

    async def other(ctx: InteractionContext) -> None:
        ctx.respond("other")  # pragma: no cover

    with pytest.raises(ValueError, match="echo"):
        forum.agent(alias="echo")(other)
    with pytest.raises(ValueError, match="non-empty"):
        forum.agent(alias="")(other)
    with anyio.fail_after(5):
        async with forum:
            await assert_forum_works(forum, echo)
    # another forum may use the same alias
    assert make_echo(Forum()).alias == "echo"


@pytest.mark.parametrize("store", [42, b"bytes are not a path", object(), {}])
def test_forum_store_must_be_a_message_store(store: object) -> None:
    """Forum(store=42) (or any object that is not a MessageStore) raises TypeError."""
    with pytest.raises(TypeError, match="MessageStore"):
        Forum(store=store)  # type: ignore[arg-type]


async def test_agent_call_is_closed_by_the_forum_even_after_a_failure() -> None:
    """A start_asking call whose agent fails before reading: consumers get the error, no hang."""
    forum = Forum()

    @forum.agent
    async def impatient(ctx: InteractionContext) -> None:
        raise ValueError("no patience")

    with anyio.fail_after(5):
        async with forum:
            call: AgentCall = impatient.start_asking()
            call.send_request("one")
            _, error = await drain(call.response_sequence())
    assert error.message.content == "no patience"


async def test_send_request_to_a_call_that_already_failed_does_not_hang() -> None:
    """send_request() to a call that ended in an error: dropped or refused; the error surfaces."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            marker = await echo.ask("marker").last()
            unknown = "0123456789abcdef" if not marker.hash.startswith("012345") else "fedcba"
            call = echo.start_asking(branch_from=unknown)
            await anyio.wait_all_tasks_blocked()
            try:
                call.send_request("late")
            except anyio.ClosedResourceError:
                pass  # refusing is as good as dropping: the call is over
            seen, error = await drain(call.response_sequence())
    assert seen == []
    assert error.message.error_type == "agentforum.MessageNotFoundError"


async def test_requests_from_a_failing_sequence_fail_the_call_transparently() -> None:
    """Asking with a failing call's responses as requests: the branch ends with the inner error."""
    forum = Forum()
    echo = make_echo(forum)

    @forum.agent
    async def failing(ctx: InteractionContext) -> None:
        ctx.respond("partial")
        raise MyError("upstream")

    with anyio.fail_after(5):
        async with forum:
            _, error = await drain(echo.ask(failing.ask("q")))
    assert error.message.sender == "echo"
    assert error.message.error_type == f"{MyError.__module__}.MyError"
    assert error.message.content == "upstream"


async def test_calls_stopped_by_a_base_exception_fail_their_consumers() -> None:
    """After a BaseException tears the forum down, consumers get AgentCancelled, no hang.

    The message cut mid-stream is recorded with the tokens it had, marked incomplete.
    """
    forum = Forum()
    streaming = anyio.Event()

    @forum.agent
    async def talker(ctx: InteractionContext) -> None:
        streamed = StreamedMessage()
        ctx.respond(streamed)
        async with streamed:
            await streamed.send("a")
            streaming.set()
            await anyio.sleep_forever()

    @forum.agent
    async def stopper(ctx: InteractionContext) -> None:
        await streaming.wait()
        raise Stop

    seqs: list[MessageSequence] = []

    async def run_forum() -> None:
        async with forum:
            seqs.append(talker.ask("q"))
            stopper.tell("q")

    with anyio.fail_after(5), pytest.raises(BaseException) as info:  # noqa: PT011
        await run_forum()
    seq = seqs[0]
    assert Stop in [type(exc) for exc in leaves(info.value)]
    with anyio.fail_after(5):
        promises, error = await drain_promises(seq)
        (promise,) = promises
        assert [token async for token in promise] == ["a"]
        cut = await promise
    assert (cut.content, dict(cut.metadata)) == ("a", {"incomplete": True})
    assert isinstance(error, AgentCancelled)
    assert error.message.error_type == "agentforum.AgentCancelled"
    assert error.message.sender == "talker"
    assert error.message.parent == cut.hash


async def drain_promises(seq: MessageSequence) -> tuple[list[MessagePromise], AgentError]:
    """Iterate a sequence that must fail: the promises before the error, and the error."""
    promises: list[MessagePromise] = []

    async def consume() -> None:
        async for promise in seq:
            promises.append(promise)  # noqa: PERF401 - kept when the error comes

    with pytest.raises(AgentError) as info:
        await consume()
    return promises, info.value


async def test_an_async_iterable_of_responses_that_raises_ends_the_branch() -> None:
    """An async generator given to respond() that raises: its error ends the branch."""
    forum = Forum()

    async def responses() -> AsyncIterator[str]:
        yield "first"
        raise MyError("generator broke")

    @forum.agent
    async def streaming(ctx: InteractionContext) -> None:
        ctx.respond(responses())

    with anyio.fail_after(5):
        async with forum:
            seen, error = await drain(streaming.ask("q"))
    assert seen == ["first"]
    assert error.message.error_type == f"{MyError.__module__}.MyError"
    assert isinstance(error.__cause__, MyError)


async def test_kwargs_the_agent_function_does_not_take_fail_the_call() -> None:
    """A keyword argument the agent function does not accept ends the branch with a TypeError."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            seen, error = await drain(echo.ask("q", unexpected=1))
            await assert_forum_works(forum, echo)
    assert seen == []
    assert error.message.error_type == "TypeError"
    assert "unexpected" in error.message.content


async def test_a_forum_that_raised_strict_errors_starts_clean_when_entered_again() -> None:
    """After exiting with unobserved errors, entering again does not raise them a second time."""
    forum = Forum()
    echo = make_echo(forum)

    @forum.agent
    async def failing(ctx: InteractionContext) -> None:
        raise ValueError("once")

    with anyio.fail_after(5), pytest.RaisesGroup(AgentError):
        async with forum:
            failing.tell("q")
    with anyio.fail_after(5):
        async with forum:
            await assert_forum_works(forum, echo)


# -- a store that fails once the answer is out --------------------------------------------------


class FailingLate(MemoryStore):
    """A store that fails (as a full disk would) to record a cache entry, or, with
    ``cancellations``, to store the ErrorMessage that ends a cancelled call."""

    def __init__(self, *, cancellations: bool = False) -> None:
        super().__init__()
        self.cancellations = cancellations

    async def put_cached(self, call_hash: str, response_hashes: Sequence[str]) -> None:
        raise StoreError("the disk is full")

    async def put(self, message: Message) -> None:
        await self.put_many((message,))

    async def put_many(self, messages: Iterable[Message]) -> None:
        batch = list(messages)
        if self.cancellations and any(
            isinstance(one, ErrorMessage) and one.error_type == "agentforum.AgentCancelled"
            for one in batch
        ):
            raise StoreError("the disk is full")
        for message in batch:
            await super().put(message)


async def test_a_cache_entry_the_store_fails_to_record_is_raised_as_the_store_error() -> None:
    """The store fails after a call's answer has resolved, as the call records its cache
    entry: the consumer has its answer, and leaving the forum raises the StoreError itself,
    not a task group's ExceptionGroup (the error escaped the call's task before)."""
    forum = Forum(FailingLate())
    release = anyio.Event()

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")
        await release.wait()

    async def run() -> None:
        async with forum:
            async for promise in echo.ask("hello"):
                assert (await promise).content == "re: hello"
                break
            release.set()

    with pytest.raises(StoreError, match="the disk is full"):
        await run()


async def test_a_cancellation_the_store_fails_to_record_ends_the_call_all_the_same() -> None:
    """The store fails to store the ErrorMessage of a cancelled call: its consumer still
    gets AgentCancelled, and leaving the forum raises the StoreError."""
    forum = Forum(FailingLate(cancellations=True))

    @forum.agent
    async def stuck(ctx: InteractionContext) -> None:
        ctx.respond("working")
        await anyio.sleep_forever()

    async def run() -> None:
        async with forum:
            sequence = stuck.ask("hello")
            async for promise in sequence:
                assert (await promise).content == "working"
                break
            sequence.cancel()
            with pytest.raises(AgentCancelled):
                await sequence.last()

    with pytest.raises(StoreError, match="the disk is full"):
        await run()
