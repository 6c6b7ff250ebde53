"""How long the FSDP part takes: starting a world, each invariant under FSDP2 and FSDP1, and the pytest tests.

Run: ``.venv/bin/python benchmarks/fsdp_bench.py [--world-sizes 1,2] [--apis fsdp2,fsdp1] [--tests]``. Prints one
line per figure; the world start-up (one all_reduce) is the baseline every suite time is compared against.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loraguard.fsdp import run_suite  # noqa: E402
from loraguard.run.distributed.launch import launch  # noqa: E402


def world_start(world_size: int) -> float:
    """Wall time of a world that runs one collective: process start, imports and rendezvous."""
    start = time.perf_counter()
    [outcome] = launch([f"{ROOT / 'tests/zero3/scenarios.py'}:all_reduce_sum"], world_size, timeout=60)
    if outcome.status != "passed":
        raise SystemExit(f"world of {world_size} failed:\n{outcome.message}")
    return time.perf_counter() - start


def suite(world_size: int, api: str, baseline: float) -> None:
    start = time.perf_counter()
    results = run_suite(world_size, api=api)
    total = time.perf_counter() - start
    for r in results:
        print(f"  {world_size} ranks {api}  {r.id:30s} {r.status:8s} {r.duration:6.2f} s")
    passed = sum(r.status == "passed" for r in results)
    print(
        f"suite on {world_size} rank(s), {api}: {total:.1f} s wall, {total / baseline:.1f}x the world start-up "
        f"({passed}/{len(results)} passed; the first invariant's time includes the ranks' imports)"
    )


#: What `make test` runs of the FSDP part (the slow reproducer of a hang is left out there too); the invariants' world
#: in tests/distributed runs the ZeRO-3 invariants too.
TESTS = ["tests/fsdp", "tests/distributed", "tests/audit/test_fsdp_rules.py"]


def tests() -> None:
    """The FSDP tests of `make test`, serial, with their wall and CPU time (children included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *TESTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    wall = time.perf_counter() - start
    print(f"pytest -m 'not slow' {' '.join(TESTS)} (serial): {wall:.1f} s wall, {cpu:.1f} s CPU: {last}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world-sizes", default="1,2", help="comma-separated rank counts (default 1,2; '' for none)")
    parser.add_argument("--apis", default="fsdp2,fsdp1", help="comma-separated FSDP APIs (default fsdp2,fsdp1)")
    parser.add_argument("--tests", action="store_true", help="also time the pytest FSDP tests")
    args = parser.parse_args()
    for n in (int(s) for s in args.world_sizes.split(",") if s):
        baseline = world_start(n)
        print(f"world start-up + one all_reduce, {n} rank(s): {baseline:.1f} s")
        for api in args.apis.split(","):
            suite(n, api, baseline)
    if args.tests:
        tests()


if __name__ == "__main__":
    main()
