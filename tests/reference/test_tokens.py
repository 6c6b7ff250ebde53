"""Trainable tokens in the reference: only the listed rows change, a tied head follows them merged or not, the
rows save under peft's key, and bad values are refused by name."""

from __future__ import annotations

import pytest
import torch

from loraguard.core.config import ConfigError, LoraConfig
from loraguard.harness.zoo import ZOO, run
from loraguard.reference import LoraModel, TrainableTokens

ROWS = [1, 4, 7]


def _tokens_model(zoo_name: str = "tied-embedding", rows: list[int] | None = None) -> LoraModel:
    config = LoraConfig(target_modules=["proj"], trainable_token_indices={"wte": rows or ROWS})
    model = LoraModel(ZOO[zoo_name].make(), config)
    with torch.no_grad():
        model.model.wte.token_adapter.trainable_tokens_delta["default"].add_(0.5)  # "trained" rows
    return model


def test_forward_replaces_exactly_the_listed_rows_and_the_tied_head_follows() -> None:
    model = _tokens_model()
    base = ZOO["tied-embedding"].make()
    values = model.model.wte.token_adapter.trainable_tokens_delta["default"].detach()
    weight = base.wte.weight.detach().index_copy(0, torch.tensor(ROWS), values)
    ids = torch.tensor([[1, 2, 4, 7, 9]])
    with torch.no_grad():
        want = torch.func.functional_call(base, {"wte.weight": weight, "lm_head.weight": weight}, (ids,))
        assert torch.equal(run(model, (ids,)), want)
    assert isinstance(model.model.lm_head, TrainableTokens) and model.model.lm_head.leader is model.model.wte


def test_merge_writes_the_rows_into_the_shared_weight_and_unmerge_restores_them_exactly() -> None:
    model = _tokens_model()
    ids = ZOO["tied-embedding"].example()
    original = model.model.wte.base_weight().detach().clone()
    with torch.no_grad():
        unmerged = run(model, ids)
        model.merge()
        model.merge()  # idempotent
        merged = run(model, ids)
        rows = model.model.wte.base_weight()[ROWS]
        assert torch.equal(rows, model.model.wte.token_adapter.trainable_tokens_delta["default"])
        assert model.model.lm_head.base_weight() is model.model.wte.base_weight()
        assert (merged - unmerged).abs().max() < 1e-5
        model.unmerge()
    assert torch.equal(model.model.wte.base_weight(), original)


def test_rows_save_under_peft_key_and_load_back(tmp_path) -> None:
    model = _tokens_model("scaled-embedding")
    saved = model.adapter_state_dict()
    assert "base_model.model.wte.token_adapter.trainable_tokens_delta" in saved
    assert not any("lm_head" in k for k in saved)
    model.save_pretrained(tmp_path)
    loaded = LoraModel.from_pretrained(ZOO["scaled-embedding"].make(), tmp_path)
    ids = ZOO["scaled-embedding"].example()
    with torch.no_grad():
        assert torch.equal(run(loaded, ids), run(model, ids))
    assert loaded.peft_config["default"].trainable_token_indices == {"wte": ROWS}


def test_each_adapter_has_its_own_rows_and_only_one_may_be_active() -> None:
    model = _tokens_model()
    model.add_adapter("other", LoraConfig(target_modules=["proj"], trainable_token_indices={"wte": [2, 3]}))
    assert set(model.adapter_parameters("other")) >= {"wte.token_adapter.trainable_tokens_delta.other"}
    model.set_adapter(["default", "other"])
    with pytest.raises(RuntimeError, match="activate only one"):
        run(model, ZOO["tied-embedding"].example())


def test_a_list_of_indices_goes_to_the_input_embedding() -> None:
    model = LoraModel(ZOO["gpt2"].make(), LoraConfig(target_modules=["c_attn"], trainable_token_indices=[3, 5]))
    assert set(model.token_layers()) == {"transformer.wte", "lm_head"}


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ({"proj": [1]}, "not an nn.Embedding|rows of an nn.Embedding"),
        ({"wte": [25]}, "out of range"),
        ({"wt": [1]}, "trainable_token_indices=.*matches no module"),
        ([1, 2], "embed_tokens"),  # a plain model has no input embedding getter: peft's default name
    ],
)
def test_bad_targets_are_refused_by_name(indices, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoraModel(ZOO["embedding"].make(), LoraConfig(target_modules=["proj"], trainable_token_indices=indices))


def test_the_embedding_cannot_also_be_a_lora_target_and_config_values_are_checked() -> None:
    with pytest.raises(ValueError, match="one way only"):
        LoraModel(ZOO["embedding"].make(), LoraConfig(target_modules=["wte"], trainable_token_indices={"wte": [1]}))
    with pytest.raises(ConfigError, match="trainable_token_indices"):
        LoraConfig(trainable_token_indices=[1, -1])


def test_an_index_listed_twice_is_one_row_with_its_last_value_merged_or_not() -> None:
    """As users write them (peft accepts them too): one value row per listed index, the last one wins."""
    model = _tokens_model(rows=[0, 5, 0, 19])
    values = model.model.wte.token_adapter.trainable_tokens_delta["default"]
    with torch.no_grad():
        values[0].add_(1.0)  # the first 0 differs from the second: the second wins
    ids = torch.tensor([[0, 5, 19, 3]])
    original = model.model.wte.base_weight().detach().clone()
    with torch.no_grad():
        unmerged = run(model, ids)
        model.merge()
        assert torch.equal(model.model.wte.base_weight()[[0, 5, 19]], values[[2, 1, 3]])
        assert torch.equal(run(model, ids), unmerged)
        model.unmerge()
    assert torch.equal(model.model.wte.base_weight(), original)
