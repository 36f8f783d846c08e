"""The ``forum`` fixture of agentforum's pytest plugin, registered when the plugin is on."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import anyio
import pytest

from agentforum import Forum

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator

#: Whether the call phase of a test passed (set when its report is made, before teardown).
_CALL_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_PASSED] = report.passed
    return report


def _is_async_test(node: pytest.Item | pytest.Collector) -> bool:
    test = getattr(node, "obj", None)
    # A Hypothesis test wraps the coroutine function that anyio runs for each example; once
    # anyio has run it, that is anyio's sync wrapper, which keeps the original.
    inner = getattr(getattr(test, "hypothesis", None), "inner_test", test)
    inner = getattr(inner, "_anyio_original_func", inner)
    return inspect.iscoroutinefunction(inner)


@pytest.fixture
async def forum(anyio_backend: object, request: pytest.FixtureRequest) -> AsyncIterator[Forum]:
    """A running :class:`~agentforum.Forum` (a fresh ``MemoryStore``, ``strict_errors`` on).

    For ``async def`` tests marked ``@pytest.mark.anyio``: it runs on the ``anyio_backend``
    the test runs on (once per backend when that fixture is parametrized). Define the
    test's agents on it with ``@forum.agent`` and call them.

    The forum is torn down with the test. If the test passed, teardown leaves the forum's
    ``async with`` block as a program would: it waits for the calls still running, and an
    agent error that the test did not observe is raised there (an ``ExceptionGroup`` of
    :exc:`~agentforum.AgentError`, each with the agent's exception and traceback as its
    ``__cause__``), so pytest reports an error at teardown. If the test did not pass
    (it failed, was skipped, or failed as expected), teardown cancels the calls still
    running instead, so that a call that would never end (a hung agent) cannot hang the test
    run; the test's own outcome is what is reported.
    """
    if not _is_async_test(request.node):
        pytest.fail(
            "the `forum` fixture runs a Forum in the test's event loop: use it in an "
            "`async def` test marked `@pytest.mark.anyio`",
            pytrace=False,
        )
    with anyio.CancelScope() as scope:
        async with Forum() as running:
            yield running
            if not request.node.stash.get(_CALL_PASSED, False):
                scope.cancel()
