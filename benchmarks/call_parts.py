"""What a sequential call costs, in instructions, and what its parts cost alone (issue 16).

Run: ``python benchmarks/call_parts.py [--backend asyncio] [--peer NAME=PYTHON ...]``
(valgrind must be installed). Each subject runs W3's sequential case in a fresh process under
``valgrind --tool=callgrind``, which counts the instructions the process executes: the same
count on every run of the same interpreter and inputs, whatever else the machine is doing,
where a wall clock on a shared machine varies by tens of percent. A subject runs twice, with
``--small`` and ``--large`` calls; the difference of the two counts, divided by the
difference of the calls, is its cost per call, without the interpreter's start-up and
imports.

The subjects:

- ``agentforum``: ``W3.ours``, an ``ask`` of an echo agent awaited to its last message;
- ``floor``: ``W3.floor``, a request on a memory object stream to one server task, the reply
  on the caller's own stream (no task per call, nothing kept);
- ``task``: ``W3.task``, a task of its own per call that sets an event the caller waits for;
- ``messages``: ``W3.messages``, the three messages of a call (request, ``CallMessage``,
  response) built, hashed and stored in a ``MemoryStore``;
- each ``--peer``: its ``W3`` case (``peer_agentforum010.py`` for ``agentforum 0.0.10``).

``task`` plus ``messages`` is the least a call can cost that runs in a task of its own and
keeps its three messages in the tree, as every call here does: the table compares it with
what issue 16's targets allow (0.5x the floor's throughput is twice its instructions; 3x a
peer's is a third of them).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import PEERS, add_peer_option, peer_pythons

HERE = Path(__file__).resolve().parent
OURS = {"agentforum": "W3.ours", "floor": "W3.floor", "task": "W3.task", "messages": "W3.messages"}
COLLECTED = re.compile(r"Collected\s*:\s*([\d,]+)")


def instructions(command: list[str]) -> int:
    """The instructions ``command`` executes, counted by callgrind."""
    with tempfile.TemporaryDirectory() as directory:
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={Path(directory) / 'callgrind.out'}",
                *command,
            ],
            capture_output=True,
            text=True,
            cwd=HERE,
            check=False,
        )
    found = COLLECTED.search(result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return int(found.group(1).replace(",", ""))


def per_call(python: str, script: str, case: str, backend: str, small: int, large: int) -> int:
    counts = []
    for calls in (small, large):
        params = json.dumps({"calls": calls, "concurrent": False})
        command = [python, script, "--case", case, "--backend", backend, "--params", params]
        counts.append(instructions([*command, "--repeat", "1"]))
    return round((counts[1] - counts[0]) / (large - small))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--small", type=int, default=500, help="calls of the first run")
    parser.add_argument("--large", type=int, default=1500, help="calls of the second run")
    add_peer_option(parser)
    args = parser.parse_args()
    pythons = peer_pythons(parser, args.peer)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    costs: dict[str, int] = {}
    for name, case in OURS.items():
        costs[name] = per_call(
            sys.executable, "workloads.py", case, args.backend, args.small, args.large
        )
        print(f"{name}: {costs[name]:,} instructions per call", flush=True)
    peers = {}
    for name, python in pythons.items():
        if args.backend != "asyncio":
            continue  # the peers run on asyncio only
        peers[name] = costs[name] = per_call(
            python, PEERS[name], "W3", args.backend, args.small, args.large
        )
        print(f"{name}: {costs[name]:,} instructions per call", flush=True)
    least = costs["task"] + costs["messages"]
    ours = costs["agentforum"]
    print()
    print(f"W3 sequential, {args.backend}, Python {sys.version.split()[0]}: instructions per call")
    print(f"  agentforum                              {ours:>11,}")
    print(f"  the floor                               {costs['floor']:>11,}")
    print(f"  a task per call (task)                  {costs['task']:>11,}")
    print(f"  three messages hashed, stored (messages){costs['messages']:>11,}")
    print(f"  task + messages: the least a call costs {least:>11,}")
    for name, cost in peers.items():
        print(f"  {name:<40}{cost:>11,}")
    print()
    print("What each target allows a call, in instructions (fewer is faster):")
    allowed = {"0.5x the floor": 2 * costs["floor"]}
    allowed.update({f"3x {name}": round(cost / 3) for name, cost in peers.items()})
    for target, limit in allowed.items():
        print(
            f"  {target:<24} at most {limit:>9,}: agentforum uses {ours / limit:.2f} times "
            f"that; task + messages alone, {least / limit:.2f} times"
        )


if __name__ == "__main__":
    main()
