"""run_suite for ZeRO-3 refuses what it cannot run before starting ranks. The invariants themselves run on
ranks in tests/distributed/test_zero3_and_fsdp.py, in one world with the FSDP ones."""

from __future__ import annotations

import pytest

from loraguard.zero3 import run_suite


def test_run_suite_refuses_an_unknown_invariant_before_starting_ranks():
    with pytest.raises(ValueError, match="no-such"):
        run_suite(2, ids=["no-such"])
