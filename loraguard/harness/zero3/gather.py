"""Whole parameters from ZeRO-3 shards: the one place loraguard enters `deepspeed.zero.GatheredParameters`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn


def is_partitioned(module: nn.Module) -> bool:
    """True if any parameter of `module` is a ZeRO-3 shard (DeepSpeed tags them with `ds_id`)."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


@contextmanager
def gathered(params: Iterable[nn.Parameter], modify: bool = False) -> Iterator[None]:
    """`params` whole on every rank; a collective, so every rank must enter it with the same parameters.

    With `modify`, rank 0's changes are written back to the shards when the context ends; otherwise the
    gathered values are read-only. Parameters that are not partitioned need no gather and get none.
    """
    params = list(params)
    if not any(hasattr(p, "ds_id") for p in params):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=0 if modify else None):
        yield
