"""PostgresStore against a real server: opening, refusing, tampering, faults.

The contract every store keeps is pinned in ``test_stores.py`` (which runs on PostgreSQL
too); this file pins what is PostgreSQL's own: the URL and the forum that opens it, the
schema's marks and a database that is not agentforum's, rows altered behind the store's
back, and the faults of a server: one that cannot be reached, a wrong password, a connection
terminated, a server stopped mid-run.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import pg_server
from agentforum import (
    AgentError,
    Forum,
    ForwardedMessage,
    IntegrityError,
    IntegrityProblem,
    Message,
    PostgresStore,
    StoreError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from agentforum import InteractionContext

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def raw(url: str) -> Any:
    """A psycopg connection to the database of ``url`` in autocommit mode (close it)."""
    import psycopg

    return psycopg.connect(url, autocommit=True)


def rows(url: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    """The rows of ``query`` on the database of ``url``."""
    with raw(url) as connection:
        return list(connection.execute(query, args or None).fetchall())


def tamper(url: str, statement: str, *args: object) -> None:
    """Change the database behind the store's back, foreign keys unchecked (as a tamperer,
    or a restore of a partial dump, would)."""
    with raw(url) as connection:
        connection.execute("SET session_replication_role = replica")
        connection.execute(statement, args or None)


def chain(*contents: str) -> list[Message]:
    """A branch of messages from "s" with ``contents``, root first."""
    branch: list[Message] = []
    for content in contents:
        parent = branch[-1].hash if branch else None
        branch.append(Message(content=content, sender="s", parent=parent))
    return branch


# -- opening -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_a_forum_with_a_url_opens_a_postgres_store_and_closes_it(
    postgres_url: str, scheme: str
) -> None:
    """Forum("postgresql://...") and Forum("postgres://...") open a PostgresStore on that
    database, create its schema, and close its connections when the block exits."""
    url = scheme + postgres_url.removeprefix("postgresql")
    forum = Forum(url)
    assert isinstance(forum.store, PostgresStore)

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")

    async with forum:
        answer = await echo.ask("hello").last()
        await forum.set_ref("main", answer)
    # A server process ends after its client has closed the connection, not with it: wait
    # for it (a connection left open would never end, and the wait would fail). Nothing
    # signals a server process's end but its row leaving pg_stat_activity: poll it.
    name = urllib.parse.urlsplit(postgres_url).path[1:]
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    with anyio.fail_after(30):
        while rows(postgres_url, query, name) != [(0,)]:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    async with Forum(url) as again:
        assert [each.content for each in await again.history("main")] == ["hello", "re: hello"]
        assert await again.store.verify() == []


async def test_the_database_is_marked_and_each_content_stored_once(postgres_url: str) -> None:
    """The marks table names the application, the schema and the format; a forward of a long
    text adds a row of messages, not another copy of the text; texts holding NUL are kept."""
    store = PostgresStore(postgres_url)
    original = Message(content="x" * 10_000 + "\x00", sender="user\x00")
    forward = ForwardedMessage(
        content=original.content, sender="agent", parent=original.hash, original=original.hash
    )
    await store.put_many([original, forward])
    assert await store.get(original.hash) == original
    await store.aclose()
    assert dict(rows(postgres_url, "SELECT name, value FROM agentforum_meta")) == {
        "application": "agentforum",
        "schema": "1",
        "format": "agentforum/2",
    }
    assert rows(postgres_url, "SELECT count(*) FROM contents") == [(1,)]
    assert rows(postgres_url, "SELECT count(*) FROM messages") == [(2,)]


def test_the_url_is_shown_without_its_password() -> None:
    """repr, url and errors of a URL never show its password, in either place it may be."""
    for url in (
        "postgresql://alice:s3cr%40t@db.example:5433/chat",
        "postgresql://alice@db.example:5433/chat?password=s3cr%40t&sslmode=require",
    ):
        store = PostgresStore(url)
        assert "s3cr" not in repr(store)
        assert "s3cr" not in store.url
        assert store.url.startswith("postgresql://alice@db.example:5433/chat")


@pytest.mark.parametrize("url", ["chat.db", "mysql://a@b/c", "postgresql:/x", ""])
def test_a_store_takes_only_a_postgresql_url(url: str) -> None:
    """Anything but a postgresql:// or postgres:// URL is a ValueError."""
    with pytest.raises(ValueError, match="postgresql://"):
        PostgresStore(url)


def test_max_connections_is_a_positive_int() -> None:
    """max_connections below 1 is a ValueError."""
    with pytest.raises(ValueError, match="max_connections"):
        PostgresStore("postgresql://a@b/c", max_connections=0)


