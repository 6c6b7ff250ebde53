"""Tiny LoRA training runs on N ranks and their single-process twins, built identically from a seed.

Shared by the ZeRO-3 and FSDP invariants. Rank r of N trains on its shard of each global batch; the twin trains
on the whole batch in one process with the same optimizer, so (up to float32 reduction order) both end with the
same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from loraguard.core.config import LoraConfig
from loraguard.harness.zoo import ZOO, ZooModel, run

if TYPE_CHECKING:
    from loraguard.backends.base import Backend


@dataclass(frozen=True)
class Recipe:
    """What to train: a zoo model, the LoRA config, the seed, how many steps and how fast."""

    model: str = "mlp"
    seed: int = 0
    steps: int = 3
    lr: float = 0.05
    modules_to_save: bool = True

    @property
    def zoo(self) -> ZooModel:
        return ZOO[self.model]

    def lora_config(self, r: int = 4, alpha: float = 8.0) -> LoraConfig:
        """LoRA on the zoo model's targets (and its modules_to_save when asked)."""
        zoo = self.zoo
        return LoraConfig(
            r=r,
            lora_alpha=alpha,
            target_modules=zoo.target_modules,
            modules_to_save=list(zoo.modules_to_save) if self.modules_to_save else None,
        )


def shard_inputs(recipe: Recipe, step: int, rank: int, device: str) -> tuple:
    """Rank `rank`'s shard of step `step`'s global batch (deterministic, independent of world size)."""
    return recipe.zoo.example(seed=recipe.seed * 7919 + step * 1009 + rank, device=device)


def global_inputs(recipe: Recipe, step: int, world_size: int, device: str) -> tuple:
    """Step `step`'s whole batch: every rank's shard, concatenated in rank order."""
    shards = [shard_inputs(recipe, step, r, device) for r in range(world_size)]
    return tuple(torch.cat(parts) for parts in zip(*shards))


def probe_inputs(recipe: Recipe, device: str) -> tuple:
    """Inputs no training step saw, for comparing outputs."""
    return recipe.zoo.example(seed=recipe.seed + 104729, device=device)


def loss_of(model: nn.Module, inputs: tuple) -> torch.Tensor:
    """A loss whose gradient reaches every parameter: the mean squared output."""
    return run(model, inputs).float().square().mean()


def build(backend: Backend, recipe: Recipe, device: str = "cpu", base: nn.Module | None = None) -> nn.Module:
    """The zoo model from the recipe's seed, wrapped by `backend`, in training mode."""
    base = base if base is not None else recipe.zoo.make(seed=recipe.seed, device=device)
    model = backend.wrap(base, recipe.lora_config())
    return model.train()


def train_single(model: nn.Module, recipe: Recipe, world_size: int, device: str = "cpu") -> None:
    """The single-process twin: the same steps on whole batches with a plain AdamW."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.lr)
    for step in range(recipe.steps):
        opt.zero_grad()
        loss_of(model, global_inputs(recipe, step, world_size, device)).backward()
        opt.step()
