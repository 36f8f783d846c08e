"""The message tree: where requests, calls, responses and forwards are placed; the store."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentforum import (
    Agent,
    AmbiguousHashError,
    CallMessage,
    EmptySequenceError,
    ErrorMessage,
    Forum,
    ForwardedMessage,
    FrozenDict,
    IntegrityProblem,
    InteractionContext,
    MemoryStore,
    Message,
    MessageNotFoundError,
    MessagePromise,
    MessageSequence,
    MessageStore,
)

pytestmark = pytest.mark.anyio


def contents(messages: list[Message]) -> list[str]:
    return [message.content for message in messages]


def make_echo(forum: Forum, alias: str = "echo") -> Agent:
    """Register an agent that answers each request with "re: <content>"."""

    async def echo(ctx: InteractionContext) -> None:
        async for promise in ctx.request_messages:
            ctx.respond(f"re: {(await promise).content}")

    return forum.agent(alias=alias)(echo)


# -- calls --------------------------------------------------------------------------------------


async def test_call_message_sits_between_the_requests_and_the_responses() -> None:
    """Requests, then CallMessage(parent=last request, receiver, kwargs), then the responses."""
    forum = Forum()

    @forum.agent
    async def answer(ctx: InteractionContext, style: str) -> None:
        ctx.respond(f"one ({style})")
        ctx.respond("two")

    with anyio.fail_after(5):
        async with forum:
            seq = answer.ask(["q1", "q2"], style="short")
            responses = await seq.messages()
            full = await seq.history(include_calls=True)
            plain = await seq.history()
            from_forum = await forum.history(responses[-1])
    q1, q2, call, r1, r2 = full
    assert contents([q1, q2]) == ["q1", "q2"]
    assert isinstance(call, CallMessage)
    assert call == CallMessage(receiver="answer", kwargs={"style": "short"}, parent=q2.hash)
    assert (call.content, call.sender) == ("", "")
    assert [r1, r2] == responses
    assert contents(responses) == ["one (short)", "two"]
    assert (q1.parent, q2.parent, r1.parent, r2.parent) == (None, q1.hash, call.hash, r1.hash)
    assert r1.reply_to == r2.reply_to == q2.hash
    assert all(m.sender == "user" for m in (q1, q2))
    assert all(m.sender == "answer" for m in (r1, r2))
    assert plain == from_forum == [q1, q2, r1, r2]


async def test_kwargs_reach_the_agent_frozen() -> None:
    """Call kwargs reach the agent function frozen: lists as tuples, dicts as FrozenDict."""
    forum = Forum()
    seen: dict[str, object] = {}

    @forum.agent
    async def agent(ctx: InteractionContext, **kwargs: object) -> None:
        seen.update(kwargs)
        ctx.respond("ok")

    with anyio.fail_after(5):
        async with forum:
            seq = agent.ask("q", tags=["a", "b"], options={"n": [1]}, flag=None)
            await seq.messages()
            call = (await seq.history(include_calls=True))[1]
    assert seen == {"tags": ("a", "b"), "options": {"n": (1,)}, "flag": None}
    assert isinstance(seen["options"], FrozenDict)
    assert isinstance(call, CallMessage)
    assert call.kwargs == seen


async def test_identical_calls_from_different_callers_share_the_call_node() -> None:
    """A CallMessage has no sender: the same call made twice on one branch is one node."""
    forum = Forum()
    echo = make_echo(forum)

    @forum.agent
    async def caller(ctx: InteractionContext) -> None:
        ctx.respond(echo.ask(ctx.request_messages))

    with anyio.fail_after(5):
        async with forum:
            first = await echo.ask("q").history(include_calls=True)
            second = await echo.ask("q").history(include_calls=True)
            await caller.ask("q").messages()
            calls = await forum.store.children(first[0].hash)
    assert first == second
    assert isinstance(first[1], CallMessage)
    assert sorted(m.receiver for m in calls if isinstance(m, CallMessage)) == ["caller", "echo"]


async def test_requests_that_form_a_branch_are_reused_not_copied() -> None:
    """Passing ctx.request_messages on adds no copies: the inner call follows the same request."""
    forum = Forum()
    inner = make_echo(forum, "inner")
    inner_sequences: list[MessageSequence] = []

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        seq = inner.ask(ctx.request_messages)
        inner_sequences.append(seq)
        ctx.respond(seq)

    with anyio.fail_after(5):
        async with forum:
            outer_seq = outer.ask(["a", "b"])
            await outer_seq.messages()
            (inner_seq,) = inner_sequences
            inner_branch = await inner_seq.history(include_calls=True)
            outer_branch = await outer_seq.history(include_calls=True)
            siblings = await forum.store.children(outer_branch[1].hash)
    a, b, inner_call, *inner_responses = inner_branch
    assert contents([a, b]) == ["a", "b"]
    assert outer_branch[:2] == [a, b]
    assert isinstance(inner_call, CallMessage)
    assert inner_call.parent == b.hash
    assert inner_call.receiver == "inner"
    assert not any(isinstance(m, ForwardedMessage) for m in inner_branch)
    assert contents(inner_responses) == ["re: a", "re: b"]
    assert {m.hash for m in siblings} == {inner_call.hash, outer_branch[2].hash}


async def test_existing_root_message_as_first_request_is_placed_as_is() -> None:
    """A Message not yet stored, given as the first request, is stored and reused as is."""
    forum = Forum()
    echo = make_echo(forum)
    hello = Message(content="hi", sender="alice")

    with anyio.fail_after(5):
        async with forum:
            seq = echo.ask([hello, "more"])
            branch = await seq.history()
    assert branch[0] == hello
    assert branch[0].sender == "alice"
    assert branch[1].parent == hello.hash
    assert branch[1].sender == "user"
    assert contents(branch) == ["hi", "more", "re: hi", "re: more"]


async def test_forwarding_wraps_the_inner_response() -> None:
    """A proxy responding with an inner agent's responses places ForwardedMessages of them."""
    forum = Forum()
    inner = make_echo(forum, "inner")
    inner_sequences: list[MessageSequence] = []

    @forum.agent
    async def proxy(ctx: InteractionContext) -> None:
        seq = inner.ask("inner question")
        inner_sequences.append(seq)
        ctx.respond(seq, via="proxy")

    with anyio.fail_after(5):
        async with forum:
            seq = proxy.ask("q")
            (forwarded,) = await seq.messages()
            (original,) = await inner_sequences[0].messages()
            branch = await seq.history(include_calls=True)
    assert isinstance(forwarded, ForwardedMessage)
    assert forwarded.original == original.hash
    assert forwarded.sender == "proxy"
    assert original.sender == "inner"
    assert forwarded.content == original.content == "re: inner question"
    assert forwarded.metadata == {"via": "proxy"}
    question, call, last = branch
    assert isinstance(call, CallMessage)
    assert forwarded.parent == call.hash
    assert forwarded.reply_to == question.hash
    assert last == forwarded


