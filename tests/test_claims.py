"""Single flight across processes: an identical call in flight in another process is
followed, not run again; a worker that dies mid-call is taken over; a failed call releases
its claim.

The workers are real processes (``flight_worker.py``), one on asyncio and one on Trio,
sharing an SQLite file or a PostgreSQL database; the test orders them by the lines they
print (``started``, ``waiting``), never by time, and kills one with SIGKILL. The tests in
one process (two forums, each with a store of its own on one file) pin the runtime's side.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from agentforum import (
    AgentCancelled,
    Claim,
    Forum,
    InteractionContext,
    MemoryStore,
    PostgresStore,
    SQLiteStore,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from agentforum import MessageSequence

pytestmark = pytest.mark.slow


WORKER = Path(__file__).with_name("flight_worker.py")
#: A safety bound on each line awaited from a worker (never reached when all is well).
PATIENCE = 60.0


class Worker:
    """One worker process, and its standard streams a line at a time."""

    def __init__(self, db: str, backend: str, runs: Path, lease: float, heartbeat: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), db, backend, str(runs), str(lease), str(heartbeat)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        self._buffer = b""

    def read_line(self) -> str:
        """The next line the worker prints (failing, with its errors, if it exits first)."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + PATIENCE
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self.process.stdout], [], [], deadline - time.monotonic())
            chunk = os.read(self.process.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                self.process.kill()
                raise AssertionError(f"the worker said nothing more: {self.errors()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")

    def outcome(self) -> dict[str, Any]:
        """The outcome it printed last; it has exited 0, its standard error empty."""
        outcome: dict[str, Any] = json.loads(self.read_line())
        assert self.process.wait(PATIENCE) == 0, self.errors()
        assert self.errors() == ""
        return outcome

    def errors(self) -> str:
        assert self.process.stderr is not None
        self.process.wait(PATIENCE)
        return self.process.stderr.read().decode()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database the workers share: an SQLite file, or a PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "shared.db")


@pytest.fixture
def workers(db: str, tmp_path: Path) -> Iterator[list[Worker]]:
    """Where the tests' workers are kept: each is killed, if need be, and reaped after."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.close()


def start(
    workers: list[Worker], db: str, runs: Path, lease: float, heartbeat: float
) -> tuple[Worker, Worker]:
    """Start two workers, on asyncio and on Trio, at once; return them once both are ready."""
    started = [Worker(db, backend, runs, lease, heartbeat) for backend in ("asyncio", "trio")]
    workers.extend(started)
    for worker in started:
        assert worker.read_line() == "ready"
    return started[0], started[1]


def one_runs_one_waits(
    workers: list[Worker], db: str, runs: Path, lease: float, heartbeat: float
) -> tuple[Worker, Worker]:
    """Start two workers; the first (asyncio) starts the call, and its agent runs; then the
    second (Trio) makes the same call, and waits for the first's claim. Return them."""
    running, waiting = start(workers, db, runs, lease, heartbeat)
    running.send("go")
    assert running.read_line() == "started"
    waiting.send("go")
    assert waiting.read_line() == "waiting"
    return running, waiting


def assert_runs_it_again(worker: Worker, runs: Path, db: str) -> None:
    """The worker that waited runs the agent (the second run) and answers; no claim is left."""
    assert worker.read_line() == "started"
    worker.send("answer")
    assert worker.outcome()["contents"] == ["the answer to question"]
    assert runs.read_text() == "run\nrun\n"
    assert claims_left(db) == []


