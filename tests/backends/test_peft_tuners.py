"""peft's other tuners (LoHa, LoKr, IA3, OFT, AdaLoRA) through the invariants that need no oracle, in three dtypes
(on the MLP, on GPT-2's transposed Conv1D and on Llama)."""

import pytest
import torch

from loraguard.backends.base import Unsupported
from loraguard.backends.reference import ReferenceBackend
from loraguard.core.tuners import TunerConfig
from loraguard.harness.zoo import available
from loraguard.harness.zoo_scenarios import TUNERS, zoo_scenarios
from loraguard.invariants.registry import ORACLE_FREE, all_invariants
from loraguard.run.in_process import run_all

pytest.importorskip("peft")
from loraguard.backends.peft import PeftBackend  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _tuner_scenarios():
    return [s for s in zoo_scenarios(available(sorted({m for m, _, _ in TUNERS})), DTYPES) if s.tuner is not None]


def test_peft_keeps_every_oracle_free_promise_on_every_tuner():
    all_invariants()
    outcomes = run_all(PeftBackend(), _tuner_scenarios(), [all_invariants()[i] for i in ORACLE_FREE])
    bad = [f"{o.invariant}[{o.scenario}] {o.status}: {o.message}" for o in outcomes if o.status != "passed"]
    assert not bad, "\n".join(bad)  # a skip here would be an effect too weak to judge: the scenario needs fixing
    kinds = {s.tuner.kind for s in _tuner_scenarios()}
    assert {"loha", "lokr", "ia3"} <= kinds
    assert len(outcomes) == len(ORACLE_FREE) * len(_tuner_scenarios())


def test_invariants_that_need_the_oracle_skip_tuners_with_a_reason():
    scenario = _tuner_scenarios()[0]
    invariants = list(all_invariants("scenario").values())
    outcomes = {o.invariant: o for o in run_all(PeftBackend(), [scenario], [i for i in invariants if i.needs_oracle])}
    assert outcomes and all(o.status == "skipped" and "needs the oracle" in o.message for o in outcomes.values())
    ref = run_all(ReferenceBackend(), [scenario])
    assert all(o.status == "skipped" and scenario.tuner.kind in o.message for o in ref)


def test_tuner_config_refuses_unknown_kind_and_fields_by_name():
    with pytest.raises(ValueError, match="'kind': unknown tuner 'lorra'"):
        TunerConfig("lorra", ["fc1"])
    with pytest.raises(ValueError, match="'options'"):
        TunerConfig("loha", ["fc1"], options={"target_modules": ["fc2"]})
    with pytest.raises(Unsupported, match="no LoHaConfig field"):
        PeftBackend().peft_config(TunerConfig("loha", ["fc1"], options={"no_such_field": 1}))
