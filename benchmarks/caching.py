"""A cache hit against running an agent, cancelling many nested calls, and peak memory.

Run: ``python benchmarks/caching.py [--calls N] [--nested M] [--concurrent C] [--repeat R]
[--concurrent-repeat P]``.

Prints one table, with a column for asyncio and one for Trio, of medians of ``--repeat`` runs:

- µs per call of ``--calls`` sequential ``echo.ask(f"q{i}")`` then ``await .last()`` of a
  trivial echo agent: run every time (``Forum(cache=False)``); with the cache on, the first
  pass (a miss: the agent runs and its answer is recorded) and the second pass (a hit: answered
  from the store, the agent does not run, which is checked); the ratio hit/run; and the floor,
  µs per round trip of a ``str`` sent on a plain AnyIO memory object stream to a task that
  sends it back on another, with the ratios to it;
- the latency of ``seq.cancel()`` on a call with ``--nested`` nested calls in flight (each
  nested agent streams a token, then sleeps forever): from ``cancel()`` until the consumer
  iterating the sequence catches ``AgentCancelled``, with the cache on (the default) and off.
  Every nested agent's ``finally`` block must have run by then (checked). Also the time it
  took to start them all;
- ``--concurrent`` concurrent ``echo.ask(f"q{i}")`` on one forum (all started, then each
  ``.last()`` awaited), each run in a fresh process (``--rss-child``), median of
  ``--concurrent-repeat`` (3: a run takes seconds): wall time, calls/s, and the process's max
  RSS (``ru_maxrss``) before and after the workload, one process per run and backend so that
  no peak hides another; then, in this process, once per backend (tracing slows it, so in a
  run of its own), the tracemalloc peak of the workload.

Every timed run starts with ``gc.collect()``, so that no run pays for the garbage of the one
before; the cyclic collector stays on, as in a program.
"""

from __future__ import annotations

import argparse
import gc
import math
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc

import anyio
import anyio.lowlevel

from agentforum import Agent, AgentCancelled, Forum, InteractionContext, StreamedMessage

BACKENDS = ("asyncio", "trio")
MIB = 1024 * 1024


def echo_agent(forum: Forum) -> tuple[Agent, list[int]]:
    """A trivial echo agent of ``forum``, and a one-item list counting its runs."""
    runs = [0]

    @forum.agent
    async def echo(ctx: InteractionContext) -> None:
        runs[0] += 1
        async for request in ctx.request_messages:
            ctx.respond(f"re: {(await request).content}")

    return echo, runs


# -- 1. a cached answer against running the agent -----------------------------------------------


async def ask_pass(echo: Agent, calls: int) -> float:
    """Seconds of ``calls`` sequential asks of ``echo``, each awaited to its last message."""
    gc.collect()  # no garbage of what ran before is collected on this clock
    start = time.perf_counter()
    for index in range(calls):
        message = await echo.ask(f"q{index}").last()
        assert message.content == f"re: q{index}", message
    return time.perf_counter() - start


def sequential(backend: str, calls: int) -> tuple[float, float, float]:
    """Seconds per call: agent run every time (no cache), cache miss, cache hit."""

    async def run() -> tuple[float, float, float]:
        uncached = Forum(cache=False)
        echo, runs = echo_agent(uncached)
        async with uncached:
            ran = await ask_pass(echo, calls)
        assert runs[0] == calls, runs

        cached = Forum()
        echo, runs = echo_agent(cached)
        async with cached:
            missed = await ask_pass(echo, calls)
            assert runs[0] == calls, runs
            hit = await ask_pass(echo, calls)
            assert runs[0] == calls, f"the agent ran {runs[0] - calls} times on cache hits"
        return ran / calls, missed / calls, hit / calls

    return anyio.run(run, backend=backend)


def floor_round_trip(backend: str, calls: int) -> float:
    """Seconds per round trip of a str through a memory object stream pair and an echo task."""

    async def run() -> float:
        there_send, there_receive = anyio.create_memory_object_stream[str](math.inf)
        back_send, back_receive = anyio.create_memory_object_stream[str](math.inf)

        async def echo() -> None:
            async with there_receive, back_send:
                async for item in there_receive:
                    await back_send.send(item)

        async with anyio.create_task_group() as group:
            group.start_soon(echo)
            gc.collect()
            start = time.perf_counter()
            async with there_send, back_receive:
                for index in range(calls):
                    await there_send.send(f"q{index}")
                    reply = await back_receive.receive()
                    assert reply == f"q{index}"
            elapsed = time.perf_counter() - start
        return elapsed / calls

    return anyio.run(run, backend=backend)


