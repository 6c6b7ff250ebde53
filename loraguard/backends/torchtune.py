"""torchtune (``pip install torchtune torchao``) as a backend: its ``LoRALinear`` / ``DoRALinear`` and helpers.

torchtune builds LoRA into its own model definitions; for any other model the way to use it is what its builders
do: put a ``LoRALinear`` (or ``DoRALinear`` with ``use_dora``) where an ``nn.Linear`` was, then
``set_trainable_params(model, get_adapter_params(model))``. One unnamed adapter per layer, linear layers only.
Merging is ``get_merged_lora_ckpt`` on a state dict (one-way: no unmerge); disabling is its ``disable_adapter``
context; the file format is its adapter checkpoint: ``get_adapter_state_dict`` saved with ``torch.save``
(``adapter_model.pt``) beside ``adapter_config.json`` (torchtune's checkpointer writes the same pair).
"""

from __future__ import annotations

import json
import math
import re
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from loraguard.backends.base import BackendBase, BackendError, Unsupported, beyond_plain_lora, refuse
from loraguard.backends.naming import TORCH_BASE, translate_names
from loraguard.core.config import LoraConfig
from loraguard.core.matching import no_match_message, spec_matches, unmatched_entries

_ONE_ADAPTER = "torchtune's LoRALinear holds one unnamed adapter"
_WEIGHTS, _CONFIG = "adapter_model.pt", "adapter_config.json"
#: torchtune's parameter names below a LoRALinear/DoRALinear, in the canonical naming (loraguard.backends.naming).
_ROLES = {
    "lora_a.weight": "lora_A.weight",
    "lora_b.weight": "lora_B.weight",
    "magnitude": "lora_magnitude_vector.weight",
    **TORCH_BASE,
}


def _peft() -> ModuleType:
    import torchtune.modules.peft as peft

    return peft


