"""Where `make test`'s time goes: one run of the default suite, its wall time, and the time per area.

Runs ``pytest -n 2 -m "not slow and not gpu"`` (what `make test` runs after the import contract) once, reads
each test's duration from a JUnit report, and prints the seconds per area (tests/<area>/, or the file for tests at
the top of tests/), the slowest tests, and the wall time against the 180 s target of issue 16. Area times add
up the two workers' time, so together they exceed the wall time.

Run: ``.venv/bin/python benchmarks/suite_time_bench.py [--top 10]``.
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


def area_of(classname: str) -> str:
    """``tests.audit.test_cli`` -> ``audit``; ``tests.test_mutants`` -> ``test_mutants``."""
    parts = classname.split(".")
    return parts[1] if len(parts) > 2 else parts[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10, help="how many of the slowest tests to list")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "-m",
            "not slow and not gpu",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
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
    print(f"{'area':<24} {'seconds':>8}")
    for area, seconds in sorted(per_area.items(), key=lambda kv: -kv[1]):
        print(f"{area:<24} {seconds:8.1f}")
    print(f"\nslowest {args.top} tests:")
    for _, name, seconds in sorted(timings, key=lambda t: -t[2])[: args.top]:
        print(f"  {seconds:7.1f} s  {name}")
    print(f"\n{done.stdout.strip().splitlines()[-1] if done.stdout.strip() else 'no pytest output'}")
    print(f"wall {wall:.0f} s for {len(timings)} tests; target {TARGET_S:.0f} s: ratio {wall / TARGET_S:.2f}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
