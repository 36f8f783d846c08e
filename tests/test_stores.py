"""One store test suite, run against MemoryStore, SQLiteStore and PostgresStore, on asyncio
and on Trio.

The first part pins the :class:`MessageStore` contract method by method; the second is a
Hypothesis state machine that drives a store through random puts, batches, refs and cache
entries and compares everything it reads back with a plain dict model.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import sqlite3
import tempfile
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio
import hypothesis
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)

import pg_server
from agentforum import (
    AmbiguousHashError,
    CallMessage,
    ClaimingStore,
    ErrorMessage,
    ForwardedMessage,
    MemoryStore,
    Message,
    MessageNotFoundError,
    MessageStore,
    PostgresStore,
    RefConflictError,
    SQLiteStore,
    encode_message,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
    from pathlib import Path

    from anyio.from_thread import BlockingPortal
    from hypothesis.stateful import MultipleResults

pytestmark = pytest.mark.anyio

T = TypeVar("T")

UNKNOWN = "f" * 64
INVALID_PREFIXES = [
    "",
    "abc",
    "abcde",
    "ABCDEF",
    "abcdeg",
    "xyz123",
    " abcdef",
    "a" * 65,
    "a" * 64 + "\n",
]
INVALID_REF_NAMES = ["", "a b", "a\tb", "a\nb", "a\x00b", "a\x7fb", "a~1", "a^", "a:b", "a?", "a*"]
INVALID_REF_NAMES += ["a[0]", "a\\b", "x" * 256]
VALID_REF_NAMES = ["main", "feature/x", "v1.0", "ünïcødé", "日本", "x" * 255, "abcdef", "HEAD"]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageStore]:
    """A fresh, empty store of each kind (an SQLiteStore in a new file, a PostgresStore in a
    new database of the tests' server), closed afterwards."""
    new = MemoryStore() if request.param == "memory" else shared(request, tmp_path)
    yield new
    await new.aclose()


def shared(request: pytest.FixtureRequest, tmp_path: Path) -> SQLiteStore | PostgresStore:
    """A new store that processes can share, of the kind ``request.param`` names."""
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "s.db")
    return PostgresStore(request.getfixturevalue("postgres_url"))


def message(content: str, parent: Message | None = None) -> Message:
    """Return a message from "s" continuing ``parent`` (a root if None)."""
    return Message(content=content, sender="s", parent=None if parent is None else parent.hash)


def chain(*contents: str, parent: Message | None = None) -> list[Message]:
    """Return a branch of messages with ``contents``, each the child of the one before."""
    branch: list[Message] = []
    for content in contents:
        parent = message(content, parent)
        branch.append(parent)
    return branch


@functools.cache
def colliding_pair() -> tuple[Message, Message]:
    """Two root messages whose hashes share their first 6 hex characters (birthday search)."""
    seen: dict[str, Message] = {}
    index = 0
    while True:
        candidate = Message(content=str(index), sender="s")
        prefix = candidate.hash[:6]
        if prefix in seen:
            return seen[prefix], candidate
        seen[prefix] = candidate
        index += 1


def every_kind() -> list[Message]:
    """One message of each kind, linked to each other, with awkward metadata and kwargs."""
    root = Message(
        content='héllo wörld ✓ 日本語 🎉 \u2028 "quoted" \\ \x01',
        sender="üser",
        metadata={
            "big": 10**3000,
            "negative": -(2**200),
            "floats": [0.1, -0.0, 1e308, 5e-324, -2.5e-10, 1.0],
            "nested": {"a": [1, {"b": None}], "ü": True, "": False},
            "text": "ß\U0001f600",
        },
    )
    call = CallMessage(
        receiver="agent",
        kwargs={"n": 3, "xs": [1, 2.5, "three", None], "opts": {"deep": {"deeper": [True]}}},
        parent=root.hash,
        metadata={"k": "v"},
    )
    reply = Message(content="", sender="agent", parent=call.hash, reply_to=root.hash)
    forward = ForwardedMessage(
        content=root.content,
        sender="agent",
        parent=reply.hash,
        reply_to=root.hash,
        original=root.hash,
        metadata={"why": "forwarded"},
    )
    error = ErrorMessage(
        content="boom: ünicode",
        sender="agent",
        error_type="mymodule.MyError",
        parent=forward.hash,
        reply_to=reply.hash,
    )
    return [root, call, reply, forward, error]


def hashes(messages: Iterable[Message]) -> list[str]:
    """Return the hashes of ``messages``, in order."""
    return [each.hash for each in messages]


# -- the protocol ------------------------------------------------------------------------------


async def test_stores_implement_the_protocol(store: MessageStore) -> None:
    """Both stores are instances of the runtime-checkable MessageStore protocol."""
    assert isinstance(store, MessageStore)


async def test_empty_store_has_nothing(store: MessageStore) -> None:
    """A new store has no roots, no refs, no cache entries, and verifies clean."""
    assert await store.children(None) == []
    assert dict(await store.refs()) == {}
    assert await store.get_cached(UNKNOWN) is None
    assert await store.verify() == []


# -- put ---------------------------------------------------------------------------------------


async def test_put_then_get_returns_an_equal_message(store: MessageStore) -> None:
    """A stored message comes back from get with the same hash, type and fields."""
    root, child = chain("a", "b")
    await store.put(root)
    await store.put(child)
    got = await store.get(child.hash)
    assert got == child
    assert type(got) is Message
    assert (got.content, got.sender, got.parent) == ("b", "s", root.hash)


async def test_put_is_idempotent(store: MessageStore) -> None:
    """Putting the same message twice (or an equal copy) stores it once."""
    root, child = chain("a", "b")
    await store.put(root)
    await store.put(child)
    await store.put(child)
    await store.put(message("b", root))
    await store.put_many([child, child, root])
    assert hashes(await store.children(root.hash)) == [child.hash]
    assert hashes(await store.children(None)) == [root.hash]
    assert await store.verify() == []


