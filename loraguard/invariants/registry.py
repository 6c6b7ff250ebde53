"""The one invariant registry: each invariant has an ID, a one-line promise, how it runs, and one check.

Three kinds share it. A ``scenario`` invariant checks one model + adapters setup: ``check(backend, scenario)``.
A ``sequence`` invariant drives a Hypothesis state machine: ``check(backend, dtypes, device)``. A distributed
invariant (kind ``zero3``, ``fsdp``) runs in every rank of a world: ``check(ctx)`` with a `RankContext`.
IDs are stable: known-failure files, baselines and reproducers refer to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from loraguard.backends.base import Backend, Unsupported, wrappable
from loraguard.harness.scenarios import Scenario, needed_capabilities, without_modules_to_save
from loraguard.invariants import checks
from loraguard.invariants.checks import Inconclusive

#: Distributed kinds, named for the sharding they check; each runs in every rank of a world.
DISTRIBUTED_KINDS = ("zero3", "fsdp")
#: How each kind of invariant is run (see the module docstring).
KINDS = ("scenario", "sequence", *DISTRIBUTED_KINDS)
#: The modules whose import registers the invariants, with the kind each registers (imported on first use of
#: `all_invariants`, a kind's alone where one is asked for: a rank needs neither Hypothesis nor the scenario checks).
_MODULES = {
    "combination": "scenario",
    "dtypes": "scenario",
    "export": "scenario",
    "isolation": "scenario",
    "merge": "scenario",
    "modules_to_save": "scenario",
    "naming": "scenario",
    "options": "scenario",
    "biases": "scenario",
    "roundtrip": "scenario",
    "targets": "scenario",
    "wrapping": "scenario",
    "sequences": "sequence",
    "zero3": "zero3",
    "fsdp": "fsdp",
    "tuners": "scenario",
    "tasks": "scenario",
}


class Skipped(Exception):
    """The invariant does not apply to this backend or scenario; the message says why.

    `per_example` marks a reason that belongs to this scenario alone (too weak to decide, or a feature combination
    the release refuses): a drawn example is then discarded, not the whole property skipped.
    """

    def __init__(self, reason: str, per_example: bool = False):
        super().__init__(reason)
        self.per_example = per_example


class Partial(Skipped):
    """The first part of the check ran and held; the backend cannot do the rest (the message says what it lacks).

    Reported as partial coverage, not as a skip: what ran was verified.
    """


@dataclass(frozen=True)
class Invariant:
    """One promise of a LoRA library: its ID, the promise in one line, its kind, and the check that tests it."""

    id: str
    promise: str
    check: Callable[..., None]
    kind: str = "scenario"
    needs: frozenset[str] = frozenset()
    needs_second: bool = False
    needs_modules_to_save: bool = False
    needs_task_type: bool = False  # runs on task models only: drawn module trees have no task_type

    @property
    def needs_oracle(self) -> bool:
        """True unless the invariant has a form that needs no reference (see `oracle_free`)."""
        return self.id not in ORACLE_FREE


REGISTRY: dict[str, Invariant] = {}
#: Oracle-free forms of scenario invariants, by ID: what runs on a tuner loraguard's reference does not implement.
ORACLE_FREE: dict[str, Callable[..., None]] = {}


def _qualified(check: Callable[..., None]) -> str:
    return f"{getattr(check, '__module__', '?')}.{getattr(check, '__qualname__', repr(check))}"


def register(inv: Invariant) -> Invariant:
    """Add `inv` to the registry; an ID or kind used wrongly is a programming error, raised at import.

    Registering the same function again under its ID (its module re-imported, as pytester's in-process runs do)
    replaces the entry; a different function under an existing ID is an error.
    """
    if inv.kind not in KINDS:
        raise ValueError(f"invariant {inv.id!r}: kind {inv.kind!r} is not one of {KINDS}")
    module = inv.check.__module__.removeprefix(f"{__package__}.")
    if module in _MODULES and _MODULES[module] != inv.kind:
        raise ValueError(
            f"invariant {inv.id!r} of kind {inv.kind!r}: _MODULES lists {module!r} under kind {_MODULES[module]!r}"
        )
    known = REGISTRY.get(inv.id)
    if known is not None and _qualified(known.check) != _qualified(inv.check):
        raise ValueError(
            f"invariant {inv.id!r} registered twice: by {_qualified(known.check)} and by {_qualified(inv.check)}"
        )
    REGISTRY[inv.id] = inv
    return inv


def invariant(
    id: str,
    promise: str,
    kind: str = "scenario",
    needs: tuple[str, ...] = (),
    needs_second: bool = False,
    needs_modules_to_save: bool = False,
    needs_task_type: bool = False,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator form of `register` for the function that checks the promise."""

    def wrap(check: Callable[..., None]) -> Callable[..., None]:
        register(
            Invariant(id, promise, check, kind, frozenset(needs), needs_second, needs_modules_to_save, needs_task_type)
        )
        return check

    return wrap


def oracle_free(id: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator registering the form of invariant `id` that needs no oracle: ``check(backend, scenario)`` for
    scenarios whose adapter is a `TunerConfig`."""

    def wrap(check: Callable[..., None]) -> Callable[..., None]:
        known = ORACLE_FREE.get(id)
        if known is not None and _qualified(known) != _qualified(check):
            raise ValueError(f"invariant {id!r} has two oracle-free forms: {_qualified(known)} and {_qualified(check)}")
        ORACLE_FREE[id] = check
        return check

    return wrap


def fitted(inv: Invariant, backend: Backend, scenario: Scenario) -> Scenario:
    """The scenario as this backend can run it: without modules_to_save if it lacks them and the promise allows."""
    if "modules_to_save" not in backend.capabilities and not inv.needs_modules_to_save:
        return without_modules_to_save(scenario)
    return scenario


def applicable(inv: Invariant, backend: Backend, scenario: Scenario) -> str | None:
    """None if the invariant can run on the (fitted) scenario, else the reason it is skipped."""
    families = wrappable(backend)
    if scenario.model.family not in families:
        return (
            f"backend {backend.name!r} wraps only {', '.join(sorted(families))} models; "
            f"'{scenario.model.name}' is a {scenario.model.family} model"
        )
    if inv.needs_second and scenario.second is None:
        return "scenario has no second adapter"
    if inv.needs_modules_to_save and not scenario.config.modules_to_save:
        return "scenario has no modules_to_save"
    missing = sorted((inv.needs | needed_capabilities(scenario, inv.needs_second)) - set(backend.capabilities))
    if missing:
        return f"backend {backend.name!r} lacks {', '.join(missing)}"
    if inv.needs_task_type and scenario.config.task_type is None:
        return "scenario has no task_type"
    return None


def run_invariant(inv: Invariant, backend: Backend, scenario: Scenario) -> float:
    """Run one scenario invariant; raises Skipped, InvariantViolation, or the backend's own exception.

    Returns the seconds the check took.
    """
    if inv.kind != "scenario":
        raise ValueError(f"invariant {inv.id!r} is a {inv.kind} invariant; it does not run on one scenario")
    scenario = fitted(inv, backend, scenario)
    check = inv.check
    if scenario.tuner is not None:
        if inv.needs_oracle:
            raise Skipped(
                f"{inv.id} needs the oracle; loraguard's reference implements LoRA, not {scenario.tuner.kind}"
            )
        check = ORACLE_FREE[inv.id]
    reason = applicable(inv, backend, scenario)
    if reason:
        raise Skipped(reason)
    __tracebackhide__ = True
    start, held = time.perf_counter(), checks.held
    try:
        check(backend, scenario)
    except Unsupported as err:
        if checks.held > held:
            raise Partial(f"{checks.held - held} comparisons held, then: {err}", per_example=True) from None
        raise Skipped(str(err), per_example=True) from None
    except Inconclusive as err:
        raise Skipped(str(err), per_example=True) from None
    return time.perf_counter() - start


def all_invariants(kind: str | None = None) -> dict[str, Invariant]:
    """Every registered invariant, or those of one kind, in registration order."""
    import importlib

    for module, of_kind in _MODULES.items():
        if kind is None or of_kind == kind:
            importlib.import_module(f"{__package__}.{module}")
    return {i: inv for i, inv in REGISTRY.items() if kind is None or inv.kind == kind}
