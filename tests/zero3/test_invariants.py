"""The ZeRO-3 invariants on two gloo ranks: they pass for peft, and they catch the wrong ways to save, merge
and export that users actually write."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip(
    "deepspeed", reason="DeepSpeed is not installed: DS_BUILD_OPS=0 pip install -c constraints.txt deepspeed"
)

from loraguard.run.distributed.launch import launch  # noqa: E402
from loraguard.zero3 import invariant_ids, run_suite  # noqa: E402

pytestmark = pytest.mark.zero3
SCENARIOS = Path(__file__).with_name("scenarios.py")


def scenario(name: str) -> str:
    return f"{SCENARIOS}:{name}"


def test_invariants_pass_for_peft_and_wrong_saves_merges_and_exports_are_caught(tmp_path):
    """One world (starting ranks is most of the cost): every invariant as `run_suite(2, "peft")` runs them, then
    three mutants, each failing alike on every rank, then run_suite called inside the ranks. The ungathered save
    is kept for the audit."""
    out = tmp_path / "ungathered"
    names = [
        "ungathered_save_checked",
        "merge_in_readonly_gather",
        "export_by_merging_in_place",
        "suite_in_existing_world",
    ]
    ids = invariant_ids()
    options = {"backend": "peft", "model": "mlp", "out": str(out)}  # run_suite's options, and the save's copy
    outcomes = launch(ids + [scenario(n) for n in names], 2, timeout=60, options=options)
    report = "\n".join(f"{o.invariant} {o.status}: {o.message}" for o in outcomes)
    assert [o.invariant for o in outcomes[: len(ids)]] == ids, report
    assert all(o.status == "passed" for o in outcomes[: len(ids)]), report
    mutants = outcomes[len(ids) :]
    by_name = {o.invariant.rpartition(":")[2]: o for o in mutants}
    assert [o.status for o in mutants] == ["failed", "failed", "failed", "passed"], report
    assert len({tuple(o.pids) for o in outcomes}) == 1  # failures every rank saw alike keep the world

    ungathered = by_name["ungathered_save_checked"]
    assert "tensor(s) have no elements" in ungathered.message and "un-gathered" in ungathered.message
    assert all(r.status == "failed" for r in ungathered.ranks)
    assert "merged weight of" in by_name["merge_in_readonly_gather"].message
    assert "training model parameters after export" in by_name["export_by_merging_in_place"].message

    from loraguard.audit.checkpoint import audit_paths

    result = audit_paths([str(out)])
    flagged = {f.key for f in result.findings if f.rule == "LG303"}
    assert flagged and all(k.startswith("base_model.model.") for k in flagged), result.findings


def test_run_suite_refuses_an_unknown_invariant_before_starting_ranks():
    with pytest.raises(ValueError, match="no-such"):
        run_suite(2, ids=["no-such"])
