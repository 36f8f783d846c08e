"""The Python code blocks of README.md and docs/*.md run, on asyncio and on Trio.

Convention for the Markdown files: a fenced block whose info string is exactly ``python``
is a complete program. It is run here on its own, in a fresh namespace with
``__name__ == "__main__"``, and must pass without help. Its ``anyio.run(main)`` runs on the
backend under test (asyncio in debug mode, then Trio), whatever backend it names.

A block that only illustrates (a fragment, pseudo-code, a signature) must use another info
string: ``py`` for Python that is shown highlighted but not run, ``console`` for shell
commands, ``text`` or none for output and data.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
BACKENDS: dict[str, dict[str, Any]] = {"asyncio": {"debug": True}, "trio": {}}

# An opening fence (``` or ~~~, three or more, up to three spaces in) and its info string.
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")


class Block(NamedTuple):
    """One fenced code block of a Markdown file."""

    path: Path
    index: int  # among the file's ``python`` blocks, from 0
    line: int  # of the opening fence, from 1
    source: str


def python_blocks(path: Path) -> Iterator[Block]:
    """Yield the blocks of ``path`` whose info string is exactly ``python``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    number = 0
    while number < len(lines):
        opening = _FENCE.match(lines[number])
        number += 1
        if opening is None:
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        start = number
        # The block ends at a closing fence of the same kind, at least as long, or at the end.
        while number < len(lines):
            closing = lines[number].strip()
            if closing.startswith(fence) and set(closing) == {fence[0]}:
                break
            number += 1
        body = [line[indent:] if line[:indent].isspace() else line for line in lines[start:number]]
        number += 1
        if opening["info"].strip() == "python":
            yield Block(path, index, start, "\n".join(body) + "\n")
            index += 1


def _cases() -> list[Any]:
    cases = []
    for path in DOCUMENTS:
        for block in python_blocks(path):
            name = f"{path.relative_to(ROOT).as_posix()}-{block.index}"
            # A block that starts no event loop is run once, not once per backend.
            backends = list(BACKENDS) if "anyio.run(" in block.source else [None]
            cases.extend(
                pytest.param(block, backend, id=f"{name}-{backend}" if backend else name)
                for backend in backends
            )
    return cases


@pytest.fixture
def run_on(monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None], list[str]]:
    """Make ``anyio.run`` run on the given backend, whatever backend its caller names.

    Returns the list of the backends that ``anyio.run`` was then called with.
    """
    original = anyio.run

    def select(chosen: str | None) -> list[str]:
        used: list[str] = []
        if chosen is None:
            return used

        def run(func: Callable[..., Any], *args: object, **_backend: object) -> Any:
            used.append(chosen)
            return original(func, *args, backend=chosen, backend_options=dict(BACKENDS[chosen]))

        monkeypatch.setattr(anyio, "run", run)
        return used

    return select


def test_readme_has_python_examples() -> None:
    """README.md is where this test looks for it, and it has a ``python`` block to run."""
    assert list(python_blocks(ROOT / "README.md"))


def test_only_exact_python_fences_are_programs(tmp_path: Path) -> None:
    """Blocks fenced ``python`` are collected; ``py``, ``console``, ``text`` and bare are not."""
    document = tmp_path / "doc.md"
    document.write_text(
        "```py\nfragment()\n```\n"
        "```python\nprint(1)\n```\n"
        "````python\nprint('```')\n```\n````\n"
        "```console\n$ python\n```\n"
        "```\nplain\n```\n"
        "  ```python\n  print(2)\n  ```\n",
        encoding="utf-8",
    )
    blocks = list(python_blocks(document))
    assert [block.source for block in blocks] == ["print(1)\n", "print('```')\n```\n", "print(2)\n"]
    assert [block.line for block in blocks] == [4, 7, 17]


@pytest.mark.parametrize(("block", "backend"), _cases())
def test_python_block_runs(
    block: Block,
    backend: str | None,
    run_on: Callable[[str | None], list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A ``python`` block of the docs runs on its own and prints what it says it prints."""
    used = run_on(backend)
    where = f"{block.path.relative_to(ROOT).as_posix()} (python block {block.index})"
    # Blank lines first, so that tracebacks give the line numbers of the Markdown file.
    code = compile("\n" * block.line + block.source, where, "exec", dont_inherit=True)
    exec(code, {"__name__": "__main__"})
    output = capsys.readouterr().out
    if backend is not None:
        assert used, f"{where}: anyio.run was not called"
    if "print(" in block.source:
        assert output.strip(), f"{where}, line {block.line}: printed nothing"
