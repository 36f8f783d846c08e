"""The durability promise: a message whose promise resolved survives the process being killed.

A subprocess holds a conversation with a streaming agent in ``Forum(path)`` and prints each
message's hash as soon as its promise resolves. The test kills it with SIGKILL after a random
number of hashes, then opens the database: it verifies, and every printed hash is in it.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import textwrap
from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from agentforum import SQLiteStore

if TYPE_CHECKING:
    import pathlib

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.name != "posix", reason=f"SIGKILL needs POSIX, not {os.name!r}"),
]

WRITER = """
import sys

import anyio

from agentforum import Forum, InteractionContext, StreamedMessage


async def main() -> None:
    forum = Forum(sys.argv[1])

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            text = (await request).content

            async def tokens(text: str = text) -> object:
                for token in ("re: ", text, "!"):
                    yield token

            if sys.argv[3] == "texts":  # queued together: stored by group commit
                ctx.respond([f"re: {text} ({index})" for index in range(20)])
            else:
                ctx.respond(StreamedMessage(tokens()))

    async with forum:
        last = None
        for index in range(1_000_000):
            seq = echo.ask(f"question {index}", branch_from=last)
            async for promise in seq:
                last = await promise
                print(last.hash, flush=True)


anyio.run(main, backend=sys.argv[2])
"""


@pytest.mark.parametrize(
    ("seed", "responses"), [(1, "streamed"), (2, "streamed"), (3, "texts"), (4, "texts")]
)
async def test_every_printed_hash_survives_sigkill(
    tmp_path: pathlib.Path, seed: int, responses: str, anyio_backend_name: str
) -> None:
    """After SIGKILL at a random moment the database verifies and holds every printed hash.

    The responses are streamed messages, each stored on its own, or texts queued together,
    stored by group commit (several in one transaction).
    """
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    path = tmp_path / "chat.db"
    kill_after = random.Random(seed).randint(5, 200)
    printed: list[str] = []
    with anyio.fail_after(15):
        process = await anyio.open_process(
            [sys.executable, str(script), str(path), anyio_backend_name, responses]
        )
        async with process:
            assert process.stdout is not None
            lines = BufferedByteReceiveStream(process.stdout)
            while len(printed) < kill_after:
                printed.append((await lines.receive_until(b"\n", 100)).decode())
            process.kill()
            assert await process.wait() == -signal.SIGKILL
            # Hashes printed after the ones counted, up to the kill, count too.
            try:
                while True:
                    printed.append((await lines.receive_until(b"\n", 100)).decode())
            except (anyio.EndOfStream, anyio.IncompleteRead):
                pass
            assert process.stderr is not None
            errors = b"".join([chunk async for chunk in process.stderr])
            assert errors == b""

    assert len(printed) >= kill_after
    store = SQLiteStore(path, create=False)
    try:
        assert await store.verify() == []
        for key in printed:
            assert (await store.get(key)).hash == key
        # The printed messages are one branch, in the order they were printed.
        branch = [m.hash for m in await store.ancestors(printed[-1])]
        positions = [branch.index(key) for key in printed]
        assert positions == sorted(set(positions))
    finally:
        await store.aclose()
