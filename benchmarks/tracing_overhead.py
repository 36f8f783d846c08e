"""What one agent call costs, counted rather than timed: with tracing off, and on.

``python benchmarks/tracing_overhead.py`` runs a forum that makes N calls of an agent that
responds with one text, then 2N, and prints the difference per call of the Python function
calls that cProfile counts (the set-up of the forum cancels out). With ``--callgrind`` it
runs itself under ``valgrind --tool=callgrind`` for N and 2N and prints the CPU
instructions per call instead (slow: a minute or two); with ``--opcodes``, the Python
bytecodes executed per call (``sys.settrace``), exact and the same from run to run.
``--traced`` instruments the forum with :func:`agentforum.otel.instrument` and the
OpenTelemetry SDK (a tracer provider with no span processor, so that the spans cost what
agentforum and the SDK make them cost, not an exporter). ``--cache`` makes the calls
through the cache (each one distinct: a miss).

Counts, unlike times, do not depend on what else the machine runs, so a change of a few
instructions per call shows; see ``docs/observability.md`` for the figures.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from agentforum import Forum, InteractionContext

if TYPE_CHECKING:
    from types import FrameType


def make_forum(*, traced: bool, cache: bool) -> Forum:
    forum = Forum(cache=cache)

    @forum.agent
    async def echo(ctx: InteractionContext, *, n: int) -> None:
        ctx.respond("ok")

    if traced:
        from opentelemetry.sdk.trace import TracerProvider

        from agentforum.otel import instrument

        instrument(forum, tracer_provider=TracerProvider())
    return forum


async def calls(forum: Forum, count: int) -> None:
    echo = forum._agents["echo"]
    async with forum:
        for n in range(count):
            await echo.ask(n=n).last()


def run(count: int, *, traced: bool, cache: bool) -> None:
    forum = make_forum(traced=traced, cache=cache)
    # Warm up outside the count: imports, first-call caches.
    anyio.run(calls, make_forum(traced=traced, cache=cache), 10)
    anyio.run(calls, forum, count)


def profiled(count: int, *, traced: bool, cache: bool) -> int:
    forum = make_forum(traced=traced, cache=cache)
    anyio.run(calls, make_forum(traced=traced, cache=cache), 10)
    profile = cProfile.Profile()
    profile.enable()
    anyio.run(calls, forum, count)
    profile.disable()
    return pstats.Stats(profile).total_calls  # type: ignore[attr-defined,no-any-return]


def opcodes(count: int, *, traced: bool, cache: bool) -> int:
    """The Python bytecodes executed while ``count`` calls run (``sys.settrace``)."""
    forum = make_forum(traced=traced, cache=cache)
    anyio.run(calls, make_forum(traced=traced, cache=cache), 10)
    executed = 0

    def local(frame: FrameType, event: str, arg: object) -> object:
        nonlocal executed
        if event == "opcode":
            executed += 1
        return local

    def start(frame: FrameType, event: str, arg: object) -> object:
        frame.f_trace_opcodes = True
        return local(frame, event, arg)

    sys.settrace(start)  # type: ignore[arg-type]
    try:
        anyio.run(calls, forum, count)
    finally:
        sys.settrace(None)
    return executed


def instructions(count: int, options: list[str]) -> int:
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                str(count),
                *options,
            ],
            check=True,
            capture_output=True,
        )
        summary = re.search(r"^summary:\s*(\d+)", out.read_text(), re.MULTILINE)
        assert summary is not None
        return int(summary.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="calls in the first run")
    parser.add_argument("--traced", action="store_true")
    parser.add_argument("--cache", action="store_true")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--opcodes", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run(args.child, traced=args.traced, cache=args.cache)
        return
    n = args.n
    what = f"{'traced' if args.traced else 'not traced'}, {'cache' if args.cache else 'no cache'}"
    if args.callgrind:
        options = [flag for flag, on in (("--traced", args.traced), ("--cache", args.cache)) if on]
        small, large = instructions(n, options), instructions(2 * n, options)
        print(f"{what}: {(large - small) / n:,.0f} instructions per call")
    elif args.opcodes:
        small = opcodes(n, traced=args.traced, cache=args.cache)
        large = opcodes(2 * n, traced=args.traced, cache=args.cache)
        print(f"{what}: {(large - small) / n:,.1f} Python bytecodes per call")
    else:
        small = profiled(n, traced=args.traced, cache=args.cache)
        large = profiled(2 * n, traced=args.traced, cache=args.cache)
        print(f"{what}: {(large - small) / n:.1f} Python function calls per call")


if __name__ == "__main__":
    main()
