"""torchtune as a backend: the suite runs on it (failing only where torchtune is known to be wrong), and it
catches a defect injected into torchtune's own merge."""

import pytest
import torch

pytest.importorskip("torchtune")

from loraguard.backends import load_backend  # noqa: E402
from loraguard.harness.known_failures import read_known_failures  # noqa: E402
from loraguard.harness.zoo import ZOO  # noqa: E402
from loraguard.harness.zoo_scenarios import profile_scenarios, zoo_scenarios  # noqa: E402
from loraguard.invariants.registry import all_invariants  # noqa: E402
from loraguard.run.in_process import run_all  # noqa: E402
from tests.backends.helpers import KNOWN_FAILURES  # noqa: E402

#: Invariants torchtune's abilities allow: on the mlp each must run, not skip.
RUNS = {
    "merge-forward",
    "dtype",
    "mixed-export",
    "rewrap",
    "naming",
    "roundtrip",
    "continue-training",
    "unmatched-target",
}


def test_suite_runs_and_fails_only_where_torchtune_is_known_wrong():
    backend = load_backend("torchtune")
    known = read_known_failures(KNOWN_FAILURES / "torchtune.txt", {"torchtune": backend.version()})
    outcomes = run_all(backend, profile_scenarios([ZOO["mlp"]], [torch.float32]))  # with mlp-dora
    for o in outcomes:
        listed = any(k.matches(f"{o.invariant}[torchtune-{o.scenario}]") for k in known)
        assert (o.status in ("failed", "error")) == listed, (o.invariant, o.scenario, o.status, o.message)
    assert RUNS <= {o.invariant for o in outcomes if o.status != "skipped"}
    assert all(o.message for o in outcomes if o.status == "skipped")


def test_a_defect_in_torchtunes_merge_is_caught(monkeypatch):
    """get_merged_lora_ckpt that forgets alpha / rank (merges B @ A unscaled): merge-forward must fail."""
    import torchtune.modules.peft as peft

    real = peft.get_merged_lora_ckpt
    monkeypatch.setattr(peft, "get_merged_lora_ckpt", lambda state, rank, alpha: real(state, rank=rank, alpha=rank))
    scenario = zoo_scenarios([ZOO["mlp"]], [torch.float32])[0]
    [outcome] = run_all(load_backend("torchtune"), [scenario], [all_invariants()["merge-forward"]])
    assert outcome.status == "failed" and "vs W + s*B@A" in outcome.message, outcome
