"""Integrity you can trust: what a store accepts it reads back, and what it reads it checks.

- Nesting: metadata and keyword arguments are refused past 100 levels (``TypeError``) even
  when the depth comes from :class:`FrozenDict` objects nested in each other, and anything
  accepted round-trips through the encoding, an :class:`SQLiteStore` and export/import.
- Content: refused at the call site with ``TypeError`` when it is nested without end or is
  a str that is not valid Unicode, never later as an agent's failure.
- The cache index: an entry that does not continue its call's own branch is a miss,
  reported with an :class:`IntegrityWarning`, and every entry is checked by ``fsck``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentforum import (
    AgentError,
    CallMessage,
    Forum,
    FrozenDict,
    IntegrityError,
    IntegrityWarning,
    InteractionContext,
    MemoryStore,
    Message,
    MessageStore,
    SQLiteStore,
    decode_message,
    encode_message,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

#: The deepest nesting a metadata or kwargs value may have (documented in docs/hashing.md).
LIMIT = 100
#: The most lists content may nest (documented in docs/concepts.md).
MAX_CONTENT_NESTING = 100


async def agentforum(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the real ``agentforum`` entry point (``python -m agentforum ARGS``) in a process."""
    done = await anyio.run_process(
        [sys.executable, "-m", "agentforum", *map(str, args)], check=False
    )
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    return subprocess.CompletedProcess(done.args, done.returncode, stdout, stderr)


async def assert_sound(path: Path) -> None:
    """``fsck`` passes on the database at ``path``, and ``export`` of it works."""
    fsck = await agentforum("fsck", "--db", path)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "sound" in fsck.stdout
    export = await agentforum("export", "--db", path)
    assert export.returncode == 0, export.stderr
    assert "Traceback" not in export.stderr


async def all_messages(store: MessageStore) -> list[Message]:
    """Every message of ``store``, read back from it, parents before children."""
    found: list[Message] = []
    pending: list[str | None] = [None]
    while pending:
        for child in await store.children(pending.pop()):
            found.append(child)
            pending.append(child.hash)
    return found


# -- nesting ---------------------------------------------------------------------------------------


def nested_metadata(levels: int) -> FrozenDict:
    """The metadata of a message whose metadata holds its predecessor's, ``levels`` times."""
    message = Message(content="x", sender="user")
    for _ in range(levels):
        message = Message(content="x", sender="user", metadata={"m": message.metadata})
    return FrozenDict(message.metadata)


def test_metadata_nested_in_itself_past_the_limit_is_a_type_error() -> None:
    """A message's own metadata put in new metadata, 101 times, is refused at construction.

    Each step is a FrozenDict placed inside a new mapping: the depth it brings counts as if
    it were a plain dict. At 100 steps the message is the deepest there may be; one more is a
    ``TypeError`` naming the path, for metadata and for kwargs alike.
    """
    deepest = nested_metadata(LIMIT)
    Message(content="x", sender="user", metadata=deepest)
    with pytest.raises(TypeError, match=r"^metadata\['m'\] .*nested more than 100 levels deep"):
        Message(content="x", sender="user", metadata={"m": deepest})
    with pytest.raises(TypeError, match=re.escape("kwargs['m']")):
        CallMessage(receiver="r", kwargs={"m": deepest})
    with pytest.raises(TypeError, match="nested more than 100 levels"):
        FrozenDict({"m": deepest})
    with pytest.raises(TypeError, match="nested more than 100 levels"):
        Message(content="x", sender="user", metadata={"list": [deepest]})


def test_plain_nesting_past_the_limit_is_a_type_error() -> None:
    """Lists and dicts nested past the limit are a TypeError too: a value JSON here cannot hold."""
    value: object = 0
    for _ in range(LIMIT + 1):
        value = [value]
    with pytest.raises(TypeError, match=r"is nested more than 100 levels deep"):
        Message(content="x", sender="user", metadata={"deep": value})
    value = {}
    for _ in range(10_000):
        value = {"d": value}
    with pytest.raises(TypeError, match=r"is nested more than 100 levels deep"):
        Message(content="x", sender="user", metadata=value)