def claims_left(db: str) -> list[Any]:
    """The claims the database still holds."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as connection:
            return connection.execute("SELECT owner FROM claims").fetchall()
    with sqlite3.connect(db) as connection:
        found = connection.execute("SELECT owner FROM claims").fetchall()
    connection.close()
    return found


async def _problems(db: str) -> list[Any]:
    store = PostgresStore(db) if db.startswith("postgresql://") else SQLiteStore(db)
    try:
        return list(await store.verify())
    finally:
        await store.aclose()


def problems(db: str) -> list[Any]:
    """What ``fsck`` finds wrong with the database."""
    return anyio.run(_problems, db)


def test_identical_calls_started_at_once_by_two_workers_run_once(
    db: str, tmp_path: Path, workers: list[Worker]
) -> None:
    """Two workers (asyncio, Trio) make one call at the same moment: the agent runs once,
    the other worker waits for it and answers with the same messages, from the cache."""
    runs = tmp_path / "runs"
    first, second = start(workers, db, runs, 60, 2)
    first.send("go")
    second.send("go")
    said = {first.read_line(): first, second.read_line(): second}
    assert set(said) == {"started", "waiting"}
    said["started"].send("answer")
    answers = [first.outcome(), second.outcome()]
    assert answers[0] == answers[1]
    assert answers[0]["contents"] == ["the answer to question"]
    assert runs.read_text() == "run\n"
    assert claims_left(db) == []
    assert problems(db) == []


def test_a_worker_killed_mid_call_is_taken_over_once_its_lease_runs_out(
    db: str, tmp_path: Path, workers: list[Worker]
) -> None:
    """A worker SIGKILLed while its agent runs leaves its claim to run out (1 s here); the
    worker waiting for it then claims the call, runs the agent and answers; fsck finds the
    database sound."""
    runs = tmp_path / "runs"
    doomed, survivor = one_runs_one_waits(workers, db, runs, 1, 0.25)
    doomed.process.send_signal(signal.SIGKILL)
    assert doomed.process.wait(PATIENCE) == -signal.SIGKILL
    assert_runs_it_again(survivor, runs, db)
    assert problems(db) == []


def test_a_failed_call_releases_its_claim_and_the_waiting_worker_runs_it(
    db: str, tmp_path: Path, workers: list[Worker]
) -> None:
    """A call whose agent fails releases its claim at once (its lease is 60 s) without a
    cache entry: the worker waiting for it runs the call itself, and answers."""
    runs = tmp_path / "runs"
    failing, waiting = one_runs_one_waits(workers, db, runs, 60, 2)
    failing.send("fail")
    assert failing.outcome() == {"error": "the model is down"}
    assert_runs_it_again(waiting, runs, db)


# -- two forums in one process, each with a store of its own on one file ----------------------


class Watched(SQLiteStore):
    """An SQLite store that tells the test when a call starts waiting for a claim, and when
    a holder renews its claim."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.waiting = anyio.Event()
        self.renewed = anyio.Event()
        self.held: list[Claim] = []

    async def claim(self, call_hash: str, owner: str, lease: float) -> Claim:
        claim = await super().claim(call_hash, owner, lease)
        if claim.owner == owner:
            if any(held.owner == owner for held in self.held):
                self.renewed.set()
            self.held.append(claim)
        return claim

    async def wait_released(self, call_hash: str, *, poll: float) -> None:
        self.waiting.set()
        await super().wait_released(call_hash, poll=poll)


class Pair:
    """Two forums on one SQLite file, and an agent in each that counts its runs together."""

    def __init__(self, path: Path) -> None:
        self.stores = [Watched(path), Watched(path)]
        self.forums = [Forum(store, lease=60, heartbeat=0.5) for store in self.stores]
        self.runs = 0
        self.started = anyio.Event()
        self.go = anyio.Event()
        self.agents = [forum.agent(self.expert) for forum in self.forums]

    async def expert(self, ctx: InteractionContext) -> None:
        self.runs += 1
        self.started.set()
        await self.go.wait()
        async for request in ctx.request_messages:
            ctx.respond(f"the answer to {(await request).content}")

    async def one_runs_others_wait(
        self, calls: int
    ) -> tuple[MessageSequence, list[MessageSequence]]:
        """Forum 0's call runs its agent; then ``calls`` identical calls of forum 1, the first
        of which waits for the claim (the others follow it). Return the calls."""
        first = self.agents[0].ask("question")
        await self.started.wait()
        others = [self.agents[1].ask("question") for _ in range(calls)]
        await self.stores[1].waiting.wait()
        return first, others

    async def aclose(self) -> None:
        for store in self.stores:
            await store.aclose()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    """Two forums on one new SQLite file, their stores closed after the test."""
    made = Pair(tmp_path / "shared.db")
    try:
        yield made
    finally:
        await made.aclose()


@pytest.mark.anyio
async def test_calls_waiting_for_another_forums_claim_replay_its_answer(
    pair: Pair, tmp_path: Path
) -> None:
    """A call of another forum on the same file waits for the claim and replays the answer
    from the cache; an identical call of its own forum follows it: one run for all three."""
    async with pair.forums[0], pair.forums[1]:
        first, others = await pair.one_runs_others_wait(2)
        pair.go.set()
        answers = [await call.messages() for call in (first, *others)]
    assert answers[0] == answers[1] == answers[2]
    assert pair.runs == 1
    statistics = pair.forums[1].statistics()
    assert (statistics.agents_run, statistics.calls_followed) == (0, 2)
    assert claims_left(str(tmp_path / "shared.db")) == []


