"""DoRA in the reference layers: the magnitude vector and DoRA's forward, computed as peft computes them.

DoRA rescales each output channel of ``W + s * B @ A`` to a trained magnitude m:
``y = m / ||W + s*B@A|| * (W + s*B@A) x``. The norm is taken per output channel of the unmerged weight, detached
from the gradient (section 4.3 of the paper), and applied on top of the running result, so several DoRA adapters
compose in the order they run, exactly as merging them one after another does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from torch.nn import functional as F

from loraguard.core.merge_math import out_first, output_norm

if TYPE_CHECKING:
    from loraguard.reference.kinds import LoraEmbedding
    from loraguard.reference.layers import LoraLayer


class Magnitude(nn.Module):
    """One adapter's magnitude vector, a module so that its key is ``lora_magnitude_vector.<adapter>.weight``."""

    def __init__(self, magnitude: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(magnitude)


@torch.no_grad()
def initial_magnitude(layer: LoraLayer, name: str) -> torch.Tensor:
    """``||W + s*B@A||`` per output channel: a new DoRA adapter starts out computing what plain LoRA computes."""
    weight = layer.base_weight()
    wide = torch.promote_types(weight.dtype, torch.float32)
    norm = output_norm(weight.to(wide) + layer.delta(name).to(wide), layer.kind, layer.fan_in_fan_out)
    return norm.to(weight.dtype)


def _lora_weight(layer: LoraLayer, a: nn.Module, b: nn.Module, a_weight: torch.Tensor) -> torch.Tensor:
    """``B @ A`` with the output channel first, formed as peft forms it (through the modules, for Linear)."""
    if layer.kind == "conv":
        r = a_weight.shape[0]
        b_weight = cast(torch.Tensor, b.weight)
        return torch.mm(b_weight.view(-1, r), a_weight.view(r, -1)).reshape(layer.base_weight().shape)
    eye = torch.eye(a_weight.shape[1], device=a_weight.device, dtype=a_weight.dtype)
    return b(a(eye)).T


def dora_forward(layer: LoraLayer, name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """The running `result` with DoRA adapter `name` applied on top (Linear, GPT-2 Conv1D, Conv1d/2d/3d)."""
    a, b = layer.factor_modules(name)
    a_weight, s = cast(torch.Tensor, a.weight), layer.scaling[name]
    x = x.to(a_weight.dtype)
    wide = torch.promote_types(x.dtype, torch.float32)  # the norm and the rescaling never in half precision
    conv = layer.kind == "conv"
    weight = out_first(layer.unmerged_weight().to(wide), layer.kind, layer.fan_in_fan_out)
    lora_weight = _lora_weight(layer, a, b, a_weight).to(wide).detach()
    norm = output_norm(weight + s * lora_weight, "conv" if conv else "linear")
    scale = layer.magnitude(name).to(wide) / norm.detach()
    scale = scale if conv else scale.view(1, -1)
    dropout = layer.lora_dropout[name]
    bias = cast(torch.Tensor | None, getattr(layer.base_layer, "bias", None))
    if isinstance(dropout, nn.Identity) or not layer.training:
        base_result = result
        if bias is not None:  # (out,) for Linear; (1, out, 1, ...) against a conv output
            base_result = result - (bias.view(1, -1, *[1] * (result.dim() - 2)) if conv else bias)
    else:  # as peft: with dropout in training the base part is recomputed from the dropped input
        x = dropout(x)
        base = cast(nn.modules.conv._ConvNd, layer.base_layer)
        base_result = base._conv_forward(x.to(wide), weight, None) if conv else F.linear(x.to(wide), weight)
    dora = (scale - 1) * base_result.to(wide) + scale * b(a(x)).to(wide) * s
    return result + dora.to(result.dtype)


def dora_embedding_forward(layer: LoraEmbedding, name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """The running `result` with DoRA adapter `name` applied on an embedding (scaled embeddings included)."""
    a, b = layer.factors(name)
    a_t, b_t, s = a.T, b.T, layer.scaling[name]
    wide = torch.promote_types(a.dtype, torch.float32)  # the norm and the rescaling never in half precision
    weight = layer.unmerged_weight().to(wide)
    norm = torch.linalg.norm(weight.T + s * (a_t @ b_t).T.to(wide).detach(), dim=1).detach()
    scale = layer.magnitude(name).to(wide) / norm
    dora = scale * (layer.embed(x, a_t) @ b_t).to(wide) * s
    embed_scale = layer.embed_scale()
    if embed_scale is not None:
        dora = dora * embed_scale.to(dora.dtype)
    return (scale * result.to(wide) + dora).to(result.dtype)
