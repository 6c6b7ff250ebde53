"""The merge formula ``W_merged = W + s * B @ A`` as pure functions over tensors, for every layer kind.

This is the oracle the invariants and the audit compare backends and merged checkpoints to; the reference
layers use it too, so there is exactly one statement of the arithmetic.
"""

from __future__ import annotations

from typing import Literal

import torch

LayerKind = Literal["linear", "embedding", "conv"]


def delta_weight(
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scale: float,
    kind: LayerKind,
    fan_in_fan_out: bool = False,
) -> torch.Tensor:
    """``s * B @ A`` laid out like the base weight, computed in float32 or wider.

    linear: A (r, in), B (out, r) -> (out, in), transposed to (in, out) for fan_in_fan_out (GPT-2 Conv1D).
    embedding: A (r, num), B (dim, r) -> (num, dim).
    conv: A (r, in, *k), B (out, r, 1...) -> (out, in, *k).
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
    else:
        raise ValueError(f"unknown layer kind {kind!r}: expected 'linear', 'embedding' or 'conv'")
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
    delta = delta_weight(lora_a, lora_b, scale, kind, fan_in_fan_out)
    if delta.shape != base.shape:
        raise ValueError(
            f"LoRA delta has shape {tuple(delta.shape)} but the base weight has {tuple(base.shape)} "
            f"(kind={kind}, fan_in_fan_out={fan_in_fan_out})"
        )
    return (base.to(delta.dtype) + delta).to(base.dtype)
