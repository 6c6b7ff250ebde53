"""The distributed world a rank runs in: environment, process group, device, and DeepSpeed's CPU quirks.

Used by ranks this package starts (a FileStore rendezvous in a temporary directory, loopback only) and by
ranks an outside launcher started (torchrun or `deepspeed`, found from RANK/WORLD_SIZE/LOCAL_RANK).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

#: Environment variables every outside launcher (torchrun, deepspeed) sets for each rank.
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """Where this process sits: its rank, how many ranks, its rank on this host, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: str


def launched_outside() -> bool:
    """True inside torchrun or the deepspeed launcher (they export RANK, WORLD_SIZE and LOCAL_RANK)."""
    return all(v in os.environ for v in LAUNCH_VARS)


def world_from_env(device: str | None = None) -> World:
    """The world described by the launcher's environment variables.

    `device`: "cpu", "cuda" (this rank's GPU, cuda:<local rank>), or None / "auto" (`pick_device`).
    """
    missing = [v for v in LAUNCH_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"not inside a distributed launch: {missing} unset; start ranks with "
            "loraguard.run.distributed.launch, torchrun or the deepspeed launcher"
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    if device in (None, "auto"):
        device = pick_device(local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])))
    elif device == "cuda":
        device = f"cuda:{local_rank}"
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank, device)


def pick_device(local_rank: int, local_world_size: int) -> str:
    """cuda:<local rank> when this host has a GPU for every rank on it, else the CPU for all of them.

    All ranks choose alike, so they never mix NCCL and gloo.
    """
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world_size:
        return f"cuda:{local_rank}"
    return "cpu"


def comm_backend(device: str) -> str:
    """NCCL for ranks on CUDA, gloo on CPU."""
    return "nccl" if device.startswith("cuda") else "gloo"


def rank_environment(rank: int, world_size: int, device: str, timeout: float) -> dict[str, str]:
    """Variables a rank we start needs: the launcher set plus DeepSpeed's CPU and loopback settings.

    MASTER_ADDR/PORT are set because DeepSpeed looks for mpi4py without them; the rendezvous itself is a file.
    """
    env = {
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
        "DEEPSPEED_TIMEOUT": str(max(1, round(timeout / 60))),
    }
    if not device.startswith("cuda"):
        env["DS_ACCELERATOR"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def disable_deepspeed_shm_build() -> None:
    """Stop DeepSpeed from JIT-compiling its CPU shared-memory op (45 s, 1.6 GB) when its comm backend starts.

    The op only speeds up inference all-reduce. The hook must be replaced on the module object DeepSpeed
    itself uses (from sys.modules): `deepspeed.comm.torch` as an attribute is the torch package.
    """
    importlib.import_module("deepspeed.comm.torch")
    setattr(sys.modules["deepspeed.comm.torch"], "build_shm_op", lambda: None)  # noqa: B010 - untyped module


def init_process_group(world: World, timeout: float, init_method: str | None = None) -> None:
    """Join the process group (unless already joined) with `timeout` on every collective.

    `init_method` is our ``file://`` rendezvous; None uses the outside launcher's ``env://`` store.
    """
    import torch
    import torch.distributed as dist

    if world.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(world.device))
    if not dist.is_initialized():
        dist.init_process_group(
            comm_backend(world.device),
            init_method=init_method or "env://",
            rank=world.rank,
            world_size=world.world_size,
            timeout=timedelta(seconds=timeout),
        )


def init_deepspeed_comm(device: str) -> None:
    """Start DeepSpeed's comm layer on the joined process group, without its shm op build; idempotent."""
    import torch.distributed as dist

    disable_deepspeed_shm_build()
    import deepspeed

    if not dist.is_initialized():
        raise RuntimeError("join the process group first (loraguard.harness.distributed.world.init_process_group)")
    deepspeed.init_distributed(dist_backend=comm_backend(device))