@pytest.mark.anyio
async def test_a_message_at_the_limit_round_trips_through_sqlite_and_export(
    tmp_path: Path,
) -> None:
    """The deepest metadata there may be is stored, read back, exported and imported whole."""
    deepest = nested_metadata(LIMIT)
    message = Message(content="deep", sender="user", metadata=deepest)
    call = CallMessage(receiver="r", kwargs=deepest, parent=message.hash)
    assert decode_message(encode_message(message), message.content) == message
    path = tmp_path / "deep.db"
    store = SQLiteStore(path)
    try:
        await store.put_many([message, call])
        assert (await store.get(message.hash)).metadata == deepest
        assert (await store.get(call.hash)).kwargs == deepest  # type: ignore[attr-defined]
        assert await store.verify() == []
    finally:
        await store.aclose()
    await assert_sound(path)
    bundle = tmp_path / "deep.jsonl"
    assert (await agentforum("export", "--db", path, "-o", bundle)).returncode == 0
    imported = await agentforum("import", bundle, "--db", tmp_path / "copy.db")
    assert imported.returncode == 0, imported.stderr
    copy = SQLiteStore(tmp_path / "copy.db", create=False)
    try:
        assert await copy.get(call.hash) == call
    finally:
        await copy.aclose()


@pytest.mark.anyio
async def test_deep_kwargs_and_metadata_are_refused_at_the_call_site(tmp_path: Path) -> None:
    """ask(kwarg=too deep) and ctx.respond(meta=too deep) raise TypeError; nothing is stored.

    The value is the deepest metadata there may be: as a keyword argument or a metadata
    value it is one level deeper. The database stays readable: fsck and export pass.
    """
    too_deep = nested_metadata(LIMIT)
    path = tmp_path / "forum.db"
    forum = Forum(path)
    refusals: list[str] = []

    @forum.agent
    async def echo(ctx: InteractionContext, **kwargs: object) -> None:
        try:
            ctx.respond("answer", meta=too_deep)
        except TypeError as exc:
            refusals.append(str(exc))
        ctx.respond("answer without it")

    async with forum:
        with pytest.raises(TypeError, match=re.escape("kwargs['deep']")):
            echo.ask("q", deep=too_deep)
        assert await all_messages(forum.store) == []
        with pytest.raises(TypeError, match="nested more than 100 levels"):
            echo.ask("q", wrapped={"in": [too_deep]})
        answer = await echo.ask("q").last()
        assert answer.content == "answer without it"
        assert len(refusals) == 1
        assert refusals[0].startswith("metadata['meta']")
        assert len(await all_messages(forum.store)) == 3  # request, call, answer
    await assert_sound(path)


#: Each level of a nested value: a list, a tuple, a dict, or a FrozenDict of the level below.
LEVELS = st.sampled_from(["list", "tuple", "dict", "frozen"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=4),
)


@st.composite
def nested_values(draw: st.DrawFn) -> tuple[object, int]:
    """A value nested 0 to 105 levels deep, with its depth; FrozenDicts built from FrozenDicts.

    Each level is a list, tuple, dict or FrozenDict holding the level below and, at times, a
    scalar beside it. A FrozenDict is built only while the value inside is within the limit
    (FrozenDict() itself refuses more), so its depth is checked where it is nested.
    """
    value: object = draw(SCALARS)
    depth = 0
    for _ in range(draw(st.integers(0, LIMIT + 5))):
        kind = draw(LEVELS)
        extra = draw(st.none() | SCALARS)
        if kind == "frozen" and depth >= LIMIT:
            kind = "dict"
        if kind in ("list", "tuple"):
            items = [value] if extra is None else [extra, value]
            value = items if kind == "list" else tuple(items)
        else:
            mapping = {"v": value} if extra is None else {"x": extra, "v": value}
            value = FrozenDict(mapping) if kind == "frozen" else mapping
        depth += 1
    return value, depth


@given(drawn=nested_values())
@pytest.mark.anyio
async def test_a_value_is_accepted_exactly_when_within_the_limit_and_then_round_trips(
    tmp_path: Path, drawn: tuple[object, int]
) -> None:
    """For all nested values: accepted iff nested at most 100 levels inside the metadata;
    then the message round-trips through its encoding and an SQLiteStore."""
    value, depth = drawn
    if depth > LIMIT:
        with pytest.raises(TypeError, match="nested more than 100 levels"):
            Message(content="x", sender="user", metadata={"k": value})
        with pytest.raises(TypeError, match="nested more than 100 levels"):
            CallMessage(receiver="r", kwargs={"k": value})
        return
    message = Message(content="x", sender="user", metadata={"k": value})
    call = CallMessage(receiver="r", kwargs={"k": value}, parent=message.hash)
    assert decode_message(encode_message(message), message.content) == message
    assert decode_message(encode_message(call)) == call
    store = SQLiteStore(tmp_path / "property.db")
    try:
        await store.put_many([message, call])
        assert [await store.get(message.hash), await store.get(call.hash)] == [message, call]
    finally:
        await store.aclose()


