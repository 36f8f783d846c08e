"""Several processes, one database: two writers at once both finish and see each other's work.

Two subprocesses (one on asyncio, one on Trio) open ``Forum(path)`` on the same file. A
handshake over their stdin and stdout starts them writing at the same moment: each holds a
conversation of 50 asks. Each then prints the hashes it wrote, receives the other's, and
reads them (with their history) through its own, still open, forum.
"""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap
from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from agentforum import Message, SQLiteStore

if TYPE_CHECKING:
    import pathlib
    from collections.abc import AsyncIterator

    from anyio.abc import Process

pytestmark = pytest.mark.anyio

ASKS = 50

WRITER = """
import json
import sys

import anyio

from agentforum import Forum, InteractionContext


async def main() -> None:
    path, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    forum = Forum(path)

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")

    async with forum:
        print("ready", flush=True)
        assert (await anyio.to_thread.run_sync(sys.stdin.readline)).strip() == "go"
        last = None
        mine = []
        for index in range(count):
            last = await echo.ask(f"{tag} question {index}", branch_from=last).last()
            mine.append(last.hash)
        print(json.dumps(mine), flush=True)

        theirs = json.loads(await anyio.to_thread.run_sync(sys.stdin.readline))
        for key in theirs:
            assert (await forum.get(key)).hash == key
        history = await forum.history(theirs[-1])
        assert len(history) == 2 * len(theirs), len(history)
        assert not any(message.content.startswith(tag) for message in history)
        assert await forum.store.verify() == []
        print(f"saw {len(theirs)}", flush=True)


anyio.run(main, backend=sys.argv[4])
"""


class Writer:
    """One writer subprocess and its line-based stdout."""

    def __init__(self, process: Process) -> None:
        assert process.stdout is not None
        self.process = process
        self.lines = BufferedByteReceiveStream(process.stdout)

    async def read_line(self) -> str:
        return (await self.lines.receive_until(b"\n", 1_000_000)).decode()

    async def send_line(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(line.encode() + b"\n")

    async def stderr(self) -> bytes:
        assert self.process.stderr is not None
        return b"".join([chunk async for chunk in self.process.stderr])


@contextlib.asynccontextmanager
async def scripts(
    path: pathlib.Path, source: str, *argument_lists: list[str]
) -> AsyncIterator[list[Writer]]:
    """Processes running the Python program ``source`` (written to ``path``), one per list
    of arguments, each ready (it printed "ready"); killed at the end of the block if they
    are still running."""
    await anyio.Path(path).write_text(textwrap.dedent(source))
    processes: list[Process] = []
    try:
        for arguments in argument_lists:
            # One at a time, so that those started before a failure are killed below.
            process = await anyio.open_process([sys.executable, str(path), *arguments])
            processes.append(process)
        started = [Writer(process) for process in processes]
        for each in started:
            assert await each.read_line() == "ready"
        yield started
    finally:
        with anyio.CancelScope(shield=True):
            for process in processes:
                if process.returncode is None:
                    process.kill()
                await process.aclose()


async def test_two_processes_write_one_database_at_once(tmp_path: pathlib.Path) -> None:
    """Two processes writing the same file at once exit 0, silent; each sees the other's."""
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    path = tmp_path / "shared.db"
    # The file exists before the writers start. (Creating it from two processes at once
    # is the subject of test_sqlite.py::test_opening_while_another_connection_creates_...)
    store = SQLiteStore(path)
    await store.refs()
    await store.aclose()

    tags = ("alpha", "beta")
    backends = ("asyncio", "trio")
    with anyio.fail_after(20):
        processes = [
            await anyio.open_process(
                [sys.executable, str(script), str(path), tag, str(ASKS), backend]
            )
            for tag, backend in zip(tags, backends, strict=True)
        ]
        writers = [Writer(process) for process in processes]
        try:
            for writer in writers:
                assert await writer.read_line() == "ready"
            for writer in writers:
                await writer.send_line("go")
            written: list[list[str]] = [[], []]

            async def collect(index: int) -> None:
                written[index] = json.loads(await writers[index].read_line())

            async with anyio.create_task_group() as group:
                group.start_soon(collect, 0)
                group.start_soon(collect, 1)
            await writers[0].send_line(json.dumps(written[1]))
            await writers[1].send_line(json.dumps(written[0]))
            for writer in writers:
                assert await writer.read_line() == f"saw {ASKS}"
            for writer in writers:
                assert await writer.process.wait() == 0
                assert await writer.stderr() == b""
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                await process.aclose()

    store = SQLiteStore(path, create=False)
    try:
        assert await store.verify() == []
        roots = await store.children(None)
        assert sorted(root.content for root in roots) == [f"{tag} question 0" for tag in tags]
        for tag, hashes in zip(tags, written, strict=True):
            assert len(hashes) == ASKS
            branch: list[Message] = await store.ancestors(hashes[-1])
            # Each ask adds its request, the call node and the response.
            assert len(branch) == 3 * ASKS
            requests = [m.content for m in branch if m.sender == "user"]
            assert requests == [f"{tag} question {index}" for index in range(ASKS)]
            for key in hashes:
                assert (await store.get(key)).content.startswith(f"re: {tag}")
    finally:
        await store.aclose()
