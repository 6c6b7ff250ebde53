"""Where `make test`'s time goes: its lint steps, one run of the default suite, and the time per area.

Times the steps of `make lint` (import contract, ruff, mypy), then runs what `make test` runs next once
(``pytest -n 2 --maxschedchunk 1 -m "not slow and not gpu"``), reads each test's duration from a JUnit report,
and prints the seconds per area (tests/<area>/, or the file for tests at the top of tests/), the slowest tests,
and lint + pytest wall time against the 180 s target of issue 16, as a ratio. Area times add up the two
workers' time, so together they exceed the pytest wall time. On a shared or loaded machine every figure is
inflated: compare ratios of one run.

Run: ``.venv/bin/python benchmarks/suite_time_bench.py [--top 10] [--no-lint] [-- PYTEST ARGS]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 180.0
#: `make lint`'s commands, in its order (the Makefile is the source; keep these in step with it)
LINT = [["lint-imports", "--no-cache"], ["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]]


def area_of(classname: str) -> str:
    """``tests.audit.test_cli`` -> ``audit``; ``tests.test_mutants`` -> ``test_mutants``."""
    parts = classname.split(".")
    return parts[1] if len(parts) > 2 else parts[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10, help="how many of the slowest tests to list")
    parser.add_argument("--no-lint", action="store_true", help="time the tests only")
    parser.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments (e.g. test paths)")
    args = parser.parse_args(argv)
    lint = 0.0 if args.no_lint else time_lint()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "--maxschedchunk",
            "1",
            "-m",
            "not slow and not gpu",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            *args.pytest_args,
        ]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        cases = ET.parse(report).getroot().iter("testcase")
        timings = [
            (area_of(c.get("classname", "")), f"{c.get('classname')}::{c.get('name')}", float(c.get("time", 0)))
            for c in cases
        ]
    per_area: dict[str, float] = defaultdict(float)
    for area, _, seconds in timings:
        per_area[area] += seconds
    busy = sum(per_area.values()) or 1.0
    print(f"{'area':<24} {'seconds':>8} {'share':>6}  (both workers' time)")
    for area, seconds in sorted(per_area.items(), key=lambda kv: -kv[1]):
        print(f"{area:<24} {seconds:8.1f} {seconds / busy:6.0%}")
    print(
        f"{'(outside any test)':<24} {max(2 * wall - busy, 0.0):8.1f}  2 x wall - the above: start-up, collection, idle"
    )
    print(f"\nslowest {args.top} tests:")
    for _, name, seconds in sorted(timings, key=lambda t: -t[2])[: args.top]:
        print(f"  {seconds:7.1f} s  {name}")
    print(f"\n{done.stdout.strip().splitlines()[-1] if done.stdout.strip() else 'no pytest output'}")
    total = lint + wall
    print(f"lint {lint:.0f} s + pytest wall {wall:.0f} s for {len(timings)} tests = {total:.0f} s")
    print(
        f"make test: {total:.0f} s against the {TARGET_S:.0f} s target: ratio {total / TARGET_S:.2f} (<= 1.00 meets it)"
    )
    return done.returncode


def time_lint() -> float:
    """Seconds `make lint`'s commands take, run from .venv/bin like the Makefile; a failing one is reported."""
    bin_dir = Path(sys.executable).parent
    start = time.perf_counter()
    for cmd in LINT:
        done = subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            print(f"lint step failed: {' '.join(cmd)}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
