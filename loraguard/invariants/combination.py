"""Weighted combination of adapters over its whole domain: every combination_type, any real weights, different
ranks, rsLoRA; the merged combination is checked against the explicit formula (loraguard/core/combine_math.py).

What depends on random draws (DARE with density < 1) or on a near-tie that rounding may break is not judged.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from loraguard.backends.base import Backend, Unsupported, optional_methods
from loraguard.core import combine_math as cm
from loraguard.core.config import LoraConfig
from loraguard.core.merge_math import LayerKind, delta_weight
from loraguard.core.tolerance import bound, tolerance
from loraguard.harness.combinations import Combination, combinations
from loraguard.harness.scenarios import OTHER, Scenario
from loraguard.invariants.checks import Inconclusive, assert_close, expect
from loraguard.invariants.registry import Skipped, invariant
from loraguard.invariants.steps import Wrapped, wrap

#: A third adapter with the first one's rank, so the types that need equal ranks are judged on every scenario.
SAME_RANK = "same_rank"

Factors = dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]


@invariant(
    "weighted-combination",
    "Every combination_type of add_weighted_adapter, with any real weights and ranks, merges to its explicit "
    "formula (cat: exactly sum_i w_i*s_i*B_i@A_i; svd: the best rank-k approximation); unequal ranks are refused "
    "where the type needs equal ones.",
    needs=("weighted_combination", "multi_adapter"),
    needs_second=True,
)
def weighted_combination(backend: Backend, scenario: Scenario) -> None:
    second = scenario.second_config
    if scenario.config.use_dora or second.use_dora:
        raise Skipped("a weighted combination of DoRA adapters has no formula: their magnitudes do not combine")
    if scenario.config.target_parameters or second.target_parameters:
        raise Skipped("adapters with target_parameters are not combined (peft 0.21 and the reference refuse them)")
    wrapped = wrap(backend, scenario)
    same = dataclasses.replace(
        second, r=scenario.config.r, rank_pattern=dict(scenario.config.rank_pattern), modules_to_save=None
    )
    configs = {"default": scenario.config, OTHER: second, SAME_RANK: same}
    backend.add_adapter(wrapped.model, OTHER, second)
    backend.add_adapter(wrapped.model, SAME_RANK, same)
    factors: Factors = {
        name: {
            p: (a.detach().double(), b.detach().double())
            for p, (a, b) in backend.lora_factors(wrapped.model, name).items()
        }
        for name in configs
    }
    judged: list[str] = []
    for combo in combinations(scenario.seed):
        partner = SAME_RANK if combo.equal_ranks else OTHER
        if _judge(backend, wrapped, combo, ["default", partner], configs, factors, scenario.dtype):
            judged.append(combo.combination_type)
    if combo_unequal := _unequal(configs):
        _refusal(backend, wrapped.model, combo_unequal)
    if not judged:
        raise Inconclusive("no combination of this scenario could be judged (see the skip reasons above)")


def _judge(
    backend: Backend,
    wrapped: Wrapped,
    combo: Combination,
    adapters: list[str],
    configs: dict[str, LoraConfig],
    factors: Factors,
    dtype: torch.dtype,
) -> bool:
    """Combine, merge, compare each touched weight with the formula; False where this case cannot be judged."""
    name = f"combined_{combo.combination_type}"
    try:
        optional_methods(backend).add_weighted_adapter(
            wrapped.model,
            adapters,
            list(combo.weights),
            name,
            combination_type=combo.combination_type,
            svd_rank=combo.svd_rank,
            density=combo.density,
            majority_sign_method=combo.majority_sign_method,
        )
    except Unsupported:
        return False
    except Exception as err:  # noqa: BLE001 - the reference combines these adapters: a crash is the library's
        expect(False, f"add_weighted_adapter({adapters}, {combo}) raised {type(err).__name__}: {str(err)[:200]}")
    what = f"add_weighted_adapter({adapters}, weights={list(combo.weights)}, {combo})"
    want_paths = set().union(*(factors[a] for a in adapters))
    got = backend.lora_factors(wrapped.model, name)
    expect(
        set(got) == want_paths,
        f"{what}: the combination covers {sorted(got)}, but the adapters adapt {sorted(want_paths)} "
        f"(left out: {sorted(want_paths - set(got))})",
    )
    ranks = [max([configs[a].r, *configs[a].rank_pattern.values()]) for a in adapters]
    rank = cm.new_rank(combo.combination_type, ranks, combo.svd_rank)
    paths = sorted(want_paths)
    before = {p: backend.base_weight(wrapped.model, p).detach().clone() for p in paths}
    backend.merge(wrapped.model, [name])
    after = {p: backend.base_weight(wrapped.model, p).detach().clone() for p in paths}
    backend.unmerge(wrapped.model)
    judged = True
    for path in paths:
        kind, fifo = wrapped.targets.get(path) or _kind_of(wrapped, path)
        inputs = [
            (factors[a][path], configs[a].scaling_for(path), w)
            for a, w in zip(adapters, combo.weights)
            if path in factors[a]
        ]
        judged &= _check_path(combo, inputs, kind, fifo, rank, before[path], after[path], dtype, f"{what}: '{path}'")
    if "delete_adapter" in backend.capabilities:
        optional_methods(backend).delete_adapter(wrapped.model, name)
    return judged


def _check_path(
    combo: Combination,
    inputs: list[tuple[tuple[torch.Tensor, torch.Tensor], float, float]],
    kind: LayerKind,
    fifo: bool,
    rank: int,
    before: torch.Tensor,
    after: torch.Tensor,
    dtype: torch.dtype,
    what: str,
) -> bool:
    """One module's merged weight against the formula; False if the case cannot be decided here."""
    ctype, weights = combo.combination_type, [w for _, _, w in inputs]
    if ctype in cm.RANDOM and combo.density < 1:
        expect(bool(torch.isfinite(after).all()), f"{what}: merged weight has NaN or Inf")
        return False  # DARE's Bernoulli pruning: the values depend on the library's random draws
    if not cm.is_svd(ctype):
        factors = [(a, b, s) for (a, b), s, _ in inputs]
        if not _decidable(combo, [[a for a, _, _ in factors], [b for _, b, _ in factors]], bound(after, torch.float32)):
            return False
        a, b = cm.combined_factors(ctype, factors, weights, combo.density, combo.majority_sign_method)
        want = before.double() + delta_weight(a, b, 1.0, kind, fifo)
        assert_close(after, want.to(before.dtype), dtype, f"{what}: merged weight vs the formula", depth=2)
        return True
    deltas = [_as_ba(delta_weight(a, b, s, kind, fifo), kind, fifo) for (a, b), s, _ in inputs]
    # the library computes these deltas in float32 or its dtype: a pruning or sign decision within that error
    # could go either way
    if not _decidable(combo, [deltas], bound(torch.stack(deltas), torch.float32), exact_values=False):
        return False
    target = cm.combined_delta_target(ctype, deltas, weights, combo.density, combo.majority_sign_method)
    got = _as_ba(after.double() - before.double(), kind, fifo)
    best = cm.optimal_residual(target, rank)
    residual = (cm.as_matrix(got) - cm.as_matrix(target)).norm().item()
    slack = bound(after, dtype, 2) * math.sqrt(got.numel()) + tolerance(dtype).rel * cm.as_matrix(target).norm().item()
    expect(
        residual <= best + slack,
        f"{what}: the merged delta is {residual:.4g} away from the weighted target; the best rank-{rank} "
        f"approximation is {best:.4g} away (allowed {slack:.2g} more)",
    )
    return True


