"""A scenario is what an invariant runs on: a tiny model recipe, one or two LoRA configs, a dtype and a device.

The oracle's expectations for a scenario (which modules are targets, what kind each is, which keys a save
must hold, which capabilities a backend needs) are derived here from the base model and the reference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from loraguard.core.config import LoraConfig
from loraguard.core.merge_math import LayerKind
from loraguard.core.tuners import TunerConfig
from loraguard.core.vocabulary import DTYPE_NAMES
from loraguard.harness.zoo import ZooModel
from loraguard.reference.layers import is_conv1d_transposed

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
        """A fresh base model, deterministic for the scenario's seed."""
        return self.model.make(self.seed, self.dtype, self.device)

    def inputs(self) -> tuple:
        x = self.model.example(self.seed, self.device)
        return tuple(t.to(self.dtype) if t.is_floating_point() else t for t in x)


def layer_kind(module: nn.Module) -> tuple[LayerKind, bool]:
    """(kind, fan_in_fan_out) of a base layer, decided from its type alone (the oracle's view, not the backend's)."""
    if isinstance(module, nn.Embedding):
        return "embedding", False
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "conv", False
    return "linear", is_conv1d_transposed(module)


def oracle(scenario: Scenario, adapters: list[tuple[str, LoraConfig]] | None = None):
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
    ref = oracle(scenario, adapters)
    targets = {p: layer_kind(layer.base_layer) for p, layer in ref.lora_layers().items() if adapter in layer.scaling}
    layers = ref.token_layers()
    rows = {p: t.indices[adapter] for p, t in layers.items() if t.leader is None and adapter in t.indices}
    tied = {p: q for p, t in layers.items() for q in rows if t.leader is not None and t.leader is layers[q]}
    return targets, rows, tied


def expected_saved_keys(scenario: Scenario, adapters: list[tuple[str, LoraConfig]], name: str) -> set[str]:
    """The exact key set adapter `name` must save, per the reference."""
    return set(oracle(scenario, adapters).adapter_state_dict(name))


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
        for kind, fifo in expected_targets(scenario, cfg).values():
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


#: Zoo models that also run with DoRA, one per layer kind DoRA rescales: Linear, Conv1d/2d, GPT-2 Conv1D; and
#: bert, the model AdapterHub adapters can wrap (Linear layers with biases).
DORA_MODELS = ("mlp", "convnet", "gpt2", "bert")


def zoo_scenarios(models: list[ZooModel], dtypes: list[torch.dtype], device: str = "cpu") -> list[Scenario]:
    """The deterministic scenarios of the built-in zoo (or user models): non-trivial scaling, non-zero B."""
    out = []
    for zm in models:
        saved = zm.second_modules_to_save
        if zm.task_type is not None:  # a task model's later adapters are configured as users do: like the first
            saved = list(zm.modules_to_save) or None
        first = LoraConfig(
            r=4,
            lora_alpha=16,
            target_modules=zm.target_modules,
            modules_to_save=list(zm.modules_to_save) or None,
            init_lora_weights=False,
            task_type=zm.task_type,
        )
        second = LoraConfig(
            r=2,
            lora_alpha=8,
            target_modules=zm.second_targets or zm.target_modules,
            modules_to_save=saved,
            init_lora_weights=False,
            task_type=zm.task_type,
        )
        for dtype in dtypes:
            out.append(Scenario(zm, first, second, dtype, device, seed=0, label="r4"))
    names = {zm.name: zm for zm in models}
    for model, tuner, tuner_second in TUNERS:
        if model in names:
            out += [tuner_scenario(names[model], tuner, tuner_second, dtype, device) for dtype in dtypes]
    return out


def _tuners(model: str, kind: str, targets: list[str], second: list[str], frozen: bool = False, **options) -> tuple:
    """A tuner setup on a zoo model: the first adapter (with the model's modules_to_save), the second on `second`
    (`frozen`: added with inference_mode=True, for tuners that train one adapter at a time)."""
    first = TunerConfig(kind, targets, list(ZOO_MTS.get(model, [])) or None, options)
    later = {**options, "inference_mode": True} if frozen else options
    return model, first, TunerConfig(kind, second, None, later)


