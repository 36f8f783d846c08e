"""agentforum.testing tests itself: strategies, ScriptedModel, assert_stateless, its surface."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import hypothesis
import pytest
from anyio.lowlevel import checkpoint
from hypothesis import given, settings
from hypothesis import strategies as st

import agentforum.testing
from agentforum import (
    AgentError,
    CallMessage,
    ErrorMessage,
    Forum,
    ForwardedMessage,
    InteractionContext,
    MemoryStore,
    Message,
    MessagePromise,
    MessageStore,
    SQLiteStore,
    decode_message,
    encode_message,
)
from agentforum.testing import (
    ScriptedCall,
    ScriptedModel,
    assert_stateless,
    contents,
    conversations,
    messages,
    metadata,
    requests,
)

if TYPE_CHECKING:
    from collections.abc import Callable

KINDS = [Message, ForwardedMessage, CallMessage, ErrorMessage]


def links_of(message: Message) -> list[str]:
    found = [link for link in (message.parent, message.reply_to) if link is not None]
    if isinstance(message, ForwardedMessage):
        found.append(message.original)
    return found


def flatten(request: object) -> list[str | Message]:
    if isinstance(request, (str, Message)):
        return [request]
    assert isinstance(request, list)
    return [item for part in request for item in flatten(part)]


# -- strategies: they only produce valid objects --------------------------------------------


@given(contents())
def test_contents_are_text_a_message_holds(text: str) -> None:
    """Every drawn content builds a message that encodes to UTF-8 and decodes back equal."""
    message = Message(content=text, sender="user")
    assert decode_message(encode_message(message), text) == message
    assert decode_message(encode_message(message), text).content == text


@given(metadata())
def test_metadata_is_accepted_as_metadata_and_kwargs(value: dict[str, object]) -> None:
    """Drawn metadata is valid JSON for both metadata and call kwargs, and round-trips."""
    message = Message(content="", sender="user", metadata=value)
    call = CallMessage(receiver="agent", kwargs=value)
    assert decode_message(encode_message(message), "") == message
    assert decode_message(encode_message(call)) == call
    as_json = json.loads(json.dumps(value))
    assert json.loads(encode_message(message))["metadata"] == as_json
    assert json.loads(encode_message(call))["kwargs"] == as_json


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
@given(data=st.data())
def test_messages_draws_valid_messages_of_each_kind(
    kind: type[Message], data: st.DataObject
) -> None:
    """messages(kinds=[K]) draws K instances that encode, decode and hash consistently."""
    message = data.draw(messages(kinds=[kind]))
    assert type(message) is kind
    content = None if kind is CallMessage else message.content
    decoded = decode_message(encode_message(message), content)
    assert type(decoded) is kind
    assert decoded.hash == message.hash


@given(messages(links=st.just("ab" * 32)))
def test_messages_take_their_links_from_the_given_strategy(message: Message) -> None:
    """With ``links=``, every parent, reply_to and original is drawn from that strategy."""
    assert set(links_of(message)) <= {"ab" * 32}


def test_messages_draws_every_kind_by_default() -> None:
    """The default messages() strategy reaches all four kinds."""
    for kind in KINDS:
        hypothesis.find(messages(), lambda message, kind=kind: type(message) is kind)


@given(conversations())
def test_conversations_are_trees_in_parent_first_order(tree: list[Message]) -> None:
    """Messages are distinct; every link names an earlier one; forwards point at originals."""
    assert tree
    seen: dict[str, Message] = {}
    for message in tree:
        assert message.hash not in seen
        assert all(link in seen for link in links_of(message))
        if isinstance(message, ForwardedMessage):
            original = seen[message.original]
            assert not isinstance(original, (ForwardedMessage, CallMessage))
            assert message.content == original.content
        seen[message.hash] = message


def reach(strategy: Any, condition: Callable[[Any], bool]) -> Any:
    """An example of ``strategy`` for which ``condition`` holds, as drawn: not shrunk.

    ``hypothesis.find`` shrinks what it finds to a minimal example, which for trees of
    messages took up to 25 seconds: these tests only need to know that one exists.
    """
    return hypothesis.find(
        strategy,
        condition,
        settings=hypothesis.settings(
            phases=[hypothesis.Phase.generate], max_examples=2000, database=None
        ),
    )


@pytest.mark.parametrize(
    ("shape", "holds"),
    [
        ("several roots", lambda tree: sum(m.parent is None for m in tree) >= 2),
        ("a branch of 4", lambda tree: len(tree) >= 4 and tree[3].parent == tree[2].hash),
        ("siblings", lambda tree: len({m.parent for m in tree}) < len(tree)),
        ("a forward", lambda tree: any(isinstance(m, ForwardedMessage) for m in tree)),
        (
            "a call with kwargs",
            lambda tree: any(isinstance(m, CallMessage) and m.kwargs for m in tree),
        ),
        ("an error", lambda tree: any(isinstance(m, ErrorMessage) for m in tree)),
        ("a reply_to", lambda tree: any(m.reply_to is not None for m in tree)),
    ],
)
def test_conversations_reach_every_shape(
    shape: str, holds: Callable[[list[Message]], bool]
) -> None:
    """conversations() draws trees with each feature the forum writes."""
    reach(conversations(), holds)


def test_conversations_respect_kinds_and_sizes() -> None:
    """kinds and sizes are honoured, and the sizes are exact even when drawings repeat."""
    reach(
        conversations(kinds=[Message], min_size=5, max_size=5),
        lambda tree: len(tree) == 5 and all(type(m) is Message for m in tree),
    )
    # Only empty drawings: each repeated message goes one level below its double.
    tree = hypothesis.find(conversations(kinds=[CallMessage], min_size=3, max_size=3), bool)
    assert [m.parent for m in tree] == [None, tree[0].hash, tree[1].hash]


@pytest.mark.parametrize(
    ("strategy", "error"),
    [
        (lambda: messages(kinds=[]), "at least one"),
        (lambda: messages(kinds=[str]), "must be among"),
        (lambda: conversations(min_size=3, max_size=2), "min_size"),
        (lambda: conversations(kinds=[ForwardedMessage]), "earlier Message or ErrorMessage"),
    ],
)
def test_strategies_reject_bad_arguments(strategy: Callable[[], Any], error: str) -> None:
    """Bad kinds and sizes raise ValueError when drawn from."""
    with pytest.raises(ValueError, match=error):
        hypothesis.find(strategy(), lambda _: True)


async def store_all(store: MessageStore, tree: list[Message]) -> None:
    for message in tree:
        await store.put(message)


@pytest.mark.anyio
@settings(max_examples=30)
@given(tree=conversations())
async def test_conversations_pass_verify_in_every_store(tree: list[Message]) -> None:
    """A drawn tree stores (message by message, or in one batch) and verify() finds nothing."""
    one_by_one = MemoryStore()
    await store_all(one_by_one, tree)
    assert await one_by_one.verify() == []
    batch = MemoryStore()
    await batch.put_many(list(reversed(tree)))
    assert await batch.verify() == []
    with tempfile.TemporaryDirectory() as directory:
        sqlite = SQLiteStore(Path(directory) / "tree.db")
        try:
            await store_all(sqlite, tree)
            assert await sqlite.verify() == []
            for message in tree:
                assert await sqlite.get(message.hash) == message
        finally:
            await sqlite.aclose()


@pytest.mark.anyio
@settings(max_examples=40)
@given(request=requests())
async def test_requests_are_placed_by_a_fresh_forum(request: object) -> None:
    """Any drawn request is accepted by ask(); each item becomes one request, in order."""
    forum = Forum()

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for promise in ctx.request_messages:
            ctx.respond((await promise).content)

    items = flatten(request)
    async with forum:
        responses = await echo.ask(request).messages()
        assert [m.content for m in responses] == [
            item if isinstance(item, str) else item.content for item in items
        ]
        placed = (await forum.history(responses[-1]))[: len(items)] if items else []
        for item, message in zip(items, placed, strict=True):
            if isinstance(item, Message):
                original = item.original if isinstance(item, ForwardedMessage) else item.hash
                assert message == item or getattr(message, "original", None) == original
        assert await forum.store.verify() == []


def test_requests_reach_every_shape() -> None:
    """requests() draws strings, single messages, lists mixing both, and nested lists."""
    hypothesis.find(requests(), lambda request: isinstance(request, str))
    hypothesis.find(requests(), lambda request: isinstance(request, Message))
    hypothesis.find(requests(), lambda request: request == [])
    hypothesis.find(
        requests(),
        lambda r: (
            isinstance(r, list)
            and any(isinstance(i, list) for i in r)
            and any(isinstance(i, Message) for i in flatten(r))
            and any(isinstance(i, str) for i in flatten(r))
        ),
    )


# -- ScriptedModel ------------------------------------------------------------------------


async def tokens_of(promise: MessagePromise) -> list[str]:
    return [token async for token in promise]


def test_scripted_model_is_an_agent_function() -> None:
    """A ScriptedModel passes @forum.agent's check; its alias defaults to "model"."""
    forum = Forum()
    model = forum.agent(ScriptedModel("hi"))
    assert model.alias == "model"
    assert model.description == "A scripted stand-in for a language model."
    assert inspect.iscoroutinefunction(type(model.function).__call__)
    assert forum.agent(ScriptedModel("hi"), alias="other").alias == "other"
    assert repr(ScriptedModel("x")) == "<ScriptedModel, 0 calls>"


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"replies": 3}, TypeError),
        ({"replies": ["a", 1]}, TypeError),
        ({"replies": "a", "chunk": "lines"}, ValueError),
        ({"replies": "a", "chunk": 0}, ValueError),
        ({"replies": "a", "chunk": True}, ValueError),
        ({"replies": "a", "delay": -1}, ValueError),
        ({"replies": "a", "delay": float("nan")}, ValueError),
        ({"replies": "a", "fail_at": -1}, ValueError),
        ({"replies": "a", "hang_at": (0,)}, ValueError),
        ({"replies": "a", "hang_at": (0, True)}, ValueError),
        ({"replies": "a", "fail_at": "0"}, ValueError),
    ],
)
def test_scripted_model_rejects_bad_arguments(
    arguments: dict[str, Any], error: type[Exception]
) -> None:
    """Replies of the wrong type, an unknown chunking, a negative delay or point raise."""
    with pytest.raises(error):
        ScriptedModel(**arguments)


