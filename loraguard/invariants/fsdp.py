"""The PyTorch FSDP invariants: what a LoRA library must still promise when its parameters are sharded by FSDP.

Each runs inside every rank (see `loraguard.run.distributed.launch`) with the API in the run's options
(``fsdp2``: ``fully_shard``, the default; ``fsdp1``: ``FullyShardedDataParallel(use_orig_params=True)``), and
compares what the sharded run produced with a single-process twin trained from the same seed on the same
global batches. Files are written by rank 0 into the directory all ranks share.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn

from loraguard.backends.base import Backend, Unsupported, optional_methods
from loraguard.core.config import LoraConfig
from loraguard.harness.distributed.context import RankContext
from loraguard.harness.distributed.recipe import Recipe, build, probe_inputs
from loraguard.harness.fsdp.sharding import full_state, inner
from loraguard.harness.fsdp.training import (
    load_checkpoint,
    merge_sharded,
    optimizer_for,
    save_checkpoint,
    train_sharded,
)
from loraguard.invariants.checks import (
    InvariantViolation,
    assert_close,
    assert_effect,
    assert_no_empty_tensors,
    assert_state_equal,
    expect,
)
from loraguard.invariants.fsdp_steps import (
    F32,
    Prepare,
    check_same_state,
    cpu_state,
    frozen_names,
    gathered_save,
    setup,
    sharded_model,
    train_with_twin,
    unsharded_copy,
)
from loraguard.invariants.ranks import adapter_effect, check_saved_adapter, factors, outputs, workdir
from loraguard.invariants.registry import invariant


# -- the invariants -------------------------------------------------------------------------------------------
@invariant(
    "fsdp-full-state-dict",
    kind="fsdp",
    promise="The full state dict gathered with torch.distributed.checkpoint.state_dict equals a single-process "
    "model's state dict key for key: frozen tensors bit for bit, trained ones within the float32 bound.",
)
def full_state_dict(ctx: RankContext) -> None:
    backend, recipe = setup(ctx, "disable")
    model, _, twin = train_with_twin(ctx, recipe, backend)
    adapter_effect(backend, twin, recipe, ctx.device)
    ctx.step("gather the full state dict")
    check_same_state(
        full_state(model), cpu_state(twin), frozen_names(twin), "full state dict under FSDP vs one process"
    )


@invariant(
    "fsdp-save-gathered",
    kind="fsdp",
    promise="An adapter saved from the sharded model with the gathered state dict equals the single-process save "
    "tensor for tensor and loads back exactly.",
)
def save_matches_single_process(ctx: RankContext, save: Callable | None = None) -> None:
    backend, recipe = setup(ctx, "disable", "save_load")
    model, _, twin = train_with_twin(ctx, recipe, backend)
    adapter_effect(backend, twin, recipe, ctx.device)
    saved, single = workdir(ctx, "save"), workdir(ctx, "save-single", own=True)
    ctx.step("save under FSDP")
    (save or gathered_save)(ctx, backend, model, recipe, saved)
    backend.save(twin, single)
    check_saved_adapter(saved, single, "adapter saved under FSDP vs single process")

    ctx.step("load the saved adapter")
    trained = unsharded_copy(backend, recipe, full_state(model))
    loaded = backend.load(recipe.zoo.make(seed=recipe.seed, device="cpu"), saved)
    assert_state_equal(
        factors(backend, loaded, "default"), factors(backend, trained, "default"), "adapter saved under FSDP, loaded"
    )
    for path, copy in backend.saved_copies(trained, "default").items():
        assert_state_equal(backend.saved_copies(loaded, "default")[path], copy, f"modules_to_save {path}, loaded")


@invariant(
    "fsdp-save-ungathered-detected",
    kind="fsdp",
    promise="A save taken from the sharded model without gathering is refused by the library or rejected by the "
    "shape and zero-size checks, never accepted.",
)
def ungathered_save_detected(ctx: RankContext) -> None:
    backend, recipe = setup(ctx, "save_load")
    model, _, twin = train_with_twin(ctx, recipe, backend)
    saved, single = workdir(ctx, "ungathered"), workdir(ctx, "ungathered-single", own=True)
    ctx.step("save without gathering")
    refused = torch.zeros(1)
    if ctx.rank == 0:
        try:
            backend.save(inner(model), saved)
        except Exception:  # noqa: BLE001 - refusing an un-gathered save is the correct behaviour
            refused += 1
    dist.broadcast(refused, 0)
    if refused.item():
        return
    backend.save(twin, single)
    try:
        check_saved_adapter(saved, single, "un-gathered save")
    except InvariantViolation:
        return  # detected (local shards: wrong shapes or no elements), as promised
    # a library that gathers by itself writes a complete, correct file: that is fine too


def _merge_correctly(ctx: RankContext, backend: Backend, model: nn.Module) -> None:
    merge_sharded(backend, model)


@invariant(
    "fsdp-merge",
    kind="fsdp",
    promise="Merging the sharded model gives the single-process merged weights, and the merged output equals the "
    "unmerged forward.",
)
def merge_matches_single_process(ctx: RankContext, merge: Callable = _merge_correctly) -> None:
    backend, recipe = setup(ctx, "disable")
    model, _, twin = train_with_twin(ctx, recipe, backend)
    inputs = probe_inputs(recipe, ctx.device)
    want_out = adapter_effect(backend, twin, recipe, ctx.device)
    unmerged_out = outputs(model, inputs)
    ctx.step("merge under FSDP")
    merge(ctx, backend, model)
    backend.merge(twin)
    merged, want = full_state(model), cpu_state(twin)
    for path in backend.lora_factors(twin, "default"):
        key = next(n for n, p in twin.named_parameters() if p is backend.base_weight(twin, path))
        assert_close(merged[key], want[key], F32, f"merged weight of {path}")
    merged_out = outputs(model, inputs)
    assert_close(merged_out, unmerged_out, F32, "merged output vs unmerged forward under FSDP", depth=3)
    assert_close(merged_out, want_out, F32, "merged output under FSDP vs single process", depth=3)


def _other_adapter(backend: Backend, recipe: Recipe) -> Prepare:
    """A second adapter with its own modules_to_save copy; 'default' stays the active (trained) one."""
    if not recipe.zoo.modules_to_save:
        raise Unsupported(f"zoo model {recipe.model!r} has no modules_to_save")
    config = LoraConfig(
        r=2,
        lora_alpha=4,
        target_modules=recipe.zoo.target_modules[:1],
        modules_to_save=list(recipe.zoo.modules_to_save),
        init_lora_weights=False,
    )

    def prepare(model: nn.Module) -> None:
        backend.add_adapter(model, "other", config)
        backend.set_adapter(model, ["default"])

    return prepare


def _wrapped_twice(model: nn.Module) -> list[str]:
    """modules_to_save wrappers nested in another wrapper's copy or original (peft#2250-style double wrapping)."""
    nested = []
    for name, module in model.named_modules():
        if hasattr(module, "original_module") and hasattr(module, "modules_to_save"):
            held = [module.original_module, *module.modules_to_save.values()]
            nested += [f"{name}.{n}" for m in held for n, sub in m.named_modules() if hasattr(sub, "original_module")]
    return nested