async def test_forwarding_a_forward_points_at_the_first_original() -> None:
    """A forward of a forward names the first original message, never a ForwardedMessage."""
    forum = Forum()
    leaf = make_echo(forum, "leaf")
    sequences: dict[str, MessageSequence] = {}

    @forum.agent
    async def middle(ctx: InteractionContext) -> None:
        sequences["leaf"] = leaf.ask("deep")
        ctx.respond(sequences["leaf"])

    @forum.agent
    async def top(ctx: InteractionContext) -> None:
        sequences["middle"] = middle.ask("mid")
        ctx.respond(sequences["middle"])

    with anyio.fail_after(5):
        async with forum:
            (top_message,) = await top.ask("q").messages()
            (middle_message,) = await sequences["middle"].messages()
            (leaf_message,) = await sequences["leaf"].messages()
    assert isinstance(middle_message, ForwardedMessage)
    assert isinstance(top_message, ForwardedMessage)
    assert middle_message.original == leaf_message.hash
    assert top_message.original == leaf_message.hash
    assert top_message.sender == "top"
    assert top_message.content == "re: deep"


async def test_a_response_that_already_continues_the_branch_is_reused() -> None:
    """A Message whose parent is the current end of the branch is placed as is, not wrapped."""
    forum = Forum()
    made: list[Message] = []

    @forum.agent
    async def exact(ctx: InteractionContext) -> None:
        (request,) = await ctx.request_messages.messages()
        call = CallMessage(receiver="exact", parent=request.hash)
        message = Message(content="mine", sender="someone", parent=call.hash, metadata={"k": 1})
        made.append(message)
        ctx.respond(message)
        ctx.respond("next")

    with anyio.fail_after(5):
        async with forum:
            reused, following = await exact.ask("q").messages()
    assert type(reused) is Message
    assert reused == made[0]
    assert reused.sender == "someone"
    assert following.parent == reused.hash


