"""A red run against a green one (issue 11, part 4): a release failing most invariants must not cost much more.

Runs, in one invocation and the same profile, ``pytest --loraguard`` from an empty directory against the clean
reference backend and against ``tests.mutants:ManyDefects`` (the reference with four real peft defects at once:
it fails nearly every invariant), and prints wall and CPU seconds of each and their ratio (target: red/clean
<= 2x, on wall time). Both runs select the zoo and drawn tests (``-k "test_zoo or test_drawn"``) on the `mlp`
and `nested` zoo models, so the drawn properties, where shrinking happens, weigh as much as in a full run.

Run: ``.venv/bin/python benchmarks/red_run_bench.py [--profile ci] [--shrink full]``. On a shared machine wall
times are inflated by load; the CPU ratio is printed beside the wall ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLEAN, RED = "reference", "tests.mutants:ManyDefects"
TARGET = 2.0


def timed_run(backend: str, profile: str, shrink: str | None) -> tuple[float, float, str]:
    """Wall and CPU seconds of one plugin run, and pytest's outcome line."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--loraguard", "--loraguard-backend"]
    cmd += [backend, "--loraguard-profile", profile, "--loraguard-zoo", "mlp", "--loraguard-zoo", "nested"]
    cmd += ["-k", "test_zoo or test_drawn"] + (["--loraguard-shrink", shrink] if shrink else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="loraguard-red-") as empty:
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=empty, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    if proc.returncode not in (0, 1) or not lines:
        raise SystemExit(f"{backend}: the run did not complete (exit {proc.returncode})\n{proc.stdout[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, lines[-1].strip("= ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="ci", help="the profile both runs use (default: ci)")
    parser.add_argument("--shrink", default=None, help="pass --loraguard-shrink to both runs (e.g. full)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, profile {args.profile}")
    clean = timed_run(CLEAN, args.profile, args.shrink)
    red = timed_run(RED, args.profile, args.shrink)
    for name, (wall, cpu, line) in (("clean " + CLEAN, clean), ("red   " + RED, red)):
        print(f"{name:40s} {wall:7.1f} s wall {cpu:7.1f} s CPU   {line}")
    ratio = red[0] / clean[0]
    print(f"red/clean: {ratio:.2f}x wall, {red[1] / clean[1]:.2f}x CPU (target <= {TARGET:g}x wall)")
    print("PASS" if ratio <= TARGET else "FAIL")


if __name__ == "__main__":
    main()