@pytest.mark.anyio
async def test_scripted_model_replies_in_order_and_records_each_call() -> None:
    """Reply i answers call i; calls, requests, history and kwargs are recorded."""
    forum = Forum()
    model = forum.agent(ScriptedModel(["first answer", "second answer"]))
    async with forum:
        first = await model.ask(["Hello", "there"], temperature=0.5).last()
        second = await model.ask("Again", branch_from=first).last()
    assert [first.content, second.content] == ["first answer", "second answer"]
    script = model.function
    assert isinstance(script, ScriptedModel)
    assert script.requests == [["Hello", "there"], ["Again"]]
    assert [call.index for call in script.calls] == [0, 1]
    assert script.calls[0].kwargs == {"temperature": 0.5}
    assert [m.content for m in script.calls[1].history] == [
        "Hello",
        "there",
        "first answer",
        "Again",
    ]
    assert isinstance(script.calls[0], ScriptedCall)
    assert repr(script) == "<ScriptedModel, 2 calls>"


@pytest.mark.anyio
async def test_scripted_model_without_requests_sees_empty_history() -> None:
    """A call without requests gets history []; a str script answers every call the same."""
    forum = Forum()
    model = forum.agent(ScriptedModel("same"))
    async with forum:
        answers = [await model.ask().last(), await model.ask("x").last()]
    assert [m.content for m in answers] == ["same", "same"]
    assert isinstance(model.function, ScriptedModel)
    assert model.function.calls[0].history == ()