async def test_a_stored_message_from_elsewhere_is_forwarded_by_the_agent() -> None:
    """An agent responding with a message of another branch places a forward of it."""
    forum = Forum()
    echo = make_echo(forum)

    @forum.agent
    async def quoter(ctx: InteractionContext, ref: str) -> None:
        ctx.respond(await ctx.forum.get(ref))

    with anyio.fail_after(5):
        async with forum:
            quoted = await echo.ask("x").last()
            (forward,) = await quoter.ask("quote it", ref=quoted.hash[:8]).messages()
    assert isinstance(forward, ForwardedMessage)
    assert forward.original == quoted.hash
    assert forward.sender == "quoter"


async def test_a_request_from_another_branch_is_forwarded_with_the_callers_name() -> None:
    """A request that does not continue the branch is placed as a forward sent by the caller."""
    forum = Forum()
    echo = make_echo(forum)

    with anyio.fail_after(5):
        async with forum:
            elsewhere = await echo.ask("elsewhere").last()
            branch = await echo.ask(["first", elsewhere]).history()
    first, forward, *_ = branch
    assert first.parent is None
    assert isinstance(forward, ForwardedMessage)
    assert forward.original == elsewhere.hash
    assert forward.sender == "user"
    assert forward.parent == first.hash


# -- reply_to -----------------------------------------------------------------------------------


async def test_responses_reply_to_the_last_request_by_default() -> None:
    """By default every new response replies to the call's last request."""
    forum = Forum()

    @forum.agent
    async def answer(ctx: InteractionContext) -> None:
        ctx.respond(["a", "b"])

    with anyio.fail_after(5):
        async with forum:
            seq = answer.ask(["q1", "q2"])
            responses = await seq.messages()
            q2 = (await seq.history())[1]
    assert [m.reply_to for m in responses] == [q2.hash, q2.hash]


async def test_responses_to_a_call_without_requests_reply_to_nothing() -> None:
    """A call without requests: the responses' reply_to is None, the CallMessage is a root."""
    forum = Forum()

    @forum.agent
    async def answer(ctx: InteractionContext) -> None:
        ctx.respond("unprompted")

    with anyio.fail_after(5):
        async with forum:
            seq = answer.ask([])
            (response,) = await seq.messages()
            call, _ = await seq.history(include_calls=True)
            via_start = await answer.start_asking().response_sequence().last()
    assert response.reply_to is None
    assert isinstance(call, CallMessage)
    assert call.parent is None
    assert via_start == response


async def test_explicit_reply_to_is_honoured() -> None:
    """respond(reply_to=...) accepts a Message, a MessagePromise and a full hash."""
    forum = Forum()

    @forum.agent
    async def answer(ctx: InteractionContext) -> None:
        promises = [p async for p in ctx.request_messages]
        first = await promises[0]
        ctx.respond("to message", reply_to=first)
        ctx.respond("to promise", reply_to=promises[1])
        ctx.respond("to hash", reply_to=first.hash)
        ctx.respond("default")

    with anyio.fail_after(5):
        async with forum:
            seq = answer.ask(["q1", "q2", "q3"])
            responses = await seq.messages()
            q1, q2, q3 = (await seq.history())[:3]
    assert [m.reply_to for m in responses] == [q1.hash, q2.hash, q1.hash, q3.hash]


async def test_reply_to_of_a_wrong_type_or_malformed_hash_is_refused() -> None:
    """respond(reply_to=123) raises TypeError; a malformed hash string raises ValueError."""
    forum = Forum()

    def refusal(ctx: InteractionContext, bad: object) -> str:
        try:
            ctx.respond("x", reply_to=bad)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            return type(exc).__name__
        return "accepted"

    @forum.agent
    async def answer(ctx: InteractionContext) -> None:
        for bad in (123, b"0" * 64, "abc", "F" * 64):
            ctx.respond(refusal(ctx, bad))

    with anyio.fail_after(5):
        async with forum:
            responses = await answer.ask("q").messages()
    assert contents(responses) == ["TypeError", "TypeError", "ValueError", "ValueError"]


