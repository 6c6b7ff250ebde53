"""The peft backend's save writes, byte for byte, what peft's own save_pretrained writes (it only starts the model
card from the text peft would render, to spare the template compile), and leaves a user's README.md to peft."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest

pytest.importorskip("peft")

from loraguard.backends.peft import PeftBackend  # noqa: E402
from loraguard.core.config import LoraConfig  # noqa: E402
from loraguard.harness.zoo import ZOO  # noqa: E402


@pytest.mark.parametrize("name", ["mlp", "llama-causal", "bart-seq2seq"])  # plain, causal LM (a pipeline tag), seq2seq
def test_the_backends_save_writes_what_peft_writes(name: str, tmp_path: Path) -> None:
    zoo, backend = ZOO[name], PeftBackend()
    config = LoraConfig(r=4, lora_alpha=8, target_modules=zoo.target_modules, modules_to_save=zoo.modules_to_save,
                        task_type=zoo.task_type)  # fmt: skip
    model = backend.wrap(zoo.make(0), config)
    model.add_adapter("other", backend.peft_config(config))
    backend.save(model, tmp_path / "ours")
    model.save_pretrained(str(tmp_path / "peft"))
    files = sorted(str(p.relative_to(tmp_path / "peft")) for p in (tmp_path / "peft").rglob("*") if p.is_file())
    assert "README.md" in files and "other/adapter_model.safetensors" in files
    assert sorted(str(p.relative_to(tmp_path / "ours")) for p in (tmp_path / "ours").rglob("*") if p.is_file()) == files
    different = [f for f in files if not filecmp.cmp(tmp_path / "ours" / f, tmp_path / "peft" / f, shallow=False)]
    assert different == []


def test_a_readme_already_there_is_updated_by_peft_not_replaced(tmp_path: Path) -> None:
    zoo, backend = ZOO["mlp"], PeftBackend()
    model = backend.wrap(zoo.make(0), LoraConfig(r=4, target_modules=zoo.target_modules))
    (tmp_path / "README.md").write_text("# My adapter\n\nNotes the user wrote.\n")
    backend.save(model, tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "Notes the user wrote." in card and "PEFT" in card
    assert os.path.exists(tmp_path / "adapter_model.safetensors")
