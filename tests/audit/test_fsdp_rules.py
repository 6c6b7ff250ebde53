"""The LG6xx rules on adapters damaged the way an un-gathered FSDP save damages them (built from a clean save by
the reference, so each test shows one rule); tests/fsdp has the audit flag the same damage written by FSDP ranks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from tests.audit.helpers import audit, rewrite_config, rewrite_tensors, rules, save_reference

FSDP_RULES = {"LG601", "LG602", "LG603", "LG604", "LG605"}


def damaged(tmp_path: Path, change: Callable[[str, torch.Tensor], tuple[str, torch.Tensor]]) -> Path:
    """A clean reference save of the mlp adapter with every (key, tensor) passed through `change`."""
    directory = tmp_path / "adapter"
    save_reference("mlp", directory)
    assert not rules(audit(directory)) & FSDP_RULES

    def edit(tensors: dict[str, torch.Tensor]) -> None:
        changed = dict(change(k, v) for k, v in tensors.items())
        tensors.clear()
        tensors.update(changed)

    rewrite_tensors(directory, edit)
    return directory


def test_a_row_shard_of_lora_a_is_named_with_its_fraction(tmp_path):
    directory = damaged(tmp_path, lambda k, v: (k, v[:2] if ".lora_A." in k else v))
    [finding] = [f for f in audit(directory).findings if f.rule == "LG603" and ".fc1." in f.key]
    assert "2 of the 4 rows the config's r / rank_pattern gives (1/2)" in finding.message


def test_without_a_config_the_row_shard_is_judged_against_lora_b(tmp_path):
    directory = damaged(tmp_path, lambda k, v: (k, v[:1] if ".lora_A." in k else v))
    loose = tmp_path / "loose.safetensors"
    (directory / "adapter_model.safetensors").rename(loose)
    messages = [f.message for f in audit(loose).findings if f.rule == "LG603"]
    assert len(messages) == 2 and all("1 of the 4 rows its lora_B gives (1/4)" in m for m in messages), messages


def test_a_rank_pattern_smaller_than_r_is_not_a_shard(tmp_path):
    def rank2(k: str, v: torch.Tensor) -> tuple[str, torch.Tensor]:
        return k, v[:2] if ".fc1.lora_A." in k else v[:, :2] if ".fc1.lora_B." in k else v

    directory = damaged(tmp_path, rank2)
    rewrite_config(directory, rank_pattern={"fc1": 2})
    assert not rules(audit(directory)) & FSDP_RULES


def test_flat_factors_are_an_fsdp1_flat_shard(tmp_path):
    directory = damaged(tmp_path, lambda k, v: (k, v.flatten() if ".lora_" in k else v))
    assert {f.key for f in audit(directory).findings if f.rule == "LG602"} == {
        f"base_model.model.{m}.lora_{r}.weight" for m in ("fc1", "fc2") for r in "AB"
    }


def test_a_wrapper_prefix_in_a_key_is_flagged(tmp_path):
    directory = damaged(tmp_path, lambda k, v: (k.replace("model.fc1", "model._fsdp_wrapped_module.fc1"), v))
    flagged = {f.key for f in audit(directory).findings if f.rule == "LG604"}
    assert flagged == {f"base_model.model._fsdp_wrapped_module.fc1.lora_{r}.weight" for r in "AB"}


def test_a_dcp_directory_is_unusable_with_the_way_to_consolidate_it(tmp_path):
    (tmp_path / ".metadata").write_bytes(b"\0")
    (tmp_path / "__0_0.distcp").write_bytes(b"\0")
    result = audit(tmp_path)
    [finding] = result.findings
    assert finding.rule == "LG605" and result.unusable and "dcp_to_torch_save" in finding.message