async def test_a_store_uses_at_most_max_connections(postgres_url: str) -> None:
    """Many operations at once share at most max_connections connections of the store."""
    store = PostgresStore(postgres_url, max_connections=2)
    branch = chain(*(str(index) for index in range(20)))
    await store.put_many(branch)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for each in branch * 5:
                group.start_soon(store.get, each.hash)
    name = urllib.parse.urlsplit(postgres_url).path[1:]
    used = rows(
        postgres_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        name,
        "agentforum",
    )
    await store.aclose()
    assert 1 <= used[0][0] <= 2


def test_one_store_is_used_from_asyncio_then_trio(postgres_url: str) -> None:
    """A store opened on asyncio works on Trio afterwards (and back), closed in between or not."""
    store = PostgresStore(postgres_url)
    branch = chain("a", "b")

    async def write() -> None:
        await store.put_many(branch)

    async def read() -> list[str]:
        return [each.hash for each in await store.ancestors(branch[-1].hash)]

    anyio.run(write, backend="asyncio")
    assert anyio.run(read, backend="trio") == [each.hash for each in branch]
    anyio.run(store.aclose, backend="trio")
    assert anyio.run(read, backend="asyncio") == [each.hash for each in branch]
    anyio.run(store.aclose, backend="asyncio")


async def test_stores_opening_one_new_database_at_once_create_it_once(postgres_url: str) -> None:
    """Several stores opening one empty database at the same moment all open it; the
    schema is created once."""
    stores = [PostgresStore(postgres_url) for _ in range(4)]
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for store in stores:
                group.start_soon(store.open)
    for index, store in enumerate(stores):
        await store.put(Message(content=str(index), sender="s"))
        await store.aclose()
    assert rows(postgres_url, "SELECT count(*) FROM agentforum_meta") == [(3,)]
    assert rows(postgres_url, "SELECT count(*) FROM messages") == [(4,)]


def snapshot(url: str) -> list[tuple[Any, ...]]:
    """Every table of the database's public schema, with its rows, for "left untouched"."""
    with raw(url) as connection:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        return [
            (table, sorted(map(repr, connection.execute(f'SELECT * FROM "{table}"'))))
            for table in tables
        ]


FOREIGN = {
    "another application's tables": (
        "CREATE TABLE users (id int PRIMARY KEY); INSERT INTO users VALUES (1)",
        "is not an agentforum database: its schema 'public' holds tables of another "
        "application \\(users\\)",
    ),
    "another application's marks table": (
        "CREATE TABLE agentforum_meta (name text PRIMARY KEY, value text NOT NULL); "
        "INSERT INTO agentforum_meta VALUES ('application', 'something else')",
        "is not an agentforum database \\(its agentforum_meta table is another",
    ),
    "a newer schema": (
        "CREATE TABLE agentforum_meta (name text PRIMARY KEY, value text NOT NULL); "
        "INSERT INTO agentforum_meta VALUES ('application', 'agentforum'), ('schema', '9')",
        "was written by a newer agentforum \\(schema 9; this one reads 1\\): upgrade agentforum",
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN))
async def test_a_database_that_is_not_ours_is_refused_untouched(
    postgres_url: str, case: str
) -> None:
    """A database of another application, or of a newer schema, raises StoreError (at forum
    entry too) and is left exactly as it was."""
    setup, message = FOREIGN[case]
    with raw(postgres_url) as connection:
        connection.execute(setup)
    before = snapshot(postgres_url)
    with pytest.raises(StoreError, match=message):
        await PostgresStore(postgres_url).open()
    with pytest.raises(StoreError, match=message):
        async with Forum(postgres_url):
            pass
    assert snapshot(postgres_url) == before


async def test_an_empty_database_with_create_false_is_refused_and_stays_empty(
    postgres_url: str,
) -> None:
    """create=False never creates the schema: an empty database raises StoreError."""
    with pytest.raises(StoreError, match="is not an agentforum database \\(it is empty\\)"):
        await PostgresStore(postgres_url, create=False).open()
    assert snapshot(postgres_url) == []
    creator = PostgresStore(postgres_url)
    await creator.open()
    await creator.aclose()
    store = PostgresStore(postgres_url, create=False)
    await store.put(Message(content="a", sender="s"))
    await store.aclose()


async def test_a_schema_named_in_the_url_holds_the_store(postgres_url: str) -> None:
    """The tables go to the first schema of the URL's search_path: one database can hold
    agentforum beside another application's tables; a schema that does not exist is
    refused, naming the cure."""
    with raw(postgres_url) as connection:
        connection.execute("CREATE TABLE users (id int); CREATE SCHEMA forum")
    in_schema = f"{postgres_url}&options=-csearch_path%3Dforum"
    async with Forum(in_schema) as forum:
        await forum.set_ref("main", Message(content="a", sender="s"))
    assert rows(postgres_url, "SELECT count(*) FROM forum.messages") == [(1,)]
    with pytest.raises(StoreError, match="its search_path names no schema that exists"):
        await PostgresStore(f"{postgres_url}&options=-csearch_path%3Dnowhere").open()