@pytest.mark.parametrize("field", ["parent", "reply_to", "original"])
async def test_put_with_a_missing_link_raises_naming_the_field(
    store: MessageStore, field: str
) -> None:
    """A message linking to an unstored hash is refused with the field's name; nothing stored."""
    root = message("root")
    await store.put(root)
    links: dict[str, Any] = {
        "parent": root.hash,
        "reply_to": root.hash,
        "original": root.hash,
        field: UNKNOWN,
    }
    bad = ForwardedMessage(content="x", sender="s", **links)
    with pytest.raises(MessageNotFoundError, match=rf"{field} {UNKNOWN}"):
        await store.put(bad)
    with pytest.raises(MessageNotFoundError):
        await store.get(bad.hash)
    assert await store.children(root.hash) == []
    assert await store.children(UNKNOWN) == []
    assert await store.verify() == []


async def test_put_many_stores_a_batch_in_any_order(store: MessageStore) -> None:
    """A batch whose messages link to each other is stored whatever its order."""
    root, call, reply, forward, error = every_kind()
    batch = [error, forward, reply, call, root]
    random.Random(5).shuffle(batch)
    await store.put_many(batch)
    assert hashes(await store.ancestors(error.hash)) == hashes([root, call, reply, forward, error])
    assert await store.verify() == []


async def test_put_many_accepts_a_generator_and_an_empty_batch(store: MessageStore) -> None:
    """put_many takes any iterable, a one-shot generator included; an empty one stores nothing."""
    branch = chain("a", "b", "c")
    await store.put_many(each for each in branch)
    await store.put_many([])
    await store.put_many(iter(()))
    assert hashes(await store.ancestors(branch[-1].hash)) == hashes(branch)


@pytest.mark.parametrize("position", [0, 1, 3])
@pytest.mark.parametrize("field", ["parent", "reply_to", "original"])
async def test_put_many_is_atomic(store: MessageStore, field: str, position: int) -> None:
    """One message of a batch with a missing link: the whole batch is refused, none stored."""
    existing = message("existing")
    await store.put(existing)
    good = chain("a", "b", "c", parent=existing)
    links: dict[str, Any] = {
        "parent": good[0].hash,
        "reply_to": None,
        "original": existing.hash,
        field: UNKNOWN,
    }
    bad = ForwardedMessage(content="bad", sender="s", **links)
    batch = [*good]
    batch.insert(position, bad)
    with pytest.raises(MessageNotFoundError, match=rf"{field} {UNKNOWN}"):
        await store.put_many(batch)
    for each in batch:
        with pytest.raises(MessageNotFoundError):
            await store.get(each.hash)
    assert await store.children(existing.hash) == []
    assert hashes(await store.children(None)) == [existing.hash]
    assert await store.verify() == []


async def test_put_many_may_link_to_stored_messages(store: MessageStore) -> None:
    """A batch may continue a branch that is already stored, and repeat stored messages."""
    first = chain("a", "b")
    await store.put_many(first)
    second = chain("c", "d", parent=first[-1])
    await store.put_many([second[1], first[1], second[0]])
    assert hashes(await store.ancestors(second[-1].hash)) == hashes(first + second)
    assert hashes(await store.children(first[-1].hash)) == [second[0].hash]


async def test_concurrent_puts_are_all_stored(store: MessageStore) -> None:
    """Many puts from concurrent tasks all land, each once."""
    root = message("root")
    await store.put(root)
    children = [message(str(index), root) for index in range(40)]
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            for child in children:
                group.start_soon(store.put, child)
                group.start_soon(store.put, child)
    assert hashes(await store.children(root.hash)) == sorted(c.hash for c in children)


async def test_a_put_in_a_cancelled_scope_is_cancelled_and_stores_nothing(
    store: MessageStore,
) -> None:
    """put is a checkpoint: in an already cancelled scope it raises cancellation, stores nothing."""
    stored = message("a")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await store.put(stored)
    assert scope.cancelled_caught
    with pytest.raises(MessageNotFoundError):
        await store.get(stored.hash)


async def test_a_loop_over_a_memory_store_lets_other_tasks_run() -> None:
    """MemoryStore yields once in YIELD_EVERY calls: a busy loop over it starves nobody."""
    store = MemoryStore()
    stored = message("a")
    ran_after: list[int] = []
    calls = 0

    async def other() -> None:
        ran_after.append(calls)

    async with anyio.create_task_group() as group:
        group.start_soon(other)
        for calls in range(1, MemoryStore.YIELD_EVERY + 1):  # noqa: B007 (read by other)
            await store.put(stored)
    assert ran_after
    assert 1 <= ran_after[0] <= MemoryStore.YIELD_EVERY


async def test_every_memory_store_call_is_a_cancellation_point() -> None:
    """Between its full checkpoints too, a MemoryStore call raises a pending cancellation."""
    store = MemoryStore()
    stored = message("a")
    await store.put(stored)
    reached = 0
    with anyio.CancelScope() as scope:
        for reached in range(1, 4):
            await store.get(stored.hash)
            if reached == 2:
                scope.cancel()
    assert scope.cancelled_caught
    assert reached == 3


# -- every kind round-trips ----------------------------------------------------------------------


async def test_every_message_kind_round_trips(store: MessageStore) -> None:
    """Every kind, with unicode, big ints and floats, comes back equal, field for field."""
    originals = every_kind()
    for each in originals:
        await store.put(each)
    for original in originals:
        got = await store.get(original.hash)
        assert type(got) is type(original)
        assert got.hash == original.hash
        assert encode_message(got) == encode_message(original)
        assert got.metadata == original.metadata
    root = await store.get(originals[0].hash)
    assert root.metadata["big"] == 10**3000
    assert root.metadata["floats"] == (0.1, -0.0, 1e308, 5e-324, -2.5e-10, 1.0)
    call = await store.get(originals[1].hash)
    assert isinstance(call, CallMessage)
    assert isinstance(originals[1], CallMessage)
    assert call.kwargs == originals[1].kwargs
    assert call.receiver == "agent"
    error = await store.get(originals[4].hash)
    assert isinstance(error, ErrorMessage)
    assert error.error_type == "mymodule.MyError"
    forward = await store.get(originals[3].hash)
    assert isinstance(forward, ForwardedMessage)
    assert forward.original == originals[0].hash


# -- get and resolve -----------------------------------------------------------------------------


async def test_get_unknown_hash_raises(store: MessageStore) -> None:
    """get of a hash that is not stored raises MessageNotFoundError naming it."""
    await store.put(message("a"))
    with pytest.raises(MessageNotFoundError, match=UNKNOWN):
        await store.get(UNKNOWN)


