"""Microsoft's loralib (``pip install loralib``) as a backend: a LoRA library of a different design from peft.

loralib *replaces* layers with its own subclasses (``lora.Linear``, ``lora.Embedding``) that hold the base weight
themselves, one unnamed adapter each. Merging is a side effect of the layer's mode: ``eval()`` adds
``s * B @ A`` into the weight, ``train()`` subtracts it again. It has no adapter names, modules_to_save, disable
switch, unload, rsLoRA, patterns or on-disk format, so those capabilities are absent and their checks skip. Its
``lora.Conv1d``/``Conv2d`` factor ranks (r*k) have no peft layout, and its Conv1d breaks for kernels over 1: no "conv".
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, cast

import loralib as lora
import torch
from torch import nn

from loraguard.backends.base import BackendError, Unsupported, beyond_plain_lora, refuse
from loraguard.backends.naming import TORCH_BASE, translate_names
from loraguard.core.config import LoraConfig
from loraguard.core.matching import no_match_message, spec_matches, unmatched_entries
from loraguard.reference.layers import is_conv1d_transposed

_ONE_ADAPTER = "loralib holds one unnamed adapter per layer"
#: loralib's parameter names below a replaced layer, in the canonical naming (loraguard.backends.naming).
_LINEAR_ROLES = {"lora_A": "lora_A.weight", "lora_B": "lora_B.weight", **TORCH_BASE}
_EMBEDDING_ROLES = {"lora_A": "lora_embedding_A", "lora_B": "lora_embedding_B", **TORCH_BASE}


class _Layer(Protocol):
    """What loraguard reads of a loralib layer (an nn.Module and a loralib.LoRALayer at once, so torch's typing
    of Module attributes knows none of these)."""

    r: int
    lora_A: nn.Parameter
    lora_B: nn.Parameter
    weight: nn.Parameter

    def eval(self) -> nn.Module: ...

    def train(self, mode: bool = True) -> nn.Module: ...


class LoralibBackend:
    """Drives loralib: targeted layers are replaced by loralib's, sharing the original weight and bias tensors."""

    name = "loralib"
    capabilities = frozenset({"embedding", "fan_in_fan_out", "unmerge", "bfloat16", "float16", "cuda"})

    def version(self) -> str:
        from importlib.metadata import version

        return version("loralib")  # the module has no __version__

    # -- structure -------------------------------------------------------------------------------------------
    @staticmethod
    def _layers(model: nn.Module) -> dict[str, _Layer]:
        """Path -> loralib layer with a rank, in module order."""
        return {n: cast(_Layer, m) for n, m in model.named_modules() if isinstance(m, lora.LoRALayer) and m.r > 0}

    def lora_factors(self, model: nn.Module, adapter: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if adapter != "default":
            return {}
        return {p: (layer.lora_A, layer.lora_B) for p, layer in self._layers(model).items()}

    def lora_biases(self, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
        return {}  # loralib's lora_B is a bare matrix: no lora_bias

    def base_weight(self, model: nn.Module, path: str) -> torch.Tensor:
        return self._layers(model)[path].weight

    def saved_copies(self, model: nn.Module, adapter: str) -> dict[str, dict[str, torch.Tensor]]:
        return {}  # no modules_to_save in loralib

    def trainable(self, model: nn.Module) -> set[str]:
        """Trainable parameters in the canonical naming (``fc.lora_A.default.weight``, ``fc.base_layer.bias``)."""
        roles = {
            path: _EMBEDDING_ROLES if isinstance(layer, nn.Embedding) else _LINEAR_ROLES
            for path, layer in self._layers(model).items()
        }
        return translate_names((n for n, p in model.named_parameters() if p.requires_grad), roles)

    # -- actions ---------------------------------------------------------------------------------------------
    def wrap(self, base: nn.Module, config: LoraConfig, adapter: str = "default") -> nn.Module:
        """Replace every targeted layer in place (loralib's way), then ``lora.mark_only_lora_as_trainable``."""
        _check_config(config, adapter)
        adapted = sorted(self._layers(base))
        if adapted:
            raise BackendError(
                f"this model already carries loralib LoRA layers ({', '.join(adapted[:3])}); "
                f"{_ONE_ADAPTER}, so a second adapter cannot be added: replace the layers of a fresh "
                "base model instead"
            )
        names = [n for n, _ in base.named_modules() if n]
        targets = [n for n in names if spec_matches(n, config.target_modules)]
        if not targets:
            raise ValueError(no_match_message("target_modules", config.target_modules, names))
        typos = unmatched_entries(names, config.target_modules) if isinstance(config.target_modules, list) else []
        if typos:  # loralib has no name matching: this backend's own, so it reports what it cannot find
            raise ValueError(no_match_message("target_modules", typos, names))
        layers = {path: _replacement(path, base.get_submodule(path), config) for path in targets}  # all, or none
        for path, layer in layers.items():
            parent, _, leaf = path.rpartition(".")
            setattr(base.get_submodule(parent), leaf, layer)
        lora.mark_only_lora_as_trainable(base, bias=config.bias)
        return base

    def merge(self, model: nn.Module, adapters: list[str] | None = None) -> None:
        """loralib's merge: ``eval()`` on each LoRA layer adds s * B @ A to its weight (once)."""
        if adapters not in (None, ["default"]):
            raise Unsupported(f"{_ONE_ADAPTER}: it cannot merge {adapters}")
        for layer in self._layers(model).values():
            layer.eval()

    def unmerge(self, model: nn.Module) -> None:
        """loralib's unmerge: ``train()`` on each LoRA layer subtracts s * B @ A again."""
        for layer in self._layers(model).values():
            layer.train()

    def merge_and_unload(self, model: nn.Module) -> nn.Module:
        """Merge with loralib, then put plain torch layers carrying the merged tensors back (loralib has no unload)."""
        self.merge(model)
        for path, layer in self._layers(model).items():
            parent, _, leaf = path.rpartition(".")
            setattr(model.get_submodule(parent), leaf, _plain(cast(nn.Module, layer)))
        return model

    def add_adapter(self, model: nn.Module, adapter: str, config: LoraConfig) -> None:
        raise Unsupported(f"{_ONE_ADAPTER}: it cannot add adapter {adapter!r}")

    def set_adapter(self, model: nn.Module, adapters: list[str]) -> None:
        if adapters != ["default"]:
            raise Unsupported(f"{_ONE_ADAPTER}: it cannot activate {adapters}")

    def disabled(self, model: nn.Module) -> AbstractContextManager[None]:
        raise Unsupported("loralib has no switch to compute the base output; keep a copy of the base model instead")

    def save(self, model: nn.Module, directory: Path, adapters: list[str] | None = None) -> None:
        raise Unsupported("loralib has no adapter file format (users torch.save(lora.lora_state_dict(model)))")

    def load(self, base: nn.Module, directory: Path, adapter: str = "default", trainable: bool = False) -> nn.Module:
        raise Unsupported("loralib has no adapter file format to load from")


def _check_config(config: LoraConfig, adapter: str) -> None:
    """Refuse, as Unsupported, every config field loralib cannot honour (so the check skips with the reason)."""
    if adapter != "default":
        raise Unsupported(f"{_ONE_ADAPTER}: use adapter 'default', not {adapter!r}")
    refuse(
        "loralib has no",
        (
            *beyond_plain_lora(config),
            ("rank_pattern", config.rank_pattern),
            ("alpha_pattern", config.alpha_pattern),
            ("use_dora", config.use_dora),
        ),
    )


def _replacement(path: str, module: nn.Module, config: LoraConfig) -> nn.Module:
    """A loralib layer holding `module`'s own weight and bias Parameters, its factors initialised per the config."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        raise Unsupported(
            f"target '{path}' is a {type(module).__name__}: loralib's conv layers have no peft factor "
            "layout (and its Conv1d fails for kernels over 1)"
        )
    if not isinstance(module, (nn.Linear, nn.Embedding)) and not is_conv1d_transposed(module):
        raise ValueError(
            f"target_modules selects '{path}', a {type(module).__name__}; LoRA applies to nn.Linear, "
            "GPT-2 Conv1D and nn.Embedding layers: name those instead"
        )
    w = module.weight
    if isinstance(module, nn.Embedding):
        layer = lora.Embedding(
            module.num_embeddings,
            module.embedding_dim,
            r=config.r,
            lora_alpha=config.lora_alpha,
            padding_idx=module.padding_idx,
            max_norm=module.max_norm,
            norm_type=module.norm_type,
            scale_grad_by_freq=module.scale_grad_by_freq,
            sparse=module.sparse,
            device=w.device,
            dtype=w.dtype,
        )
    else:
        fifo = is_conv1d_transposed(module)
        in_f, out_f = (module.nx, module.nf) if fifo else (module.in_features, module.out_features)
        layer = lora.Linear(
            in_f,
            out_f,
            r=config.r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            fan_in_fan_out=fifo,
            bias=module.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        layer.bias = module.bias
    layer.weight = w  # shared: loralib merges into the model's own weight tensor, as it does in real use
    if config.init_lora_weights is False:  # both factors random, so the adapter has an effect (tests)
        with torch.no_grad():
            nn.init.normal_(layer.lora_A, std=1.0 / math.sqrt(layer.lora_A.shape[1]))
            nn.init.normal_(layer.lora_B, std=0.1)
    return layer


def _plain(layer: nn.Module) -> nn.Module:
    """The torch layer a loralib layer stands for, carrying the loralib layer's (merged) weight and bias."""
    if isinstance(layer, nn.Embedding):
        return nn.Embedding(
            layer.num_embeddings,
            layer.embedding_dim,
            padding_idx=layer.padding_idx,
            max_norm=layer.max_norm,
            norm_type=layer.norm_type,
            scale_grad_by_freq=layer.scale_grad_by_freq,
            sparse=layer.sparse,
            _weight=layer.weight,
            _freeze=not layer.weight.requires_grad,
        )
    linear = cast(nn.Linear, layer)  # lora.Linear subclasses nn.Linear
    plain: nn.Module
    if getattr(layer, "fan_in_fan_out", False):
        from transformers.pytorch_utils import Conv1D

        plain = Conv1D(linear.out_features, linear.in_features)
    else:
        plain = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    plain.weight, plain.bias = linear.weight, linear.bias
    return plain
