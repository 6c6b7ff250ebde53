"""ZeRO-3 training under DeepSpeed: the config and engine for a `Recipe` (`loraguard.harness.distributed.recipe`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from loraguard.harness.distributed.recipe import Recipe, loss_of, shard_inputs

if TYPE_CHECKING:
    from deepspeed.runtime.engine import DeepSpeedEngine


def ds_config(world_size: int, micro_batch: int) -> dict[str, Any]:
    """ZeRO-3 in float32 with every parameter partitioned, however small (tiny models persist by default)."""
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "train_batch_size": micro_batch * world_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {
            "stage": 3,
            "stage3_param_persistence_threshold": 0,
            "stage3_model_persistence_threshold": 0,
        },
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def zero3_engine(model: nn.Module, recipe: Recipe, world_size: int, device: str) -> DeepSpeedEngine:
    """`deepspeed.initialize` at stage 3 with a client AdamW over the trainable parameters."""
    import deepspeed

    from loraguard.harness.distributed.world import init_deepspeed_comm

    init_deepspeed_comm(device)
    micro = recipe.zoo.example(seed=0)[0].shape[0]
    params = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=torch.optim.AdamW(params, lr=recipe.lr), config=ds_config(world_size, micro)
    )
    return engine


def train_zero3(engine: DeepSpeedEngine, recipe: Recipe, rank: int, device: str) -> None:
    """Each rank steps the engine on its shard of each global batch."""
    engine.train()
    for step in range(recipe.steps):
        loss = loss_of(engine, shard_inputs(recipe, step, rank, device))
        engine.backward(loss)
        engine.step()
