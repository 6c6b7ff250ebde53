"""AdapterHub adapters as a backend: the suite runs on the transformers models it wraps (failing only where adapters
is known to be wrong), plain models skip with the reason, and a defect injected into its merge is caught."""

import pytest
import torch

pytest.importorskip("adapters")

from loraguard.backends import load_backend  # noqa: E402
from loraguard.harness.known_failures import read_known_failures  # noqa: E402
from loraguard.harness.zoo import ZOO  # noqa: E402
from loraguard.harness.zoo_scenarios import zoo_scenarios  # noqa: E402
from loraguard.invariants.registry import all_invariants  # noqa: E402
from loraguard.run.in_process import run_all  # noqa: E402
from tests.backends.helpers import KNOWN_FAILURES  # noqa: E402

#: Invariants adapters' abilities allow: on the bert each must run, not skip.
RUNS = {"merge-forward", "merge-unmerge", "isolation", "dtype", "mixed-export", "roundtrip", "continue-training"}


def test_suite_runs_on_bert_and_skips_plain_models():
    backend = load_backend("adapters")
    known = read_known_failures(KNOWN_FAILURES / "adapters.txt", {"adapters": backend.version()})
    outcomes = run_all(backend, zoo_scenarios([ZOO["bert"], ZOO["mlp"]], [torch.float32]))
    for o in outcomes:
        listed = any(k.matches(f"{o.invariant}[adapters-{o.scenario}]") for k in known)
        assert (o.status in ("failed", "error")) == listed, (o.invariant, o.scenario, o.status, o.message)
    assert RUNS <= {o.invariant for o in outcomes if o.scenario.startswith("bert") and o.status != "skipped"}
    assert all(o.status == "skipped" for o in outcomes if o.scenario.startswith("mlp"))
    plain = {o.message for o in outcomes if o.scenario == "mlp-r4-f32"}
    assert plain == {"backend 'adapters' wraps only transformers models; 'mlp' is a plain model"}, plain


def test_a_defect_in_adapters_merge_is_caught(monkeypatch):
    """LoRA.com (adapters' W + s * delta, used by merge_adapter) that drops the scaling: merge-forward must fail."""
    from adapters.methods.lora import LoRA

    monkeypatch.setattr(LoRA, "com", lambda self, weights, added, scaling=None: weights + added)
    scenario = zoo_scenarios([ZOO["bert"]], [torch.float32])[0]
    [outcome] = run_all(load_backend("adapters"), [scenario], [all_invariants()["merge-forward"]])
    assert outcome.status == "failed" and "vs W + s*B@A" in outcome.message, outcome
