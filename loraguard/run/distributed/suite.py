"""`run_suite` for every distributed kind: the invariants of one kind (``zero3``, ``fsdp``) on N ranks.

Outside a distributed launch it starts the ranks with `launch` (one launcher: its failure and hang handling
serve every kind); inside torchrun or the deepspeed launcher it runs in this rank on that world, and every rank
returns the same results. Imports nothing heavy at module top.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from loraguard.run.outcome import Outcome

if TYPE_CHECKING:
    from torch.distributed import Store


def invariant_ids(kind: str) -> list[str]:
    """The IDs of `kind`'s invariants, in registration order."""
    from loraguard.invariants.registry import DISTRIBUTED_KINDS, all_invariants

    if kind not in DISTRIBUTED_KINDS:
        raise ValueError(f"{kind!r} is not a distributed kind; choose one of {list(DISTRIBUTED_KINDS)}")
    return list(all_invariants(kind))


def run_suite(
    kind: str,
    world_size: int,
    options: dict[str, Any],
    timeout: float = 60.0,
    device: str = "cpu",
    ids: list[str] | None = None,
) -> list[Outcome]:
    """Check `kind`'s invariants (all, or `ids`) on `world_size` ranks; `options` reach every rank's context.

    A hung collective ends the invariant with an "error" after `timeout` seconds.
    """
    from loraguard.harness.distributed.world import launched_outside

    known = invariant_ids(kind)
    ids = ids or known
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ValueError(f"unknown {kind} invariant(s) {unknown}; choose from {known}")
    if launched_outside():
        return _run_in_world(kind, ids, world_size, timeout, device, options)
    from loraguard.run.distributed.launch import launch

    return launch(ids, world_size, timeout, device, options)


def _run_in_world(
    kind: str, ids: list[str], world_size: int, timeout: float, device: str, options: dict[str, Any]
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
    key = f"loraguard/{kind}/progress"

    def mark(seq: int, label: str) -> None:
        store.set(f"{key}/{world.rank}", f"{seq}\t{label}")

    shared = [tempfile.mkdtemp(prefix=f"loraguard-{kind}-") if world.rank == 0 else None]
    dist.broadcast_object_list(shared, 0)
    ctx = RankContext(world, Path(str(shared[0])), options, mark)
    results = []
    for name in ids:
        start = time.perf_counter()
        mine = run_scenario(ctx, name)
        try:
            everyone: list[dict | None] = [None] * world.world_size
            dist.all_gather_object(everyone, mine)
        except RuntimeError as err:
            lagging = _lagging(store, key, world.world_size, err)
            results.append(Outcome(name, "", "error", lagging, time.perf_counter() - start))
            break
        reports = cast(list[dict[str, Any]], everyone)
        results.append(combine(name, dict(enumerate(reports)), [r["pid"] for r in reports]))
    return results


def _lagging(store: Store, key: str, world_size: int, err: Exception) -> str:
    """After a timed-out collective: which ranks are behind, read from the progress marks in the store."""
    marks = {}
    for rank in range(world_size):
        if store.check([f"{key}/{rank}"]):
            seq, _, label = store.get(f"{key}/{rank}").decode().partition("\t")
            marks[rank] = (int(seq), label)
    furthest = max(marks.values(), default=(0, ""))
    behind = sorted(r for r in range(world_size) if marks.get(r, (-1, ""))[0] < furthest[0])
    return (
        f"collective failed ({err}); rank(s) {behind} did not arrive at '{furthest[1]}'; the world is unusable, "
        "later invariants were not run"
    )
