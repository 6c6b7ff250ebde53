"""The ZeRO-3 and FSDP invariants in one world of two gloo ranks (starting ranks, each importing peft, is most of
the cost: one world instead of two saves about 17 CPU s): every invariant of both kinds passes for peft, under FSDP2
and FSDP1; each kind's mutants (wrong ways users save, merge and export) fail alike on every rank and keep the
world; run_suite works inside ranks already launched; the audit flags each un-gathered save the ranks wrote."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from loraguard import fsdp, zero3
from loraguard.audit.checkpoint import audit_paths
from loraguard.run.distributed.launch import launch
from loraguard.run.outcome import Outcome
from tests.fsdp.scenarios import FSDP1

pytestmark = [pytest.mark.zero3, pytest.mark.fsdp]
TESTS = Path(__file__).resolve().parents[1]
ZERO3_MUTANTS = ["ungathered_save_checked", "merge_in_readonly_gather", "export_by_merging_in_place"]
FSDP_MUTANTS = ["save_local_shards", "merge_into_gathered_copy", "export_by_merging_in_place"]
#: what each mutant's failure must say
MESSAGES = {
    "ungathered_save_checked": "tensor(s) have no elements",
    "merge_in_readonly_gather": "merged weight of",
    "save_local_shards": "shape (2, 8) != expected (4, 8)",
    "merge_into_gathered_copy": "merged weight of",
    "export_by_merging_in_place": "training model parameters after export",
}
#: the audit rule each un-gathered save of the FSDP ranks (scenarios.ungathered_saves) must raise
FSDP_AUDIT = {"local-shards": "LG603", "dtensor-pickle": "LG601", "flat-shards": "LG602", "dcp": "LG605"}


def _scenarios(area: str, names: list[str]) -> list[str]:
    return [f"{TESTS / area / 'scenarios.py'}:{n}" for n in names]


def test_both_kinds_pass_for_peft_and_their_mutants_fail_in_one_world(tmp_path: Path) -> None:
    with_zero3 = importlib.util.find_spec("deepspeed") is not None
    zero3_part = zero3.invariant_ids() + _scenarios("zero3", [*ZERO3_MUTANTS, "suite_in_existing_world"])
    fsdp_part = fsdp.invariant_ids() + _scenarios(
        "fsdp", [*FSDP1, *FSDP_MUTANTS, "ungathered_saves", "suite_in_existing_world"]
    )
    names = (zero3_part if with_zero3 else []) + fsdp_part
    outcomes = launch(names, 2, timeout=60, options={"backend": "peft", "model": "mlp", "out": str(tmp_path)})
    report = "\n".join(f"{o.invariant} {o.status}: {o.message}" for o in outcomes)
    assert [o.invariant for o in outcomes] == names, report
    assert len({o.pids for o in outcomes}) == 1, report  # failures every rank saw alike keep the world
    _check(outcomes[len(names) - len(fsdp_part) :], FSDP_MUTANTS, report)
    for save, rule in FSDP_AUDIT.items():
        findings = audit_paths([str(tmp_path / save)]).findings
        assert rule in {f.rule for f in findings}, (save, findings)
    if not with_zero3:
        pytest.skip("DeepSpeed is not installed (DS_BUILD_OPS=0 pip install -c constraints.txt deepspeed): FSDP only")
    _check(outcomes[: len(zero3_part)], ZERO3_MUTANTS, report)
    ungathered = next(o for o in outcomes if o.invariant.endswith(":ungathered_save_checked"))
    assert "un-gathered" in ungathered.message and all(r.status == "failed" for r in ungathered.ranks)
    flagged = {f.key for f in audit_paths([str(tmp_path / "ungathered")]).findings if f.rule == "LG303"}
    assert flagged and all(k.startswith("base_model.model.") for k in flagged), flagged


def _check(outcomes: list[Outcome], mutants: list[str], report: str) -> None:
    """Every scenario of one kind passed but its mutants, which failed saying what went wrong."""
    by_name = {o.invariant.rpartition(":")[2]: o for o in outcomes}
    assert [by_name[m].status for m in mutants] == ["failed"] * len(mutants), report
    assert all(o.status == "passed" for name, o in by_name.items() if name not in mutants), report
    for mutant in mutants:
        assert MESSAGES[mutant] in by_name[mutant].message, report
