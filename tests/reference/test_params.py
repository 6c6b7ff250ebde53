"""target_parameters in the reference: each expert's delta is its own B_e @ A_e (peft's two factor layouts), the
forward runs the module with the adapted parameter, keys nest as peft's, and what peft refuses is refused by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loraguard.core.config import LoraConfig
from loraguard.harness.zoo import ZOO, run
from loraguard.harness.zoo_models import Experts
from loraguard.reference import LoraModel

PARAMS = ["experts.gate_up_proj", "experts.down_proj", "router.weight"]


def _moe(dtype: torch.dtype = torch.float64, **config: object) -> LoraModel:
    config = {"r": 2, "lora_alpha": 6, "target_parameters": list(PARAMS), "init_lora_weights": False, **config}
    return LoraModel(ZOO["moe"].make(dtype=dtype), LoraConfig(**config))  # type: ignore[arg-type]


def _expert_delta(a: torch.Tensor, b: torch.Tensor, scale: float, experts: int) -> torch.Tensor:
    """Written out per expert: A's rows e*r.. e*r+r-1 and B's columns e, e+E, ... belong to expert e."""
    r = a.shape[0] // experts
    return torch.stack([scale * b[:, e::experts] @ a[e * r : (e + 1) * r] for e in range(experts)])


def test_merge_adds_each_experts_own_delta_and_keeps_the_output() -> None:
    model = _moe()
    inputs = ZOO["moe"].example()
    before = {p: layer.base_weight().detach().clone() for p, layer in model.target_layers().items()}
    with torch.no_grad():
        unmerged = run(model, inputs, torch.float64)
        with model.disable_adapter():
            base_out = run(model, inputs, torch.float64)
        model.merge()
        merged = run(model, inputs, torch.float64)
    assert (unmerged - base_out).abs().max() > 1e-3
    torch.testing.assert_close(merged, unmerged, rtol=1e-12, atol=1e-12)
    layers = model.target_layers()
    for path in ("experts.gate_up_proj", "experts.down_proj"):
        a, b = layers[path].factors("default")
        want = before[path] + _expert_delta(a.detach(), b.detach(), 3.0, 3)
        torch.testing.assert_close(layers[path].base_weight().detach(), want, rtol=0, atol=1e-12)
    a, b = layers["router.weight"].factors("default")
    want = before["router.weight"] + 3.0 * b.detach() @ a.detach()  # a 2D parameter: a Linear's delta
    torch.testing.assert_close(layers["router.weight"].base_weight().detach(), want, rtol=0, atol=1e-12)
    model.unmerge()
    for path, weight in before.items():
        torch.testing.assert_close(layers[path].base_weight().detach(), weight, rtol=0, atol=1e-12)


def test_a_transposed_expert_stack_takes_each_delta_transposed() -> None:
    experts = Experts().double()
    experts.is_transposed = True  # (experts, out, in) in peft's terms: B reads d2, A d1
    holder = nn.Sequential(experts)
    model = LoraModel(
        holder, LoraConfig(r=2, lora_alpha=4, target_parameters=["0.gate_up_proj"], init_lora_weights=False)
    )
    layer = model.target_layers()["0.gate_up_proj"]
    a, b = (t.detach() for t in layer.factors("default"))
    assert a.shape == (6, 8) and b.shape == (12, 6)
    torch.testing.assert_close(layer.delta("default"), _expert_delta(a, b, 2.0, 3).transpose(1, 2))


def test_keys_nest_as_peft_nests_its_wrappers_and_a_save_loads_back(tmp_path) -> None:
    model = _moe(torch.float32, target_modules=["shared"])
    assert set(model.adapter_state_dict()) == {
        f"base_model.model.{m}.{f}.weight"
        for m in ("experts.base_layer", "experts", "router", "shared")  # gate_up_proj nests inside down_proj
        for f in ("lora_A", "lora_B")
    }
    inputs = ZOO["moe"].example()
    with torch.no_grad():
        want = run(model, inputs)
    model.save_pretrained(tmp_path)
    loaded = LoraModel.from_pretrained(ZOO["moe"].make(), tmp_path)
    with torch.no_grad():
        assert torch.equal(run(loaded, inputs), want)


def test_a_second_adapter_joins_the_wrappers_and_unload_gives_the_plain_model() -> None:
    model = _moe()
    model.add_adapter("other", LoraConfig(r=3, target_parameters=list(PARAMS)))
    assert len(model.lora_layers()) == 3  # no wrapper nested for the second adapter
    assert all(set(layer.adapters()) == {"default", "other"} for layer in model.target_layers().values())
    plain = model.unload()
    assert not any(isinstance(m, LoraModel) or hasattr(m, "lora_A") for m in plain.modules())
    assert type(plain.get_submodule("experts")) is Experts


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"lora_dropout": 0.1}, "lora_dropout"),
        ({"use_dora": True}, "use_dora"),
        ({"lora_bias": True}, "lora_bias"),
        ({"fan_in_fan_out": True}, "fan_in_fan_out"),
        ({"target_modules": ["router"]}, "also adapted through target_modules"),
        ({"target_parameters": ["experts.gate_up_proj", "experts.up_proj"]}, "['experts.up_proj'] match no parameter"),
    ],
)
def test_what_peft_refuses_is_refused_by_name(config: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        _moe(**config)


def test_adapters_must_target_the_same_parameters() -> None:
    model = _moe()
    with pytest.raises(ValueError, match="same parameters"):
        model.add_adapter("other", LoraConfig(target_parameters=["experts.gate_up_proj"]))
    assert list(model.peft_config) == ["default"]