async def test_get_takes_full_hashes_only(store: MessageStore) -> None:
    """get does not resolve prefixes: a prefix of a stored hash is not found."""
    stored = message("a")
    await store.put(stored)
    with pytest.raises(MessageNotFoundError):
        await store.get(stored.hash[:10])


async def test_resolve_unique_prefixes_and_full_hashes(store: MessageStore) -> None:
    """resolve returns the one message a full hash or a unique prefix of 6+ chars names."""
    stored = [message(str(index)) for index in range(20)]
    await store.put_many(stored)
    for each in stored:
        for length in (6, 7, 12, 63, 64):
            assert (await store.resolve(each.hash[:length])).hash == each.hash


async def test_resolve_unknown_prefix_raises(store: MessageStore) -> None:
    """A well-formed prefix that no hash starts with raises MessageNotFoundError."""
    stored = message("a")
    await store.put(stored)
    other = "0" if stored.hash[0] != "0" else "1"
    with pytest.raises(MessageNotFoundError):
        await store.resolve(other + stored.hash[1:6])
    with pytest.raises(MessageNotFoundError):
        await store.resolve(UNKNOWN)
    with pytest.raises(MessageNotFoundError):
        await store.resolve(stored.hash[:-1] + ("0" if stored.hash[-1] != "0" else "1"))


async def test_resolve_ambiguous_prefix_raises(store: MessageStore) -> None:
    """A prefix shared by two hashes raises AmbiguousHashError; a longer one is unique."""
    first, second = colliding_pair()
    await store.put_many([first, second, message("other")])
    prefix = first.hash[:6]
    assert second.hash.startswith(prefix)
    with pytest.raises(AmbiguousHashError, match=prefix):
        await store.resolve(prefix)
    common = next(i for i, (a, b) in enumerate(zip(first.hash, second.hash, strict=True)) if a != b)
    assert (await store.resolve(first.hash[: common + 1])).hash == first.hash
    assert (await store.resolve(second.hash[: common + 1])).hash == second.hash


@pytest.mark.parametrize("prefix", INVALID_PREFIXES)
async def test_resolve_invalid_prefix_raises_value_error(store: MessageStore, prefix: str) -> None:
    """Anything but 6 to 64 lowercase hex characters is a ValueError, not a lookup."""
    await store.put(message("a"))
    with pytest.raises(ValueError, match="hexadecimal"):
        await store.resolve(prefix)


# -- the tree ------------------------------------------------------------------------------------


async def test_ancestors_are_root_first(store: MessageStore) -> None:
    """ancestors returns the branch from its root to the message itself, root first."""
    branch = chain("a", "b", "c", "d")
    side = chain("x", "y", parent=branch[1])
    await store.put_many(branch + side)
    assert hashes(await store.ancestors(branch[-1].hash)) == hashes(branch)
    assert hashes(await store.ancestors(side[-1].hash)) == hashes(branch[:2] + side)
    assert hashes(await store.ancestors(branch[0].hash)) == [branch[0].hash]


async def test_ancestors_of_a_long_branch(store: MessageStore) -> None:
    """A branch of 1,000 messages comes back whole and in order."""
    branch = chain(*(str(index) for index in range(1000)))
    await store.put_many(branch)
    assert hashes(await store.ancestors(branch[-1].hash)) == hashes(branch)


async def test_ancestors_of_unknown_hash_raises(store: MessageStore) -> None:
    """ancestors of a hash that is not stored raises MessageNotFoundError."""
    await store.put(message("a"))
    with pytest.raises(MessageNotFoundError):
        await store.ancestors(UNKNOWN)


async def test_children_are_sorted_by_hash_and_roots_are_children_of_none(
    store: MessageStore,
) -> None:
    """children(h) lists h's children by hash; children(None) lists the roots by hash."""
    roots = [message(f"root {index}") for index in range(10)]
    kids = [message(f"kid {index}", roots[0]) for index in range(10)]
    grandchild = message("grandchild", kids[0])
    await store.put_many([grandchild, *kids, *roots])
    assert hashes(await store.children(None)) == sorted(r.hash for r in roots)
    assert hashes(await store.children(roots[0].hash)) == sorted(k.hash for k in kids)
    assert hashes(await store.children(kids[0].hash)) == [grandchild.hash]
    assert await store.children(roots[1].hash) == []
    assert await store.children(UNKNOWN) == []


async def test_children_follow_the_parent_not_reply_to_or_original(store: MessageStore) -> None:
    """A reply or a forward is a child of its parent only."""
    root, call, reply, forward, error = every_kind()
    await store.put_many([root, call, reply, forward, error])
    assert hashes(await store.children(root.hash)) == [call.hash]
    assert hashes(await store.children(reply.hash)) == [forward.hash]
    assert hashes(await store.children(None)) == [root.hash]


# -- refs ----------------------------------------------------------------------------------------


async def test_refs_set_move_get_delete(store: MessageStore) -> None:
    """A ref is created, moved, read and deleted; the messages stay."""
    first, second = chain("a", "b")
    await store.put_many([first, second])
    assert await store.get_ref("main") is None
    await store.set_ref("main", first.hash)
    assert await store.get_ref("main") == first.hash
    await store.set_ref("main", second.hash)
    assert await store.get_ref("main") == second.hash
    await store.set_ref("other", second.hash)
    assert dict(await store.refs()) == {"main": second.hash, "other": second.hash}
    await store.delete_ref("main")
    assert await store.get_ref("main") is None
    assert dict(await store.refs()) == {"other": second.hash}
    await store.delete_ref("main")
    await store.delete_ref("never-existed")
    assert (await store.get(second.hash)).hash == second.hash
    assert await store.verify() == []


async def test_refs_lists_every_ref_sorted_by_name(store: MessageStore) -> None:
    """refs() returns every ref, name to hash, in name order (code point order)."""
    stored = message("a")
    await store.put(stored)
    for name in reversed(VALID_REF_NAMES):
        await store.set_ref(name, stored.hash)
    refs = await store.refs()
    assert list(refs) == sorted(VALID_REF_NAMES)
    assert set(refs.values()) == {stored.hash}


