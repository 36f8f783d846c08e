"""Group commit: the texts an agent has queued are stored together, as if one by one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentforum import (
    AgentError,
    ErrorMessage,
    Forum,
    InteractionContext,
    MemoryStore,
    Message,
    SQLiteStore,
)

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Iterable

pytestmark = pytest.mark.anyio


class CountingStore(MemoryStore):
    """A MemoryStore that counts the messages given to each kind of write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    async def put(self, message: Message) -> None:
        self.writes.append(1)
        await super().put(message)

    async def put_many(self, messages: Iterable[Message]) -> None:
        batch = list(messages)
        self.writes.append(len(batch))
        await super().put_many(batch)


def chain(texts: list[str], sender: str, parent: str, reply_to: str) -> list[Message]:
    """The messages responding ``texts`` one by one makes, built by hand."""
    messages = []
    for text in texts:
        message = Message(content=text, sender=sender, parent=parent, reply_to=reply_to)
        messages.append(message)
        parent = message.hash
    return messages


async def ask_texts(forum: Forum, texts: list[str]) -> tuple[list[Message], list[Message]]:
    """Ask an agent that responds ``texts`` at once; its responses and the branch's calls."""

    @forum.agent
    async def writer(ctx: InteractionContext) -> None:
        ctx.respond(texts)

    async with forum:
        responses = await writer.ask("go").messages()
        calls = await forum.history(responses[-1], include_calls=True) if responses else []
    return responses, calls


async def test_queued_texts_are_stored_in_a_few_writes_with_the_hashes_of_one_by_one() -> None:
    texts = [f"text {index}" for index in range(600)]
    store = CountingStore()
    responses, branch = await ask_texts(Forum(store), texts)
    request, call = branch[0], branch[1]
    assert responses == chain(texts, "writer", call.hash, request.hash)
    # The request and the CallMessage one by one; 600 texts in 256-message transactions.
    assert sum(store.writes) == 602
    assert len(store.writes) <= 2 + 3


async def test_group_commit_into_sqlite_keeps_every_text(tmp_path: pathlib.Path) -> None:
    texts = [f"text {index}" for index in range(300)]
    store = SQLiteStore(tmp_path / "texts.db")
    try:
        responses, _ = await ask_texts(Forum(store), texts)
    finally:
        await store.aclose()
    assert [m.content for m in responses] == texts
    reopened = SQLiteStore(tmp_path / "texts.db", create=False)
    try:
        assert await reopened.verify() == []
        stored = await reopened.ancestors(responses[-1].hash)
        assert [m.content for m in stored[2:]] == texts
    finally:
        await reopened.aclose()


@settings(max_examples=25, deadline=None)
@given(
    texts=st.lists(st.text(max_size=5), max_size=30),
    missing=st.one_of(st.none(), st.integers(min_value=0, max_value=29)),
)
async def test_a_text_that_cannot_be_stored_ends_the_branch_where_it_stands(
    texts: list[str], missing: int | None
) -> None:
    """For all texts, one of them replying to a message not in the store (or none): the
    texts before it are placed, then the error, as when they are placed one by one."""
    forum = Forum(strict_errors=False)
    absent = "0" * 64

    @forum.agent
    async def writer(ctx: InteractionContext) -> None:
        for index, text in enumerate(texts):
            ctx.respond(text, reply_to=absent if index == missing else None)

    placed: list[Message] = []
    error = None
    async with forum:
        try:
            async for promise in writer.ask("go"):
                placed.append(await promise)  # noqa: PERF401 (kept up to the error)
        except AgentError as exc:
            error = exc.message
        request = (await forum.store.children(None))[0]
        [call] = await forum.store.children(request.hash)
    end = missing if missing is not None and missing < len(texts) else len(texts)
    assert placed == chain(texts[:end], "writer", call.hash, request.hash)
    assert (error is None) == (end == len(texts))
    if error is not None:
        assert isinstance(error, ErrorMessage)
        assert error.error_type == "agentforum.MessageNotFoundError"
        assert error.parent == (placed[-1].hash if placed else call.hash)