# -- branching ----------------------------------------------------------------------------------


async def test_branch_from_continues_after_the_given_message() -> None:
    """branch_from= a Message, a promise, a full hash or a prefix: the first request follows it."""
    forum = Forum()
    echo = make_echo(forum)

    with anyio.fail_after(5):
        async with forum:
            base_seq = echo.ask("base")
            (base_promise,) = [p async for p in base_seq]
            base = await base_promise
            points: list[Message | MessagePromise | str] = [
                base,
                base_promise,
                base.hash,
                base.hash[:6],
                base.hash[:20],
            ]
            branches = [
                await echo.ask(f"next {index}", branch_from=point).history()
                for index, point in enumerate(points)
            ]
            children = await forum.store.children(base.hash)
    base_branch = await forum.history(base.hash)
    for index, branch in enumerate(branches):
        assert branch[: len(base_branch)] == base_branch
        assert branch[len(base_branch)].content == f"next {index}"
        assert branch[len(base_branch)].parent == base.hash
    assert sorted(contents(children)) == [f"next {index}" for index in range(5)]


async def test_two_asks_from_the_same_message_create_siblings() -> None:
    """Two calls branching from the same message put their first requests side by side."""
    forum = Forum()
    echo = make_echo(forum)

    with anyio.fail_after(5):
        async with forum:
            base = await echo.ask("base").last()
            left = await echo.ask("left", branch_from=base).history()
            right = await echo.ask("right", branch_from=base).history()
            children = await forum.store.children(base.hash)
    assert {m.hash for m in children} == {left[2].hash, right[2].hash}
    assert left[:2] == right[:2]


async def test_blank_history_starts_a_new_root_even_inside_an_agent() -> None:
    """blank_history=True makes the first request a root, even in an agent's nested call."""
    forum = Forum()
    inner = make_echo(forum, "inner")
    inner_sequences: list[MessageSequence] = []

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        seq = inner.ask("fresh", blank_history=True)
        inner_sequences.append(seq)
        ctx.respond(seq)

    with anyio.fail_after(5):
        async with forum:
            base = await outer.ask("q").last()
            inner_branch = await inner_sequences[0].history()
            top_branch = await inner.ask("top", blank_history=True).history()
    assert inner_branch[0].content == "fresh"
    assert inner_branch[0].parent is None
    assert inner_branch[0].sender == "outer"
    assert top_branch[0].parent is None
    assert base.content == "re: fresh"


async def test_top_level_calls_start_new_roots_by_default() -> None:
    """At top level, a call whose first request is a str starts a new root, sent by "user"."""
    forum = Forum()
    echo = make_echo(forum)

    with anyio.fail_after(5):
        async with forum:
            await echo.ask("one").messages()
            await echo.ask("two").messages()
            roots = await forum.store.children(None)
    assert sorted(contents(roots)) == ["one", "two"]
    assert all(m.parent is None and m.sender == "user" for m in roots)


async def test_string_requests_inside_an_agent_follow_the_callers_last_request() -> None:
    """Inside an agent, a str request goes after the caller's last request, sent by its alias."""
    forum = Forum()
    inner = make_echo(forum, "inner")
    inner_sequences: list[MessageSequence] = []

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        seq = inner.ask(["sub 1", "sub 2"])
        inner_sequences.append(seq)
        ctx.respond(await seq.last())

    with anyio.fail_after(5):
        async with forum:
            outer_branch = await outer.ask(["q1", "q2"]).history(include_calls=True)
            inner_branch = await inner_sequences[0].history(include_calls=True)
    q1, q2, outer_call, _ = outer_branch
    assert isinstance(outer_call, CallMessage)
    assert inner_branch[:2] == [q1, q2]
    sub1, sub2 = inner_branch[2:4]
    assert sub1.parent == q2.hash
    assert contents([sub1, sub2]) == ["sub 1", "sub 2"]
    assert sub1.sender == sub2.sender == "outer"


