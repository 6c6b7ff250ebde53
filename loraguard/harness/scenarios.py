"""A scenario is what an invariant runs on: a tiny model recipe, one or two LoRA configs, a dtype and a device.

The oracle's expectations for a scenario (which modules are targets, what kind each is, which keys a save
must hold, which capabilities a backend needs) are derived here from the base model and the reference.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from loraguard.core.config import LoraConfig
from loraguard.core.merge_math import LayerKind
from loraguard.core.module_copy import copy_module
from loraguard.core.tuners import TunerConfig
from loraguard.core.vocabulary import DTYPE_NAMES
from loraguard.harness.zoo import ZooModel
from loraguard.reference.layers import LoraLayer, is_conv1d_transposed
from loraguard.reference.params import LoraParameter

if TYPE_CHECKING:
    from loraguard.reference.model import LoraModel

#: The name a scenario's second adapter is added under (the first is "default").
OTHER = "other"

DTYPES = {short: getattr(torch, long) for short, long in DTYPE_NAMES.items()}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_Config = TypeVar("_Config", LoraConfig, TunerConfig)


@dataclass(frozen=True)
class Scenario:
    """One model + adapters setup. `second` is a config for a second adapter ("other") where an invariant needs one."""

    model: ZooModel
    config: LoraConfig
    second: LoraConfig | None = None
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    seed: int = 0
    label: str = ""
    tuner: TunerConfig | None = None  # a non-LoRA adapter: `config`/`second` then only mirror its targets
    tuner_second: TunerConfig | None = None

    @property
    def id(self) -> str:
        """Readable test id: model, label, dtype."""
        return "-".join(p for p in (self.model.name, self.label, _DTYPE_NAMES.get(self.dtype, str(self.dtype))) if p)

    @property
    def second_config(self) -> LoraConfig:
        """The second adapter's config, for invariants registered with ``needs_second`` (never run without one)."""
        if self.second is None:
            raise ValueError(f"scenario {self.id} has no second adapter")
        return self.second

    def base(self) -> nn.Module:
        """A fresh base model, deterministic for the scenario's seed: a copy of the one this process built first for
        the same model, seed, dtype and device (building, and torch.manual_seed above all, was much of a check's
        time), with the global random state left exactly as building leaves it."""
        key = (structure_key(self.model), self.seed, self.dtype, self.device)
        built = _remembered(_BASES, key)
        if built is None:
            model = self.model.make(self.seed, self.dtype, self.device)
            try:
                _remember(_BASES, key, (copy_module(model), torch.get_rng_state()))
            except Exception:  # a model that cannot be copied is built every time
                pass
            return model
        prototype, rng = built
        if self.device != "cpu":
            torch.manual_seed(self.seed)  # the accelerators' generators, as make() seeds them
        torch.set_rng_state(rng)
        return copy_module(prototype)

    def inputs(self) -> tuple:
        x = self.model.example(self.seed, self.device)
        return tuple(t.to(self.dtype) if t.is_floating_point() else t for t in x)


#: Caches of what a process derives from a scenario's model (least recently used dropped first): base models by
#: (structure, seed, dtype, device), and the reference with adapters added, by that and the adapters' configs.
_BASES: OrderedDict[Hashable, tuple[nn.Module, torch.Tensor]] = OrderedDict()
_REFERENCES: OrderedDict[Hashable, Any] = OrderedDict()
_CACHE_SIZE = 128


def structure_key(model: ZooModel) -> Hashable:
    """What decides a zoo model's modules and weights: its builder, or a drawn tree's spec (equal specs drawn
    twice build the same tree)."""
    return getattr(model, "spec", None) or model.build


def _remembered(table: OrderedDict, key: Hashable) -> Any:
    try:
        value = table.get(key)
    except TypeError:  # an unhashable builder (a user's model): nothing is cached for it
        return None
    if value is not None:
        table.move_to_end(key)
    return value


def _remember(table: OrderedDict, key: Hashable, value: Any) -> None:
    try:
        table[key] = value
    except TypeError:
        return
    while len(table) > _CACHE_SIZE:
        table.popitem(last=False)


