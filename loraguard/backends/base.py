"""The backend interface: how loraguard drives a PEFT-style library. Small on purpose.

A backend only *acts* (wrap, add, merge, save...) and *exposes raw state* (factors, weights, saved files).
It never judges itself: the invariants compare what it exposes against the oracle (the formula and the
reference implementation). Optional abilities are named in `capabilities`; an invariant that needs one a
backend lacks is skipped with that reason, never failed. A backend may also offer
``standalone_reproducer(invariant, promise, scenario) -> str | None``: a script that reproduces a failing drawn
example with the library alone (see `loraguard.backends.peft_script`).

Required (every backend implements them for real): ``name``, ``capabilities``, ``version``, ``wrap``,
``lora_factors``, ``base_weight``, ``merge``, ``merge_and_unload`` and ``trainable``.
Optional (may raise `Unsupported` with a reason, or return ``{}`` where the library has no such state):
``add_adapter``, ``set_adapter`` (``multi_adapter``), ``delete_adapter``, ``unmerge``, ``disabled``,
``save``/``load`` (``save_load``), ``load_adapter``, ``unload``, ``add_weighted_adapter``, ``lora_biases``,
``saved_copies``; ``lora_magnitudes`` only with ``dora``; ``token_rows(model, adapter)`` only with
``trainable_tokens`` (each embedding's trained row values by path, the tensor itself, one row per listed index,
in the config's order; a module tied to the embedding has none of its own). Subclass `BackendBase` to get these
defaults and write only what your library does.

Paths are module names inside the *base* model (``layers.0.fc``); parameter names in `trainable` follow the
one canonical naming of `loraguard.backends.naming` (peft's: ``fc.lora_A.default.weight``), which its
`translate_names` helper produces from a library's own names. ``wrappable`` names the model families a
backend can wrap (``plain`` torch modules, ``transformers`` models); scenarios of other families are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import torch
from torch import nn

from loraguard.backends.errors import BackendError, Unsupported
from loraguard.core.config import LoraConfig
from loraguard.core.matching import ALL_LINEAR
from loraguard.core.tuners import KINDS as TUNER_KINDS
from loraguard.core.tuners import TunerConfig

#: Capabilities a backend may declare. Core methods below are always required.
CAPABILITIES = {
    "multi_adapter": "several named adapters in one model (add_adapter, set_adapter)",
    "delete_adapter": "delete_adapter(model, name)",
    "disable": "disabled(model): a context computing the base output",
    "modules_to_save": "LoraConfig.modules_to_save: trainable full copies per adapter",
    "save_load": "save(...) and load(...) in the library's own format round-trip exactly",
    "peft_format": "save(...) writes peft's on-disk format (adapter_config.json, adapter_model.safetensors keys)",
    "load_adapter": "load_adapter(model, directory, name, trainable) onto an already wrapped model",
    "embedding": "LoRA on nn.Embedding",
    "conv": "LoRA on nn.Conv1d/Conv2d",
    "fan_in_fan_out": "LoRA on GPT-2 Conv1D (transposed weights)",
    "rslora": "use_rslora=True",
    "patterns": "rank_pattern / alpha_pattern",
    "lora_bias": "lora_bias=True (a bias on lora_B)",
    "bias": 'bias="lora_only" / "all": base biases trained and saved with the adapter',
    "autocast_adapter_dtype": "adapter weights in float32 on a bf16/fp16 model (True) or in the model's dtype (False)",
    "dora": "use_dora=True, with lora_magnitudes(model, adapter): each DoRA layer's magnitude vector by path",
    "all_linear": 'target_modules="all-linear"',
    "layers": "layers_to_transform / layers_pattern (which layer indices a target list adapts)",
    "init_options": "init_lora_weights=True / 'gaussian' honoured as peft does (one factor starts at zero)",
    "weighted_combination": "add_weighted_adapter(model, adapters, weights, name, combination_type=..., **options)",
    "unmerge": "unmerge(model) undoes merges in place",
    "unload": "unload(model): the base model back without merging",
    "bfloat16": "models in bfloat16",
    "float16": "models in float16",
    "cuda": "models on a CUDA device",
    "task_type": "LoraConfig.task_type: peft's task models, which add the task's heads to modules_to_save",
    "target_parameters": "LoraConfig.target_parameters: LoRA on parameters (2D, or 3D MoE expert stacks) instead of "
    "modules; factors and base_weight keyed by the parameter's path (``moe.experts.gate_up_proj``)",
    "trainable_tokens": "LoraConfig.trainable_token_indices, with token_rows(model, adapter): each embedding's "
    "trained row values by path (a module tied to the embedding follows it)",
    # peft's other tuners: a TunerConfig handed to wrap/add_adapter, and the reads of `TunerBackend` below
    **{kind: f"{what} (TunerConfig kind {kind!r})" for kind, what in TUNER_KINDS.items()},
}

#: Model families a backend may wrap (``wrappable``); a zoo model declares its own (`ZooModel.family`).
FAMILIES = {
    "plain": "any torch module tree (nn.Linear, nn.Embedding... in plain nn.Modules)",
    "transformers": "Hugging Face transformers PreTrainedModel instances only",
}


def refuse(lacks: str, fields: Iterable[tuple[str, object]]) -> None:
    """Unsupported naming, all at once, every config field a library cannot honour: `fields` pairs each field as the
    message names it with its value in the config, refused when truthy; `lacks` opens the message ("loralib has no")."""
    asked = [name for name, used in fields if used]
    if asked:
        raise Unsupported(f"{lacks} {', '.join(asked)}")


def beyond_plain_lora(config: LoraConfig) -> tuple[tuple[str, object], ...]:
    """The config fields of peft's that the other LoRA libraries lack, as `refuse` pairs (each backend adds its own)."""
    return (
        ("use_rslora", config.use_rslora),
        ("lora_bias", config.lora_bias),
        ("modules_to_save", config.modules_to_save),
        ("trainable_token_indices", config.trainable_token_indices),
        ("target_parameters", config.target_parameters),
        (f"target_modules={ALL_LINEAR!r}", config.target_modules == ALL_LINEAR),
        (f"init_lora_weights={config.init_lora_weights!r}", not isinstance(config.init_lora_weights, bool)),
    )


