"""run_suite for FSDP refuses what it cannot run before starting ranks. The invariants themselves run on ranks
in tests/distributed/test_zero3_and_fsdp.py, in one world with the ZeRO-3 ones."""

from __future__ import annotations

import pytest

from loraguard.fsdp import run_suite


def test_run_suite_refuses_an_unknown_api_invariant_or_device():
    with pytest.raises(ValueError, match="fsdp3"):
        run_suite(2, api="fsdp3")
    with pytest.raises(ValueError, match="no-such"):
        run_suite(2, ids=["no-such"])
    with pytest.raises(ValueError, match="cuda:1"):
        run_suite(2, device="cuda:1")
