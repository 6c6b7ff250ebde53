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


def weight_at(model: nn.Module, path: str) -> torch.Tensor:
    """The weight a LoRA target at `path` changes: its module's `weight`, or the parameter `path` names itself (a
    `target_parameters` target such as ``moe.experts.gate_up_proj``)."""
    try:
        module = model.get_submodule(path)
    except AttributeError:  # not a module: a parameter
        return model.get_parameter(path)
    return weight_of(module)
