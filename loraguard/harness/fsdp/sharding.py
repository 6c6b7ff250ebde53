"""Sharding a model with PyTorch FSDP, and reading or writing its whole state: the one place loraguard calls FSDP.

Two APIs: ``fsdp2`` (``torch.distributed.fsdp.fully_shard``: parameters become DTensors sharded on dim 0) and
``fsdp1`` (``FullyShardedDataParallel(use_orig_params=True)``: parameters become views of one flat shard). Both
run on CPU with gloo; FSDP1 only when told the device (``device_id=cpu``), which this module does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
from torch import nn

from loraguard.core.vocabulary import FSDP_APIS as APIS


def check_api(api: str) -> str:
    """`api` if it is one of `APIS`, else a ValueError naming the choices."""
    if api not in APIS:
        raise ValueError(f"unknown FSDP api {api!r}: choose one of {list(APIS)}")
    return api


def lora_layers(model: nn.Module) -> list[nn.Module]:
    """Modules that hold LoRA factors (peft's LoraLayer, the reference's layers): each gets its own FSDP unit."""
    return [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]


def shard(model: nn.Module, api: str, device: str) -> nn.Module:
    """`model` sharded across the process group.

    FSDP2: one unit per LoRA layer plus the root, as users wrap transformer blocks; it shards in place and returns
    `model`. FSDP1: one unit at the root (an auto-wrap policy would rename the modules loraguard walks); it
    returns the wrapper, whose `.module` is `model`.
    """
    check_api(api)
    if api == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in lora_layers(model):
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return FSDP(model, use_orig_params=True, device_id=torch.device(device))


def inner(model: nn.Module) -> nn.Module:
    """The user's model inside an FSDP1 wrapper (FSDP2 shards in place: the model itself)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return model.module if isinstance(model, FSDP) else model


def is_sharded(model: nn.Module) -> bool:
    """True if `model` is sharded by FSDP2 (a DTensor parameter) or wrapped by FSDP1."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.tensor import DTensor

    return isinstance(model, FSDP) or any(isinstance(p, DTensor) for p in model.parameters())


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on every rank, on the CPU, keys as the unsharded model names them (a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = cast(dict[str, torch.Tensor], get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)))
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


@contextmanager
def unsharded(model: nn.Module, writeback: bool = False) -> Iterator[None]:
    """Every parameter of `model` whole on every rank inside the context (a collective).

    With `writeback` (FSDP1 only) changes are written back to the shards when the context ends; otherwise they
    are lost. FSDP2 has no write-back: there, change the sharded (DTensor) parameters themselves.
    """
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if isinstance(model, FSDP):
        with FSDP.summon_full_params(model, writeback=writeback, recurse=True):
            yield
        return
    if writeback:
        raise ValueError("FSDP2 cannot write an unsharded copy back: change the sharded parameters instead")
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
