"""The ZeRO-3 invariants: what a LoRA library must still promise when every parameter is sharded across ranks.

Each runs inside every rank (see `loraguard.run.distributed.launch`), compares what ZeRO-3 produced with a
single-process twin trained from the same seed on the same global batches, and uses the comparison primitives of
`loraguard.invariants.checks`. Files are written by rank 0 into the directory all ranks share.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn

from loraguard.backends.base import Backend, Unsupported, optional_methods
from loraguard.core.config import WEIGHTS_NAME
from loraguard.harness.distributed.context import RankContext
from loraguard.harness.distributed.recipe import Recipe, build, probe_inputs, train_single
from loraguard.harness.zero3.gather import gathered, is_partitioned
from loraguard.harness.zero3.training import ds_config, train_zero3, zero3_engine
from loraguard.invariants.checks import (
    InvariantViolation,
    assert_close,
    assert_effect,
    assert_no_empty_tensors,
    assert_state_equal,
    expect,
)
from loraguard.invariants.ranks import adapter_effect, check_saved_adapter, factors, outputs, rank0, workdir
from loraguard.invariants.registry import invariant

if TYPE_CHECKING:
    from deepspeed.runtime.engine import DeepSpeedEngine

F32 = torch.float32


# -- shared steps ---------------------------------------------------------------------------------------------
def _recipe(ctx: RankContext) -> Recipe:
    return Recipe(model=ctx.options.get("model", "mlp"))


def _trained(
    ctx: RankContext, recipe: Recipe, backend: Backend, prepare: Callable[[nn.Module], None] = lambda m: None
) -> tuple[nn.Module, DeepSpeedEngine, nn.Module]:
    """A model trained under ZeRO-3 (with its engine) and its single-process twin, both after `prepare`."""
    model = build(backend, recipe, ctx.device)
    prepare(model)
    engine = zero3_engine(model, recipe, ctx.world_size, ctx.device)
    expect(is_partitioned(model), "deepspeed.initialize at stage 3 left the model unpartitioned; nothing to check")
    ctx.step("train under ZeRO-3")
    train_zero3(engine, recipe, ctx.rank, ctx.device)
    twin = build(backend, recipe, ctx.device)
    prepare(twin)
    train_single(twin, recipe, ctx.world_size, ctx.device)
    return model, engine, twin


def _gathered_save(ctx: RankContext, backend: Backend, model: nn.Module, directory: Path) -> None:
    """The correct ZeRO-3 save: every rank gathers, rank 0 writes."""
    with gathered(model.parameters()):
        rank0(ctx, lambda: backend.save(model, directory))


def _ungathered_save(ctx: RankContext, backend: Backend, model: nn.Module, directory: Path) -> None:
    """The mistake: rank 0 saves its shards as they are."""
    rank0(ctx, lambda: backend.save(model, directory))


# -- the invariants -------------------------------------------------------------------------------------------
@invariant(
    "zero3-save-gathered",
    kind="zero3",
    promise="An adapter saved under GatheredParameters equals, tensor for tensor, the one a single process saves "
    "after the same seed and data.",
)
def save_matches_single_process(ctx: RankContext, save: Callable = _gathered_save) -> None:
    backend, recipe = ctx.backend(), _recipe(ctx)
    model, _, twin = _trained(ctx, recipe, backend)
    adapter_effect(backend, twin, recipe, ctx.device)
    saved, single = workdir(ctx, "save"), workdir(ctx, "save-single", own=True)
    ctx.step("save under ZeRO-3")
    save(ctx, backend, model, saved)
    backend.save(twin, single)
    check_saved_adapter(saved, single, "adapter saved under ZeRO-3 vs single process")


@invariant(
    "zero3-save-ungathered-detected",
    kind="zero3",
    promise="A save taken without gathering is refused by the library or rejected by the zero-size check, never "
    "accepted.",
)
def ungathered_save_detected(ctx: RankContext) -> None:
    backend, recipe = ctx.backend(), _recipe(ctx)
    model, _, twin = _trained(ctx, recipe, backend)
    saved, single = workdir(ctx, "ungathered"), workdir(ctx, "ungathered-single", own=True)
    ctx.step("save without gathering")
    refused = _refuse_or_save(ctx, backend, model, saved)
    if refused:
        return
    backend.save(twin, single)
    try:
        check_saved_adapter(saved, single, "un-gathered save")
    except InvariantViolation:
        return  # detected (zero-size shards), as promised
    # a library that gathers by itself writes a complete, correct file: that is fine too


def _refuse_or_save(ctx: RankContext, backend: Backend, model: nn.Module, directory: Path) -> bool:
    """Attempt the un-gathered save on rank 0; True if the library refused it with an exception."""
    refused = torch.zeros(1)
    if ctx.rank == 0:
        try:
            backend.save(model, directory)
        except Exception:  # noqa: BLE001 - refusing an un-gathered save is the correct behaviour
            refused += 1
    dist.broadcast(refused, 0)
    return bool(refused.item())


@invariant(
    "zero3-merge-gathered",
    kind="zero3",
    promise="Merging under GatheredParameters gives the single-process merged weights, and the merged output "
    "equals the unmerged forward.",
)
def merge_matches_single_process(ctx: RankContext, merge_gathered: bool = True) -> None:
    backend, recipe = ctx.backend(), _recipe(ctx)
    model, engine, twin = _trained(ctx, recipe, backend)
    inputs = probe_inputs(recipe, ctx.device)
    want_out = adapter_effect(backend, twin, recipe, ctx.device)
    unmerged_out = outputs(engine, inputs)
    ctx.step("merge under ZeRO-3")
    with gathered(model.parameters(), modify=merge_gathered):
        backend.merge(model)
    backend.merge(twin)
    with gathered(model.parameters()):
        merged = {p: backend.base_weight(model, p).detach().clone() for p in backend.lora_factors(model, "default")}
    for path, weight in merged.items():
        assert_close(weight, backend.base_weight(twin, path).detach(), F32, f"merged weight of {path}")
    merged_out = outputs(engine, inputs)
    assert_close(merged_out, unmerged_out, F32, "merged output vs unmerged forward under ZeRO-3", depth=3)
    assert_close(merged_out, want_out, F32, "merged output under ZeRO-3 vs single process", depth=3)


def _train_base_too(backend: Backend) -> Callable[[nn.Module], None]:
    """Unfreeze the base weight of every LoRA layer: base and LoRA train together (the founding bug)."""

    def prepare(model: nn.Module) -> None:
        for path in backend.lora_factors(model, "default"):
            backend.base_weight(model, path).requires_grad_(True)

    return prepare


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter, whole, cloned (a collective under ZeRO-3)."""
    with gathered(model.parameters()):
        return {n: p.detach().clone() for n, p in model.named_parameters()}


