"""A local, read-only web view of a store's tree: ``agentforum ui``, or :func:`serve`.

An optional part (``pip install 'agentforum[ui]'``: Starlette, Hypercorn, markdown-it-py);
``import agentforum`` never imports it. The view runs on asyncio and on Trio.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from typing import TYPE_CHECKING, Final

import anyio
import attrs
import sniffio
from hypercorn.config import Config

from agentforum import Forum, MessageStore

from ._app import create_app, make_app
from ._live import Live, TokenTracer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = (
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "SHUTDOWN_TIMEOUT",
    "PortInUseError",
    "UIServer",
    "create_app",
    "serve",
)

#: The address the view listens on unless told otherwise: this machine only.
DEFAULT_HOST: Final = "127.0.0.1"
#: The longest wait for the server to stop when the block ends (seconds).
SHUTDOWN_TIMEOUT: Final = 5.0
#: The port ``agentforum ui`` listens on unless told otherwise.
DEFAULT_PORT: Final = 8765


@attrs.frozen
class UIServer:
    """A running view, as :func:`serve` yields it.

    Attributes:
        host: The address it listens on.
        port: The port it listens on (the one the system chose, when asked for port 0).
    """

    host: str
    port: int

    @property
    def url(self) -> str:
        """The address of the page, ``http://HOST:PORT/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


class PortInUseError(OSError):
    """The port the view was to listen on is taken (or the address cannot be used)."""


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                exc.errno, f"port {port} of {host} is in use (pass --port N, or --port 0)"
            ) from None
        raise PortInUseError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


@contextlib.asynccontextmanager
async def serve(
    source: Forum | MessageStore, *, host: str = DEFAULT_HOST, port: int = 0
) -> AsyncIterator[UIServer]:
    """Serve the view of ``source`` for the duration of the block, on asyncio or Trio.

    The page is ready when the block starts (the port is listening); it stops when the
    block ends. The server's task lives in a task group of this block. The store is read,
    never written, and never closed here.

    Given a forum, the page also streams the tokens of its calls in progress, as they are
    produced (calls made while the block runs). For that the forum's calls are watched
    through the hook that :func:`agentforum.otel.instrument` uses: a forum traced with
    OpenTelemetry is served without live tokens (its messages still appear once stored).

    Args:
        source: A forum (its store is shown) or a store.
        host: The address to listen on; the default is this machine only.
        port: The port; 0 lets the system choose one (see :attr:`UIServer.port`).

    Raises:
        PortInUseError: the port is taken, or the address cannot be used.
    """
    store = source.store if isinstance(source, Forum) else source
    live = tracer = None
    if isinstance(source, Forum) and source._tracer is None:
        live = Live()
        tracer = TokenTracer(live)
    sock = _listen(host, port)
    bound = UIServer(host, sock.getsockname()[1])
    closing = anyio.Event()
    app = make_app(store, live, closing)
    config = Config()
    # Hypercorn serves (and closes) a copy of the listening socket; this block closes its own.
    config.bind = [f"fd://{os.dup(sock.fileno())}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = SHUTDOWN_TIMEOUT / 2
    stopped, done = anyio.Event(), anyio.Event()
    try:
        async with anyio.create_task_group() as group:
            library = sniffio.current_async_library()
            if library == "trio":
                from hypercorn.trio import serve as run
            else:
                from hypercorn.asyncio import serve as run  # type: ignore[assignment]

            async def server() -> None:
                try:
                    await run(app, config, shutdown_trigger=stopped.wait)
                finally:
                    done.set()

            group.start_soon(server)
            if tracer is not None:
                assert isinstance(source, Forum)
                source._set_tracer(tracer)
            try:
                yield bound
            finally:
                if tracer is not None and live is not None:
                    assert isinstance(source, Forum)
                    source._set_tracer(None)
                    live.close()
                closing.set()
                stopped.set()
                # Let Hypercorn stop by itself, even when the block ends in an error: a
                # cancellation in the middle of its shutdown leaves its tasks in a bad state.
                with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_TIMEOUT):
                    await done.wait()
    finally:
        sock.close()