@pytest.mark.anyio
async def test_the_holder_renews_its_claim_every_heartbeat_while_its_call_runs(
    pair: Pair,
) -> None:
    """While its agent runs, the call's forum renews the claim (same owner, a new lease);
    the waiting call goes on waiting, and the call still runs once."""
    async with pair.forums[0], pair.forums[1]:
        first, (waiting,) = await pair.one_runs_others_wait(1)
        with anyio.fail_after(PATIENCE):  # a bound, should renewals never come
            await pair.stores[0].renewed.wait()
        taken, renewed = pair.stores[0].held[:2]
        assert renewed.owner == taken.owner
        pair.go.set()
        assert await waiting.messages() == await first.messages()
    assert pair.runs == 1


@pytest.mark.anyio
async def test_a_waiting_call_left_by_its_consumers_goes_on_for_its_followers(
    pair: Pair,
) -> None:
    """The consumers of a call waiting for another forum's claim cancel it while an
    identical call follows it: they get AgentCancelled, the follower the answer."""
    async with pair.forums[0], pair.forums[1]:
        first, (impatient, patient) = await pair.one_runs_others_wait(2)
        await anyio.wait_all_tasks_blocked()
        impatient.cancel()
        with pytest.raises(AgentCancelled):
            await impatient.messages()
        pair.go.set()
        assert await patient.messages() == await first.messages()
    assert pair.runs == 1


@pytest.mark.anyio
async def test_a_cancelled_call_releases_its_claim_and_the_waiting_call_runs(
    pair: Pair,
) -> None:
    """A call cancelled while its agent runs releases its claim (its lease is a minute):
    the call of the other forum that waited runs the agent itself, and answers."""
    async with pair.forums[0], pair.forums[1]:
        cancelled, (waiting,) = await pair.one_runs_others_wait(1)
        cancelled.cancel()
        with pytest.raises(AgentCancelled):
            await cancelled.messages()
        pair.go.set()
        answer = await waiting.messages()
    assert [message.content for message in answer] == ["the answer to question"]
    assert pair.runs == 2
    assert pair.forums[1].statistics().agents_run == 1


@pytest.mark.anyio
async def test_a_forum_on_a_store_without_claims_runs_its_own_flights() -> None:
    """Two forums sharing a MemoryStore (which holds no claims) each run an identical call
    in flight at the same time: each agent answers only once both have started."""
    store = MemoryStore()
    runs = 0
    both_started = anyio.Event()

    async def expert(ctx: InteractionContext) -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            both_started.set()
        await both_started.wait()
        ctx.respond("hello")

    forums = [Forum(store), Forum(store)]
    agents = [forum.agent(expert) for forum in forums]
    with anyio.fail_after(PATIENCE):  # a bound: one forum waiting for the other would hang
        async with forums[0], forums[1]:
            calls = [agent.ask("question") for agent in agents]
            answers = [await call.messages() for call in calls]
    assert answers[0] == answers[1]
    assert runs == 2


@pytest.mark.parametrize(
    ("lease", "heartbeat", "match"),
    [(0, 1, "lease"), (60, -1, "heartbeat"), (60, float("nan"), "heartbeat"), (10, 10, "shorter")],
)
def test_lease_and_heartbeat_are_positive_and_the_heartbeat_shorter(
    lease: float, heartbeat: float, match: str
) -> None:
    """A lease or a heartbeat that is not a positive number of seconds, or a heartbeat that
    is not shorter than the lease (the claim would lapse between beats), is a ValueError."""
    with pytest.raises(ValueError, match=match):
        Forum(lease=lease, heartbeat=heartbeat)


def test_the_defaults_suit_calls_of_a_model() -> None:
    """A claim lasts a minute without a heartbeat; the holder renews it every 20 s."""
    forum = Forum()
    assert (forum.lease, forum.heartbeat) == (60.0, 20.0)


