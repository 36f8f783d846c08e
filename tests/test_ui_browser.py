"""The web view in a real browser: headless Chromium (Debian's), driven by Playwright.

One browser for the module. The page of the demo's database: expand a branch, open a
message, watch an answer stream in token by token while an agent produces it (each token
is sent only once the page shows the previous one), and check that a message holding
``<script>`` runs nothing. The test takes the screenshots of ``docs/ui.md``; they are
copied into ``docs/_static`` when ``AGENTFORUM_UI_SCREENSHOTS=1``.

Skipped, naming what is missing, without Playwright or Chromium (``/usr/bin/chromium``, or
``AGENTFORUM_CHROMIUM``); the nox ``tests`` session installs Debian's Chromium when it can.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import pytest

pytest.importorskip("starlette")
pytest.importorskip("hypercorn")

from agentforum import Forum, InteractionContext, Message, SQLiteStore, StreamedMessage
from agentforum.ui import serve

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow


CHROMIUM = os.environ.get("AGENTFORUM_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_STATIC = Path(__file__).parent.parent / "docs" / "_static"
SCRIPT = '<script>window.pwned = 1</script><img src="x" onerror="window.pwned = 2"> **hi**'
TOKENS = ["SQLite ", "is fine ", "for a wiki ", "of five people."]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path))
    assert path.stat().st_size > 0
    if os.environ.get("AGENTFORUM_UI_SCREENSHOTS") == "1":
        DOCS_STATIC.mkdir(exist_ok=True)
        shutil.copy(path, DOCS_STATIC / name)


def test_the_page_of_the_demo_in_a_browser(browser: Any, demo_db: Path, tmp_path: Path) -> None:
    expect = sync_api.expect
    db = tmp_path / "demo.db"
    shutil.copy(demo_db, db)
    with anyio.from_thread.start_blocking_portal() as portal:
        store = SQLiteStore(db, create=False)
        forum = Forum(store)
        root = portal.call(store.children, None)[0]
        mallory = Message(content=SCRIPT, sender="mallory", parent=root.hash)
        portal.call(store.put, mallory)
        portal.call(store.set_ref, "xss", mallory.hash)
        shown = [anyio.Event() for _ in TOKENS]

        @forum.agent
        async def advisor(ctx: InteractionContext) -> None:
            async with StreamedMessage() as message:
                ctx.respond(message)
                for token, seen in zip(TOKENS, shown, strict=True):
                    await message.send(token)
                    await seen.wait()

        with (
            portal.wrap_async_context_manager(forum),
            portal.wrap_async_context_manager(serve(forum)) as server,
        ):
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.goto(server.url)
            expect(page.locator("body")).to_have_attribute("data-ready", "true")
            expect(page.locator("#status")).to_have_text("live")

            # Expand the root's branch: its children are fetched then.
            tree = page.locator("#tree")
            tree.locator(".toggle").first.click()
            children = tree.locator(f'.row[data-hash="{root.hash}"] + ul > li')
            expected = portal.call(store.children, root.hash)
            expect(children).to_have_count(len(expected))
            # Open a message: its fields and its history.
            first = expected[0]
            children.first.locator(".row").click()
            detail = page.locator("#detail")
            expect(detail.locator(".copy")).to_have_text(first.hash)
            expect(detail.locator(".history li")).to_have_count(2)
            screenshot(page, tmp_path, "ui-tree.png")

            # A call in progress: each token shows before the next is produced.
            answer = portal.call(lambda: advisor.ask("Should we move to Postgres?"))
            live = page.locator("#live .answer")
            for count, seen in enumerate(shown, 1):
                expect(live).to_have_text("".join(TOKENS[:count]))
                if count == 2:
                    screenshot(page, tmp_path, "ui-live.png")
                portal.call(seen.set)
            assert portal.call(answer.last).content == "".join(TOKENS)
            expect(page.locator("#live .streaming.ended")).to_have_count(1)

            # The <script> message: shown as text, nothing runs.
            page.locator("#refs .row", has_text="xss").click()
            content = detail.locator(".content")
            expect(content).to_contain_text('<script>window.pwned = 1</script><img src="x"')
            expect(content.locator("script, img")).to_have_count(0)
            assert page.evaluate("window.pwned") is None
            preview = tree.locator(f'.row[data-hash="{mallory.hash}"] .preview')
            expect(preview).to_contain_text("<script>")
            assert page.evaluate("window.pwned") is None
            page.close()
        portal.call(store.aclose)
