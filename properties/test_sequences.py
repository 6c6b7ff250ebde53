"""Sequences of adapter operations: the backend and the reference, step by step, as a Hypothesis state machine."""

import pytest

from loraguard.invariants.sequences import ID, run_sequences


@pytest.mark.loraguard(ID)
def test_op_sequence_drawn(lg_backend, lg_settings):
    run_sequences(lg_backend, tuple(lg_settings.dtypes), lg_settings.device)
