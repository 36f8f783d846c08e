"""agentforum's pytest plugin: a ``forum`` fixture, off until the ini option turns it on.

pytest loads this module at start-up through the ``pytest11`` entry point ``agentforum``,
as it loads anyio's plugin, in every project where agentforum is installed; so it defines
nothing but one ini option until a project asks for the fixture::

    # pyproject.toml
    [tool.pytest.ini_options]
    agentforum_fixtures = true

(or ``-o agentforum_fixtures=true`` on the command line). Then the ``forum`` fixture (a
running :class:`~agentforum.Forum` for ``@pytest.mark.anyio`` tests) is defined for every
test. ``-p no:agentforum`` keeps the plugin from loading at all; with plugin autoloading
off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), ``-p agentforum`` loads it.

Importing this module imports agentforum (whose sub-package it is), but not Hypothesis, and
not the fixture's module until the option turns it on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

#: The ini option that turns the fixtures on.
INI_OPTION = "agentforum_fixtures"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare the ini option ``agentforum_fixtures`` (default: false)."""
    parser.addini(
        INI_OPTION,
        type="bool",
        default=False,
        help="agentforum: define the `forum` fixture (a running Forum for anyio tests)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the fixtures when the ini option is on."""
    if config.getini(INI_OPTION):
        from . import _plugin

        config.pluginmanager.register(_plugin, "agentforum.testing.fixtures")
