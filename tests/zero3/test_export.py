"""The merged export in one process, outside any process group: for peft's and the reference's models, with a
LoRA embedding, a LoRA linear and a modules_to_save copy, it equals the library's own merge_and_unload."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from loraguard.core.config import LoraConfig
from loraguard.core.tolerance import bound, max_diff
from loraguard.harness.zero3.export import merged_state_dict
from loraguard.reference import LoraModel


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.fc, self.head = nn.Embedding(10, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.emb(x)))


def _reference(base: nn.Module) -> nn.Module:
    config = LoraConfig(r=2, target_modules=["emb", "fc"], modules_to_save=["head"], init_lora_weights=False)
    return LoraModel(base, config)


def _peft(base: nn.Module) -> nn.Module:
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=2, target_modules=["emb", "fc"], modules_to_save=["head"], init_lora_weights=False)
    return peft.get_peft_model(base, config)


@pytest.mark.parametrize("wrap", [_reference, _peft], ids=["reference", "peft"])
def test_the_export_equals_merge_and_unload(wrap) -> None:
    torch.manual_seed(0)
    model = wrap(_Tiny())
    with torch.no_grad():  # a trained copy, so using the original instead would show
        for name, param in model.named_parameters():
            if "modules_to_save" in name:
                param.add_(1.0)
    got = merged_state_dict(model)
    want = copy.deepcopy(model).merge_and_unload().state_dict()
    assert sorted(got) == sorted(want), "the export's keys are not the merged model's"
    for key, value in want.items():
        assert max_diff(got[key], value) <= bound(value, torch.float32), f"{key}: export differs from the merge"
