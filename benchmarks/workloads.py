"""The workloads of issue 8 for agentforum and for their floors (plain AnyIO, hashlib, sqlite3,
psycopg).

Not run by hand: ``benchmarks/bench.py`` runs each case in a fresh process
(``python benchmarks/workloads.py --case W1.ours --backend trio --params '{"n": 1000,
"depth": 10}' --repeat 3``) and reads the JSON line it prints (see ``_common.py``).

Every case is a function ``(backend, params) -> (seconds, units, extra)`` that does one timed
run; what happens before the clock starts (building tokens, branches, rows) is not timed.
Each one checks its own result (tokens counted, contents compared, hashes equal to the
floor's), so a fast wrong answer fails instead of winning.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING, Any

import _postgres
import anyio
from _common import Clock, child_main, held_memory, not_applicable
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from agentforum import (
    Agent,
    CallMessage,
    Forum,
    ForwardedMessage,
    InteractionContext,
    MemoryStore,
    Message,
    MessageStore,
    PostgresStore,
    SQLiteStore,
    StreamedMessage,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from _common import Run
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

#: The floor's producers checkpoint once every BATCH tokens (issue 8, W1).
BATCH = 64


def tokens_of(n: int) -> list[str]:
    """``n`` short tokens, as a model streams them."""
    return [f"t{index % 100} " for index in range(n)]


def timed_run(backend: str, function: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    """Run ``function`` on ``backend`` under a :class:`Clock`; the seconds and its result."""
    with Clock() as clock:
        result = anyio.run(function, backend=backend)
    return clock.seconds, result


# -- W1: nested streaming ------------------------------------------------------------------------


def streaming_forum(
    tokens: list[str], depth: int, producer: str = "iterable"
) -> tuple[Forum, Agent]:
    """A forum whose leaf agent streams ``tokens`` under ``depth`` proxy agents, each
    responding with the inner agent's responses; the top agent (the leaf when ``depth`` is 0).

    The leaf's tokens come, with a checkpoint every BATCH tokens as the floor's producer
    makes, from an async generator (``producer="iterable"``), or are sent by hand with
    ``send_nowait`` (``"send_nowait"``: a burst, as the original agentforum's producer sends
    them)."""
    forum = Forum()

    async def generate() -> AsyncIterator[str]:
        for index, token in enumerate(tokens):
            yield token
            if index % BATCH == BATCH - 1:
                await checkpoint()

    @forum.agent
    async def leaf(ctx: InteractionContext) -> None:
        if producer == "iterable":
            ctx.respond(StreamedMessage(generate()))
            return
        streamed = StreamedMessage()
        ctx.respond(streamed)
        async with streamed:
            for index, token in enumerate(tokens):
                streamed.send_nowait(token)
                if index % BATCH == BATCH - 1:
                    await checkpoint()

    agent: Agent = leaf
    for level in range(depth):

        async def proxy(ctx: InteractionContext, inner: Agent = agent) -> None:
            ctx.respond(inner.ask(ctx.request_messages))

        agent = forum.agent(proxy, alias=f"proxy{level}")
    return forum, agent


def w1_ours(backend: str, params: dict[str, Any]) -> Run:
    """The top agent of :func:`streaming_forum` (``n`` tokens, ``depth`` proxies) asked once;
    its consumer iterates the tokens."""
    n, depth = params["n"], params["depth"]
    tokens = tokens_of(n)

    async def run() -> int:
        forum, agent = streaming_forum(tokens, depth, params.get("producer", "iterable"))
        received = 0
        async with forum:
            async for promise in agent.ask("go"):
                async for _token in promise:
                    received += 1
        return received

    seconds, received = timed_run(backend, run)
    assert received == n, (received, n)
    return seconds, n, {}


async def drain(receive: MemoryObjectReceiveStream[str]) -> list[str]:
    """Wait for one item, then take every item that is ready without waiting.

    Raises ``anyio.EndOfStream`` when the stream is closed and empty.
    """
    batch = [await receive.receive()]
    try:
        while True:
            batch.append(receive.receive_nowait())
    except (anyio.WouldBlock, anyio.EndOfStream):
        # At the end, the next call's receive() raises EndOfStream.
        return batch


async def produce(tokens: list[str], sends: list[MemoryObjectSendStream[str]]) -> None:
    """Send every token on every stream with ``send_nowait``; checkpoint every BATCH tokens."""
    try:
        for index, token in enumerate(tokens):
            for send in sends:
                send.send_nowait(token)
            if index % BATCH == BATCH - 1:
                await checkpoint()
    finally:
        for send in sends:
            send.close()


async def consume(receive: MemoryObjectReceiveStream[str]) -> int:
    """Count the items of ``receive`` until it ends, taking what is ready before waiting."""
    received = 0
    with receive:
        try:
            while True:
                received += len(await drain(receive))
        except anyio.EndOfStream:
            pass
    return received


def w1_floor(backend: str, params: dict[str, Any]) -> Run:
    """The same tokens through ``depth`` chained memory object streams (``depth=1``: one stream,
    the floor of issue 8's W1); every relay moves what is ready and waits only when nothing is."""
    n, depth = params["n"], params.get("depth", 1)
    tokens = tokens_of(n)

    async def run() -> int:
        streams = [anyio.create_memory_object_stream[str](math.inf) for _ in range(depth)]

        async def relay(level: int) -> None:
            with streams[level][1] as receive, streams[level + 1][0] as send:
                try:
                    while True:
                        for token in await drain(receive):
                            send.send_nowait(token)
                except anyio.EndOfStream:
                    return

        async with anyio.create_task_group() as group:
            group.start_soon(produce, tokens, [streams[0][0]])
            for level in range(depth - 1):
                group.start_soon(relay, level)
            return await consume(streams[-1][1])

    seconds, received = timed_run(backend, run)
    assert received == n, (received, n)
    return seconds, n, {}


# -- W2: fan-out ---------------------------------------------------------------------------------


def w2_ours(backend: str, params: dict[str, Any]) -> Run:
    """One message of ``n`` streamed tokens read by ``consumers`` concurrent consumers."""
    n, consumers = params["n"], params["consumers"]
    tokens = tokens_of(n)

    async def run() -> int:
        forum, leaf = streaming_forum(tokens, 0, params.get("producer", "iterable"))
        counts = [0] * consumers
        async with forum:
            sequence = leaf.ask("go")
            async for promise in sequence:

                async def reader(slot: int, promise: Any = promise) -> None:
                    async for _token in promise:
                        counts[slot] += 1

                async with anyio.create_task_group() as group:
                    for slot in range(consumers):
                        group.start_soon(reader, slot)
        assert counts == [n] * consumers, counts
        return sum(counts)

    seconds, delivered = timed_run(backend, run)
    return seconds, delivered, {}


def w2_floor(backend: str, params: dict[str, Any]) -> Run:
    """``consumers`` memory object streams fed by one producer, batched as in W1."""
    n, consumers = params["n"], params["consumers"]
    tokens = tokens_of(n)

    async def run() -> int:
        pairs = [anyio.create_memory_object_stream[str](math.inf) for _ in range(consumers)]
        counts: list[int] = []

        async def reader(receive: MemoryObjectReceiveStream[str]) -> None:
            counts.append(await consume(receive))

        async with anyio.create_task_group() as group:
            for _, receive in pairs:
                group.start_soon(reader, receive)
            group.start_soon(produce, tokens, [send for send, _ in pairs])
        assert counts == [n] * consumers, counts
        return sum(counts)

    seconds, delivered = timed_run(backend, run)
    return seconds, delivered, {}


# -- W3: call overhead ---------------------------------------------------------------------------


def echo_forum() -> tuple[Forum, Agent]:
    forum = Forum()

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")

    return forum, echo


def w3_ours(backend: str, params: dict[str, Any]) -> Run:
    """``calls`` asks of an echo agent, each awaited to its last message: one after the other
    (``concurrent`` false) or all started first, then each awaited."""
    calls, concurrent = params["calls"], params["concurrent"]

    async def run() -> int:
        forum, echo = echo_forum()
        async with forum:
            if concurrent:
                sequences = [echo.ask(f"q{index}") for index in range(calls)]
                for index, sequence in enumerate(sequences):
                    message = await sequence.last()
                    assert message.content == f"re: q{index}", message
            else:
                for index in range(calls):
                    message = await echo.ask(f"q{index}").last()
                    assert message.content == f"re: q{index}", message
        return calls

    seconds, done = timed_run(backend, run)
    return seconds, done, {}


def w3_floor(backend: str, params: dict[str, Any]) -> Run:
    """The floor of a call: a request sent on a memory object stream to a server task, which
    sends the reply back on the caller's own reply stream; sequential or all concurrent."""
    calls, concurrent = params["calls"], params["concurrent"]
    Request = tuple[str, "MemoryObjectSendStream[str]"]

    async def run() -> int:
        requests_send, requests_receive = anyio.create_memory_object_stream[Request](math.inf)

        async def server() -> None:
            async with requests_receive:
                async for content, reply in requests_receive:
                    reply.send_nowait(f"re: {content}")

        async def call(index: int) -> None:
            reply_send, reply_receive = anyio.create_memory_object_stream[str](1)
            with reply_send, reply_receive:
                await requests_send.send((f"q{index}", reply_send))
                assert await reply_receive.receive() == f"re: q{index}"

        async with anyio.create_task_group() as group:
            group.start_soon(server)
            async with requests_send:
                if concurrent:
                    async with anyio.create_task_group() as callers:
                        for index in range(calls):
                            callers.start_soon(call, index)
                else:
                    for index in range(calls):
                        await call(index)
        return calls

    seconds, done = timed_run(backend, run)
    return seconds, done, {}


def w3_task(backend: str, params: dict[str, Any]) -> Run:
    """Part of a call (``call_parts.py``): a task of its own per call, in one task group, which
    sets an event that the caller waits for; nothing else. Sequential only."""
    calls = params["calls"]

    async def run() -> int:
        async def call(done: anyio.Event) -> None:
            await checkpoint_if_cancelled()
            done.set()

        async with anyio.create_task_group() as group:
            for _ in range(calls):
                done = anyio.Event()
                group.start_soon(call, done)
                await done.wait()
        return calls

    seconds, done = timed_run(backend, run)
    return seconds, done, {}


def w3_messages(backend: str, params: dict[str, Any]) -> Run:
    """Part of a call (``call_parts.py``): its three messages (the request, the
    :class:`CallMessage`, the response), each built, hashed and stored in a
    :class:`MemoryStore`, as a call through the cache stores them; nothing else."""
    calls = params["calls"]

    async def run() -> int:
        store = MemoryStore()
        for index in range(calls):
            request = Message(content=f"q{index}", sender="user")
            call = CallMessage(receiver="echo", kwargs={}, parent=request.hash)
            answer = Message(
                content=f"re: q{index}", sender="echo", parent=call.hash, reply_to=request.hash
            )
            await store.put_many([request, call, answer])
        assert len(await store.stored([answer.hash])) == 1
        return calls

    seconds, done = timed_run(backend, run)
    return seconds, done, {}


# -- W4: message creation and hashing ------------------------------------------------------------


def contents_of(n: int, size: int = 0) -> list[str]:
    """``n`` message contents; of ``size`` characters each when ``size`` is given."""
    if size:
        return [f"{index:08d}".ljust(size, "x") for index in range(n)]
    return [f"message {index}" for index in range(n)]


def build_chain(contents: list[str]) -> list[Message]:
    """A branch of messages, each the child of the one before: the public API's way."""
    branch = []
    parent = None
    for content in contents:
        message = Message(content=content, sender="user", parent=parent)
        parent = message.hash
        branch.append(message)
    return branch


def floor_chain(contents: list[str]) -> list[str]:
    """The hashes of the same branch with hashlib and json alone: each content hashed (the tag
    of docs/hashing.md, then its UTF-8 bytes), then the sha256 of json.dumps(sort_keys) of the
    document naming it (with the separators of the canonical encoding, so that the hashes are
    the very same and can be compared), each message naming its parent's hash."""
    hashes = []
    parent = None
    for content in contents:
        content_hash = hashlib.sha256(b"agentforum/2 content\x00" + content.encode("utf-8"))
        document = {
            "content": content_hash.hexdigest(),
            "format": "agentforum/2",
            "kind": "message",
            "metadata": {},
            "parent": parent,
            "reply_to": None,
            "sender": "user",
        }
        encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        parent = hashlib.sha256(encoded.encode("utf-8")).hexdigest()
        hashes.append(parent)
    return hashes


def w4_ours(backend: str, params: dict[str, Any]) -> Run:
    """A branch of ``n`` messages built with ``Message(content, sender, parent=...)``, each
    hashed (its child needs the hash). Synchronous, so run inside the backend's event loop."""
    contents = contents_of(params["n"])

    async def run() -> int:
        return len(build_chain(contents))

    seconds, n = timed_run(backend, run)
    last = build_chain(contents[:3])[-1].hash
    assert last == floor_chain(contents[:3])[-1], "the floor computes other hashes"
    return seconds, n, {}


def w4_floor(backend: str, params: dict[str, Any]) -> Run:
    contents = contents_of(params["n"])

    async def run() -> int:
        return len(floor_chain(contents))

    seconds, n = timed_run(backend, run)
    return seconds, n, {}


async def responder_branch(store: MessageStore, n: int) -> int:
    """One ask of an agent that responds ``n`` messages, awaited to the last one, on a forum of
    ``store``: the branch is built, hashed and stored message by message through the forum (the
    request, the call and the ``n`` responses). Returns the messages of the branch."""
    forum = Forum(store)

    @forum.agent
    async def writer(ctx: InteractionContext) -> None:
        for index in range(n):
            ctx.respond(f"message {index}")

    async with forum:
        sequence = writer.ask("go")
        last = await sequence.last()
        branch = await forum.history(last, include_calls=True)
    assert last.content == f"message {n - 1}", last
    return len(branch)


def w4_forum(backend: str, params: dict[str, Any]) -> Run:
    """A branch of ``n`` messages built through a forum (:func:`responder_branch`) into a
    MemoryStore."""
    n = params["n"]
    seconds, count = timed_run(backend, lambda: responder_branch(MemoryStore(), n))
    assert count >= n + 2, count
    return seconds, count, {}


# -- W5: history ---------------------------------------------------------------------------------


def w5_ours(backend: str, params: dict[str, Any]) -> Run:
    """``forum.history`` of the last message of an ``n``-message branch (MemoryStore, or an
    SQLiteStore with ``"store": "sqlite"``); the time of one call, from a run of ``inner``."""
    n, inner = params["n"], params.get("inner", 5)
    branch = build_chain(contents_of(n))

    async def run() -> float:
        with tempfile.TemporaryDirectory() as directory:
            store: MessageStore = (
                SQLiteStore(os.path.join(directory, "w5.db"))
                if params.get("store") == "sqlite"
                else MemoryStore()
            )
            forum = Forum(store)
            await store.put_many(branch)
            async with forum:
                with Clock() as clock:
                    for _ in range(inner):
                        history = await forum.history(branch[-1])
                assert history == branch
            await store.aclose()
        return clock.seconds / inner

    seconds = anyio.run(run, backend=backend)
    return seconds, n, {}


# -- W6: the SQLite store ------------------------------------------------------------------------


def w6_ours(backend: str, params: dict[str, Any]) -> Run:
    """W4 with an SQLiteStore: ``"via": "forum"`` builds the branch through a forum
    (:func:`responder_branch`), every message committed before its promise resolves;
    ``"via": "put"`` stores the chain of :func:`build_chain` with one ``store.put`` each."""
    n = params["n"]
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(os.path.join(directory, "w6.db"))
        if params["via"] == "forum":
            seconds, count = timed_run(backend, lambda: responder_branch(store, n))
        else:
            branch = build_chain(contents_of(n))

            async def put_each() -> int:
                for message in branch:
                    await store.put(message)
                return len(branch)

            seconds, count = timed_run(backend, put_each)
        anyio.run(store.aclose, backend=backend)
    return seconds, count, {}


#: One row to insert: the table, then the row's values.
TableRow = tuple[str, tuple[object, ...]]


def forum_rows(n: int, directory: str) -> tuple[str, list[list[TableRow]]]:
    """The schema, and the rows of W6's forum branch: for each message, parents first, the
    row of its content (when the content is new) and its own row, as SQLiteStore wrote them."""
    path = os.path.join(directory, "rows.db")

    async def write() -> None:
        store = SQLiteStore(path)
        await responder_branch(store, n)
        await store.aclose()

    anyio.run(write)
    connection = sqlite3.connect(path)
    try:
        schema = ";\n".join(
            sql
            for (sql,) in connection.execute(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
                "AND (name LIKE 'messages%' OR name LIKE 'contents%')"
            )
        )
        messages = connection.execute("SELECT * FROM messages").fetchall()
        contents = dict(connection.execute("SELECT hash, text FROM contents"))
    finally:
        connection.close()
    children: dict[object, list[tuple[object, ...]]] = {}
    for row in messages:
        children.setdefault(row[2], []).append(row)  # the parent column
    ordered: list[list[TableRow]] = []
    pending, sent = [None], set()
    while pending:
        for row in children.get(pending.pop(), []):
            group: list[TableRow] = []
            if row[5] is not None and row[5] not in sent:  # the content column
                sent.add(row[5])
                group.append(("contents", (row[5], contents[row[5]])))
            group.append(("messages", row))
            ordered.append(group)
            pending.append(row[0])
    assert len(ordered) == len(messages)
    return schema, ordered


_ROWS: dict[int, tuple[str, list[list[TableRow]]]] = {}


def w6_floor(backend: str, params: dict[str, Any]) -> Run:
    """The same rows (W6's forum branch: each message's row and its content's) inserted with
    plain sqlite3 into a new database of the same schema, in WAL mode with ``synchronous =
    NORMAL`` and foreign keys on, as SQLiteStore does: ``"commit": "each"`` is one transaction
    per message (the durability promise's granularity), ``"commit": "once"`` is one transaction
    for all. Synchronous, in this thread."""
    n, commit = params["n"], params["commit"]
    if n not in _ROWS:  # written once per process, not once per timed run
        with tempfile.TemporaryDirectory() as directory:
            _ROWS[n] = forum_rows(n, directory)
    schema, groups = _ROWS[n]
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "floor.db")
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.executescript(schema)
            inserts = {
                table: f"INSERT OR IGNORE INTO {table} VALUES ({', '.join('?' * width)})"
                for table, width in (("messages", len(groups[0][-1][1])), ("contents", 2))
            }
            by_table = {
                name: [row for group in groups for table, row in group if table == name]
                for name in ("contents", "messages")
            }
            with Clock() as clock:
                if commit == "once":
                    connection.execute("BEGIN IMMEDIATE")
                    for name, rows in by_table.items():
                        connection.executemany(inserts[name], rows)
                    connection.execute("COMMIT")
                else:
                    for group in groups:
                        connection.execute("BEGIN IMMEDIATE")
                        for table, row in group:
                            connection.execute(inserts[table], row)
                        connection.execute("COMMIT")
            (stored,) = connection.execute("SELECT count(*) FROM messages").fetchone()
        finally:
            connection.close()
    assert stored == len(groups), (stored, len(groups))
    return clock.seconds, len(groups), {}


