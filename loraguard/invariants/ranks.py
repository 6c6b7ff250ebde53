"""Steps the distributed invariants (ZeRO-3, FSDP) share: shared directories, rank-0 actions, eval outputs,
saved-adapter comparison."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn

from loraguard.core.config import WEIGHTS_NAME
from loraguard.harness.distributed.context import RankContext
from loraguard.harness.distributed.recipe import Recipe, probe_inputs
from loraguard.harness.zoo import run
from loraguard.invariants.checks import assert_close, assert_effect, assert_no_empty_tensors, assert_same_keys

if TYPE_CHECKING:
    from loraguard.backends.base import Backend


def workdir(ctx: RankContext, name: str, own: bool = False) -> Path:
    """A directory under the shared workdir; `own` gives this rank a private one."""
    path = ctx.workdir / name / (f"rank{ctx.rank}" if own else "")
    path.mkdir(parents=True, exist_ok=True)
    return path


def rank0(ctx: RankContext, action: Callable[[], None]) -> None:
    """Run `action` on rank 0 only, then wait until it is done everywhere."""
    if ctx.rank == 0:
        action()
    dist.barrier()


def outputs(model: nn.Module, inputs: tuple) -> torch.Tensor:
    """Eval-mode forward without gradients (a collective for a ZeRO-3 engine)."""
    model.eval()
    with torch.no_grad():
        return run(model, inputs).float()


def check_saved_adapter(got_dir: Path, want_dir: Path, what: str) -> None:
    """A saved adapter has no zero-size tensor and matches the expected one key for key, tensor for tensor."""
    got, want = load_file(str(got_dir / WEIGHTS_NAME)), load_file(str(want_dir / WEIGHTS_NAME))
    assert_no_empty_tensors(got, what)
    assert_same_keys(got, want, what)
    for key in sorted(want):
        assert_close(got[key], want[key], want[key].dtype, f"{what}: {key}")


def factors(backend: Backend, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """An adapter's LoRA factors as a flat state (``<path>.lora_A`` / ``<path>.lora_B``), cloned."""
    out = {}
    for path, (a, b) in backend.lora_factors(model, adapter).items():
        out[f"{path}.lora_A"], out[f"{path}.lora_B"] = a.detach().clone(), b.detach().clone()
    return out


def adapter_effect(backend: Backend, twin: nn.Module, recipe: Recipe, device: str) -> torch.Tensor:
    """The twin's output, after checking its adapter changes it (else every equality here proves nothing)."""
    inputs = probe_inputs(recipe, device)
    out = outputs(twin, inputs)
    with backend.disabled(twin):
        base = outputs(twin, inputs)
    assert_effect(out, base, torch.float32, "the trained adapter", depth=3)
    return out
