"""The per-process caches behind Scenario.base and the oracle's expectations: every caller gets its own copy, equal
to what building afresh gives, and the global random state is left as building leaves it."""

import torch

from loraguard.harness import scenarios as sc
from loraguard.harness.zoo import ZOO
from loraguard.harness.zoo_scenarios import zoo_scenarios


def _fresh(scenario: sc.Scenario) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    model = scenario.model.make(scenario.seed, scenario.dtype, scenario.device)
    return model.state_dict(), torch.get_rng_state()


def test_a_cached_base_is_a_fresh_copy_with_the_random_state_building_leaves() -> None:
    scenario = zoo_scenarios([ZOO["tied-embedding"]], [torch.bfloat16])[0]
    want, rng = _fresh(scenario)
    first = scenario.base()
    with torch.no_grad():
        first.wte.weight.add_(1.0)  # a check that trains or merges its copy
    torch.manual_seed(123)  # and draws random numbers
    second = scenario.base()
    assert second is not first
    assert torch.equal(torch.get_rng_state(), rng)
    assert second.state_dict().keys() == want.keys()
    assert all(torch.equal(second.state_dict()[k], v) for k, v in want.items())
    assert second.lm_head.weight is second.wte.weight  # ties survive the copy
    assert second.wte.weight.dtype == torch.bfloat16 and not second.training


def test_expectations_are_copies_a_caller_cannot_change_another_s() -> None:
    scenario = zoo_scenarios([ZOO["gpt2"]], [torch.float32])[0]
    targets = sc.expected_targets(scenario)
    keys = sc.expected_saved_keys(scenario, [("default", scenario.config)], "default")
    targets.clear()
    keys.clear()
    assert sc.expected_targets(scenario) and sc.expected_saved_keys(scenario, [("default", scenario.config)], "default")
    other = sc.expected_targets(scenario, scenario.second_config)
    assert set(other) != set(sc.expected_targets(scenario))  # keyed by the config: the second adapter's own targets


def test_a_cached_oracle_leaves_the_random_state_a_fresh_one_leaves() -> None:
    scenario = zoo_scenarios([ZOO["mlp"]], [torch.float32])[0]
    sc.oracle(scenario)  # what an uncached check did before the adapter it initialises next
    want = torch.get_rng_state()
    for _ in range(2):  # built and cached, then from the cache
        torch.manual_seed(5)
        assert sc.expected_targets(scenario)
        assert torch.equal(torch.get_rng_state(), want)
    saved = sc.expected_saved_modules(scenario)
    saved["head"].add("intruder")
    assert sc.expected_saved_modules(scenario) == {"head": {"default"}}
