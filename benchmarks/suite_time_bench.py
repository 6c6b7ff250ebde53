"""Where `make test`'s time goes: its lint steps, one run of the default suite, and the time per area.

Times the steps of `make lint` (import contract, ruff, mypy), then runs what `make test` runs next once
(``pytest -n 2 --maxschedchunk 1 -m "not slow and not gpu"``), reads each test's duration and CPU seconds (its
own and its children's, recorded by tests/conftest.py) from a JUnit report, and prints both per area
(tests/<area>/, or the file for tests at the top of tests/), the slowest tests, the whole run's CPU seconds, and
lint + pytest wall time against the 180 s target of issue 16, as a ratio. Area wall times add up the two
workers' time, so together they exceed the pytest wall time. On a shared or loaded machine wall times are
inflated and CPU seconds much less so: compare CPU seconds, or ratios of one run.

``--record`` writes each test's wall seconds (those over a second) to tests/durations.json, the order in which
tests/conftest.py hands tests to the xdist workers: slowest first, so both finish together.

Run: ``.venv/bin/python benchmarks/suite_time_bench.py [--top 10] [--no-lint] [--record] [-- PYTEST ARGS]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 180.0
DURATIONS = ROOT / "tests" / "durations.json"
#: tests faster than this are left out of DURATIONS (they count as 0 s there)
RECORD_MIN_S = 1.0
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
    parser.add_argument("--record", action="store_true", help=f"write the tests' wall seconds to {DURATIONS.name}")
    parser.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments (e.g. test paths)")
    args = parser.parse_args(argv)
    if args.record and args.pytest_args:
        parser.error("--record writes the whole suite's times: give no pytest arguments")
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
        cpu_before, start = children_cpu(), time.perf_counter()
        # as make test runs it: the Makefile unexports PYTHONDONTWRITEBYTECODE (bytecode caches written and read)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        wall, cpu = time.perf_counter() - start, children_cpu() - cpu_before
        cases = list(ET.parse(report).getroot().iter("testcase"))
        timings = [timing(case) for case in cases]
        failed = [
            f"{c.get('classname')}::{c.get('name')}"
            for c in cases
            if c.find("failure") is not None or c.find("error") is not None
        ]
    per_area: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for t in timings:
        per_area[t.area][0] += t.wall
        per_area[t.area][1] += t.cpu
    busy = sum(w for w, _ in per_area.values()) or 1.0
    in_tests = sum(c for _, c in per_area.values()) or 1.0
    print(f"{'area':<24} {'wall s':>8} {'share':>6} {'CPU s':>8} {'share':>6}  (wall: both workers' time)")
    for area, (seconds, cpu_s) in sorted(per_area.items(), key=lambda kv: -kv[1][1]):
        print(f"{area:<24} {seconds:8.1f} {seconds / busy:6.0%} {cpu_s:8.1f} {cpu_s / in_tests:6.0%}")
    outside = f"{max(2 * wall - busy, 0.0):8.1f} {'':>6} {max(cpu - in_tests, 0.0):8.1f}"
    print(f"{'(outside any test)':<24} {outside}  start-up, collection (wall: 2 x wall - the above, also idle)")
    for key, label in ((lambda t: -t.cpu, "CPU"), (lambda t: -t.wall, "wall")):
        print(f"\nslowest {args.top} tests by {label} (wall s, CPU s):")
        for t in sorted(timings, key=key)[: args.top]:
            print(f"  {t.wall:7.1f} {t.cpu:7.1f}  {t.name}")
    print(f"\n{done.stdout.strip().splitlines()[-1] if done.stdout.strip() else 'no pytest output'}")
    for name in failed:
        print(f"  FAILED {name}")
    total = lint + wall
    print(f"pytest CPU {cpu:.0f} s (all processes), of it {in_tests:.0f} s inside tests")
    print(f"lint {lint:.0f} s + pytest wall {wall:.0f} s for {len(timings)} tests = {total:.0f} s")
    print(
        f"make test: {total:.0f} s against the {TARGET_S:.0f} s target: ratio {total / TARGET_S:.2f} (<= 1.00 meets it)"
    )
    if args.record:
        record(timings)
    return done.returncode


def record(timings: list[Timing]) -> None:
    """Write the wall seconds of the tests that took over RECORD_MIN_S, by node ID, slowest first."""
    slow = sorted((t for t in timings if t.wall >= RECORD_MIN_S), key=lambda t: -t.wall)
    DURATIONS.write_text(json.dumps({t.node_id: round(t.wall, 1) for t in slow}, indent=1) + "\n")
    print(f"recorded {len(slow)} tests over {RECORD_MIN_S:g} s in {DURATIONS.relative_to(ROOT)}")


class Timing(NamedTuple):
    """One test: its area, its name, its wall seconds and its CPU seconds (0 where none was recorded)."""

    area: str
    name: str
    wall: float
    cpu: float
    node_id: str


def timing(case: ET.Element) -> Timing:
    """A JUnit <testcase>'s timing; its CPU seconds from the ``cpu_s`` property tests/conftest.py records."""
    cpu = sum(float(p.get("value", 0)) for p in case.iter("property") if p.get("name") == "cpu_s")
    classname, name = case.get("classname", ""), case.get("name", "")
    module = classname.replace(".", "/") + ".py"  # tests.audit.test_cli -> tests/audit/test_cli.py (no test classes)
    return Timing(area_of(classname), f"{classname}::{name}", float(case.get("time", 0)), cpu, f"{module}::{name}")


def children_cpu() -> float:
    """User + system CPU seconds of the finished children of this process (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