@runtime_checkable
class Backend(Protocol):
    """What every backend implements. Paths are module names inside the *base* model (e.g. ``layers.0.fc``)."""

    name: str

    @property
    def capabilities(self) -> frozenset[str]:
        """The optional abilities it has (`CAPABILITIES`): a class attribute, or a property reading the release."""

    def version(self) -> str:
        """The library's release, shown in reports and recorded in snapshots."""

    def wrap(self, base: nn.Module, config: LoraConfig, adapter: str = "default") -> nn.Module:
        """Inject adapter `adapter` into `base` and activate it (``get_peft_model``)."""

    def add_adapter(self, model: nn.Module, adapter: str, config: LoraConfig) -> None:
        """Add another adapter without activating it."""

    def set_adapter(self, model: nn.Module, adapters: list[str]) -> None:
        """Make `adapters` the active ones."""

    def lora_factors(self, model: nn.Module, adapter: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Raw (A, B) per LoRA-wrapped module path, in peft's saved layout (A (r, in...), B (out, r...))."""

    def lora_biases(self, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
        """lora_B's bias per module path, for adapters with lora_bias=True (empty dict otherwise)."""

    def base_weight(self, model: nn.Module, path: str) -> torch.Tensor:
        """The current weight of the base layer at `path` (merged or not); also of an embedding with trainable
        tokens and of a module tied to it, with ``trainable_tokens``."""

    def saved_copies(self, model: nn.Module, adapter: str) -> dict[str, dict[str, torch.Tensor]]:
        """`adapter`'s modules_to_save copies: module path -> the copy's state dict (tensors shared, not cloned)."""

    def merge(self, model: nn.Module, adapters: list[str] | None = None) -> None:
        """Merge adapters (the active ones by default) into the base weights, in place."""

    def unmerge(self, model: nn.Module) -> None:
        """Undo every merge."""

    def merge_and_unload(self, model: nn.Module) -> nn.Module:
        """Merge the active adapters and return the plain base model."""

    def disabled(self, model: nn.Module) -> AbstractContextManager[None]:
        """A context in which the model computes the base output."""

    def trainable(self, model: nn.Module) -> set[str]:
        """Parameters that require grad, named as in the base model (``fc.lora_A.default.weight``)."""

    def save(self, model: nn.Module, directory: Path, adapters: list[str] | None = None) -> None:
        """Save adapters the library's way: 'default' directly in `directory`, any other in ``directory/<name>``."""

    def load(self, base: nn.Module, directory: Path, adapter: str = "default", trainable: bool = False) -> nn.Module:
        """Load a saved adapter onto `base` (``from_pretrained``)."""


@runtime_checkable
class TunerBackend(Protocol):
    """What a backend adds to run peft's other tuners (declared as capabilities named after `TunerConfig` kinds)."""

    def wrap(self, base: nn.Module, config: TunerConfig, adapter: str = "default") -> nn.Module:
        """Inject a tuner adapter (``get_peft_model`` with the tuner's own config)."""

    def add_adapter(self, model: nn.Module, adapter: str, config: TunerConfig) -> None:
        """Add another adapter of a tuner without activating it."""

    def delete_adapter(self, model: nn.Module, adapter: str) -> None:
        """Delete an adapter (called only with the ``delete_adapter`` capability)."""

    def adapted_paths(self, model: nn.Module, adapter: str) -> set[str]:
        """Paths of the base model's layers that hold `adapter`."""

    def adapter_tensors(self, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
        """`adapter`'s trainable tensors (factors, vectors, modules_to_save copies) by the key they save under."""


class OptionalMethods(Protocol):
    """The optional methods outside `Backend`, typed. Each is called only under the capability beside it."""

    def delete_adapter(self, model: nn.Module, adapter: str) -> None:
        """Delete an adapter (``delete_adapter``)."""

    def load_adapter(self, model: nn.Module, directory: Path, adapter: str, trainable: bool = False) -> None:
        """Load a saved adapter onto an already wrapped model (``load_adapter``)."""

    def unload(self, model: nn.Module) -> nn.Module:
        """The base model back without merging (``unload``)."""

    def add_weighted_adapter(
        self, model: nn.Module, adapters: list[str], weights: list[float], name: str, **options: object
    ) -> None:
        """A new adapter combining `adapters` (``weighted_combination``)."""

    def lora_magnitudes(self, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
        """Each DoRA layer's magnitude vector by path (``dora``)."""

    def token_rows(self, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
        """Each embedding's trained token rows by path (``trainable_tokens``; see the module docstring)."""


def optional_methods(backend: Backend) -> OptionalMethods:
    """`backend` with its optional methods typed. The caller checks the capability first (the registry's `needs`
    or an explicit test), as every call of an optional method must; `BackendBase` refuses the ones it lacks."""
    return cast(OptionalMethods, backend)


class BackendBase:
    """The optional methods, each refusing with `Unsupported`: subclass it and implement the required ones."""

    name = "unnamed"
    capabilities: frozenset[str] = frozenset()
    wrappable: frozenset[str] = frozenset(FAMILIES)

    def _lacks(self, what: str) -> Unsupported:
        return Unsupported(f"backend {self.name!r} has no {what}")

    def add_adapter(self, model: nn.Module, adapter: str, config: LoraConfig) -> None:
        raise self._lacks("second adapter (add_adapter)")

    def set_adapter(self, model: nn.Module, adapters: list[str]) -> None:
        if adapters != ["default"]:
            raise self._lacks(f"adapters {adapters} to activate (set_adapter)")

    def delete_adapter(self, model: nn.Module, adapter: str) -> None:
        raise self._lacks("delete_adapter")

    def lora_biases(self, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
        return {}

    def saved_copies(self, model: nn.Module, adapter: str) -> dict[str, dict[str, torch.Tensor]]:
        return {}

    def unmerge(self, model: nn.Module) -> None:
        raise self._lacks("unmerge")

    def unload(self, model: nn.Module) -> nn.Module:
        raise self._lacks("unload")

    def disabled(self, model: nn.Module) -> AbstractContextManager[None]:
        raise self._lacks("switch to disable adapters")

    def save(self, model: nn.Module, directory: Path, adapters: list[str] | None = None) -> None:
        raise self._lacks("adapter file format (save)")

    def load(self, base: nn.Module, directory: Path, adapter: str = "default", trainable: bool = False) -> nn.Module:
        raise self._lacks("adapter file format (load)")

    def load_adapter(self, model: nn.Module, directory: Path, adapter: str, trainable: bool = False) -> None:
        raise self._lacks("load_adapter onto a wrapped model")

    def add_weighted_adapter(
        self, model: nn.Module, adapters: list[str], weights: list[float], name: str, **options: Any
    ) -> None:
        raise self._lacks("weighted combination of adapters")


def wrappable(backend: Backend) -> frozenset[str]:
    """The model families `backend` can wrap; a backend that does not say wraps every family."""
    return frozenset(getattr(backend, "wrappable", FAMILIES))


def check_capabilities(backend: Backend) -> None:
    """Refuse a backend that declares a capability or family loraguard does not know (a typo would skip checks)."""
    unknown = sorted(set(backend.capabilities) - set(CAPABILITIES))
    if unknown:
        raise BackendError(
            f"backend {backend.name!r} declares unknown capabilities {unknown}; known: {sorted(CAPABILITIES)}"
        )
    families = sorted(wrappable(backend) - set(FAMILIES))
    if families:
        raise BackendError(f"backend {backend.name!r} wraps unknown families {families}; known: {sorted(FAMILIES)}")
