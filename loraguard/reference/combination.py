"""The reference's weighted combination of adapters (peft's `add_weighted_adapter`), layer by layer.

The formulas live in `loraguard.core.combine_math`; here they are applied to each LoRA layer the combined
adapters adapt, in float64, and the result is written into a new adapter of scaling 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from loraguard.core import combine_math
from loraguard.core.config import LoraConfig
from loraguard.core.keys import check_adapter_name
from loraguard.reference.layers import LoraLayer

if TYPE_CHECKING:
    from loraguard.reference.model import LoraModel


def add_weighted_adapter(
    model: LoraModel,
    adapters: list[str],
    weights: list[float],
    adapter_name: str,
    combination_type: str,
    svd_rank: int | None,
    density: float,
    majority_sign_method: combine_math.SignMethod,
    generator: torch.Generator | None,
) -> None:
    """Add `adapter_name` to `model`, the weighted combination of `adapters` (see `LoraModel.add_weighted_adapter`)."""
    check_adapter_name(adapter_name)
    if adapter_name in model.peft_config:
        raise ValueError(f"adapter {adapter_name!r} already exists; pick another name for the combination")
    unknown = [a for a in adapters if a not in model.peft_config]
    if unknown or not adapters or len(weights) != len(adapters):
        raise ValueError(
            f"add_weighted_adapter needs one weight per existing adapter; got adapters {adapters} "
            f"(unknown: {unknown}), weights {weights}; this model has {list(model.peft_config)}"
        )
    with_parameters = [a for a in adapters if model.peft_config[a].target_parameters]
    if with_parameters:
        raise ValueError(f"add_weighted_adapter cannot combine adapters with target_parameters: {with_parameters}")
    kind = "linear" if len(adapters) == 1 else combination_type  # one adapter: every type is a scaled copy
    ranks = [max([model.peft_config[a].r, *model.peft_config[a].rank_pattern.values()]) for a in adapters]
    rank = combine_math.new_rank(kind, ranks, svd_rank)
    layers = {p: layer for p, layer in model.lora_layers().items() if any(a in layer.scaling for a in adapters)}
    combined = {
        p: _combine_layer(layer, kind, adapters, weights, rank, density, majority_sign_method, generator)
        for p, layer in layers.items()
    }
    for path, (a, b) in combined.items():
        layers[path].add(adapter_name, rank, 1.0, 0.0, False, True)
        new_a, new_b = layers[path].factors(adapter_name)
        with torch.no_grad():
            new_a.zero_()
            new_b.zero_()
            new_a[: a.shape[0]] = a.to(new_a.dtype)
            new_b[:, : b.shape[1]] = b.to(new_b.dtype)
        layers[path].active_adapters = list(model.active_adapters)
    model.peft_config[adapter_name] = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=sorted(layers), init_lora_weights=False
    )


def _combine_layer(
    layer: LoraLayer,
    kind: str,
    adapters: list[str],
    weights: list[float],
    rank: int,
    density: float,
    method: combine_math.SignMethod,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The combined (A, B) at one layer, in float64, for the adapters present there (each with its weight)."""
    present = [(a, w) for a, w in zip(adapters, weights) if a in layer.scaling]
    if not combine_math.is_svd(kind):
        factors = []
        for name, _ in present:
            fa, fb = layer.factors(name)
            factors.append((fa.detach().double(), fb.detach().double(), layer.scaling[name]))
        return combine_math.combined_factors(kind, factors, [w for _, w in present], density, method, generator)
    deltas = [_as_ba(layer, layer.delta(name).double()) for name, _ in present]
    target = combine_math.combined_delta_target(kind, deltas, [w for _, w in present], density, method, generator)
    a, b = combine_math.truncated_svd(target, rank)
    a_shape, b_shape = layer.factors(present[0][0])[0].shape[1:], layer.factors(present[0][0])[1].shape
    return a.reshape(a.shape[0], *a_shape), b.reshape(b_shape[0], b.shape[1], *b_shape[2:])


def _as_ba(layer: LoraLayer, delta: torch.Tensor) -> torch.Tensor:
    """A delta in the layout of ``B @ A`` (undoing the transpose of embeddings and fan_in_fan_out layers)."""
    return delta.T if layer.kind == "embedding" or layer.fan_in_fan_out else delta