def _reference(scenario: Scenario, adapters: list[tuple[str, LoraConfig]]) -> LoraModel:
    """The oracle for the scenario with `adapters` (by their configs' repr), built once per process, for the
    expectations below only: they read it and hand out new containers, so it is never changed.

    Building it leaves the global random state where the reference's initialisation left it, starting from the seed
    (a backend's adapter initialised next draws from there): a cached one leaves exactly that state too, so no
    check's random draws depend on which checks ran before it in the process. Off the CPU it is built every time.
    """
    key = (structure_key(scenario.model), scenario.seed, scenario.dtype, scenario.device, repr(adapters))
    cached = _remembered(_REFERENCES, key) if scenario.device == "cpu" else None
    if cached is None:
        ref = oracle(scenario, adapters)  # a config the reference refuses raises here, every time
        if scenario.device == "cpu":
            _remember(_REFERENCES, key, (ref, torch.get_rng_state()))
        return ref
    ref, rng = cached
    torch.set_rng_state(rng)
    return ref


def layer_kind(module: nn.Module) -> tuple[LayerKind, bool]:
    """(kind, fan_in_fan_out) of a base layer, decided from its type alone (the oracle's view, not the backend's)."""
    if isinstance(module, nn.Embedding):
        return "embedding", False
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "conv", False
    return "linear", is_conv1d_transposed(module)


def target_kind(layer: LoraLayer) -> tuple[LayerKind, bool]:
    """(kind, fan_in_fan_out) of a reference LoRA layer: its base layer's, or its parameter's (`target_parameters`:
    a 2D parameter is "linear", a 3D one "experts", transposed on a module marked `is_transposed`)."""
    if isinstance(layer, LoraParameter):
        return layer.kind, layer.fan_in_fan_out
    return layer_kind(layer.base_layer)


def oracle(scenario: Scenario, adapters: list[tuple[str, LoraConfig]] | None = None) -> LoraModel:
    """The reference model for the scenario (adapters added in order; the first is active)."""
    from loraguard.reference import LoraModel

    adapters = adapters or [("default", scenario.config)]
    (name, cfg), rest = adapters[0], adapters[1:]
    ref = LoraModel(scenario.base(), cfg, name)
    for other, other_cfg in rest:
        ref.add_adapter(other, other_cfg)
    return ref


def expected_targets(
    scenario: Scenario,
    config: LoraConfig | None = None,
    adapters: list[tuple[str, LoraConfig]] | None = None,
    adapter: str = "default",
) -> dict[str, tuple[LayerKind, bool]]:
    """Module path -> (kind, fan_in_fan_out) for every module `adapter` must wrap, per the reference's rules.

    With `adapters`, the oracle adds them all in order (a later adapter cannot target inside an earlier copy).
    """
    return expected_layout(scenario, adapters or [("default", config or scenario.config)], adapter)[0]


def expected_tokens(
    scenario: Scenario, adapters: list[tuple[str, LoraConfig]] | None = None, adapter: str = "default"
) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Per the reference: embedding path -> the rows `adapter` trains there, and each module tied to one of those
    embeddings (it must follow the rows) -> the embedding's path."""
    _, rows, tied = expected_layout(scenario, adapters or [("default", scenario.config)], adapter)
    return rows, tied


def expected_layout(
    scenario: Scenario, adapters: list[tuple[str, LoraConfig]], adapter: str = "default"
) -> tuple[dict[str, tuple[LayerKind, bool]], dict[str, list[int]], dict[str, str]]:
    """`expected_targets` and `expected_tokens` from one oracle model (building it is most of a wrap's cost)."""
    ref = _reference(scenario, adapters)
    targets = {p: target_kind(layer) for p, layer in ref.target_layers().items() if adapter in layer.scaling}
    layers = ref.token_layers()
    rows = {p: list(t.indices[adapter]) for p, t in layers.items() if t.leader is None and adapter in t.indices}
    tied = {p: q for p, t in layers.items() for q in rows if t.leader is not None and t.leader is layers[q]}
    return targets, rows, tied