# -- content ---------------------------------------------------------------------------------------


def deeply_nested(levels: int) -> list[Any]:
    """The request "x" inside ``levels`` nested lists."""
    content: list[Any] = ["x"]
    for _ in range(levels - 1):
        content = [content]
    return content


def self_containing() -> list[Any]:
    """A list that holds itself: content nested without end."""
    content: list[Any] = ["x"]
    content.append(content)
    return content


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content", [deeply_nested(10_000), self_containing()], ids=["deep", "loop"]
)
async def test_content_nested_without_end_is_a_type_error_at_the_call_site(
    content: list[Any],
) -> None:
    """Content nested 10,000 lists deep (or holding itself) raises TypeError where it is given.

    Never a RecursionError, and nothing is scheduled: ask, tell, send_request and respond
    all refuse it at once.
    """
    forum = Forum()
    refusals: list[str] = []

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        try:
            ctx.respond(content)
        except TypeError as exc:
            refusals.append(str(exc))
        ctx.respond("fine")

    match = "respond\\(\\)|ask\\(\\)|send_request\\(\\)"
    async with forum:
        with pytest.raises(TypeError, match=r"^ask\(\): content is nested more than 100 levels"):
            echo.ask(content)
        with pytest.raises(TypeError, match=r"^ask\(\): content is nested more than 100 levels"):
            echo.tell(content)
        call = echo.start_asking()
        with pytest.raises(TypeError, match=r"^send_request\(\): content is nested more than"):
            call.send_request(content)
        assert await call.response_sequence().last()
        assert (await echo.ask("q").last()).content == "fine"
        assert await all_messages(forum.store) != []
    assert re.match(match, refusals[0])
    assert refusals[0].startswith("respond(): content is nested more than 100 levels")


@pytest.mark.anyio
async def test_content_nested_within_the_limit_is_flattened() -> None:
    """100 nested lists are content like any other: their strings are the requests, in order."""
    forum = Forum()

    @forum.agent
    async def count(ctx: InteractionContext) -> None:
        ctx.respond(str(len(await ctx.request_messages.messages())))

    async with forum:
        assert (await count.ask([deeply_nested(99), "y"]).last()).content == "2"


@given(
    texts=st.lists(st.text(st.characters(codec="utf-8"), max_size=3), min_size=1, max_size=4),
    depth=st.integers(1, MAX_CONTENT_NESTING + 10),
    at=st.integers(0, 3),
)
@pytest.mark.anyio
async def test_content_is_accepted_exactly_when_nested_within_the_limit(
    texts: list[str], depth: int, at: int
) -> None:
    """For all content: a text ``depth`` lists deep (beside others) is refused iff depth > 100.

    Accepted content gives the agent its texts as requests, in order, however nested.
    """
    inner: Any = texts[at % len(texts)]
    for _ in range(depth):
        inner = [inner]
    content = [*texts[: at % len(texts)], inner, *texts[at % len(texts) + 1 :]]
    forum = Forum()

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        ctx.respond([message.content for message in await ctx.request_messages.messages()])

    async with forum:
        if depth + 1 > MAX_CONTENT_NESTING:
            with pytest.raises(TypeError, match=r"^ask\(\): content is nested more than 100"):
                echo.ask(content)
        else:
            answer = await echo.ask(content).messages()
            assert [message.content for message in answer] == texts


LONE = "ab\udc00c"


