"""The merge formulas as pure functions over tensors, for every layer kind: LoRA's ``W_merged = W + s * B @ A`` and
DoRA's ``W_merged = m / ||W0 + s * B @ A|| * (W + s * B @ A)`` (norm per output channel, of the unmerged weight W0).

This is the oracle the invariants and the audit compare backends and merged checkpoints to; the reference
layers use it too, so there is exactly one statement of the arithmetic.
"""

from __future__ import annotations

from typing import Literal

import torch

LayerKind = Literal["linear", "embedding", "conv", "experts"]


def delta_weight(
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scale: float,
    kind: LayerKind,
    fan_in_fan_out: bool = False,
    experts: int = 1,
) -> torch.Tensor:
    """``s * B @ A`` laid out like the base weight, computed in float32 or wider.

    linear: A (r, in), B (out, r) -> (out, in), transposed to (in, out) for fan_in_fan_out (GPT-2 Conv1D).
    embedding: A (r, num), B (dim, r) -> (num, dim).
    conv: A (r, in, *k), B (out, r, 1...) -> (out, in, *k).
    experts (a 3D parameter of `target_parameters`, peft's ParamWrapper): A (experts*r, d2) with expert e's rows at
    ``e*r ... e*r+r-1``, B (d1, r*experts) with expert e's columns at ``e, e+experts, ...`` (peft's two layouts
    differ) -> (experts, d1, d2), expert e's slice ``B_e @ A_e``; transposed per expert for fan_in_fan_out (a
    module marked ``is_transposed``).
    """
    wide = torch.promote_types(torch.promote_types(lora_a.dtype, lora_b.dtype), torch.float32)
    a, b = lora_a.to(wide), lora_b.to(wide)
    if kind == "linear":
        delta = b @ a
        if fan_in_fan_out:
            delta = delta.T
    elif kind == "embedding":
        delta = (b @ a).T
    elif kind == "conv":
        delta = torch.einsum("or,r...->o...", b.flatten(1), a)
    elif kind == "experts":
        per_a = a.reshape(experts, -1, a.shape[-1])  # (experts, r, d2)
        per_b = b.reshape(b.shape[0], -1, experts).permute(2, 0, 1)  # (experts, d1, r)
        delta = per_b @ per_a
        if fan_in_fan_out:
            delta = delta.transpose(1, 2)
    else:
        raise ValueError(f"unknown layer kind {kind!r}: expected 'linear', 'embedding', 'conv' or 'experts'")
    return delta * scale


def merged_weight(
    base: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scale: float,
    kind: LayerKind,
    fan_in_fan_out: bool = False,
) -> torch.Tensor:
    """The merged weight in the base weight's dtype; raises if the shapes do not fit together."""
    experts = base.shape[0] if kind == "experts" else 1
    delta = delta_weight(lora_a, lora_b, scale, kind, fan_in_fan_out, experts)
    if delta.shape != base.shape:
        raise ValueError(
            f"LoRA delta has shape {tuple(delta.shape)} but the base weight has {tuple(base.shape)} "
            f"(kind={kind}, fan_in_fan_out={fan_in_fan_out})"
        )
    return (base.to(delta.dtype) + delta).to(base.dtype)


def out_first(weight: torch.Tensor, kind: LayerKind, fan_in_fan_out: bool = False) -> torch.Tensor:
    """A weight (or delta) in its stored layout, viewed with the output channel first: (out, in...).

    Linear is stored (out, in), GPT-2 Conv1D (in, out), embedding (num, dim) whose output channel is dim.
    """
    if kind == "embedding" or (kind == "linear" and fan_in_fan_out):
        return weight.T
    return weight


def output_norm(weight: torch.Tensor, kind: LayerKind, fan_in_fan_out: bool = False) -> torch.Tensor:
    """DoRA's column norm: the L2 norm of each output channel, shaped as peft stores the magnitude vector.

    linear and embedding: (out,); conv: (1, out, 1, ...) (peft's keepdim norm transposed).
    """
    w = out_first(weight, kind, fan_in_fan_out)
    if kind == "conv":
        return w.norm(p=2, dim=tuple(range(1, w.dim())), keepdim=True).transpose(1, 0)
    return torch.linalg.norm(w, dim=1)


def channel_view(factor: torch.Tensor, kind: LayerKind, fan_in_fan_out: bool = False) -> torch.Tensor:
    """A per-output-channel factor shaped to broadcast over the weight's stored layout."""
    if kind == "embedding" or (kind == "linear" and fan_in_fan_out):
        return factor.reshape(1, -1)
    if kind == "conv":  # the magnitude (1, out, 1, ...) has as many dims as the kernel (out, in, k...)
        return factor.reshape(-1, *([1] * (factor.dim() - 1)))
    return factor.reshape(-1, 1)


def dora_factor(
    unmerged: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor, kind: LayerKind, fan_in_fan_out: bool = False
) -> torch.Tensor:
    """``m / ||W0 + delta||`` per output channel, broadcastable over the weight's layout (DoRA's rescaling)."""
    norm = output_norm(unmerged + delta, kind, fan_in_fan_out)
    return channel_view(magnitude.to(norm.dtype) / norm, kind, fan_in_fan_out)


def dora_merged_weight(
    current: torch.Tensor,
    unmerged: torch.Tensor,
    delta: torch.Tensor,
    magnitude: torch.Tensor,
    kind: LayerKind,
    fan_in_fan_out: bool = False,
) -> torch.Tensor:
    """DoRA's merge of one adapter into `current` (which may already hold earlier merges), as peft does it:
    ``m / ||W0 + delta|| * (current + delta)``, the norm taken over the unmerged weight W0 (as its forward sees it)."""
    return dora_factor(unmerged, delta, magnitude, kind, fan_in_fan_out) * (current + delta)


def with_token_rows(weight: torch.Tensor, indices: list[int], values: torch.Tensor) -> torch.Tensor:
    """`weight` with rows `indices` set to `values` (trainable tokens), differentiable in `values`; an index listed
    more than once takes its last occurrence's value, what `index_copy` does on CPU, made deterministic here."""
    last = {index: position for position, index in enumerate(indices)}
    rows = torch.tensor(list(last), device=weight.device)
    picked = values[torch.tensor(list(last.values()), device=values.device)]
    return weight.index_copy(0, rows, picked.to(weight.dtype))
