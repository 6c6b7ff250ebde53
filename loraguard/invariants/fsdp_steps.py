"""The steps the FSDP invariants share: backend and recipe, sharded and single-process models, the gathered save."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loraguard.backends.base import Backend, Unsupported
from loraguard.harness.distributed.context import RankContext
from loraguard.harness.distributed.recipe import Recipe, build, train_single
from loraguard.harness.fsdp.sharding import check_api, full_state, inner, is_sharded, shard
from loraguard.harness.fsdp.training import optimizer_for, train_sharded
from loraguard.invariants.checks import assert_close, assert_equal, assert_same_keys, expect
from loraguard.invariants.ranks import rank0

F32 = torch.float32
Prepare = Callable[[nn.Module], None]


def setup(ctx: RankContext, *needs: str) -> tuple[Backend, Recipe]:
    """The backend under test and the recipe, or Unsupported naming the capabilities the invariant needs."""
    backend = ctx.backend()
    missing = sorted(set(needs) - set(backend.capabilities))
    if missing:
        raise Unsupported(f"backend {backend.name!r} lacks {', '.join(missing)}")
    caps = set(backend.capabilities)
    return backend, Recipe(model=ctx.options.get("model", "mlp"), modules_to_save="modules_to_save" in caps)


def fsdp_api(ctx: RankContext) -> str:
    """The FSDP API the run asked for (fsdp2 by default)."""
    return check_api(ctx.options.get("api", "fsdp2"))


def sharded_model(ctx: RankContext, recipe: Recipe, backend: Backend, prepare: Prepare = lambda m: None) -> nn.Module:
    """The recipe's model, prepared, then sharded with the run's FSDP API."""
    model = build(backend, recipe, ctx.device)
    prepare(model)
    sharded = shard(model, fsdp_api(ctx), ctx.device)
    expect(is_sharded(sharded), f"{fsdp_api(ctx)} left the model unsharded; nothing to check")
    return sharded


def train_with_twin(
    ctx: RankContext, recipe: Recipe, backend: Backend, prepare: Prepare = lambda m: None
) -> tuple[nn.Module, torch.optim.Optimizer, nn.Module]:
    """A model trained under FSDP (with its optimizer) and its single-process twin, both after `prepare`."""
    model = sharded_model(ctx, recipe, backend, prepare)
    opt = optimizer_for(model, recipe)
    ctx.step(f"train under {fsdp_api(ctx)}")
    train_sharded(model, opt, recipe, ctx.rank, ctx.device)
    twin = build(backend, recipe, ctx.device)
    prepare(twin)
    train_single(twin, recipe, ctx.world_size, ctx.device)
    return model, opt, twin


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of `model`'s state dict on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def unsharded_copy(
    backend: Backend, recipe: Recipe, state: dict[str, torch.Tensor], prepare: Prepare = lambda m: None
) -> nn.Module:
    """A single-process model holding `state` (a gathered full state dict), strictly loaded."""
    copy = build(backend, recipe)
    prepare(copy)
    copy.load_state_dict(state, strict=True)
    return copy


def gathered_save(
    ctx: RankContext,
    backend: Backend,
    model: nn.Module,
    recipe: Recipe,
    directory: Path,
    prepare: Prepare | None = None,
) -> None:
    """The correct FSDP save: gather the full state dict on every rank, then rank 0 saves it.

    peft takes it as ``save_pretrained(dir, state_dict=...)`` on the sharded model (what accelerate and the
    Trainer do); another library saves a single-process copy that holds the gathered state.
    """
    state = full_state(model)

    def write() -> None:
        if backend.name == "peft":
            peft_model: Any = inner(model)
            peft_model.save_pretrained(str(directory), state_dict=state)
        else:
            backend.save(unsharded_copy(backend, recipe, state, prepare or (lambda m: None)), directory)

    rank0(ctx, write)


def check_same_state(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], frozen: set[str], what: str) -> None:
    """Same keys; frozen tensors bit-identical, trained ones within the float32 bound (reduction order differs)."""
    assert_same_keys(got, want, what)
    for key in sorted(want):
        if key in frozen:
            assert_equal(got[key], want[key], f"{what}: {key} (frozen)")
        else:
            assert_close(got[key], want[key], F32, f"{what}: {key}")


def frozen_names(model: nn.Module) -> set[str]:
    """Names of the parameters that do not train."""
    return {n for n, p in model.named_parameters() if not p.requires_grad}