#: modules_to_save of the first tuner adapter, per zoo model.
ZOO_MTS = {"mlp": ["head"], "llama": ["lm_head"]}
#: peft's other tuners on zoo models: (model, first adapter, second adapter). Non-default inits and scales, so
#: every adapter has an effect well above the bfloat16 bound. AdaLoRA trains one adapter: the second is frozen.
TUNERS: list[tuple[str, TunerConfig, TunerConfig]] = [
    _tuners("mlp", "loha", ["fc1", "fc2"], ["fc1"], r=4, alpha=64, init_weights=False),
    _tuners("mlp", "lokr", ["fc1", "fc2"], ["fc1"], r=4, alpha=16, init_weights=False),
    _tuners("mlp", "ia3", ["fc1", "fc2"], ["fc2"], feedforward_modules=["fc2"], init_ia3_weights=False),
    _tuners(
        "gpt2",
        "ia3",
        ["c_attn", "c_fc"],
        ["c_fc"],
        feedforward_modules=["c_fc"],
        fan_in_fan_out=True,
        init_ia3_weights=False,
    ),
    _tuners("llama", "lokr", ["q_proj", "v_proj", "gate_proj"], ["v_proj"], r=4, alpha=16, init_weights=False),
    _tuners("mlp", "oft", ["fc1", "fc2"], ["fc1"], r=0, oft_block_size=4, init_weights=False),
    _tuners(
        "mlp",
        "adalora",
        ["fc1", "fc2"],
        ["fc1"],
        frozen=True,
        init_r=4,
        target_r=2,
        lora_alpha=16,
        init_lora_weights=False,
        total_step=10,
    ),
]


def tuner_scenario(
    zm: ZooModel, tuner: TunerConfig, second: TunerConfig, dtype: torch.dtype, device: str = "cpu"
) -> Scenario:
    """A scenario for a non-LoRA tuner with its second adapter (the same kind); `config`/`second` mirror targets."""
    mirror = lambda t: LoraConfig(target_modules=t.target_modules, modules_to_save=t.modules_to_save)
    return Scenario(zm, mirror(tuner), mirror(second), dtype, device, 0, tuner.kind, tuner, second)


def profile_scenarios(models: list[ZooModel], dtypes: list[torch.dtype], device: str = "cpu") -> list[Scenario]:
    """What a profile runs: each model's zoo scenarios, followed by its DoRA and trainable-token ones where it has
    them."""
    return [
        s
        for zm in models
        for s in zoo_scenarios([zm], dtypes, device)
        + dora_scenarios([zm], dtypes, device)
        + token_scenarios([zm], dtypes, device)
    ]


#: Zoo models that also run with trainable tokens ("tokens" in the test id): the LoRA targets without the
#: embedding, and each adapter's rows (disjoint). `tied-embedding` ties its head by sharing the tensor (a plain
#: model), gpt2 by its config (a list of indices: the input embedding); `scaled-embedding` has Gemma's scale.
TOKEN_MODELS: dict[str, tuple[list[str], list[int] | dict[str, list[int]], list[int] | dict[str, list[int]]]] = {
    "tied-embedding": (["proj"], {"wte": [1, 4, 7, 10, 13, 16, 19]}, {"wte": [2, 5, 8]}),
    "scaled-embedding": (["proj"], {"wte": [0, 3, 6, 9, 12, 15, 18]}, {"wte": [1, 11]}),
    "gpt2": (["c_attn", "c_proj"], [1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31], [2, 5, 8]),
}


def token_scenarios(models: list[ZooModel], dtypes: list[torch.dtype], device: str = "cpu") -> list[Scenario]:
    """The zoo scenarios of the TOKEN_MODELS among `models`, both adapters training rows of the embedding."""
    out = []
    for s in zoo_scenarios([zm for zm in models if zm.name in TOKEN_MODELS], dtypes, device):
        if s.label != "r4" or s.second is None:
            continue
        targets, first, second = TOKEN_MODELS[s.model.name]
        out.append(
            dataclasses.replace(
                s,
                config=dataclasses.replace(s.config, target_modules=targets, trainable_token_indices=first),
                second=dataclasses.replace(s.second, target_modules=targets, trainable_token_indices=second),
                label="tokens",
            )
        )
    return out


def dora_scenarios(models: list[ZooModel], dtypes: list[torch.dtype], device: str = "cpu") -> list[Scenario]:
    """The zoo scenarios of the DORA_MODELS among `models` with both adapters DoRA ("dora" in the test id)."""
    picked = [zm for zm in models if zm.name in DORA_MODELS]
    return [
        dataclasses.replace(
            s,
            config=dataclasses.replace(s.config, use_dora=True),
            second=dataclasses.replace(s.second, use_dora=True),
            label="dora",
        )
        for s in zoo_scenarios(picked, dtypes, device)
        if s.label == "r4" and s.second is not None
    ]


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
