"""Running the invariants in-process, without pytest: for benchmarks, mutant checks and scripts."""

from __future__ import annotations

import time

from loraguard.backends import Backend
from loraguard.harness.scenarios import Scenario
from loraguard.invariants.checks import InvariantViolation
from loraguard.invariants.registry import Invariant, Partial, Skipped, all_invariants, run_invariant
from loraguard.run.outcome import Outcome


def run_all(
    backend: Backend,
    scenarios: list[Scenario],
    invariants: list[Invariant] | None = None,
    stop_on_failure: bool = False,
) -> list[Outcome]:
    """Every invariant on every scenario; a violation is "failed", any other exception "error"."""
    start = time.perf_counter()
    out: list[Outcome] = []
    for scenario in scenarios:
        for inv in invariants or list(all_invariants("scenario").values()):
            began = time.perf_counter()
            try:
                run_invariant(inv, backend, scenario)
                status, message = "passed", ""
            except Partial as part:
                status, message = "partial", str(part)
            except Skipped as why:
                status, message = "skipped", str(why)
            except InvariantViolation as err:
                status, message = "failed", str(err)
            except Exception as err:  # the backend crashed: also a failure of the promise
                status, message = "error", f"{type(err).__name__}: {err}"
            now = time.perf_counter()
            out.append(Outcome(inv.id, scenario.id, status, message, now - began, now - start))
            if stop_on_failure and status in ("failed", "error"):
                return out
    return out
