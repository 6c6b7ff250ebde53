"""Weighted combination of adapters: merging the combination adds exactly sum_i w_i * s_i * B_i @ A_i."""

from __future__ import annotations

from loraguard.backends.base import Backend
from loraguard.core.merge_math import delta_weight
from loraguard.harness.scenarios import OTHER, Scenario
from loraguard.invariants.checks import assert_close
from loraguard.invariants.registry import Skipped, invariant
from loraguard.invariants.steps import wrap

WEIGHTS = (0.7, 0.4)


@invariant(
    "weighted-combination",
    "A weighted combination of adapters, merged, adds exactly sum_i w_i*s_i*B_i@A_i to each weight it touches.",
    needs=("weighted_combination", "multi_adapter"),
    needs_second=True,
)
def weighted_combination(backend: Backend, scenario: Scenario) -> None:
    if scenario.config.use_dora or scenario.second.use_dora:
        raise Skipped("a weighted combination of DoRA adapters has no formula: their magnitudes do not combine")
    wrapped = wrap(backend, scenario)
    backend.add_adapter(wrapped.model, OTHER, scenario.second)
    adapters = [("default", scenario.config), (OTHER, scenario.second)]
    factors = {
        name: {p: tuple(t.detach().clone() for t in ab) for p, ab in backend.lora_factors(wrapped.model, name).items()}
        for name, _ in adapters
    }
    backend.add_weighted_adapter(wrapped.model, [a for a, _ in adapters], list(WEIGHTS), "combined")
    backend.set_adapter(wrapped.model, ["combined"])
    backend.merge(wrapped.model, ["combined"])
    for path, (kind, fifo) in wrapped.targets.items():
        want = wrapped.base_weights[path].double()
        for weight, (name, config) in zip(WEIGHTS, adapters):
            if path in factors[name]:
                a, b = factors[name][path]
                want = want + weight * delta_weight(a, b, config.scaling_for(path), kind, fifo).double()
        assert_close(
            backend.base_weight(wrapped.model, path),
            want.to(wrapped.base_weights[path].dtype),
            scenario.dtype,
            f"weight of '{path}' after merging the combination {dict(zip([a for a, _ in adapters], WEIGHTS))}",
        )
