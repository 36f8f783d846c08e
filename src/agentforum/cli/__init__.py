"""The ``agentforum`` command line: ``agentforum demo``, ``chat``, ``log``, ``show``, ``tree``,
``refs``, ``merge-base``, ``diff``, ``fsck``, ``export``, ``import``, ``graph``, ``ui`` and
``mcp serve``, on an SQLite or PostgreSQL database (``docs/cli.md``).

An optional part: it needs click and rich (``pip install 'agentforum[cli]'``), and the core
never imports it.
"""

from __future__ import annotations

import sys

__all__ = ("main",)

_NEEDED = ("click", "rich")


def main() -> None:
    """Run the command line (the ``agentforum`` console script and ``python -m agentforum``).

    When click or rich is not installed, say how to install them and exit with status 1.
    """
    try:
        from ._app import cli
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in _NEEDED:
            raise
        print(
            f"agentforum: error: the command line needs {missing}: pip install 'agentforum[cli]'",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    cli()
