"""The web view's ASGI application (Starlette): the page, its JSON reads and its live feed.

Every route is a ``GET``: the view never writes to the store. Content reaches the page
either as text (which the page puts in with ``textContent``) or as HTML rendered here from
Markdown with raw HTML disabled (markdown-it-py escapes every ``<`` of the content, and
refuses ``javascript:`` links), so a message holding ``<script>`` runs nothing.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import anyio
from markdown_it import MarkdownIt
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agentforum import (
    AgentForumError,
    CallMessage,
    ErrorMessage,
    ForwardedMessage,
    Message,
    MessageNotFoundError,
)
from agentforum._branches import after, merge_base
from agentforum._messages import kind_name as kind
from agentforum._stores._refs import lookup

from . import _feed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

    from agentforum import MessageStore

    from ._live import Live

#: How often the live feed looks for new messages and moved refs (seconds).
POLL_INTERVAL: Final = 0.5
#: The longest preview of a message's content in the tree.
PREVIEW: Final = 80
#: The content security policy of every response: scripts and styles of this site only.
POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False})


def _thaw(value: object) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    assert hasattr(value, "items")
    return {key: _thaw(item) for key, item in value.items()}


def summary(message: Message, refs: dict[str, list[str]]) -> dict[str, Any]:
    """What the tree shows of a message: one line's worth."""
    if isinstance(message, CallMessage):
        preview = f"→ {message.receiver}"
    else:
        line, _, rest = message.content.partition("\n")
        preview = line[:PREVIEW] + ("…" if len(line) > PREVIEW or rest else "")
    return {
        "hash": message.hash,
        "kind": kind(message),
        "sender": message.sender,
        "preview": preview,
        "parent": message.parent,
        "refs": refs.get(message.hash, []),
        "cancelled": isinstance(message, ErrorMessage) and "Cancel" in message.error_type,
    }


def detail(message: Message, refs: dict[str, list[str]]) -> dict[str, Any]:
    """Everything the page shows of a message, its content also as safe HTML."""
    shown = summary(message, refs)
    shown.update(
        content=message.content,
        html=_markdown.render(message.content),
        metadata=_thaw(message.metadata),
        reply_to=message.reply_to,
    )
    if isinstance(message, CallMessage):
        shown.update(receiver=message.receiver, kwargs=_thaw(message.kwargs))
    if isinstance(message, ErrorMessage):
        shown.update(error_type=message.error_type)
    if isinstance(message, ForwardedMessage):
        shown.update(original=message.original)
    return shown


async def _refs_by_hash(store: MessageStore) -> dict[str, list[str]]:
    by_hash: dict[str, list[str]] = {}
    for name, key in sorted((await store.refs()).items()):
        by_hash.setdefault(key, []).append(name)
    return by_hash


def _error(status: int, text: str) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status)