class TorchtuneBackend(BackendBase):
    """Drives torchtune's LoRA modules on any model's ``nn.Linear`` layers (sharing their weight and bias)."""

    name = "torchtune"
    capabilities = frozenset({"save_load", "disable", "dora", "bfloat16", "float16", "cuda"})

    def version(self) -> str:
        from importlib.metadata import version

        return version("torchtune")  # its distribution's release, as reports read it (no "+cpu" build tag)

    # -- structure -------------------------------------------------------------------------------------------
    @staticmethod
    def _layers(model: nn.Module) -> dict[str, Any]:  # the library's layer classes
        """Path -> torchtune LoRA layer, in module order."""
        peft = _peft()
        return {n: m for n, m in model.named_modules() if isinstance(m, (peft.LoRALinear, peft.DoRALinear))}

    def lora_factors(self, model: nn.Module, adapter: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if adapter != "default":
            return {}
        return {p: (layer.lora_a.weight, layer.lora_b.weight) for p, layer in self._layers(model).items()}

    def lora_magnitudes(self, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
        if adapter != "default":
            return {}
        return {p: layer.magnitude for p, layer in self._layers(model).items() if hasattr(layer, "magnitude")}

    def base_weight(self, model: nn.Module, path: str) -> torch.Tensor:
        return self._layers(model)[path].weight

    def trainable(self, model: nn.Module) -> set[str]:
        roles = dict.fromkeys(self._layers(model), _ROLES)
        return translate_names((n for n, p in model.named_parameters() if p.requires_grad), roles)

    # -- actions ---------------------------------------------------------------------------------------------
    def wrap(self, base: nn.Module, config: LoraConfig, adapter: str = "default") -> nn.Module:
        """Put torchtune LoRA layers in place of the targeted Linears, then make only the adapter trainable."""
        _check_config(config, adapter)
        if self._layers(base):
            raise BackendError(
                f"this model already carries torchtune LoRA layers ({', '.join(sorted(self._layers(base))[:3])}); "
                f"{_ONE_ADAPTER}, so wrap a fresh base model instead"
            )
        names = [n for n, _ in base.named_modules() if n]
        targets = [n for n in names if spec_matches(n, config.target_modules)]
        if not targets:
            raise ValueError(no_match_message("target_modules", config.target_modules, names))
        typos = unmatched_entries(names, config.target_modules) if isinstance(config.target_modules, list) else []
        if typos:  # the library matches no names itself: this backend's matching reports what it cannot find
            raise ValueError(no_match_message("target_modules", typos, names))
        layers = {path: _replacement(path, base.get_submodule(path), config) for path in targets}  # all, or none
        for path, layer in layers.items():
            parent, _, leaf = path.rpartition(".")
            setattr(base.get_submodule(parent), leaf, layer)
        peft = _peft()
        peft.set_trainable_params(base, peft.get_adapter_params(base))
        return base

    def merge(self, model: nn.Module, adapters: list[str] | None = None) -> None:
        """torchtune's merge, ``get_merged_lora_ckpt``, written into the live weights; the layers then compute the
        base path only (``disabled``), so a merged model is never counted twice. Merging again applies nothing."""
        if adapters not in (None, ["default"]):
            raise Unsupported(f"{_ONE_ADAPTER}: it cannot merge {adapters}")
        layers = {p: m for p, m in self._layers(model).items() if not getattr(m, "_loraguard_merged", False)}
        if not layers:
            return
        rank, alpha = _one_rank_and_alpha(layers)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        merged = _peft().get_merged_lora_ckpt(state, rank=rank, alpha=alpha)
        with torch.no_grad():
            for path, layer in layers.items():
                layer.weight.copy_(merged[f"{path}.weight"])
                layer.disabled, layer._loraguard_merged = True, True

    def merge_and_unload(self, model: nn.Module) -> nn.Module:
        """Merge, then put plain ``nn.Linear`` layers carrying the merged tensors back (what a merged checkpoint
        loads into)."""
        self.merge(model)
        for path, layer in self._layers(model).items():
            parent, _, leaf = path.rpartition(".")
            plain = nn.Linear(layer.in_dim, layer.out_dim, bias=layer.bias is not None, device="meta")
            plain.weight, plain.bias = layer.weight, layer.bias
            setattr(model.get_submodule(parent), leaf, plain)
        return model

    def disabled(self, model: nn.Module) -> AbstractContextManager[None]:
        return _peft().disable_adapter(model)

    def save(self, model: nn.Module, directory: Path, adapters: list[str] | None = None) -> None:
        """torchtune's adapter checkpoint: ``get_adapter_state_dict`` via ``torch.save``, and the config."""
        if adapters not in (None, ["default"]):
            raise Unsupported(f"{_ONE_ADAPTER}: it cannot save {adapters}")
        layers = self._layers(model)
        rank, alpha = _one_rank_and_alpha(layers)
        first = next(iter(layers.values()))
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(_peft().get_adapter_state_dict(model.state_dict()), directory / _WEIGHTS)
        config = {
            "r": rank,
            "lora_alpha": alpha,
            "target_modules": "|".join(re.escape(p) for p in sorted(layers)),  # exactly these (a fullmatch regex)
            "lora_dropout": getattr(first.dropout, "p", 0.0),
            "use_dora": isinstance(first, _peft().DoRALinear),
        }
        (directory / _CONFIG).write_text(json.dumps(config, indent=2))

    def load(self, base: nn.Module, directory: Path, adapter: str = "default", trainable: bool = False) -> nn.Module:
        """Rebuild the LoRA layers from the config, load the adapter strictly, then set what trains."""
        for name in (_WEIGHTS, _CONFIG):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name}: not a torchtune adapter checkpoint (missing {name})")
        saved = json.loads((directory / _CONFIG).read_text())
        config = LoraConfig(
            r=saved["r"],
            lora_alpha=saved["lora_alpha"],
            target_modules=saved["target_modules"],
            lora_dropout=saved["lora_dropout"],
            use_dora=saved["use_dora"],
        )
        model = self.wrap(base, config, adapter)
        state = torch.load(directory / _WEIGHTS, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        adapter_keys = set(_peft().get_adapter_params(model))
        lost = sorted(adapter_keys & set(missing))
        if lost or unexpected:
            raise BackendError(f"{directory / _WEIGHTS}: missing adapter keys {lost[:3]}, unexpected {unexpected[:3]}")
        if not trainable:
            for p in model.parameters():
                p.requires_grad_(False)
        return model


def _check_config(config: LoraConfig, adapter: str) -> None:
    """Refuse, as Unsupported, every config field torchtune's LoRA layers cannot honour."""
    if adapter != "default":
        raise Unsupported(f"{_ONE_ADAPTER}: use adapter 'default', not {adapter!r}")
    refuse(
        "torchtune's LoRA layers have no",
        (
            *beyond_plain_lora(config),
            ("rank_pattern (get_merged_lora_ckpt takes one rank)", config.rank_pattern),
            ("alpha_pattern (get_merged_lora_ckpt takes one alpha)", config.alpha_pattern),
            (f"bias={config.bias!r}", config.bias != "none"),
        ),
    )


def _replacement(path: str, module: nn.Module, config: LoraConfig) -> nn.Module:
    """A torchtune LoRA layer holding `module`'s own weight and bias Parameters, factors initialised per the config."""
    if type(module) is not nn.Linear:
        raise Unsupported(
            f"target '{path}' is a {type(module).__name__}: torchtune's LoRA layers replace nn.Linear only"
        )
    peft = _peft()
    cls = peft.DoRALinear if config.use_dora else peft.LoRALinear
    w = module.weight
    layer = cls(
        module.in_features,
        module.out_features,
        rank=config.r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        use_bias=module.bias is not None,
    ).to(device=w.device, dtype=w.dtype)
    layer.weight, layer.bias = w, module.bias  # shared, as torchtune's builders load the base weights into them
    if config.init_lora_weights is False:  # both factors random, so the adapter has an effect (tests)
        with torch.no_grad():
            nn.init.normal_(layer.lora_a.weight, std=1.0 / math.sqrt(module.in_features))
            nn.init.normal_(layer.lora_b.weight, std=0.1)
    if config.use_dora:
        layer.initialize_dora_magnitude()
    return layer


def _one_rank_and_alpha(layers: dict[str, Any]) -> tuple[int, float]:
    """The rank and alpha every layer shares: ``get_merged_lora_ckpt`` and torchtune's config take one of each."""
    pairs = {(m.lora_a.weight.shape[0], _alpha(m)) for m in layers.values()}
    if len(pairs) != 1:
        raise Unsupported(f"torchtune merges and saves one rank and alpha per model; these layers have {pairs}")
    return pairs.pop()


def _alpha(layer: Any) -> float:
    """LoRALinear keeps alpha; DoRALinear keeps only scaling = alpha / rank."""
    return layer.alpha if hasattr(layer, "alpha") else layer.scaling * layer.lora_a.weight.shape[0]