def drop_claims(db: str) -> None:
    """Make the database one written before claims existed: without the table."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as connection:
            connection.execute("DROP TABLE claims")
        return
    connection = sqlite3.connect(db)
    with connection:
        connection.execute("DROP TABLE claims")
    connection.close()


@pytest.mark.anyio
async def test_a_database_made_before_claims_opens_and_gets_the_table(db: str) -> None:
    """A database of the current schema without the claims table (made before claims
    existed) opens as before, and gets the table: its schema version does not change."""
    store: SQLiteStore | PostgresStore
    store = PostgresStore(db) if db.startswith("postgresql://") else SQLiteStore(db)
    await store.open()
    await store.aclose()
    drop_claims(db)
    try:
        await store.open()
        assert (await store.claim("c" * 64, "owner", 60)).owner == "owner"
        assert await store.verify() == []
    finally:
        await store.aclose()
    if not db.startswith("postgresql://"):
        connection = sqlite3.connect(db)
        assert connection.execute("PRAGMA user_version").fetchone() == (2,)
        connection.close()


class CountsWaits(PostgresStore):
    """A PostgreSQL store that tells the test once ``expected`` calls wait for claims."""

    def __init__(self, url: str, expected: int) -> None:
        super().__init__(url, max_connections=2)
        self.expect(expected)

    def expect(self, calls: int) -> None:
        """Set :attr:`all_waiting` once ``calls`` more calls wait."""
        self.expected = calls
        self.all_waiting = anyio.Event()

    async def wait_released(self, call_hash: str, *, poll: float) -> None:
        self.expected -= 1
        if self.expected == 0:
            self.all_waiting.set()
        await super().wait_released(call_hash, poll=poll)


class Crowd:
    """Two forums on one PostgreSQL database: the first runs ``calls`` distinct calls, whose
    agent answers once the test says ``go``; the second makes the same calls, which wait
    for the first's claims."""

    def __init__(self, url: str, calls: int, lease: float) -> None:
        self.calls = calls
        self.stores = [PostgresStore(url, max_connections=2), CountsWaits(url, calls)]
        self.forums = [Forum(store, lease=lease, heartbeat=lease / 3) for store in self.stores]
        self.runs = 0
        self.all_running = anyio.Event()
        self.go = anyio.Event()
        self.agents = [forum.agent(self.expert) for forum in self.forums]

    async def expert(self, ctx: InteractionContext) -> None:
        self.runs += 1
        if self.runs == self.calls:
            self.all_running.set()
        await self.go.wait()
        async for request in ctx.request_messages:
            ctx.respond(f"the answer to {(await request).content}")

    async def start(self, waiting: int) -> tuple[list[MessageSequence], list[MessageSequence]]:
        """Start every call of the first forum, then the first ``waiting`` of the second's
        once those run; return both once the second's wait."""
        running = [self.agents[0].ask(f"question {index}") for index in range(self.calls)]
        await self.all_running.wait()
        self.stores[1].expect(waiting)
        others = [self.agents[1].ask(f"question {index}") for index in range(waiting)]
        await self.stores[1].all_waiting.wait()
        return running, others

    async def aclose(self) -> None:
        for store in self.stores:
            await store.aclose()


@pytest.mark.anyio
async def test_calls_waiting_on_postgres_share_one_listening_connection(
    postgres_server: Any, postgres_url: str
) -> None:
    """30 distinct calls of a forum wait for the claims of another forum's calls, through a
    role the server lets hold 5 connections (each forum's pool 2, and 1 to listen on): they
    all wait and replay the other's answers. (A connection per waiting call, as before,
    was refused by the server: too many connections for the role.)"""
    role = f"agentforum_waiter_{os.getpid()}_{id(postgres_url)}"
    name = urllib.parse.urlsplit(postgres_url).path.lstrip("/")
    postgres_server.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 5 PASSWORD 'waiting'")
    try:
        postgres_server.execute(f'ALTER DATABASE "{name}" OWNER TO {role}')
        crowd = Crowd(postgres_server.database_url(name, user=role, password="waiting"), 30, 60)
        try:
            with anyio.fail_after(PATIENCE):
                async with crowd.forums[0], crowd.forums[1]:
                    running, waiting = await crowd.start(30)
                    crowd.go.set()
                    answered = [await call.messages() for call in running]
                    replayed = [await call.messages() for call in waiting]
        finally:
            await crowd.aclose()
        assert replayed == answered
        assert crowd.runs == 30
        assert crowd.forums[1].statistics().agents_run == 0
    finally:
        postgres_server.drop_database(postgres_url)
        postgres_server.execute(f"DROP ROLE {role}")


@pytest.mark.anyio
async def test_the_reading_of_releases_passes_on_when_the_reading_call_is_cancelled(
    postgres_url: str,
) -> None:
    """Of the calls waiting on PostgreSQL, one reads the releases for all: when it is
    cancelled, with 8 others, a call still waiting takes the reading over and wakes when
    its claim is released (its lease is 10 minutes: it would otherwise wait that long)."""
    crowd = Crowd(postgres_url, 10, 600)
    try:
        with anyio.fail_after(PATIENCE):
            async with crowd.forums[0], crowd.forums[1]:
                running, cancelled = await crowd.start(9)
                # The private state, only to order the test: until one of the 9 reads (the
                # 9 have entered wait_released; the first to go on makes the listener).
                listener = crowd.stores[1]._listener
                while getattr(listener.get(None), "_driver", None) is None:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                crowd.stores[1].expect(1)
                survivor = crowd.agents[1].ask("question 9")
                await crowd.stores[1].all_waiting.wait()
                for call in cancelled:
                    call.cancel()
                for call in cancelled:
                    with pytest.raises(AgentCancelled):
                        await call.messages()
                crowd.go.set()
                assert await survivor.messages() == await running[9].messages()
    finally:
        await crowd.aclose()
    assert crowd.runs == 10
