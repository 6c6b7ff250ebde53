"""Key format: what the reference saves is peft's on-disk format, key for key."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from loraguard.core.keys import AdapterKey, embedded_adapter_name, parse_saved_key

from .helpers import wrapped


def test_linear_and_modules_to_save_keys() -> None:
    model = wrapped("mlp", target_modules=["fc1", "fc2"], modules_to_save=["head"])
    assert set(model.adapter_state_dict()) == {
        "base_model.model.fc1.lora_A.weight",
        "base_model.model.fc1.lora_B.weight",
        "base_model.model.fc2.lora_A.weight",
        "base_model.model.fc2.lora_B.weight",
        "base_model.model.head.weight",
        "base_model.model.head.bias",
    }


def test_embedding_factor_keys_have_no_weight_suffix() -> None:
    model = wrapped("embedding", target_modules=["wte"])
    assert set(model.adapter_state_dict()) == {
        "base_model.model.wte.lora_embedding_A",
        "base_model.model.wte.lora_embedding_B",
    }


def test_lora_bias_and_bias_lora_only_keys() -> None:
    model = wrapped("mlp", target_modules=["fc1"], lora_bias=True, bias="lora_only")
    assert set(model.adapter_state_dict()) == {
        "base_model.model.fc1.lora_A.weight",
        "base_model.model.fc1.lora_B.weight",
        "base_model.model.fc1.lora_B.bias",
        "base_model.model.fc1.base_layer.bias",
    }


def test_in_model_keys_carry_the_adapter_name_and_saved_keys_do_not() -> None:
    model = wrapped("mlp", target_modules=["fc1"], modules_to_save=["head"])
    model.add_adapter("other", model.peft_config["default"])
    state = set(model.model.state_dict())
    for adapter in ("default", "other"):
        for key in model.adapter_keys(adapter):
            assert key.in_model(adapter) in state
            assert adapter not in key.saved().split(".")
    assert {"fc1.lora_A.other.weight", "head.modules_to_save.other.weight", "head.original_module.weight"} <= state


def test_saved_file_layout(tmp_path) -> None:
    model = wrapped("mlp", target_modules=["fc1"])
    model.add_adapter("other", model.peft_config["default"])
    model.save_pretrained(tmp_path)
    for folder in (tmp_path, tmp_path / "other"):
        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
            assert f.metadata() == {"format": "pt"}
            assert set(f.keys()) == {"base_model.model.fc1.lora_A.weight", "base_model.model.fc1.lora_B.weight"}
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["target_modules"] == ["fc1"]


@pytest.mark.parametrize(
    ("key", "want"),
    [
        ("base_model.model.fc1.lora_A.weight", AdapterKey("fc1", "lora_A", "weight")),
        ("base_model.model.fc1.lora_B.bias", AdapterKey("fc1", "lora_B", "bias")),
        ("base_model.model.wte.lora_embedding_B", AdapterKey("wte", "lora_embedding_B", "")),
        ("base_model.model.head.weight", AdapterKey("head", "modules_to_save", "weight")),
        ("base_model.model.fc1.base_layer.bias", AdapterKey("fc1", "base_bias", "bias")),
    ],
)
def test_saved_keys_parse_back_to_their_structure(key: str, want: AdapterKey) -> None:
    assert parse_saved_key(key, {"fc1", "wte"}, {"head"}) == want
    assert want.saved() == key


def test_a_module_path_containing_a_role_name_stays_intact() -> None:
    key = AdapterKey("lora_A_proj.lora_A", "lora_B", "weight")
    assert parse_saved_key(key.saved(), {"lora_A_proj.lora_A"}, set()) == key


@pytest.mark.parametrize(
    ("key", "found"),
    [
        ("base_model.model.fc1.lora_A.default.weight", "adapter name 'default' after 'lora_A'"),
        ("base_model.model.wte.lora_embedding_A.default", "adapter name 'default' after 'lora_embedding_A'"),
        ("base_model.model.head.modules_to_save.default.weight", "adapter name 'default' after 'modules_to_save'"),
        ("base_model.model.fc1.default.default.weight", "doubled segment 'default.default'"),
        ("base_model.model.fc1.lora_A.weight", None),
        ("base_model.model.layers.0.fc.weight", None),
        ("base_model.model.base.base.weight", None),  # a module really named base.base
    ],
)
def test_embedded_adapter_names_are_detected(key: str, found: str | None) -> None:
    assert embedded_adapter_name(key) == found


def test_a_user_module_named_like_a_role_is_not_an_adapter_name():
    # a drawn model with its own module called `lora_A`: only the key's last role is judged
    assert embedded_adapter_name("base_model.model.lora_A.fc.lora_A.weight") is None
    assert (
        embedded_adapter_name("base_model.model.lora_A.fc.lora_A.default.weight")
        == "adapter name 'default' after 'lora_A'"
    )
    # the copy of a module whose own path runs through `lora_A` (modules_to_save=['fc'] on fc.lora_A.fc)
    key = "base_model.model.fc.lora_A.fc.bias"
    assert embedded_adapter_name(key) == "adapter name 'fc' after 'lora_A'"  # without the model: suspicious
    assert embedded_adapter_name(key, known_modules={"fc", "fc.lora_A", "fc.lora_A.fc"}) is None


def test_a_model_that_names_its_own_modules_default_is_not_a_doubled_adapter_name():
    key = "base_model.model.default.default.fc.lora_A.weight"
    assert embedded_adapter_name(key) == "doubled segment 'default.default'"  # without the model: suspicious
    assert embedded_adapter_name(key, known_modules={"default", "default.default", "default.default.fc"}) is None
