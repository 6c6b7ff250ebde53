"""The reference LoRA model: many named adapters on one base model, with merge/unmerge/unload and strict save/load.

`LoraModel(base, config)` is loraguard's oracle for `get_peft_model(base, config)`. Its state dict keys
equal peft's minus the ``base_model.`` wrapper prefix, and its saves are peft's on-disk format.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loraguard.core import combine_math
from loraguard.core.config import LoraConfig
from loraguard.core.keys import MAGNITUDE, MODULES_TO_SAVE, TOKENS, AdapterKey, check_adapter_name
from loraguard.core.matching import spec_matches
from loraguard.reference.biases import bias_keys
from loraguard.reference.kinds import wrap_layer
from loraguard.reference.layers import LoraLayer
from loraguard.reference.params import LoraParameter, existing_wrapper, parameter_layers
from loraguard.reference.saved import ModulesToSave
from loraguard.reference.selection import (
    inside_wrappers,
    plan_adapter,
    refuse_if_adapted,
)
from loraguard.reference.tokens import TrainableTokens, tied_paths


class LoraModel(nn.Module):
    """A base model (at `.model`) with named LoRA adapters; one adapter is created and activated at construction."""

    def __init__(self, model: nn.Module, config: LoraConfig, adapter_name: str = "default"):
        self._refuse_if_adapted(model)
        super().__init__()
        self.model = model
        self.peft_config: dict[str, LoraConfig] = {}
        self.active_adapters: list[str] = []
        for p in model.parameters():
            p.requires_grad_(False)
        self.add_adapter(adapter_name, config)
        self.set_adapter(adapter_name)

    _refuse_if_adapted = staticmethod(refuse_if_adapted)  # a hook, as the selection methods below

    def forward(self, *args: object, **kwargs: object) -> Any:
        return self.model(*args, **kwargs)

    # -- structure -----------------------------------------------------------------------------------------
    def lora_layers(self) -> dict[str, LoraLayer]:
        """LoRA-wrapped layers by their path in the base model."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, LoraLayer)}

    def target_layers(self) -> dict[str, LoraLayer]:
        """LoRA layers by what they adapt: a module's path, or ``<module>.<parameter>`` for `target_parameters`."""
        params = parameter_layers(self.model)
        wrapped = {id(layer) for layer in params.values()}
        return {**{p: m for p, m in self.lora_layers().items() if id(m) not in wrapped}, **params}

    def saved_modules(self) -> dict[str, ModulesToSave]:
        """modules_to_save wrappers by their path in the base model."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, ModulesToSave)}

    def token_layers(self) -> dict[str, TrainableTokens]:
        """Trainable-token wrappers (embeddings and the modules tied to them) by their path in the base model."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, TrainableTokens)}

    def _wrappers(self) -> Iterator[LoraLayer | ModulesToSave | TrainableTokens]:
        yield from self.lora_layers().values()
        yield from self.saved_modules().values()
        yield from self.token_layers().values()

    def _replace(self, path: str, new: nn.Module) -> None:
        parent_path, _, child = path.rpartition(".")
        setattr(self.model.get_submodule(parent_path) if parent_path else self.model, child, new)

    # -- adapters ------------------------------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, config: LoraConfig) -> None:
        """Inject adapter `adapter_name`; it is not activated (call `set_adapter`), as in peft."""
        check_adapter_name(adapter_name)
        if adapter_name in self.peft_config:
            raise ValueError(f"adapter {adapter_name!r} already exists; delete_adapter() it first or pick another name")
        config, targets, saved, tokens, parameters = plan_adapter(self, config)
        # Validate every target before changing anything, so a failure leaves the model as it was.
        new_layers = {
            p: self._wrap_layer(self.model.get_submodule(p))
            for p in targets
            if not isinstance(self.model.get_submodule(p), LoraLayer)
        }
        for path in targets:
            current = self.model.get_submodule(path)
            layer = current if isinstance(current, LoraLayer) else new_layers[path]
            if layer is not current:
                self._replace(path, layer)
            layer.add(
                adapter_name,
                config.rank_for(path),
                config.scaling_for(path),
                config.lora_dropout,
                config.lora_bias,
                config.init_lora_weights,
                config.use_dora,
                bool(config.autocast_adapter_dtype),
            )
            layer.active_adapters = list(self.active_adapters)
        for path, param in parameters:
            found = existing_wrapper(self.model, path, param)
            param_layer = found or self._wrap_parameter(self.model.get_submodule(path), param)
            if found is None:  # around what is there: another parameter's wrapper nests inside this one
                self._replace(path, param_layer)
            key = f"{path}.{param}"  # rank_pattern and alpha_pattern see the parameter's name, as in peft
            autocast = bool(config.autocast_adapter_dtype)
            param_layer.add(
                adapter_name,
                config.rank_for(key),
                config.scaling_for(key),
                0,
                False,
                config.init_lora_weights,
                False,
                autocast,
            )
            param_layer.active_adapters = list(self.active_adapters)
        for path in saved:
            module = self.model.get_submodule(path)
            wrapper = module if isinstance(module, ModulesToSave) else ModulesToSave(module)
            if wrapper is not module:
                self._replace(path, wrapper)
            wrapper.add(adapter_name)
            wrapper.active_adapters = list(self.active_adapters)
        for path, indices in tokens.items():
            self._token_layer(path).add(adapter_name, indices, bool(config.autocast_adapter_dtype))
        self.peft_config[adapter_name] = config
        self._update_trainable()

    # Selection and wrapping go through these methods so each rule is stated once (and can be broken on purpose
    # by the mutant backends in tests/, one rule at a time).
    def _candidates(self, names: list[str]) -> list[str]:
        """Modules a config may select: never what lives inside a LoRA layer, a saved copy or a token wrapper
        (lora_dropout, base_layer, the copies...). Judged by structure, so a user's own module named `base_layer`
        or `lora_A` is a candidate like any other."""
        inside = inside_wrappers(self.model)
        return [n for n in names if n not in inside]

    @staticmethod
    def _selects(name: str, spec: str | list[str] | None) -> bool:
        return spec_matches(name, spec)

    @staticmethod
    def _wrap_layer(module: nn.Module) -> LoraLayer:
        return wrap_layer(module)

    @staticmethod
    def _wrap_parameter(module: nn.Module, name: str) -> LoraParameter:
        return LoraParameter(module, name)

    def _tied_paths(self, path: str) -> list[str]:
        """Modules that share the weight of the embedding at `path`: they follow its trainable tokens."""
        return tied_paths(self.model, path)

    def _token_layer(self, path: str) -> TrainableTokens:
        """The token wrapper at `path`, created on first use together with a follower at each tied module."""
        current = self.model.get_submodule(path)
        if isinstance(current, TrainableTokens):
            return current
        followers = self._tied_paths(path)
        leader = TrainableTokens(current)
        self._replace(path, leader)
        for tied in followers:
            self._replace(tied, TrainableTokens(self.model.get_submodule(tied), leader))
        for layer in self.token_layers().values():
            layer.active_adapters = list(self.active_adapters)
        return leader

    def set_adapter(self, adapter_names: str | list[str]) -> None:
        """Make `adapter_names` the active adapters (their outputs add up); only they are trainable."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise ValueError(f"unknown adapter(s) {unknown}; this model has {list(self.peft_config)}")
        self.active_adapters = names
        for w in self._wrappers():
            w.active_adapters = list(names)
        self._update_trainable()

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter everywhere; if it was active, the remaining active adapters stay active."""
        if adapter_name not in self.peft_config:
            raise ValueError(f"unknown adapter {adapter_name!r}; this model has {list(self.peft_config)}")
        for w in self._wrappers():
            w.delete(adapter_name)
        del self.peft_config[adapter_name]
        self.active_adapters = [a for a in self.active_adapters if a != adapter_name]
        self._update_trainable()

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Within the block the model computes exactly the base model's output."""
        wrappers = list(self._wrappers())
        for w in wrappers:
            w.disabled = True
        try:
            yield
        finally:
            for w in wrappers:
                w.disabled = False

    def _update_trainable(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)
        for adapter in self.active_adapters:
            for p in self.adapter_parameters(adapter).values():
                p.requires_grad_(True)

    def adapter_parameters(self, adapter_name: str) -> dict[str, nn.Parameter]:
        """The parameters adapter `adapter_name` trains, by their state-dict key in the base model."""
        params = dict(self.model.named_parameters(remove_duplicate=False))
        buffers = dict(self.model.named_buffers(remove_duplicate=False))  # saved (BatchNorm statistics), not trained
        keys = [k.in_model(adapter_name) for k in self.adapter_keys(adapter_name)]
        return {k: params[k] for k in keys if k not in buffers}

    def adapter_keys(self, adapter_name: str) -> list[AdapterKey]:
        """Structural description of every tensor adapter `adapter_name` saves."""
        config = self.peft_config[adapter_name]
        keys: list[AdapterKey] = []
        for path, layer in self.lora_layers().items():
            if adapter_name not in layer.scaling:
                continue
            roles = ("lora_embedding_A", "lora_embedding_B") if layer.kind == "embedding" else ("lora_A", "lora_B")
            keys += [AdapterKey(path, role, "" if layer.kind == "embedding" else "weight") for role in roles]
            if layer.lora_bias[adapter_name]:
                keys.append(AdapterKey(path, "lora_B", "bias"))
            if layer.use_dora[adapter_name]:
                keys.append(AdapterKey(path, MAGNITUDE))
        keys += bias_keys(self.model, config.bias)
        for path, tokens in self.token_layers().items():
            if tokens.leader is None and adapter_name in tokens.indices:
                keys.append(AdapterKey(path, TOKENS))
        for path, wrapper in self.saved_modules().items():
            if adapter_name in wrapper.modules_to_save:
                keys += [
                    AdapterKey(path, MODULES_TO_SAVE, k) for k in wrapper.modules_to_save[adapter_name].state_dict()
                ]
        return keys

    def add_weighted_adapter(
        self,
        adapters: list[str],
        weights: list[float],
        adapter_name: str,
        combination_type: str = "svd",
        svd_rank: int | None = None,
        density: float = 1.0,
        majority_sign_method: combine_math.SignMethod = "total",
        generator: torch.Generator | None = None,
    ) -> None:
        """Add `adapter_name`, the weighted combination of `adapters` (formulas: loraguard/core/combine_math.py).

        It covers every module any of them adapts, has scaling 1 (r = lora_alpha = the new rank) and no
        modules_to_save; it is not activated. Nothing changes if the arguments are refused.
        """
        from loraguard.reference.combination import add_weighted_adapter

        add_weighted_adapter(
            self, adapters, weights, adapter_name, combination_type, svd_rank, density, majority_sign_method, generator
        )
        self._update_trainable()

    # -- merging -------------------------------------------------------------------------------------------
    def merge(self, adapter_names: list[str] | None = None, safe: bool = False) -> None:
        """Fold the adapters' deltas into the base weights (the active ones by default); idempotent per adapter."""
        names = list(self.active_adapters if adapter_names is None else adapter_names)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise ValueError(f"unknown adapter(s) {unknown}; this model has {list(self.peft_config)}")
        layers, tokens = self.lora_layers(), self.token_layers()
        broken = [path for path, layer in layers.items() if safe and not layer.merge_is_finite(names)]
        broken += [path for path, rows in tokens.items() if safe and not rows.merge_is_finite(names)]
        if broken:
            raise ValueError(
                f"merging {names} would give non-finite weights in {broken}; nothing was merged. "
                "The adapter is broken (NaN/inf factors or overflow): check its weights"
            )
        uses = Counter(id(p) for _, p in self.model.named_parameters(remove_duplicate=False))
        for layer in layers.values():
            layer.merge(names, safe=safe, untie=uses[id(layer.base_weight())] > 1)
        for tokens_layer in tokens.values():  # into the shared weight: a tied head follows the rows, merged or not
            tokens_layer.merge(names, safe=safe)

    def unmerge(self) -> None:
        """Take every merged delta and row back out of the base weights."""
        for layer in self.lora_layers().values():
            layer.unmerge()
        for tokens in self.token_layers().values():
            tokens.unmerge()

    def merge_and_unload(self, adapter_names: list[str] | None = None, safe: bool = False) -> nn.Module:
        """Merge, then return the plain base model; this LoraModel must not be used afterwards."""
        self.merge(adapter_names, safe=safe)
        return self._unwrap()

    def unload(self) -> nn.Module:
        """Return the base model without merging (any merged delta is taken out first)."""
        self.unmerge()
        return self._unwrap()

    def _unwrap(self) -> nn.Module:
        layers = self.lora_layers()
        inner = {id(layer.base_layer) for layer in layers.values()}  # nested parameter wrappers go with the outer
        for path, layer in layers.items():
            if id(layer) not in inner:
                self._replace(path, layer.unwrapped())
        for path, wrapper in self.saved_modules().items():
            self._replace(path, wrapper.active_copy())
        for path, tokens in self.token_layers().items():
            self._replace(path, tokens.base_layer)
        return self.model

    # -- save / load (peft's on-disk format) ---------------------------------------------------------------
    def adapter_state_dict(self, adapter_name: str = "default") -> dict[str, torch.Tensor]:
        """The tensors peft would save for `adapter_name`, under peft's saved key names."""
        if adapter_name not in self.peft_config:
            raise ValueError(f"unknown adapter {adapter_name!r}; this model has {list(self.peft_config)}")
        state = self.model.state_dict(keep_vars=True)
        return {k.saved(): state[k.in_model(adapter_name)].detach() for k in self.adapter_keys(adapter_name)}

    def save_pretrained(self, directory: str | Path, adapter_names: list[str] | None = None) -> None:
        """Write each adapter as peft does.

        "default" goes at the top of `directory`, others in a subfolder named after them.
        """
        from loraguard.reference.io import save_adapter

        for name in adapter_names or list(self.peft_config):
            save_adapter(self, Path(directory) if name == "default" else Path(directory) / name, name)

    def load_adapter(self, directory: str | Path, adapter_name: str, is_trainable: bool = False) -> None:
        """Add adapter `adapter_name` from a saved directory; strict, and nothing changes if it fails."""
        from loraguard.reference.io import load_adapter

        load_adapter(self, Path(directory), adapter_name, is_trainable)

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, directory: str | Path, adapter_name: str = "default", is_trainable: bool = False
    ) -> LoraModel:
        """Load a saved adapter onto a fresh base model, frozen for inference or trainable to continue training."""
        from loraguard.reference.io import load_adapter, read_config

        lora = cls(model, read_config(Path(directory)), adapter_name)
        load_adapter(lora, Path(directory), adapter_name, is_trainable, created=True)
        return lora