@pytest.mark.anyio
async def test_a_lone_surrogate_in_content_is_a_type_error_at_the_call_site(tmp_path: Path) -> None:
    """A str with a lone surrogate given as content raises TypeError naming where and the index.

    At ask, tell, send_request and respond, before anything is scheduled or stored, rather
    than as the call's failure ("agent failed") later.
    """
    path = tmp_path / "forum.db"
    forum = Forum(path)
    refusals: list[str] = []

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        try:
            ctx.respond(["ok", LONE])
        except TypeError as exc:
            refusals.append(str(exc))
        ctx.respond("fine")

    text = "is not valid Unicode text (lone surrogate at index 2)"
    async with forum:
        for method in (echo.ask, echo.tell):
            with pytest.raises(TypeError, match=re.escape(f"ask(): content[1] {text}")):
                method(["ok", LONE])
        with pytest.raises(TypeError, match=re.escape(f"ask(): content {text}")):
            echo.ask(LONE)
        assert await all_messages(forum.store) == []
        call = echo.start_asking()
        with pytest.raises(TypeError, match=re.escape(f"send_request(): content {text}")):
            call.send_request(LONE)
        answers = await call.response_sequence().messages()
    assert [answer.content for answer in answers] == ["fine"]
    assert refusals == [f"respond(): content[1] {text}"]
    await assert_sound(path)


# -- the cache index -------------------------------------------------------------------------------


class Counted:
    """An agent function that answers ``<request> #<run>`` and ``(end of run <run>)``.

    Its answer changes from run to run, so a test sees whether a call ran it or was answered
    from the cache; two responses, so that their order in a cache entry matters.
    """

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self, ctx: InteractionContext) -> None:
        self.runs += 1
        requests = [(await promise).content async for promise in ctx.request_messages]
        ctx.respond(f"{' '.join(requests)} #{self.runs}")
        ctx.respond(f"(end of run {self.runs})")


async def ask(path: Path | MessageStore, counted: Counted, question: str) -> list[Message]:
    """Ask ``question`` of a cached agent running ``counted``, in a forum on ``path``."""
    forum = Forum(path)
    agent = forum.agent(counted, alias="counted")
    async with forum:
        answer = await agent.ask(question).messages()
    return answer


def raw_cache(path: Path, call: str, responses: str | bytes) -> None:
    """Set the ``responses`` of the cache row of ``call`` with sqlite3, as a tamperer would."""
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE cache SET responses = ? WHERE call = ?", (responses, bytes.fromhex(call))
        )
    connection.close()


#: Tamperings of a cache entry, each given (the call's answer, another call's answer).
TAMPERINGS: dict[str, Callable[[list[Message], list[Message]], str]] = {
    "another call's answer": lambda own, other: json.dumps([m.hash for m in other]),
    "reordered": lambda own, other: json.dumps([m.hash for m in reversed(own)]),
    "one response dropped": lambda own, other: json.dumps([own[1].hash]),
    "a response not stored": lambda own, other: json.dumps([own[0].hash, "e" * 64]),
    "not JSON": lambda own, other: "not json",
    "not a list": lambda own, other: json.dumps({"responses": [m.hash for m in own]}),
    "not hashes": lambda own, other: json.dumps([own[0].hash[:10], 1]),
    "nested without end": lambda own, other: "[" * 100_000,
}


@pytest.mark.anyio
@pytest.mark.parametrize("tampering", TAMPERINGS)
async def test_a_tampered_cache_entry_is_a_miss_reported_by_a_warning_and_by_fsck(
    tmp_path: Path, tampering: str
) -> None:
    """An edited cache row never answers a call: the agent runs, and fsck lists the row.

    The call gets its own, fresh answer (never another call's); an IntegrityWarning names
    the call and says to run fsck; the fresh answer replaces the entry, so the store is
    sound again and the next identical call is answered from the cache, without a warning.
    """
    path = tmp_path / "forum.db"
    counted = Counted()
    own = await ask(path, counted, "first")
    other = await ask(path, counted, "second")
    call = own[0].parent
    assert call is not None
    raw_cache(path, call, TAMPERINGS[tampering](own, other))

    fsck = await agentforum("fsck", "--db", path)
    assert fsck.returncode == 1
    assert "Traceback" not in fsck.stderr
    assert any(line.startswith(f"{call}: ") for line in fsck.stdout.splitlines()), fsck.stdout

    with pytest.warns(IntegrityWarning) as caught:
        again = await ask(path, counted, "first")
    assert len(caught) == 1
    assert call in str(caught[0].message)
    assert "agentforum fsck" in str(caught[0].message)
    assert counted.runs == 3
    assert [message.content for message in again] == ["first #3", "(end of run 3)"]
    assert again[0].parent == call
    await assert_sound(path)
    assert await ask(path, counted, "first") == again  # from the cache, no warning
    assert counted.runs == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    "responses", ["not json", "[1]", '["abc"]', "{}", "[" * 100_000, b"\xff[]"]
)
async def test_get_cached_raises_integrity_error_for_a_corrupted_entry(
    tmp_path: Path, responses: str | bytes
) -> None:
    """SQLiteStore.get_cached refuses a responses value that is not a JSON list of hashes.

    Whatever it is: not JSON, JSON of another shape, nested without end, a blob that is
    not UTF-8. verify() reports it under the call's hash.
    """
    path = tmp_path / "forum.db"
    own = await ask(path, Counted(), "first")
    call = own[0].parent
    assert call is not None
    raw_cache(path, call, responses)
    store = SQLiteStore(path)
    try:
        with pytest.raises(IntegrityError, match=f"cache entry of call {call}"):
            await store.get_cached(call)
        (problem,) = await store.verify()
    finally:
        await store.aclose()
    assert problem.hash == call
    assert "not a list of message hashes" in problem.reason


