"""A merged export of an FSDP-sharded LoRA model: gather read-only, merge a copy, never touch the training model.

The merge arithmetic and the rank agreement are those of `loraguard.harness.zero3.export` (which needs no
DeepSpeed for a model that is not ZeRO-partitioned); FSDP only changes how the whole parameters are obtained.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from loraguard.harness.fsdp.sharding import inner, is_sharded, unsharded
from loraguard.harness.zero3 import export as plain


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The merged base model's state dict on the CPU, on every rank (a collective when `model` is sharded)."""
    if not is_sharded(model):
        return plain.merged_state_dict(model)
    with unsharded(model):
        return plain.merged_state_dict(inner(model))


def export_merged(model: nn.Module, path: str | Path) -> dict[str, torch.Tensor]:
    """Write the merged model to `path` (safetensors; rank 0 writes after every rank agrees) and return it."""
    if not is_sharded(model):
        return plain.export_merged(model, path)
    with unsharded(model):
        return plain.export_merged(inner(model), path)
