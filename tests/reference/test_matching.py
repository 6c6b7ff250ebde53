"""Name matching: a list entry matches at a dot boundary, a string is a regex with fullmatch, "all-linear" never
picks LoRA internals, and an entry that matches nothing is an error naming the closest modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loraguard.core.config import LoraConfig
from loraguard.core.matching import entry_matches, parameter_selected, spec_matches
from loraguard.harness.zoo import ZOO
from loraguard.reference import LoraModel, ModulesToSave, all_linear_targets

from .helpers import wrapped


@pytest.mark.parametrize(
    ("name", "entry", "want"),
    [
        ("model.layers.0.fc", "model.layers.0.fc", True),
        ("img_model.layers.0.fc", "model.layers.0.fc", False),  # peft's bare endswith said True (seed bug 4)
        ("xhead", "head", False),
        ("a.head", "head", True),
        ("model.layers.0.fc_out", "fc", False),
        ("fc", "layers.0.fc", False),
    ],
)
def test_entry_matches_only_at_a_dot_boundary(name: str, entry: str, want: bool) -> None:
    assert entry_matches(name, entry) is want


def test_a_target_parameters_entry_selects_a_parameter_as_a_module_entry_would() -> None:
    entries = ["experts.gate_up_proj", "router.weight"]
    assert parameter_selected("experts.gate_up_proj", entries)
    assert parameter_selected("model.layers.0.experts.gate_up_proj", entries)
    assert not parameter_selected("xexperts.gate_up_proj", entries)  # not a dot boundary
    assert not parameter_selected("experts.gate_up_proj_bias", entries)
    assert not parameter_selected("router.bias", entries)


def test_a_string_spec_is_a_regex_matched_in_full() -> None:
    assert spec_matches("model.layers.0.fc", r"model\.layers\.\d\.fc")
    assert not spec_matches("img_model.layers.0.fc", r"model\.layers\.\d\.fc")  # fullmatch, not search
    assert not spec_matches("model.layers.0.fc_out", r".*\.fc")


def test_modules_to_save_wraps_only_the_named_module_not_its_suffix_twin() -> None:
    model = wrapped("nested", target_modules=["fc_out"], modules_to_save=["model.layers.1.fc"])
    assert list(model.saved_modules()) == ["model.layers.1.fc"]
    assert isinstance(model.model.img_model.layers[1].fc, nn.Linear)
    assert not any(p.requires_grad for p in model.model.img_model.layers[1].fc.parameters())
    saved = set(model.adapter_state_dict())
    assert "base_model.model.model.layers.1.fc.weight" in saved
    assert not any(k.startswith("base_model.model.img_model.layers.1.fc.") for k in saved)


def test_targets_head_but_not_xhead() -> None:
    model = wrapped("nested", target_modules=["head"])
    assert list(model.lora_layers()) == ["head"]


def test_regex_target_modules() -> None:
    model = wrapped("nested", target_modules=r"img_model\.layers\.\d\.fc")
    assert sorted(model.lora_layers()) == ["img_model.layers.0.fc", "img_model.layers.1.fc"]


def test_all_linear_never_selects_lora_internals() -> None:
    model = wrapped("mlp", target_modules="all-linear")
    assert sorted(model.lora_layers()) == ["fc1", "fc2", "head"]
    # On the wrapped model the LoRA factors and base layers are nn.Linear too; only the wrapped layers qualify.
    assert sorted(all_linear_targets(model.model)) == ["fc1", "fc2", "head"]
    model.add_adapter("second", LoraConfig(target_modules="all-linear"))
    assert sorted(model.lora_layers()) == ["fc1", "fc2", "head"]
    assert all(set(layer.adapters()) == {"default", "second"} for layer in model.lora_layers().values())


def test_all_linear_skips_the_output_head_of_a_transformers_model() -> None:
    pytest.importorskip("transformers")
    model = LoraModel(ZOO["llama"].make(), LoraConfig(target_modules="all-linear"))
    paths = set(model.lora_layers())
    assert "lm_head" not in paths
    assert {"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"} <= paths


@pytest.mark.parametrize("field", ["target_modules", "modules_to_save"])
def test_an_entry_that_matches_nothing_is_an_error_naming_close_modules(field: str) -> None:
    config = {"target_modules": ["fc1"], field: ["fc_1"]}
    with pytest.raises(ValueError, match=rf"{field}=.*matches no module.*Closest module names: .*fc1"):
        wrapped("mlp", **config)


def test_modules_to_save_copies_are_independent_of_the_original() -> None:
    model = wrapped("mlp", target_modules=["fc1"], modules_to_save=["head"])
    wrapper = model.model.head
    assert isinstance(wrapper, ModulesToSave)
    original = wrapper.original_module.weight.detach().clone()
    with torch.no_grad():
        wrapper.modules_to_save["default"].weight.add_(1.0)
    assert torch.equal(wrapper.original_module.weight, original)
    assert not wrapper.original_module.weight.requires_grad
    assert wrapper.modules_to_save["default"].weight.requires_grad


NAMES = ["layers.0.fc", "model.layers.1.fc", "model.layers.0.fc", "a.blocks.2.b.3.fc", "model.layers.1", "fc"]


@pytest.mark.parametrize("pattern", [None, "layers", ["layers", "blocks"], "blocks"])
@pytest.mark.parametrize("layers", [0, 1, [0, 1], [2]])
def test_layers_to_transform_selects_as_peft_does(pattern, layers) -> None:
    tuners_utils = pytest.importorskip("peft.tuners.tuners_utils")
    peft = pytest.importorskip("peft")
    ours = LoraConfig(target_modules=["fc"], layers_to_transform=layers, layers_pattern=pattern)
    theirs = peft.LoraConfig(target_modules=["fc"], layers_to_transform=layers, layers_pattern=pattern)
    for name in NAMES:
        want = bool(tuners_utils.check_target_module_exists(theirs, name))
        assert (spec_matches(name, ["fc"]) and ours.in_layers(name)) == want, name


def test_layers_to_transform_with_a_regex_is_refused() -> None:
    with pytest.raises(ValueError, match="layers_to_transform"):
        LoraConfig(target_modules=".*fc", layers_to_transform=[0])
