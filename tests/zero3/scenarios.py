"""Scenarios for testing the launcher itself: a rank that raises, a rank that hangs, a real collective.

Loaded by the ranks from this file's path (``tests/zero3/scenarios.py:<name>``).
"""

from __future__ import annotations

import os
import subprocess
import time


def all_reduce_sum(ctx) -> None:
    """Every rank contributes rank + 1; the sum must be N(N+1)/2 on all of them."""
    import torch
    import torch.distributed as dist

    from loraguard.invariants.checks import expect

    t = torch.tensor([float(ctx.rank + 1)])
    dist.all_reduce(t)
    n = ctx.world_size
    expect(t.item() == n * (n + 1) / 2, f"all_reduce gave {t.item()}, expected {n * (n + 1) / 2}")


def raise_on_rank1(ctx) -> None:
    """Rank 1 raises while rank 0 waits for it in a barrier."""
    import torch.distributed as dist

    ctx.step("before barrier")
    if ctx.rank == 1:
        raise ValueError("deliberate failure on rank 1")
    dist.barrier()


def hang_on_rank1(ctx) -> None:
    """Rank 1 starts a child process, records the pids, and never arrives at the barrier rank 0 waits in."""
    import torch.distributed as dist

    child = subprocess.Popen(["sleep", "600"])
    with open(ctx.options["pid_file"], "a") as f:
        f.write(f"{os.getpid()}\n{child.pid}\n")
    if ctx.rank == 1:
        time.sleep(600)
    ctx.step("barrier")
    dist.barrier()
