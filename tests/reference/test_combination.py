"""Weighted combination in the reference: the combined delta is the explicit formula of loraguard/core/combine_math.py
for signed, zero and large weights, different ranks and rsLoRA; the task-tensor merges agree with peft's."""

from __future__ import annotations

import pytest
import torch

from loraguard.core import combine_math as cm
from loraguard.core.config import LoraConfig
from loraguard.harness.zoo import ZOO
from loraguard.reference import LoraModel


def _two_adapters(r2: int = 2, rslora: bool = False, zoo: str = "convnet") -> LoraModel:
    targets = {"convnet": ["conv1", "seq"], "gpt2": ["c_attn"], "embedding": ["wte", "proj"]}[zoo]
    model = LoraModel(
        ZOO[zoo].make(dtype=torch.float64),
        LoraConfig(r=2, lora_alpha=8, target_modules=targets, use_rslora=rslora, init_lora_weights=False),
    )
    model.add_adapter("b", LoraConfig(r=r2, lora_alpha=3, target_modules=targets[:1], init_lora_weights=False))
    return model


def _deltas(model: LoraModel, name: str) -> dict[str, torch.Tensor]:
    return {p: layer.delta(name) for p, layer in model.lora_layers().items() if name in layer.scaling}


@pytest.mark.parametrize("zoo", ["convnet", "gpt2", "embedding"])
@pytest.mark.parametrize("weights", [(1.0, -1.0), (0.0, 2.5), (-0.4, 0.0)])
def test_cat_adds_exactly_the_signed_weighted_deltas(zoo: str, weights: tuple[float, float]) -> None:
    model = _two_adapters(r2=3, rslora=True, zoo=zoo)
    a, b = _deltas(model, "default"), _deltas(model, "b")
    model.add_weighted_adapter(["default", "b"], list(weights), "cat", combination_type="cat")
    got = _deltas(model, "cat")
    assert set(got) == set(a) | set(b), "the combination covers every module either adapter adapts"
    for path, delta in got.items():
        want = weights[0] * a[path] + (weights[1] * b[path] if path in b else 0)
        torch.testing.assert_close(delta, want, rtol=1e-6, atol=1e-6)  # embedding factors stay float32
    assert model.peft_config["cat"].r == 5 and model.peft_config["cat"].scaling_for("conv1") == 1.0


def test_linear_is_the_product_of_the_merged_factors_not_the_sum_of_deltas() -> None:
    model = _two_adapters()
    layer = model.lora_layers()["conv1"]
    (a0, b0), (a1, b1) = layer.factors("default"), layer.factors("b")
    s0, s1 = layer.scaling["default"], layer.scaling["b"]
    model.add_weighted_adapter(["default", "b"], [-1.0, 2.0], "lin", combination_type="linear")
    alpha = [-((1.0 * s0) ** 0.5), (2.0 * s1) ** 0.5]  # the sign of w*s goes on A only
    beta = [(1.0 * s0) ** 0.5, (2.0 * s1) ** 0.5]
    want_a, want_b = alpha[0] * a0 + alpha[1] * a1, beta[0] * b0 + beta[1] * b1
    torch.testing.assert_close(layer.factors("lin")[0], want_a)
    torch.testing.assert_close(layer.factors("lin")[1], want_b)
    plain = -1.0 * layer.delta("default") + 2.0 * layer.delta("b")
    assert (layer.delta("lin") - plain).abs().max() > 1e-3, "linear has cross terms: it is not sum_i w_i s_i B_i A_i"


@pytest.mark.parametrize("svd_rank", [None, 1])
def test_svd_is_the_best_low_rank_approximation(svd_rank: int | None) -> None:
    model = _two_adapters(r2=3)
    target = -1.5 * model.lora_layers()["conv1"].delta("default") + 0.6 * model.lora_layers()["conv1"].delta("b")
    model.add_weighted_adapter(["default", "b"], [-1.5, 0.6], "svd", combination_type="svd", svd_rank=svd_rank)
    rank = svd_rank or 3
    got = model.lora_layers()["conv1"].delta("svd")
    residual = (cm.as_matrix(got) - cm.as_matrix(target)).norm().item()
    assert residual == pytest.approx(cm.optimal_residual(target, rank), abs=1e-9)
    assert torch.linalg.matrix_rank(cm.as_matrix(got)).item() <= rank


@pytest.mark.parametrize("kind", cm.EQUAL_RANKS)
def test_types_that_merge_factors_refuse_different_ranks_and_change_nothing(kind: str) -> None:
    model = _two_adapters(r2=3)
    with pytest.raises(ValueError, match="same r"):
        model.add_weighted_adapter(["default", "b"], [1.0, 1.0], "x", combination_type=kind)
    assert "x" not in model.peft_config and all("x" not in layer.scaling for layer in model.lora_layers().values())


def test_task_merges_agree_with_peft() -> None:
    merge_utils = pytest.importorskip("peft.utils.merge_utils")
    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randn(5, 7, generator=gen, dtype=torch.float64) for _ in range(3)]
    weights = [0.7, -1.2, 0.0]
    w = torch.tensor(weights, dtype=torch.float64)
    for method in ("total", "frequency"):
        torch.testing.assert_close(
            cm.task_merge("ties", tensors, weights, 0.5, method), merge_utils.ties(tensors, w, 0.5, method)
        )
    torch.testing.assert_close(
        cm.task_merge("magnitude_prune", tensors, weights, 0.4), merge_utils.magnitude_prune(tensors, w, 0.4)
    )
    torch.testing.assert_close(cm.task_merge("linear", tensors, weights), merge_utils.task_arithmetic(tensors, w))
    torch.testing.assert_close(cm.task_merge("dare_ties", tensors, weights, 1.0), merge_utils.ties(tensors, w, 1.0))
