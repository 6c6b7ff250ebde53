"""What an adapter wraps in the reference: its config resolved against the model (targets, modules_to_save,
trainable tokens), peft's "all-linear" set, and the refusal to wrap a model that already carries adapters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from torch import nn

from loraguard.core.config import LoraConfig
from loraguard.core.matching import (
    ALL_LINEAR,
    is_lora_internal,
    is_within,
    no_match_message,
    parameter_selected,
    unmatched_entries,
)
from loraguard.core.tasks import with_task_heads
from loraguard.reference.layers import LoraLayer, is_conv1d_transposed
from loraguard.reference.params import LoraParameter, select_parameters
from loraguard.reference.saved import ModulesToSave
from loraguard.reference.tokens import TrainableTokens, check_token_target, token_targets

if TYPE_CHECKING:
    from loraguard.reference.model import LoraModel


class AlreadyAdaptedError(ValueError):
    """Raised when wrapping a model that already carries LoRA layers (peft's 'Target module Dropout' bug)."""


#: The reference's wrappers: every module the adapters of a LoraModel put into the base model.
WRAPPERS = (LoraLayer, ModulesToSave, TrainableTokens)


def carries_adapters(model: nn.Module) -> bool:
    """True if any submodule is an adapter wrapper: ours, or peft's (recognised by its attributes)."""
    for module in model.modules():
        if isinstance(module, WRAPPERS):
            return True
        if hasattr(module, "base_layer") and any(hasattr(module, a) for a in ("lora_A", "lora_embedding_A")):
            return True
        if hasattr(module, "token_adapter"):
            return True
    return False


def refuse_if_adapted(model: nn.Module) -> None:
    """Wrapping a wrapped model would target LoRA internals: refuse, and say what to do instead."""
    if carries_adapters(model):
        raise AlreadyAdaptedError(
            "this model already carries LoRA adapters; wrapping it again would target LoRA internals "
            "(lora_dropout, base_layer, lora_A). To continue training the saved adapter use "
            "LoraModel.from_pretrained(base, path, is_trainable=True); "
            "to train a new one use add_adapter(name, config)."
        )


def inside_wrappers(model: nn.Module) -> set[str]:
    """Names of the modules that live inside an adapter wrapper (lora_dropout, base_layer, copies...)."""
    inside: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, WRAPPERS):
            inside.update(f"{name}.{sub}" if name else sub for sub, _ in module.named_modules() if sub)
    return inside


def all_linear_targets(model: nn.Module) -> list[str]:
    """peft's "all-linear": every Linear/Conv1D outside LoRA internals, minus the output head if the model names one.

    A layer already wrapped by LoRA counts by its base layer, so a second adapter finds the same layers.
    """
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None

    def linear(m: nn.Module) -> bool:
        if isinstance(m, LoraLayer):
            return linear(m.base_layer)
        return isinstance(m, nn.Linear) or is_conv1d_transposed(m)

    return [
        name for name, m in model.named_modules() if name and linear(m) and not is_lora_internal(name) and m is not head
    ]


class Plan(NamedTuple):
    """What one adapter wraps: LoRA targets, modules_to_save, trainable-token embeddings (path -> rows) and
    target_parameters ((module path, parameter name), in the order they nest)."""

    config: LoraConfig
    targets: list[str]
    saved: list[str]
    tokens: dict[str, list[int]]
    parameters: list[tuple[str, str]]


def plan_adapter(model: LoraModel, config: LoraConfig) -> Plan:
    """Resolve `config` against `model` and refuse, before anything changes, what the reference cannot do.

    Selection goes through the model's `_candidates`, `_selects` and `_tied_paths`, so each rule is stated once
    (and a mutant backend can break one).
    """
    names = [n for n, _ in model.model.named_modules() if n]
    config = with_task_heads(config, names)  # as peft's task models do, for every adapter
    candidates = model._candidates(names)
    if config.target_modules == ALL_LINEAR:
        targets = all_linear_targets(model.model)
    else:
        targets = [n for n in candidates if model._selects(n, config.target_modules) and config.in_layers(n)]
    parameters = plan_parameters(model, config, targets)
    if not targets and (config.target_modules or not parameters):
        raise ValueError(no_match_message("target_modules", config.target_modules, names))
    if isinstance(config.target_modules, list):  # one typo in a list would silently train fewer modules
        typos = unmatched_entries(candidates, config.target_modules)
        if typos:
            raise ValueError(no_match_message("target_modules", typos, names))
    saved = [n for n in candidates if model._selects(n, config.modules_to_save)]
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
    lora_wrapped = [p for p in saved if any(isinstance(m, LoraLayer) for m in model.model.get_submodule(p).modules())]
    if lora_wrapped:
        raise ValueError(
            f"modules_to_save {lora_wrapped} are or contain LoRA layers of another adapter; "
            "a full copy of them cannot be kept apart from that adapter"
        )
    tokens = token_targets(model.model, config.trainable_token_indices, candidates, model._selects)
    for path, indices in tokens.items():
        check_token_target(model.model, path, indices, targets + saved, model._tied_paths(path))
    return Plan(config, targets, saved, tokens, parameters)


def plan_parameters(model: LoraModel, config: LoraConfig, targets: list[str]) -> list[tuple[str, str]]:
    """The parameters `config.target_parameters` selects, refusing (by option) what peft refuses with them."""
    entries = config.target_parameters or []
    if not entries:
        return []
    refused = [
        opt
        for opt, on in (
            ("lora_dropout", config.lora_dropout > 0),
            ("lora_bias", config.lora_bias),
            ("use_dora", config.use_dora),
            ("fan_in_fan_out", config.fan_in_fan_out),
        )
        if on
    ]
    if refused:
        raise ValueError(f"target_parameters does not work with {', '.join(refused)} (peft refuses it too)")
    for name, other in model.peft_config.items():
        if other.target_parameters and set(other.target_parameters) != set(entries):
            raise ValueError(
                f"target_parameters={sorted(entries)} differs from adapter {name!r}'s {sorted(other.target_parameters)}"
                ": every adapter on a model must target the same parameters (peft nests one wrapper per parameter)"
            )
    parameters = select_parameters(model.model, entries, inside_wrappers(model.model))
    keys = [f"{path}.{param}" for path, param in parameters]
    missing = [e for e in entries if not any(parameter_selected(k, [e]) for k in keys)]
    if missing:
        raise ValueError(f"target_parameters entries {missing} match no parameter of the model")
    for path, _ in parameters:
        module = model.model.get_submodule(path)
        if path in targets or (isinstance(module, LoraLayer) and not isinstance(module, LoraParameter)):
            raise ValueError(
                f"target_parameters: module '{path}' is also adapted through target_modules; a parameter of a LoRA "
                "layer cannot be wrapped (peft refuses it too): target one or the other"
            )
    return parameters
