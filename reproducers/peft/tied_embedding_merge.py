"""peft: merging a LoRA adapter on an embedding whose weight is tied to the output head also changes the head.

The unmerged model applies the adapter to the input embedding only; `merge_adapter()` adds the delta into the shared
weight in place, so the output head computes with W + dW as well and the merged model's output differs from the
unmerged one (no warning: the model has no transformers config with `tie_word_embeddings`).
"""

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 20)
        self.lm_head.weight = self.wte.weight  # tied input and output embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.tanh(self.proj(self.wte(ids))))


torch.manual_seed(0)
model = get_peft_model(TiedLM(), LoraConfig(r=4, lora_alpha=16, target_modules=["wte"], init_lora_weights=False))
model.eval()
ids = torch.randint(0, 20, (2, 5))
with torch.no_grad():
    unmerged = model(ids)
    model.merge_adapter()
    merged = model(ids)
diff = (merged - unmerged).abs().max().item()
assert diff < 1e-4, (
    f"merged output differs from the unmerged one by {diff:.3g}: the merge also changed the tied lm_head"
)
