"""Training, merging and checkpointing a `Recipe` under FSDP: what a user's FSDP loop does, written once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from loraguard.harness.distributed.recipe import Recipe, loss_of, shard_inputs
from loraguard.harness.fsdp.sharding import inner, unsharded

if TYPE_CHECKING:
    from loraguard.backends.base import Backend


def optimizer_for(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (sharded ones under FSDP), as the single-process twin uses."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.lr)


def train_sharded(
    model: nn.Module, opt: torch.optim.Optimizer, recipe: Recipe, rank: int, device: str, steps: range | None = None
) -> None:
    """Each rank steps on its shard of each global batch (FSDP averages the gradients across ranks)."""
    model.train()
    for step in steps if steps is not None else range(recipe.steps):
        opt.zero_grad()
        loss_of(model, shard_inputs(recipe, step, rank, device)).backward()
        opt.step()


def merge_sharded(backend: Backend, model: nn.Module) -> None:
    """The correct merge under FSDP: FSDP2 merges into the sharded DTensor parameters themselves; FSDP1 merges
    inside a gather that writes back to the shards."""
    if is_fsdp1(model):
        with unsharded(model, writeback=True):
            backend.merge(inner(model))
    else:
        backend.merge(model)


def is_fsdp1(model: nn.Module) -> bool:
    """True for an FSDP1 wrapper (FSDP2 shards in place and leaves no wrapper)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return isinstance(model, FSDP)


def save_checkpoint(model: nn.Module, opt: torch.optim.Optimizer, directory: Path) -> None:
    """A sharded checkpoint of model and optimizer with torch.distributed.checkpoint (every rank writes its part)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, opt)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory))


def load_checkpoint(model: nn.Module, opt: torch.optim.Optimizer, directory: Path) -> None:
    """Restore model and optimizer from `save_checkpoint`'s directory, resharded onto this world."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, opt)
    state: dict[str, Any] = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
