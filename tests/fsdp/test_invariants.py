"""The FSDP invariants on two gloo ranks, in one world (starting ranks is most of the cost): they pass for peft
under FSDP2 and FSDP1, run_suite works inside ranks already launched, they catch a save of local shards, a merge
into a gathered copy and an export merged in place, and the audit flags each un-gathered save the ranks wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from loraguard.fsdp import invariant_ids, run_suite
from loraguard.run.distributed.launch import launch
from tests.fsdp.scenarios import FSDP1

pytestmark = pytest.mark.fsdp
SCENARIOS = Path(__file__).with_name("scenarios.py")
MUTANTS = ["save_local_shards", "merge_into_gathered_copy", "export_by_merging_in_place"]
#: Rules the audit must raise on each un-gathered save the ranks wrote (see scenarios.ungathered_saves).
AUDIT = {
    "local-shards": "LG603",
    "dtensor-pickle": "LG601",
    "flat-shards": "LG602",
    "dcp": "LG605",
}


def test_invariants_pass_under_fsdp2_and_fsdp1_and_mutants_fail(tmp_path):
    names = invariant_ids() + [
        f"{SCENARIOS}:{n}" for n in [*FSDP1, *MUTANTS, "ungathered_saves", "suite_in_existing_world"]
    ]
    outcomes = launch(names, 2, timeout=60, options={"backend": "peft", "out": str(tmp_path)})
    status = {o.invariant.rpartition(":")[2]: o for o in outcomes}
    report = "\n".join(f"{o.invariant} {o.status}: {o.message}" for o in outcomes)
    assert [o.invariant for o in outcomes] == names, report
    assert all(
        status[n].status == "passed" for n in [*invariant_ids(), *FSDP1, "ungathered_saves", "suite_in_existing_world"]
    ), report
    assert [status[n].status for n in MUTANTS] == ["failed"] * 3, report
    assert len({o.pids for o in outcomes}) == 1, report  # failures every rank saw alike keep the world

    assert "shape (2, 8) != expected (4, 8)" in status["save_local_shards"].message
    assert "merged weight of" in status["merge_into_gathered_copy"].message
    assert "training model parameters after export" in status["export_by_merging_in_place"].message

    from loraguard.audit.checkpoint import audit_paths

    for name, rule in AUDIT.items():
        findings = audit_paths([str(tmp_path / name)]).findings
        assert rule in {f.rule for f in findings}, (name, findings)


def test_run_suite_refuses_an_unknown_api_invariant_or_device():
    with pytest.raises(ValueError, match="fsdp3"):
        run_suite(2, api="fsdp3")
    with pytest.raises(ValueError, match="no-such"):
        run_suite(2, ids=["no-such"])
    with pytest.raises(ValueError, match="cuda:1"):
        run_suite(2, device="cuda:1")