async def test_inner_call_without_requests_follows_the_callers_last_request() -> None:
    """Inside an agent, a call with no requests puts its CallMessage after the caller's request."""
    forum = Forum()
    inner_sequences: list[MessageSequence] = []

    @forum.agent
    async def inner(ctx: InteractionContext) -> None:
        ctx.respond("inner")

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        seq = inner.ask([])
        inner_sequences.append(seq)
        ctx.respond(seq)

    with anyio.fail_after(5):
        async with forum:
            await outer.ask("q").messages()
            branch = await inner_sequences[0].history(include_calls=True)
    question, call, response = branch
    assert question.content == "q"
    assert isinstance(call, CallMessage)
    assert call.receiver == "inner"
    assert call.parent == question.hash
    assert response.reply_to is None


# -- lookups ------------------------------------------------------------------------------------


async def test_forum_get_accepts_a_full_hash_and_unique_prefixes() -> None:
    """forum.get() finds a message by its full hash and by any unique prefix of 6+ chars."""
    forum = Forum()
    echo = make_echo(forum)

    with anyio.fail_after(5):
        async with forum:
            message = await echo.ask("q").last()
        assert await forum.get(message.hash) == message
        for length in (6, 7, 12, 63):
            assert await forum.get(message.hash[:length]) == message


async def test_forum_get_of_an_unknown_hash_is_message_not_found() -> None:
    """forum.get() of a prefix or full hash that nothing matches raises MessageNotFoundError."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            message = await echo.ask("q").last()
    unknown = next(
        prefix
        for prefix in (f"{n:06x}" for n in range(1000))
        if not message.hash.startswith(prefix)
    )
    with pytest.raises(MessageNotFoundError):
        await forum.get(unknown)
    with pytest.raises(MessageNotFoundError):
        await forum.get("0" * 64 if not message.hash.startswith("0") else "1" * 64)
    with pytest.raises(MessageNotFoundError):
        await Forum().get("abcdef")  # an empty store: nothing matches


@pytest.mark.parametrize(
    "bad", ["", "abc", "abcde", "ABCDEF", "abcdeg", "a" * 65, " abcdef", "abcdef\n"]
)
async def test_forum_get_of_a_malformed_prefix_is_a_value_error(bad: str) -> None:
    """forum.get() of fewer than 6 chars, non-hex, upper case or over 64 raises ValueError."""
    forum = Forum()
    with pytest.raises(ValueError, match="hexadecimal"):
        await forum.get(bad)


def shared_prefix_pair() -> tuple[Message, Message, str]:
    """Find two messages whose hashes share their first six hex characters (birthday search)."""
    seen: dict[str, Message] = {}
    for index in itertools.count():
        message = Message(content=f"message {index}", sender="user")
        prefix = message.hash[:6]
        if prefix in seen:
            return seen[prefix], message, prefix
        seen[prefix] = message
    raise AssertionError("unreachable")  # pragma: no cover


async def test_an_ambiguous_prefix_is_an_ambiguous_hash_error() -> None:
    """A prefix shared by two stored hashes raises AmbiguousHashError; a longer one resolves."""
    first, second, prefix = shared_prefix_pair()
    store = MemoryStore()
    await store.put(first)
    await store.put(second)
    with pytest.raises(AmbiguousHashError):
        await store.resolve(prefix)
    forum = Forum(store=store)
    with pytest.raises(AmbiguousHashError):
        await forum.get(prefix)
    with pytest.raises(AmbiguousHashError):
        await forum.history(prefix)
    common = next(
        index for index, (a, b) in enumerate(zip(first.hash, second.hash, strict=True)) if a != b
    )
    assert await forum.get(first.hash[: common + 1]) == first
    assert await forum.get(second.hash[: common + 1]) == second


async def test_history_accepts_messages_promises_hashes_and_prefixes() -> None:
    """forum.history() takes a Message, a MessagePromise, a hash or a prefix: same branch."""
    forum = Forum()
    echo = make_echo(forum)
    with anyio.fail_after(5):
        async with forum:
            seq = echo.ask(["a", "b"])
            promises = [p async for p in seq]
            last = await seq.last()
            by_promise = await forum.history(promises[-1])
            with_calls = await forum.history(promises[-1], include_calls=True)
    by_message = await forum.history(last)
    by_hash = await forum.history(last.hash)
    by_prefix = await forum.history(last.hash[:10])
    assert by_message == by_promise == by_hash == by_prefix
    assert contents(by_message) == ["a", "b", "re: a", "re: b"]
    assert [type(m) for m in with_calls] == [Message, Message, CallMessage, Message, Message]
    with pytest.raises(MessageNotFoundError):
        await forum.history(Message(content="never stored", sender="user"))


async def test_last_of_an_empty_sequence_is_an_empty_sequence_error() -> None:
    """seq.last() and seq.history() of a call that responded nothing raise EmptySequenceError."""
    forum = Forum()

    @forum.agent
    async def silent(ctx: InteractionContext) -> None:
        pass

    with anyio.fail_after(5):
        async with forum:
            seq = silent.ask("anyone?")
            assert await seq.messages() == []
            with pytest.raises(EmptySequenceError):
                await seq.last()
            with pytest.raises(EmptySequenceError):
                await seq.history()


async def test_messages_are_in_response_order() -> None:
    """seq.messages() returns the responses in the order they were given."""
    forum = Forum()
    expected = [f"r{index}" for index in range(100)]

    @forum.agent
    async def many(ctx: InteractionContext) -> None:
        for text in expected[:50]:
            ctx.respond(text)
        ctx.respond(iter(expected[50:]))

    with anyio.fail_after(5):
        async with forum:
            seq = many.ask("go")
            assert contents(await seq.messages()) == expected
            assert (await seq.last()).content == "r99"


async def test_request_messages_of_the_agent_are_the_placed_requests() -> None:
    """ctx.request_messages holds the request messages as placed in the tree."""
    forum = Forum()
    seen: list[Message] = []

    @forum.agent
    async def reader(ctx: InteractionContext) -> None:
        seen.extend(await ctx.request_messages.messages())
        ctx.respond("ok")

    with anyio.fail_after(5):
        async with forum:
            branch = await reader.ask(["a", "b"]).history()
    assert seen == branch[:2]


# -- the store protocol -------------------------------------------------------------------------


async def test_memory_store_is_a_message_store() -> None:
    """MemoryStore satisfies the runtime-checkable MessageStore protocol; the forum's default."""
    assert isinstance(MemoryStore(), MessageStore)
    assert isinstance(Forum().store, MemoryStore)
    store = MemoryStore()
    assert Forum(store=store).store is store
    assert "MemoryStore" in repr(store)