@pytest.mark.anyio
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_scripted_model_reply_function_gets_the_history(asynchronous: bool) -> None:
    """A replies function (or coroutine function) gets the branch up to the last request."""
    seen: list[list[str]] = []

    def reply(history: list[Message]) -> str:
        seen.append([m.content for m in history])
        return f"{len(history)} messages"

    async def reply_later(history: list[Message]) -> str:
        await checkpoint()
        return reply(history)

    forum = Forum()
    model = forum.agent(ScriptedModel(reply_later if asynchronous else reply))

    @forum.agent
    async def wrapper(ctx: InteractionContext) -> None:
        ctx.respond(model.ask("inner question"))

    async with forum:
        answer = await wrapper.ask("outer question").last()
    assert answer.content == "2 messages"
    assert seen == [["outer question", "inner question"]]


@pytest.mark.anyio
async def test_scripted_model_rejects_a_reply_that_is_not_text() -> None:
    """A replies function returning something else than a str fails the call."""
    forum = Forum()
    model = forum.agent(ScriptedModel(lambda history: 42))  # type: ignore[arg-type,return-value]
    async with forum:
        with pytest.raises(AgentError, match="must return a str"):
            await model.ask("x").last()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        ("words", ["Hello,", " streaming", "  world", " \n"]),
        ("characters", list("Hello, streaming  world \n")),
        (4, ["Hell", "o, s", "trea", "ming", "  wo", "rld ", "\n"]),
    ],
)
async def test_scripted_model_streams_its_reply_in_chunks(chunk: Any, expected: list[str]) -> None:
    """The reply streams as tokens cut by words, characters or fixed sizes; joined, it is whole."""
    reply = "Hello, streaming  world \n"
    forum = Forum()
    model = forum.agent(ScriptedModel(reply, chunk=chunk))
    async with forum:
        seq = model.ask("go")
        promises = [promise async for promise in seq]
        assert len(promises) == 1
        assert await tokens_of(promises[0]) == expected
        assert (await promises[0]).content == reply


