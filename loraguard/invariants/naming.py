"""Name matching: config entries select modules on dot boundaries (no suffix false matches); regexes fullmatch."""

from __future__ import annotations

from loraguard.backends.base import Backend
from loraguard.core.matching import false_suffix_matches
from loraguard.harness.scenarios import Scenario, expected_saved_modules
from loraguard.invariants.checks import expect
from loraguard.invariants.registry import invariant
from loraguard.invariants.steps import wrap


@invariant(
    "naming",
    "target_modules and modules_to_save select exactly the modules whose names match on dot "
    "boundaries (a regex string: re.fullmatch), never a bare-suffix look-alike.",
)
def names_match_on_boundaries(backend: Backend, scenario: Scenario) -> None:
    wrapped = wrap(backend, scenario)  # checks the LoRA targets against the oracle
    want = set(expected_saved_modules(scenario))
    got = set(backend.saved_copies(wrapped.model, "default"))
    if got == want:
        return
    entries = scenario.config.modules_to_save or []
    lookalikes = false_suffix_matches(sorted(got - want), entries)
    cause = f"; bare-suffix matches: {lookalikes} (name.endswith(entry) without a '.' boundary)" if lookalikes else ""
    expect(False, f"modules_to_save={entries!r} wrapped {sorted(got)}, expected {sorted(want)}{cause}")