@invariant(
    "fsdp-modules-to-save",
    kind="fsdp",
    promise="Under FSDP each adapter keeps its own modules_to_save copy: training one changes only its copy, the "
    "original and the other adapter's copy stay bit-identical, nothing is wrapped twice, and both round-trip.",
)
def modules_to_save_per_adapter(ctx: RankContext) -> None:
    backend, recipe = setup(ctx, "multi_adapter", "modules_to_save", "save_load", "load_adapter")
    prepare = _other_adapter(backend, recipe)
    model, _, twin = train_with_twin(ctx, recipe, backend, prepare)
    expect(
        not _wrapped_twice(inner(model)), f"modules_to_save wrapped twice under FSDP: {_wrapped_twice(inner(model))}"
    )
    fresh = build(backend, recipe)
    prepare(fresh)
    trained = unsharded_copy(backend, recipe, full_state(model), prepare)
    originals = {k: v for k, v in cpu_state(fresh).items() if ".original_module." in k}
    expect(bool(originals), "no original_module tensor in the state dict; cannot check the original stays put")
    assert_state_equal(
        {k: v for k, v in cpu_state(trained).items() if k in originals}, originals, "original modules after training"
    )
    for path, copy in backend.saved_copies(fresh, "other").items():
        assert_state_equal(backend.saved_copies(trained, "other")[path], copy, f"'other' adapter's copy of {path}")
    assert_state_equal(factors(backend, trained, "other"), factors(backend, fresh, "other"), "'other' adapter")
    for path, copy in backend.saved_copies(twin, "default").items():
        got = backend.saved_copies(trained, "default")[path]
        expect(
            any(not torch.equal(got[k], backend.saved_copies(fresh, "default")[path][k]) for k in got),
            f"training did not change 'default''s copy of {path}; isolation would hold vacuously",
        )
        for key in copy:
            assert_close(got[key], copy[key], F32, f"'default' copy of {path}: {key} vs one process")

    ctx.step("save and load both adapters")
    directory = workdir(ctx, "two")
    gathered_save(ctx, backend, model, recipe, directory, prepare)
    loaded = backend.load(recipe.zoo.make(seed=recipe.seed, device="cpu"), directory)
    optional_methods(backend).load_adapter(loaded, directory / "other", "other")
    expect(not _wrapped_twice(loaded), f"modules_to_save wrapped twice after loading: {_wrapped_twice(loaded)}")
    for adapter in ("default", "other"):
        assert_state_equal(factors(backend, loaded, adapter), factors(backend, trained, adapter), f"{adapter!r} loaded")
        for path, copy in backend.saved_copies(trained, adapter).items():
            assert_state_equal(backend.saved_copies(loaded, adapter)[path], copy, f"{adapter!r} copy of {path} loaded")