# -- W6PG: the PostgreSQL store --------------------------------------------------------------------


def postgres_server(params: dict[str, Any]) -> str:
    """The URL of the server the harness named, or exit saying why there is none."""
    url = os.environ.get(_postgres.URL_VARIABLE)
    if not url:
        not_applicable(
            str(params.get("why", f"no PostgreSQL server: set {_postgres.URL_VARIABLE}"))
        )
    assert url is not None
    return url


def w6pg_ours(backend: str, params: dict[str, Any]) -> Run:
    """W6 into a PostgresStore: the branch of :func:`responder_branch` built through a forum,
    every message committed before its promise resolves. The store is opened (its schema
    created) before the clock starts, as the floor's schema is."""
    n, server = params["n"], postgres_server(params)
    with _postgres.database(server) as url:
        store = PostgresStore(url)
        anyio.run(store.open, backend=backend)
        seconds, count = timed_run(backend, lambda: responder_branch(store, n))
        anyio.run(store.aclose, backend=backend)
    return seconds, count, {}


_BRANCHES: dict[int, list[Message]] = {}


def forum_branch(n: int) -> list[Message]:
    """The messages of W6's forum branch (request, call, responses), parents first."""
    if n not in _BRANCHES:  # built once per process, not once per timed run
        store = MemoryStore()

        async def write() -> list[Message]:
            await responder_branch(store, n)
            [request] = await store.children(None)
            return await store.ancestors(await _tip(store, request.hash))

        _BRANCHES[n] = anyio.run(write)
    return _BRANCHES[n]


