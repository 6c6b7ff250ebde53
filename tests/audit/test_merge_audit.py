"""audit-merge: real merges (peft and reference) pass; no-op, mis-scaled, altered and incomplete merges are named."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from loraguard.audit import merge_check as merge_check_module
from loraguard.audit import tensors as tensors_module
from loraguard.audit.merge import audit_merge
from loraguard.core.config import LoraConfig
from loraguard.harness.zoo import ZOO
from tests.audit.helpers import rewrite_config, rules, save_peft, save_reference

CASES = {
    "mlp": {},
    "convnet": {},
    "embedding": {},
    "gpt2": {"fan_in_fan_out": True},
    "llama": {"use_rslora": True, "rank_pattern": {"q_proj": 2}, "alpha_pattern": {"v_proj": 3.0}},
}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def make_merge(tmp: Path, library: str, zoo_name: str, **changes) -> tuple[Path, Path, Path]:
    """Save base, adapter and `merge_and_unload()`ed model of zoo model `zoo_name` under `library`."""
    save_file(_state(ZOO[zoo_name].make()), str(tmp / "base.safetensors"))
    saver = save_peft if library == "peft" else save_reference
    model = saver(zoo_name, tmp / "adapter", **changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = model.merge_and_unload()
    save_file(_state(merged), str(tmp / "merged.safetensors"))
    return tmp / "base.safetensors", tmp / "adapter", tmp / "merged.safetensors"


def run(base, adapter, merged):
    return audit_merge(str(base), str(adapter), str(merged))


@pytest.fixture(scope="module")
def merges(tmp_path_factory):
    cache = {}

    def get(library: str, zoo_name: str):
        if (library, zoo_name) not in cache:
            cache[library, zoo_name] = make_merge(
                tmp_path_factory.mktemp(f"{library}-{zoo_name}"), library, zoo_name, **CASES[zoo_name]
            )
        return cache[library, zoo_name]

    return get


@pytest.mark.parametrize("zoo_name", sorted(CASES))
@pytest.mark.parametrize("library", ["peft", "reference"])
def test_real_merges_pass(merges, library, zoo_name):
    base, adapter, merged = merges(library, zoo_name)
    assert run(base, adapter, merged).findings == []


@pytest.mark.parametrize("zoo_name", ["gpt2", "embedding", "convnet", "llama"])
def test_streaming_in_tiny_blocks_gives_the_same_verdicts(merges, tmp_path, monkeypatch, zoo_name):
    """Row blocks of a few rows exercise the factor slicing of every layout (fan_in_fan_out, embedding, conv)."""
    base, adapter, merged = merges("reference", zoo_name)
    monkeypatch.setattr(tensors_module, "BLOCK_BYTES", 64)
    monkeypatch.setattr(merge_check_module, "BLOCK_BYTES", 64)
    assert run(base, adapter, merged).findings == []
    state = load_file(str(merged))
    target = sorted(
        k
        for k in state
        if k.endswith(".weight") and state[k].dim() >= 2 and not torch.equal(state[k], load_file(str(base))[k])
    )[-1]
    state[target].view(state[target].shape[0], -1)[-1, -1] += 1.0
    save_file(state, str(tmp_path / "m.safetensors"))
    found = run(base, adapter, tmp_path / "m.safetensors").findings
    assert [(f.rule, f.key) for f in found] == [("LG502", target)]


def test_base_as_merged_is_a_no_op(merges):
    base, adapter, _ = merges("reference", "llama")
    found = run(base, adapter, base).findings
    assert [f.rule for f in found] == ["LG501"] and "all 6 tensors" in found[0].message


def test_one_unmerged_tensor_is_named(merges, tmp_path):
    base, adapter, merged = merges("peft", "mlp")
    state = load_file(str(merged))
    state["fc2.weight"] = load_file(str(base))["fc2.weight"]
    save_file(state, str(tmp_path / "m.safetensors"))
    assert [(f.rule, f.key) for f in run(base, adapter, tmp_path / "m.safetensors").findings] == [
        ("LG501", "fc2.weight")
    ]


@pytest.mark.parametrize("change", [{"lora_alpha": 16}, {"use_rslora": True}, {"alpha_pattern": {"fc.": 2.0}}])
def test_wrong_scaling_is_a_mismatch(merges, tmp_path, change):
    import shutil

    base, adapter, merged = merges("reference", "mlp")
    copy = shutil.copytree(adapter, tmp_path / "adapter")
    rewrite_config(copy, **change)
    found = run(base, copy, merged).findings
    assert {f.rule for f in found} == {"LG502"} and {f.key for f in found} == {"fc1.weight", "fc2.weight"}


def test_config_that_misstates_fan_in_fan_out(merges, tmp_path):
    """GPT-2 Conv1D weights are (in, out): non-square ones reveal the layout (LG507), square ones cannot (LG502)."""
    import shutil

    base, adapter, merged = merges("peft", "gpt2")
    copy = shutil.copytree(adapter, tmp_path / "adapter")
    rewrite_config(copy, fan_in_fan_out=False)
    found = run(base, copy, merged).findings
    shapes = {k: tuple(v.shape) for k, v in load_file(str(base)).items()}
    assert {f.key for f in found if f.rule == "LG507"} == {
        f"transformer.h.{i}.{m}.weight" for i in (0, 1) for m in ("attn.c_attn", "mlp.c_proj")
    }
    assert {f.key for f in found if f.rule == "LG502"} == {f"transformer.h.{i}.attn.c_proj.weight" for i in (0, 1)}
    assert all(shapes[f.key][0] == shapes[f.key][1] for f in found if f.rule == "LG502")


def test_nan_in_merged_tensor_is_a_mismatch(merges, tmp_path):
    base, adapter, merged = merges("reference", "mlp")
    state = load_file(str(merged))
    state["fc1.weight"][0, 0] = float("nan")
    save_file(state, str(tmp_path / "m.safetensors"))
    assert [(f.rule, f.key) for f in run(base, adapter, tmp_path / "m.safetensors").findings] == [
        ("LG502", "fc1.weight")
    ]


def test_untouched_and_missing_tensors(merges, tmp_path):
    base, adapter, merged = merges("reference", "llama")
    state = load_file(str(merged))
    state["model.norm.weight"] = state["model.norm.weight"] + 1
    del state["model.layers.1.mlp.down_proj.weight"]
    save_file(state, str(tmp_path / "m.safetensors"))
    found = run(base, adapter, tmp_path / "m.safetensors").findings
    assert sorted((f.rule, f.key) for f in found) == [("LG503", ""), ("LG504", "model.norm.weight")]
    assert "model.layers.1.mlp.down_proj.weight" in [f for f in found if f.rule == "LG503"][0].message


def test_modules_to_save_copy_must_replace_the_base_module(merges, tmp_path):
    base, adapter, merged = merges("reference", "mlp")
    state = load_file(str(merged))
    state["head.weight"] = state["head.weight"] * 2
    save_file(state, str(tmp_path / "m.safetensors"))
    assert [(f.rule, f.key) for f in run(base, adapter, tmp_path / "m.safetensors").findings] == [
        ("LG504", "head.weight")
    ]


def test_sharded_merged_model(merges, tmp_path):
    base, adapter, merged = merges("peft", "llama")
    state = load_file(str(merged))
    keys = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, str(tmp_path / name))
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert run(base, adapter, tmp_path).findings == []
    assert run(base, adapter, tmp_path / "model.safetensors.index.json").findings == []


def test_effect_below_the_bfloat16_bound_is_info_not_no_op(tmp_path):
    """A delta that rounds away in bfloat16 makes merged == base for the right reason: info, never LG501."""
    g = torch.Generator().manual_seed(0)
    base = {"fc.weight": torch.randn(32, 16, generator=g).to(torch.bfloat16)}
    save_file(base, str(tmp_path / "base.safetensors"))
    (tmp_path / "adapter").mkdir()
    LoraConfig(r=2, lora_alpha=2, target_modules=["fc"]).save(tmp_path / "adapter")
    save_file(
        {
            "base_model.model.fc.lora_A.weight": torch.randn(2, 16, generator=g) * 1e-4,
            "base_model.model.fc.lora_B.weight": torch.randn(32, 2, generator=g) * 1e-4,
        },
        str(tmp_path / "adapter" / "adapter_model.safetensors"),
    )
    found = run(tmp_path / "base.safetensors", tmp_path / "adapter", tmp_path / "base.safetensors").findings
    assert [(f.rule, f.key) for f in found] == [("LG505", "fc.weight")]


def test_broken_adapter_stops_before_comparing(merges, tmp_path):
    base, _, merged = merges("reference", "mlp")
    (tmp_path / "adapter").mkdir()
    found = run(base, tmp_path / "adapter", merged)
    assert found.unusable and rules(found) == {"LG002"}


def test_dora_adapter_audits_clean_and_its_merge_is_reported_unverified(tmp_path):
    base, adapter, merged = make_merge(tmp_path, "peft", "mlp", use_dora=True)
    found = run(base, adapter, merged).findings
    assert sorted((f.rule, f.key) for f in found) == [("LG506", "fc1.weight"), ("LG506", "fc2.weight")]


@pytest.mark.parametrize("library", ["peft", "reference"])
def test_target_parameters_expert_stacks_are_not_verified_and_the_rest_is(tmp_path, library):
    params = ["experts.gate_up_proj", "experts.down_proj", "router.weight"]
    base, adapter, merged = make_merge(tmp_path, library, "moe", target_parameters=params)
    found = run(base, adapter, merged).findings
    assert {(f.rule, f.key) for f in found} == {("LG506", "experts.gate_up_proj"), ("LG506", "experts.down_proj")}
    tensors = load_file(str(merged))
    tensors["router.weight"] = load_file(str(base))["router.weight"]  # a 2D target, checked as a Linear's weight
    save_file(tensors, str(merged))
    assert ("LG501", "router.weight") in {(f.rule, f.key) for f in run(base, adapter, merged).findings}
