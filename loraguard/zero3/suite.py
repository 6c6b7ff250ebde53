"""`run_suite`: the ZeRO-3 invariants on N ranks, as the pytest plugin and users call them.

Imports nothing heavy at module top: torch and deepspeed load in the ranks, or when the suite runs in-world.
"""

from __future__ import annotations

import time

from loraguard.run.outcome import Outcome


def invariant_ids() -> list[str]:
    """The IDs `run_suite` checks, in order."""
    from loraguard.invariants.registry import all_invariants

    return list(all_invariants("zero3"))


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
    from loraguard.harness.distributed.world import launched_outside

    ids = ids or invariant_ids()
    options = {"backend": backend_name, "model": model}
    if launched_outside():
        return _run_in_world(ids, world_size, timeout, device, options)
    from loraguard.run.distributed.launch import launch

    return launch(ids, world_size, timeout, device, options)


def _run_in_world(
    ids: list[str], world_size: int, timeout: float, device: str, options: dict[str, str]
) -> list[Outcome]:
    """Run in this rank of an outside launch; every rank returns the same results."""
    import tempfile
    from pathlib import Path

    import torch.distributed as dist

    from loraguard.harness.distributed.context import RankContext
    from loraguard.harness.distributed.world import init_process_group, world_from_env
    from loraguard.run.distributed.launch import combine
    from loraguard.run.distributed.scenario import run_scenario

    world = world_from_env(device)
    if world.world_size != world_size:
        raise ValueError(
            f"run_suite(world_size={world_size}) inside a launch of {world.world_size} ranks; "
            f"pass world_size={world.world_size} or launch {world_size} ranks"
        )
    init_process_group(world, timeout)
    store = dist.distributed_c10d._get_default_store()
    marks: dict[int, tuple[int, str]] = {}

    def mark(seq: int, label: str) -> None:
        store.set(f"loraguard/zero3/progress/{world.rank}", f"{seq}\t{label}")
        marks[world.rank] = (seq, label)

    shared = [tempfile.mkdtemp(prefix="loraguard-zero3-") if world.rank == 0 else None]
    dist.broadcast_object_list(shared, 0)
    ctx = RankContext(world, Path(shared[0]), options, mark)
    results = []
    for name in ids:
        start = time.perf_counter()
        mine = run_scenario(ctx, name)
        try:
            everyone: list[dict | None] = [None] * world.world_size
            dist.all_gather_object(everyone, mine)
        except RuntimeError as err:
            results.append(
                Outcome(name, "", "error", _lagging(store, world.world_size, err), time.perf_counter() - start)
            )
            break
        results.append(combine(name, dict(enumerate(everyone)), [r["pid"] for r in everyone]))
    return results


def _lagging(store, world_size: int, err: Exception) -> str:
    """After a timed-out collective: which ranks are behind, read from the progress marks in the store."""
    marks = {}
    for rank in range(world_size):
        key = f"loraguard/zero3/progress/{rank}"
        if store.check([key]):
            seq, _, label = store.get(key).decode().partition("\t")
            marks[rank] = (int(seq), label)
    furthest = max(marks.values(), default=(0, ""))
    behind = sorted(r for r in range(world_size) if marks.get(r, (-1, ""))[0] < furthest[0])
    return (
        f"collective failed ({err}); rank(s) {behind} did not arrive at '{furthest[1]}'; the world is unusable, "
        "later invariants were not run"
    )
