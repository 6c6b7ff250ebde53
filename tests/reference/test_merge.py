"""Merging: the merged weight is the merge_math formula for every layer kind (GPT-2's transposed Conv1D
included), merging twice applies nothing twice, safe merge refuses non-finite weights, unmerge restores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loraguard.core.config import LoraConfig
from loraguard.core.merge_math import merged_weight
from loraguard.harness.zoo import ZOO, run
from loraguard.reference import LoraModel

from .helpers import assert_changes, assert_close, wrapped


def _base_weights(model: LoraModel) -> dict[str, torch.Tensor]:
    return {p: layer.base_weight().detach().clone() for p, layer in model.lora_layers().items()}


@pytest.mark.parametrize(
    ("zoo_name", "targets", "kind"),
    [
        ("mlp", ["fc1", "fc2"], "linear"),
        ("convnet", ["conv1", "conv2", "seq"], "conv"),
        ("embedding", ["wte"], "embedding"),
    ],
)
def test_merged_weight_is_the_formula_and_keeps_the_output(zoo_name: str, targets: list[str], kind: str) -> None:
    model = wrapped(zoo_name, r=3, lora_alpha=6, target_modules=targets)
    inputs = ZOO[zoo_name].example()
    before = _base_weights(model)
    with torch.no_grad():
        with model.disable_adapter():
            base_out = run(model, inputs)
        unmerged = run(model, inputs)
        model.merge()
        merged = run(model, inputs)
    assert_changes(unmerged, base_out)
    assert_close(merged, unmerged)
    for path, layer in model.lora_layers().items():
        a, b = layer.factors("default")
        assert layer.kind == kind
        want = merged_weight(before[path], a, b, layer.scaling["default"], kind)
        assert torch.equal(layer.base_weight(), want), path


def test_embedding_delta_is_transposed_b_a() -> None:
    model = wrapped("embedding", r=2, lora_alpha=2, target_modules=["wte"])
    layer = model.lora_layers()["wte"]
    w0 = layer.base_weight().detach().clone()
    a, b = layer.factors("default")
    model.merge()
    assert_close(layer.base_weight(), w0 + (b @ a).T)


def _conv1d_model(nx: int, nf: int) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("c_attn", transformers.pytorch_utils.Conv1D(nf, nx))
    return model


@pytest.mark.parametrize(("nx", "nf"), [(8, 8), (8, 12)])
def test_fan_in_fan_out_merge_transposes_the_delta(nx: int, nf: int) -> None:
    # A square Conv1D is included so a missing transpose cannot hide behind a shape error.
    model = LoraModel(
        _conv1d_model(nx, nf), LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], init_lora_weights=False)
    )
    layer = model.lora_layers()["c_attn"]
    assert layer.fan_in_fan_out
    w0 = layer.base_weight().detach().clone()
    assert w0.shape == (nx, nf)
    a, b = layer.factors("default")
    assert a.shape == (2, nx) and b.shape == (nf, 2)
    x = torch.randn(3, nx, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        unmerged = model(x)
        assert_close(unmerged, x @ w0 + layer.base_layer.bias + 2.0 * (x @ a.T @ b.T))
        model.merge()
        assert_close(layer.base_weight(), w0 + 2.0 * (b @ a).T)
        assert_close(model(x), unmerged)


def test_merging_twice_applies_the_delta_once() -> None:
    model = wrapped("mlp", target_modules=["fc1", "fc2"])
    model.merge()
    once = _base_weights(model)
    model.merge()
    model.merge(["default"])
    assert all(torch.equal(once[p], w) for p, w in _base_weights(model).items())


def test_safe_merge_refuses_non_finite_weights_and_changes_nothing() -> None:
    model = wrapped("mlp", target_modules=["fc1", "fc2"])
    before = _base_weights(model)
    with torch.no_grad():
        model.lora_layers()["fc2"].factors("default")[1][0, 0] = float("nan")  # fc1 is fine, fc2 is broken
    with pytest.raises(ValueError, match="non-finite"):
        model.merge(safe=True)
    assert all(torch.equal(before[p], w) for p, w in _base_weights(model).items())
    assert all(not layer.merged_adapters for layer in model.lora_layers().values())


def test_unmerge_restores_exactly_when_the_arithmetic_is_exact() -> None:
    model = wrapped("mlp", r=2, lora_alpha=4, target_modules=["fc1", "fc2"])
    with torch.no_grad():  # dyadic values with few bits: every sum and product below is exact in float32
        for layer in model.lora_layers().values():
            w = layer.base_weight()
            w.copy_(torch.round(w * 64) / 64)
            for f in layer.factors("default"):
                f.copy_(torch.round(f * 4) / 4)
    before = _base_weights(model)
    model.merge()
    assert not all(torch.equal(before[p], w) for p, w in _base_weights(model).items())
    model.unmerge()
    assert all(torch.equal(before[p], w) for p, w in _base_weights(model).items())
    assert all(not layer.merged_adapters for layer in model.lora_layers().values())


def test_unmerge_restores_the_unmerged_output() -> None:
    model = wrapped("convnet", target_modules=["conv1", "seq"])
    x = ZOO["convnet"].example()
    with torch.no_grad():
        unmerged = run(model, x)
        model.merge()
        model.unmerge()
        assert_close(run(model, x), unmerged)


def test_train_and_eval_never_merge() -> None:
    model = wrapped("mlp", target_modules=["fc1"])
    before = _base_weights(model)
    model.train()
    model.eval()
    model.train()
    assert all(torch.equal(before[p], w) for p, w in _base_weights(model).items())
    assert model.lora_layers()["fc1"].merged_adapters == []


def test_merge_and_unload_returns_the_plain_model_with_the_adapted_function() -> None:
    model = wrapped("embedding", target_modules=["wte", "proj"], modules_to_save=["lm_head"])
    x = ZOO["embedding"].example()
    with torch.no_grad():
        want = run(model, x)
        plain = model.merge_and_unload()
        assert isinstance(plain.wte, nn.Embedding) and isinstance(plain.proj, nn.Linear)
        assert isinstance(plain.lm_head, nn.Linear)
        assert_close(run(plain, x), want)


def test_unload_returns_the_base_model_unchanged() -> None:
    base = ZOO["mlp"].make()
    want = {k: v.clone() for k, v in base.state_dict().items()}
    model = LoraModel(base, LoraConfig(target_modules=["fc1"], modules_to_save=["head"], init_lora_weights=False))
    model.merge()
    plain = model.unload()
    assert set(plain.state_dict()) == set(want)
    assert_close(plain.fc1.weight, want["fc1.weight"])
    assert torch.equal(plain.head.weight, want["head.weight"])


@pytest.mark.parametrize("zoo_name", ["mlp", "embedding"])
def test_model_moves_with_to_and_keeps_its_output(zoo_name: str) -> None:
    # LoraLayer once defined its own `_apply`, the name nn.Module.to() calls: moving a wrapped model crashed.
    model = wrapped(zoo_name, target_modules=ZOO[zoo_name].target_modules)
    x = ZOO[zoo_name].example(0)
    want = run(model, x).double()
    model.to(torch.float64)
    got = run(model, tuple(t.double() if t.is_floating_point() else t for t in x))
    assert got.dtype == torch.float64
    assert_close(got.float(), want.float())


@pytest.mark.parametrize("autocast", [True, False])
def test_autocast_adapter_dtype_decides_the_factors_dtype(autocast: bool) -> None:
    base = ZOO["embedding"].make(0, torch.bfloat16)
    model = LoraModel(base, LoraConfig(target_modules=["wte", "proj"], autocast_adapter_dtype=autocast))
    want = torch.float32 if autocast else torch.bfloat16
    assert {t.dtype for layer in model.lora_layers().values() for t in layer.factors("default")} == {want}
