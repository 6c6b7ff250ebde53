"""Several adapters on one model: each keeps its own factors and modules_to_save copies (seed bug 1), several can
be active at once, disabling gives the base model, deleting one leaves the others untouched."""

from __future__ import annotations

import pytest
import torch

from loraguard.core.config import LoraConfig
from loraguard.harness.zoo import ZOO, run

from .helpers import assert_changes, assert_close, wrapped


def _two_adapters():
    """The seed-bug-1 setup: adapter 1 saves lm_head, adapter 2 saves wte; both adapt proj."""
    model = wrapped("embedding", target_modules=["proj"], modules_to_save=["lm_head"])
    model.add_adapter("second", LoraConfig(target_modules=["proj"], modules_to_save=["wte"], init_lora_weights=False))
    return model


def test_each_adapter_saves_exactly_its_own_modules() -> None:
    model = _two_adapters()
    assert set(model.adapter_state_dict("default")) == {
        "base_model.model.proj.lora_A.weight",
        "base_model.model.proj.lora_B.weight",
        "base_model.model.lm_head.weight",
        "base_model.model.lm_head.bias",
    }
    assert set(model.adapter_state_dict("second")) == {
        "base_model.model.proj.lora_A.weight",
        "base_model.model.proj.lora_B.weight",
        "base_model.model.wte.weight",
    }


def test_changing_one_adapter_never_changes_another() -> None:
    model = _two_adapters()
    x = ZOO["embedding"].example()
    with torch.no_grad():
        first = run(model, x)
        model.set_adapter("second")
        for p in model.adapter_parameters("second").values():
            p.add_(1.0)
        model.set_adapter("default")
        assert torch.equal(run(model, x), first)
        model.delete_adapter("second")
        assert torch.equal(run(model, x), first)
    assert list(model.peft_config) == ["default"]
    assert not any("second" in k.split(".") for k in model.model.state_dict())


def test_only_the_active_adapters_are_trainable() -> None:
    model = _two_adapters()
    model.set_adapter("second")
    trainable = {k for k, p in model.model.named_parameters() if p.requires_grad}
    assert trainable == {"proj.lora_A.second.weight", "proj.lora_B.second.weight", "wte.modules_to_save.second.weight"}


def test_active_adapters_add_up() -> None:
    model = wrapped("mlp", target_modules=["fc1", "fc2"])
    model.add_adapter("second", LoraConfig(target_modules=["fc2"], init_lora_weights=False))
    x = ZOO["mlp"].example()
    fc2 = model.lora_layers()["fc2"]
    h = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        base = fc2.base_layer(h)
        model.set_adapter(["default", "second"])
        both = fc2(h)
        model.set_adapter("default")
        only_default = fc2(h)
        model.set_adapter("second")
        only_second = fc2(h)
        assert_changes(only_second, base)
        assert_close(both, only_default + only_second - base)
        model.set_adapter(["default", "second"])
        out_both = run(model, x)
        model.merge()
        assert_close(run(model, x), out_both)


def test_disabled_adapters_give_exactly_the_base_output() -> None:
    model = _two_adapters()
    base = ZOO["embedding"].make()
    x = ZOO["embedding"].example()
    with torch.no_grad():
        adapted = run(model, x)
        with model.disable_adapter():
            assert torch.equal(run(model, x), run(base, x))
        assert torch.equal(run(model, x), adapted)
        assert_changes(adapted, run(base, x))


def test_two_active_copies_of_one_module_are_refused() -> None:
    model = wrapped("mlp", target_modules=["fc1"], modules_to_save=["head"])
    model.add_adapter("second", LoraConfig(target_modules=["fc1"], modules_to_save=["head"]))
    model.set_adapter(["default", "second"])
    with pytest.raises(RuntimeError, match="activate only one"):
        run(model, ZOO["mlp"].example())


def test_deleting_a_merged_adapter_is_refused() -> None:
    model = wrapped("mlp", target_modules=["fc1"])
    model.merge()
    with pytest.raises(RuntimeError, match="unmerge"):
        model.delete_adapter("default")


def test_unknown_adapter_names_are_errors_listing_the_known_ones() -> None:
    model = wrapped("mlp", target_modules=["fc1"])
    for call in (
        lambda: model.set_adapter("nope"),
        lambda: model.delete_adapter("nope"),
        lambda: model.merge(["nope"]),
    ):
        with pytest.raises(ValueError, match=r"nope.*\['default'\]"):
            call()
