"""Explicit operation sequences the op-sequence invariant replays on every run, before its drawn ones.

Each is a sequence that once exposed a real bug (in peft 0.21.2 or earlier), so the default profile finds
those bugs deterministically, not only when random draws happen upon them. They run through the same state
machine as the drawn sequences: every step is applied to the backend and the reference, then compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from loraguard.core.config import LoraConfig


def _cfg(targets: list[str], saved: list[str] | None = None, **extra: Any) -> LoraConfig:
    return LoraConfig(
        r=2, lora_alpha=8, target_modules=targets, modules_to_save=saved, init_lora_weights=False, **extra
    )


@dataclass(frozen=True)
class SequenceExample:
    """A tree, the first adapter (and an optional second), then steps as (rule name, arguments)."""

    why: str
    leaves: tuple[tuple[str, str], ...]
    config: LoraConfig
    second: LoraConfig | None = None
    steps: tuple[tuple[str, dict[str, Any]], ...] = ()
    dtype: torch.dtype = torch.float32
    needs: frozenset[str] = field(default_factory=frozenset)


EXAMPLES: tuple[SequenceExample, ...] = (
    SequenceExample(
        "modules_to_save=['fc'] matched with a bare str.endswith also catches the LoRA target 'xfc' "
        "(huggingface/peft#1917): wrapping it as a copy fails",
        (("fc", "linear"), ("xfc", "linear")),
        _cfg(["xfc"], ["fc"]),
        steps=(("train", {"name": "default", "seed": 1}), ("save_and_load", {"trainable": True})),
        needs=frozenset({"modules_to_save", "save_load"}),
    ),
    SequenceExample(
        "a module named like an adapter ('default') leaks its LoRA keys, adapter name included, into another "
        "adapter's save",
        (("default", "linear"), ("fc", "linear")),
        _cfg(["fc"]),
        second=_cfg(["default"]),
        steps=(("set_adapter", {"names": ["default", "adapter1"]}), ("save_and_load", {"trainable": True})),
        needs=frozenset({"multi_adapter", "save_load", "load_adapter"}),
    ),
    SequenceExample(
        "modules_to_save=['base'] on a model with 'base' and 'base.base' wraps both; the save no longer loads",
        (("base.base", "linear"), ("fc", "linear")),
        _cfg(["fc"], ["base"]),
        steps=(("train", {"name": "default", "seed": 2}), ("save_and_load", {"trainable": False})),
        needs=frozenset({"modules_to_save", "save_load"}),
    ),
    SequenceExample(
        "several active adapters with modules_to_save, merged in bfloat16, switched, deleted, loaded for inference",
        (("blocks.0.fc", "linear"), ("blocks.1.fc", "linear"), ("head", "linear")),
        _cfg(["fc"], ["head"]),
        second=_cfg(["blocks.1.fc"], use_rslora=True),
        steps=(
            ("set_adapter", {"names": ["default", "adapter1"]}),
            ("merge", {}),
            ("unmerge", {}),
            ("set_adapter", {"names": ["adapter1"]}),
            ("delete_adapter", {"name": "default"}),
            ("save_and_load", {"trainable": False}),
        ),
        dtype=torch.bfloat16,
        needs=frozenset({"multi_adapter", "modules_to_save", "delete_adapter", "save_load", "bfloat16", "rslora"}),
    ),
)
