"""AdapterHub ``adapters`` (``pip install adapters``) as a backend: LoRA through its own configs and model API.

``adapters.init(model)`` equips a transformers model; LoRA is then placed by *role*, not by name: the attention
matrices ``q``/``k``/``v`` (``selfattn_lora`` + ``attn_matrices``), the MLP's first (``intermediate_lora``) and
second (``output_lora``) linear, in every layer. So a ``target_modules`` is translated into the one role config
that selects exactly those modules, or refused as `Unsupported`. Only transformers models of the architectures
it supports can be wrapped (``wrappable``). Its own file format is ``save_adapter``/``load_adapter``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from loraguard.backends.base import BackendBase, BackendError, Unsupported, beyond_plain_lora, refuse
from loraguard.backends.naming import TORCH_BASE, translate_names
from loraguard.core.config import LoraConfig
from loraguard.core.matching import no_match_message, spec_matches, unmatched_entries

#: adapters' parameter names below a LoRA layer, in the canonical naming (loraguard.backends.naming).
_ROLES = {
    "loras.{adapter}.lora_A": "lora_A.weight",
    "loras.{adapter}.lora_B": "lora_B.weight",
    "loras.{adapter}.m.weight": "lora_magnitude_vector.weight",
    **TORCH_BASE,
}
#: Where adapters puts LoRA: each is a LoRAConfig flag and a layer's location_key.
_LOCATIONS = ("selfattn_lora", "intermediate_lora", "output_lora")


def _lib() -> ModuleType:
    import adapters

    return adapters


class AdaptersBackend(BackendBase):
    """Drives ``adapters``: ``init``, ``add_adapter(LoRAConfig)``, ``set_active_adapters``, ``merge_adapter``..."""

    name = "adapters"
    wrappable = frozenset({"transformers"})
    capabilities = frozenset(
        {
            "multi_adapter",
            "delete_adapter",
            "disable",
            "save_load",
            "load_adapter",
            "unmerge",
            "weighted_combination",
            "dora",
            "bfloat16",
            "float16",
            "cuda",
        }
    )

    def version(self) -> str:
        return _lib().__version__

    # -- structure -------------------------------------------------------------------------------------------
    @staticmethod
    def _layers(model: Any) -> dict[str, Any]:  # the library's layer classes
        """Path -> adapters LoRA layer (every layer it can adapt, with or without adapters)."""
        from adapters.methods.lora import LoRALayer

        return {n: m for n, m in model.named_modules() if isinstance(m, LoRALayer)}

    def lora_factors(self, model: Any, adapter: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {
            p: (layer.loras[adapter].lora_A, layer.loras[adapter].lora_B)
            for p, layer in self._layers(model).items()
            if adapter in layer.loras
        }

    def lora_magnitudes(self, model: Any, adapter: str) -> dict[str, torch.Tensor]:
        """DoRA's magnitude, held by adapters as an ``nn.Linear(1, out)`` (``m``): its weight as a vector (a view)."""
        return {
            p: layer.loras[adapter].m.weight.view(-1)
            for p, layer in self._layers(model).items()
            if adapter in layer.loras and layer.loras[adapter].use_dora
        }

    def base_weight(self, model: Any, path: str) -> torch.Tensor:
        return self._layers(model)[path].weight

    def trainable(self, model: Any) -> set[str]:
        roles = dict.fromkeys(self._layers(model), _ROLES)
        return translate_names((n for n, p in model.named_parameters() if p.requires_grad), roles)

    # -- actions ---------------------------------------------------------------------------------------------
    def wrap(self, base: Any, config: LoraConfig, adapter: str = "default") -> nn.Module:
        if not hasattr(base, "adapters_config"):
            if self._layers(base):
                raise BackendError("this model already carries adapters LoRA layers; use add_adapter")
            _lib().init(base)
        elif any(layer.loras for layer in self._layers(base).values()):
            raise BackendError(
                f"this model already carries adapters {sorted(base.adapters_config.adapters)}: add another with "
                "add_adapter, not by wrapping it again"
            )
        self.add_adapter(base, adapter, config)
        base.set_active_adapters(adapter)
        base.train_adapter(adapter)  # the library's way to make exactly this adapter trainable
        return base

    def add_adapter(self, model: Any, adapter: str, config: LoraConfig) -> None:
        model.add_adapter(adapter, config=self.lora_config(model, config))
        if config.init_lora_weights is False:  # both factors random, so the adapter has an effect (tests)
            with torch.no_grad():
                for a, b in self.lora_factors(model, adapter).values():
                    nn.init.normal_(a, std=1.0 / math.sqrt(a.shape[1]))
                    nn.init.normal_(b, std=0.1)

    def lora_config(self, model: Any, config: LoraConfig) -> Any:
        """The ``adapters.LoRAConfig`` that adapts exactly the modules `config` targets, or Unsupported."""
        _check_config(config)
        layers = self._layers(model)
        names = [n for n, _ in model.named_modules() if n]
        targets = {n for n in names if spec_matches(n, config.target_modules)}
        if not targets:
            raise ValueError(no_match_message("target_modules", config.target_modules, names))
        typos = unmatched_entries(names, config.target_modules) if isinstance(config.target_modules, list) else []
        if typos:  # the library matches no names itself: this backend's matching reports what it cannot find
            raise ValueError(no_match_message("target_modules", typos, names))
        roles = {p: _role(p, layers[p]) for p in targets if p in layers}
        odd = sorted(targets - set(roles))
        if odd:
            raise Unsupported(f"adapters puts LoRA only on attention q/k/v and MLP linears, not on {odd[:3]}")
        matrices = sorted({key for loc, key in roles.values() if loc == "selfattn_lora" and key})
        chosen = {loc for loc, _ in roles.values()}
        flags = {flag: flag in chosen for flag in _LOCATIONS}
        selected = {p for p, layer in layers.items() if _selected(_role(p, layer), flags, matrices)}
        if selected != targets:
            raise Unsupported(
                f"adapters selects LoRA modules by role in every layer; target_modules={config.target_modules!r} "
                f"is no role config (the nearest also adapts {sorted(selected - targets)[:3]})"
            )
        dtype = str(next(iter(layers.values())).weight.dtype).removeprefix("torch.")
        return _lib().LoRAConfig(
            # adapters creates LoRA factors in float32 whatever the model's dtype unless told (the forward of a
            # bf16 model then fails: reproducers/adapters/lora-dtype-default.py), so the backend names the dtype
            dtype=dtype,
            r=config.r,
            alpha=config.lora_alpha,
            dropout=config.lora_dropout,
            attn_matrices=matrices or ["q"],
            use_dora=config.use_dora,
            **flags,
        )

    def set_adapter(self, model: Any, adapters: list[str]) -> None:
        if len(adapters) != 1:
            raise Unsupported(
                "adapters composes several LoRAs with Stack (one feeds the next), Average or Parallel; "
                "none adds their deltas"
            )
        model.set_active_adapters(adapters[0])

    def delete_adapter(self, model: Any, adapter: str) -> None:
        model.delete_adapter(adapter)

    def merge(self, model: Any, adapters: list[str] | None = None) -> None:
        names = adapters or list(model.active_adapters.flatten())
        if len(names) != 1:
            raise Unsupported(f"adapters merges one LoRA per layer; asked for {names}")
        model.merge_adapter(names[0])

    def unmerge(self, model: Any) -> None:
        model.reset_adapter()

    def merge_and_unload(self, model: Any) -> nn.Module:
        """Merge, then put plain ``nn.Linear`` layers carrying the merged tensors back (adapters has no unload)."""
        self.merge(model)
        for path, layer in self._layers(model).items():
            parent, _, leaf = path.rpartition(".")
            plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
            plain.weight, plain.bias = layer.weight, layer.bias
            setattr(model.get_submodule(parent), leaf, plain)
        return model

    def disabled(self, model: Any) -> AbstractContextManager[None]:
        return _deactivated(model)

    def add_weighted_adapter(
        self,
        model: Any,
        adapters: list[str],
        weights: list[float],
        name: str,
        combination_type: str = "cat",
        **options: object,
    ) -> None:
        """``average_adapter``: peft's "linear" is adapters' "linear", "svd" its "lora_delta_w_svd"; weights as is."""
        strategy = {"linear": "linear", "svd": "lora_delta_w_svd"}.get(combination_type)
        if strategy is None:
            raise Unsupported(f"adapters has no {combination_type!r} combination (only linear and svd)")
        try:
            model.average_adapter(
                name,
                adapters,
                weights=weights,
                combine_strategy=strategy,
                normalize_weights=False,
                svd_rank=options.get("svd_rank") if strategy == "lora_delta_w_svd" else None,
            )
        except ValueError as err:
            if "same configuration" in str(err):
                raise Unsupported(f"adapters {self.version()} cannot combine these adapters: {err}") from None
            raise

    def save(self, model: Any, directory: Path, adapters: list[str] | None = None) -> None:
        for name in adapters or list(model.adapters_config.adapters):
            model.save_adapter(str(directory if name == "default" else directory / name), name, with_head=False)

    def load(self, base: Any, directory: Path, adapter: str = "default", trainable: bool = False) -> nn.Module:
        if not hasattr(base, "adapters_config"):
            _lib().init(base)
        self.load_adapter(base, directory, adapter, trainable)
        base.set_active_adapters(adapter)
        if trainable:
            base.train_adapter(adapter)
        else:
            base.freeze_model(True)
        return base

    def load_adapter(self, model: Any, directory: Path, adapter: str, trainable: bool = False) -> None:
        model.load_adapter(str(directory), load_as=adapter, with_head=False)


