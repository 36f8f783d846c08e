"""The benchmark harness (benchmarks/bench.py) runs every workload, and reports them soundly.

No timing is asserted, nor any relation between memory readings taken at two moments: only
that each workload of agentforum and of its floors runs, on asyncio and on Trio, checks its
own result, that its figures are there, with their types, and that the harness turns the
results into its table, its target checks and its JSON file. The peers are not installed here.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import pg_server

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
TINY = {
    "W1": {"n": 100},
    "W2": {"n": 50, "consumers": [2, 3]},
    "W3": {"calls": 5},
    "W4": {"n": 20},
    "W5": {"sizes": [4, 8, 16]},
    "W6": {"n": 5},
    "W6PG": {"n": 5},
    "W6PGW": {"calls": 3, "workers": [2]},
    "MEM": {"n": 20},
    "SIZE": {"forwards": 40, "forwarded": 2_000, "shared": 4, "document": 1_000},
}


def assert_memory_figures(result: dict[str, object]) -> None:
    """A case's RSS figures are there, as positive KiB, and the peak is never below the base.

    The base (VmRSS) and the peak (VmHWM) are read at two moments from counters the kernel
    keeps approximately: the harness reports the higher of the two as the peak, so that the
    peak is well defined whatever the readings (a VmHWM read 4 KiB below the VmRSS read
    before it failed this test once).
    """
    peak, base = result["peak_rss_kib"], result["base_rss_kib"]
    assert isinstance(peak, int)
    assert isinstance(base, int)
    assert base > 0
    assert peak >= base  # by construction: the peak is max(VmHWM, base)


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench

    return bench


def test_harness_runs_every_workload_of_ours_and_the_floors(
    bench: object,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    postgres_server: pg_server.Server,
) -> None:
    # W6PG on the tests' server (each of its runs creates a database there, and drops it).
    monkeypatch.setenv("AGENTFORUM_BENCH_POSTGRES_URL", postgres_server.url)
    output = tmp_path / "results.json"
    # The harness collects the garbage before each of its 60-odd timed runs (the Clock of
    # benchmarks/_common.py). In a pytest-xdist worker that has run hundreds of tests before
    # this one, each collection walks every object they left (the test took 26 s there, 6 s
    # alone): gc.freeze() sets the objects that exist now aside from the collector until the
    # harness returns, as if it ran in a process of its own. The harness runs and collects
    # exactly as before; nothing below depends on it.
    gc.freeze()
    try:
        returned = bench.main(  # type: ignore[attr-defined]
            [
                "--in-process",
                "--quiet",
                "--repeat",
                "1",
                "--sizes",
                json.dumps(TINY),
                "--json",
                str(output),
                "--markdown",
            ]
        )
    finally:
        gc.unfreeze()
    printed = capsys.readouterr().out
    results = json.loads(output.read_text(encoding="utf-8"))
    assert returned == results  # what main() returns is what it wrote, as plain JSON
    rows = results["rows"]
    # Every workload, on both backends, with a figure for agentforum.
    seen = {(row["workload"], row["backend"]) for row in rows}
    assert seen == {(w, b) for w in TINY for b in ("asyncio", "trio")}
    for row in rows:
        assert row["figures"]["ours"] > 0, row
        ours = row["results"]["ours"]
        assert len(ours["times"]) == 1
        assert_memory_figures(ours)
        if row["results"].get("floor") is not None:
            assert row["figures"]["floor"] > 0, row
        for peer in ("agentforum 0.0.10", "miniagents"):
            assert row["results"][peer] in ("not installed", "n/a")
    streamed = [r["results"]["ours"]["units"] for r in rows if r["workload"] == "W1"]
    assert set(streamed) == {100}
    for row in rows:
        if row["workload"] == "W6PGW":  # 2 workers x 3 calls x (request, call, response)
            assert row["results"]["ours"]["units"] == 18
            assert [speed > 0 for speed in row["results"]["ours"]["extra"]["per_worker"]] == [
                True,
                True,
            ]
    delivered = [r["results"]["ours"]["units"] for r in rows if r["workload"] == "W2"]
    assert sorted(set(delivered)) == [100, 150]  # n tokens to each of C consumers
    # The target checks: every issue 8 target that needs no peer is evaluated.
    names = {(check["name"].split(":")[0], check["backend"]) for check in results["checks"]}
    for backend in ("asyncio", "trio"):
        assert ("W1 D=50 / D=1 throughput", backend) in names
        assert ("W5 16 / 4 time", backend) in names
        assert ("SIZE 40 forwards of one 2 KB message (added to the file)", backend) in names
    for check in results["checks"]:
        assert check["met"] in (True, False, None)
        assert (check["met"] is None) == (check["value"] is None)
    # 3 depths and a burst x 2 backends, in the table of figures, in that of peak RSS and in
    # that of the collector's share.
    assert printed.count("| W1 nested streaming") == 24
    assert "targets:" in printed
    # The cyclic collector's share of the time of every case that times itself with a Clock
    # (W3 does, for agentforum and its floor), a part of each run's time.
    assert "Time in the cyclic garbage collector" in printed
    for row in rows:
        if row["workload"] == "W3":
            for subject in ("ours", "floor"):
                result = row["results"][subject]
                assert len(result["gc_times"]) == len(result["times"]) == 1, row
                assert 0 <= result["gc_times"][0] <= result["times"][0], row


def test_a_case_runs_in_a_child_process_and_prints_its_result() -> None:
    process = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "workloads.py"),
            "--case",
            "W1.floor",
            "--backend",
            "trio",
            "--params",
            '{"n": 100}',
            "--repeat",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(process.stdout.splitlines()[-1])
    assert result["units"] == 100
    assert len(result["times"]) == 2
    assert_memory_figures(result)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("case", ["W3.task", "W3.messages"])
def test_the_parts_of_a_call_run_and_count_their_calls(
    case: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parts of a call that benchmarks/call_parts.py counts (a task per call; the three
    messages of a call) run on both backends and do the calls they are asked for."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import workloads

    seconds, calls, extra = workloads.CASES[case](backend, {"calls": 7})
    assert (calls, extra) == (7, {})
    assert isinstance(seconds, float)


def test_the_sync_benchmark_runs_and_push_reads_only_the_new_part() -> None:
    """benchmarks/sync.py runs (small, SQLite only) and prints each case; its push of 2
    messages onto the clone sends 2 and reads one round of the source, not the tree."""
    run = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "sync.py"),
            *("--messages", "201", "--branches", "4", "--new", "2", "--no-postgres"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = {line[:48].strip(): line[48:].split() for line in run.stdout.splitlines()[1:]}
    assert list(rows) == [
        "clone of 201, SQLite to SQLite",
        "push of 2 onto 201, SQLite to SQLite",
        "export + import of 201, SQLite to SQLite",
    ]
    assert rows["clone of 201, SQLite to SQLite"][1:3] == ["201", "201"]
    seconds, sent, read, _ = rows["push of 2 onto 201, SQLite to SQLite"]
    assert float(seconds) > 0
    assert (sent, read) == ("2", "16")
