"""The reference's layer kinds: Linear (and GPT-2's transposed Conv1D), Embedding and Conv1d/2d/3d.

Each says which modules hold its factors and how big they are; everything else (adapters, merging, forward) is the
shared `LoraLayer` of `loraguard.reference.layers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from loraguard.core.merge_math import LayerKind
from loraguard.reference.dora import dora_embedding_forward
from loraguard.reference.layers import LoraLayer, is_conv1d_transposed


class LoraLinear(LoraLayer):
    """LoRA on `nn.Linear`, or on GPT-2 `Conv1D` (weight stored transposed: fan_in_fan_out)."""

    kind: LayerKind = "linear"
    lora_A: nn.ModuleDict
    lora_B: nn.ModuleDict

    def __init__(self, base_layer: nn.Module):
        super().__init__(base_layer)
        self.fan_in_fan_out = is_conv1d_transposed(base_layer)
        # Sizes come from the layer's attributes, not its weight: under DeepSpeed zero.Init the weight is a shard.
        if self.fan_in_fan_out:  # Conv1D.nx arrived in transformers 4.46; before it, the weight is whole anyway
            self.in_features = int(getattr(base_layer, "nx", None) or self.base_weight().shape[0])
            self.out_features = cast(int, base_layer.nf)
        else:
            linear = cast(nn.Linear, base_layer)
            self.in_features, self.out_features = linear.in_features, linear.out_features

    def _create(self, name: str, rank: int, lora_bias: bool) -> None:
        self.lora_A[name] = nn.Linear(self.in_features, rank, bias=False)
        self.lora_B[name] = nn.Linear(rank, self.out_features, bias=lora_bias)


class LoraEmbedding(LoraLayer):
    """LoRA on `nn.Embedding`: A is (r, num_embeddings), B is (embedding_dim, r), as peft stores them."""

    kind: LayerKind = "embedding"
    factor_stores = ("lora_embedding_A", "lora_embedding_B")
    base_layer: nn.Embedding
    lora_embedding_A: nn.ParameterDict
    lora_embedding_B: nn.ParameterDict

    @staticmethod
    def _new_store() -> nn.ModuleDict | nn.ParameterDict:
        return nn.ParameterDict()

    def _create(self, name: str, rank: int, lora_bias: bool) -> None:
        if lora_bias:
            raise ValueError("lora_bias is not supported for embedding layers (peft refuses it too)")
        num, dim = self.base_weight().shape
        self.lora_embedding_A[name] = nn.Parameter(torch.empty(rank, num))
        self.lora_embedding_B[name] = nn.Parameter(torch.empty(dim, rank))

    def factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lora_embedding_A[name], self.lora_embedding_B[name]

    def embed(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Look `x` up in `weight` with the base embedding's options."""
        base = self.base_layer
        return F.embedding(
            x, weight, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq, base.sparse
        )

    def embed_scale(self) -> torch.Tensor | None:
        """The constant a scaled embedding (Gemma's) multiplies its output by; the LoRA part gets it too."""
        scale = getattr(self.base_layer, "embed_scale", None)
        if isinstance(scale, (int, float)):
            return torch.tensor(scale, device=self.base_weight().device, dtype=self.base_weight().dtype)
        return scale if isinstance(scale, torch.Tensor) and scale.numel() == 1 else None

    def _lora_forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        # Dropout is not applied to token ids, as in peft.
        out = (self.embed(x, self.lora_embedding_A[name].T) @ self.lora_embedding_B[name].T) * self.scaling[name]
        scale = self.embed_scale()
        return out if scale is None else out * scale.to(out.dtype)

    def _adapted(self, name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        if self.use_dora[name]:
            return dora_embedding_forward(self, name, x, result)
        return super()._adapted(name, x, result)


class LoraConv(LoraLayer):
    """LoRA on `nn.Conv1d/2d/3d`: A copies the base kernel geometry, B is a 1x1 convolution."""

    kind: LayerKind = "conv"
    base_layer: nn.modules.conv._ConvNd
    lora_A: nn.ModuleDict
    lora_B: nn.ModuleDict

    def __init__(self, base_layer: nn.modules.conv._ConvNd):
        if base_layer.groups != 1:
            raise ValueError(f"grouped convolutions (groups={base_layer.groups}) are not supported by the reference")
        super().__init__(base_layer)

    def _create(self, name: str, rank: int, lora_bias: bool) -> None:
        base = self.base_layer
        conv: Callable[..., nn.Module] = type(base)  # Conv1d, 2d or 3d, as the base
        self.lora_A[name] = conv(
            base.in_channels, rank, base.kernel_size, base.stride, base.padding, base.dilation, bias=False
        )
        self.lora_B[name] = conv(rank, base.out_channels, 1, 1, 0, bias=lora_bias)


def wrap_layer(module: nn.Module) -> LoraLayer:
    """The reference LoRA wrapper for `module`, or a ValueError naming the unsupported type."""
    if isinstance(module, nn.Linear) or is_conv1d_transposed(module):
        return LoraLinear(module)
    if isinstance(module, nn.Embedding):
        return LoraEmbedding(module)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return LoraConv(module)
    raise ValueError(
        f"target module type {type(module).__name__} is not supported; LoRA applies to Linear, GPT-2 Conv1D, "
        "Embedding and Conv1d/2d/3d layers"
    )
