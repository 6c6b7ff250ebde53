"""Merging: the merged model computes what the unmerged one did, merged weights follow the formula, and merges undo."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from loraguard.backends.base import Backend
from loraguard.core.config import LoraConfig
from loraguard.core.merge_math import delta_weight, dora_merged_weight, with_token_rows
from loraguard.harness.scenarios import (
    OTHER,
    Scenario,
    expected_saved_modules,
    expected_targets,
    expected_tokens,
)
from loraguard.harness.zoo import run
from loraguard.invariants.checks import assert_close, assert_close_to_exact, assert_effect, assert_equal, expect
from loraguard.invariants.registry import Skipped, invariant
from loraguard.invariants.steps import Wrapped, magnitudes, token_rows, train_magnitudes, wrap


def exact_unmerged(wrapped: Wrapped, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    """The unmerged model's output recomputed in float64 (a copy taken now, before any merge), for arbitration.

    Only low-precision dtypes need it; where the model cannot be copied to float64 the plain bound decides.
    """
    unmerged = wrapped.out().double()  # now, before the merge: called later it would return the merged output
    if dtype not in (torch.bfloat16, torch.float16):
        return lambda: unmerged
    try:
        snapshot = copy.deepcopy(wrapped.model).double()
    except Exception:  # a backend whose model cannot be copied: no arbitration
        return lambda: unmerged

    def exact() -> torch.Tensor:
        with torch.no_grad():
            return run(snapshot, wrapped.inputs, torch.float64)

    return exact


def check_merged_weights(
    backend: Backend, wrapped: Wrapped, scenario: Scenario, adapters: list[tuple[str, LoraConfig]], when: str
) -> None:
    """Each merged base weight follows the formula from the backend's raw factors, `adapters` merged in order:
    ``W + s*B@A`` for LoRA, ``m / ||W0 + s*B@A|| * (W + s*B@A)`` for DoRA (W0 the unmerged weight), in float64."""
    for path, (kind, fifo) in wrapped.targets.items():
        unmerged = wrapped.base_weights[path].double()
        want = unmerged
        for name, config in adapters:
            factors = backend.lora_factors(wrapped.model, name)
            if path not in factors:
                continue
            a, b = (t.detach() for t in factors[path])
            experts = unmerged.shape[0] if kind == "experts" else 1  # a 3D parameter of target_parameters
            delta = delta_weight(a, b, config.scaling_for(path), kind, fifo, experts).double().to(want.device)
            if config.use_dora:
                magnitude = magnitudes(backend, wrapped.model, name)[path].detach().double().to(want.device)
                want = dora_merged_weight(want, unmerged, delta, magnitude, kind, fifo)
            else:
                want = want + delta
        formula = "m/||W+s*B@A|| * (W+s*B@A)" if any(c.use_dora for _, c in adapters) else "W + s*B@A"
        assert_close(
            backend.base_weight(wrapped.model, path),
            want.to(wrapped.base_weights[path].dtype),
            scenario.dtype,
            f"{when}: merged weight of '{path}' vs {formula}",
        )
    check_merged_tokens(backend, wrapped, scenario, [(n, c) for n, c in adapters if isinstance(c, LoraConfig)], when)


def check_merged_tokens(
    backend: Backend, wrapped: Wrapped, scenario: Scenario, adapters: list[tuple[str, LoraConfig]], when: str
) -> None:
    """An embedding with trainable tokens holds, merged, its unmerged weight with exactly the listed rows replaced by
    the adapters' trained values (bit for bit: a merge copies rows), and a module tied to it the very same weight."""
    want: dict[str, torch.Tensor] = {}
    for name, config in adapters:
        if config.trainable_token_indices is None:
            continue
        rows = wrapped.tokens if len(adapters) == 1 else expected_tokens(scenario, adapters, name)[0]
        values = token_rows(backend, wrapped.model, name)
        expect(
            set(values) == set(rows), f"{when}: adapter {name!r} trains rows of {sorted(values)}, not {sorted(rows)}"
        )
        for path, indices in rows.items():
            weight = want.get(path, wrapped.base_weights[path])
            want[path] = with_token_rows(weight, indices, values[path].detach().to(weight.device))
    for path, weight in want.items():
        assert_equal(
            backend.base_weight(wrapped.model, path),
            weight,
            f"{when}: weight of '{path}' vs its rows set to the tokens",
        )
    for tied, path in wrapped.tied.items():
        assert_equal(
            backend.base_weight(wrapped.model, tied),
            backend.base_weight(wrapped.model, path),
            f"{when}: weight of '{tied}' (tied to '{path}') vs the embedding's",
        )