async def test_memory_store_put_get_children_ancestors() -> None:
    """put is idempotent; get, children (roots for None) and ancestors read the tree."""
    store = MemoryStore()
    root = Message(content="root", sender="user")
    left = Message(content="left", sender="a", parent=root.hash)
    right = Message(content="right", sender="b", parent=root.hash, reply_to=root.hash)
    leaf = Message(content="leaf", sender="a", parent=left.hash)
    for message in (root, left, right, leaf, root, left):
        await store.put(message)
    assert await store.get(leaf.hash) == leaf
    assert await store.children(None) == [root]
    assert await store.children(root.hash) == sorted([left, right], key=lambda m: m.hash)
    assert await store.children(leaf.hash) == []
    assert await store.ancestors(leaf.hash) == [root, left, leaf]
    assert await store.ancestors(root.hash) == [root]
    assert await store.verify() == []
    with pytest.raises(MessageNotFoundError):
        await store.get("0" * 64)
    with pytest.raises(MessageNotFoundError):
        await store.ancestors("0" * 64)


@pytest.mark.parametrize("link", ["parent", "reply_to", "original"])
async def test_memory_store_refuses_a_message_whose_links_are_missing(link: str) -> None:
    """put() of a message whose parent, reply_to or original is not stored: MessageNotFoundError."""
    store = MemoryStore()
    root = Message(content="root", sender="user")
    await store.put(root)
    missing = Message(content="elsewhere", sender="user").hash
    fields = {"parent": root.hash, "reply_to": None, "original": root.hash}
    fields[link] = missing
    message = ForwardedMessage(content="x", sender="s", **fields)
    with pytest.raises(MessageNotFoundError, match=link):
        await store.put(message)
    assert await store.children(root.hash) == []
    assert await store.verify() == []


