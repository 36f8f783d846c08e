"""Two branches of a tree: their merge base, and ``log A..B`` / ``merge-base`` / ``diff``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentforum import Forum, MemoryStore, Message, MessageNotFoundError
from test_cli import invoke
from trees import trees

if TYPE_CHECKING:
    from pathlib import Path


class CountingStore(MemoryStore):
    """A MemoryStore that counts the messages read with ``get``."""

    __slots__ = ("gets",)

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, hash: str) -> Message:
        self.gets += 1
        return await super().get(hash)


def chain(length: int, parent: str | None = None, sender: str = "s") -> list[Message]:
    """``length`` messages, each the parent of the next, below ``parent``."""
    messages = []
    for index in range(length):
        message = Message(content=str(index), sender=sender, parent=parent)
        messages.append(message)
        parent = message.hash
    return messages


def ancestry(messages: dict[str, Message], key: str) -> list[str]:
    """The hashes of the branch that ends at ``key``, the message itself first."""
    found = []
    current: str | None = key
    while current is not None:
        found.append(current)
        current = messages[current].parent
    return found


@settings(max_examples=50)
@given(tree=trees(), picks=st.lists(st.tuples(st.integers(0), st.integers(0)), min_size=4))
def test_merge_base_is_the_last_common_ancestor(
    tree: list[Message], picks: list[tuple[int, int]]
) -> None:
    """For all trees and pairs of their messages: the merge base is on both branches and no
    child of it is; it is None exactly when the branches start at different roots; and it
    does not depend on the order of the two."""
    pairs = [(tree[i % len(tree)].hash, tree[j % len(tree)].hash) for i, j in picks]
    by_hash = {message.hash: message for message in tree}

    async def main() -> list[tuple[Message | None, Message | None]]:
        forum = Forum()
        await forum.store.put_many(tree)
        return [(await forum.merge_base(a, b), await forum.merge_base(b, a)) for a, b in pairs]

    for (a, b), (base, reverse) in zip(pairs, anyio.run(main), strict=True):
        assert base == reverse
        left, right = ancestry(by_hash, a), ancestry(by_hash, b)
        if base is None:
            assert left[-1] != right[-1]
            continue
        assert base.hash in left
        assert base.hash in right
        children = [message.hash for message in tree if message.parent == base.hash]
        assert not any(child in left and child in right for child in children)


@pytest.mark.anyio
async def test_merge_base_reads_only_what_follows_it() -> None:
    """Two branches that part after a long shared trunk: only the messages after the merge
    base (and as many again) are read, never the trunk."""
    store = CountingStore()
    trunk = chain(300)
    left = chain(3, trunk[-1].hash, "left")
    right = chain(5, trunk[-1].hash, "right")
    await store.put_many([*trunk, *left, *right])
    forum = Forum(store)
    store.gets = 0
    assert await forum.merge_base(left[-1], right[-1].hash) == trunk[-1]
    assert store.gets <= 2 * (3 + 5) + 2
    store.gets = 0
    assert await forum.merge_base(trunk[-1], right[-1]) == trunk[-1]
    assert store.gets <= 2 * 5 + 2


@pytest.mark.anyio
async def test_merge_base_takes_refs_and_prefixes_and_knows_separate_roots() -> None:
    """Refs, hashes, prefixes and promises name the two ends; branches of two roots have no
    merge base; a message is its own; a missing one raises."""
    forum = Forum()
    one, other = chain(4), chain(2, sender="other")
    await forum.store.put_many([*one, *other])
    await forum.set_ref("main", one[-1])
    assert await forum.merge_base("main", one[1].hash[:8]) == one[1]
    assert await forum.merge_base(one[2], one[2]) == one[2]
    assert await forum.merge_base("main", other[-1].hash) is None
    with pytest.raises(MessageNotFoundError):
        await forum.merge_base("main", "ab" * 32)
    with pytest.raises(MessageNotFoundError):
        await forum.merge_base("ab" * 32, "ab" * 32)


# -- the command line ---------------------------------------------------------------------------


def test_merge_base_and_log_range_on_the_demo(demo_db: Path) -> None:
    """`merge-base` prints the full hash where demo/first and demo/second part; `log A..B`
    lists B's messages after it, newest first; `B..B` lists nothing."""
    result = invoke("merge-base", "demo/first", "demo/second", "--db", demo_db)
    assert result.exit_code == 0, result.output
    base = result.stdout.strip()
    assert len(base) == 64
    log = invoke("log", "--oneline", "demo/first..demo/second", "--db", demo_db)
    assert log.exit_code == 0, log.output
    lines = log.stdout.splitlines()
    whole = invoke("log", "--oneline", "demo/second", "--db", demo_db).stdout.splitlines()
    ends = [line.split()[0] for line in whole]
    assert [line.split()[0] for line in lines] == ends[: len(lines)]
    assert whole[len(lines)].split()[0] == base[:10]
    assert invoke("log", "demo/second..demo/second", "--db", demo_db).stdout == ""


def test_diff_shows_the_merge_base_then_each_side(demo_db: Path) -> None:
    """`diff A B`: the merge base line, then A's messages after it, then B's, oldest first."""
    base = invoke("merge-base", "demo/first", "demo/second", "--db", demo_db).stdout.strip()
    result = invoke("diff", "demo/first", "demo/second", "--db", demo_db)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"merge base {base[:10]}")
    assert lines[1] == "--- demo/first: 3 messages after it"
    assert "(demo/first)" in lines[4]
    assert lines[5] == "+++ demo/second: 3 messages after it"
    assert "(demo/second)" in lines[8]
    with_calls = invoke("diff", "--calls", "demo/first", "demo/second", "--db", demo_db)
    assert len(with_calls.stdout.splitlines()) > len(lines)


def test_merge_base_of_separate_roots_fails_and_a_ref_named_like_a_range_is_a_ref(
    tmp_path: Path,
) -> None:
    """Two roots: `merge-base` exits with 1 and says why, `diff` says there is no merge base;
    a ref called `a..b` is that ref for `log`, not a range."""
    path = tmp_path / "two.db"
    one, other = chain(2), chain(3, sender="other")

    async def write() -> None:
        async with Forum(path) as forum:
            await forum.store.put_many([*one, *other])
            await forum.set_ref("one", one[-1])
            await forum.set_ref("other", other[-1])
            await forum.set_ref("one..other", one[0])

    anyio.run(write)
    result = invoke("merge-base", "one", "other", "--db", path)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "share no message" in result.stderr
    diff = invoke("diff", "one", "other", "--db", path)
    assert diff.stdout.splitlines()[0].startswith("no merge base")
    assert "+++ other: 3 messages after it" in diff.stdout
    assert len(invoke("log", "--oneline", "one..other", "--db", path).stdout.splitlines()) == 1
    assert len(invoke("log", "--oneline", "other..one", "--db", path).stdout.splitlines()) == 2
