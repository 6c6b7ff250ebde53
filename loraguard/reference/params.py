"""LoRA on a parameter instead of a module (`target_parameters`, peft's ParamWrapper): MoE expert stacks and the like.

A wrapper replaces the module holding the parameter; a second parameter of that module nests a second wrapper around
the first (as its `base_layer`), so saved keys are peft's: ``experts.lora_A.weight`` for the parameter matched last,
``experts.base_layer.lora_A.weight`` for the one before it. The forward runs the module with the parameter replaced
by ``W + the active adapters' deltas``. A 2D parameter (out, in) takes a Linear's delta; a 3D one (experts, d1, d2)
one per expert (`core.merge_math.delta_weight`, kind "experts"). Refused as peft refuses them: dropout (x cannot be
factored out of the weight), DoRA, lora_bias, fan_in_fan_out, a parameter of the top-level module or of a module
that target_modules also adapts, and adapters targeting different parameter sets.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from loraguard.core.matching import parameter_selected
from loraguard.core.merge_math import delta_weight
from loraguard.reference.layers import LoraLayer, _wide


class LoraParameter(LoraLayer):
    """LoRA on parameter `parameter_name` of the module at the bottom of `base_layer` (a module or another wrapper)."""

    lora_A: nn.ModuleDict
    lora_B: nn.ModuleDict

    def __init__(self, base_layer: nn.Module, parameter_name: str):
        super().__init__(base_layer)
        self.parameter_name = parameter_name
        shape = self.base_weight().shape
        if len(shape) == 3:  # (experts, d1, d2): B maps to d1 and A reads d2, swapped on a module marked transposed
            self.kind = "experts"
            self.experts = shape[0]
            self.fan_in_fan_out = bool(getattr(self.holder(), "is_transposed", False))
            self.out_features, self.in_features = (shape[2], shape[1]) if self.fan_in_fan_out else (shape[1], shape[2])
        elif len(shape) == 2:  # (out, in), as nn.Linear's weight
            self.kind, self.experts = "linear", 1
            self.out_features, self.in_features = shape
        else:
            raise ValueError(f"target_parameters: '{parameter_name}' has {len(shape)} dimensions; only 2 or 3 work")

    def holder(self) -> nn.Module:
        """The module that owns the parameter (below any nested wrappers)."""
        module = self.base_layer
        while isinstance(module, LoraParameter):
            module = module.base_layer
        return module

    def unwrapped(self) -> nn.Module:
        return self.holder()

    def base_weight(self) -> torch.Tensor:
        return cast(torch.Tensor, getattr(self.holder(), self.parameter_name))

    def _create(self, name: str, rank: int, lora_bias: bool) -> None:
        self.lora_A[name] = nn.Linear(self.in_features, rank * self.experts, bias=False)
        self.lora_B[name] = nn.Linear(rank * self.experts, self.out_features, bias=False)

    def delta(self, name: str) -> torch.Tensor:
        a, b = self.factors(name)
        return delta_weight(a, b, self.scaling[name], self.kind, self.fan_in_fan_out, self.experts)

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        if self.disabled and self.merged_adapters:
            raise RuntimeError("adapters are merged into this parameter; unmerge() before disabling them")
        active = [n for n in self.active_adapters if n in self.scaling and n not in self.merged_adapters]
        if self.disabled or not active:
            return self.base_layer(*args, **kwargs)
        weight = self.base_weight()
        adapted = _wide(weight) + sum(self.delta(n) for n in active)
        key, module = self.parameter_name, self.base_layer  # the parameter's name below `base_layer`
        while isinstance(module, LoraParameter):
            key, module = f"base_layer.{key}", module.base_layer
        return torch.func.functional_call(self.base_layer, {key: adapted.to(weight.dtype)}, args, kwargs)


def parameter_chains(model: nn.Module) -> dict[str, list[LoraParameter]]:
    """Each module with wrapped parameters, by its path -> its wrappers, outermost first."""
    found = {n: m for n, m in model.named_modules() if isinstance(m, LoraParameter)}
    inner = {id(m.base_layer) for m in found.values()}
    chains = {}
    for path, outer in found.items():
        if id(outer) in inner:
            continue
        chain: list[LoraParameter] = []
        module: nn.Module = outer
        while isinstance(module, LoraParameter):
            chain.append(module)
            module = module.base_layer
        chains[path] = chain
    return chains


def parameter_layers(model: nn.Module) -> dict[str, LoraParameter]:
    """Parameter wrappers by the parameter's path in the unwrapped model (``moe.experts.gate_up_proj``)."""
    return {f"{path}.{w.parameter_name}": w for path, chain in parameter_chains(model).items() for w in chain}


def select_parameters(model: nn.Module, entries: list[str], inside: set[str]) -> list[tuple[str, str]]:
    """(module path, parameter name) of each parameter `entries` select, in the order peft nests them (modules as
    named_modules lists them, a module's own parameters in registration order): ``<module>.<parameter>`` equal to
    an entry or ending in ``.<entry>``. A module inside a wrapper (`inside`) counts only as the holder of wrapped
    parameters, under its unwrapped path."""
    holders = {id(chain[-1].base_layer): path for path, chain in parameter_chains(model).items()}
    selected = []
    for name, module in model.named_modules():
        if id(module) in holders:
            name = holders[id(module)]
        elif name in inside or isinstance(module, LoraLayer):
            continue
        for param, _ in module.named_parameters(recurse=False):
            key = f"{name}.{param}" if name else param
            if parameter_selected(key, entries):
                if not name:
                    raise ValueError(
                        f"target_parameters: '{param}' belongs to the top-level module; it cannot be wrapped"
                    )
                selected.append((name, param))
    return selected


def existing_wrapper(model: nn.Module, path: str, name: str) -> LoraParameter | None:
    """The wrapper of parameter `name` of the module at `path`, if an earlier adapter made one."""
    module = model.get_submodule(path)
    while isinstance(module, LoraParameter):
        if module.parameter_name == name:
            return module
        module = module.base_layer
    return None