# -- 2. cancelling a call with many nested calls in flight --------------------------------------


def cancellation(backend: str, nested: int, cache: bool) -> tuple[float, float]:
    """Seconds from ``cancel()`` to the consumer's ``AgentCancelled``; seconds to start them."""

    async def run() -> tuple[float, float]:
        forum = Forum(cache=cache)
        started = 0
        finished = 0
        all_started = anyio.Event()

        @forum.agent
        async def inner(ctx: InteractionContext) -> None:
            nonlocal started, finished
            message = StreamedMessage()
            ctx.respond(message)
            try:
                async with message:
                    await message.send("token")
                    started += 1
                    if started == nested:
                        all_started.set()
                    await anyio.sleep_forever()
            finally:
                finished += 1

        @forum.agent
        async def top(ctx: InteractionContext) -> None:
            for index in range(nested):
                ctx.respond(inner.ask(f"x{index}"))

        t0 = 0.0
        caught: list[tuple[float, int]] = []  # (seconds after t0, finally blocks run by then)

        gc.collect()
        async with forum:
            begin = time.perf_counter()
            sequence = top.ask("go")

            async def consume() -> None:
                try:
                    async for promise in sequence:
                        async for _token in promise:
                            pass
                except AgentCancelled:
                    caught.append((time.perf_counter() - t0, finished))

            async with anyio.create_task_group() as group:
                group.start_soon(consume)
                await all_started.wait()
                startup = time.perf_counter() - begin
                assert finished == 0, finished
                t0 = time.perf_counter()
                sequence.cancel()
        assert len(caught) == 1, "the consumer did not get AgentCancelled"
        latency, finished_then = caught[0]
        assert finished_then == nested, (
            f"only {finished_then} of {nested} finally blocks had run when the consumer "
            "saw AgentCancelled"
        )
        return latency, startup

    return anyio.run(run, backend=backend)


# -- 3. many concurrent calls: time and peak memory ---------------------------------------------


async def concurrent_workload(calls: int) -> float:
    """Seconds of ``calls`` concurrent asks of an echo agent on one new forum."""
    forum = Forum()
    echo, _ = echo_agent(forum)
    gc.collect()
    start = time.perf_counter()
    async with forum:
        sequences = [echo.ask(f"q{index}") for index in range(calls)]
        for index, sequence in enumerate(sequences):
            message = await sequence.last()
            assert message.content == f"re: q{index}", message
    return time.perf_counter() - start


def traced_peak(backend: str, calls: int) -> int:
    """Bytes: the tracemalloc peak during the workload, above what was traced before it."""

    async def run() -> int:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        await concurrent_workload(calls)
        _, peak = tracemalloc.get_traced_memory()
        return peak - before

    gc.collect()
    tracemalloc.start()
    try:
        return anyio.run(run, backend=backend)
    finally:
        tracemalloc.stop()


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


async def nothing() -> None:
    await anyio.lowlevel.checkpoint()


def rss_child(backend: str, calls: int) -> None:
    """In a fresh process: print the max RSS (KiB) before and after the workload, and its
    wall time (s)."""
    anyio.run(nothing, backend=backend)  # import the backend before the baseline
    before = max_rss_kib()
    seconds = anyio.run(concurrent_workload, calls, backend=backend)
    print(before, max_rss_kib(), seconds)