@invariant(
    "zero3-mixed-export",
    kind="zero3",
    promise="After training base weights with an unmerged LoRA, the merged export equals the trained forward, "
    "leaves the training model untouched, and is the same file from N ranks as from one process.",
)
def mixed_training_export(ctx: RankContext, export: Callable[[nn.Module, Path], object] | None = None) -> None:
    from loraguard.harness.zero3.export import export_merged, merged_state_dict

    export = export or export_merged
    backend, recipe = ctx.backend(), _recipe(ctx)
    model, engine, twin = _trained(ctx, recipe, backend, _train_base_too(backend))
    inputs = probe_inputs(recipe, ctx.device)
    trained_out = outputs(engine, inputs)
    with backend.disabled(model):
        assert_effect(trained_out, outputs(engine, inputs), F32, "the adapter after mixed training", depth=3)
    before = _snapshot(model)
    layout = {n: (p.shape, p.device, p.requires_grad) for n, p in model.named_parameters()}
    path = workdir(ctx, "export") / "merged.safetensors"
    ctx.step("export under ZeRO-3")
    export(engine, path)

    assert_state_equal(_snapshot(model), before, "training model parameters after export")
    expect(
        {n: (p.shape, p.device, p.requires_grad) for n, p in model.named_parameters()} == layout,
        "export changed the training model's shards, devices or trainable flags",
    )
    expect(
        torch.equal(outputs(engine, inputs), trained_out),
        "the training model's output changed after export: it was merged in place",
    )

    exported = load_file(str(path))
    assert_no_empty_tensors(exported, "exported merged model")
    plain = recipe.zoo.make(seed=recipe.seed + 1, device=ctx.device)
    plain.load_state_dict(exported, strict=True)
    assert_close(outputs(plain, inputs), trained_out, F32, "exported merged model vs trained forward", depth=3)

    ctx.step("export from one process")
    single = build(backend, recipe, ctx.device)
    _train_base_too(backend)(single)
    with torch.no_grad():
        for name, param in single.named_parameters():
            param.copy_(before[name])
    assert_state_equal(
        exported,
        merged_state_dict(single),
        f"merged file from {ctx.world_size} ZeRO-3 ranks vs one process with the same weights",
    )


