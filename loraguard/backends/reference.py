"""The reference implementation as a backend: the suite must pass it, and mutants of it must fail."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from loraguard.core.config import LoraConfig
from loraguard.reference import LoraModel


class ReferenceBackend:
    """Drives `loraguard.reference.LoraModel`."""

    name = "reference"
    capabilities = frozenset(
        {
            "multi_adapter",
            "delete_adapter",
            "disable",
            "modules_to_save",
            "save_load",
            "load_adapter",
            "embedding",
            "conv",
            "fan_in_fan_out",
            "rslora",
            "patterns",
            "lora_bias",
            "bias",
            "autocast_adapter_dtype",
            "dora",
            "all_linear",
            "layers",
            "init_options",
            "unload",
            "weighted_combination",
            "unmerge",
            "peft_format",
            "bfloat16",
            "float16",
            "cuda",
            "task_type",
            "trainable_tokens",
            "target_parameters",
        }
    )
    model_class: type[LoraModel] = LoraModel

    def version(self) -> str:
        from loraguard import __version__

        return __version__

    def wrap(self, base: nn.Module, config: LoraConfig, adapter: str = "default") -> nn.Module:
        return self.model_class(base, config, adapter)

    def add_adapter(self, model: LoraModel, adapter: str, config: LoraConfig) -> None:
        model.add_adapter(adapter, config)

    def set_adapter(self, model: LoraModel, adapters: list[str]) -> None:
        model.set_adapter(adapters)

    def delete_adapter(self, model: LoraModel, adapter: str) -> None:
        model.delete_adapter(adapter)

    def lora_factors(self, model: LoraModel, adapter: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {p: layer.factors(adapter) for p, layer in model.target_layers().items() if adapter in layer.scaling}

    def lora_biases(self, model: LoraModel, adapter: str) -> dict[str, torch.Tensor]:
        return {
            p: layer.lora_b_bias(adapter) for p, layer in model.target_layers().items() if layer.lora_bias.get(adapter)
        }

    def lora_magnitudes(self, model: LoraModel, adapter: str) -> dict[str, torch.Tensor]:
        return {
            p: layer.magnitude(adapter) for p, layer in model.target_layers().items() if layer.use_dora.get(adapter)
        }

    def base_weight(self, model: LoraModel, path: str) -> torch.Tensor:
        lora, tokens = model.target_layers(), model.token_layers()
        if path in lora:
            return lora[path].base_weight()
        if path in tokens:
            return tokens[path].base_weight()
        return cast(torch.Tensor, model.model.get_submodule(path).weight)

    def token_rows(self, model: LoraModel, adapter: str) -> dict[str, torch.Tensor]:
        return {
            p: t.rows(adapter)[1] for p, t in model.token_layers().items() if t.leader is None and adapter in t.indices
        }

    def saved_copies(self, model: LoraModel, adapter: str) -> dict[str, dict[str, torch.Tensor]]:
        return {
            p: w.modules_to_save[adapter].state_dict()
            for p, w in model.saved_modules().items()
            if adapter in w.modules_to_save
        }

    def add_weighted_adapter(
        self, model: LoraModel, adapters: list[str], weights: list[float], name: str, **options: Any
    ) -> None:
        model.add_weighted_adapter(adapters, weights, name, **options)

    def merge(self, model: LoraModel, adapters: list[str] | None = None) -> None:
        model.merge(adapters)

    def unmerge(self, model: LoraModel) -> None:
        model.unmerge()

    def merge_and_unload(self, model: LoraModel) -> nn.Module:
        return model.merge_and_unload()

    def unload(self, model: LoraModel) -> nn.Module:
        return model.unload()

    def disabled(self, model: LoraModel) -> AbstractContextManager[None]:
        return model.disable_adapter()

    def trainable(self, model: LoraModel) -> set[str]:
        return {n for n, p in model.model.named_parameters() if p.requires_grad}

    def save(self, model: LoraModel, directory: Path, adapters: list[str] | None = None) -> None:
        model.save_pretrained(directory, adapters)

    def load(self, base: nn.Module, directory: Path, adapter: str = "default", trainable: bool = False) -> nn.Module:
        return self.model_class.from_pretrained(base, directory, adapter, is_trainable=trainable)

    def load_adapter(self, model: LoraModel, directory: Path, adapter: str, trainable: bool = False) -> None:
        model.load_adapter(directory, adapter, is_trainable=trainable)