# -- every read is checked ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        ("UPDATE contents SET text = 'altered'::bytea", "its content .* does not hash to its hash"),
        ("UPDATE messages SET metadata = '{\"a\":1}'", "its fields do not hash to its hash"),
        ("UPDATE messages SET sender = '\\xff'::bytea", "its stored fields are not those of a"),
        ("DELETE FROM contents", "its content .* is missing"),
    ],
)
async def test_an_altered_row_is_never_returned(
    postgres_url: str, statement: str, reason: str
) -> None:
    """A message whose row or content was changed behind the store's back raises
    IntegrityError from every read, and verify() reports it."""
    store = PostgresStore(postgres_url)
    [root] = chain("a")
    await store.put(root)
    tamper(postgres_url, statement)
    for read in (store.get, store.resolve, store.ancestors):
        with pytest.raises(IntegrityError, match=f"message {root.hash}: {reason}"):
            await read(root.hash)
    with pytest.raises(IntegrityError, match=reason):
        await store.children(None)
    problems = await store.verify()
    assert any(problem.hash == root.hash for problem in problems), problems
    await store.aclose()


async def test_verify_reports_what_was_changed_behind_the_stores_back(postgres_url: str) -> None:
    """verify() reports a dangling ref and cache entry, a message whose parent is missing
    (and so unreachable), an unreferenced content, and columns not stored as the fields."""
    store = PostgresStore(postgres_url)
    root, child, grandchild = chain("a", "b", "c")
    await store.put_many([root, child, grandchild])
    await store.set_ref("main", grandchild.hash)
    assert await store.verify() == []
    tamper(postgres_url, "DELETE FROM messages WHERE hash = %s", bytes.fromhex(child.hash))
    tamper(postgres_url, "INSERT INTO contents VALUES (%s, 'lonely'::bytea)", bytes(32))
    tamper(
        postgres_url, "UPDATE messages SET kwargs = '{}' WHERE hash = %s", bytes.fromhex(root.hash)
    )
    problems = await store.verify()
    await store.aclose()
    assert (
        IntegrityProblem(grandchild.hash, f"its parent {child.hash} is not in the store")
        in problems
    )
    assert (
        IntegrityProblem(grandchild.hash, "ref 'main' points at a message that is not in the store")
        not in problems
    )
    assert IntegrityProblem(root.hash, "its columns are not stored as its fields are") in problems
    assert any("a content does not hash to its hash" in problem.reason for problem in problems)
    assert any("referenced by no message" in problem.reason for problem in problems)


# -- faults ------------------------------------------------------------------------------------


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A TCP port of the loopback interface on which nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield port


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port of the loopback interface that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_an_unreachable_server_is_a_store_error_at_forum_entry() -> None:
    """A closed port is a StoreError when the forum is entered, naming host, port and
    database, never the password."""
    with closed_port() as port:
        forum = Forum(f"postgresql://alice:hunter2secret@127.0.0.1:{port}/chat")
        with anyio.fail_after(30), pytest.raises(StoreError) as failure:
            async with forum:
                pass
    text = str(failure.value)
    assert text.startswith(
        f"cannot connect to PostgreSQL at 127.0.0.1, port {port}, database 'chat': "
    ), text
    assert "Connection refused" in text
    assert "hunter2secret" not in text
    assert failure.value.__cause__ is None or "hunter2secret" not in str(failure.value.__cause__)


async def test_a_server_that_never_answers_is_a_store_error_after_the_connect_timeout() -> None:
    """A server that accepts the connection and says nothing: StoreError once the URL's
    connect_timeout has passed, saying so (never a hang)."""
    with silent_server() as port:
        store = PostgresStore(f"postgresql://alice@127.0.0.1:{port}/chat?connect_timeout=2")
        with anyio.fail_after(60), pytest.raises(StoreError, match="connect timeout \\(2 s"):
            await store.open()