@pytest.mark.anyio
async def test_scripted_model_empty_reply_is_an_empty_message() -> None:
    """An empty reply is one message with no tokens."""
    forum = Forum()
    model = forum.agent(ScriptedModel(""))
    async with forum:
        [promise] = [promise async for promise in model.ask("go")]
        assert await tokens_of(promise) == []
        assert (await promise).content == ""


@pytest.mark.anyio
async def test_scripted_model_sleeps_before_each_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """With delay=d, the model awaits anyio.sleep(d) once before each token."""
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        await checkpoint()

    monkeypatch.setattr(anyio, "sleep", sleep)
    forum = Forum()
    model = forum.agent(ScriptedModel("one two three", delay=0.25))
    async with forum:
        await model.ask("go").last()
    assert slept == [0.25, 0.25, 0.25]


@pytest.mark.anyio
async def test_scripted_model_runs_out_of_replies() -> None:
    """A call past the last reply of a list fails with IndexError."""
    forum = Forum()
    model = forum.agent(ScriptedModel(["only one"]))
    async with forum:
        await model.ask("a").last()
        with pytest.raises(AgentError) as info:
            await model.ask("b").last()
    assert isinstance(info.value.__cause__, IndexError)
    assert "call 1 has none" in str(info.value)


class ModelDown(Exception):
    pass


@pytest.mark.anyio
async def test_scripted_model_fails_at_the_given_call() -> None:
    """fail_at=n: call n raises the given error before responding; other calls answer."""
    forum = Forum()
    error = ModelDown("the model is down")
    model = forum.agent(ScriptedModel(["a", "b", "c"], fail_at=1, error=error))
    async with forum:
        assert (await model.ask("0").last()).content == "a"
        with pytest.raises(AgentError) as info:
            await model.ask("1").messages()
        assert (await model.ask("2").last()).content == "c"
        branch = await forum.history(info.value.message, include_calls=True)
    assert info.value.__cause__ is error
    assert [type(m) for m in branch] == [Message, CallMessage, ErrorMessage]
    assert info.value.message.error_type == "test_testing.ModelDown"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("token", "content"),
    [(0, ""), (2, "one two"), (3, "one two three"), (99, "one two three")],
)
async def test_scripted_model_fails_at_the_given_token(token: int, content: str) -> None:
    """fail_at=(n, t): the message streams t tokens, is recorded incomplete, then the error."""
    forum = Forum()
    model = forum.agent(ScriptedModel("one two three", fail_at=(0, token)))
    async with forum:
        seq = model.ask("go")
        promises: list[MessagePromise] = []

        async def consume() -> None:
            async for promise in seq:
                promises.append(promise)  # noqa: PERF401 - keep those before the error

        with pytest.raises(AgentError, match=r"RuntimeError: ScriptedModel told to fail at call 0"):
            await consume()
        [promise] = promises
        assert "".join(await tokens_of(promise)) == content
        message = await promise
    assert message.content == content
    assert message.metadata == {"incomplete": True}


