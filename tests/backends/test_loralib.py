"""loralib as a backend: the suite passes or skips with reasons, and it would catch a wrong loralib merge."""

import pytest
import torch

pytest.importorskip("loralib")

from loraguard.backends import load_backend  # noqa: E402
from loraguard.backends.loralib import LoralibBackend  # noqa: E402
from loraguard.harness.known_failures import read_known_failures  # noqa: E402
from loraguard.harness.scenarios import without_modules_to_save  # noqa: E402
from loraguard.harness.zoo import ZOO, available  # noqa: E402
from loraguard.harness.zoo_scenarios import zoo_scenarios
from loraguard.invariants.registry import all_invariants  # noqa: E402
from loraguard.run.in_process import run_all  # noqa: E402
from tests.backends.helpers import KNOWN_FAILURES  # noqa: E402

#: Invariants that need no capability beyond loralib's: they must run, not skip, on every model loralib adapts.
RUNS = {"merge-forward", "dtype", "mixed-export", "rewrap", "naming"}
#: loralib merges into a weight tied to another module in place (reproducers/loralib/tied_embedding_merge.py).
TIED_BUG = {("merge-forward", "tied-embedding-r4-f32"), ("mixed-export", "tied-embedding-r4-f32")}


@pytest.fixture(scope="module")
def outcomes():
    return run_all(load_backend("loralib"), zoo_scenarios(available(), [torch.float32]))


def test_suite_fails_only_where_loralib_is_known_wrong_and_skips_with_a_reason(outcomes):
    """What fails is what loraguard/known_failures/loralib.txt lists (so `pytest --loraguard` is green on loralib's
    known bugs), and every entry there still fails."""
    known = read_known_failures(KNOWN_FAILURES / "loralib.txt", {"loralib": LoralibBackend().version()})
    for o in outcomes:
        listed = any(k.matches(f"{o.invariant}[loralib-{o.scenario}]") for k in known)
        assert (o.status in ("failed", "error")) == listed, (o.invariant, o.scenario, o.status, o.message)
    assert all(o.message for o in outcomes if o.status == "skipped")


def test_loralib_merge_into_a_tied_embedding_is_caught(outcomes):
    """The merged model's tied lm_head changes too; this fails (and TIED_BUG goes) the day loralib unties on merge."""
    failed = {(o.invariant, o.scenario) for o in outcomes if o.status == "failed"}
    assert failed >= TIED_BUG


def test_declared_layers_are_exercised(outcomes):
    """Linear (mlp, nested, llama), Embedding and GPT-2 Conv1D are really checked; conv models skip for 'conv', the
    MoE model for 'target_parameters'."""
    passed = {(o.invariant, o.scenario) for o in outcomes if o.status == "passed"}
    for name in set(ZOO) & {m.name for m in available() if m.task_type is None}:  # task models need task_type
        if name in ("convnet", "moe"):
            reasons = {o.message for o in outcomes if o.scenario == f"{name}-r4-f32"}
            assert all(("conv" if name == "convnet" else "target_parameters") in r for r in reasons), reasons
        else:
            assert {(inv, f"{name}-r4-f32") for inv in RUNS} - TIED_BUG <= passed, name


class _ScalingOne(LoralibBackend):
    """loralib layers whose scaling is 1 instead of alpha / r.

    Forward and merge agree with each other, not with the formula.
    """

    name = "loralib-scaling-one"

    def wrap(self, base, config, adapter="default"):
        model = super().wrap(base, config, adapter)
        for layer in self._layers(model).values():
            layer.scaling = 1.0
        return model


def test_a_loralib_layer_with_the_wrong_scaling_is_caught():
    scenario = zoo_scenarios([ZOO["mlp"]], [torch.float32])[0]
    [outcome] = run_all(_ScalingOne(), [scenario], [all_invariants()["merge-forward"]])
    assert outcome.status == "failed" and "vs W + s*B@A" in outcome.message, outcome


def test_merge_and_unload_gives_back_plain_torch_layers():
    import loralib
    from transformers.pytorch_utils import Conv1D

    scenario = without_modules_to_save(zoo_scenarios([ZOO["gpt2"]], [torch.float32])[0])
    backend = LoralibBackend()
    model = backend.wrap(scenario.base(), scenario.config)
    assert set(backend.lora_factors(model, "default")), "nothing was adapted"
    plain = backend.merge_and_unload(model)
    assert not [n for n, m in plain.named_modules() if isinstance(m, loralib.LoRALayer)]
    assert type(plain.get_submodule("transformer.h.0.attn.c_attn")) is Conv1D