def _check_config(config: LoraConfig) -> None:
    """Refuse, as Unsupported, every config field adapters' LoRAConfig cannot express."""
    refuse(
        "adapters' LoRAConfig has no",
        (
            *beyond_plain_lora(config),
            ("rank_pattern", config.rank_pattern),
            ("alpha_pattern", config.alpha_pattern),
            (f"bias={config.bias!r}", config.bias != "none"),
        ),
    )


def _role(path: str, layer: Any) -> tuple[str, str | None]:
    """(location, attention matrix) of an adapters LoRA layer; a fused q/k/v layer has no single matrix."""
    from adapters.methods.lora import LoRAMergedLinear

    if isinstance(layer, LoRAMergedLinear):
        raise Unsupported(f"'{path}' is a fused q/k/v projection: adapters' LoRA there is per-matrix, not one (A, B)")
    return layer.location_key, getattr(layer, "attn_key", None)


def _selected(role: tuple[str, str | None], flags: dict[str, bool], matrices: list[str]) -> bool:
    location, key = role
    return flags.get(location, False) and (location != "selfattn_lora" or key in matrices)


@contextmanager
def _deactivated(model: Any) -> Iterator[None]:
    """No adapter active (adapters' way to compute the base model), then the previous setup again."""
    active = model.active_adapters
    model.set_active_adapters(None)
    try:
        yield
    finally:
        model.set_active_adapters(active)
