"""The operation-sequence machine passes the reference and catches mutants, each shrunk to a short sequence."""

import pytest
import torch
from hypothesis import HealthCheck, settings

from loraguard.backends.reference import ReferenceBackend
from loraguard.invariants.checks import InvariantViolation
from loraguard.invariants.sequences import STEPS, run_sequences
from tests.mutants import DoubleMerge, ScalingDroppedAtMerge, SharedModulesToSave

SEED = 1
SETTINGS = settings(
    max_examples=40, stateful_step_count=STEPS, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
DTYPES = (torch.float32, torch.bfloat16)


def test_reference_passes():
    run_sequences(ReferenceBackend(), DTYPES, settings=SETTINGS, seed=SEED)


@pytest.mark.parametrize("mutant", [DoubleMerge, SharedModulesToSave, ScalingDroppedAtMerge], ids=lambda m: m.name)
def test_mutant_fails_with_a_short_sequence(mutant):
    with pytest.raises(InvariantViolation) as caught:
        run_sequences(mutant(), DTYPES, settings=SETTINGS, seed=SEED)
    if "explicit sequences fail" in str(caught.value):
        return  # caught by a replayed explicit sequence (sequence_examples.py): short by construction
    printed = "\n".join(getattr(caught.value, "__notes__", []))
    steps = [
        line
        for line in printed.splitlines()
        if line.startswith(("state.", "adapters_"))
        and not line.startswith(("state.agrees_with_oracle", "state.teardown"))
    ]
    assert 1 <= len(steps) <= 4, f"{mutant.defect}: the failure did not shrink to a short sequence:\n{printed}"


def test_explicit_sequences_replay_on_the_reference():
    from loraguard.invariants.sequence_machine import sequence_machine
    from loraguard.invariants.sequences import EXAMPLES, replay

    backend = ReferenceBackend()
    machine = sequence_machine(backend, DTYPES)
    for example in EXAMPLES:
        replay(machine, example, backend)
