"""modules_to_save in the reference: one independent trainable copy of a module per adapter, the original untouched.

Names mirror peft's (`original_module`, `modules_to_save.<adapter>`) so state dicts line up key for key.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn


class ModulesToSave(nn.Module):
    """A module trained in full for some adapters: one independent copy per adapter, the original untouched."""

    def __init__(self, original_module: nn.Module):
        super().__init__()
        self.original_module = original_module
        self.modules_to_save = nn.ModuleDict()
        self.active_adapters: list[str] = []
        self.disabled = False

    def add(self, name: str) -> None:
        self.modules_to_save[name] = copy.deepcopy(self.original_module)

    def delete(self, name: str) -> None:
        if name in self.modules_to_save:
            del self.modules_to_save[name]
        self.active_adapters = [a for a in self.active_adapters if a != name]

    def adapters(self) -> list[str]:
        return list(self.modules_to_save)

    def active_copy(self) -> nn.Module:
        """The module forward runs: the active adapter's copy, or the original when none applies."""
        if self.disabled:
            return self.original_module
        mine = [a for a in self.active_adapters if a in self.modules_to_save]
        if len(mine) > 1:
            raise RuntimeError(f"adapters {mine} each have their own copy of this module; activate only one of them")
        return self.modules_to_save[mine[0]] if mine else self.original_module

    def forward(self, *args: object, **kwargs: object) -> Any:
        return self.active_copy()(*args, **kwargs)