async def test_a_wrong_password_says_so(postgres_server: pg_server.Server) -> None:
    """A wrong password is a StoreError that says so, and does not show the password; the
    right one opens the store."""
    if not pg_server.password_required(postgres_server):
        pytest.skip(f"the server of {pg_server.URL_VARIABLE} may not check passwords")
    wrong = postgres_server.database_url(
        "postgres", user=pg_server.PASSWORD_ROLE, password="not-the-password"
    )
    with pytest.raises(StoreError) as failure:
        async with Forum(wrong):
            pass
    assert f"wrong password for user '{pg_server.PASSWORD_ROLE}'" in str(failure.value)
    assert "not-the-password" not in str(failure.value)
    with postgres_server.database() as url:
        right = postgres_server.database_url(
            urllib.parse.urlsplit(url).path[1:],
            user=pg_server.PASSWORD_ROLE,
            password=pg_server.PASSWORD,
        )
        with raw(url) as connection:
            connection.execute(f"GRANT ALL ON SCHEMA public TO {pg_server.PASSWORD_ROLE}")
        store = PostgresStore(right)
        await store.put(Message(content="a", sender="s"))
        await store.aclose()


async def test_a_missing_database_is_named(postgres_server: pg_server.Server) -> None:
    """A database that does not exist is a StoreError that names it."""
    url = postgres_server.database_url("agentforum_no_such_database")
    with pytest.raises(StoreError, match='database "agentforum_no_such_database" does not exist'):
        await PostgresStore(url).open()


async def test_a_terminated_connection_is_replaced_and_the_operation_run_again(
    postgres_url: str,
) -> None:
    """Connections terminated by the server (pg_terminate_backend, as a restart or an
    administrator does) are noticed on the next use: the operation runs again on a new
    connection, and succeeds."""
    store = PostgresStore(postgres_url)
    branch = chain("a", "b", "c")
    await store.put_many(branch[:2])
    name = urllib.parse.urlsplit(postgres_url).path[1:]
    terminated = rows(
        postgres_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND application_name = 'agentforum'",
        name,
    )
    assert terminated == [(True,)]
    await store.put(branch[2])
    await store.set_ref("main", branch[2].hash, expected=None)
    assert [each.hash for each in await store.ancestors(branch[2].hash)] == [
        each.hash for each in branch
    ]
    await store.aclose()


def stop(server: Any) -> None:
    """Stop the server (fast shutdown: every connection is ended), keeping its data."""
    pg_server.pg_ctl(server, "-w", "-m", "fast", "stop")


async def test_a_server_stopped_mid_run_gives_store_errors_and_loses_nothing(
    own_server: Any,
) -> None:
    """The server stops while a forum runs: the next call's consumer gets an AgentError
    whose cause is the StoreError naming the server, leaving the forum raises it, nothing
    hangs; once the server is back, every message resolved before is there, sound."""
    url = own_server.get_uri()
    forum = Forum(url)

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")

    resolved: list[Message] = []

    async def run() -> None:
        async with forum:
            resolved.append(await echo.ask("before").last())
            await anyio.to_thread.run_sync(stop, own_server)
            with pytest.raises((AgentError, StoreError)) as failure:
                await echo.ask("after", branch_from=resolved[-1]).last()
            if isinstance(failure.value, AgentError):
                assert isinstance(failure.value.__cause__, StoreError)

    with anyio.fail_after(60):
        with pytest.raises(StoreError, match="cannot connect to PostgreSQL at the socket in"):
            await run()
        own_server.ensure_postgres_running()
        async with Forum(url) as again:
            history = await again.history(resolved[-1].hash)
            assert [each.content for each in history] == ["before", "re: before"]
            assert await again.store.verify() == []


def test_the_core_never_imports_psycopg() -> None:
    """Importing agentforum, and making a PostgresStore, imports no psycopg; without psycopg
    a store says what to install."""
    script = (
        "import sys\n"
        "sys.modules['psycopg'] = None\n"
        "import anyio, agentforum\n"
        "store = agentforum.PostgresStore('postgresql://a@127.0.0.1:1/b')\n"
        "try:\n"
        "    anyio.run(store.open)\n"
        "except agentforum.StoreError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout == (
        "the PostgreSQL store needs psycopg 3: pip install 'agentforum[postgres]'\n"
    )
    assert result.stderr == ""


async def test_two_stores_writing_the_same_messages_in_opposite_orders_never_deadlock(
    postgres_url: str,
) -> None:
    """Two writers storing one large batch at once, one in reverse order (identical calls on
    two workers write the same messages): both succeed, neither is a deadlock victim."""
    batch = [Message(content=str(index), sender="s") for index in range(2_000)]
    stores = [PostgresStore(postgres_url) for _ in range(2)]
    for store in stores:
        await store.open()
    with anyio.fail_after(60):
        for _ in range(3):
            async with anyio.create_task_group() as group:
                group.start_soon(stores[0].put_many, batch)
                group.start_soon(stores[1].put_many, batch[::-1])
            batch = [Message(content=f"{each.content}+", sender="s") for each in batch]
    for store in stores:
        await store.aclose()
    assert rows(postgres_url, "SELECT count(*) FROM messages") == [(6_000,)]
