"""What a peft model holds, read from peft's own layers: factors, biases, magnitudes, token rows, saved copies.

The reading half of the peft backend (`loraguard.backends.peft` drives peft; this module only looks). Layers are
found by structure, not by name, and typed `Any`: their attributes are peft's and vary by release.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, cast

import torch
from torch import nn

from loraguard.core.keys import PEFT_PREFIX


def peft_module() -> ModuleType:
    import peft

    return peft


class PeftReads:
    """The backend protocol's read methods for a peft model (mixed into `PeftBackend`)."""

    @staticmethod
    def _base(model: nn.Module) -> nn.Module:
        return peft_api(model).base_model.model

    def _lora_layers(self, model: nn.Module) -> dict[str, Any]:
        """peft's LoRA layers by what they adapt (typed Any: their attributes are peft's and vary by release)."""
        return _by_target(_outermost(self._base(model), lambda m: hasattr(m, "lora_A") and hasattr(m, "base_layer")))

    def lora_factors(self, model: nn.Module, adapter: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = {}
        for path, layer in self._lora_layers(model).items():
            if adapter in layer.lora_A:
                out[path] = (layer.lora_A[adapter].weight, layer.lora_B[adapter].weight)
            elif adapter in getattr(layer, "lora_embedding_A", {}):
                out[path] = (layer.lora_embedding_A[adapter], layer.lora_embedding_B[adapter])
        return out

    def lora_biases(self, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
        return {
            p: layer.lora_B[adapter].bias
            for p, layer in self._lora_layers(model).items()
            if adapter in layer.lora_B and getattr(layer.lora_B[adapter], "bias", None) is not None
        }

    def lora_magnitudes(self, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
        """DoRA's magnitude vectors (a module's ``weight`` from peft 0.12 on, a bare parameter before)."""
        out = {}
        for path, layer in self._lora_layers(model).items():
            store = getattr(layer, "lora_magnitude_vector", None)
            if store is not None and adapter in store:
                out[path] = getattr(store[adapter], "weight", store[adapter])
        return out

    def base_weight(self, model: nn.Module, path: str) -> torch.Tensor:
        layers = _by_target(self._tuner_layers(model))
        if path in layers:  # a ParamWrapper's is the parameter it wraps
            return getattr(layers[path].get_base_layer(), getattr(layers[path], "parameter_name", "weight"))
        module = self._base(model).get_submodule(path)  # trainable tokens' embedding, or a module tied to it
        tokens = getattr(module, "token_adapter", None)
        return tokens.get_base_layer().weight if tokens is not None else cast(torch.Tensor, module.weight)

    def token_rows(self, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
        """Trainable tokens' values (`trainable_tokens_delta`: despite the name, the rows themselves)."""
        out = {}
        for path, module in self._base(model).named_modules():
            tokens = getattr(module, "token_adapter", None)
            if tokens is not None and tokens.tied_adapter is None and adapter in tokens.trainable_tokens_delta:
                out[path] = tokens.trainable_tokens_delta[adapter]
        return out

    def _tuner_layers(self, model: nn.Module) -> dict[str, Any]:
        """Every adapted layer of any tuner (LoRA, LoHa, IA3...), by its path in the base model."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        return _outermost(self._base(model), lambda m: isinstance(m, BaseTunerLayer) and hasattr(m, "base_layer"))

    def adapted_paths(self, model: nn.Module, adapter: str) -> set[str]:
        """Paths of the layers that hold `adapter` in any tuner's parameter containers."""
        return {
            p
            for p, layer in self._tuner_layers(model).items()
            if any(adapter in getattr(layer, attr, {}) for attr in layer.adapter_layer_names)
        }

    def adapter_tensors(self, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
        """`adapter`'s trainable tensors, read from the layers' own containers (each layer's `adapter_layer_names`)
        and its modules_to_save copies, under the key peft's format saves each one as."""
        out = {}
        for path, layer in self._tuner_layers(model).items():
            for attr in layer.adapter_layer_names:
                container = getattr(layer, attr, {})
                if adapter not in container:
                    continue
                value = container[adapter]
                named = value.named_parameters() if isinstance(value, nn.Module) else [("", value)]
                for name, tensor in named:
                    out[PEFT_PREFIX + ".".join(p for p in (path, attr, name) if p)] = tensor
        for path, state in self.saved_copies(model, adapter).items():
            out.update({f"{PEFT_PREFIX}{path}.{k}": v for k, v in state.items()})
        return out

    def saved_copies(self, model: nn.Module, adapter: str) -> dict[str, dict[str, torch.Tensor]]:
        return {
            p: m.modules_to_save[adapter].state_dict()
            for p, m in self._base(model).named_modules()
            if isinstance(getattr(m, "modules_to_save", None), nn.ModuleDict) and adapter in m.modules_to_save
        }

    def trainable(self, model: nn.Module) -> set[str]:
        return {n for n, p in self._base(model).named_parameters() if p.requires_grad}


def peft_api(model: nn.Module) -> Any:
    """`model` as the PeftModel it is: merge_adapter, add_adapter... are peft's API, which torch's Module typing
    does not know and which differs between releases (this module detects features before using them)."""
    return model


def _outermost(base: nn.Module, is_layer: Callable[[nn.Module], bool]) -> dict[str, nn.Module]:
    """Adapted layers by path, leaving out a layer that is another one's `base_layer` (a layer wrapped twice).

    Judged by structure, not by the name: a user's own module called `base_layer` that peft adapted is kept.
    """
    layers = {n: m for n, m in base.named_modules() if is_layer(m)}
    inner = {id(m.base_layer) for m in layers.values()}
    return {n: m for n, m in layers.items() if id(m) not in inner}


def _by_target(layers: dict[str, Any]) -> dict[str, Any]:
    """Layers by what they adapt: a module's path, or ``<module>.<parameter>`` for each of the (nested) ParamWrappers
    of peft's `target_parameters` that sit at one module's path."""
    out = {}
    for path, layer in layers.items():
        if not hasattr(layer, "parameter_name"):
            out[path] = layer
        while hasattr(layer, "parameter_name"):
            out[f"{path}.{layer.parameter_name}"] = layer
            layer = layer.base_layer
    return out