async def test_memory_store_refs() -> None:
    """Refs are set, moved, read, listed and deleted; bad names and unknown hashes are refused."""
    store = MemoryStore()
    first = Message(content="first", sender="user")
    second = Message(content="second", sender="user", parent=first.hash)
    await store.put(first)
    await store.put(second)
    assert await store.refs() == {}
    assert await store.get_ref("main") is None
    await store.set_ref("main", first.hash)
    await store.set_ref("feature/x", second.hash)
    assert await store.get_ref("main") == first.hash
    await store.set_ref("main", second.hash)
    assert await store.refs() == {"feature/x": second.hash, "main": second.hash}
    await store.delete_ref("main")
    await store.delete_ref("main")  # deleting a missing ref does nothing
    assert await store.refs() == {"feature/x": second.hash}
    bad_names = ("", "with space", "a:b", "a~1", "a^", "what?", "st*r", "[x", "back\\slash")
    for bad in (*bad_names, "x" * 256, "tab\t"):
        with pytest.raises(ValueError, match="ref name"):
            await store.set_ref(bad, first.hash)
    with pytest.raises(MessageNotFoundError):
        await store.set_ref("dangling", "0" * 64)
    assert await store.refs() == {"feature/x": second.hash}
    assert await store.verify() == []


async def test_memory_store_cache_index() -> None:
    """put_cached/get_cached record which responses answered a call; unknown hashes refused."""
    store = MemoryStore()
    call = CallMessage(receiver="agent")
    response = Message(content="r", sender="agent", parent=call.hash)
    await store.put(call)
    await store.put(response)
    assert await store.get_cached(call.hash) is None
    await store.put_cached(call.hash, [response.hash])
    assert list(await store.get_cached(call.hash) or ()) == [response.hash]
    with pytest.raises(MessageNotFoundError):
        await store.put_cached("0" * 64, [response.hash])
    with pytest.raises(MessageNotFoundError):
        await store.put_cached(call.hash, ["0" * 64])
    assert list(await store.get_cached(call.hash) or ()) == [response.hash]
    assert await store.verify() == []
    await store.aclose()


async def test_forum_store_verifies_after_a_conversation() -> None:
    """After calls, forwards and errors, the forum's store verifies with no problem."""
    forum = Forum(strict_errors=False)
    inner = make_echo(forum, "inner")

    @forum.agent
    async def outer(ctx: InteractionContext) -> None:
        ctx.respond(inner.ask(ctx.request_messages))
        raise ValueError("after forwarding")

    with anyio.fail_after(5):
        async with forum:
            outer.tell(["a", "b"])
    assert await forum.store.verify() == []
    (root,) = await forum.store.children(None)
    (second,) = await forum.store.children(root.hash)
    calls = await forum.store.children(second.hash)
    assert sorted(m.receiver for m in calls if isinstance(m, CallMessage)) == ["inner", "outer"]
    outer_call = next(m for m in calls if isinstance(m, CallMessage) and m.receiver == "outer")
    end = outer_call
    while children := await forum.store.children(end.hash):
        (end,) = children
    assert isinstance(end, ErrorMessage)
    assert end.error_type == "ValueError"
    assert contents(await forum.history(end)) == ["a", "b", "re: a", "re: b", "after forwarding"]


def test_integrity_problem_is_a_frozen_value() -> None:
    """IntegrityProblem holds a hash and a reason and compares by value."""
    problem = IntegrityProblem("a" * 64, "its fields do not hash to its hash")
    assert problem == IntegrityProblem("a" * 64, "its fields do not hash to its hash")
    assert problem.hash == "a" * 64
    with pytest.raises(AttributeError):
        problem.reason = "other"  # type: ignore[misc]


# -- the branch law -----------------------------------------------------------------------------

texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)


