"""Strict save/load: a save loads back exactly; a missing, unexpected, misshaped or adapter-named key is an error
naming the key and the file, and leaves the model as it was; inference loads are frozen, continued-training loads
train exactly the adapter."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from loraguard.core.config import LoraConfig
from loraguard.harness.zoo import ZOO, run
from loraguard.reference import AdapterLoadError, AlreadyAdaptedError, LoraModel

from .helpers import wrapped

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """An mlp adapter on fc1/fc2 with a modules_to_save head, saved by the reference."""
    model = wrapped("mlp", target_modules=["fc1", "fc2"], modules_to_save=["head"])
    with torch.no_grad():
        model.model.head.modules_to_save["default"].weight.add_(1.0)
    model.save_pretrained(tmp_path)
    return tmp_path


def _rewrite(folder: Path, edit) -> Path:
    tensors = load_file(str(folder / WEIGHTS))
    edit(tensors)
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    return folder / WEIGHTS


def test_round_trip_is_exact(saved: Path) -> None:
    loaded = LoraModel.from_pretrained(ZOO["mlp"].make(), saved)
    stored = load_file(str(saved / WEIGHTS))
    got = loaded.adapter_state_dict()
    assert set(got) == set(stored)
    assert all(torch.equal(got[k], stored[k]) for k in stored)
    assert all(layer.factors("default")[1].abs().sum() > 0 for layer in loaded.lora_layers().values())


def test_loaded_output_equals_the_saved_models(tmp_path: Path) -> None:
    model = wrapped("embedding", target_modules=["wte", "proj"], modules_to_save=["lm_head"])
    model.save_pretrained(tmp_path)
    x = ZOO["embedding"].example()
    with torch.no_grad():
        assert torch.equal(run(LoraModel.from_pretrained(ZOO["embedding"].make(), tmp_path), x), run(model, x))


def _load_error(folder: Path) -> str:
    with pytest.raises(AdapterLoadError) as info:
        LoraModel.from_pretrained(ZOO["mlp"].make(), folder)
    return str(info.value)


def test_missing_key_is_named_with_the_file(saved: Path) -> None:
    path = _rewrite(saved, lambda t: t.pop("base_model.model.fc2.lora_B.weight"))
    message = _load_error(saved)
    assert str(path) in message and "missing" in message and "base_model.model.fc2.lora_B.weight" in message


def test_unexpected_key_is_named_with_the_file(saved: Path) -> None:
    path = _rewrite(saved, lambda t: t.update({"base_model.model.xyz.lora_A.weight": torch.zeros(2, 2)}))
    message = _load_error(saved)
    assert str(path) in message and "unexpected key" in message and "base_model.model.xyz.lora_A.weight" in message


def test_wrongly_shaped_key_is_named_with_both_shapes(saved: Path) -> None:
    path = _rewrite(saved, lambda t: t.update({"base_model.model.fc1.lora_A.weight": torch.zeros(9, 8)}))
    message = _load_error(saved)
    assert str(path) in message and "base_model.model.fc1.lora_A.weight" in message
    assert "(9, 8)" in message and "(8, 8)" in message


@pytest.mark.parametrize(
    ("old", "new", "what"),
    [
        ("fc1.lora_A.weight", "fc1.lora_A.default.weight", "adapter name 'default' after 'lora_A'"),
        ("fc2.lora_B.weight", "fc2.default.default.lora_B.weight", "doubled segment 'default.default'"),
    ],
)
def test_adapter_name_left_in_a_key_is_refused_with_the_fix(saved: Path, old: str, new: str, what: str) -> None:
    prefix = "base_model.model."
    _rewrite(saved, lambda t: t.update({prefix + new: t.pop(prefix + old)}))
    message = _load_error(saved)
    assert prefix + new in message and what in message and "drop the adapter name" in message


def test_a_failed_load_adapter_leaves_the_model_as_it_was(saved: Path) -> None:
    _rewrite(saved, lambda t: t.pop("base_model.model.head.bias"))
    model = wrapped("mlp", target_modules=["fc1"])
    keys_before = set(model.model.state_dict())
    with pytest.raises(AdapterLoadError, match="head.bias"):
        model.load_adapter(saved, "second")
    assert list(model.peft_config) == ["default"]
    assert set(model.model.state_dict()) == keys_before


def test_a_pickle_only_adapter_is_refused(saved: Path) -> None:
    (saved / WEIGHTS).rename(saved / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match=re.escape(WEIGHTS) + ".*adapter_model.bin"):
        LoraModel.from_pretrained(ZOO["mlp"].make(), saved)


def test_inference_load_freezes_everything_and_turns_dropout_off(tmp_path: Path) -> None:
    wrapped("mlp", target_modules=["fc1", "fc2"], lora_dropout=0.5).save_pretrained(tmp_path)
    model = LoraModel.from_pretrained(ZOO["mlp"].make().train(), tmp_path)
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in model.modules())
    x = ZOO["mlp"].example()
    with torch.no_grad():
        assert torch.equal(run(model, x), run(model, x))


def test_continued_training_trains_exactly_the_adapter(saved: Path) -> None:
    model = LoraModel.from_pretrained(ZOO["mlp"].make(), saved, is_trainable=True)
    trainable = {k for k, p in model.model.named_parameters() if p.requires_grad}
    assert trainable == {
        "fc1.lora_A.default.weight",
        "fc1.lora_B.default.weight",
        "fc2.lora_A.default.weight",
        "fc2.lora_B.default.weight",
        "head.modules_to_save.default.weight",
        "head.modules_to_save.default.bias",
    }
    stored = load_file(str(saved / WEIGHTS))
    assert all(torch.equal(v, stored[k]) for k, v in model.adapter_state_dict().items())


def test_wrapping_a_wrapped_model_is_refused_with_guidance() -> None:
    model = wrapped("mlp", target_modules="all-linear")
    with pytest.raises(AlreadyAdaptedError) as info:
        LoraModel(model.model, model.peft_config["default"])
    assert "is_trainable=True" in str(info.value) and "add_adapter" in str(info.value)


def test_buffers_of_a_saved_module_are_saved_but_not_trained(tmp_path: Path) -> None:
    base = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8))
    model = LoraModel(base, LoraConfig(target_modules=["0"], modules_to_save=["1"]))
    assert "base_model.model.1.running_mean" in model.adapter_state_dict()
    assert set(model.adapter_parameters("default")) == {
        "0.lora_A.default.weight",
        "0.lora_B.default.weight",
        "1.modules_to_save.default.weight",
        "1.modules_to_save.default.bias",
    }
    model.save_pretrained(tmp_path)
    loaded = LoraModel.from_pretrained(
        torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8)), tmp_path, is_trainable=True
    )
    assert {k for k, p in loaded.model.named_parameters() if p.requires_grad} == set(
        model.adapter_parameters("default")
    )
