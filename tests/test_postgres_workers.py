"""Worker processes sharing one PostgreSQL database: a conversation handed from worker to
worker, and the faults of a server under workers that keep running.

Each worker is a process of its own (``WORKER``, on asyncio or on Trio) that opens
``Forum(url)`` and takes commands on its standard input, one a line; it answers on its
standard output. A *turn* reads the worker's ref, continues the branch from there with an
``ask`` and moves the ref with a compare-and-set, as a worker serving the conversation's
next request does. The test process only drives the workers and checks the database
afterwards: it runs its driver once (the workers are what runs on both backends).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

import pg_server
from agentforum import Forum, MemoryStore, Message, PostgresStore
from test_processes import Writer, scripts

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from agentforum import InteractionContext

pytestmark = pytest.mark.slow


WORKER = """
import sys

import anyio

from agentforum import AgentError, Forum, InteractionContext, StoreError

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


def store_failure(exc: BaseException) -> str | None:
    # What the StoreErrors behind exc say, or None when something else failed.
    if isinstance(exc, BaseExceptionGroup):
        texts = [store_failure(each) for each in exc.exceptions]
        return None if None in texts else " | ".join(texts)
    if isinstance(exc, AgentError):
        exc = exc.__cause__
    return " ".join(str(exc).split()) if isinstance(exc, StoreError) else None


def echo_forum(database: str) -> tuple[Forum, object]:
    forum = Forum(database)

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")

    return forum, echo


async def turn(forum: Forum, echo: object, ref: str, content: str) -> None:
    # Read the ref, continue its branch, move the ref from where it was read. Answer
    # "ok HASH" (where the ref was moved), or "error WHAT" when the store failed.
    try:
        tip = (await forum.refs()).get(ref)
        last = await echo.ask(content, branch_from=tip).last()
        await forum.set_ref(ref, last, expected=tip)
    except Exception as exc:
        if store_failure(exc) is None:
            raise
        print(f"error {store_failure(exc)}", flush=True)
    else:
        print(f"ok {last.hash}", flush=True)


async def main() -> None:
    database, ref, backend = sys.argv[1:4]
    lines = iter(sys.stdin.readline, "")
    print("ready", flush=True)
    command = await anyio.to_thread.run_sync(next, lines, "")
    if command != "run\\n":
        # "turn CONTENT", one a line, until the input ends.
        forum, echo = echo_forum(database)
        async with forum:
            while command:
                await turn(forum, echo, ref, command.split()[1])
                command = await anyio.to_thread.run_sync(next, lines, "")
        return

    # "run": turns until the line "stop"; a forum that a failing store ended is entered again.
    stop = anyio.Event()

    async def wait_for_stop() -> None:
        assert await anyio.to_thread.run_sync(next, lines, "") == "stop\\n"
        stop.set()

    turns = 0
    async with anyio.create_task_group() as group:
        group.start_soon(wait_for_stop)
        while not stop.is_set():
            forum, echo = echo_forum(database)
            try:
                async with forum:
                    while not stop.is_set():
                        await turn(forum, echo, ref, f"{ref}-{turns}")
                        turns += 1
            except Exception as exc:
                if store_failure(exc) is None:
                    raise
                print(f"error {store_failure(exc)}", flush=True)
    print("stopped", flush=True)


anyio.run(main, backend=sys.argv[3])
"""


def workers(
    database: str, tmp_path: Path, *specs: tuple[str, str]
) -> AbstractAsyncContextManager[list[Writer]]:
    """Worker processes on ``database``, one per ``(ref, backend)``, ready; killed at the end
    of the block if they are still running."""
    arguments = [[database, ref, backend] for ref, backend in specs]
    return scripts(tmp_path / "worker.py", WORKER, *arguments)


async def answer(worker: Writer) -> str:
    """The hash a worker's turn moved its ref to (the turn must have succeeded)."""
    line = await worker.read_line()
    assert line.startswith("ok "), line
    return line.removeprefix("ok ")


async def finish(worker: Writer) -> None:
    """End the worker's input and wait for it to exit: 0, having written nothing to stderr."""
    assert worker.process.stdin is not None
    await worker.process.stdin.aclose()
    status = await worker.process.wait()
    errors = await worker.stderr()
    assert (status, errors) == (0, b""), errors.decode()