@invariant(
    "merge-forward",
    "Merged output equals the unmerged forward, and each merged weight is W + s*B@A "
    "(DoRA: m/||W+s*B@A|| * (W+s*B@A), per output channel).",
)
def merge_equals_forward(backend: Backend, scenario: Scenario) -> None:
    wrapped = wrap(backend, scenario)
    out = wrapped.out()
    depth = len(wrapped.targets)
    assert_effect(out, wrapped.base_out, scenario.dtype, "adapter output vs base output")
    exact = exact_unmerged(wrapped, scenario.dtype)
    backend.merge(wrapped.model)
    check_merged_weights(backend, wrapped, scenario, [("default", scenario.config)], "after merge")
    assert_close_to_exact(wrapped.out(), out, exact, scenario.dtype, "merged output vs unmerged output", depth)


@invariant(
    "merge-unmerge",
    "Merging twice applies the delta once; unmerge restores W; disabling gives exactly the "
    "base output (where the backend can disable).",
    needs=("unmerge",),
)
def unmerge_restores(backend: Backend, scenario: Scenario) -> None:
    wrapped = wrap(backend, scenario)
    out = wrapped.out()
    assert_effect(out, wrapped.base_out, scenario.dtype, "adapter output vs base output")
    if "disable" in backend.capabilities:
        with backend.disabled(wrapped.model):
            assert_equal(wrapped.out(), wrapped.base_out, "output with adapters disabled vs base output")
    backend.merge(wrapped.model)
    backend.merge(wrapped.model)
    check_merged_weights(backend, wrapped, scenario, [("default", scenario.config)], "after merging twice")
    merged = {p: backend.base_weight(wrapped.model, p).detach().clone() for p in wrapped.weight_paths()}
    backend.unmerge(wrapped.model)
    for path in wrapped.weight_paths():
        assert_close(
            backend.base_weight(wrapped.model, path),
            wrapped.base_weights[path],
            scenario.dtype,
            f"weight of '{path}' after unmerge vs the original",
            via=merged[path],
        )
    assert_close(wrapped.out(), out, scenario.dtype, "output after merge+unmerge vs before", len(wrapped.targets))


@invariant(
    "multi-active",
    "With several adapters active, outputs add up: merging them all gives W + sum of s_i*B_i@A_i.",
    needs=("multi_adapter",),
    needs_second=True,
)
def multi_active_additive(backend: Backend, scenario: Scenario) -> None:
    second = scenario.second_config
    both = [("default", scenario.config), (OTHER, second)]
    shared = [p for p, names in expected_saved_modules(scenario, both).items() if len(names) > 1]
    if shared:
        raise Skipped(f"both adapters keep a copy of {shared}; such adapters cannot be active together")
    rows = set(expected_tokens(scenario, both, "default")[0]) & set(expected_tokens(scenario, both, OTHER)[0])
    if rows:
        raise Skipped(f"both adapters train rows of {sorted(rows)}; such adapters cannot be active together")
    wrapped = wrap(backend, scenario)
    backend.add_adapter(wrapped.model, OTHER, second)
    if second.use_dora:
        train_magnitudes(backend, wrapped.model, OTHER, scenario.seed + 1)
    backend.set_adapter(wrapped.model, ["default", OTHER])
    out = wrapped.out()
    exact = exact_unmerged(wrapped, scenario.dtype)
    wrapped.targets = {**expected_targets(scenario, adapters=both, adapter=OTHER), **wrapped.targets}
    other_rows, other_tied = expected_tokens(scenario, both, OTHER)
    wrapped.tokens, wrapped.tied = {**other_rows, **wrapped.tokens}, {**other_tied, **wrapped.tied}
    for path in wrapped.weight_paths():
        wrapped.base_weights.setdefault(path, backend.base_weight(wrapped.model, path).detach().clone())
    backend.merge(wrapped.model, ["default", OTHER])
    check_merged_weights(
        backend, wrapped, scenario, [("default", scenario.config), (OTHER, second)], "after merging both"
    )
    assert_close_to_exact(
        wrapped.out(),
        out,
        exact,
        scenario.dtype,
        "merged output vs output with both adapters active",
        len(wrapped.targets),
    )
