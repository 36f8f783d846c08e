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

import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentforum import (
    CallMessage,
    Forum,
    FrozenDict,
    InteractionContext,
    Message,
    MessageStore,
    SQLiteStore,
    decode_message,
    encode_message,
)

if TYPE_CHECKING:
    from pathlib import Path

#: The deepest nesting a metadata or kwargs value may have (documented in docs/hashing.md).
LIMIT = 100


def agentforum(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the real ``agentforum`` entry point (``python -m agentforum ARGS``)."""
    return subprocess.run(
        [sys.executable, "-m", "agentforum", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def assert_sound(path: Path) -> None:
    """``fsck`` passes on the database at ``path``, and ``export`` of it works."""
    fsck = agentforum("fsck", "--db", path)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "sound" in fsck.stdout
    export = agentforum("export", "--db", path)
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
    assert decode_message(encode_message(message)) == message
    path = tmp_path / "deep.db"
    store = SQLiteStore(path)
    try:
        await store.put_many([message, call])
        assert (await store.get(message.hash)).metadata == deepest
        assert (await store.get(call.hash)).kwargs == deepest  # type: ignore[attr-defined]
        assert await store.verify() == []
    finally:
        await store.aclose()
    assert_sound(path)
    bundle = tmp_path / "deep.jsonl"
    assert agentforum("export", "--db", path, "-o", bundle).returncode == 0
    imported = agentforum("import", bundle, "--db", tmp_path / "copy.db")
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
    assert_sound(path)


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


@given(nested_values())
def test_a_value_is_accepted_exactly_when_within_the_limit_and_then_round_trips(
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
    for each in (message, call):
        assert decode_message(encode_message(each)) == each

    async def put_and_get() -> list[Message]:
        store = SQLiteStore(tmp_path / "property.db")
        try:
            await store.put_many([message, call])
            return [await store.get(message.hash), await store.get(call.hash)]
        finally:
            await store.aclose()

    assert anyio.run(put_and_get) == [message, call]


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
    assert_sound(path)