async def _tip(store: MessageStore, key: str) -> str:
    """The hash of the last message of the one branch below ``key``."""
    while children := await store.children(key):
        key = children[0].hash
    return key


def w6pg_floor(backend: str, params: dict[str, Any]) -> Run:
    """The same rows (W6's forum branch: each message's row and its content's, as
    PostgresStore writes them) inserted with plain psycopg into a new database of the same
    schema: ``"commit": "each"`` is one transaction per message (the durability promise's
    granularity), ``"commit": "once"`` one transaction for all. Synchronous, in this thread."""
    import psycopg

    from agentforum._stores import _postgres_rows as tables

    n, commit, server = params["n"], params["commit"], postgres_server(params)
    branch = forum_branch(n)
    groups: list[list[tuple[str, tuple[object, ...]]]] = []
    sent: set[str] = set()
    for message in branch:
        group: list[tuple[str, tuple[object, ...]]] = []
        if not isinstance(message, CallMessage) and message.content_hash not in sent:
            sent.add(message.content_hash)
            key = bytes.fromhex(message.content_hash)
            group.append(("contents", (key, message.content.encode("utf-8"))))
        group.append(("messages", tables.row(message)))
        groups.append(group)
    inserts = {
        "contents": "INSERT INTO contents VALUES (%s, %s) ON CONFLICT DO NOTHING",
        "messages": f"INSERT INTO messages VALUES ({', '.join(['%s'] * len(tables.COLUMNS))}) "
        "ON CONFLICT DO NOTHING",
    }
    with _postgres.database(server) as url, psycopg.connect(url) as connection:
        connection.execute(tables.SCHEMA)
        connection.commit()
        with Clock() as clock, connection.cursor() as cursor:
            if commit == "once":
                for name in ("contents", "messages"):
                    rows = [row for group in groups for table, row in group if table == name]
                    cursor.executemany(inserts[name], rows)
                connection.commit()
            else:
                for group in groups:
                    for table, row in group:
                        cursor.execute(inserts[table], row)
                    connection.commit()
        (stored,) = connection.execute("SELECT count(*) FROM messages").fetchone() or (0,)
    assert stored == len(groups), (stored, len(groups))
    return clock.seconds, len(groups), {}