def parameter_key_paths(scenario: Scenario) -> dict[str, str]:
    """`target_parameters` target (``experts.gate_up_proj``) -> the module path its factors are saved under, per the
    reference: one module's parameters nest one wrapper each, so ``experts.base_layer`` for all but the last."""
    ref = _reference(scenario, [("default", scenario.config)])
    where = {id(layer): path for path, layer in ref.lora_layers().items()}
    return {t: where[id(layer)] for t, layer in ref.target_layers().items() if where[id(layer)] != t}


def expected_saved_keys(scenario: Scenario, adapters: list[tuple[str, LoraConfig]], name: str) -> set[str]:
    """The exact key set adapter `name` must save, per the reference."""
    return set(_reference(scenario, adapters).adapter_state_dict(name))


def expected_saved_modules(
    scenario: Scenario, adapters: list[tuple[str, LoraConfig]] | None = None
) -> dict[str, set[str]]:
    """Per the reference: each module kept as a modules_to_save copy -> the adapters that keep one."""
    ref = _reference(scenario, adapters or [("default", scenario.config)])
    return {p: set(w.modules_to_save) for p, w in ref.saved_modules().items()}


def expected_trainable(scenario: Scenario, adapters: list[tuple[str, LoraConfig]], name: str) -> set[str]:
    """Per the reference: the state-dict keys of the parameters adapter `name` trains."""
    return set(_reference(scenario, adapters).adapter_parameters(name))


def expected_parameters(scenario: Scenario, adapters: list[tuple[str, LoraConfig]]) -> set[str]:
    """Per the reference: the names of the adapted model's parameters, a tied one counted once."""
    return {n for n, _ in _reference(scenario, adapters).model.named_parameters()}


def reference_accepts(scenario: Scenario, adapters: list[tuple[str, LoraConfig]]) -> bool:
    """True unless the reference refuses the adapters' configs on the scenario's model (a ValueError)."""
    try:
        _reference(scenario, adapters)
    except ValueError:
        return False
    return True


def needed_capabilities(scenario: Scenario, with_second: bool = False) -> set[str]:
    """Capabilities a backend must declare to run this scenario (its second adapter too, if `with_second`)."""
    needs: set[str] = set()
    for cfg in filter(None, (scenario.config, scenario.second if with_second else None)):
        if cfg.use_rslora:
            needs.add("rslora")
        if cfg.rank_pattern or cfg.alpha_pattern:
            needs.add("patterns")
        if cfg.lora_bias:
            needs.add("lora_bias")
        if cfg.bias != "none":
            needs.add("bias")
        if cfg.autocast_adapter_dtype is not None:
            needs.add("autocast_adapter_dtype")
        if cfg.use_dora:
            needs.add("dora")
        if cfg.modules_to_save:
            needs.add("modules_to_save")
        if cfg.task_type is not None:
            needs.add("task_type")
        if cfg.layers_to_transform is not None:
            needs.add("layers")
        if cfg.target_modules == "all-linear":
            needs.add("all_linear")
        if cfg.trainable_token_indices is not None:
            needs.add("trainable_tokens")
        if cfg.target_parameters:
            needs.add("target_parameters")
        for kind, fifo in expected_targets(scenario, cfg).values():
            if kind == "experts":
                continue  # needs target_parameters, added above
            if fifo:
                needs.add("fan_in_fan_out")
            elif kind != "linear":
                needs.add(kind)
    if scenario.tuner is not None:
        needs.add(scenario.tuner.kind)
    if with_second and scenario.second is not None:
        needs.add("multi_adapter")
    if scenario.dtype == torch.bfloat16:
        needs.add("bfloat16")
    if scenario.dtype == torch.float16:
        needs.add("float16")
    if scenario.device.startswith("cuda"):
        needs.add("cuda")
    return needs


def clone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached copies, to compare against later."""
    return {k: v.detach().clone() for k, v in state.items()}


def without_modules_to_save(scenario: Scenario) -> Scenario:
    """The scenario with no modules_to_save, for backends that lack them when a promise does not involve them."""
    return dataclasses.replace(
        scenario,
        config=dataclasses.replace(scenario.config, modules_to_save=None),
        second=_without_saved(scenario.second),
        tuner=_without_saved(scenario.tuner),
        tuner_second=_without_saved(scenario.tuner_second),
    )


def _without_saved(config: _Config | None) -> _Config | None:
    return None if config is None else dataclasses.replace(config, modules_to_save=None)