@pytest.mark.parametrize("name", VALID_REF_NAMES)
async def test_valid_ref_names_are_accepted(store: MessageStore, name: str) -> None:
    """Names like git branch names (slashes, dots, unicode, up to 255 chars) are accepted."""
    stored = message("a")
    await store.put(stored)
    await store.set_ref(name, stored.hash)
    assert await store.get_ref(name) == stored.hash


@pytest.mark.parametrize("name", INVALID_REF_NAMES)
async def test_invalid_ref_names_raise_value_error(store: MessageStore, name: str) -> None:
    """An empty name, white space, control characters, ~^:?*[\\ or 256 chars: ValueError."""
    stored = message("a")
    await store.put(stored)
    with pytest.raises(ValueError, match="ref name"):
        await store.set_ref(name, stored.hash)
    assert dict(await store.refs()) == {}


async def test_set_ref_to_unknown_hash_raises(store: MessageStore) -> None:
    """Pointing a ref at a hash that is not stored raises MessageNotFoundError; no ref made."""
    stored = message("a")
    await store.put(stored)
    await store.set_ref("main", stored.hash)
    with pytest.raises(MessageNotFoundError):
        await store.set_ref("other", UNKNOWN)
    with pytest.raises(MessageNotFoundError):
        await store.set_ref("main", UNKNOWN)
    assert dict(await store.refs()) == {"main": stored.hash}


async def test_a_ref_name_with_a_lone_surrogate_is_an_invalid_ref_name(
    store: MessageStore,
) -> None:
    """A ref name holding a lone surrogate is refused by every ref method, like other bad names."""
    stored = message("a")
    await store.put(stored)
    with pytest.raises(ValueError, match="not a valid ref name"):
        await store.set_ref("x\ud800", stored.hash)
    with pytest.raises(ValueError, match="not a valid ref name"):
        await store.get_ref("x\ud800")
    with pytest.raises(ValueError, match="not a valid ref name"):
        await store.delete_ref("x\ud800")
    assert dict(await store.refs()) == {}


# -- compare-and-set of refs ---------------------------------------------------------------------


async def test_set_ref_with_expected_none_creates_only_a_missing_ref(store: MessageStore) -> None:
    """expected=None creates the ref; a second such call finds it and raises, moving nothing."""
    first, second = chain("a", "b")
    await store.put_many([first, second])
    await store.set_ref("main", first.hash, expected=None)
    assert await store.get_ref("main") == first.hash
    with pytest.raises(RefConflictError) as conflict:
        await store.set_ref("main", second.hash, expected=None)
    assert (conflict.value.name, conflict.value.expected, conflict.value.actual) == (
        "main",
        None,
        first.hash,
    )
    assert str(conflict.value) == (
        f"ref 'main' was expected not to exist, but it points at {first.hash}: another "
        "writer moved it; read it again and retry"
    )
    assert await store.get_ref("main") == first.hash


async def test_set_ref_with_expected_moves_only_from_there(store: MessageStore) -> None:
    """expected=HASH moves the ref only if it points at HASH now; else RefConflictError."""
    first, second, third = chain("a", "b", "c")
    await store.put_many([first, second, third])
    with pytest.raises(RefConflictError, match="but it does not exist") as conflict:
        await store.set_ref("main", second.hash, expected=first.hash)
    assert (conflict.value.expected, conflict.value.actual) == (first.hash, None)
    assert await store.get_ref("main") is None
    await store.set_ref("main", first.hash)
    await store.set_ref("main", second.hash, expected=first.hash)
    assert await store.get_ref("main") == second.hash
    with pytest.raises(RefConflictError) as conflict:
        await store.set_ref("main", third.hash, expected=first.hash)
    assert str(conflict.value) == (
        f"ref 'main' was expected to point at {first.hash}, but it points at {second.hash}: "
        "another writer moved it; read it again and retry"
    )
    assert await store.get_ref("main") == second.hash
    await store.set_ref("main", second.hash, expected=second.hash)
    await store.set_ref("other", third.hash, expected=None)
    assert dict(await store.refs()) == {"main": second.hash, "other": third.hash}
    assert await store.verify() == []


@pytest.mark.parametrize("expected", ["", "abcdef", "A" * 64, "main", 42])
async def test_expected_is_a_full_hash_or_none(store: MessageStore, expected: Any) -> None:
    """An expected value that is not a full hash (a prefix, a ref name) is a ValueError."""
    stored = message("a")
    await store.put(stored)
    with pytest.raises(ValueError, match="expected must be a full message hash"):
        await store.set_ref("main", stored.hash, expected=expected)
    assert dict(await store.refs()) == {}


async def test_a_missing_message_is_reported_before_a_conflict(store: MessageStore) -> None:
    """A compare-and-set to a hash that is not stored raises MessageNotFoundError, whatever
    ``expected`` says; the ref stays."""
    stored = message("a")
    await store.put(stored)
    await store.set_ref("main", stored.hash)
    for expected in (None, stored.hash, UNKNOWN):
        with pytest.raises(MessageNotFoundError):
            await store.set_ref("main", UNKNOWN, expected=expected)
    assert dict(await store.refs()) == {"main": stored.hash}


async def test_concurrent_compare_and_sets_from_one_state_let_exactly_one_win(
    store: MessageStore,
) -> None:
    """Many tasks move one ref from the same hash, each to its own message: one moves it."""
    root = message("root")
    children = [message(str(index), root) for index in range(10)]
    await store.put_many([root, *children])
    await store.set_ref("main", root.hash)
    outcomes: list[str | None] = []

    async def move(child: Message) -> None:
        try:
            await store.set_ref("main", child.hash, expected=root.hash)
        except RefConflictError as conflict:
            outcomes.append(conflict.actual)
        else:
            outcomes.append(None)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            for child in children:
                group.start_soon(move, child)
    winner = await store.get_ref("main")
    assert outcomes.count(None) == 1
    assert sorted(outcomes, key=str) == sorted([None] + [winner] * 9, key=str)


# -- the cache index -------------------------------------------------------------------------------