@pytest.mark.anyio
async def test_scripted_model_hangs_at_the_given_call() -> None:
    """hang_at=n: call n reads its requests, then responds nothing until cancelled."""
    forum = Forum()
    script = ScriptedModel("never said", hang_at=0)
    model = forum.agent(script)
    promises: list[MessagePromise] = []

    async def consume() -> None:
        async for promise in model.ask("hello?"):
            promises.append(promise)  # noqa: PERF401 - watched from outside

    with anyio.CancelScope() as scope:
        async with forum, anyio.create_task_group() as group:
            group.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            assert script.requests == [["hello?"]]
            assert promises == []
            scope.cancel()
    assert scope.cancelled_caught
    assert not forum.is_running


@pytest.mark.anyio
async def test_scripted_model_hangs_at_the_given_token() -> None:
    """hang_at=(n, t): consumers see the first t tokens, then wait until cancelled."""
    forum = Forum()
    model = forum.agent(ScriptedModel(["first", "one two three"], hang_at=(1, 2)))
    seen: list[str] = []

    async def consume() -> None:
        async for promise in model.ask("second"):
            async for token in promise:
                seen.append(token)  # noqa: PERF401 - watched from outside

    with anyio.CancelScope() as scope:
        async with forum:
            assert (await model.ask("first").last()).content == "first"
            async with anyio.create_task_group() as group:
                group.start_soon(consume)
                await anyio.wait_all_tasks_blocked()
                assert seen == ["one", " two"]
                scope.cancel()
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_scripted_model_fail_wins_over_hang_at_the_same_point() -> None:
    """When fail_at and hang_at name the same point, the model fails there."""
    forum = Forum()
    model = forum.agent(ScriptedModel("x y", fail_at=(0, 1), hang_at=(0, 1)))
    async with forum:
        with pytest.raises(AgentError, match="token 1"):
            await model.ask("go").last()


@pytest.mark.anyio
async def test_scripted_model_writes_the_same_tree_on_every_backend() -> None:
    """A scripted call writes exactly the messages the tree rules predict, hashes and all."""
    forum = Forum()
    model = forum.agent(ScriptedModel("Hi there!"))
    async with forum:
        answer = await model.ask("Hello").last()
    request = Message(content="Hello", sender="user")
    call = CallMessage(receiver="model", parent=request.hash)
    expected = Message(content="Hi there!", sender="model", parent=call.hash, reply_to=request.hash)
    assert answer == expected


# -- assert_stateless ---------------------------------------------------------------------


def echo_forum() -> tuple[Forum, Any]:
    forum = Forum()

    @forum.agent
    async def echo(ctx: InteractionContext, **kwargs: Any) -> None:
        async for promise in ctx.request_messages:
            ctx.respond(f"{(await promise).content} {sorted(kwargs)}")

    return forum, echo


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_assert_stateless_passes_a_stateless_agent(backend: str) -> None:
    """An agent whose answers depend on nothing but the request passes, on either backend."""
    forum, echo = echo_forum()
    store = forum.store
    assert_stateless(echo, backend=backend, max_examples=25)
    assert forum.store is store
    assert not forum.is_running


def test_assert_stateless_passes_a_two_agent_system() -> None:
    """An agent that consults a stateless model through its forum passes, with kwargs drawn."""
    forum = Forum()
    model = forum.agent(ScriptedModel(lambda history: f"{len(history)}: {history[-1].content!r}"))

    @forum.agent
    async def assistant(ctx: InteractionContext, style: str = "plain") -> None:
        async for promise in ctx.request_messages:
            request = await promise
            ctx.respond(f"[{style}]")
            ctx.respond(model.ask(request.content, branch_from=request))

    assert_stateless(
        assistant,
        requests=st.lists(contents(max_size=10), min_size=1, max_size=3),
        kwargs=st.fixed_dictionaries({"style": st.sampled_from(["plain", "fancy"])}),
        max_examples=20,
        backend="trio",
    )
    assert isinstance(model.function, ScriptedModel)
    assert model.function.calls


