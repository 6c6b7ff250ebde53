"""Small builders shared by the reference tests: a zoo model wrapped with a given config, and exact comparisons."""

from __future__ import annotations

import torch

from loraguard.core.config import LoraConfig
from loraguard.core.tolerance import EFFECT_MARGIN, bound, max_diff
from loraguard.harness.zoo import ZOO
from loraguard.reference import LoraModel


def wrapped(zoo_name: str, **config: object) -> LoraModel:
    """Zoo model `zoo_name` (seed 0) under the reference with non-zero adapter weights and the given config."""
    config.setdefault("init_lora_weights", False)
    return LoraModel(ZOO[zoo_name].make(), LoraConfig(**config))


def assert_close(got: torch.Tensor, want: torch.Tensor, depth: int = 1) -> None:
    """Equal within the tolerance table's bound for `want`'s dtype."""
    diff, limit = max_diff(got, want), bound(want, want.dtype, depth)
    assert diff <= limit, f"max difference {diff:.3g} exceeds the {want.dtype} bound {limit:.3g}"


def assert_changes(got: torch.Tensor, base: torch.Tensor) -> None:
    """The adapter visibly changes the output, so a later equality is not vacuous."""
    assert max_diff(got, base) > EFFECT_MARGIN * bound(base, base.dtype), "the adapter has no visible effect"
