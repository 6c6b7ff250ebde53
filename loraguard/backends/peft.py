"""Hugging Face peft as a backend, for the installed release (0.8 and later).

Differences between releases are absorbed here, by feature detection, so invariants never see them. A
config field the installed release does not know raises `Unsupported` (the check is skipped, with the reason).
"""

from __future__ import annotations

import dataclasses
import inspect
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from loraguard.backends.base import Unsupported
from loraguard.core.config import LoraConfig
from loraguard.core.keys import PEFT_PREFIX
from loraguard.core.tuners import TunerConfig

#: peft's config class for each tuner kind of `loraguard.core.tuners`.
_TUNER_CLASSES = {
    "loha": "LoHaConfig",
    "lokr": "LoKrConfig",
    "ia3": "IA3Config",
    "oft": "OFTConfig",
    "adalora": "AdaLoraConfig",
}


def _peft():
    import peft

    return peft


def _release() -> tuple[int, ...]:
    parts = []
    for p in _peft().__version__.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class PeftBackend:
    """Drives `peft.get_peft_model` / `PeftModel` with loraguard's config translated field by field."""

    name = "peft"

    @property
    def capabilities(self) -> frozenset[str]:
        caps = {
            "multi_adapter",
            "delete_adapter",
            "disable",
            "modules_to_save",
            "save_load",
            "load_adapter",
            "embedding",
            "fan_in_fan_out",
            "rslora",
            "patterns",
            "all_linear",
            "layers",
            "init_options",
            "unload",
            "unmerge",
            "peft_format",
            "weighted_combination",
            "bfloat16",
            "float16",
            "cuda",
            "task_type",
            "bias",
        }
        if "lora_bias" in self._config_fields():
            caps.add("lora_bias")
        if "use_dora" in self._config_fields():
            caps.add("dora")
        if "trainable_token_indices" in self._config_fields():  # LoRA's trainable tokens arrived in 0.15
            caps.add("trainable_tokens")
        if _has_autocast(_peft().get_peft_model):
            caps.add("autocast_adapter_dtype")
        if hasattr(_peft().tuners.lora.layer, "Conv1d"):  # LoRA on nn.Conv1d arrived in 0.15 (Conv2d earlier)
            caps.add("conv")
        caps.update(kind for kind, cls in _TUNER_CLASSES.items() if hasattr(_peft(), cls))
        return frozenset(caps)

    def version(self) -> str:
        return _peft().__version__

    # -- config ----------------------------------------------------------------------------------------------
    def _config_fields(self) -> set[str]:
        return {f.name for f in dataclasses.fields(_peft().LoraConfig)}

    def peft_config(self, config: LoraConfig | TunerConfig):
        """Translate loraguard's config; a non-default value for a field this release lacks is Unsupported."""
        if isinstance(config, TunerConfig):
            return self._tuner_config(config)
        return _peft().LoraConfig(**self.peft_kwargs(config))

    def peft_kwargs(self, config: LoraConfig) -> dict:
        """The keyword arguments of peft's LoraConfig for loraguard's config (see `peft_config`)."""
        known = self._config_fields()
        ours = config.to_json_dict()
        defaults = LoraConfig().to_json_dict()
        kwargs = {}
        for key, value in ours.items():
            if key in ("peft_type", "base_model_name_or_path", "inference_mode") or (key, value) == ("task_type", None):
                continue
            if key in known:
                kwargs[key] = value
            elif value != defaults.get(key, value) or key not in defaults:
                raise Unsupported(f"peft {self.version()} has no LoraConfig field {key!r} (needed: {key}={value!r})")
        if isinstance(kwargs.get("target_modules"), list):
            kwargs["target_modules"] = list(kwargs["target_modules"])
        return kwargs

    def standalone_reproducer(self, invariant: str, promise: str, scenario) -> str | None:
        """A script importing only torch and peft that replays a failing drawn example (None: no such form)."""
        from loraguard.backends.peft_script import standalone_script

        try:
            kwargs = self.peft_kwargs(scenario.config)
        except Unsupported:
            return None
        defaults = {f.name: f.default for f in dataclasses.fields(_peft().LoraConfig)}
        shown = {k: v for k, v in kwargs.items() if v != defaults.get(k, object()) and v not in ({}, None)}
        return standalone_script(self.version(), shown, invariant, promise, scenario)

    def _tuner_config(self, config: TunerConfig):
        """The tuner's own peft config class, with loraguard's fields; a field this release lacks is Unsupported."""
        cls = getattr(_peft(), _TUNER_CLASSES[config.kind], None)
        if cls is None:
            raise Unsupported(f"peft {self.version()} has no {_TUNER_CLASSES[config.kind]}")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(set(config.options) - known)
        if missing:
            raise Unsupported(f"peft {self.version()} has no {cls.__name__} field(s) {missing}")
        targets = config.target_modules
        mts = config.modules_to_save
        return cls(
            target_modules=list(targets) if isinstance(targets, list) else targets,
            modules_to_save=list(mts) if mts else None,
            **config.options,
        )

    # -- structure -------------------------------------------------------------------------------------------
    @staticmethod
    def _base(model: nn.Module) -> nn.Module:
        return _api(model).base_model.model

    def _lora_layers(self, model: nn.Module) -> dict[str, Any]:
        """peft's LoRA layers by path (typed Any: their attributes are peft's and vary by release)."""
        return _outermost(self._base(model), lambda m: hasattr(m, "lora_A") and hasattr(m, "base_layer"))

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
        layers = self._tuner_layers(model)
        if path in layers:
            return layers[path].get_base_layer().weight
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

    # -- actions ---------------------------------------------------------------------------------------------
    def wrap(self, base: nn.Module, config: LoraConfig, adapter: str = "default") -> nn.Module:
        peft_config = self.peft_config(config)
        get_peft_model = _peft().get_peft_model
        with self._all_linear_limit(), self._dora_limit():
            return get_peft_model(base, peft_config, adapter_name=adapter, **self._autocast(get_peft_model, config))

    def add_adapter(self, model: nn.Module, adapter: str, config: LoraConfig) -> None:
        peft_config = self.peft_config(config)
        with self._all_linear_limit(), self._dora_limit():
            _api(model).add_adapter(adapter, peft_config, **self._autocast(_api(model).add_adapter, config))

    @contextmanager
    def _dora_limit(self) -> Iterator[None]:
        """peft 0.15 wraps nn.Conv1d in LoRA but has no DoRA for it (a bare NotImplementedError from
        `_get_dora_layer_class`, raised before anything changes): a limit of the release, not a bug."""
        try:
            yield
        except NotImplementedError as err:
            frames = traceback.extract_tb(err.__traceback__)
            if frames and frames[-1].name == "_get_dora_layer_class":
                raise Unsupported(f"peft {self.version()} has no DoRA for a layer type here (nn.Conv1d)") from None
            raise

    def _autocast(self, call: Callable, config: LoraConfig | TunerConfig) -> dict[str, bool]:
        """`autocast_adapter_dtype` for `call` when the config sets it; releases before the option never cast."""
        wanted = getattr(config, "autocast_adapter_dtype", None)
        if wanted is None or (wanted is False and not _has_autocast(call)):
            return {}
        if not _has_autocast(call):
            raise Unsupported(
                f"peft {self.version()} has no autocast_adapter_dtype (adapters stay in the model's dtype)"
            )
        return {"autocast_adapter_dtype": wanted}

    @contextmanager
    def _all_linear_limit(self) -> Iterator[None]:
        """Through 0.14 peft resolved all-linear for transformers models (PreTrainedModel) only: a limit, not a bug."""
        try:
            yield
        except ValueError as err:
            if "support `target_modules='all-linear'`" in str(err):
                raise Unsupported(f"peft {self.version()}: {err}") from None
            raise

    def set_adapter(self, model: nn.Module, adapters: list[str]) -> None:
        if len(adapters) == 1:
            _api(model).set_adapter(adapters[0])
            return
        tuner = _api(model).base_model
        if "adapter_names" not in inspect.signature(tuner.set_adapter).parameters and _release() < (0, 10):
            raise Unsupported(f"peft {self.version()} cannot activate several adapters at once")
        tuner.set_adapter(adapters)

    def delete_adapter(self, model: nn.Module, adapter: str) -> None:
        _api(model).delete_adapter(adapter)

    def merge(self, model: nn.Module, adapters: list[str] | None = None) -> None:
        _api(model).merge_adapter(adapter_names=adapters) if adapters is not None else _api(model).merge_adapter()

    def unmerge(self, model: nn.Module) -> None:
        _api(model).unmerge_adapter()

    def merge_and_unload(self, model: nn.Module) -> nn.Module:
        return _api(model).merge_and_unload()

    def unload(self, model: nn.Module) -> nn.Module:
        return _api(model).unload()

    def disabled(self, model: nn.Module) -> AbstractContextManager[None]:
        return _api(model).disable_adapter()

    def add_weighted_adapter(
        self,
        model: nn.Module,
        adapters: list[str],
        weights: list[float],
        name: str,
        combination_type: str = "cat",
        **options,
    ) -> None:
        """peft's add_weighted_adapter; options this release lacks, or a type it does not know, are Unsupported."""
        accepted = inspect.signature(_api(model).add_weighted_adapter).parameters
        kwargs = {k: v for k, v in options.items() if v is not None and k in accepted}
        dropped = sorted(k for k, v in options.items() if k not in accepted and v not in (None, 1.0, "total"))
        if dropped:
            raise Unsupported(f"peft {self.version()}: add_weighted_adapter has no option {dropped}")
        try:
            _api(model).add_weighted_adapter(adapters, weights, name, combination_type=combination_type, **kwargs)
        except ValueError as err:  # a documented refusal, raised before anything changes, is a limitation
            text = str(err)
            if "same target modules type" in text or "same module with modules_to_save" in text:
                raise Unsupported(f"peft {self.version()} cannot combine these adapters: {err}") from None
            if "nvalid combination" in text and combination_type != "linear":
                raise Unsupported(f"peft {self.version()} has no combination_type {combination_type!r}") from None
            raise

    def save(self, model: nn.Module, directory: Path, adapters: list[str] | None = None) -> None:
        if adapters is None:
            _api(model).save_pretrained(str(directory))
        else:
            _api(model).save_pretrained(str(directory), selected_adapters=adapters)

    def load(self, base: nn.Module, directory: Path, adapter: str = "default", trainable: bool = False) -> nn.Module:
        return _peft().PeftModel.from_pretrained(base, str(directory), adapter_name=adapter, is_trainable=trainable)

    def load_adapter(self, model: nn.Module, directory: Path, adapter: str, trainable: bool = False) -> None:
        _api(model).load_adapter(str(directory), adapter_name=adapter, is_trainable=trainable)


def _api(model: nn.Module) -> Any:
    """`model` as the PeftModel it is: merge_adapter, add_adapter... are peft's API, which torch's Module typing
    does not know and which differs between releases (this module detects features before using them)."""
    return model


def _has_autocast(call: Callable) -> bool:
    """Does this release's `call` (get_peft_model, add_adapter) take autocast_adapter_dtype?"""
    return "autocast_adapter_dtype" in inspect.signature(call).parameters


def _outermost(base: nn.Module, is_layer: Callable[[nn.Module], bool]) -> dict[str, nn.Module]:
    """Adapted layers by path, leaving out a layer that is another one's `base_layer` (a layer wrapped twice).

    Judged by structure, not by the name: a user's own module called `base_layer` that peft adapted is kept.
    """
    layers = {n: m for n, m in base.named_modules() if is_layer(m)}
    inner = {id(m.base_layer) for m in layers.values()}
    return {n: m for n, m in layers.items() if id(m) not in inner}