def _decidable(combo: Combination, groups: list[list[torch.Tensor]], err: float, exact_values: bool = True) -> bool:
    """No pruning cut and no majority-sign vote within rounding error `err` of a tie (else rounding decides).

    `groups` are the tensors merged together; `exact_values`: they are the library's own values (raw factors), so
    only exact ties in magnitude are ambiguous, not near ones.
    """
    kind = cm.task_merge_kind(combo.combination_type)
    cut = 0.0 if exact_values else err
    for group in groups:
        if kind in ("ties", "magnitude_prune"):
            if any(cm.pruning_margin(t, combo.density) <= cut for t in group):
                return False
            group = [cm.prune_magnitude(t, combo.density) for t in group]
        if kind in ("ties", "dare_ties") and combo.majority_sign_method == "total" and len(group) > 1:
            stacked = torch.stack(group)
            votes = stacked.sum(0)[stacked.abs().amax(0) > 0]  # all-zero entries add nothing whatever the vote
            if votes.numel() and votes.abs().min().item() <= err:
                return False
    return True


def _as_ba(delta: torch.Tensor, kind: LayerKind, fifo: bool) -> torch.Tensor:
    """A delta in ``B @ A`` layout (embeddings and fan_in_fan_out layers store it transposed)."""
    return delta.T if kind == "embedding" or fifo else delta


def _kind_of(wrapped: Wrapped, path: str) -> tuple[LayerKind, bool]:
    from loraguard.harness.scenarios import layer_kind

    module = wrapped.base.get_submodule(path)
    return layer_kind(getattr(module, "base_layer", module))  # the module is wrapped by now


def _unequal(configs: dict[str, LoraConfig]) -> list[str] | None:
    """Two adapters whose ranks differ, if the scenario has them (a type needing equal ranks must refuse them)."""
    r0, r1 = configs["default"].r, configs[OTHER].r
    plain = not configs["default"].rank_pattern and not configs[OTHER].rank_pattern
    return ["default", OTHER] if plain and r0 != r1 else None


def _refusal(backend: Backend, model: nn.Module, adapters: list[str]) -> None:
    """`linear` over adapters of different ranks is refused before anything changes."""
    try:
        optional_methods(backend).add_weighted_adapter(
            model, adapters, [1.0, 1.0], "refused", combination_type="linear"
        )
    except Unsupported:
        return
    except Exception:  # noqa: BLE001 - any refusal will do; what matters is that nothing was created
        expect(not backend.lora_factors(model, "refused"), "a refused combination left adapter 'refused' behind")
        return
    expect(False, f"combination_type='linear' over adapters {adapters} of different ranks was accepted, not refused")
