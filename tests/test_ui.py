"""The web view (``agentforum.ui``, ``agentforum ui``): its JSON reads and live feed over
HTTP, on asyncio and Trio, against the demo's database and stores written during the test."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

pytest.importorskip("starlette")
pytest.importorskip("hypercorn")

import h11
import httpx

from agentforum import (
    CallMessage,
    ErrorMessage,
    Forum,
    InteractionContext,
    MemoryStore,
    Message,
    PostgresStore,
    SQLiteStore,
    StreamedMessage,
)
from agentforum.ui import UIServer, create_app, serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable


pytestmark = pytest.mark.anyio

SCRIPT = '<script>document.title = "pwned"</script> **bold** [x](javascript:alert(1))'


def client(store: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(store)), base_url="http://ui"
    )


async def tree_store() -> tuple[MemoryStore, dict[str, Message]]:
    """A small tree: a root, two branches (one with a call and a cancelled error)."""
    store = MemoryStore()
    root = Message(content="Hello *there*", sender="user", metadata={"topic": "greeting"})
    left = Message(content=SCRIPT, sender="mallory", parent=root.hash)
    call = CallMessage(receiver="researcher", kwargs={"depth": 2}, parent=root.hash)
    cancelled = ErrorMessage(
        content="the call was cancelled",
        sender="researcher",
        error_type="AgentCancelled",
        parent=call.hash,
    )
    for message in (root, left, call, cancelled):
        await store.put(message)
    await store.set_ref("left", left.hash)
    await store.set_ref("right", cancelled.hash)
    return store, {"root": root, "left": left, "call": call, "cancelled": cancelled}


async def test_refs_roots_and_children_load_lazily(demo_db: Path) -> None:
    async with aclosing(SQLiteStore(demo_db, create=False)) as store, client(store) as http:
        refs = (await http.get("/api/refs")).json()
        assert [ref["name"] for ref in refs] == sorted((await store.refs()).keys())
        roots = (await http.get("/api/children")).json()
        assert [root["hash"] for root in roots] == [m.hash for m in await store.children(None)]
        first = roots[0]["hash"]
        children = (await http.get("/api/children", params={"of": first})).json()
        assert [child["hash"] for child in children] == [
            m.hash for m in await store.children(first)
        ]
        assert all(child["parent"] == first for child in children)


async def test_a_message_shows_its_fields_history_and_safe_content() -> None:
    store, messages = await tree_store()
    async with client(store) as http:
        root = (await http.get(f"/api/messages/{messages['root'].hash}")).json()
        assert root["sender"] == "user"
        assert root["metadata"] == {"topic": "greeting"}
        assert root["html"] == "<p>Hello <em>there</em></p>\n"
        left = (await http.get("/api/messages/left")).json()  # a ref names it too
        assert left["content"] == SCRIPT
        assert "<script" not in left["html"]
        assert "&lt;script&gt;" in left["html"]
        assert "href" not in left["html"]  # the javascript: link stays text
        assert left["refs"] == ["left"]
        call = (await http.get(f"/api/messages/{messages['call'].hash[:8]}")).json()
        assert (call["kind"], call["receiver"], call["kwargs"]) == (
            "call",
            "researcher",
            {"depth": 2},
        )
        error = (await http.get("/api/messages/right")).json()
        assert (error["kind"], error["error_type"], error["cancelled"]) == (
            "error",
            "AgentCancelled",
            True,
        )
        history = (await http.get("/api/history/right")).json()
        assert [step["hash"] for step in history] == [
            messages[name].hash for name in ("root", "call", "cancelled")
        ]
        missing = await http.get("/api/messages/" + "0" * 64)
        assert missing.status_code == 404
        assert "error" in missing.json()


async def test_the_diff_of_two_branches() -> None:
    store, messages = await tree_store()
    async with client(store) as http:
        diff = (await http.get("/api/diff", params={"a": "left", "b": "right"})).json()
        assert diff["base"]["hash"] == messages["root"].hash
        assert [m["hash"] for m in diff["a"]] == [messages["left"].hash]
        assert [m["hash"] for m in diff["b"]] == [messages[n].hash for n in ("call", "cancelled")]
        bad = await http.get("/api/diff", params={"a": "left", "b": "nowhere"})
        assert bad.status_code == 404


async def test_the_page_and_its_assets_are_served_with_a_strict_policy() -> None:
    store, _ = await tree_store()
    async with client(store) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert "/static/app.js" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for asset in ("/static/app.js", "/static/app.css"):
            assert (await http.get(asset)).status_code == 200
        script = (await http.get("/static/app.js")).text
        # Content goes in as text; only the server's escaped Markdown is set as HTML.
        assert script.count(".innerHTML") == 1
        assert "content.innerHTML = message.html;" in script


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_the_view_is_read_only(method: str) -> None:
    store, messages = await tree_store()
    before = dict(await store.refs())
    async with client(store) as http:
        for path in ("/api/refs", "/api/children", "/api/messages/left", "/api/diff", "/"):
            response = await http.request(method, path, json={"name": "x", "hash": "0" * 64})
            assert response.status_code == 405, (method, path)
    assert dict(await store.refs()) == before
    assert [m.hash for m in await store.children(None)] == [messages["root"].hash]


@asynccontextmanager
async def events(server: UIServer) -> AsyncIterator[Callable[[], Awaitable[tuple[str, Any]]]]:
    """Read the server-sent events of the live feed: a function returning the next one,
    (name, data); ``("ready", None)`` first, when the feed has taken its starting point.

    Read with h11 over a plain connection (httpx's streams leave async generators to the
    garbage collector when a stream that never ends is left, which Trio warns about).
    """
    async with await anyio.connect_tcp(server.host, server.port) as stream:
        connection = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target="/api/events", headers=[("Host", "ui")])
        await stream.send(connection.send(request) + connection.send(h11.EndOfMessage()))
        pending: list[str] = []
        buffer = ""

        async def next_line() -> str:
            nonlocal buffer
            while not pending:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive())
                elif isinstance(event, h11.Response):
                    assert dict(event.headers)[b"content-type"].startswith(b"text/event-stream")
                elif isinstance(event, h11.Data):
                    *lines, buffer = (buffer + bytes(event.data).decode()).split("\n")
                    pending.extend(lines)
                else:
                    raise AssertionError(f"the feed ended: {event!r}")
            return pending.pop(0)

        async def next_event() -> tuple[str, Any]:
            name = None
            while True:
                line = await next_line()
                if line.startswith("retry:"):
                    return "ready", None
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    return str(name), json.loads(line.removeprefix("data: "))

        yield next_event


async def test_new_messages_and_moved_refs_are_pushed(tmp_path: Path) -> None:
    """Another writer of the database (a store of its own) adds a message and moves a ref:
    the feed of a running server reports both."""
    path = tmp_path / "live.db"
    async with aclosing(SQLiteStore(path)) as writer:
        root = Message(content="first", sender="user")
        await writer.put(root)
        async with aclosing(SQLiteStore(path, create=False)) as reader, serve(reader) as server:
            assert server.host == "127.0.0.1"
            async with events(server) as feed:
                with anyio.fail_after(20):
                    assert await feed() == ("ready", None)
                    reply = Message(content="<b>second</b>", sender="bot", parent=root.hash)
                    await writer.put(reply)
                    name, data = await feed()
                    assert (name, data["hash"]) == ("stored", reply.hash)
                    assert data["preview"] == "<b>second</b>"  # text: the page sets textContent
                    await writer.set_ref("main", reply.hash)
                    assert await feed() == ("refs", [["main", reply.hash]])


async def test_serving_a_forum_follows_its_memory_store() -> None:
    forum = Forum()
    async with forum, serve(forum) as server:
        async with events(server) as feed:
            with anyio.fail_after(20):
                assert await feed() == ("ready", None)
                message = Message(content="hi", sender="user")
                await forum.store.put(message)
                name, data = await feed()
                assert (name, data["hash"]) == ("stored", message.hash)


async def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"port {port} of 127.0.0.1 is in use"):
            async with serve(MemoryStore(), port=port):
                pass


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentforum", "ui", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_reports_a_bad_db(tmp_path: Path) -> None:
    result = run_cli("--db", str(tmp_path / "missing.db"))
    assert result.returncode == 1
    assert result.stderr.startswith("agentforum: error: ")
    assert "no such database" in result.stderr
    not_a_db = tmp_path / "text.db"
    not_a_db.write_text("hello")
    result = run_cli("--db", str(not_a_db))
    assert result.returncode == 1
    assert result.stderr.startswith("agentforum: error: ")
    assert not_a_db.read_text() == "hello"


def test_the_command_reports_a_busy_port(demo_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    shutil.copy(demo_db, db)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--db", str(db), "--port", str(port))
    assert result.returncode == 1
    assert result.stderr == (
        f"agentforum: error: port {port} of 127.0.0.1 is in use (pass --port N, or --port 0)\n"
    )


async def test_a_served_forum_streams_the_tokens_of_calls_in_progress() -> None:
    """Each token reaches the feed while the agent is still producing the answer: the agent
    sends the next token only once the test has read the previous one from the feed."""
    forum = Forum()
    read = [anyio.Event() for _ in range(3)]

    @forum.agent
    async def speaker(ctx: InteractionContext) -> None:
        async with StreamedMessage() as message:
            ctx.respond(message)
            for index, token in enumerate(["Hel", "lo ", "<i>there</i>"]):
                await message.send(token)
                await read[index].wait()

    async with forum, serve(forum) as server, events(server) as feed:
        with anyio.fail_after(20):
            assert await feed() == ("ready", None)
            answer = speaker.ask("hi")
            for index, token in enumerate(["Hel", "lo ", "<i>there</i>"]):
                name, data = await feed()
                while name != "token":  # the request, stored meanwhile
                    name, data = await feed()
                assert data == {"call": 1, "agent": "speaker", "response": 0, "text": token}
                read[index].set()
            assert (await answer.last()).content == "Hello <i>there</i>"
            name, data = await feed()
            while name != "token":
                name, data = await feed()
            assert data == {"call": 1, "agent": "speaker", "ended": True}


def test_the_load_benchmark_runs_small() -> None:
    """benchmarks/ui_load.py writes a database, serves it and times the page's first load."""
    script = Path(__file__).parent.parent / "benchmarks" / "ui_load.py"
    result = subprocess.run(
        [sys.executable, str(script), "--messages", "200", "--conversations", "4", "--repeat", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 201 messages in 4 conversations" in result.stdout
    assert "first load of the page: median " in result.stdout


async def test_a_postgresql_database_is_shown_and_followed(postgres_url: str) -> None:
    """PostgreSQL: the reads, and the feed: a message another writer stores is pushed,
    once, and so is a moved ref."""
    async with aclosing(PostgresStore(postgres_url)) as store:
        root = Message(content="on *PostgreSQL*", sender="user")
        reply = Message(content="yes", sender="bot", parent=root.hash)
        await store.put_many([root, reply])
        async with client(store) as http:
            roots = (await http.get("/api/children")).json()
            assert [found["hash"] for found in roots] == [root.hash]
            children = (await http.get("/api/children", params={"of": root.hash})).json()
            assert [found["hash"] for found in children] == [reply.hash]
            shown = (await http.get(f"/api/messages/{root.hash[:10]}")).json()
            assert shown["html"] == "<p>on <em>PostgreSQL</em></p>\n"
        async with (
            aclosing(PostgresStore(postgres_url)) as writer,
            serve(store) as server,
            events(server) as feed,
        ):
            with anyio.fail_after(20):
                assert await feed() == ("ready", None)
                later = Message(content="<i>later</i>", sender="bot", parent=root.hash)
                await writer.put(later)
                name, data = await feed()
                assert (name, data["hash"], data["preview"]) == (
                    "stored",
                    later.hash,
                    "<i>later</i>",
                )
                await writer.set_ref("main", later.hash)
                # The ref is the next event: the message was reported once.
                assert await feed() == ("refs", [["main", later.hash]])


def test_the_command_without_the_ui_extra_says_how_to_install_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['starlette'] = None; sys.argv = ['agentforum', 'ui']; "
        "from agentforum.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stderr == (
        "agentforum: error: agentforum ui needs starlette: pip install 'agentforum[ui]'\n"
    )


def test_the_command_serves_the_database_until_ctrl_c(demo_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    shutil.copy(demo_db, db)
    with subprocess.Popen(
        [sys.executable, "-m", "agentforum", "ui", "--db", str(db), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # printed once the port is listening
            assert line.startswith(f"Serving {db} on http://127.0.0.1:")
            url = line.split(" on ", 1)[1].split(" ", 1)[0]
            refs = httpx.get(url + "api/refs", timeout=30).json()
            assert {ref["name"] for ref in refs} == {"demo/first", "demo/second"}
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 130
        finally:
            if process.poll() is None:
                process.kill()