async def test_cache_put_and_get(store: MessageStore) -> None:
    """put_cached records the responses of a call, in order; get_cached returns them."""
    root, call, reply, forward, error = every_kind()
    await store.put_many([root, call, reply, forward, error])
    assert await store.get_cached(call.hash) is None
    await store.put_cached(call.hash, [reply.hash, forward.hash])
    assert list(await store.get_cached(call.hash) or ()) == [reply.hash, forward.hash]
    await store.put_cached(call.hash, [reply.hash])
    assert list(await store.get_cached(call.hash) or ()) == [reply.hash]
    await store.put_cached(call.hash, [])
    cached = await store.get_cached(call.hash)
    assert cached is not None
    assert list(cached) == []
    assert await store.verify() == []


@pytest.mark.parametrize(
    ("key", "responses", "reason"),
    [
        ("root", [], "key is a message of kind 'message', not a call"),
        ("error", [], "key is a message of kind 'error', not a call"),
        ("call", ["forward", "reply"], "response .* does not continue the branch of the call"),
        ("call", ["forward"], "response .* does not continue the branch of the call"),
        ("call", ["reply", "reply"], "response .* does not continue the branch of the call"),
        ("call", ["reply", "error"], "response .* does not continue the branch of the call"),
    ],
)
async def test_cache_entry_that_is_not_the_calls_branch_is_refused(
    store: MessageStore, key: str, responses: list[str], reason: str
) -> None:
    """put_cached records only a call's own branch: ValueError otherwise, nothing recorded."""
    root, call, reply, forward, error = every_kind()
    named = {"root": root, "call": call, "reply": reply, "forward": forward, "error": error}
    await store.put_many(named.values())
    await store.put_cached(call.hash, [reply.hash])
    with pytest.raises(ValueError, match=f"^cannot record a cache entry for {named[key].hash}: "):
        await store.put_cached(named[key].hash, [named[each].hash for each in responses])
    with pytest.raises(ValueError, match=reason):
        await store.put_cached(named[key].hash, [named[each].hash for each in responses])
    assert list(await store.get_cached(call.hash) or ()) == [reply.hash]
    assert await store.get_cached(root.hash) is None
    assert await store.verify() == []


async def test_cache_with_unknown_call_or_response_raises(store: MessageStore) -> None:
    """put_cached with a call or a response that is not stored raises; nothing is recorded."""
    root, call = every_kind()[:2]
    await store.put_many([root, call])
    with pytest.raises(MessageNotFoundError, match="call"):
        await store.put_cached(UNKNOWN, [root.hash])
    with pytest.raises(MessageNotFoundError, match="response"):
        await store.put_cached(call.hash, [root.hash, UNKNOWN])
    assert await store.get_cached(UNKNOWN) is None
    assert await store.get_cached(call.hash) is None


def edit_cache(store: MessageStore, entries: dict[str, list[str]]) -> None:
    """Write cache entries behind the store's back, as a tamperer (or a bad disk) would.

    With sqlite3 in an SQLiteStore's file; with psycopg in a PostgresStore's database; in a
    MemoryStore's private index (white box: a MemoryStore lets nothing else write there).
    """
    if isinstance(store, PostgresStore):
        import psycopg

        # White box: the store's URL with its password, if it has one. A replica's session
        # role does not check foreign keys, as a tamperer would not.
        with psycopg.connect(store._target.url, autocommit=True) as connection:
            connection.execute("SET session_replication_role = replica")
            for call, responses in entries.items():
                connection.execute(
                    "INSERT INTO cache (call, responses) VALUES (%s, %s) "
                    "ON CONFLICT (call) DO UPDATE SET responses = excluded.responses",
                    (bytes.fromhex(call), json.dumps(responses)),
                )
    elif isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as connection, connection:
            connection.executemany(
                "INSERT OR REPLACE INTO cache (call, responses) VALUES (?, ?)",
                [
                    (bytes.fromhex(call), json.dumps(responses))
                    for call, responses in entries.items()
                ],
            )
    else:
        assert isinstance(store, MemoryStore)
        store._cache.update((call, tuple(responses)) for call, responses in entries.items())


async def test_verify_reports_every_cache_entry_that_is_not_its_calls_branch(
    store: MessageStore,
) -> None:
    """verify() checks every cache entry: its key a stored call, its responses the call's branch.

    One problem per thing wrong, under the call's hash: another call's answer, responses
    reordered, missing, not stored, a key that is not a call or not stored.
    """
    root, call, reply, forward, error = every_kind()
    other = CallMessage(receiver="other", parent=root.hash)
    other_reply = message("other's answer", other)
    lone = CallMessage(receiver="lone", parent=reply.hash)
    await store.put_many([root, call, reply, forward, error, other, other_reply, lone])
    await store.put_cached(call.hash, [reply.hash, forward.hash])
    await store.put_cached(other.hash, [other_reply.hash])
    assert await store.verify() == []
    edit_cache(
        store,
        {
            call.hash: [forward.hash, reply.hash],
            other.hash: [reply.hash],
            lone.hash: [UNKNOWN],
            root.hash: [],
            UNKNOWN: [],
        },
    )
    problems = sorted((problem.hash, problem.reason) for problem in await store.verify())
    assert problems == sorted(
        [
            (
                call.hash,
                f"cached response {forward.hash} does not continue the branch of the "
                f"call (its parent is {reply.hash}, not {call.hash})",
            ),
            (
                call.hash,
                f"cached response {reply.hash} does not continue the branch of the "
                f"call (its parent is {call.hash}, not {forward.hash})",
            ),
            (
                other.hash,
                f"cached response {reply.hash} does not continue the branch of the "
                f"call (its parent is {call.hash}, not {other.hash})",
            ),
            (lone.hash, f"cached response {UNKNOWN} is not in the store"),
            (root.hash, "a cache entry's key is a message of kind 'message', not a call"),
            (UNKNOWN, "a cached call is not in the store"),
        ]
    )


# -- claims on calls in flight (ClaimingStore) ---------------------------------------------------

CALL = "c" * 64


@pytest.fixture(params=["sqlite", "postgres"])
async def claiming(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ClaimingStore]:
    """A fresh store of each kind that holds claims, closed afterwards."""
    new = shared(request, tmp_path)
    yield new
    await new.aclose()


def test_the_memory_store_holds_no_claims() -> None:
    """A MemoryStore serves one process, whose forums run identical calls once already: it
    is no ClaimingStore (a forum on it keeps single flight within itself)."""
    assert not isinstance(MemoryStore(), ClaimingStore)


