"""Reaching a PostgreSQL server: the URL, connections, a pool of them, errors in words.

Nothing here ever shows a password: the URL is shown without it (:func:`redact`), and every
text that comes from psycopg or the server is scrubbed of it before it is shown
(:meth:`Target.scrub`), however the URL spelled it.

psycopg is imported on first use, never when agentforum is imported: the core does not need
it, and a missing one is reported as what to install.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from typing import TYPE_CHECKING, Final

import attrs

from .._exceptions import StoreError
from ._sqlite_checks import printable

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    import psycopg

    Connection: TypeAlias = psycopg.Connection[tuple[object, ...]]

#: The URL schemes of a PostgreSQL database.
SCHEMES: Final = ("postgresql", "postgres")
#: Seconds a connection attempt may take when the URL does not say (``connect_timeout``).
CONNECT_TIMEOUT: Final = 10
#: TCP keepalives when the URL does not set them: a server that vanished without closing
#: the connection (a host that went down, a network cut) is noticed within about a minute
#: instead of the operating system's two hours.
KEEPALIVES: Final = {"keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3"}
#: What the server is told this connection is (``pg_stat_activity.application_name``).
APPLICATION_NAME: Final = "agentforum"


def is_url(text: str) -> bool:
    """Whether ``text`` is a PostgreSQL URL (``postgresql://`` or ``postgres://``)."""
    return text.split("://", 1)[0].lower() in SCHEMES and "://" in text


def redact(url: str) -> str:
    """``url`` without its password (in the user part or as a ``password`` parameter)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    query = urllib.parse.urlencode(
        [
            (key, value)
            for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if key != "password"
        ],
        safe="/",
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _password(url: str) -> str | None:
    """The password ``url`` holds, if any (both spellings)."""
    parts = urllib.parse.urlsplit(url)
    found = [
        value
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if key == "password"
    ]
    if parts.password:
        found.append(urllib.parse.unquote(parts.password))
    return found[-1] if found else None


def require_psycopg() -> None:
    """Import psycopg, or say what to install.

    Raises:
        StoreError: psycopg 3 is not installed.
    """
    try:
        import psycopg  # noqa: F401 (optional: imported when first needed)
    except ImportError as exc:
        raise StoreError(
            "the PostgreSQL store needs psycopg 3: pip install 'agentforum[postgres]'"
        ) from exc


@attrs.frozen
class Target:
    """A database named by a URL: where it is, in words, and how to connect to it."""

    url: str
    #: The URL as it may be shown: without the password.
    display: str

    @classmethod
    def of(cls, url: str) -> Target:
        """The database ``url`` names.

        Raises:
            ValueError: ``url`` is not a ``postgresql://`` or ``postgres://`` URL.
        """
        if not isinstance(url, str) or not is_url(url):
            raise ValueError(
                f"a PostgreSQL database is named by a postgresql:// (or postgres://) URL, "
                f"not {redact(url) if isinstance(url, str) else url!r}"
            )
        return cls(url, redact(url))

    def scrub(self, text: str) -> str:
        """``text`` (from psycopg or the server) with the password removed, made printable."""
        password = _password(self.url)
        if password:
            text = text.replace(password, "***")
            quoted = urllib.parse.quote(password, safe="")
            if quoted != password:
                text = text.replace(quoted, "***")
        return printable(text.strip())

    def parameters(self) -> dict[str, str]:
        """The connection parameters: the URL's, with agentforum's defaults for the rest.

        Raises:
            StoreError: psycopg is missing, or it cannot read the URL.
        """
        require_psycopg()
        from psycopg.conninfo import conninfo_to_dict

        try:
            given = conninfo_to_dict(self.url)
        except Exception as exc:  # psycopg.ProgrammingError: a parameter it does not know
            raise StoreError(
                f"{self.display} is not a URL that PostgreSQL reads: {self.scrub(str(exc))}"
            ) from None
        defaults = {
            "connect_timeout": str(CONNECT_TIMEOUT),
            "application_name": APPLICATION_NAME,
            **KEEPALIVES,
        }
        return {**defaults, **{key: str(value) for key, value in given.items()}}

    def where(self, parameters: dict[str, str]) -> str:
        """The server and database, in words: host (or socket directory), port, database."""
        host = parameters.get("host") or os.environ.get("PGHOST") or "localhost"
        port = parameters.get("port") or os.environ.get("PGPORT") or "5432"
        user = parameters.get("user") or os.environ.get("PGUSER")
        database = parameters.get("dbname") or os.environ.get("PGDATABASE") or user
        server = f"the socket in {host}" if host.startswith("/") else host
        return self.scrub(f"PostgreSQL at {server}, port {port}, database {database!r}")

    def connect(self) -> Connection:
        """A new connection in autocommit mode (each statement is its own transaction).

        Blocks (call it in a worker thread) for at most the connect timeout.

        Raises:
            StoreError: the server cannot be reached, refuses the user or the password, or
                has no such database; the error names host, port and database, never the
                password.
        """
        parameters = self.parameters()
        import psycopg

        try:
            return psycopg.connect(autocommit=True, **parameters)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to {self.where(parameters)}: {self._reason(exc, parameters)}"
            ) from None

    def _reason(self, exc: Exception, parameters: dict[str, str]) -> str:
        text = str(exc)
        user = parameters.get("user") or os.environ.get("PGUSER") or "the default user"
        if "password authentication failed" in text:
            return self.scrub(f"wrong password for user {user!r} (the server refused it)")
        if "no password supplied" in text:
            return self.scrub(
                f"the server wants a password for user {user!r}, and none was given (put it "
                "in the URL, in PGPASSWORD or in ~/.pgpass)"
            )
        # libpq's text: "connection failed: connection to server at ... failed: REASON".
        reason = text.rpartition(" failed: ")[2] if " failed: " in text else text
        if "timeout expired" in reason:
            reason = (
                f"no answer within the connect timeout ({parameters['connect_timeout']} s; "
                "the URL's connect_timeout sets it)"
            )
        # libpq's hint comes on a line of its own: "...; is the server running ...?"
        parts = [part.strip() for part in reason.replace("FATAL:", "").splitlines()]
        parts = [part[:1].lower() + part[1:] if index else part for index, part in enumerate(parts)]
        return self.scrub("; ".join(part for part in parts if part))


class Pool:
    """Connections to one database, made when needed, reused, closed with their store.

    Every method blocks: call them in worker threads. A connection is used by one thread at
    a time; there are never more than the threads that use the pool at once (the store
    runs its operations through a capacity limiter of its size). No thread of its own: a
    connection is made, checked and closed by the thread that needs it.
    """

    __slots__ = ("_checked", "_connect", "_generation", "_idle", "_lock", "_prepare", "_ready")

    def __init__(
        self,
        connect: Callable[[], Connection],
        prepare: Callable[[Connection], None],
    ) -> None:
        self._connect = connect
        self._prepare = prepare
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        # Serializes the check of the database, done once per opening by the first thread.
        self._ready = threading.Lock()
        # Bumped by close(): a connection taken before is closed when it is given back.
        self._generation = 0
        # Whether the database was checked (and its schema created) since the pool opened.
        self._checked = False

    def take(self) -> tuple[Connection, int]:
        """An idle connection, or a new one (on the first, the database is checked first).

        Raises:
            StoreError: no connection can be made, or the database is not agentforum's.
        """
        with self._lock:
            if self._idle:
                return self._idle.pop(), self._generation
            generation = self._generation
        connection = self._connect()
        try:
            if not self._checked:
                with self._ready:
                    if not self._checked:
                        self._prepare(connection)
                        self._checked = True
        except BaseException:
            connection.close()
            raise
        return connection, generation

    def give_back(self, connection: Connection, generation: int) -> None:
        """Keep ``connection`` for the next operation, or close it if it is of no more use."""
        from psycopg.pq import TransactionStatus

        if not connection.closed and connection.info.transaction_status == TransactionStatus.IDLE:
            with self._lock:
                if generation == self._generation:
                    self._idle.append(connection)
                    return
        connection.close()

    def discard(self, connection: Connection) -> None:
        """Close ``connection``, broken, and every idle one: they likely broke with it (the
        server restarted, say), and the next operation should not find out one by one."""
        connection.close()
        with self._lock:
            idle, self._idle = self._idle, []
        for each in idle:
            each.close()

    def close(self) -> None:
        """Close every idle connection, and those in use when they are given back.

        The pool can be used again: it then checks the database again, as at first.
        """
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
            self._checked = False
        for each in idle:
            each.close()