def echo_forum(store: MemoryStore | str) -> tuple[Forum, Any]:
    """The workers' forum and its echo agent, in this process."""
    forum = Forum(store)

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")

    return forum, echo


TURNS = [("asyncio", ["one", "two"]), ("trio", ["three", "four"]), ("asyncio", ["five"])]


def test_a_conversation_continued_by_three_workers_in_turn(
    postgres_url: str, tmp_path: Path
) -> None:
    """Three worker processes (asyncio, Trio, asyncio) continue one conversation in turn,
    each from the ref the one before moved: the branch holds every turn in order, and its
    messages are those of the same conversation held in one process, hash for hash."""

    async def drive() -> list[str]:
        moved: list[str] = []
        with anyio.fail_after(60):
            for backend, contents in TURNS:
                async with workers(postgres_url, tmp_path, ("main", backend)) as [worker]:
                    for content in contents:
                        await worker.send_line(f"turn {content}")
                        moved.append(await answer(worker))
                    await finish(worker)
        return moved

    async def in_one_process() -> list[Message]:
        forum, echo = echo_forum(MemoryStore())
        last = None
        async with forum:
            for _, contents in TURNS:
                for content in contents:
                    last = await echo.ask(content, branch_from=last).last()
            assert last is not None
            branch = await forum.history(last, include_calls=True)
        return branch

    async def shared_branch() -> list[Message]:
        async with Forum(postgres_url) as forum:
            assert await forum.store.verify() == []
            branch = await forum.history("main", include_calls=True)
        return branch

    moved = anyio.run(drive, backend="trio")
    branch = anyio.run(shared_branch)
    expected = anyio.run(in_one_process)
    assert [message.hash for message in branch] == [message.hash for message in expected]
    assert moved == [message.hash for message in expected if message.content.startswith("re: ")]
    requests = [message.content for message in branch if message.sender == "user"]
    assert requests == [content for _, contents in TURNS for content in contents]