async def test_a_claim_is_held_by_one_owner_until_released(claiming: ClaimingStore) -> None:
    """The first owner takes a free claim; another finds it held, with the lease left; the
    holder renews it; a release by another owner does nothing; the holder's frees it."""
    taken = await claiming.claim(CALL, "alice", 60)
    assert taken.owner == "alice"
    assert 0 < taken.lease_left <= 60
    assert not taken.answered
    held = await claiming.claim(CALL, "bob", 60)
    assert held.owner == "alice"
    assert 0 < held.lease_left <= 60
    assert (await claiming.claim(CALL, "alice", 120)).lease_left > 60
    await claiming.release(CALL, "bob")
    assert (await claiming.claim(CALL, "bob", 60)).owner == "alice"
    await claiming.release(CALL, "alice")
    await claiming.release(CALL, "alice")
    assert (await claiming.claim(CALL, "bob", 60)).owner == "bob"
    assert (await claiming.claim("d" * 64, "carol", 60)).owner == "carol"


async def test_a_claim_whose_lease_ran_out_is_taken_over(claiming: ClaimingStore) -> None:
    """Once the holder's lease has run out (it stopped renewing: it died), another owner
    takes the claim; the late holder's release then leaves the new holder's claim alone."""
    await claiming.claim(CALL, "dead", 0.001)
    with anyio.fail_after(10):
        # Until the store's clock passes the lease: it is the time, not an order of tasks.
        while (await claiming.claim(CALL, "heir", 60)).owner != "heir":  # noqa: ASYNC110
            await anyio.sleep(0.001)
    await claiming.release(CALL, "dead")
    assert (await claiming.claim(CALL, "other", 60)).owner == "heir"


async def test_waiting_for_a_claim_returns_once_it_is_released(claiming: ClaimingStore) -> None:
    """wait_released returns at once for a call nobody claims, and otherwise once the
    holder releases the claim."""
    with anyio.fail_after(10):
        await claiming.wait_released(CALL, poll=0.01)
        await claiming.claim(CALL, "holder", 60)
        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(claiming.wait_released, CALL, poll=0.01))
            await anyio.wait_all_tasks_blocked()
            await claiming.release(CALL, "holder")


async def test_recording_the_answer_releases_the_claim_and_wakes_the_waiters(
    claiming: ClaimingStore,
) -> None:
    """put_cached of the call ends the claim on it, whoever holds it, and the wait for it;
    a claim taken afterwards says that the call is answered."""
    assert isinstance(claiming, MessageStore)
    _, call, reply = every_kind()[:3]
    await claiming.put_many([*every_kind()[:3]])
    await claiming.claim(call.hash, "holder", 60)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(claiming.wait_released, call.hash, poll=0.01))
            await anyio.wait_all_tasks_blocked()
            await claiming.put_cached(call.hash, [reply.hash])
    after = await claiming.claim(call.hash, "late", 60)
    assert (after.owner, after.answered) == ("late", True)


async def test_waiting_for_a_claim_can_be_cancelled(claiming: ClaimingStore) -> None:
    """A wait for a claim that is never released ends when it is cancelled."""
    await claiming.claim(CALL, "holder", 60)
    with anyio.fail_after(10), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(claiming.wait_released, CALL, poll=0.01))
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught


@pytest.mark.parametrize(
    ("call", "owner", "lease"),
    [
        ("abc", "o", 1.0),
        ("C" * 64, "o", 1.0),
        (CALL, "", 1.0),
        (CALL, "o", 0),
        (CALL, "o", -1),
        (CALL, "o", float("inf")),
        (CALL, "o", float("nan")),
        (CALL, "o", True),
    ],
)
async def test_a_claim_takes_a_full_hash_an_owner_and_a_positive_lease(
    claiming: ClaimingStore, call: str, owner: str, lease: float
) -> None:
    """claim refuses a call that is not a full hash, an empty owner, a lease that is not a
    positive number of seconds; release and wait_released refuse what is not a hash, and
    wait_released a poll that is not positive."""
    with pytest.raises(ValueError, match=r"full hash|owner|lease"):
        await claiming.claim(call, owner, lease)
    with pytest.raises(ValueError, match="full hash"):
        await claiming.release("abc", "o")
    with pytest.raises(ValueError, match="full hash"):
        await claiming.wait_released("abc", poll=1)
    with pytest.raises(ValueError, match="poll"):
        await claiming.wait_released(CALL, poll=0)


@hypothesis.settings(max_examples=20)
@hypothesis.given(
    steps=st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=12)
)
async def test_a_claim_has_one_holder_at_a_time(
    claiming: ClaimingStore, steps: list[tuple[bool, str]]
) -> None:
    """For all sequences of claims and releases by several owners (leases that never run
    out), the claim is held by the owner a model says: the first to claim it since it was
    last released by its holder."""
    call = uuid.uuid4().hex * 2  # a call of its own per example
    holder: str | None = None
    for claims, owner in steps:
        if claims:
            holder = holder or owner
            assert (await claiming.claim(call, owner, 600)).owner == holder
        else:
            await claiming.release(call, owner)
            holder = None if holder == owner else holder


# -- integrity and closing --------------------------------------------------------------------


async def test_verify_finds_nothing_wrong_in_a_sound_store(store: MessageStore) -> None:
    """verify() is [] for a store holding every kind, refs and cache entries."""
    originals = every_kind()
    await store.put_many(originals)
    await store.put_many(chain("x", "y", parent=originals[2]))
    await store.set_ref("main", originals[-1].hash)
    await store.put_cached(originals[1].hash, [originals[2].hash])
    assert await store.verify() == []


async def test_store_is_usable_after_aclose(store: MessageStore) -> None:
    """After aclose, the store still reads what it held and accepts writes (reopened lazily)."""
    branch = chain("a", "b")
    await store.put_many(branch)
    await store.set_ref("main", branch[-1].hash)
    await store.aclose()
    await store.aclose()
    assert (await store.get(branch[-1].hash)).hash == branch[-1].hash
    assert await store.get_ref("main") == branch[-1].hash
    await store.put(message("c", branch[-1]))
    assert len(await store.ancestors(message("c", branch[-1]).hash)) == 3


# -- the state machine ---------------------------------------------------------------------------

