"""`run_suite`: the FSDP invariants on N ranks, as the pytest plugin and users call them.

Imports nothing heavy at module top: torch loads in the ranks, or when the suite runs in-world.
"""

from __future__ import annotations

from loraguard.core.vocabulary import FSDP_APIS as APIS
from loraguard.run.distributed import suite
from loraguard.run.outcome import Outcome


def invariant_ids() -> list[str]:
    """The IDs `run_suite` checks, in order."""
    return suite.invariant_ids("fsdp")


def run_suite(
    world_size: int,
    backend_name: str = "peft",
    api: str = "fsdp2",
    timeout: float = 60.0,
    device: str = "cpu",
    model: str = "mlp",
    ids: list[str] | None = None,
) -> list[Outcome]:
    """Check the FSDP invariants (all, or `ids`) for `backend_name` on `world_size` ranks sharded with `api`.

    `api`: "fsdp2" (``fully_shard``) or "fsdp1" (``FullyShardedDataParallel(use_orig_params=True)``). Ranks
    use gloo on CPU and NCCL on CUDA (`device`: "cpu", "cuda" or "auto"). Outside a distributed launch this
    starts the ranks itself; inside torchrun it runs in this rank on the launcher's world.
    """
    if api not in APIS:
        raise ValueError(f"run_suite(api={api!r}): choose one of {list(APIS)}")
    if device not in ("cpu", "cuda", "auto"):
        raise ValueError(f"run_suite(device={device!r}): use cpu, cuda (rank r on cuda:r) or auto")
    options = {"backend": backend_name, "model": model, "api": api}
    return suite.run_suite("fsdp", world_size, options, timeout, device, ids)