def sql(url: str, statement: str, *args: object) -> list[tuple[Any, ...]]:
    """The rows of ``statement``, run on the database of ``url`` in autocommit mode."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(statement, args or None)
        return cursor.fetchall() if cursor.description else []


async def waiting_for_a_lock(url: str, count: int, not_among: frozenset[int]) -> frozenset[int]:
    """Wait until ``count`` agentforum connections to the database of ``url``, none of
    ``not_among``, wait for a lock; their process ids."""
    query = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'agentforum' AND wait_event_type = 'Lock'"
    )
    while True:
        found = await anyio.to_thread.run_sync(sql, url, query)
        waiting = frozenset(pid for (pid,) in found) - not_among
        if len(waiting) == count:
            return waiting
        await anyio.sleep(0.02)


async def terminate(url: str, pids: frozenset[int]) -> None:
    """End the server processes ``pids`` (their clients' connections break)."""
    query = "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid"
    assert await anyio.to_thread.run_sync(sql, url, query, list(pids)) == [(True,)] * len(pids)


async def turns(running: list[Writer], content: str) -> list[str]:
    """One turn of each worker, at the same time; their answers, in their order."""
    answers = [""] * len(running)

    async def one(index: int) -> None:
        await running[index].send_line(f"turn {content}")
        answers[index] = await running[index].read_line()

    async with anyio.create_task_group() as group:
        for index in range(len(running)):
            group.start_soon(one, index)
    return answers


def test_a_connection_terminated_mid_statement_is_retried_then_reported(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two workers (asyncio, Trio) move their refs while a transaction holds the refs' rows,
    so each waits in the middle of its compare-and-set; their connections are terminated
    there (pg_terminate_backend). Each runs the move again on a new connection (which waits
    again), and succeeds once the rows are free. Terminated on the second try too, the turn
    is a StoreError naming the database; the next turn succeeds. Nothing hangs; every
    branch holds its successful turns, in order."""
    import psycopg

    specs = (("alpha", "asyncio"), ("beta", "trio"))

    async def drive() -> list[list[str]]:
        answers = []
        with anyio.fail_after(60):
            async with workers(postgres_url, tmp_path, *specs) as running:
                answers.append(await turns(running, "first"))
                for content, times in (("second", 1), ("third", 2)):
                    holder: psycopg.Connection[tuple[Any, ...]] = await anyio.to_thread.run_sync(
                        lambda: psycopg.connect(postgres_url)
                    )
                    try:
                        holder.execute("SELECT * FROM refs FOR UPDATE")
                        async with anyio.create_task_group() as group:

                            async def turn(content: str = content) -> None:
                                answers.append(await turns(running, content))

                            group.start_soon(turn)
                            ended: frozenset[int] = frozenset()
                            for _ in range(times):
                                waiting = await waiting_for_a_lock(postgres_url, 2, ended)
                                await terminate(postgres_url, waiting)
                                ended |= waiting
                            if times == 1:  # the moves run again, and wait again
                                await waiting_for_a_lock(postgres_url, 2, ended)
                            holder.rollback()
                    finally:
                        holder.close()
                answers.append(await turns(running, "fourth"))
                for worker in running:
                    await finish(worker)
        return answers

    first, second, third, fourth = anyio.run(drive, backend="asyncio")
    for answer in (*first, *second, *fourth):
        assert answer.startswith("ok "), answer
    display = PostgresStore(postgres_url).url
    for answer in third:
        assert answer.startswith(f"error {display}: terminating connection"), answer

    async def check() -> None:
        async with Forum(postgres_url) as forum:
            assert await forum.store.verify() == []
            for index, (ref, _) in enumerate(specs):
                branch = await forum.history(ref)
                assert [message.content for message in branch] == [
                    f"{prefix}{content}"
                    for content in ("first", "second", "fourth")
                    for prefix in ("", "re: ")
                ]
                resolved = [answer[index].removeprefix("ok ") for answer in (first, second, fourth)]
                assert [message.hash for message in branch[1::2]] == resolved

    anyio.run(check, backend="trio")


class Answers:
    """What a running worker answers, collected as it comes, until it says "stopped"."""

    def __init__(self, worker: Writer) -> None:
        self.worker = worker
        self.lines: list[str] = []
        self._wanted = 0
        self._reached = anyio.Event()

    def resolved(self) -> list[str]:
        """The hashes of the turns that succeeded, in order."""
        return [line.removeprefix("ok ") for line in self.lines if line.startswith("ok ")]

    async def collect(self) -> None:
        while (line := await self.worker.read_line()) != "stopped":
            self.lines.append(line)
            if len(self.resolved()) >= self._wanted:
                self._reached.set()

    async def wait_for(self, count: int) -> None:
        """Wait until ``count`` turns in all have succeeded."""
        self._wanted, self._reached = count, anyio.Event()
        if len(self.resolved()) < count:
            await self._reached.wait()


def test_workers_go_on_through_a_server_restart(own_server: Any, tmp_path: Path) -> None:
    """Two workers (asyncio, Trio) take turns without pause while the server restarts
    (pg_ctl restart, fast: every connection is ended): a turn that meets the restart fails
    with a StoreError naming the server, or succeeds on a new connection; the workers go on
    once it is back. Every turn that succeeded is on its branch, in order, and the database
    is sound."""
    url = own_server.get_uri()
    specs = (("alpha", "asyncio"), ("beta", "trio"))

    async def drive() -> list[Answers]:
        with anyio.fail_after(90):
            async with workers(url, tmp_path, *specs) as running:
                answers = [Answers(worker) for worker in running]
                async with anyio.create_task_group() as group:
                    for each in answers:
                        group.start_soon(each.collect)
                        await each.worker.send_line("run")
                    for each in answers:
                        await each.wait_for(3)
                    await anyio.to_thread.run_sync(
                        pg_server.pg_ctl, own_server, "-w", "-m", "fast", "restart"
                    )
                    for each in answers:
                        await each.wait_for(len(each.resolved()) + 3)
                    for each in answers:
                        await each.worker.send_line("stop")
                for each in answers:
                    await finish(each.worker)
        return answers

    answers = anyio.run(drive, backend="trio")
    display = PostgresStore(url).url
    for each in answers:
        for line in each.lines:
            assert line.startswith(("ok ", f"error {display}: ", "error cannot connect")), line

    async def check() -> None:
        async with Forum(url) as forum:
            assert await forum.store.verify() == []
            for (ref, _), each in zip(specs, answers, strict=True):
                branch = await forum.history(ref)
                resolved = set(each.resolved())
                assert [m.hash for m in branch if m.hash in resolved] == each.resolved()

    anyio.run(check, backend="asyncio")
