"""Merging: the merged model computes what the unmerged one did, merged weights follow the formula, and merges undo."""

from __future__ import annotations

from loraguard.backends.base import Backend
from loraguard.invariants.checks import assert_close, assert_effect, assert_equal
from loraguard.invariants.registry import Skipped, invariant
from loraguard.invariants.steps import Wrapped, wrap
from loraguard.core.merge_math import delta_weight
from loraguard.harness.scenarios import OTHER, Scenario, expected_targets, oracle


def check_merged_weights(backend: Backend, w: Wrapped, scenario: Scenario, adapters: list[tuple[str, object]],
                         when: str) -> None:
    """Each merged base weight equals W + sum of s * B @ A over `adapters`, from the backend's raw factors."""
    for path, (kind, fifo) in w.targets.items():
        want = w.base_weights[path].double()
        for name, config in adapters:
            factors = backend.lora_factors(w.model, name)
            if path in factors:
                a, b = (t.detach() for t in factors[path])
                want = want + delta_weight(a, b, config.scaling_for(path), kind, fifo).double().to(want.device)
        assert_close(backend.base_weight(w.model, path), want.to(w.base_weights[path].dtype), scenario.dtype,
                     f"{when}: merged weight of '{path}' vs W + s*B@A")


@invariant("merge-forward", "Merged output equals the unmerged forward, and each merged weight is W + s*B@A.")
def merge_equals_forward(backend: Backend, scenario: Scenario) -> None:
    w = wrap(backend, scenario)
    out = w.out()
    depth = len(w.targets)
    assert_effect(out, w.base_out, scenario.dtype, "adapter output vs base output")
    backend.merge(w.model)
    check_merged_weights(backend, w, scenario, [("default", scenario.config)], "after merge")
    assert_close(w.out(), out, scenario.dtype, "merged output vs unmerged output", depth)


@invariant("merge-unmerge", "Merging twice applies the delta once; unmerge restores W; disabling gives exactly the "
           "base output (where the backend can disable).")
def unmerge_restores(backend: Backend, scenario: Scenario) -> None:
    w = wrap(backend, scenario)
    out = w.out()
    assert_effect(out, w.base_out, scenario.dtype, "adapter output vs base output")
    if "disable" in backend.capabilities:
        with backend.disabled(w.model):
            assert_equal(w.out(), w.base_out, "output with adapters disabled vs base output")
    backend.merge(w.model)
    backend.merge(w.model)
    check_merged_weights(backend, w, scenario, [("default", scenario.config)], "after merging twice")
    merged = {p: backend.base_weight(w.model, p).detach().clone() for p in w.targets}
    backend.unmerge(w.model)
    for path in w.targets:
        assert_close(backend.base_weight(w.model, path), w.base_weights[path], scenario.dtype,
                     f"weight of '{path}' after unmerge vs the original", via=merged[path])
    assert_close(w.out(), out, scenario.dtype, "output after merge+unmerge vs before", len(w.targets))


@invariant("multi-active", "With several adapters active, outputs add up: merging them all gives W + sum of s_i*B_i@A_i.",
           needs=("multi_adapter",), needs_second=True)
def multi_active_additive(backend: Backend, scenario: Scenario) -> None:
    second = scenario.second
    both = [("default", scenario.config), (OTHER, second)]
    shared = [p for p, m in oracle(scenario, both).saved_modules().items() if len(m.modules_to_save) > 1]
    if shared:
        raise Skipped(f"both adapters keep a copy of {shared}; such adapters cannot be active together")
    w = wrap(backend, scenario)
    backend.add_adapter(w.model, OTHER, second)
    backend.set_adapter(w.model, ["default", OTHER])
    out = w.out()
    w.targets = {**expected_targets(scenario, adapters=both, adapter=OTHER), **w.targets}
    for path in w.targets:
        w.base_weights.setdefault(path, backend.base_weight(w.model, path).detach().clone())
    backend.merge(w.model, ["default", OTHER])
    check_merged_weights(backend, w, scenario, [("default", scenario.config), (OTHER, second)], "after merging both")
    assert_close(w.out(), out, scenario.dtype, "merged output vs output with both adapters active", len(w.targets))