def fresh_process(backend: str, calls: int) -> tuple[int, int, float]:
    """The workload on ``backend`` in a fresh process: its max RSS (KiB) before and after the
    workload, and the workload's wall time (s).

    On Linux a process's ``ru_maxrss`` starts, after ``exec``, from the peak RSS of the
    process that spawned it: so these run before this process grows, and it is checked that
    this process's peak so far stays below the child's baseline.
    """
    spawner = max_rss_kib()
    output = subprocess.run(
        [sys.executable, __file__, "--rss-child", backend, "--concurrent", str(calls)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    before, after, seconds = output.split()
    assert spawner < int(before), (
        f"the spawning process's peak RSS ({spawner} KiB) hides the child's ({before} KiB)"
    )
    return int(before), int(after), float(seconds)


# -- the table ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="sequential asks per pass")
    parser.add_argument("--nested", type=int, default=1000, help="nested calls to cancel")
    parser.add_argument("--concurrent", type=int, default=10_000, help="concurrent asks")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    parser.add_argument(
        "--concurrent-repeat", type=int, default=3, help="fresh processes of --concurrent asks"
    )
    parser.add_argument("--rss-child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child is not None:
        rss_child(args.rss_child, args.concurrent)
        return

    # First, while this process is small (see fresh_process): the concurrent workload.
    fresh: dict[str, list[tuple[int, int, float]]] = {
        backend: [fresh_process(backend, args.concurrent) for _ in range(args.concurrent_repeat)]
        for backend in BACKENDS
    }

    rows: list[tuple[str, ...]] = [("", *BACKENDS)]
    columns: list[dict[str, str]] = []
    for backend in BACKENDS:
        figures: dict[str, str] = {}
        columns.append(figures)

        runs = [sequential(backend, args.calls) for _ in range(args.repeat)]
        ran, missed, hit = (statistics.median(run[index] for run in runs) for index in range(3))
        floor = statistics.median(floor_round_trip(backend, args.calls) for _ in range(args.repeat))
        figures["ran"] = f"{ran * 1e6:,.1f} µs"
        figures["missed"] = f"{missed * 1e6:,.1f} µs"
        figures["hit"] = f"{hit * 1e6:,.1f} µs"
        figures["hit/ran"] = f"{hit / ran:.2f}"
        figures["floor"] = f"{floor * 1e6:,.1f} µs"
        figures["ran/floor"] = f"{ran / floor:,.1f}x"
        figures["hit/floor"] = f"{hit / floor:,.1f}x"

        for cache in (True, False):
            results = [cancellation(backend, args.nested, cache) for _ in range(args.repeat)]
            latency = statistics.median(result[0] for result in results)
            startup = statistics.median(result[1] for result in results)
            figures[f"cancel {cache}"] = f"{latency * 1e3:,.1f} ms"
            figures[f"start {cache}"] = f"{startup * 1e3:,.1f} ms"

        rss_before = statistics.median(before for before, _, _ in fresh[backend])
        rss_after = statistics.median(after for _, after, _ in fresh[backend])
        wall = statistics.median(seconds for _, _, seconds in fresh[backend])
        peak = traced_peak(backend, args.concurrent)
        figures["wall"] = f"{wall:,.2f} s"
        figures["rate"] = f"{args.concurrent / wall:,.0f}/s"
        figures["traced"] = f"{peak / MIB:,.1f} MiB"
        figures["traced/call"] = f"{peak / args.concurrent / 1024:,.1f} KiB"
        figures["rss"] = f"{rss_after / 1024:,.1f} MiB"
        figures["rss before"] = f"{rss_before / 1024:,.1f} MiB"
        figures["rss/call"] = f"{(rss_after - rss_before) / args.concurrent:,.1f} KiB"

    sequential_title = f"{args.calls:,} sequential asks, per call"
    nested_title = f"cancel a call with {args.nested:,} nested calls in flight"
    concurrent_title = f"{args.concurrent:,} concurrent asks"
    labels = [
        ("ran", f"{sequential_title}: agent run (cache=False)"),
        ("missed", f"{sequential_title}: cache miss (1st pass, cache on)"),
        ("hit", f"{sequential_title}: cache hit (2nd pass)"),
        ("hit/ran", f"{sequential_title}: hit / run"),
        ("floor", "floor: memory object stream round trip"),
        ("ran/floor", "agent run / floor"),
        ("hit/floor", "cache hit / floor"),
        ("cancel True", f"{nested_title}, cache on: cancel() -> AgentCancelled"),
        ("start True", f"{nested_title}, cache on: time to start them"),
        ("cancel False", f"{nested_title}, cache off: cancel() -> AgentCancelled"),
        ("start False", f"{nested_title}, cache off: time to start them"),
        ("wall", f"{concurrent_title}: wall time"),
        ("rate", f"{concurrent_title}: calls/s"),
        ("traced", f"{concurrent_title}: tracemalloc peak (1 run)"),
        ("traced/call", f"{concurrent_title}: tracemalloc peak per call"),
        ("rss", f"{concurrent_title}: max RSS of a fresh process"),
        ("rss before", f"{concurrent_title}: max RSS before the workload"),
        ("rss/call", f"{concurrent_title}: max RSS growth per call"),
    ]
    rows.extend((label, *(figures[key] for figures in columns)) for key, label in labels)
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    print(
        f"median of {args.repeat} runs; {args.concurrent:,} concurrent asks: wall time and RSS "
        f"median of {args.concurrent_repeat} fresh processes, tracemalloc 1 run"
    )
    for row in rows:
        cells = [f"{row[0]:<{widths[0]}}"]
        cells.extend(f"{cell:>{width}}" for cell, width in zip(row[1:], widths[1:], strict=True))
        print("  ".join(cells))


if __name__ == "__main__":
    main()
