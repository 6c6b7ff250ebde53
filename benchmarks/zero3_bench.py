"""How long the ZeRO-3 part takes: starting a world, each invariant, the whole suite, and the pytest tests.

Run: ``.venv/bin/python benchmarks/zero3_bench.py [--world-sizes 1,2] [--tests]``. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loraguard.run.distributed.launch import launch  # noqa: E402
from loraguard.zero3 import run_suite  # noqa: E402


def world_start(world_size: int) -> float:
    """Wall time of a world that runs one collective: process start, imports and rendezvous."""
    start = time.perf_counter()
    [outcome] = launch([f"{ROOT / 'tests/zero3/scenarios.py'}:all_reduce_sum"], world_size, timeout=60)
    if outcome.status != "passed":
        raise SystemExit(f"world of {world_size} failed:\n{outcome.message}")
    return time.perf_counter() - start


def suite(world_size: int) -> None:
    start = time.perf_counter()
    results = run_suite(world_size)
    total = time.perf_counter() - start
    for r in results:
        print(f"  {world_size} ranks  {r.id:34s} {r.status:8s} {r.duration:6.2f} s")
    print(
        f"suite on {world_size} rank(s): {total:.1f} s wall ({sum(r.status == 'passed' for r in results)}/"
        f"{len(results)} passed; the first invariant's time includes the ranks' imports)"
    )


def tests() -> None:
    start = time.perf_counter()
    paths = ["tests/zero3", "tests/distributed"]  # the shared world runs the FSDP invariants too
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "zero3", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    print(f"pytest -m zero3 {' '.join(paths)} (serial): {time.perf_counter() - start:.1f} s wall: {last}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world-sizes", default="1,2", help="comma-separated rank counts (default 1,2)")
    parser.add_argument("--tests", action="store_true", help="also time the pytest ZeRO-3 tests")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    for n in (int(x) for x in args.world_sizes.split(",")):
        print(f"world start-up + one all_reduce on {n} rank(s): {world_start(n):.1f} s")
        suite(n)
    if args.tests:
        tests()


if __name__ == "__main__":
    main()
