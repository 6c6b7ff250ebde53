"""`run_suite`: the ZeRO-3 invariants on N ranks, as the pytest plugin and users call them.

Imports nothing heavy at module top: torch and deepspeed load in the ranks, or when the suite runs in-world.
"""

from __future__ import annotations

from loraguard.run.distributed import suite
from loraguard.run.outcome import Outcome


def invariant_ids() -> list[str]:
    """The IDs `run_suite` checks, in order."""
    return suite.invariant_ids("zero3")


def run_suite(
    world_size: int,
    backend_name: str = "peft",
    timeout: float = 60.0,
    device: str = "cpu",
    model: str = "mlp",
    ids: list[str] | None = None,
) -> list[Outcome]:
    """Check the ZeRO-3 invariants (all, or `ids`) for `backend_name` on `world_size` ranks.

    Outside a distributed launch this starts the ranks itself (`loraguard.run.distributed.launch`); inside torchrun or
    the deepspeed launcher it runs in this rank on the launcher's world, and `world_size` must match it.
    A hung collective ends the invariant with an "error" after `timeout` seconds.
    """
    return suite.run_suite("zero3", world_size, {"backend": backend_name, "model": model}, timeout, device, ids)