@invariant(
    "fsdp-dcp-resume",
    kind="fsdp",
    promise="A sharded torch.distributed.checkpoint of model and optimizer, taken mid-training and loaded into "
    "a fresh sharded model, resumes to the same weights bit for bit as uninterrupted training.",
)
def checkpoint_resume(ctx: RankContext) -> None:
    backend, recipe = setup(ctx)
    split = max(1, recipe.steps - 1)
    model = sharded_model(ctx, recipe, backend)
    opt = optimizer_for(model, recipe)
    start = full_state(model)
    train_sharded(model, opt, recipe, ctx.rank, ctx.device, range(split))
    directory = workdir(ctx, "dcp")
    ctx.step("save a sharded checkpoint")
    save_checkpoint(model, opt, directory)
    middle = full_state(model)
    train_sharded(model, opt, recipe, ctx.rank, ctx.device, range(split, recipe.steps))
    uninterrupted = full_state(model)
    expect(
        any(not torch.equal(middle[k], start[k]) for k in start)
        and any(not torch.equal(uninterrupted[k], middle[k]) for k in middle),
        "training before or after the checkpoint changed nothing; the comparison would prove nothing",
    )

    ctx.step("resume from the checkpoint")
    resumed = sharded_model(ctx, recipe, backend)
    resumed_opt = optimizer_for(resumed, recipe)
    load_checkpoint(resumed, resumed_opt, directory)
    assert_state_equal(full_state(resumed), middle, "model loaded from the sharded checkpoint")
    train_sharded(resumed, resumed_opt, recipe, ctx.rank, ctx.device, range(split, recipe.steps))
    assert_state_equal(full_state(resumed), uninterrupted, "resumed training vs uninterrupted training")


def _train_base_too(backend: Backend) -> Prepare:
    """Unfreeze the base weight of every LoRA layer: base and LoRA train together (the founding bug)."""

    def prepare(model: nn.Module) -> None:
        for path in backend.lora_factors(model, "default"):
            backend.base_weight(model, path).requires_grad_(True)

    return prepare


def _layout(model: nn.Module) -> dict[str, tuple]:
    return {n: (type(p).__name__, tuple(p.shape), p.device, p.requires_grad) for n, p in model.named_parameters()}


@invariant(
    "fsdp-mixed-export",
    kind="fsdp",
    promise="After training base weights with an unmerged LoRA under FSDP, the merged export equals the trained "
    "forward, leaves the training model untouched, and is the same file from N ranks as from one process.",
)
def mixed_training_export(ctx: RankContext, export: Callable[[nn.Module, Path], object] | None = None) -> None:
    from loraguard.harness.fsdp.export import export_merged, merged_state_dict

    backend, recipe = setup(ctx, "disable")
    prepare = _train_base_too(backend)
    model, _, _ = train_with_twin(ctx, recipe, backend, prepare)
    inputs = probe_inputs(recipe, ctx.device)
    trained_out = outputs(model, inputs)
    with backend.disabled(inner(model)):
        assert_effect(trained_out, outputs(model, inputs), F32, "the adapter after mixed training", depth=3)
    before, layout = full_state(model), _layout(model)
    path = workdir(ctx, "export") / "merged.safetensors"
    ctx.step("export under FSDP")
    (export or export_merged)(model, path)

    assert_state_equal(full_state(model), before, "training model parameters after export")
    expect(_layout(model) == layout, "export changed the training model's shards, devices or trainable flags")
    expect(
        torch.equal(outputs(model, inputs), trained_out),
        "the training model's output changed after export: it was merged in place",
    )
    dist.barrier()
    exported = load_file(str(path))
    assert_no_empty_tensors(exported, "exported merged model")
    plain = recipe.zoo.make(seed=recipe.seed + 1, device=ctx.device)
    plain.load_state_dict(exported, strict=True)
    assert_close(outputs(plain, inputs), trained_out, F32, "exported merged model vs trained forward", depth=3)

    ctx.step("export from one process")
    single = unsharded_copy(backend, recipe, before, prepare)
    assert_state_equal(
        exported, merged_state_dict(single), f"merged file from {ctx.world_size} FSDP ranks vs one process"
    )
