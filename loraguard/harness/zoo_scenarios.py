"""The built-in scenarios: each zoo model's two LoRA adapters, the other tuners, DoRA and trainable tokens.

What a profile runs on the zoo (or on a user's own models), built from `loraguard.harness.scenarios.Scenario`.
"""

from __future__ import annotations

import dataclasses

import torch

from loraguard.core.config import LoraConfig
from loraguard.core.tuners import TunerConfig
from loraguard.harness.scenarios import Scenario
from loraguard.harness.zoo import ZooModel

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
            target_parameters=zm.target_parameters,
        )
        second = LoraConfig(
            r=2,
            lora_alpha=8,
            target_modules=zm.target_modules if zm.second_targets is None else zm.second_targets,
            modules_to_save=saved,
            init_lora_weights=False,
            task_type=zm.task_type,
            target_parameters=zm.target_parameters,
        )
        for dtype in dtypes:
            out.append(Scenario(zm, first, second, dtype, device, seed=0, label="r4"))
    names = {zm.name: zm for zm in models}
    for model, tuner, tuner_second in TUNERS:
        if model in names:
            out += [tuner_scenario(names[model], tuner, tuner_second, dtype, device) for dtype in dtypes]
    return out


def _tuners(
    model: str, kind: str, targets: list[str], second: list[str], frozen: bool = False, **options: object
) -> tuple:
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
