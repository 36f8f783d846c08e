"""Compare-and-set of refs: through the forum, and between real processes sharing a store.

Two workers that continue one branch read the ref, add to the branch, and move the ref. With
``expected`` the move is a compare-and-set: of two workers that read the same state, exactly
one moves the ref, and the other learns it (:exc:`RefConflictError`) instead of silently
throwing the first one's work away. The race tests run two real processes (one on asyncio,
one on Trio) on one SQLite file and on one PostgreSQL database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from agentforum import Forum, Message, MessageNotFoundError, RefConflictError
from test_processes import Writer, scripts

if TYPE_CHECKING:
    import pathlib
    from contextlib import AbstractAsyncContextManager

    from agentforum import InteractionContext

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    """What ``Forum()`` takes to open a shared store: an SQLite path, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "shared.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_forum_set_ref_takes_a_message_a_promise_a_hash_or_none_as_expected(
    database: str,
) -> None:
    """Forum.set_ref's expected may be a message, a promise of one, a full hash or None."""
    forum = Forum(database)

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")

    async with forum:
        [promise] = [promise async for promise in echo.ask("one")]
        first = await promise
        await forum.set_ref("main", promise, expected=None)
        second = await echo.ask("two", branch_from=first).last()
        await forum.set_ref("main", second, expected=promise)
        third = await echo.ask("three", branch_from=second).last()
        await forum.set_ref("main", third, expected=second.hash)
        with pytest.raises(RefConflictError) as conflict:
            await forum.set_ref("main", first, expected=second)
        assert (conflict.value.expected, conflict.value.actual) == (second.hash, third.hash)
        with pytest.raises(ValueError, match="full message hash"):
            await forum.set_ref("main", first, expected=third.hash[:10])
        with pytest.raises(MessageNotFoundError):
            await forum.set_ref("main", "f" * 64, expected=third)
        assert (await forum.get("main")).hash == third.hash
        await forum.set_ref("main", first)
        assert (await forum.get("main")).hash == first.hash


MOVER = """
import sys

import anyio

from agentforum import Forum, Message, RefConflictError


async def main() -> None:
    database, tag, backend = sys.argv[1], sys.argv[2], sys.argv[3]
    async with Forum(database) as forum:
        print("ready", flush=True)
        for line in iter(sys.stdin.readline, ""):
            command, _, argument = line.strip().partition(" ")
            if command == "read":
                # Round 1: read the ref; the other process reads it too before either moves.
                current = (await forum.get("main")).hash
                print(f"at {current}", flush=True)
            elif command == "move":
                child = Message(content=f"{tag} {argument}", sender=tag, parent=current)
                try:
                    await forum.set_ref("main", child, expected=current)
                except RefConflictError as conflict:
                    print(f"lost {conflict.actual}", flush=True)
                else:
                    print(f"won {child.hash}", flush=True)
            elif command == "append":
                # Round 2: append N messages to the branch, each by a compare-and-set,
                # reading the ref again after each conflict.
                conflicts = 0
                for index in range(int(argument)):
                    while True:
                        tip = (await forum.get("main")).hash
                        child = Message(content=f"{tag} {index}", sender=tag, parent=tip)
                        try:
                            await forum.set_ref("main", child, expected=tip)
                            break
                        except RefConflictError:
                            conflicts += 1
                print(f"appended {argument} {conflicts}", flush=True)


anyio.run(main, backend=sys.argv[3])
"""

ROUNDS = 10
APPENDS = 30


def movers(database: str, tmp_path: pathlib.Path) -> AbstractAsyncContextManager[list[Writer]]:
    """Two mover processes (one on asyncio, one on Trio) on ``database``, ready; killed at
    the end of the block if they are still running."""
    return scripts(
        tmp_path / "mover.py",
        MOVER,
        [database, "alpha", "asyncio"],
        [database, "beta", "trio"],
    )


async def stop(movers: list[Writer]) -> None:
    """End the movers' input: each exits 0, having written nothing to stderr."""
    for mover in movers:
        assert mover.process.stdin is not None
        await mover.process.stdin.aclose()
    for mover in movers:
        assert await mover.process.wait() == 0
        assert await mover.stderr() == b""


async def both(movers: list[Writer], line: str) -> list[str]:
    """Send ``line`` to both movers at once; return their answers, in their order."""
    answers = ["", ""]

    async def ask(index: int) -> None:
        await movers[index].send_line(line)
        answers[index] = (await movers[index].read_line()).strip()

    async with anyio.create_task_group() as group:
        group.start_soon(ask, 0)
        group.start_soon(ask, 1)
    return answers


async def test_of_two_processes_moving_a_ref_from_one_state_exactly_one_wins(
    database: str, tmp_path: pathlib.Path
) -> None:
    """Two processes read the ref, then both move it from there at once: in every round
    exactly one moves it (to its message) and the other gets RefConflictError naming it."""
    root = Message(content="root", sender="test")
    async with Forum(database) as forum:
        await forum.set_ref("main", root, expected=None)
    with anyio.fail_after(60):
        async with movers(database, tmp_path) as both_movers:
            tip = root.hash
            for round in range(ROUNDS):
                assert await both(both_movers, "read") == [f"at {tip}", f"at {tip}"]
                outcomes = await both(both_movers, f"move {round}")
                won = [answer.split()[1] for answer in outcomes if answer.startswith("won ")]
                assert len(won) == 1, outcomes
                assert sorted(outcomes) == sorted([f"won {won[0]}", f"lost {won[0]}"])
                tip = won[0]
            await stop(both_movers)
    async with Forum(database) as forum:
        branch = await forum.history("main")
        assert len(branch) == ROUNDS + 1
        assert branch[-1].hash == tip
        assert await forum.store.verify() == []


async def test_two_processes_appending_to_one_branch_lose_nothing(
    database: str, tmp_path: pathlib.Path
) -> None:
    """Two processes append to one branch at once, each move a compare-and-set retried on
    conflict: the branch holds every message of both, none overwritten."""
    root = Message(content="root", sender="test")
    async with Forum(database) as forum:
        await forum.set_ref("main", root, expected=None)
    with anyio.fail_after(60):
        async with movers(database, tmp_path) as both_movers:
            answers = await both(both_movers, f"append {APPENDS}")
            assert [answer.split()[:2] for answer in answers] == [["appended", str(APPENDS)]] * 2
            await stop(both_movers)
    async with Forum(database) as forum:
        branch = await forum.history("main")
        assert len(branch) == 1 + 2 * APPENDS
        for tag in ("alpha", "beta"):
            mine = [message.content for message in branch if message.sender == tag]
            assert mine == [f"{tag} {index}" for index in range(APPENDS)]
        assert await forum.store.verify() == []