TEXTS = st.text(st.characters(codec="utf-8"), max_size=8)
SENDERS = st.sampled_from(["user", "agent", "ü"])
REF_NAMES = st.sampled_from(["main", "dev", "feature/ü", "x"])
METADATA = st.dictionaries(
    st.sampled_from(["a", "b", "ü"]),
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXTS,
    max_size=2,
)


class StoreMachine(RuleBasedStateMachine):
    """A store compared, step by step, with a dict model of messages, refs and cache entries.

    Subclasses set ``kind`` ("memory", "sqlite" or "postgres") and ``backend``; the store's
    coroutines run on a blocking portal of that backend, opened for one run of the machine (a
    PostgresStore in a database of its own, dropped after the run).
    """

    kind: ClassVar[str] = "memory"
    backend: ClassVar[str] = "asyncio"

    stored = Bundle("stored")

    def __init__(self) -> None:
        super().__init__()
        self._exit = contextlib.ExitStack()
        options = {"debug": True} if self.backend == "asyncio" else {}
        self.portal: BlockingPortal = self._exit.enter_context(
            start_blocking_portal(self.backend, options)
        )
        if self.kind == "memory":
            self.store: MessageStore = MemoryStore()
        elif self.kind == "postgres":
            self.store = PostgresStore(self._exit.enter_context(pg_server.server().database()))
        else:
            directory = self._exit.enter_context(tempfile.TemporaryDirectory())
            self.store = SQLiteStore(os.path.join(directory, "machine.db"))
        self.messages: dict[str, Message] = {}
        self.refs: dict[str, str] = {}
        self.cache: dict[str, tuple[str, ...]] = {}

    def teardown(self) -> None:
        try:
            self.call(self.store.aclose)
        finally:
            self._exit.close()

    def call(self, function: Callable[..., Coroutine[object, object, T]], *args: object) -> T:
        result: T = self.portal.call(function, *args)
        return result

    # -- the model ---------------------------------------------------------------------------

    def missing_link(self, messages: list[Message]) -> bool:
        known = set(self.messages) | {each.hash for each in messages}
        return any(
            link is not None and link not in known
            for each in messages
            for link in (each.parent, each.reply_to, getattr(each, "original", None))
        )

    def model_put(self, messages: list[Message]) -> None:
        for each in messages:
            self.messages.setdefault(each.hash, each)

    def model_ancestors(self, key: str) -> list[str]:
        branch = []
        current: str | None = key
        while current is not None:
            branch.append(current)
            current = self.messages[current].parent
        return branch[::-1]

    def model_children(self, key: str | None) -> list[str]:
        return sorted(h for h, each in self.messages.items() if each.parent == key)

    def model_is_branch(self, call: Message, responses: list[Message]) -> bool:
        parents = [call.hash, *(each.hash for each in responses)][:-1]
        return isinstance(call, CallMessage) and all(
            each.parent == parent for each, parent in zip(responses, parents, strict=True)
        )

    def put(self, new: Message) -> Message:
        self.call(self.store.put, new)
        self.model_put([new])
        return new

    # -- rules: messages -----------------------------------------------------------------------

    @rule(target=stored, content=TEXTS, sender=SENDERS, metadata=METADATA)
    def put_root(self, content: str, sender: str, metadata: dict[str, object]) -> Message:
        return self.put(Message(content=content, sender=sender, metadata=metadata))

    @rule(target=stored, parent=stored, content=TEXTS, sender=SENDERS)
    def put_child(self, parent: Message, content: str, sender: str) -> Message:
        return self.put(Message(content=content, sender=sender, parent=parent.hash))

    @rule(target=stored, parent=stored, reply_to=stored, content=TEXTS)
    def put_reply(self, parent: Message, reply_to: Message, content: str) -> Message:
        new = Message(content=content, sender="agent", parent=parent.hash, reply_to=reply_to.hash)
        return self.put(new)

    @rule(target=stored, parent=st.none() | stored, original=stored, sender=SENDERS)
    def put_forward(self, parent: Message | None, original: Message, sender: str) -> Message:
        first = original.original if isinstance(original, ForwardedMessage) else original.hash
        new = ForwardedMessage(
            content=original.content,
            sender=sender,
            parent=None if parent is None else parent.hash,
            original=first,
        )
        return self.put(new)

    @rule(target=stored, parent=stored, receiver=SENDERS, kwargs=METADATA)
    def put_call(self, parent: Message, receiver: str, kwargs: dict[str, object]) -> Message:
        return self.put(CallMessage(receiver=receiver, kwargs=kwargs, parent=parent.hash))

    @rule(target=stored, parent=stored, content=TEXTS)
    def put_error(self, parent: Message, content: str) -> Message:
        new = ErrorMessage(content=content, sender="agent", error_type="E", parent=parent.hash)
        return self.put(new)

    @rule(message=stored)
    def put_again(self, message: Message) -> None:
        before = self.model_children(message.parent)
        self.call(self.store.put, message)
        assert [m.hash for m in self.call(self.store.children, message.parent)] == before

    @rule(
        target=stored,
        start=st.none() | stored,
        contents=st.lists(TEXTS, min_size=1, max_size=4),
        seed=st.integers(0, 1000),
    )
    def put_many(
        self, start: Message | None, contents: list[str], seed: int
    ) -> MultipleResults[Message]:
        batch = chain(*contents, parent=start)
        if start is not None:
            batch.append(start)  # already stored: a batch may repeat it
        random.Random(seed).shuffle(batch)
        self.call(self.store.put_many, batch)
        self.model_put(batch)
        return multiple(*batch)

    @rule(
        start=st.none() | stored,
        contents=st.lists(TEXTS, min_size=1, max_size=3),
        field=st.sampled_from(["parent", "reply_to", "original"]),
        seed=st.integers(0, 1000),
    )
    def put_many_with_a_missing_link(
        self, start: Message | None, contents: list[str], field: str, seed: int
    ) -> None:
        batch = chain(*contents, parent=start)
        links: dict[str, Any] = {
            "parent": None,
            "reply_to": None,
            "original": batch[0].hash,
            field: UNKNOWN,
        }
        batch.append(ForwardedMessage(content="bad", sender="s", **links))
        random.Random(seed).shuffle(batch)
        assert self.missing_link(batch)
        with pytest.raises(MessageNotFoundError, match=field):
            self.call(self.store.put_many, batch)
        # The model is unchanged: check that none of the batch was stored.
        for each in batch:
            if each.hash not in self.messages:
                with pytest.raises(MessageNotFoundError):
                    self.call(self.store.get, each.hash)

    # -- rules: refs and cache -----------------------------------------------------------------

    @rule(name=REF_NAMES, message=stored)
    def set_ref(self, name: str, message: Message) -> None:
        self.call(self.store.set_ref, name, message.hash)
        self.refs[name] = message.hash

    @rule(
        name=REF_NAMES,
        message=stored,
        expected=st.none() | stored,
        as_it_is=st.booleans(),
    )
    def set_ref_if(
        self, name: str, message: Message, expected: Message | None, as_it_is: bool
    ) -> None:
        """A compare-and-set moves the ref if and only if it is where it was said to be."""
        current = self.refs.get(name)
        wanted = current if as_it_is else None if expected is None else expected.hash
        move = functools.partial(self.store.set_ref, name, message.hash, expected=wanted)
        if wanted == current:
            self.call(move)
            self.refs[name] = message.hash
        else:
            with pytest.raises(RefConflictError) as conflict:
                self.call(move)
            assert (conflict.value.name, conflict.value.expected) == (name, wanted)
            assert conflict.value.actual == current

    @rule(name=REF_NAMES)
    def set_ref_to_unknown(self, name: str) -> None:
        with pytest.raises(MessageNotFoundError):
            self.call(self.store.set_ref, name, UNKNOWN)

    @rule(name=REF_NAMES)
    def delete_ref(self, name: str) -> None:
        self.call(self.store.delete_ref, name)
        self.refs.pop(name, None)

    @rule(name=REF_NAMES)
    def get_ref(self, name: str) -> None:
        assert self.call(self.store.get_ref, name) == self.refs.get(name)

    def record(self, call: Message, responses: list[Message]) -> None:
        """put_cached: recorded if the responses are the call's branch, refused if not."""
        hashes = [each.hash for each in responses]
        if self.model_is_branch(call, responses):
            self.call(self.store.put_cached, call.hash, hashes)
            self.cache[call.hash] = tuple(hashes)
        else:
            with pytest.raises(ValueError, match="cannot record a cache entry"):
                self.call(self.store.put_cached, call.hash, hashes)

    @rule(call=stored, responses=st.lists(stored, max_size=3))
    def put_cached(self, call: Message, responses: list[Message]) -> None:
        self.record(call, responses)

    @rule(call=stored, length=st.integers(0, 3), seed=st.integers(0, 1000))
    def put_cached_branch(self, call: Message, length: int, seed: int) -> None:
        # A branch below the call, as a call's responses are: down a random child each time.
        responses: list[Message] = []
        children = self.model_children(call.hash)
        while children and len(responses) < length:
            responses.append(self.messages[random.Random(seed).choice(children)])
            children = self.model_children(responses[-1].hash)
        self.record(call, responses)

    @rule(call=stored, responses=st.lists(stored, max_size=2))
    def put_cached_unknown_response(self, call: Message, responses: list[Message]) -> None:
        with pytest.raises(MessageNotFoundError):
            self.call(self.store.put_cached, call.hash, [*(r.hash for r in responses), UNKNOWN])

    # -- checks --------------------------------------------------------------------------------

    @rule(message=stored)
    def check_message(self, message: Message) -> None:
        key = message.hash
        got = self.call(self.store.get, key)
        assert type(got) is type(self.messages[key])
        assert encode_message(got) == encode_message(self.messages[key])
        assert (self.call(self.store.resolve, key[:12])).hash == key
        ancestors = self.call(self.store.ancestors, key)
        assert [each.hash for each in ancestors] == self.model_ancestors(key)
        children = self.call(self.store.children, key)
        assert [each.hash for each in children] == self.model_children(key)
        cached = self.call(self.store.get_cached, key)
        expected = self.cache.get(key)
        assert (None if cached is None else tuple(cached)) == expected

    @precondition(lambda self: self.kind != "memory")
    @rule()
    def reopen(self) -> None:
        self.call(self.store.aclose)

    @invariant()
    def refs_roots_and_verify_agree(self) -> None:
        assert dict(self.call(self.store.refs)) == self.refs
        roots = self.call(self.store.children, None)
        assert [each.hash for each in roots] == self.model_children(None)
        assert self.call(self.store.verify) == []


