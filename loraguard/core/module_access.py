"""Typed reads of a torch module's tensors, where `nn.Module.__getattr__` is typed `Tensor | Module`."""

from __future__ import annotations

import torch
from torch import nn


def weight_of(module: nn.Module) -> torch.Tensor:
    """The `weight` of a layer (nn.Linear, nn.Embedding, nn.Conv*, transformers' Conv1D)."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.weight is a {type(weight).__name__}, not a tensor")
    return weight
