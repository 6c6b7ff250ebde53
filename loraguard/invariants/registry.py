"""The invariant registry: each invariant has an ID, a one-line promise, the capabilities it needs, and one check."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from loraguard.backends.base import Backend, Unsupported
from loraguard.invariants.checks import Inconclusive
from loraguard.harness.scenarios import Scenario, needed_capabilities, without_modules_to_save

Check = Callable[[Backend, Scenario], None]


class Skipped(Exception):
    """The invariant does not apply to this backend or scenario; the message says why.

    `per_example` marks a reason that belongs to this scenario alone (too weak to decide, or a feature combination
    the release refuses): a drawn example is then discarded, not the whole property skipped.
    """

    def __init__(self, reason: str, per_example: bool = False):
        super().__init__(reason)
        self.per_example = per_example


@dataclass(frozen=True)
class Invariant:
    id: str
    promise: str
    needs: frozenset[str]
    check: Check
    needs_second: bool = False
    needs_modules_to_save: bool = False


REGISTRY: dict[str, Invariant] = {}


def invariant(id: str, promise: str, needs: tuple[str, ...] = (), needs_second: bool = False,
              needs_modules_to_save: bool = False) -> Callable[[Check], Check]:
    """Register `check` under `id`; IDs are stable because known-failure files and baselines refer to them."""
    def register(check: Check) -> Check:
        if id in REGISTRY:
            raise ValueError(f"invariant {id!r} registered twice")
        REGISTRY[id] = Invariant(id, promise, frozenset(needs), check, needs_second, needs_modules_to_save)
        return check
    return register


def fitted(inv: Invariant, backend: Backend, scenario: Scenario) -> Scenario:
    """The scenario as this backend can run it: without modules_to_save if it lacks them and the promise allows."""
    if "modules_to_save" not in backend.capabilities and not inv.needs_modules_to_save:
        return without_modules_to_save(scenario)
    return scenario


def applicable(inv: Invariant, backend: Backend, scenario: Scenario) -> str | None:
    """None if the invariant can run on the (fitted) scenario, else the reason it is skipped."""
    if inv.needs_second and scenario.second is None:
        return "scenario has no second adapter"
    if inv.needs_modules_to_save and not scenario.config.modules_to_save:
        return "scenario has no modules_to_save"
    missing = sorted((inv.needs | needed_capabilities(scenario, inv.needs_second)) - set(backend.capabilities))
    if missing:
        return f"backend {backend.name!r} lacks {', '.join(missing)}"
    return None


def run_invariant(inv: Invariant, backend: Backend, scenario: Scenario) -> float:
    """Run one check; raises Skipped, InvariantViolation, or the backend's own exception. Returns seconds taken."""
    scenario = fitted(inv, backend, scenario)
    reason = applicable(inv, backend, scenario)
    if reason:
        raise Skipped(reason)
    start = time.perf_counter()
    try:
        inv.check(backend, scenario)
    except (Unsupported, Inconclusive) as err:
        raise Skipped(str(err), per_example=True) from None
    return time.perf_counter() - start


def all_invariants() -> dict[str, Invariant]:
    """Every registered invariant (importing the modules that define them)."""
    from loraguard.invariants import (  # noqa: F401  (imported for registration)
        combination, dtypes, export, isolation, merge, modules_to_save, naming, roundtrip, wrapping,
    )

    return dict(REGISTRY)
