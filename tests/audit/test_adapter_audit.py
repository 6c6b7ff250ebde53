"""Adapters saved by real peft and by the reference audit clean; a damaged copy gives exactly the rule it breaks."""

from __future__ import annotations

import shutil
import struct

import pytest
import torch
from safetensors import safe_open

from loraguard.core.config import WEIGHTS_NAME
from tests.audit.helpers import audit, first_key, rewrite_config, rewrite_tensors, rules, save_peft, save_reference

SAVERS = {"peft": save_peft, "reference": save_reference}
CLEAN = ["mlp", "convnet", "embedding", "gpt2", "llama"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Clean adapters, saved once per (library, zoo model) and copied by each test that damages one."""
    cache = {}

    def get(library: str, zoo_name: str):
        if (library, zoo_name) not in cache:
            directory = tmp_path_factory.mktemp(f"{library}-{zoo_name}")
            SAVERS[library](zoo_name, directory)
            cache[library, zoo_name] = directory
        return cache[library, zoo_name]

    return get


@pytest.mark.parametrize("zoo_name", CLEAN)
@pytest.mark.parametrize("library", sorted(SAVERS))
def test_clean_adapter_has_no_findings(saved, library, zoo_name):
    result = audit(saved(library, zoo_name))
    assert result.findings == []
    assert any(f.endswith(WEIGHTS_NAME) for f in result.files)


@pytest.mark.parametrize("library", sorted(SAVERS))
def test_trainable_tokens_are_clean_and_named_by_the_config(library, tmp_path):
    # Rows of wte saved as wte.token_adapter.trainable_tokens_delta; a config that does not name wte explains nothing.
    SAVERS[library]("tied-embedding", tmp_path, target_modules=["proj"], trainable_token_indices={"wte": [1, 4]})
    assert audit(tmp_path).findings == []
    rewrite_config(tmp_path, trainable_token_indices=None)
    assert rules(audit(tmp_path)) == {"LG203"}


@pytest.mark.parametrize("library", sorted(SAVERS))
def test_target_parameters_are_clean_and_named_by_the_config(library, tmp_path):
    # experts.lora_A.weight (down_proj), experts.base_layer.lora_A.weight (gate_up_proj, nested), rank r x experts
    SAVERS[library]("moe", tmp_path, target_parameters=["experts.gate_up_proj", "experts.down_proj", "router.weight"])
    assert audit(tmp_path).findings == []
    rewrite_config(tmp_path, target_parameters=None)
    assert rules(audit(tmp_path)) == {"LG202", "LG302"}


def test_reference_nested_names_are_clean(tmp_path):
    save_reference("nested", tmp_path)
    assert audit(tmp_path).findings == []


def test_peft_suffix_bug_is_reported_exactly_when_peft_saves_the_wrong_module(tmp_path):
    """modules_to_save=['model.layers.1.fc']: a bare endswith also catches img_model.layers.1.fc (seed bug 4)."""
    save_peft("nested", tmp_path)
    with safe_open(str(tmp_path / WEIGHTS_NAME), "pt") as f:
        leaked = sorted(k for k in f.keys() if k.startswith("base_model.model.img_model.layers.1.fc."))
    findings = audit(tmp_path).findings
    assert sorted(f.key for f in findings) == leaked
    assert {f.rule for f in findings} <= {"LG205"}


def _rename(tensors, old, new):
    key = first_key(tensors, old)
    tensors[key.replace(old, new)] = tensors.pop(key)


def _set(role, value):
    def change(tensors):
        key = first_key(tensors, role)
        tensors[key] = value(tensors[key])

    return change


def _poison(x):
    x = x.clone()
    x.view(-1)[1] = float("nan")
    return x


def _inf(x):
    x = x.clone()
    x.view(-1)[0] = float("inf")
    return x


def _zero_all_b(tensors):
    for k in tensors:
        if ".lora_B." in k:
            tensors[k] = torch.zeros_like(tensors[k])


TENSOR_DAMAGE = {
    "adapter name in key": (lambda t: _rename(t, "lora_A.weight", "lora_A.default.weight"), {"LG201"}),
    "doubled adapter name": (lambda t: _rename(t, "lora_B.weight", "lora_B.default.default.weight"), {"LG201"}),
    "missing lora_B": (lambda t: t.pop(first_key(t, "lora_B")), {"LG301"}),
    "NaN in lora_A": (_set("lora_A", _poison), {"LG306"}),
    "Inf in lora_B": (_set("lora_B", _inf), {"LG306"}),
    "one lora_B zero": (_set("lora_B", torch.zeros_like), {"LG304"}),
    "every lora_B zero": (_zero_all_b, {"LG305"}),
    "ZeRO-3 un-gathered": (_set("lora_A", lambda x: torch.empty(0)), {"LG303"}),
    "B in float16": (_set("lora_B", lambda x: x.half()), {"LG307"}),
    "rank of A differs from B": (_set("lora_A", lambda x: torch.cat([x, x])), {"LG302"}),
    "extra tensor": (lambda t: t.update({"base_model.model.fc2.bias": torch.ones(16)}), {"LG203"}),
}

CONFIG_DAMAGE = {
    "r disagrees": ({"r": 8}, {"LG302"}),
    "rank_pattern disagrees": ({"rank_pattern": {"fc1": 2}}, {"LG302"}),
    "target_modules misses fc2": ({"target_modules": ["fc1"]}, {"LG202"}),
    "target_modules regex misses fc2": ({"target_modules": "fc1"}, {"LG202"}),
    "modules_to_save dropped": ({"modules_to_save": None}, {"LG203"}),
    "modules_to_save names a module not saved": ({"modules_to_save": ["head", "fc3"]}, {"LG207"}),
    "invalid dropout": ({"lora_dropout": 1.5}, {"LG206"}),
    "not a LoRA config": ({"peft_type": "IA3"}, {"LG206"}),
}


@pytest.mark.parametrize("damage", sorted(TENSOR_DAMAGE))
@pytest.mark.parametrize("library", sorted(SAVERS))
def test_damaged_tensors_give_exactly_their_rule(saved, tmp_path, library, damage):
    change, expected = TENSOR_DAMAGE[damage]
    copy = shutil.copytree(saved(library, "mlp"), tmp_path / "copy")
    rewrite_tensors(copy, change)
    assert rules(audit(copy)) == expected


@pytest.mark.parametrize("damage", sorted(CONFIG_DAMAGE))
@pytest.mark.parametrize("library", sorted(SAVERS))
def test_damaged_config_gives_exactly_its_rule(saved, tmp_path, library, damage):
    changes, expected = CONFIG_DAMAGE[damage]
    copy = shutil.copytree(saved(library, "mlp"), tmp_path / "copy")
    rewrite_config(copy, **changes)
    result = audit(copy)
    assert rules(result) == expected
    if expected == {"LG206"}:
        field = next(iter(changes))
        assert f"field '{field}'" in result.findings[0].message


@pytest.mark.parametrize("zoo_name", ["embedding", "convnet", "gpt2"])
def test_rank_rule_reads_every_layer_kind(saved, tmp_path, zoo_name):
    """Embedding (lora_embedding_A/B), conv and fan_in_fan_out factors all carry their rank in the same places."""
    copy = shutil.copytree(saved("peft", zoo_name), tmp_path / "copy")
    rewrite_config(copy, r=3)
    result = audit(copy)
    assert rules(result) == {"LG302"}
    with safe_open(str(copy / WEIGHTS_NAME), "pt") as f:
        layers = {k.rsplit(".lora_", 1)[0] for k in f.keys() if ".lora_" in k}
    assert len(result.findings) == len(layers)


def test_rank_and_alpha_patterns_are_clean(tmp_path):
    save_reference("llama", tmp_path, rank_pattern={"q_proj": 2}, alpha_pattern={"v_proj": 3.0}, use_rslora=True)
    assert audit(tmp_path).findings == []
    rewrite_config(tmp_path, rank_pattern={})
    assert rules(audit(tmp_path)) == {"LG302"}


def test_named_adapters_in_subfolders_are_audited(tmp_path):
    from loraguard.core.config import LoraConfig
    from tests.audit.helpers import zoo_config

    model = save_reference("mlp", tmp_path)
    model.add_adapter("second", LoraConfig(**zoo_config("mlp", r=2)))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "second" / WEIGHTS_NAME).exists()
    clean = audit(tmp_path)
    assert clean.findings == [] and str(tmp_path / "second" / WEIGHTS_NAME) in clean.files
    rewrite_tensors(tmp_path / "second", _zero_all_b)
    broken = audit(tmp_path)
    assert [(f.rule, f.file) for f in broken.findings] == [("LG305", str(tmp_path / "second" / WEIGHTS_NAME))]


@pytest.mark.parametrize("cut", ["truncated data", "truncated header", "huge header length"])
def test_broken_weights_file_is_unusable_and_named(saved, tmp_path, cut):
    copy = shutil.copytree(saved("reference", "mlp"), tmp_path / "copy")
    path = copy / WEIGHTS_NAME
    data = path.read_bytes()
    header_length = struct.unpack("<Q", data[:8])[0]
    path.write_bytes(
        {
            "truncated data": data[:-3],
            "truncated header": data[: 8 + header_length // 2],
            "huge header length": struct.pack("<Q", 1 << 40) + data[8:],
        }[cut]
    )
    result = audit(copy)
    assert result.unusable
    assert (
        rules(result)
        == {"truncated data": {"LG106"}, "truncated header": {"LG101"}, "huge header length": {"LG101"}}[cut]
    )
    assert result.findings[0].file == str(path)


def test_standalone_adapter_file_gets_config_free_checks(saved, tmp_path):
    copy = shutil.copytree(saved("peft", "mlp"), tmp_path / "copy")
    rewrite_tensors(copy, TENSOR_DAMAGE["adapter name in key"][0])
    single = tmp_path / "lonely.safetensors"
    shutil.copy(copy / WEIGHTS_NAME, single)
    assert rules(audit(single)) == {"LG201"}


def test_a_dora_magnitude_on_an_untargeted_module_is_an_untargeted_factor(saved, tmp_path):
    """A module holding only a magnitude vector (no lora_A/lora_B) is still checked against target_modules."""
    copy = tmp_path / "adapter"
    shutil.copytree(saved("reference", "mlp"), copy)
    rewrite_tensors(copy, lambda t: t.update({"base_model.model.elsewhere.lora_magnitude_vector": torch.ones(4)}))
    rewrite_config(copy, use_dora=True)
    assert rules(audit(copy)) == {"LG202"}