@pytest.mark.anyio
async def test_a_cached_response_altered_in_the_store_is_a_miss_reported_by_a_warning(
    tmp_path: Path,
) -> None:
    """A cache hit whose response row was edited (it no longer hashes to its hash) is a miss.

    The call runs its agent and gets its own answer; the warning names the call and the
    altered message; fsck still lists the altered row, which no call reads any more.
    """
    path = tmp_path / "forum.db"
    counted = Counted()
    own = await ask(path, counted, "first")
    call = own[0].parent
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE messages SET sender = ? WHERE hash = ?",
            ("edited", bytes.fromhex(own[0].hash)),
        )
    connection.close()
    with pytest.warns(IntegrityWarning, match=f"call {call} .* message {own[0].hash}"):
        again = await ask(path, counted, "first")
    assert [message.content for message in again] == ["first #2", "(end of run 2)"]
    fsck = await agentforum("fsck", "--db", path)
    assert fsck.returncode == 1
    assert fsck.stdout.splitlines() == [
        f"{own[0].hash}: its fields do not hash to its hash (it was altered)"
    ]


class Forgetful(MemoryStore):
    """A MemoryStore whose cache index gives, for one call, another call's answer."""

    def __init__(self) -> None:
        super().__init__()
        self.swap: dict[str, str] = {}

    async def get_cached(self, call_hash: str) -> Sequence[str] | None:
        return await super().get_cached(self.swap.get(call_hash, call_hash))

    @classmethod
    async def answering_wrong(cls, counted: Counted) -> tuple[Forgetful, str]:
        """A store where ``counted`` answered "first" and "second"; the call of "first"
        (whose hash is returned) gets the answer of "second" from the cache index."""
        store = cls()
        own = await ask(store, counted, "first")
        other = await ask(store, counted, "second")
        assert own[0].parent is not None
        assert other[0].parent is not None
        store.swap[own[0].parent] = other[0].parent
        return store, own[0].parent


@pytest.mark.anyio
async def test_a_store_that_answers_with_another_calls_responses_is_not_believed() -> None:
    """Whatever store gives a wrong cache entry, the call runs its agent and warns."""
    counted = Counted()
    store, _ = await Forgetful.answering_wrong(counted)
    with pytest.warns(IntegrityWarning, match="does not continue the branch of the call"):
        again = await ask(store, counted, "first")
    assert [message.content for message in again] == ["first #3", "(end of run 3)"]


@pytest.mark.anyio
async def test_with_warnings_as_errors_a_wrong_cache_entry_fails_the_call() -> None:
    """Where IntegrityWarning is an error (as in this test suite), the call ends with it.

    Its branch ends with an ErrorMessage of type ``agentforum.IntegrityWarning``, and the
    agent does not run: nothing is answered from a cache entry that is wrong.
    """
    counted = Counted()
    store, call = await Forgetful.answering_wrong(counted)
    forum = Forum(store)
    agent = forum.agent(counted, alias="counted")
    async with forum:
        with pytest.raises(AgentError) as failed:
            await agent.ask("first").messages()
    assert failed.value.message.error_type == "agentforum.IntegrityWarning"
    assert failed.value.message.parent == call
    assert counted.runs == 2
