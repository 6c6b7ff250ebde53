"""The default profile must catch every mutant backend, and pass the reference it was derived from."""

import pytest
import torch

from loraguard.backends.reference import ReferenceBackend
from loraguard.harness.settings import PROFILES
from loraguard.harness.zoo import available
from loraguard.harness.zoo_scenarios import profile_scenarios
from loraguard.run.in_process import run_all
from tests.mutants import MUTANTS, PEFT_MUTANTS

_CI = PROFILES["ci"]


def _default_scenarios():
    return profile_scenarios(available(list(_CI.zoo) if _CI.zoo else None), [torch.float32])


def test_reference_passes_every_invariant():
    bad = [o for o in run_all(ReferenceBackend(), _default_scenarios()) if o.status in ("failed", "error")]
    assert not bad, "\n".join(f"{o.invariant} on {o.scenario}: {o.message}" for o in bad)


def _showing_first(mutant, scenarios: list) -> list:
    """The same scenarios, those the mutant names as showing its defect (`shown_by`) first."""
    assert set(mutant.shown_by) <= {s.id for s in scenarios}, f"{mutant.name}.shown_by names no scenario of the profile"
    return sorted(scenarios, key=lambda s: s.id not in mutant.shown_by)


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_default_profile_catches_mutant(mutant):
    outcomes = run_all(mutant(), _showing_first(mutant, _default_scenarios()), stop_on_failure=True)
    last = outcomes[-1]
    assert last.status in ("failed", "error"), f"{mutant.defect}: not caught by any invariant"
    print(
        f"{mutant.name}: caught by {last.invariant} on {last.scenario} after {last.elapsed:.2f}s: {last.message[:120]}"
    )


@pytest.mark.parametrize("mutant", PEFT_MUTANTS, ids=[m.name for m in PEFT_MUTANTS])
def test_default_profile_catches_peft_mutant(mutant):
    pytest.importorskip("peft")
    area = [s for s in _default_scenarios() if s.tuner is not None]
    assert area, "the default profile has no scenario in this mutant's area"
    outcomes = run_all(mutant(), area, stop_on_failure=True)
    last = outcomes[-1]
    assert last.status in ("failed", "error"), f"{mutant.defect}: not caught by any invariant"
    print(
        f"{mutant.name}: caught by {last.invariant} on {last.scenario} after {last.elapsed:.2f}s: {last.message[:120]}"
    )