class _Routes:
    """The handlers, bound to one store (and, serving a running forum, its live tokens)."""

    def __init__(self, store: MessageStore, live: Live | None, closing: anyio.Event) -> None:
        self.store = store
        self.live = live
        self.closing = closing

    async def page(self, request: Request) -> Response:
        text = resources.files(__package__).joinpath("static/index.html").read_text("utf-8")
        return Response(text, media_type="text/html; charset=utf-8")

    async def refs(self, request: Request) -> Response:
        refs = await self.store.refs()
        found = []
        for name, key in sorted(refs.items()):
            try:
                message = await self.store.get(key)
            except MessageNotFoundError:
                continue
            found.append({"name": name, "message": summary(message, {})})
        return JSONResponse(found)

    async def children(self, request: Request) -> Response:
        parent = request.query_params.get("of") or None
        refs = await _refs_by_hash(self.store)
        found = await self.store.children(parent)
        return JSONResponse([summary(message, refs) for message in found])

    async def message(self, request: Request) -> Response:
        try:
            message = await lookup(self.store, request.path_params["name"])
        except (AgentForumError, ValueError) as exc:
            return _error(404, str(exc))
        return JSONResponse(detail(message, await _refs_by_hash(self.store)))

    async def history(self, request: Request) -> Response:
        try:
            message = await lookup(self.store, request.path_params["name"])
        except (AgentForumError, ValueError) as exc:
            return _error(404, str(exc))
        refs = await _refs_by_hash(self.store)
        branch = await self.store.ancestors(message.hash)
        return JSONResponse([summary(found, refs) for found in branch])

    async def diff(self, request: Request) -> Response:
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        try:
            left, right = (await lookup(self.store, a)).hash, (await lookup(self.store, b)).hash
            base = await merge_base(self.store, left, right)
            refs = await _refs_by_hash(self.store)
            return JSONResponse(
                {
                    "base": None if base is None else summary(await self.store.get(base), refs),
                    "a": [summary(found, refs) for found in await after(self.store, base, left)],
                    "b": [summary(found, refs) for found in await after(self.store, base, right)],
                }
            )
        except (AgentForumError, ValueError) as exc:
            return _error(404, str(exc))

    async def events(self, request: Request) -> Response:
        return StreamingResponse(
            self._feed(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    async def _feed(self) -> AsyncIterator[str]:
        """Server-sent events: ``stored`` (a new message), ``refs`` (the refs moved),
        ``token`` (a token of a call in progress, or its end, when serving a running forum)."""
        position = await _feed.start(self.store)
        refs = dict(await self.store.refs())
        tokens = self.live.subscribe() if self.live is not None else None
        yield "retry: 1000\n\n"  # the feed is ready: it reports what happens from now on
        next_poll = anyio.current_time()
        try:
            while not self.closing.is_set():
                if anyio.current_time() >= next_poll:
                    next_poll = anyio.current_time() + POLL_INTERVAL
                    added, position = await _feed.since(self.store, position)
                    if added:
                        names = await _refs_by_hash(self.store)
                        for message in added:
                            yield _event("stored", summary(message, names))
                    now = dict(await self.store.refs())
                    if now != refs:
                        refs = now
                        yield _event("refs", sorted(refs.items()))
                # Tokens go out as they come; the store is read again on the interval. (No
                # yield inside the cancel scope: it would span the consumer's code.)
                with anyio.move_on_after(max(next_poll - anyio.current_time(), 0)):
                    await (self.closing.wait() if tokens is None else tokens.wait())
                if tokens is not None:
                    for token in tokens.drain():
                        yield _event("token", token)
        finally:
            if tokens is not None and self.live is not None:
                self.live.unsubscribe(tokens)


def _event(name: str, data: object) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _security_headers(scope: Any, receive: Any, send: Any, app: Any) -> None:
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers.append((b"content-security-policy", POLICY.encode()))
            headers.append((b"x-content-type-options", b"nosniff"))
            headers.append((b"referrer-policy", b"no-referrer"))
            message = {**message, "headers": headers}
        await send(message)

    await app(scope, receive, sending)


def create_app(store: MessageStore) -> Any:
    """Return the ASGI application of the read-only view of ``store`` (every route a GET),
    for any ASGI server or test client; :func:`serve` runs it on Hypercorn.

    Args:
        store: The store to show (open; the application never closes it).
    """
    return make_app(store, None, anyio.Event())


def make_app(store: MessageStore, live: Live | None, closing: anyio.Event) -> Any:
    """The application of :func:`create_app`, streaming the tokens that ``live`` publishes
    (serving a running forum), its live feeds ending when ``closing`` is set."""
    routes = _Routes(store, live, closing)
    static = StaticFiles(directory=str(resources.files(__package__).joinpath("static")))
    app = Starlette(
        routes=[
            Route("/", routes.page),
            Route("/api/refs", routes.refs),
            Route("/api/children", routes.children),
            Route("/api/messages/{name}", routes.message),
            Route("/api/history/{name}", routes.history),
            Route("/api/diff", routes.diff),
            Route("/api/events", routes.events),
            Mount("/static", static),
        ]
    )

    async def application(scope: Any, receive: Any, send: Any) -> None:
        await _security_headers(scope, receive, send, app)

    return application
