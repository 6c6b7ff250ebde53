"""Task models built from transformers configs (classification, token classification, causal LM, seq2seq) on peft."""

import pytest
import torch

from loraguard.harness.zoo import ZOO, available
from loraguard.harness.zoo_scenarios import zoo_scenarios
from loraguard.invariants.registry import all_invariants
from loraguard.run.in_process import run_all

pytest.importorskip("peft")
pytest.importorskip("transformers")
from loraguard.backends.peft import PeftBackend  # noqa: E402

TASK_MODELS = [m.name for m in ZOO.values() if m.task_type is not None]


def test_zoo_covers_the_task_types_users_build():
    assert {ZOO[n].task_type for n in TASK_MODELS} >= {"SEQ_CLS", "TOKEN_CLS", "CAUSAL_LM", "SEQ_2_SEQ_LM"}


def test_peft_gives_every_adapter_its_own_head_through_adds_saves_and_switches():
    scenarios = zoo_scenarios(available(TASK_MODELS), [torch.float32])
    picked = [all_invariants()[i] for i in ("task-heads", "isolation", "roundtrip", "naming")]
    outcomes = run_all(PeftBackend(), scenarios, picked)
    bad = [f"{o.invariant}[{o.scenario}] {o.status}: {o.message}" for o in outcomes if o.status != "passed"]
    assert not bad, "\n".join(bad)
    assert len(outcomes) == len(picked) * len(TASK_MODELS)