# -- W6PGW: worker processes sharing one PostgreSQL server ----------------------------------------

#: Messages a call of W6PGW stores: its request, its call and its response.
CALL_MESSAGES = 3


def w6pgw_ours(backend: str, params: dict[str, Any]) -> Run:
    """``workers`` processes (``_pg_worker.py``), each a forum on one new database of the
    server, each asking an echo agent ``calls`` times at once, every ask a conversation of
    its own. The clock runs from the moment every worker's forum is open (the line that
    starts them) until the last one has left its forum; the figure is every message stored
    by all of them. ``extra["per_worker"]`` is each worker's own messages per second."""
    workers, calls, server = params["workers"], params["calls"], postgres_server(params)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_pg_worker.py")
    with _postgres.database(server) as url:
        store = PostgresStore(url)  # the schema is created before the clock starts
        anyio.run(store.open, backend=backend)
        anyio.run(store.aclose, backend=backend)
        processes = [
            subprocess.Popen(
                [sys.executable, script, url, f"w{index}", str(calls), backend],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for index in range(workers)
        ]
        try:
            for process in processes:
                assert process.stdout is not None
                assert process.stdout.readline() == "ready\n"
            with Clock() as clock:
                for process in processes:
                    assert process.stdin is not None
                    process.stdin.write("go\n")
                    process.stdin.flush()
                seconds = [float(process.communicate()[0]) for process in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                process.wait()
        assert all(process.returncode == 0 for process in processes)
        import psycopg

        with psycopg.connect(url) as connection:
            (stored,) = connection.execute("SELECT count(*) FROM messages").fetchone() or (0,)
    messages = CALL_MESSAGES * calls
    assert stored == workers * messages, (stored, workers * messages)
    return clock.seconds, stored, {"per_worker": [messages / each for each in seconds]}


# -- storage size --------------------------------------------------------------------------------


def database_kib(path: str) -> float:
    """The size of the database file (its WAL checkpointed into it), in KiB."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return os.path.getsize(path) / 1024


async def put_each(path: str, messages: list[Message]) -> None:
    """Store ``messages`` one by one in the SQLiteStore at ``path``, then close it."""
    store = SQLiteStore(path)
    try:
        for message in messages:
            await store.put(message)
    finally:
        await store.aclose()


def size_forwards(backend: str, params: dict[str, Any]) -> Run:
    """KiB that ``n`` forwards of one message of ``size`` characters add to an SQLiteStore's
    file: a branch of forwards after the original, each passing it on (issue 15's target)."""
    n, size = params["n"], params["size"]
    original = Message(content="x" * size, sender="source")
    forwards: list[Message] = []
    parent = original
    for index in range(n):
        parent = ForwardedMessage(
            content=original.content,
            sender=f"proxy{index}",
            parent=parent.hash,
            original=original.hash,
        )
        forwards.append(parent)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "size.db")
        anyio.run(put_each, path, [original], backend=backend)
        before = database_kib(path)
        with Clock() as clock:
            anyio.run(put_each, path, forwards, backend=backend)
        added = database_kib(path) - before
    return clock.seconds, n, {"kib": added}


def size_shared(backend: str, params: dict[str, Any]) -> Run:
    """KiB of an SQLiteStore's file holding ``n`` messages that carry one content of ``size``
    characters, each in a conversation of its own (a root of another sender)."""
    n, size = params["n"], params["size"]
    document = "d" * size
    messages = [Message(content=document, sender=f"agent{index}") for index in range(n)]
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "size.db")
        with Clock() as clock:
            anyio.run(put_each, path, messages, backend=backend)
        total = database_kib(path)
    return clock.seconds, n, {"kib": total}


# -- memory --------------------------------------------------------------------------------------


def mem_ours(backend: str, params: dict[str, Any]) -> Run:
    """Bytes per message held in memory: a branch of ``n`` messages of ``size`` characters in a
    MemoryStore, measured with tracemalloc (what Python allocated and still holds) and as the RSS
    growth of the process in the timed run (an untraced one; tracing's own records would swell
    the RSS)."""
    n, size = params["n"], params.get("size", 100)
    contents = contents_of(n, size)
    holder: list[MemoryStore] = []

    async def run() -> int:
        store = MemoryStore()
        await store.put_many(build_chain(contents))
        holder.append(store)
        return n

    return held_memory(lambda: anyio.run(run, backend=backend), holder, n)


CASES = {
    "W1.ours": w1_ours,
    "W1.floor": w1_floor,
    "W2.ours": w2_ours,
    "W2.floor": w2_floor,
    "W3.ours": w3_ours,
    "W3.floor": w3_floor,
    "W3.task": w3_task,
    "W3.messages": w3_messages,
    "W4.ours": w4_ours,
    "W4.forum": w4_forum,
    "W4.floor": w4_floor,
    "W5.ours": w5_ours,
    "W6.ours": w6_ours,
    "W6.floor": w6_floor,
    "W6PG.ours": w6pg_ours,
    "W6PG.floor": w6pg_floor,
    "W6PGW.ours": w6pgw_ours,
    "MEM.ours": mem_ours,
    "SIZE.forwards": size_forwards,
    "SIZE.shared": size_shared,
}

if __name__ == "__main__":
    child_main(CASES)