def test_assert_stateless_passes_an_agent_that_always_fails_the_same_way() -> None:
    """The ErrorMessage is part of the responses: the same failure every time is stateless."""
    forum = Forum()

    @forum.agent
    async def grumpy(ctx: InteractionContext) -> None:
        ctx.respond("no")
        raise ModelDown("always")

    assert_stateless(grumpy, max_examples=10, backend_options={"debug": True})


def test_assert_stateless_passes_fixed_kwargs_to_every_call() -> None:
    """A kwargs mapping is given to every call."""
    forum, echo = echo_forum()
    seen: list[dict[str, object]] = []

    @forum.agent
    async def spy(ctx: InteractionContext, **kwargs: Any) -> None:
        seen.append(kwargs)
        ctx.respond(echo.ask(ctx.request_messages, **kwargs))

    assert_stateless(spy, requests=st.just("x"), kwargs={"mode": "fast"}, max_examples=3)
    assert seen
    assert all(kwargs == {"mode": "fast"} for kwargs in seen)


def test_assert_stateless_fails_an_agent_that_counts_its_calls() -> None:
    """A counter is caught: the report shows the shrunk request and both runs side by side."""
    forum = Forum()
    calls = 0

    @forum.agent
    async def counter(ctx: InteractionContext) -> None:
        nonlocal calls
        calls += 1
        ctx.respond("hello")
        ctx.respond(f"call {calls}")

    store = forum.store
    with pytest.raises(AssertionError) as info:
        assert_stateless(counter, max_examples=20)
    report = str(info.value)
    assert report.startswith("agent 'counter' is not stateless")
    # Every request fails, so Hypothesis shrinks to the simplest: the empty string.
    assert "request:\n  ''\n" in report
    lines = report.splitlines()
    header = lines.index("responses (* marks those that differ; hash, kind, sender, content):")
    same, differ = lines[header + 2], lines[header + 3]
    assert same.startswith("   0 ")
    assert same.count("message counter 'hello'") == 2
    assert differ.startswith("*  1 ")
    assert f"message counter 'call {calls - 1}' | " in differ
    assert differ.endswith(f"message counter 'call {calls}'")
    assert forum.store is store
    assert not forum.is_running


def test_assert_stateless_shrinks_to_the_request_that_shows_the_state() -> None:
    """State that shows only for some requests is reported with the simplest such request."""
    forum = Forum()
    loud_calls = 0

    @forum.agent
    async def shouter(ctx: InteractionContext) -> None:
        nonlocal loud_calls
        for message in await ctx.request_messages.messages():
            if len(message.content) >= 3:
                loud_calls += 1
                ctx.respond(f"loud call {loud_calls}")
            else:
                ctx.respond("calm")

    with pytest.raises(AssertionError) as info:
        assert_stateless(shouter, max_examples=100)
    assert "request:\n  '000'\n" in str(info.value)


