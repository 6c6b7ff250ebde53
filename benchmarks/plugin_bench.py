"""The pytest plugin's costs against issue 4's targets, all from one run, with the table last.

1. Wall time of the default (ci) profile: ``pytest --loraguard --loraguard-backend peft -n 2`` from an empty
   directory, in a subprocess (target: at most 60 s on 2 cores).
2. Start-up cost when the plugin is off: a one-test file under plain pytest vs ``-p no:loraguard``, in pairs of
   alternating order, the median paired difference in wall and CPU time (target: at most 20 ms); and
   ``python -X importtime`` of ``loraguard.frontends.plugin``.
3. Time to first failure over the mutant backends (tests/mutants.py): run_all with stop_on_failure on the ci
   profile's zoo scenarios, the median over mutants (target: at most 10 s).

Run: ``.venv/bin/python benchmarks/plugin_bench.py [--reps 40]``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]


def ci_wall_time() -> tuple[float, float, str]:
    """Wall and CPU seconds of the ci profile against peft on 2 workers, and pytest's last line.

    Failing tests (peft's known bugs, when no known-failures file is given) still count as a run; a usage or
    internal error does not. CPU time is reported beside wall time because a shared machine inflates the latter.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="loraguard-bench-") as empty:
        start = time.perf_counter()
        proc = subprocess.run(
            [*PYTEST, "--loraguard", "--loraguard-backend", "peft", "-n", "2", "-q"],
            cwd=empty,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    if proc.returncode not in (0, 1):
        raise SystemExit(f"the ci run did not complete (exit {proc.returncode}): {last}\n{proc.stdout[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, last


def _run_ms(cwd: str, args: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + sys) milliseconds of one pytest subprocess."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([*PYTEST, "-q", *args], cwd=cwd, check=True, capture_output=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall * 1000, (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000


def off_overhead_ms(reps: int) -> dict[str, tuple[float, float, float]]:
    """Per measure (wall, cpu): median ms with the plugin installed but not asked for, with ``-p no:loraguard``, and
    the median of the paired differences. Pairs alternate their order so neither side always runs second."""
    on: list[tuple[float, float]] = []
    off: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="loraguard-bench-") as d:
        Path(d, "test_trivial.py").write_text("def test_ok():\n    assert True\n")
        for i in range(reps):
            sides = [(on, []), (off, ["-p", "no:loraguard"])]
            for runs, extra in sides if i % 2 == 0 else sides[::-1]:
                runs.append(_run_ms(d, [*extra, "test_trivial.py"]))
    return {
        m: (
            statistics.median(a[j] for a in on),
            statistics.median(b[j] for b in off),
            statistics.median(a[j] - b[j] for a, b in zip(on, off)),
        )
        for j, m in enumerate(("wall", "cpu"))
    }


def import_cost_ms(pre: str) -> tuple[float, bool]:
    """Cumulative import time of loraguard.frontends.plugin after `pre` (ms), and whether it pulled in torch."""
    code = f"{pre}; import loraguard.frontends.plugin, sys; print('torch' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    line = next(ln for ln in proc.stderr.splitlines() if re.search(r"\|\s*loraguard\.plugin$", ln))
    return int(line.split("|")[1]) / 1000, proc.stdout.strip() == "True"


def first_failures() -> list[tuple[str, str, str, float]]:
    """(mutant, invariant, scenario, seconds) of the first failure of each mutant on the ci zoo scenarios."""
    from loraguard.harness.scenarios import DTYPES
    from loraguard.harness.settings import PROFILES
    from loraguard.harness.zoo import available
    from loraguard.harness.zoo_scenarios import zoo_scenarios
    from loraguard.invariants.registry import all_invariants
    from loraguard.run.in_process import run_all
    from tests.mutants import MUTANTS

    ci = PROFILES["ci"]
    scenarios = zoo_scenarios(available(list(ci.zoo) if ci.zoo else None), [DTYPES[d] for d in ci.dtypes])
    all_invariants()
    for s in scenarios:  # build each model once, so the first mutant does not pay transformers' warm-up alone
        s.base()
    out = []
    for mutant in MUTANTS:
        last = run_all(mutant(), scenarios, stop_on_failure=True)[-1]
        if last.status not in ("failed", "error"):
            raise SystemExit(f"{mutant.name} ({mutant.defect}) was not caught on the ci scenarios")
        out.append((mutant.name, last.invariant, last.scenario, last.elapsed))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40, help="pairs of pytest runs for the start-up overhead")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")

    wall, cpu, last = ci_wall_time()
    print(f"ci profile, peft, -n 2, from an empty directory: {wall:.1f} s wall, {cpu:.1f} s CPU ({last})")

    overhead = off_overhead_ms(args.reps)
    for measure, (on, off, diff) in overhead.items():
        print(
            f"trivial test file, {args.reps} pairs, median {measure}: {on:.0f} ms plugin installed, {off:.0f} ms "
            f"-p no:loraguard; median paired difference {diff:+.1f} ms"
        )
    wall_diff, cpu_diff = (diff for *_, diff in overhead.values())
    alone, torch_alone = import_cost_ms("pass")
    after, torch_after = import_cost_ms("import pytest")
    print(
        f"python -X importtime: loraguard.frontends.plugin {alone:.1f} ms alone (pytest included), "
        f"{after:.1f} ms once pytest "
        f"is imported; torch imported: {torch_alone or torch_after}"
    )

    caught = first_failures()
    for name, invariant, scenario, seconds in caught:
        print(f"  {name:22s} caught by {invariant:18s} on {scenario:18s} after {seconds:5.2f} s")
    median = statistics.median(s for *_, s in caught)

    rows = [
        ("ci profile wall time (peft, -n 2)", f"{wall:.1f} s", "<= 60 s", wall <= 60),
        ("  its CPU time / 2 cores (the unloaded floor)", f"{cpu / 2:.1f} s", "", True),
        ("start-up overhead, plugin off (wall)", f"{wall_diff:+.1f} ms", "<= 20 ms", wall_diff <= 20),
        ("start-up overhead, plugin off (CPU)", f"{cpu_diff:+.1f} ms", "<= 20 ms", cpu_diff <= 20),
        ("import loraguard.frontends.plugin after pytest", f"{after:.1f} ms", "no torch", not torch_after),
        (f"median time to first failure ({len(caught)} mutants)", f"{median:.2f} s", "<= 10 s", median <= 10),
    ]
    print(f"\n{'figure':44s} {'value':>10s}  {'target':10s} met")
    for figure, value, target, met in rows:
        print(f"{figure:44s} {value:>10s}  {target:10s} {('yes' if met else 'NO') if target else ''}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes on the machine inflate wall times)")


if __name__ == "__main__":
    main()
