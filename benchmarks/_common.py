"""What every benchmark child process shares: the command line, the clock and the memory probes.

Standard library only: the peer runners import this module too, from their own virtual
environments, where agentforum (this one) is not installed.

A child runs one *case* (a workload, with its parameters, on one backend) ``--repeat`` times in
one process and prints one JSON object on its last line of standard output::

    {"times": [seconds, ...], "gc_times": [seconds, ...], "units": work done per run,
     "peak_rss_kib": ..., "base_rss_kib": ..., "extra": {...}}

``gc_times`` is the part of each time spent in the cyclic garbage collector (``None`` for a
case that does not time itself with :class:`Clock`). ``units`` is what the throughput counts
(tokens delivered, calls, messages); the harness divides it by the median of ``times``.
Peak RSS is the ``VmHWM`` of ``/proc/self/status``:
the high-water mark of this process's own address space, which ``exec`` starts afresh (unlike
``ru_maxrss``, which a child inherits from the process that forked it). ``base_rss_kib`` is
the RSS (``VmRSS``) after the imports, before the first run. The kernel's RSS counters are
approximate (per-CPU counts, summed lazily), so a ``VmHWM`` read after the runs can come out
a page or two below a ``VmRSS`` read before them: the reported peak is the higher of the two
readings, never below the base.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import re
import resource
import sys
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

#: What one timed run of a case returns: seconds, units of work done, extra figures.
Run = tuple[float, int, dict[str, Any]]


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_kib() -> int:
    """The peak resident set size of this process's address space, in KiB."""
    peak = _status_kib("VmHWM")
    if peak is None:  # not Linux: ru_maxrss (KiB on Linux and BSD, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            peak //= 1024
    return peak


def rss_kib() -> int:
    """The resident set size of this process now, in KiB (the peak where it is unknown)."""
    current = _status_kib("VmRSS")
    return peak_rss_kib() if current is None else current


class Clock:
    """Times one run: ``with clock: ...``; ``gc.collect()`` first, so no run pays for another's
    garbage (the cyclic collector stays on during the run, as in a program).

    It also times the cyclic garbage collector during the run (``gc.callbacks``): how many
    collections ran and how long they took (``gc_seconds``, part of ``seconds``). The last
    run's clock is :attr:`last`, which :func:`run_case` reports beside the times.
    """

    __slots__ = ("_collecting", "_start", "collections", "gc_seconds", "seconds")

    #: The clock of the last run that ended, in this process.
    last: Clock | None = None

    def __init__(self) -> None:
        self.seconds = 0.0
        self.gc_seconds = 0.0
        self.collections = 0
        self._start = 0.0
        self._collecting: float | None = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._collecting = time.perf_counter()
        elif self._collecting is not None:
            self.gc_seconds += time.perf_counter() - self._collecting
            self.collections += 1
            self._collecting = None

    def __enter__(self) -> Clock:
        gc.collect()
        # The clock starts before the collector is timed and stops after, so that every
        # collection counted lies within the run: ``gc_seconds`` never exceeds ``seconds``.
        self._start = time.perf_counter()
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._on_gc)
        self.seconds = time.perf_counter() - self._start
        Clock.last = self


def held_memory(run: Callable[[], object], holder: list[Any], n: int) -> Run:
    """Bytes per message that ``run`` leaves held in ``holder``, for ``n`` messages.

    ``run`` builds the messages and appends what holds them to ``holder``. It runs twice: once
    timed, for the growth of the RSS, and once under tracemalloc (what Python allocated and
    still holds), apart, since tracing's own records would swell the RSS.
    """
    rss_before = rss_kib()
    with Clock() as clock:
        run()
    rss_after = rss_kib()
    holder.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        run()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    holder.clear()
    return (
        clock.seconds,
        n,
        {
            "bytes_per_message": (after - before) / n,
            "rss_bytes_per_message": (rss_after - rss_before) * 1024 / n,
        },
    )


def profile(
    case: Callable[[str, dict[str, Any]], Run], backend: str, params: dict[str, Any], top: int
) -> None:
    """Run ``case`` once under cProfile; print its ``top`` functions by cumulative time and by
    own time, with the paths shortened to the package. A first, unprofiled run imports what the
    case needs (the backend's modules), so that the profile shows the workload."""
    case(backend, params)
    profiler = cProfile.Profile()
    profiler.enable()
    case(backend, params)
    profiler.disable()
    # By cumulative time, the package's own functions (the event loop's frames would fill the
    # list otherwise); by own time, every function.
    for order, restriction in (("cumulative", _PACKAGE), ("tottime", "")):
        output = io.StringIO()
        stats = pstats.Stats(profiler, stream=output)
        stats.sort_stats(order).print_stats(restriction, top)
        lines = output.getvalue().splitlines()
        start = next(index for index, line in enumerate(lines) if "ncalls" in line)
        print(f"-- top {top} by {order} time{' (package functions)' if restriction else ''} --")
        for line in lines[start:]:
            if line.strip():
                print(re.sub(r"\S*/(site-packages|src|lib/python3\.\d+)/", "", line))


#: The regular expression of the package's files in profiles (ours and the peers').
_PACKAGE = r"agentforum/|miniagents/"


#: A runner's exit status for a case it cannot express; its standard error says why.
NOT_APPLICABLE = 3


def not_applicable(reason: str) -> None:
    """Exit with :data:`NOT_APPLICABLE`, giving ``reason`` (the harness shows "n/a")."""
    print(reason, file=sys.stderr)
    sys.exit(NOT_APPLICABLE)


def run_case(
    case: Callable[[str, dict[str, Any]], Run], backend: str, params: dict[str, Any], repeat: int
) -> dict[str, Any]:
    """Run ``case`` ``repeat`` times; its result, as the JSON object described above."""
    base = rss_kib()
    times: list[float] = []
    units = 0
    extra: dict[str, Any] = {}
    gc_times: list[float] = []
    for _ in range(repeat):
        Clock.last = None
        seconds, units, extra = case(backend, params)
        times.append(seconds)
        if Clock.last is not None:
            gc_times.append(Clock.last.gc_seconds)
    return {
        "times": times,
        # The cyclic collector's part of each time, when the case timed itself with a Clock.
        "gc_times": gc_times if len(gc_times) == len(times) else None,
        "units": units,
        # Both are readings of the RSS: the base is one the peak has reached (see above).
        "peak_rss_kib": max(peak_rss_kib(), base),
        "base_rss_kib": base,
        "extra": extra,
        "python": sys.version.split()[0],
    }


def child_main(
    cases: Mapping[str, Callable[[str, dict[str, Any]], Run]],
    unsupported: Mapping[str, str] | None = None,
) -> None:
    """Run the case named on the command line and print its JSON result (see the module doc).

    A case is a function ``(backend, params) -> (seconds, units, extra)``: one timed run.
    ``unsupported`` names the cases a runner cannot express, and why.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", required=True, choices=sorted({*cases, *(unsupported or {})}))
    parser.add_argument("--backend", required=True, choices=("asyncio", "trio"))
    parser.add_argument("--params", default="{}", help="the case's parameters, as JSON")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--profile",
        type=int,
        metavar="TOP",
        help="run once under cProfile; print the TOP functions",
    )
    args = parser.parse_args()
    if args.case not in cases:
        not_applicable((unsupported or {})[args.case])
    case = cases[args.case]
    params = json.loads(args.params)
    if args.profile:
        profile(case, args.backend, params, args.profile)
        return
    result = run_case(case, args.backend, params, args.repeat)
    print(json.dumps(result))