@settings(max_examples=30, deadline=None)
@given(requests=st.lists(texts, max_size=5), responses=st.lists(texts, min_size=1, max_size=5))
async def test_history_of_the_last_response_is_requests_then_responses(
    requests: list[str], responses: list[str]
) -> None:
    """For all requests and responses: history == requests + responses, a sound hash chain."""
    forum = Forum()

    @forum.agent
    async def scripted(ctx: InteractionContext) -> None:
        async for _ in ctx.request_messages:
            pass
        ctx.respond(responses)

    with anyio.fail_after(5):
        async with forum:
            seq = scripted.ask(requests)
            branch = await seq.history()
            full = await seq.history(include_calls=True)
    assert contents(branch) == requests + responses
    assert full[0].parent is None
    for previous, message in itertools.pairwise(full):
        assert message.parent == previous.hash
    assert sum(isinstance(m, CallMessage) for m in full) == 1
    assert await forum.store.verify() == []
    assert all(isinstance(m.metadata, Mapping) for m in full)


async def test_nested_call_while_the_callers_requests_are_open_does_not_deadlock() -> None:
    """Full duplex: an agent consulting another agent per request, before the next request."""
    forum = Forum()
    answered = anyio.Event()

    @forum.agent
    async def helper(ctx: InteractionContext) -> None:
        ctx.respond("help")

    @forum.agent
    async def chat(ctx: InteractionContext) -> None:
        async for promise in ctx.request_messages:
            request = await promise
            advice = await helper.ask(f"about {request.content}").last()
            ctx.respond(f"{request.content}: {advice.content}")
            answered.set()

    with anyio.fail_after(5):
        async with forum:
            call = chat.start_asking()
            call.send_request("1")
            await answered.wait()
            call.send_request("2")
            messages = await call.response_sequence().messages()
    assert contents(messages) == ["1: help", "2: help"]


async def test_white_box_verify_reports_every_kind_of_problem() -> None:
    """White box: verify() finds a wrong hash, a missing link, a dangling ref and cache entry."""
    store = MemoryStore()
    root = Message(content="root", sender="user")
    child = Message(content="child", sender="user", parent=root.hash)
    call = CallMessage(receiver="agent", parent=child.hash)
    response = Message(content="response", sender="agent", parent=call.hash)
    await store.put(root)
    await store.put(child)
    await store.put(call)
    await store.put(response)
    await store.set_ref("main", child.hash)
    await store.put_cached(call.hash, [response.hash])
    assert await store.verify() == []
    impostor = Message(content="impostor", sender="user")
    store._messages["f" * 64] = impostor
    del store._messages[root.hash]
    del store._messages[child.hash]
    del store._messages[response.hash]
    problems = await store.verify()
    reasons = {(problem.hash, problem.reason.split(" ")[1]) for problem in problems}
    assert ("f" * 64, "fields") in reasons
    assert (call.hash, "parent") in reasons
    assert any("ref 'main'" in problem.reason for problem in problems)
    assert any("cached response" in problem.reason for problem in problems)
    assert all(isinstance(problem, IntegrityProblem) for problem in problems)


async def test_an_agent_responding_with_its_requests_forwards_them() -> None:
    """Responding with ctx.request_messages places forwards of the requests, sent by the agent."""
    forum = Forum()

    @forum.agent
    async def parrot(ctx: InteractionContext) -> None:
        ctx.respond(ctx.request_messages)

    with anyio.fail_after(5):
        async with forum:
            seq = parrot.ask(["a", "b"])
            responses = await seq.messages()
            a, b = (await seq.history())[:2]
    assert all(isinstance(m, ForwardedMessage) for m in responses)
    assert [m.original for m in responses] == [a.hash, b.hash]  # type: ignore[attr-defined]
    assert [m.sender for m in responses] == ["parrot", "parrot"]
    assert contents(responses) == ["a", "b"]
    assert responses[1].parent == responses[0].hash


async def test_branch_from_a_message_not_yet_stored_stores_it_first() -> None:
    """branch_from= a new root Message: it is stored, and the call continues after it."""
    forum = Forum()
    echo = make_echo(forum)
    system = Message(content="You are terse.", sender="system")
    with anyio.fail_after(5):
        async with forum:
            branch = await echo.ask("hi", branch_from=system).history()
    assert branch[0] == system
    assert contents(branch) == ["You are terse.", "hi", "re: hi"]
    assert await forum.get(system.hash) == system
