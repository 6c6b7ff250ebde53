"""Hugging Face peft as a backend, for the installed release (0.8 and later).

Differences between releases are absorbed here, by feature detection, so invariants never see them. A
config field the installed release does not know raises `Unsupported` (the check is skipped, with the reason).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from loraguard.backends.base import Unsupported
from loraguard.backends.peft_reads import PeftReads, peft_api, peft_module
from loraguard.core.config import LoraConfig
from loraguard.core.tuners import TunerConfig

#: peft's config class for each tuner kind of `loraguard.core.tuners`.
_TUNER_CLASSES = {
    "loha": "LoHaConfig",
    "lokr": "LoKrConfig",
    "ia3": "IA3Config",
    "oft": "OFTConfig",
    "adalora": "AdaLoraConfig",
}


def _release() -> tuple[int, ...]:
    parts = []
    for p in peft_module().__version__.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class PeftBackend(PeftReads):
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
        if "target_parameters" in self._config_fields():  # LoRA on nn.Parameter (ParamWrapper) arrived in 0.17
            caps.add("target_parameters")
        if _has_autocast(peft_module().get_peft_model):
            caps.add("autocast_adapter_dtype")
        if hasattr(peft_module().tuners.lora.layer, "Conv1d"):  # LoRA on nn.Conv1d arrived in 0.15 (Conv2d earlier)
            caps.add("conv")
        caps.update(kind for kind, cls in _TUNER_CLASSES.items() if hasattr(peft_module(), cls))
        return frozenset(caps)

    def version(self) -> str:
        return peft_module().__version__

    # -- config ----------------------------------------------------------------------------------------------
    def _config_fields(self) -> set[str]:
        return {f.name for f in dataclasses.fields(peft_module().LoraConfig)}

    def peft_config(self, config: LoraConfig | TunerConfig) -> Any:
        """Translate loraguard's config; a non-default value for a field this release lacks is Unsupported."""
        if isinstance(config, TunerConfig):
            return self._tuner_config(config)
        return peft_module().LoraConfig(**self.peft_kwargs(config))

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
        if kwargs.get("target_parameters") and _release() < (0, 19):
            raise Unsupported(
                f"peft {self.version()} lays out the factors of a 3D (experts) parameter the other way round (lora_A "
                "reads dimension 1; 0.19 swapped it, with `is_transposed` for the old layout): loraguard's oracle "
                "follows 0.19 and later"
            )
        return kwargs

    def standalone_reproducer(self, invariant: str, promise: str, scenario: Any) -> str | None:
        """A script importing only torch and peft that replays a failing drawn example (None: no such form)."""
        from loraguard.backends.peft_script import standalone_script

        try:
            kwargs = self.peft_kwargs(scenario.config)
        except Unsupported:
            return None
        defaults = {f.name: f.default for f in dataclasses.fields(peft_module().LoraConfig)}
        shown = {k: v for k, v in kwargs.items() if v != defaults.get(k, object()) and v not in ({}, None)}
        return standalone_script(self.version(), shown, invariant, promise, scenario)

    def _tuner_config(self, config: TunerConfig) -> Any:
        """The tuner's own peft config class, with loraguard's fields; a field this release lacks is Unsupported."""
        cls = getattr(peft_module(), _TUNER_CLASSES[config.kind], None)
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

    # -- actions ---------------------------------------------------------------------------------------------
    def wrap(self, base: nn.Module, config: LoraConfig, adapter: str = "default") -> nn.Module:
        peft_config = self.peft_config(config)
        get_peft_model = peft_module().get_peft_model
        with self._all_linear_limit(), self._dora_limit():
            return get_peft_model(base, peft_config, adapter_name=adapter, **self._autocast(get_peft_model, config))

    def add_adapter(self, model: nn.Module, adapter: str, config: LoraConfig) -> None:
        peft_config = self.peft_config(config)
        with self._all_linear_limit(), self._dora_limit(), self._one_parameter_adapter_limit():
            peft_api(model).add_adapter(adapter, peft_config, **self._autocast(peft_api(model).add_adapter, config))

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
    def _refusal_limit(self, marker: str) -> Iterator[None]:
        """A ValueError whose message holds `marker` is the release refusing the config before anything changes:
        a limit (Unsupported, with peft's words), not a bug."""
        try:
            yield
        except ValueError as err:
            if marker in str(err):
                raise Unsupported(f"peft {self.version()}: {err}") from None
            raise

    def _all_linear_limit(self) -> AbstractContextManager[None]:
        """Through 0.14 peft resolved all-linear for transformers models (PreTrainedModel) only."""
        return self._refusal_limit("support `target_modules='all-linear'`")

    def _one_parameter_adapter_limit(self) -> AbstractContextManager[None]:
        """Before 0.20 a model held one adapter with target_parameters."""
        return self._refusal_limit("only one LoRA adapter per model with `target_parameters`")

    def set_adapter(self, model: nn.Module, adapters: list[str]) -> None:
        if len(adapters) == 1:
            peft_api(model).set_adapter(adapters[0])
            return
        tuner = peft_api(model).base_model
        if "adapter_names" not in inspect.signature(tuner.set_adapter).parameters and _release() < (0, 10):
            raise Unsupported(f"peft {self.version()} cannot activate several adapters at once")
        tuner.set_adapter(adapters)

    def delete_adapter(self, model: nn.Module, adapter: str) -> None:
        peft_api(model).delete_adapter(adapter)

    def merge(self, model: nn.Module, adapters: list[str] | None = None) -> None:
        if adapters is None:
            peft_api(model).merge_adapter()
        else:
            peft_api(model).merge_adapter(adapter_names=adapters)

    def unmerge(self, model: nn.Module) -> None:
        peft_api(model).unmerge_adapter()

    def merge_and_unload(self, model: nn.Module) -> nn.Module:
        return peft_api(model).merge_and_unload()

    def unload(self, model: nn.Module) -> nn.Module:
        return peft_api(model).unload()

    def disabled(self, model: nn.Module) -> AbstractContextManager[None]:
        return peft_api(model).disable_adapter()

    def add_weighted_adapter(
        self,
        model: nn.Module,
        adapters: list[str],
        weights: list[float],
        name: str,
        combination_type: str = "cat",
        **options: object,
    ) -> None:
        """peft's add_weighted_adapter; options this release lacks, or a type it does not know, are Unsupported."""
        accepted = inspect.signature(peft_api(model).add_weighted_adapter).parameters
        kwargs = {k: v for k, v in options.items() if v is not None and k in accepted}
        dropped = sorted(k for k, v in options.items() if k not in accepted and v not in (None, 1.0, "total"))
        if dropped:
            raise Unsupported(f"peft {self.version()}: add_weighted_adapter has no option {dropped}")
        try:
            peft_api(model).add_weighted_adapter(adapters, weights, name, combination_type=combination_type, **kwargs)
        except ValueError as err:  # a documented refusal, raised before anything changes, is a limitation
            text = str(err)
            if "same target modules type" in text or "same module with modules_to_save" in text:
                raise Unsupported(f"peft {self.version()} cannot combine these adapters: {err}") from None
            if "nvalid combination" in text and combination_type != "linear":
                raise Unsupported(f"peft {self.version()} has no combination_type {combination_type!r}") from None
            raise

    def save(self, model: nn.Module, directory: Path, adapters: list[str] | None = None) -> None:
        _start_model_card(Path(directory))
        if adapters is None:
            peft_api(model).save_pretrained(str(directory))
        else:
            peft_api(model).save_pretrained(str(directory), selected_adapters=adapters)

    def load(self, base: nn.Module, directory: Path, adapter: str = "default", trainable: bool = False) -> nn.Module:
        peft_model = peft_module().PeftModel
        return peft_model.from_pretrained(base, str(directory), adapter_name=adapter, is_trainable=trainable)

    def load_adapter(self, model: nn.Module, directory: Path, adapter: str, trainable: bool = False) -> None:
        peft_api(model).load_adapter(str(directory), adapter_name=adapter, is_trainable=trainable)


def _start_model_card(directory: Path) -> None:
    """Where there is no README.md, put the one save_pretrained would render from huggingface_hub's template (the
    same text every time): peft then updates it, instead of compiling the Jinja template again, most of a small
    adapter's save (about 30 of 35 ms). The saved files are byte for byte a plain save's
    (tests/backends/test_peft_save.py); a README.md already there is left to peft, as in a plain save."""
    card = directory / "README.md"
    if card.exists() or (directory.exists() and not directory.is_dir()):
        return
    directory.mkdir(parents=True, exist_ok=True)
    card.write_text(_model_card_template(), encoding="utf-8", newline="")


@functools.cache
def _model_card_template() -> str:
    """huggingface_hub's model card rendered with empty data: what peft's save_pretrained starts a README.md from."""
    from huggingface_hub import ModelCard, ModelCardData

    return str(ModelCard.from_template(ModelCardData()))


def _has_autocast(call: Callable) -> bool:
    """Does this release's `call` (get_peft_model, add_adapter) take autocast_adapter_dtype?"""
    return "autocast_adapter_dtype" in inspect.signature(call).parameters
