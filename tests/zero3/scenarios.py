"""Scenarios for testing the launcher itself: a rank that raises, a rank that hangs, a real collective.

Loaded by the ranks from this file's path (``tests/zero3/scenarios.py:<name>``).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def all_reduce_sum(ctx) -> None:
    """Every rank contributes rank + 1; the sum must be N(N+1)/2 on all of them."""
    import torch
    import torch.distributed as dist

    from loraguard.invariants.checks import expect

    t = torch.tensor([float(ctx.rank + 1)])
    dist.all_reduce(t)
    n = ctx.world_size
    expect(t.item() == n * (n + 1) / 2, f"all_reduce gave {t.item()}, expected {n * (n + 1) / 2}")


def heap_frozen(ctx) -> None:
    """The worker froze what was alive before this scenario (loraguard.core.heap): DeepSpeed's collections skip it."""
    import gc

    from loraguard.invariants.checks import expect

    expect(gc.get_freeze_count() > 0, "the rank's heap was not frozen before the scenario")


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


# -- mutants: wrong ways to use ZeRO-3 that the invariants must catch ---------------------------------------
def ungathered_save_checked(ctx) -> None:
    """zero3-save-gathered with a real peft save taken without gathering; kept in options["out"] as ungathered/."""
    import shutil

    from loraguard.invariants.zero3 import _ungathered_save, save_matches_single_process

    def save(ctx, backend, model, directory):
        _ungathered_save(ctx, backend, model, directory)
        if ctx.rank == 0:
            shutil.copytree(directory, Path(ctx.options["out"]) / "ungathered")

    save_matches_single_process(ctx, save=save)


def merge_in_readonly_gather(ctx) -> None:
    """zero3-merge-gathered merging inside a read-only gather: the merge is silently thrown away."""
    from loraguard.invariants.zero3 import merge_matches_single_process

    merge_matches_single_process(ctx, merge_gathered=False)


def export_by_merging_in_place(ctx) -> None:
    """zero3-mixed-export with the naive export: merge the training model itself, then write it."""
    from loraguard.harness.zero3.export import export_merged
    from loraguard.harness.zero3.gather import gathered
    from loraguard.invariants.zero3 import mixed_training_export

    backend = ctx.backend()

    def naive(engine, path):
        with gathered(engine.module.parameters(), modify=True):
            backend.merge(engine.module)
        export_merged(engine, path)

    mixed_training_export(ctx, export=naive)


def suite_in_existing_world(ctx) -> None:
    """run_suite called inside ranks that are already launched uses their world instead of starting one."""
    import torch.distributed as dist

    from loraguard.invariants.checks import expect
    from loraguard.zero3 import run_suite

    ids = ["zero3-init-load"]
    results = run_suite(ctx.world_size, ids=ids)
    expect([(r.id, r.status) for r in results] == [(i, "passed") for i in ids], f"in-world results: {results}")
    everyone = [None] * ctx.world_size
    dist.all_gather_object(everyone, [(r.id, r.status, r.message) for r in results])
    expect(all(e == everyone[0] for e in everyone), f"ranks returned different results: {everyone}")
