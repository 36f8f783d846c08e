"""The pytest plugin: off until asked for; then a running ``forum`` on asyncio and on Trio.

Each test writes a small project (an ini file, a conftest with an ``anyio_backend`` fixture
over asyncio and Trio, a test module) and runs pytest on it with ``pytester``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = """
import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
"""

HEADER = """
import asyncio

import pytest

from agentforum import Forum, InteractionContext
from agentforum.testing import ScriptedModel

pytestmark = pytest.mark.anyio


class ToolBroke(Exception):
    pass


def break_the_tool():
    raise ToolBroke("the tool broke")


def running_backend():
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "trio"
    return "asyncio"
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project that turns the plugin's fixtures on, with tests on asyncio and Trio."""
    pytester.makeini("[pytest]\nagentforum_fixtures = true\n")
    pytester.makeconftest(CONFTEST)
    return pytester


def run(pytester: pytest.Pytester, tests: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=HEADER + tests)
    return pytester.runpytest("-p", "no:cacheprovider", "--strict-config")


def test_forum_fixture_is_a_running_forum_on_each_backend(project: pytest.Pytester) -> None:
    """The fixture is a running Forum, on the backend of each anyio_backend parameter."""
    result = run(
        project,
        """
async def test_forum(forum, anyio_backend):
    assert isinstance(forum, Forum)
    assert forum.is_running
    assert running_backend() == anyio_backend
    model = forum.agent(ScriptedModel("Hi there"))
    assert (await model.ask("Hello").last()).content == "Hi there"


@pytest.fixture
async def model(forum):
    return forum.agent(ScriptedModel(lambda history: history[-1].content.upper()))


async def test_async_fixture_uses_forum(model, forum):
    assert model.forum is forum
    assert (await model.ask("loud").last()).content == "LOUD"
""",
    )
    result.assert_outcomes(passed=4)


def test_forum_fixture_is_fresh_for_each_test(project: pytest.Pytester) -> None:
    """Each test gets its own forum, and it is torn down (not running) after the test."""
    result = run(
        project,
        """
FORUMS = []


async def test_first(forum):
    FORUMS.append(forum)


async def test_second(forum):
    assert forum not in FORUMS
    assert FORUMS
    assert not any(other.is_running for other in FORUMS)
    FORUMS.append(forum)
""",
    )
    result.assert_outcomes(passed=4)


def test_agent_failure_fails_the_test_with_the_agent_traceback(project: pytest.Pytester) -> None:
    """An agent error the test reaches fails it, showing the agent's own traceback."""
    result = run(
        project,
        """
async def test_observed(forum):
    @forum.agent
    async def tool(ctx: InteractionContext) -> None:
        break_the_tool()

    await tool.ask("x").messages()
""",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*break_the_tool()",
            '*raise ToolBroke("the tool broke")',
            "*The above exception was the direct cause of the following exception:*",
            "*AgentError: agent 'tool' failed: test_inner.ToolBroke: the tool broke",
        ]
    )


def test_unobserved_agent_failure_errors_at_teardown(project: pytest.Pytester) -> None:
    """An agent error nobody observed is raised at teardown, with the agent's traceback."""
    result = run(
        project,
        """
async def test_unobserved(forum):
    @forum.agent
    async def tool(ctx: InteractionContext) -> None:
        break_the_tool()

    tool.tell("x")
""",
    )
    result.assert_outcomes(passed=2, errors=2)
    output = result.stdout.str()
    for backend in ("asyncio", "trio"):
        assert f"ERROR at teardown of test_unobserved[{backend}]" in output
    assert output.count('raise ToolBroke("the tool broke")') == 2
    assert output.count("1 agent error(s) that no consumer observed") == 2


def test_failed_test_cancels_the_calls_still_running(project: pytest.Pytester) -> None:
    """After a test that did not pass, teardown cancels a hung call instead of waiting for it."""
    project.makepyfile(
        test_inner=HEADER
        + """
async def test_hung(forum):
    model = forum.agent(ScriptedModel("never said", hang_at=0))
    model.tell("hello?")
    assert False, "the test fails while the model hangs"


async def test_skipped(forum):
    model = forum.agent(ScriptedModel("never said", hang_at=(0, 0)))
    model.tell("hello?")
    pytest.skip("skipped while the model hangs")
"""
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(failed=2, skipped=2)
    assert result.stdout.str().count("the test fails while the model hangs") >= 2


def test_fixture_is_off_until_asked_for(pytester: pytest.Pytester) -> None:
    """Without ``agentforum_fixtures = true``, the plugin defines no fixture."""
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nagentforum_fixtures = false\n")
    result = run(pytester, "\nasync def test_forum(forum):\n    pass\n")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*fixture 'forum' not found*"])


def test_fixture_refuses_a_sync_test(project: pytest.Pytester) -> None:
    """A plain ``def`` test cannot use the forum: setup fails and says what to do."""
    result = run(project, "\ndef test_sync(forum):\n    pass\n")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*use it in an `async def` test marked `@pytest.mark.anyio`*"])


def test_fixture_serves_hypothesis_tests(project: pytest.Pytester) -> None:
    """An async Hypothesis test (run by anyio per example) may use the forum."""
    result = run(
        project,
        """
import itertools

from hypothesis import HealthCheck, given, settings
from agentforum.testing import contents

NAMES = itertools.count()


@settings(max_examples=5, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=contents(max_size=5))
async def test_echo(forum, text):
    name = f"model{next(NAMES)}"
    model = forum.agent(ScriptedModel(lambda history: history[-1].content), alias=name)
    assert (await model.ask(text).last()).content == text
""",
    )
    result.assert_outcomes(passed=2)


def _pytest_example() -> str:
    """The example test module of docs/testing.md (its ``python`` block with a ``forum`` test)."""
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    [block] = [block for block in blocks if "(forum: Forum)" in block]
    return str(block)


def test_docs_example_runs_under_pytest(pytester: pytest.Pytester) -> None:
    """The pytest example of docs/testing.md passes with the configuration it shows."""
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    assert "agentforum_fixtures = true" in text
    pytester.makeini("[pytest]\nagentforum_fixtures = true\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_example=_pytest_example())
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=4)
    assert "[trio]" in result.stdout.str()


def test_plugin_is_registered_under_the_pytest11_entry_point() -> None:
    """The ``agentforum`` pytest11 entry point names the plugin module."""
    from importlib.metadata import entry_points

    [point] = [point for point in entry_points(group="pytest11") if point.name == "agentforum"]
    assert point.value == "agentforum.testing.pytest_plugin"