def test_assert_stateless_reports_different_numbers_of_responses() -> None:
    """Missing responses show as "(no response)"; messages and kwargs are described."""
    forum = Forum()
    calls = 0

    @forum.agent
    async def growing(ctx: InteractionContext, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        ctx.respond(*[f"line {n}" for n in range(calls % 2)] or ["even"], note=1)

    request = [
        Message(content="m", sender="user"),
        ["s"],
        [],
        CallMessage(receiver="r", kwargs={"a": 1}),
    ]
    with pytest.raises(AssertionError) as info:
        assert_stateless(growing, requests=st.just(request), kwargs={"k": [1]}, max_examples=1)
    report = str(info.value)
    assert "kwargs: {'k': [1]}" in report
    assert "message user 'm'" in report
    assert "        's'" in report
    assert "[] (no request)" in report
    assert "metadata={'note': 1}" in report
    assert "call -> r {'a': 1}" in report


def test_assert_stateless_shows_any_request_it_was_given() -> None:
    """A request of another type (here None: no request) is shown as its repr."""
    forum = Forum()
    calls = 0

    @forum.agent
    async def counter(ctx: InteractionContext) -> None:
        nonlocal calls
        calls += 1
        ctx.respond(str(calls))

    with pytest.raises(AssertionError, match=r"request:\n  None\n"):
        assert_stateless(counter, requests=st.none(), max_examples=1)


def test_assert_stateless_reports_state_that_hides_on_replay() -> None:
    """An agent whose state makes a replay pass still fails, with an AssertionError."""
    forum = Forum()
    seen: set[str] = set()

    @forum.agent
    async def remembers(ctx: InteractionContext) -> None:
        key = repr([m.content for m in await ctx.request_messages.messages()])
        ctx.respond("again" if key in seen else "new")
        seen.add(key)

    with pytest.raises(AssertionError, match="Asked again, this request got equal responses"):
        assert_stateless(remembers, requests=st.just("same"), max_examples=5)


def test_assert_stateless_lets_other_errors_through() -> None:
    """An error that no consumer observed (strict_errors) fails the check as it is raised."""
    forum = Forum()

    @forum.agent
    async def failing(ctx: InteractionContext) -> None:
        raise ModelDown("nobody listens")

    @forum.agent
    async def teller(ctx: InteractionContext) -> None:
        failing.tell("x")
        ctx.respond("done")

    with pytest.RaisesGroup(AgentError):
        assert_stateless(teller, requests=st.just("x"), max_examples=1)


def test_assert_stateless_lets_flaky_errors_of_its_own_through() -> None:
    """An error that shows only once, and not on replay, is Hypothesis' Flaky error."""
    forum = Forum()
    calls = 0

    @forum.agent
    async def failing(ctx: InteractionContext) -> None:
        raise ModelDown("nobody listens")

    @forum.agent
    async def teller(ctx: InteractionContext) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            failing.tell("x")
        ctx.respond("done")

    with pytest.raises(hypothesis.errors.Flaky):
        assert_stateless(teller, requests=st.just("x"), max_examples=1)


def test_assert_stateless_lets_assertion_errors_of_others_through() -> None:
    """An AssertionError that is not its report (here from the strategy) is raised as is."""
    _, echo = echo_forum()

    def broken() -> str:
        raise AssertionError("from the strategy")

    with pytest.raises(AssertionError, match=r"^from the strategy"):
        assert_stateless(echo, requests=st.builds(broken), max_examples=1)


def test_assert_stateless_refuses_a_running_forum() -> None:
    """Called while the agent's forum runs, it raises RuntimeError and changes nothing."""
    forum, echo = echo_forum()

    async def main() -> None:
        async with forum:
            with pytest.raises(RuntimeError, match="while the forum is not running"):
                assert_stateless(echo)

    anyio.run(main)


def test_assert_stateless_refuses_to_run_inside_an_event_loop() -> None:
    """Called from inside an event loop, it raises RuntimeError instead of nesting loops."""
    _, echo = echo_forum()

    async def main() -> None:
        with pytest.raises(RuntimeError, match="not from inside a running event loop"):
            assert_stateless(echo)

    anyio.run(main, backend="trio")


# -- the package's surface ----------------------------------------------------------------


def test_all_is_a_sorted_tuple_of_documented_names_of_the_package() -> None:
    """__all__ is sorted; each name is documented and says agentforum.testing as its module."""
    public = agentforum.testing.__all__
    assert isinstance(public, tuple)
    assert list(public) == sorted(public)
    for name in public:
        value = getattr(agentforum.testing, name)
        assert value.__module__ == "agentforum.testing", name
        assert inspect.getdoc(value), name
    assert set(public) <= set(dir(agentforum.testing))


def test_star_import_gives_exactly_all() -> None:
    """``from agentforum.testing import *`` binds exactly the names of ``__all__``."""
    namespace: dict[str, object] = {}
    exec("from agentforum.testing import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(agentforum.testing.__all__)


def test_unknown_attribute_raises_attribute_error() -> None:
    """A name the package does not have raises AttributeError, as for any module."""
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = agentforum.testing.nothing  # type: ignore[attr-defined]


def test_core_never_imports_the_testing_package() -> None:
    """agentforum imports nothing of agentforum.testing; the plugin module pytest loads, and
    ScriptedModel (for demos without Hypothesis installed), import no Hypothesis."""
    code = (
        "import sys, agentforum\n"
        "assert not any(m.startswith('agentforum.testing') for m in sys.modules)\n"
        "import agentforum.testing.pytest_plugin\n"
        "assert 'hypothesis' not in sys.modules\n"
        "assert 'agentforum.testing._plugin' not in sys.modules\n"
        "from agentforum.testing import ScriptedModel\n"
        "assert 'hypothesis' not in sys.modules and 'pytest' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
