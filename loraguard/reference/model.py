"""The reference LoRA model: many named adapters on one base model, with merge/unmerge/unload and strict save/load.

`LoraModel(base, config)` is loraguard's oracle for `get_peft_model(base, config)`. Its state dict keys
equal peft's minus the ``base_model.`` wrapper prefix, and its saves are peft's on-disk format.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from loraguard.core import combine_math
from loraguard.core.config import LoraConfig
from loraguard.core.keys import BASE_BIAS, MAGNITUDE, MODULES_TO_SAVE, AdapterKey, check_adapter_name
from loraguard.core.matching import (
    ALL_LINEAR,
    is_lora_internal,
    is_within,
    no_match_message,
    spec_matches,
    unmatched_entries,
)
from loraguard.core.tasks import with_task_heads
from loraguard.reference.layers import LoraLayer, is_conv1d_transposed, wrap_layer
from loraguard.reference.saved import ModulesToSave


class AlreadyAdaptedError(ValueError):
    """Raised when wrapping a model that already carries LoRA layers (peft's 'Target module Dropout' bug)."""


def carries_adapters(model: nn.Module) -> bool:
    """True if any submodule is a LoRA layer or a modules_to_save wrapper (ours, or peft-style by its attributes)."""
    for module in model.modules():
        if isinstance(module, (LoraLayer, ModulesToSave)):
            return True
        if hasattr(module, "base_layer") and any(hasattr(module, a) for a in ("lora_A", "lora_embedding_A")):
            return True
    return False


def all_linear_targets(model: nn.Module) -> list[str]:
    """peft's "all-linear": every Linear/Conv1D outside LoRA internals, minus the output head if the model names one.

    A layer already wrapped by LoRA counts by its base layer, so a second adapter finds the same layers.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    def linear(m: nn.Module) -> bool:
        if isinstance(m, LoraLayer):
            return linear(m.base_layer)
        return isinstance(m, nn.Linear) or is_conv1d_transposed(m)

    return [
        name for name, m in model.named_modules() if name and linear(m) and not is_lora_internal(name) and m is not head
    ]


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

    @staticmethod
    def _refuse_if_adapted(model: nn.Module) -> None:
        """Wrapping a wrapped model would target LoRA internals: refuse, and say what to do instead."""
        if carries_adapters(model):
            raise AlreadyAdaptedError(
                "this model already carries LoRA adapters; wrapping it again would target LoRA internals "
                "(lora_dropout, base_layer, lora_A). To continue training the saved adapter use "
                "LoraModel.from_pretrained(base, path, is_trainable=True); "
                "to train a new one use add_adapter(name, config)."
            )

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    # -- structure -----------------------------------------------------------------------------------------
    def lora_layers(self) -> dict[str, LoraLayer]:
        """LoRA-wrapped layers by their path in the base model."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, LoraLayer)}

    def saved_modules(self) -> dict[str, ModulesToSave]:
        """modules_to_save wrappers by their path in the base model."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, ModulesToSave)}

    def _wrappers(self) -> Iterator[LoraLayer | ModulesToSave]:
        yield from self.lora_layers().values()
        yield from self.saved_modules().values()

    def _replace(self, path: str, new: nn.Module) -> None:
        parent_path, _, child = path.rpartition(".")
        setattr(self.model.get_submodule(parent_path) if parent_path else self.model, child, new)

    # -- adapters ------------------------------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, config: LoraConfig) -> None:
        """Inject adapter `adapter_name`; it is not activated (call `set_adapter`), as in peft."""
        check_adapter_name(adapter_name)
        if adapter_name in self.peft_config:
            raise ValueError(f"adapter {adapter_name!r} already exists; delete_adapter() it first or pick another name")
        if config.bias == "all":
            raise ValueError("bias='all' is not implemented by the reference; use 'none' or 'lora_only'")
        names = [n for n, _ in self.model.named_modules() if n]
        config = with_task_heads(config, names)  # as peft's task models do, for every adapter
        candidates = self._candidates(names)
        if config.target_modules == ALL_LINEAR:
            targets = all_linear_targets(self.model)
        else:
            targets = [n for n in candidates if self._selects(n, config.target_modules) and config.in_layers(n)]
        if not targets:
            raise ValueError(no_match_message("target_modules", config.target_modules, names))
        if isinstance(config.target_modules, list):  # one typo in a list would silently train fewer modules
            typos = unmatched_entries(candidates, config.target_modules)
            if typos:
                raise ValueError(no_match_message("target_modules", typos, names))
        saved = [n for n in candidates if self._selects(n, config.modules_to_save)]
        # An entry may match a module and one of its descendants: the outer copy already holds the inner one.
        saved = [n for n in saved if not any(is_within(n, outer) for outer in saved)]
        nested = sorted(t for t in targets if any(is_within(t, s) for s in saved))
        if nested:
            raise ValueError(
                f"target_modules {nested} lie inside modules_to_save modules; a full copy is trained "
                "there already, so drop them from target_modules or modules_to_save"
            )
        missing = unmatched_entries(candidates, config.modules_to_save or [])
        if missing:
            raise ValueError(no_match_message("modules_to_save", missing, names))
        both = set(targets) & set(saved)
        if both:
            raise ValueError(f"modules {sorted(both)} are in both target_modules and modules_to_save; pick one")
        lora_wrapped = [
            p for p in saved if any(isinstance(m, LoraLayer) for m in self.model.get_submodule(p).modules())
        ]
        if lora_wrapped:
            raise ValueError(
                f"modules_to_save {lora_wrapped} are or contain LoRA layers of another adapter; "
                "a full copy of them cannot be kept apart from that adapter"
            )
        # Validate every target before changing anything, so a failure leaves the model as it was.
        new_layers = {
            p: self._wrap_layer(self.model.get_submodule(p))
            for p in targets
            if not isinstance(self.model.get_submodule(p), LoraLayer)
        }
        for path in targets:
            layer = new_layers.get(path) or self.model.get_submodule(path)
            if path in new_layers:
                self._replace(path, layer)
            layer.add(
                adapter_name,
                config.rank_for(path),
                config.scaling_for(path),
                config.lora_dropout,
                config.lora_bias,
                config.init_lora_weights,
                config.use_dora,
            )
            layer.active_adapters = list(self.active_adapters)
        for path in saved:
            wrapper = self.model.get_submodule(path)
            if not isinstance(wrapper, ModulesToSave):
                wrapper = ModulesToSave(wrapper)
                self._replace(path, wrapper)
            wrapper.add(adapter_name)
            wrapper.active_adapters = list(self.active_adapters)
        self.peft_config[adapter_name] = config
        self._update_trainable()

    # Selection and wrapping go through these methods so each rule is stated once (and can be broken on purpose
    # by the mutant backends in tests/, one rule at a time).
    def _candidates(self, names: list[str]) -> list[str]:
        """Modules a config may select: never what lives inside a LoRA layer or a saved copy (lora_dropout,
        base_layer, the copies...). Judged by structure, so a user's own module named `base_layer` or `lora_A`
        is a candidate like any other."""
        inside = set()
        for name, module in self.model.named_modules():
            if isinstance(module, (LoraLayer, ModulesToSave)):
                inside.update(f"{name}.{sub}" if name else sub for sub, _ in module.named_modules() if sub)
        return [n for n in names if n not in inside]

    @staticmethod
    def _selects(name: str, spec: str | list[str] | None) -> bool:
        return spec_matches(name, spec)

    @staticmethod
    def _wrap_layer(module: nn.Module) -> LoraLayer:
        return wrap_layer(module)

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
            if config.bias == "lora_only" and getattr(layer.base_layer, "bias", None) is not None:
                keys.append(AdapterKey(path, BASE_BIAS, "bias"))
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
        check_adapter_name(adapter_name)
        if adapter_name in self.peft_config:
            raise ValueError(f"adapter {adapter_name!r} already exists; pick another name for the combination")
        unknown = [a for a in adapters if a not in self.peft_config]
        if unknown or not adapters or len(weights) != len(adapters):
            raise ValueError(
                f"add_weighted_adapter needs one weight per existing adapter; got adapters {adapters} "
                f"(unknown: {unknown}), weights {weights}; this model has {list(self.peft_config)}"
            )
        kind = "linear" if len(adapters) == 1 else combination_type  # one adapter: every type is a scaled copy
        ranks = [max([self.peft_config[a].r, *self.peft_config[a].rank_pattern.values()]) for a in adapters]
        rank = combine_math.new_rank(kind, ranks, svd_rank)
        layers = {p: layer for p, layer in self.lora_layers().items() if any(a in layer.scaling for a in adapters)}
        combined = {
            p: _combine_layer(layer, kind, adapters, weights, rank, density, majority_sign_method, generator)
            for p, layer in layers.items()
        }
        for path, (a, b) in combined.items():
            layers[path].add(adapter_name, rank, 1.0, 0.0, False, True)
            new_a, new_b = layers[path].factors(adapter_name)
            with torch.no_grad():
                new_a.zero_()
                new_b.zero_()
                new_a[: a.shape[0]] = a.to(new_a.dtype)
                new_b[:, : b.shape[1]] = b.to(new_b.dtype)
            layers[path].active_adapters = list(self.active_adapters)
        self.peft_config[adapter_name] = LoraConfig(
            r=rank, lora_alpha=rank, target_modules=sorted(layers), init_lora_weights=False
        )
        self._update_trainable()

    # -- merging -------------------------------------------------------------------------------------------
    def merge(self, adapter_names: list[str] | None = None, safe: bool = False) -> None:
        """Fold the adapters' deltas into the base weights (the active ones by default); idempotent per adapter."""
        names = list(self.active_adapters if adapter_names is None else adapter_names)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise ValueError(f"unknown adapter(s) {unknown}; this model has {list(self.peft_config)}")
        layers = self.lora_layers()
        broken = [path for path, layer in layers.items() if safe and not layer.merge_is_finite(names)]
        if broken:
            raise ValueError(
                f"merging {names} would give non-finite weights in {broken}; nothing was merged. "
                "The adapter is broken (NaN/inf factors or overflow): check its weights"
            )
        uses = Counter(id(p) for _, p in self.model.named_parameters(remove_duplicate=False))
        for layer in layers.values():
            layer.merge(names, safe=safe, untie=uses[id(layer.base_weight())] > 1)

    def unmerge(self) -> None:
        """Take every merged delta back out of the base weights."""
        for layer in self.lora_layers().values():
            layer.unmerge()

    def merge_and_unload(self, adapter_names: list[str] | None = None, safe: bool = False) -> nn.Module:
        """Merge, then return the plain base model; this LoraModel must not be used afterwards."""
        self.merge(adapter_names, safe=safe)
        return self._unwrap()

    def unload(self) -> nn.Module:
        """Return the base model without merging (any merged delta is taken out first)."""
        self.unmerge()
        return self._unwrap()

    def _unwrap(self) -> nn.Module:
        for path, layer in self.lora_layers().items():
            self._replace(path, layer.base_layer)
        for path, wrapper in self.saved_modules().items():
            self._replace(path, wrapper.active_copy())
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


def _combine_layer(
    layer: LoraLayer,
    kind: str,
    adapters: list[str],
    weights: list[float],
    rank: int,
    density: float,
    method: combine_math.SignMethod,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The combined (A, B) at one layer, in float64, for the adapters present there (each with its weight)."""
    present = [(a, w) for a, w in zip(adapters, weights) if a in layer.scaling]
    if not combine_math.is_svd(kind):
        factors = [(*(t.detach().double() for t in layer.factors(a)), layer.scaling[a]) for a, _ in present]
        return combine_math.combined_factors(kind, factors, [w for _, w in present], density, method, generator)
    deltas = [_as_ba(layer, layer.delta(a).double()) for a, _ in present]
    target = combine_math.combined_delta_target(kind, deltas, [w for _, w in present], density, method, generator)
    a, b = combine_math.truncated_svd(target, rank)
    a_shape, b_shape = layer.factors(present[0][0])[0].shape[1:], layer.factors(present[0][0])[1].shape
    return a.reshape(a.shape[0], *a_shape), b.reshape(b_shape[0], b.shape[1], *b_shape[2:])


def _as_ba(layer: LoraLayer, delta: torch.Tensor) -> torch.Tensor:
    """A delta in the layout of ``B @ A`` (undoing the transpose of embeddings and fan_in_fan_out layers)."""
    return delta.T if layer.kind == "embedding" or layer.fan_in_fan_out else delta
