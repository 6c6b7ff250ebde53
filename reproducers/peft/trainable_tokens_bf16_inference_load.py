"""peft: a bfloat16 model loaded for inference leaves its trainable tokens trainable (and in float32).

`PeftModel.from_pretrained(..., is_trainable=False)` freezes the adapter, then `autocast_adapter_dtype=True` (the
default) casts the trainable-token rows of a bfloat16 model to float32 as new parameters that require grad. In
float32, or with `autocast_adapter_dtype=False`, nothing is trainable after the same load.
"""

import tempfile

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn


class LM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.wte(ids))


torch.manual_seed(0)
config = LoraConfig(target_modules=["proj"], trainable_token_indices={"wte": [1, 2]})
model = get_peft_model(LM().to(torch.bfloat16), config)
with tempfile.TemporaryDirectory() as d:
    model.save_pretrained(d)
    loaded = PeftModel.from_pretrained(LM().to(torch.bfloat16), d, is_trainable=False)
trainable = [f"{n} ({p.dtype})" for n, p in loaded.named_parameters() if p.requires_grad]
assert not trainable, f"parameters trainable after loading for inference: {trainable}"