@invariant(
    "zero3-checkpoint-consolidation",
    kind="zero3",
    promise="save_checkpoint then zero_to_fp32 consolidation gives the same adapter as the gathered save.",
)
def checkpoint_consolidation(ctx: RankContext) -> None:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    backend, recipe = ctx.backend(), _recipe(ctx)
    model, engine, _ = _trained(ctx, recipe, backend)
    saved, ckpt = workdir(ctx, "ckpt-gathered"), workdir(ctx, "ckpt")
    _gathered_save(ctx, backend, model, saved)
    ctx.step("save_checkpoint")
    engine.save_checkpoint(str(ckpt), tag="final")
    dist.barrier()
    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="final")
    consolidated = build(backend, recipe, ctx.device)
    missing, unexpected = consolidated.load_state_dict(state, strict=False)
    expect(
        not unexpected and not [k for k in missing if k in dict(consolidated.named_parameters())],
        f"zero_to_fp32 state does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}",
    )
    mine = workdir(ctx, "ckpt-consolidated", own=True)
    backend.save(consolidated, mine)
    got, want = load_file(str(mine / WEIGHTS_NAME)), load_file(str(saved / WEIGHTS_NAME))
    assert_no_empty_tensors(want, "gathered save")
    assert_state_equal(got, want, "adapter from zero_to_fp32 vs gathered save")


@invariant(
    "zero3-init-load",
    kind="zero3",
    promise="An adapter loaded into a model built under zero.Init gives the same outputs as without ZeRO.",
)
def zero_init_load(ctx: RankContext) -> None:
    import deepspeed

    from loraguard.harness.distributed.world import init_deepspeed_comm

    backend, recipe = ctx.backend(), _recipe(ctx)
    twin = build(backend, recipe, ctx.device)
    train_single(twin, recipe, ctx.world_size, ctx.device)
    want = adapter_effect(backend, twin, recipe, ctx.device)
    adapter = workdir(ctx, "init-adapter", own=True)
    backend.save(twin, adapter)

    init_deepspeed_comm(ctx.device)
    config = ds_config(ctx.world_size, 1)
    ctx.step("build under zero.Init")
    with deepspeed.zero.Init(config_dict_or_path=config):
        torch.manual_seed(recipe.seed)
        base = recipe.zoo.build()
    expect(is_partitioned(base), "zero.Init left the base model unpartitioned; nothing to check")
    model = backend.load(base, adapter)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    assert_close(
        outputs(engine, probe_inputs(recipe, ctx.device)),
        want,
        F32,
        "adapter loaded into a zero.Init model vs without ZeRO",
        depth=3,
    )


@invariant(
    "zero3-two-adapters",
    kind="zero3",
    promise="With two adapters under ZeRO-3, training one leaves the other bit-identical and both round-trip "
    "through save and load bit for bit.",
)
def two_adapters(ctx: RankContext) -> None:
    from loraguard.core.config import LoraConfig

    backend, recipe = ctx.backend(), _recipe(ctx)
    missing = {"multi_adapter", "save_load", "load_adapter"} - set(backend.capabilities)
    if missing:
        raise Unsupported(f"backend {backend.name!r} lacks {sorted(missing)}")
    other = LoraConfig(r=2, lora_alpha=4, target_modules=recipe.zoo.target_modules[:1], init_lora_weights=False)

    def add_other(model: nn.Module) -> None:
        backend.add_adapter(model, "other", other)
        backend.set_adapter(model, ["default"])

    model, _, _ = _trained(ctx, recipe, backend, add_other)
    fresh = build(backend, recipe, ctx.device)
    add_other(fresh)
    with gathered(model.parameters()):
        trained = {a: factors(backend, model, a) for a in ("default", "other")}
        rank0(ctx, lambda: backend.save(model, workdir(ctx, "two")))
    untouched = {a: factors(backend, fresh, a) for a in ("default", "other")}
    assert_state_equal(trained["other"], untouched["other"], "adapter 'other' after training 'default' under ZeRO-3")
    expect(
        any(not torch.equal(trained["default"][k], untouched["default"][k]) for k in trained["default"]),
        "training 'default' under ZeRO-3 changed none of its factors; isolation would hold vacuously",
    )

    ctx.step("load both adapters")
    loaded = backend.load(recipe.zoo.make(seed=recipe.seed, device=ctx.device), workdir(ctx, "two"))
    optional_methods(backend).load_adapter(loaded, workdir(ctx, "two") / "other", "other")
    for adapter in ("default", "other"):
        assert_state_equal(
            factors(backend, loaded, adapter),
            trained[adapter],
            f"adapter {adapter!r} saved under ZeRO-3 and loaded back",
        )
