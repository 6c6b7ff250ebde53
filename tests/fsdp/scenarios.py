"""Scenarios for the FSDP tests: the invariants under FSDP1 in the same world as FSDP2, and mutants (wrong ways to
save, merge and export a sharded model that the invariants must report as failed).

Loaded by the ranks from this file's path (``tests/fsdp/scenarios.py:<name>``).
"""

from __future__ import annotations

from loraguard.invariants.registry import all_invariants


def _under(api: str, check):
    """`check` run with the FSDP API `api` (the options every rank shares), whatever the launch was given."""

    def scenario(ctx) -> None:
        saved = ctx.options
        ctx.options = {**saved, "api": api}
        try:
            check(ctx)
        finally:
            ctx.options = saved

    return scenario


#: ``fsdp1_<invariant>``: each FSDP invariant under FSDP1 (FullyShardedDataParallel with use_orig_params).
FSDP1 = {f"fsdp1_{i.replace('-', '_')}": i for i in all_invariants("fsdp")}
globals().update({name: _under("fsdp1", all_invariants("fsdp")[i].check) for name, i in FSDP1.items()})


# -- mutants ----------------------------------------------------------------------------------------------------
def save_local_shards(ctx) -> None:
    """fsdp-save-gathered with each rank's local shards saved as if whole (``to_local()``); kept in options["out"]."""
    import shutil
    from pathlib import Path

    from torch.distributed.tensor import DTensor

    from loraguard.harness.fsdp.sharding import inner
    from loraguard.invariants.fsdp import save_matches_single_process
    from loraguard.invariants.ranks import rank0

    def save(ctx, backend, model, recipe, directory):
        local = {k: v.to_local() if isinstance(v, DTensor) else v for k, v in inner(model).state_dict().items()}

        def write():
            inner(model).save_pretrained(str(directory), state_dict=local)
            shutil.copytree(directory, Path(ctx.options["out"]) / "local-shards")

        rank0(ctx, write)

    save_matches_single_process(ctx, save=save)


def merge_into_gathered_copy(ctx) -> None:
    """fsdp-merge merging into the unsharded copy FSDP2 gathers (``unshard()``): the merge is lost at reshard."""
    from loraguard.harness.fsdp.sharding import inner, unsharded
    from loraguard.invariants.fsdp import merge_matches_single_process

    def merge(ctx, backend, model):
        with unsharded(model):
            backend.merge(inner(model))

    merge_matches_single_process(ctx, merge=merge)


def export_by_merging_in_place(ctx) -> None:
    """fsdp-mixed-export with the naive export: merge the training model itself, then write it."""
    from loraguard.harness.fsdp.export import export_merged
    from loraguard.harness.fsdp.training import merge_sharded
    from loraguard.invariants.fsdp import mixed_training_export

    backend = ctx.backend()

    def naive(model, path):
        merge_sharded(backend, model)
        export_merged(model, path)

    mixed_training_export(ctx, export=naive)


def ungathered_saves(ctx) -> None:
    """What users save from a sharded peft model without gathering, written by rank 0 under options["out"] for the
    audit: FSDP2's state dict pickled (DTensors), FSDP1's flat shards, a torch.distributed.checkpoint directory."""
    from pathlib import Path

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from loraguard.harness.distributed.recipe import Recipe, build
    from loraguard.harness.fsdp.sharding import inner, shard
    from loraguard.invariants.ranks import rank0

    out, backend, recipe = Path(ctx.options["out"]), ctx.backend(), Recipe()
    fsdp2 = shard(build(backend, recipe), "fsdp2", ctx.device)
    rank0(ctx, lambda: fsdp2.save_pretrained(str(out / "dtensor-pickle"), safe_serialization=False))
    dcp.save(get_model_state_dict(fsdp2), checkpoint_id=str(out / "dcp"))
    fsdp1 = shard(build(backend, recipe), "fsdp1", ctx.device)
    rank0(ctx, lambda: inner(fsdp1).save_pretrained(str(out / "flat-shards")))


def suite_in_existing_world(ctx) -> None:
    """loraguard.fsdp.run_suite called inside ranks already launched uses their world and agrees on every rank."""
    import torch.distributed as dist

    from loraguard.fsdp import run_suite
    from loraguard.invariants.checks import expect

    results = run_suite(ctx.world_size, ids=["fsdp-merge"], api="fsdp1")
    expect([(r.id, r.status) for r in results] == [("fsdp-merge", "passed")], f"in-world results: {results}")
    everyone = [None] * ctx.world_size
    dist.all_gather_object(everyone, [(r.id, r.status, r.message) for r in results])
    expect(all(e == everyone[0] for e in everyone), f"ranks returned different results: {everyone}")