def _machine(kind: str, backend: str) -> type[StoreMachine]:
    return type(
        f"StoreMachine_{kind}_{backend}", (StoreMachine,), {"kind": kind, "backend": backend}
    )


MACHINE_SETTINGS = hypothesis.settings(max_examples=25, stateful_step_count=20, deadline=None)


class TestMemoryStoreMachineOnAsyncio(_machine("memory", "asyncio").TestCase):  # type: ignore[misc]
    """MemoryStore agrees with the dict model on asyncio, whatever the steps."""

    settings = MACHINE_SETTINGS


class TestMemoryStoreMachineOnTrio(_machine("memory", "trio").TestCase):  # type: ignore[misc]
    """MemoryStore agrees with the dict model on Trio, whatever the steps."""

    settings = MACHINE_SETTINGS


class TestSQLiteStoreMachineOnAsyncio(_machine("sqlite", "asyncio").TestCase):  # type: ignore[misc]
    """SQLiteStore agrees with the dict model on asyncio, whatever the steps."""

    settings = MACHINE_SETTINGS


class TestSQLiteStoreMachineOnTrio(_machine("sqlite", "trio").TestCase):  # type: ignore[misc]
    """SQLiteStore agrees with the dict model on Trio, whatever the steps."""

    settings = MACHINE_SETTINGS


@pytest.mark.slow
class TestPostgresStoreMachineOnAsyncio(_machine("postgres", "asyncio").TestCase):  # type: ignore[misc]
    """PostgresStore agrees with the dict model on asyncio, whatever the steps."""

    settings = MACHINE_SETTINGS


@pytest.mark.slow
class TestPostgresStoreMachineOnTrio(_machine("postgres", "trio").TestCase):  # type: ignore[misc]
    """PostgresStore agrees with the dict model on Trio, whatever the steps."""

    settings = MACHINE_SETTINGS
