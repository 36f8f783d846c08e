"""The programs in examples/ run as a user runs them, on asyncio and on Trio."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.py"


@functools.cache
def run_example(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run an example with this interpreter, warnings as errors; return it and its wall time.

    Cached: each command line runs once per test session.
    """
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-W", "error", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    return process, time.perf_counter() - start


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_quickstart_streams_and_branches(backend: str) -> None:
    """quickstart.py streams the stories, then prints two branches that share their start."""
    process, seconds = run_example(str(QUICKSTART), "--backend", backend)
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""
    output = process.stdout
    assert "editor: Once upon a time there was a dragon who collected teacups." in output
    assert "first branch" in output
    assert "second branch" in output
    branches = [
        re.findall(r"^  ([0-9a-f]{10})  +(\w+): (.*)$", part, flags=re.MULTILINE)
        for part in output.split("\n\n")[1:]
    ]
    assert len(branches) == 2
    first, second = branches
    assert [sender for _, sender, _ in first] == ["user", "editor", "user", "editor"]
    assert [sender for _, sender, _ in second] == ["user", "editor", "user", "editor"]
    # The backtrack: same first two messages (same hashes), then the branches part.
    assert first[:2] == second[:2]
    assert first[2][0] != second[2][0]
    # It takes about a second; the margin is for a slow machine, not for a slow example.
    assert seconds < 10, f"the quickstart took {seconds:.1f} s"


def test_quickstart_hashes_do_not_depend_on_the_backend() -> None:
    """The quickstart prints the same hashes on asyncio and on Trio."""
    outputs = [
        run_example(str(QUICKSTART), "--backend", name)[0].stdout for name in ("asyncio", "trio")
    ]
    assert outputs[0] == outputs[1]
    assert re.search(r"\b[0-9a-f]{10}\b", outputs[0])


def test_quickstart_help() -> None:
    """``--help`` describes the example and its ``--backend`` option."""
    process, _ = run_example(str(QUICKSTART), "--help")
    assert process.returncode == 0
    assert "--backend" in process.stdout
